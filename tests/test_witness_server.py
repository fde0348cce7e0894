"""`ledger witness serve` as a C2SP tlog-witness, driven over loopback HTTP by a plain client.

Every test runs the installed `ledger` in a subprocess (`--listen 127.0.0.1:0`, the port read from
its ready line) and talks to it with http.client: every status code of the spec, the order of the
checks, many logs, restarts, racing submissions and SIGKILL at random moments. Checkpoints come from
in-memory trees built with ledger.spec.merkle, and once from a real ledger (`ledger head`).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ledger import Ledger
from ledger.spec.keys import SigningKey, b64encode
from ledger.spec.merkle import consistency_proof, leaf_hash, nodes_from_leaves, root
from ledger.spec.note import (
    TreeHead,
    add_signatures,
    parse_witness_vkey,
    sign_note,
    sign_tree_head,
    verify_cosignatures,
    vkey,
)

LEDGER = str(Path(sys.executable).with_name("ledger"))
SEED = int(os.environ.get("LEDGER_CRASH_SEED", "20261122"))


# --------------------------------------------------------------------------- a log in memory


@dataclass
class TreeLog:
    """A log as a list of leaf hashes; signs heads of any prefix and proves consistency between them."""

    origin: str
    key: SigningKey
    leaves: list[bytes] = field(default_factory=list)

    def grow(self, count: int, tag: str = "") -> TreeLog:
        start = len(self.leaves)
        self.leaves += [leaf_hash(f"{tag}{i}".encode()) for i in range(start, start + count)]
        return self

    def fork(self, at: int, count: int, tag: str) -> TreeLog:
        """Another history that agrees on the first `at` leaves and then differs."""
        other = TreeLog(self.origin, self.key, self.leaves[:at])
        return other.grow(count, tag)

    @property
    def vkey(self) -> str:
        return vkey(self.origin, self.key.public)

    def head(self, size: int) -> TreeHead:
        return TreeHead(self.origin, size, root(self.leaves[:size]))

    def note(self, size: int) -> str:
        return sign_tree_head(self.head(size), self.key)

    def proof(self, old: int, size: int) -> list[bytes]:
        if old == 0 or old == size:
            return []
        return consistency_proof(old, size, nodes_from_leaves(self.leaves[:size]))

    def body(self, old: int, size: int, proof: list[bytes] | None = None) -> bytes:
        lines = [f"old {old}"] + [
            b64encode(p) for p in (self.proof(old, size) if proof is None else proof)
        ]
        return ("\n".join(lines) + "\n\n" + self.note(size)).encode()


# --------------------------------------------------------------------------- a witness process


@dataclass
class WitnessProc:
    directory: Path
    logs: list[str]
    proc: subprocess.Popen[str] | None = None
    url: str = ""

    @property
    def key(self) -> Path:
        return self.directory / "witness.pem"

    @property
    def state(self) -> Path:
        return self.directory / "state.json"

    @property
    def vkey(self) -> str:
        return (self.directory / "witness.vkey").read_text().strip()

    def start(self) -> WitnessProc:
        args = [LEDGER, "witness", "serve", "--key", str(self.key), "--state", str(self.state)]
        for log in self.logs:
            args += ["--log", log]
        self.proc = subprocess.Popen(
            [*args, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line + self.proc.stderr.read()  # type: ignore[union-attr]
        self.url = line.split()[-1]
        return self

    def stop(self, how: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(how)
        code = self.proc.wait(timeout=30)
        out, err = self.proc.communicate()
        assert out == "" and err == "", (out, err)  # quiet when piped: only the ready line
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.communicate()

    def post(self, body: bytes, path: str = "/add-checkpoint", method: str = "POST") -> Answer:
        return request(self.url, body, path, method)


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


def request(url: str, body: bytes, path: str = "/add-checkpoint", method: str = "POST") -> Answer:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body if method == "POST" else None)
        response = connection.getresponse()
        return Answer(response.status, response.getheader("Content-Type", ""), response.read())
    finally:
        connection.close()


def init_witness(directory: Path, name: str = "witness.example/w1") -> str:
    result = subprocess.run(
        [LEDGER, "witness", "init", "--name", name, "--out", str(directory)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


LOG_A = TreeLog("example.com/log-a", SigningKey.from_seed(bytes([1]) * 32))
LOG_B = TreeLog("example.com/log-b", SigningKey.from_seed(bytes([2]) * 32))


@pytest.fixture
def logs() -> tuple[TreeLog, TreeLog]:
    a = TreeLog(LOG_A.origin, LOG_A.key).grow(20)
    b = TreeLog(LOG_B.origin, LOG_B.key).grow(20, "b")
    return a, b


@pytest.fixture
def witness(tmp_path: Path, logs: tuple[TreeLog, TreeLog]) -> Iterator[WitnessProc]:
    init_witness(tmp_path / "w")
    vkey_file = tmp_path / "log-b.vkey"
    vkey_file.write_text(logs[1].vkey + "\n")  # --log takes a vkey or a file holding one
    proc = WitnessProc(tmp_path / "w", [logs[0].vkey, str(vkey_file)]).start()
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        assert proc.stop() == 0


def cosigned_by(witness: WitnessProc, log: TreeLog, size: int, answer: Answer) -> list[int]:
    """The times of the witness's valid cosignatures in a 200 answer for `log`'s head of `size`."""
    assert answer.status == 200, answer
    text = answer.body.decode()
    assert text.startswith("\u2014 ") and text.endswith("\n")
    note = add_signatures(log.note(size), text.splitlines())
    return [c.time for c in verify_cosignatures(note, [parse_witness_vkey(witness.vkey)])]


def latest_size(witness: WitnessProc, log: TreeLog) -> int:
    """Ask the witness its size for `log` the protocol's way: `old 0` answers 409 with it."""
    answer = witness.post(log.body(0, 0))  # the empty tree: cosigned only by a witness holding none
    if answer.status == 200:
        return 0
    assert answer.status == 409 and answer.content_type == "text/x.tlog.size", answer
    return int(answer.body)


# --------------------------------------------------------------------------- init


def test_init_writes_a_0600_key_and_prints_its_vkey(tmp_path: Path) -> None:
    printed = init_witness(tmp_path / "w", "witness.example.com/w1")
    name, _, public = parse_witness_vkey(printed)
    assert name == "witness.example.com/w1"
    assert (tmp_path / "w" / "witness.vkey").read_text().strip() == printed
    assert (tmp_path / "w" / "witness.pem").stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        [LEDGER, "witness", "init", "--name", "x", "--out", str(tmp_path / "w")],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 4 and again.stderr.startswith("error: ")
    assert len(again.stderr.splitlines()) == 1
    bad = subprocess.run(
        [LEDGER, "witness", "init", "--name", "a b", "--out", str(tmp_path / "v")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and not (tmp_path / "v").exists()


def test_init_json(tmp_path: Path) -> None:
    out = subprocess.run(
        [LEDGER, "witness", "init", "--name", "w9", "--out", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    document = json.loads(out.stdout)
    assert document["name"] == "w9" and parse_witness_vkey(document["vkey"])[0] == "w9"


# --------------------------------------------------------------------------- each status code


def test_200_returns_a_valid_cosignature_and_persists_the_view(
    witness: WitnessProc, logs: tuple[TreeLog, TreeLog]
) -> None:
    a, _ = logs
    answer = witness.post(a.body(0, 5))
    assert answer.status == 200
    assert len(answer.body.decode().splitlines()) == 1
    assert len(cosigned_by(witness, a, 5, answer)) == 1
    state = json.loads(witness.state.read_text())
    assert state["logs"][a.origin]["size"] == 5
    # grow with a consistency proof; the same head again is cosigned again
    assert cosigned_by(witness, a, 12, witness.post(a.body(5, 12)))
    assert cosigned_by(witness, a, 12, witness.post(a.body(12, 12)))
    assert json.loads(witness.state.read_text())["logs"][a.origin]["size"] == 12


def test_404_for_an_unknown_origin_even_with_a_bad_signature(witness: WitnessProc) -> None:
    stranger = TreeLog("example.com/unknown", SigningKey.from_seed(bytes([9]) * 32)).grow(3)
    answer = witness.post(stranger.body(0, 3))
    assert answer.status == 404
    garbage = "old 0\n\nexample.com/unknown\n3\nAAAA\n\n\u2014 x AAAAAAAA\n"
    assert witness.post(garbage.encode()).status == 404


def test_403_when_no_signature_is_by_the_log_key_checked_before_anything_else(
    witness: WitnessProc, logs: tuple[TreeLog, TreeLog]
) -> None:
    a, _ = logs
    impostor = TreeLog(a.origin, SigningKey.from_seed(bytes([7]) * 32), list(a.leaves))
    assert witness.post(impostor.body(0, 5)).status == 403
    # a bad signature wins over every later check: old above size, a garbage proof line
    body = ("old 99\nnot-base64\n\n" + impostor.note(5)).encode()
    assert witness.post(body).status == 403
    # the right key name and key id but a signature over other text
    forged = a.note(5).replace(f"\n{5}\n", "\n6\n", 1)
    assert witness.post(b"old 0\n\n" + forged.encode()).status == 403
    # another key's lines are ignored: a valid log signature among unknown ones is enough
    extra = sign_note(a.note(5).split("\n\n")[0] + "\n", SigningKey.from_seed(bytes([8]) * 32), "x")
    both = add_signatures(a.note(5), [extra.split("\n\n")[1]])
    assert witness.post(b"old 0\n\n" + both.encode()).status == 200
    assert json.loads(witness.state.read_text())["logs"][a.origin]["size"] == 5


@pytest.mark.parametrize(
    "case",
    ["old-above-size", "old-leading-zero", "old-negative", "no-old", "proof-not-base64",
     "proof-short-hash", "no-empty-line", "not-a-note", "bad-root", "64-proof-lines"],
)  # fmt: skip
def test_400_for_malformed_requests(
    witness: WitnessProc, logs: tuple[TreeLog, TreeLog], case: str
) -> None:
    a, _ = logs
    note = a.note(5)
    bodies = {
        "old-above-size": a.body(6, 5, []),
        "old-leading-zero": b"old 00\n\n" + note.encode(),
        "old-negative": b"old -1\n\n" + note.encode(),
        "no-old": b"\n" + note.encode(),
        "proof-not-base64": b"old 0\n!!!!\n\n" + note.encode(),
        "proof-short-hash": b"old 0\n" + b64encode(bytes(31)).encode() + b"\n\n" + note.encode(),
        "no-empty-line": b"old 0\n" + note.split("\n\n")[0].encode(),
        "not-a-note": b"old 0\n\nexample.com/log-a\n5\n",
        "bad-root": b"old 0\n\n" + sign_note(f"{a.origin}\n5\nAAAA\n", a.key, a.origin).encode(),
        "64-proof-lines": ("old 0\n" + (b64encode(bytes(32)) + "\n") * 64 + "\n" + note).encode(),
    }
    answer = witness.post(bodies[case])
    assert answer.status == 400, answer
    assert not witness.state.exists()  # nothing cosigned, nothing persisted


def test_409_reports_the_latest_size_as_text_x_tlog_size(
    witness: WitnessProc, logs: tuple[TreeLog, TreeLog]
) -> None:
    a, _ = logs
    assert witness.post(a.body(0, 8)).status == 200
    for old, size in [(0, 10), (3, 10), (9, 10), (0, 3)]:
        answer = witness.post(a.body(old, size))
        assert (answer.status, answer.content_type, answer.body) == (
            409,
            "text/x.tlog.size",
            b"8\n",
        )
    # the same size with another root is a fork: 409 too, carrying its size
    fork = a.fork(6, 2, "fork")
    answer = witness.post(fork.body(8, 8))
    assert (answer.status, answer.content_type, answer.body) == (409, "text/x.tlog.size", b"8\n")
    assert json.loads(witness.state.read_text())["logs"][a.origin]["size"] == 8


def test_422_when_the_consistency_proof_does_not_verify(
    witness: WitnessProc, logs: tuple[TreeLog, TreeLog]
) -> None:
    a, _ = logs
    assert witness.post(a.body(0, 6)).status == 200
    wrong = [bytes(32)] * len(a.proof(6, 11))
    assert witness.post(a.body(6, 11, wrong)).status == 422
    assert witness.post(a.body(6, 11, a.proof(6, 11)[:-1])).status == 422
    # a fork that rewrote leaf 3: its own proof from 6 does not lead to what the witness holds
    fork = a.fork(3, 9, "fork")
    assert witness.post(fork.body(6, 11)).status == 422
    # equal sizes need an empty proof
    assert witness.post(a.body(6, 6, [bytes(32)])).status == 422
    assert json.loads(witness.state.read_text())["logs"][a.origin]["size"] == 6


def test_other_methods_and_paths(witness: WitnessProc) -> None:
    assert witness.post(b"", method="GET").status == 405
    assert witness.post(b"old 0\n\n", path="/other").status == 404
    assert witness.post(b"", path="/", method="GET").status == 404


# --------------------------------------------------------------------------- many logs, restarts


def test_each_log_has_its_own_view_and_the_views_survive_a_restart(
    witness: WitnessProc, logs: tuple[TreeLog, TreeLog]
) -> None:
    a, b = logs
    assert witness.post(a.body(0, 7)).status == 200
    assert witness.post(b.body(0, 3)).status == 200
    assert witness.post(b.body(3, 15)).status == 200
    assert witness.stop(signal.SIGINT) == 0  # Ctrl-C stops it as cleanly as SIGTERM
    witness.start()
    assert latest_size(witness, a) == 7 and latest_size(witness, b) == 15
    assert witness.post(a.body(7, 9)).status == 200


def test_a_damaged_state_file_is_refused_not_reset(tmp_path: Path) -> None:
    init_witness(tmp_path / "w")
    (tmp_path / "w" / "state.json").write_text("{not json")
    result = subprocess.run(
        [LEDGER, "witness", "serve", "--key", str(tmp_path / "w" / "witness.pem"), "--log",
         LOG_A.vkey, "--state", str(tmp_path / "w" / "state.json"), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 4 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "state.json" in result.stderr


def test_serve_refuses_bad_options(tmp_path: Path) -> None:
    init_witness(tmp_path / "w")
    base = [LEDGER, "witness", "serve", "--key", str(tmp_path / "w" / "witness.pem"), "--state",
            str(tmp_path / "s.json")]  # fmt: skip
    for extra, code in [
        (["--log", "not-a-vkey", "--listen", "127.0.0.1:0"], 4),
        (["--log", LOG_A.vkey, "--listen", "nowhere"], 2),
        (["--listen", "127.0.0.1:0"], 2),
    ]:
        result = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60)
        assert result.returncode == code, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) >= 1 and result.stdout == ""


# --------------------------------------------------------------------------- races


def test_two_racing_conflicting_heads_of_one_size_exactly_one_wins(
    witness: WitnessProc, logs: tuple[TreeLog, TreeLog]
) -> None:
    a, _ = logs
    assert witness.post(a.body(0, 4)).status == 200
    current = a
    for round_ in range(12):
        size = 4 + round_
        left = current.fork(size, 1, f"L{round_}-")
        right = current.fork(size, 1, f"R{round_}-")
        bodies = [left.body(size, size + 1), right.body(size, size + 1)]
        barrier = threading.Barrier(2)
        answers: list[Answer | None] = [None, None]

        def submit(i: int) -> None:
            barrier.wait()
            answers[i] = witness.post(bodies[i])

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(x.status for x in answers if x is not None)
        assert statuses == [200, 409], (round_, answers)
        winner = left if answers[0] is not None and answers[0].status == 200 else right
        state = json.loads(witness.state.read_text())["logs"][a.origin]
        assert state["size"] == size + 1 and state["root"] == b64encode(winner.head(size + 1).root)
        current = winner


def test_concurrent_growing_submissions_form_one_chain(
    witness: WitnessProc, logs: tuple[TreeLog, TreeLog]
) -> None:
    """Threads race to extend two logs; the accepted (old, new) pairs per log chain 0 -> a -> b -> ...

    A rollback would show as an accepted pair whose old size was already superseded."""
    accepted: dict[str, list[tuple[int, int]]] = {log.origin: [] for log in logs}
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        known = {log.origin: 0 for log in logs}
        for _ in range(25):
            log = logs[rng.randrange(2)]
            old = known[log.origin]
            size = min(len(log.leaves), old + rng.randint(0, 3))
            answer = witness.post(log.body(old, size))
            if answer.status == 200:
                with lock:
                    accepted[log.origin].append((old, size))
                known[log.origin] = size
            else:
                assert answer.status == 409, answer
                known[log.origin] = int(answer.body)

    threads = [threading.Thread(target=client, args=(SEED + i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = json.loads(witness.state.read_text())["logs"]
    for origin, pairs in accepted.items():
        growth = sorted({p for p in pairs if p[0] != p[1]}, key=lambda p: p[1])
        chain = 0
        for old, new in growth:
            assert old == chain, (origin, growth)
            chain = new
        assert all(old in {0, *(n for _, n in growth)} for old, _ in pairs)
        if pairs:
            assert state[origin]["size"] == max(new for _, new in pairs) == chain


# --------------------------------------------------------------------------- kill -9


def test_sigkill_at_random_moments_never_rolls_the_view_back(
    tmp_path: Path, logs: tuple[TreeLog, TreeLog]
) -> None:
    a, _ = logs
    a.grow(2000)
    init_witness(tmp_path / "w")
    witness = WitnessProc(tmp_path / "w", [a.vkey]).start()
    rng = random.Random(SEED)
    client_rng = random.Random(SEED + 1)
    cosigned = 0  # the largest size a 200 answer was received for
    known = 0
    stop = threading.Event()
    url_lock = threading.Lock()

    def client() -> None:
        nonlocal cosigned, known
        while not stop.is_set() and known < len(a.leaves):
            with url_lock:
                url = witness.url
            size = min(len(a.leaves), known + 1 + client_rng.randrange(5))
            try:
                answer = request(url, a.body(known, size))
            except OSError:
                time.sleep(0.01)  # the witness is down: retry once it is back
                continue
            if answer.status == 200:
                cosigned = max(cosigned, size)
                known = size
            elif answer.status == 409:
                known = int(answer.body)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        for _ in range(8):
            time.sleep(rng.uniform(0.0, 0.3))
            with url_lock:
                before = cosigned
                witness.kill()
                witness.start()
            held = latest_size(witness, a)
            assert held >= before, (held, before)
            json.loads(witness.state.read_text())  # whole, never torn
    finally:
        stop.set()
        thread.join()
    assert latest_size(witness, a) >= cosigned > 0
    assert witness.stop() == 0


# --------------------------------------------------------------------------- a real ledger


def test_heads_of_a_real_ledger_fork_and_rollback(tmp_path: Path) -> None:
    response = {"id": "chatcmpl-w-1", "object": "chat.completion", "model": "gpt-4o",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}  # fmt: skip
    db = tmp_path / "l.duckdb"
    lg = Ledger.init(db, origin="example.org/ledger")
    log_vkey = subprocess.run(
        [LEDGER, "keys", "export", "log", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    init_witness(tmp_path / "w")
    witness = WitnessProc(tmp_path / "w", [log_vkey]).start()
    try:
        subprocess.run(
            [LEDGER, "head", "--db", str(db), "--out", str(tmp_path / "head.txt")],
            capture_output=True,
            check=True,
        )
        first = (tmp_path / "head.txt").read_text()
        assert witness.post(b"old 0\n\n" + first.encode()).status == 200
        shutil.copy(db, tmp_path / "old.duckdb")  # a rollback: the file as it was
        lg.record_call(provider="openai", purpose="evaluation", request=None, response=response)
        proof = lg.consistency(first)
        second = lg.head()
        body = "\n".join([f"old {proof.old_size}", *(b64encode(p) for p in proof.proof)])
        answer = witness.post((body + "\n\n" + second.note).encode())
        assert answer.status == 200
        note = add_signatures(second.note, answer.body.decode().splitlines())
        assert verify_cosignatures(note, [parse_witness_vkey(witness.vkey)])
        # the restored old file's head: the witness holds a larger tree
        old = Ledger.open(tmp_path / "old.duckdb").head()
        answer = witness.post(f"old {old.size}\n\n{old.note}".encode())
        assert (answer.status, answer.body) == (409, f"{second.size}\n".encode())
        # a fork: the old copy records something else up to the same size
        forked = Ledger.open(tmp_path / "old.duckdb", keys_dir=tmp_path / "l.keys")
        forked.record_call(
            provider="openai", purpose="evaluation", request=None,
            response={**response, "id": "chatcmpl-w-2"},
        )  # fmt: skip
        fork_head = forked.head()
        assert fork_head.size == second.size and fork_head.root != second.root
        answer = witness.post(f"old {second.size}\n\n{fork_head.note}".encode())
        assert (answer.status, answer.body) == (409, f"{second.size}\n".encode())
    finally:
        assert witness.stop() == 0


def test_two_processes_sharing_one_state_file_never_roll_each_other_back(
    tmp_path: Path, logs: tuple[TreeLog, TreeLog]
) -> None:
    a, _ = logs
    init_witness(tmp_path / "w")
    first = WitnessProc(tmp_path / "w", [a.vkey]).start()
    second = WitnessProc(tmp_path / "w", [a.vkey]).start()
    try:
        assert first.post(a.body(0, 5)).status == 200
        answer = second.post(a.body(0, 3))  # the second process re-reads what the first wrote
        assert (answer.status, answer.body) == (409, b"5\n")
        size = 5
        for round_ in range(6):
            left, right = a.fork(size, 2, f"L{round_}-"), a.fork(size, 2, f"R{round_}-")
            barrier = threading.Barrier(2)
            answers: dict[str, int] = {}

            def submit(name: str, proc: WitnessProc, log: TreeLog, old: int = size) -> None:
                barrier.wait()
                answers[name] = proc.post(log.body(old, old + 2)).status

            threads = [
                threading.Thread(target=submit, args=("left", first, left)),
                threading.Thread(target=submit, args=("right", second, right)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(answers.values()) == [200, 409], answers
            a = left if answers["left"] == 200 else right
            size += 2
            assert json.loads(first.state.read_text())["logs"][a.origin]["size"] == size
    finally:
        assert first.stop() == 0 and second.stop() == 0


def test_serve_json_ready_line(tmp_path: Path) -> None:
    printed = init_witness(tmp_path / "w")
    proc = subprocess.Popen(
        [LEDGER, "witness", "serve", "--key", str(tmp_path / "w" / "witness.pem"), "--log",
         LOG_B.vkey, "--log", LOG_A.vkey, "--state", str(tmp_path / "s.json"), "--listen",
         "127.0.0.1:0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        document = json.loads(proc.stdout.readline())
        assert document["vkey"] == printed and document["name"] == "witness.example/w1"
        assert document["logs"] == [LOG_A.origin, LOG_B.origin]
        assert request(document["listening"], b"", method="GET").status == 405
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        proc.communicate()
