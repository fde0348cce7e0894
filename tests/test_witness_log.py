"""The log side of witnesses (DESIGN.md "Witnesses"): real `ledger witness serve` processes over loopback
HTTP cosign the ledger's tree heads; a fork (a copy of the database that records something else) and a
rollback (an older copy) are refused with exit 1, also after a witness was killed with SIGKILL
mid-request and restarted; unreachable witnesses cost seconds and are named; bundles and the stored
head carry their quorum, checked offline.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hardening import CliPool, Result, one_error_line

from ledger.spec import note as note_spec
from ledger.spec.cosigned import check_cosigned
from ledger.spec.witness_policy import parse_witness_policy
from ledger.witness.client import submit

LEDGER = str(Path(sys.executable).with_name("ledger"))
ORIGIN = "example.org/witnessed"


def env(**overrides: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return {**base, "LEDGER_LOCK_TIMEOUT": "60", "LEDGER_WITNESS_TIMEOUT": "3", **overrides}


_POOL: CliPool | None = None


@pytest.fixture(scope="module", autouse=True)
def _pool() -> Iterator[None]:
    global _POOL
    _POOL = CliPool(2)
    yield
    _POOL.close()
    _POOL = None


def cli(args: Sequence[str], cwd: Path, code: int | None = 0, **overrides: str) -> Result:
    """The real `ledger` entry point (forked from a preloaded interpreter, see tests/hardening.py)."""
    assert _POOL is not None
    variables: dict[str, str | None] = {
        "LEDGER_WITNESS_POLICY": None,
        "LEDGER_WITNESS_TIMEOUT": "3",
        **overrides,
    }
    result = _POOL.run(args, cwd, variables)
    if code is not None:
        assert result.returncode == code, (args, result.returncode, result.stderr, result.stdout)
    return result


@dataclass
class Witness:
    """One `ledger witness serve` process: its key, state file and (after `start`) URL."""

    name: str
    directory: Path
    log_vkey: str
    vkey: str = ""
    key: Path | None = None
    proc: subprocess.Popen[str] | None = None
    url: str = ""

    def init(self) -> Witness:
        out = cli(
            ["witness", "init", "--name", self.name, "--out", str(self.directory)],
            self.directory.parent,
        )
        self.vkey = next(w for w in out.stdout.split() if w.startswith(self.name + "+"))
        keys = [p for p in self.directory.iterdir() if p.suffix == ".pem"]
        assert len(keys) == 1, keys
        self.key = keys[0]
        return self

    def launch(self, port: int = 0) -> Witness:
        """Start the server; `ready` waits for its `listening on` line (launch several, then wait)."""
        assert self.key is not None
        self.proc = subprocess.Popen(
            [LEDGER, "witness", "serve", "--key", str(self.key), "--log", self.log_vkey,
             "--state", str(self.directory / "state"), "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
        )  # fmt: skip
        return self

    def ready(self) -> Witness:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on http://"), (line, self.proc.poll())
        self.url = line.split()[-1].rstrip("/")
        return self

    def start(self, port: int = 0) -> Witness:
        return self.launch(port).ready()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdout, self.proc.stderr) if self.proc else ():
            if stream is not None:
                stream.close()


@dataclass
class Setup:
    root: Path
    lab: Path  # the ledger's directory (ledger.duckdb + ledger.keys)
    log_vkey: str
    witnesses: list[Witness]

    def policy(
        self, quorum: str, urls: dict[str, str] | None = None, name: str = "p.policy"
    ) -> Path:
        """A policy naming every witness (its URL from `urls`, else its own) and the given quorum lines."""
        urls = urls or {}
        lines = [f"log {self.log_vkey}"]
        for w in self.witnesses:
            lines.append(f"witness {w.name} {w.vkey} {urls.get(w.name, w.url)}".rstrip())
        lines.append(quorum)
        path = self.root / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def append(self, lab: Path | None = None, what: str = "x") -> None:
        """One more entry (a recorder key): the tree grows by one."""
        cli(["keys", "new", "--name", f"k-{what}"], lab or self.lab)


@pytest.fixture()
def keys_only(tmp_path: Path) -> Setup:
    """A ledger and three witness keys, no server running (for what fails before any request)."""
    lab = tmp_path / "lab"
    lab.mkdir()
    cli(["init", "--origin", ORIGIN], lab)
    log_vkey = cli(["keys", "export", "log"], lab).stdout.strip()
    witnesses = [Witness(f"w{i}.example", tmp_path / f"w{i}", log_vkey).init() for i in range(3)]
    return Setup(tmp_path, lab, log_vkey, witnesses)


@pytest.fixture()
def setup(keys_only: Setup) -> Iterator[Setup]:
    """`keys_only` with the three witnesses serving on loopback."""
    for w in keys_only.witnesses:
        w.launch()
    for w in keys_only.witnesses:
        w.ready()
    yield keys_only
    for w in keys_only.witnesses:
        w.stop()


TWO_OF_THREE = "group q 2 {} {} {}\nquorum q"


def two_of_three(s: Setup) -> str:
    return TWO_OF_THREE.format(*(w.name for w in s.witnesses))


def copy_lab(s: Setup, name: str) -> Path:
    """A copy of the ledger (database and keys), as a lab would keep a second file."""
    target = s.root / name
    shutil.copytree(s.lab, target)
    return target


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a head cosigned by three witnesses -----------------------------------------------------------


def test_three_witnesses_cosign_the_head_and_it_is_stored(setup: Setup) -> None:
    s = setup
    policy = s.policy("group all3 all " + " ".join(w.name for w in s.witnesses) + "\nquorum all3")
    printed = cli(["head", "--witness-policy", str(policy)], s.lab).stdout
    document = json.loads(cli(["head", "--json"], s.lab).stdout)
    assert sorted(c["name"] for c in document["cosignatures"]) == [w.name for w in s.witnesses]
    assert all(len(c["keyid"]) == 8 and c["time"] > 0 for c in document["cosignatures"])
    judged = check_cosigned(document["note"], parse_witness_policy(policy.read_text()))
    assert judged.quorum and judged.cosigned == {w.name for w in s.witnesses}
    assert judged.head.size == document["size"]
    for line in document["note"].splitlines()[4:]:
        assert line in printed
    # the cosigned note is still a plain signed tree head for anyone holding only the log key
    assert note_spec.verify_tree_head(document["note"], s.log_vkey).size == document["size"]
    cli(["verify", "--witness-policy", str(policy)], s.lab)

    # the log grows: the witnesses get a consistency proof from the size they cosigned
    s.append()
    s.append(what="y")
    out = json.loads(
        cli(["head", "--json"], s.lab, LEDGER_WITNESS_POLICY=str(policy)).stdout
    )  # the environment variable does what the option does
    assert out["size"] == document["size"] + 2 and len(out["cosignatures"]) == 3
    cli(["verify", "--witness-policy", str(policy)], s.lab)


def test_a_head_without_its_quorum_fails_verify(setup: Setup) -> None:
    s = setup
    policy = s.policy(two_of_three(s))
    cli(["head", "--witness-policy", str(policy)], s.lab)
    s.append()  # the new head has no cosignature yet
    result = cli(["verify", "--witness-policy", str(policy), "--json"], s.lab, code=1)
    problems = json.loads(result.stdout)["problems"]
    assert any("quorum q is not met" in p["what"] for p in problems), problems
    assert json.loads(cli(["head", "--json"], s.lab).stdout)["cosignatures"] == []


def test_a_witness_that_learned_a_larger_size_elsewhere_is_answered_from_its_409(
    setup: Setup,
) -> None:
    """The log's store says w0 last cosigned size N; w0 has since cosigned N+1 (submitted by hand,
    with the plain HTTP client): its 409 teaches the size, and the retry from it is cosigned."""
    s = setup
    policy = s.policy(two_of_three(s))
    cli(["head", "--witness-policy", str(policy), "--out", "old.txt"], s.lab)
    s.append()
    head = json.loads(cli(["head", "--json"], s.lab).stdout)
    proof = json.loads(cli(["consistency", "--from", "old.txt", "--json"], s.lab).stdout)
    w0 = s.witnesses[0]
    hashes = [bytes.fromhex(h) for h in proof["proof"]]
    by_hand = submit(w0.url, head["note"], proof["old_size"], hashes, timeout=10)
    assert by_hand.status == 200, by_hand
    assert json.loads(cli(["head", "--json"], s.lab).stdout)["cosignatures"] == []
    s.append(what="y")
    cli(["head", "--witness-policy", str(policy)], s.lab)
    names = {c["name"] for c in json.loads(cli(["head", "--json"], s.lab).stdout)["cosignatures"]}
    assert names == {w.name for w in s.witnesses}


# --- quorum groups --------------------------------------------------------------------------------


def test_quorum_groups_with_one_witness_unreachable(setup: Setup) -> None:
    """all / any / K over three witnesses, one of them behind a closed port."""
    s = setup
    down = s.witnesses[2]
    names = " ".join(w.name for w in s.witnesses)
    urls = {down.name: f"http://127.0.0.1:{closed_port()}"}
    for quorum, code in (("all", 4), ("any", 0), ("2", 0), ("3", 4)):
        policy = s.policy(f"group g {quorum} {names}\nquorum g", urls=urls)
        result = cli(["head", "--witness-policy", str(policy)], s.lab, code=code)
        if code == 4:
            assert one_error_line(result) is None, result.stderr
            assert f"{down.name}: unreachable (connection refused)" in result.stderr
            assert "quorum g is not met" in result.stderr
        else:
            cosigned = json.loads(cli(["head", "--json"], s.lab).stdout)["cosignatures"]
            assert {c["name"] for c in cosigned} == {w.name for w in s.witnesses[:2]}
        s.append(what=quorum)  # each policy judges a new head


def test_nested_groups_and_quorum_none(setup: Setup) -> None:
    s = setup
    a, b, c = (w.name for w in s.witnesses)
    nested = s.policy(f"group ab any {a} {b}\ngroup top all ab {c}\nquorum top")
    cli(["head", "--witness-policy", str(nested)], s.lab)
    none = s.policy(
        "quorum none", urls={w.name: f"http://127.0.0.1:{closed_port()}" for w in s.witnesses}
    )
    cli(
        ["head", "--witness-policy", str(none)], s.lab
    )  # nothing needed: unreachable witnesses do not fail it


# --- forks and rollbacks --------------------------------------------------------------------------


def test_a_fork_is_refused_naming_the_witness_and_both_sizes(setup: Setup) -> None:
    s = setup
    policy = s.policy(two_of_three(s))
    cli(["head", "--witness-policy", str(policy)], s.lab)
    fork = copy_lab(s, "fork")
    s.append(what="real")
    cli(["head", "--witness-policy", str(policy)], s.lab)
    size = json.loads(cli(["head", "--json"], s.lab).stdout)["size"]

    s.append(fork, what="other")  # the same size, another root
    result = cli(["head", "--witness-policy", str(policy)], fork, code=1)
    assert one_error_line(result) is None, result.stderr
    for w in s.witnesses:
        assert w.name in result.stderr
    assert f"another root at size {size}" in result.stderr

    s.append(fork, what="more")  # larger than the witnesses' tree, but not an extension of it
    result = cli(["head", "--witness-policy", str(policy)], fork, code=1)
    assert (
        f"tree of size {size + 1}" in result.stderr and f"its tree of size {size}" in result.stderr
    )

    cli(["head", "--witness-policy", str(policy)], s.lab)  # the real log is still cosigned


def test_a_rollback_is_refused(setup: Setup) -> None:
    s = setup
    policy = s.policy(two_of_three(s))
    cli(["head", "--witness-policy", str(policy)], s.lab)
    old = copy_lab(s, "old")
    old_size = json.loads(cli(["head", "--json"], old).stdout)["size"]
    s.append()
    s.append(what="y")
    cli(["head", "--witness-policy", str(policy)], s.lab)
    result = cli(["head", "--witness-policy", str(policy)], old, code=1)
    assert one_error_line(result) is None, result.stderr
    assert f"holds a tree of size {old_size + 2}, larger than the log's {old_size}" in result.stderr
    assert "rolled back" in result.stderr


def test_a_rolled_back_head_with_old_cosignatures_and_witnesses_down_is_not_a_quorum(
    setup: Setup,
) -> None:
    """The older copy still holds its head's cosignatures from back then; they say the witnesses saw
    that head, not that they have seen nothing larger since. With every witness down, no answer this
    round makes the quorum: exit 4 naming each witness, never 0 on the stale cosignatures."""
    s = setup
    policy = s.policy(two_of_three(s))
    cli(["head", "--witness-policy", str(policy)], s.lab)
    old = copy_lab(s, "old")  # its head carries three cosignatures
    s.append()
    cli(["head", "--witness-policy", str(policy)], s.lab)
    for w in s.witnesses:
        w.stop()
    stored = json.loads(cli(["head", "--json"], old).stdout)["cosignatures"]
    assert len(stored) == 3
    result = cli(["head", "--witness-policy", str(policy)], old, code=4)
    assert "witness quorum q is not met" in result.stderr
    for w in s.witnesses:
        assert f"{w.name}: unreachable" in result.stderr


def test_fork_and_rollback_are_refused_after_a_witness_is_killed_mid_request(setup: Setup) -> None:
    s = setup
    policy = s.policy(two_of_three(s))
    cli(["head", "--witness-policy", str(policy)], s.lab)
    old = copy_lab(s, "old")
    s.append()
    cli(["head", "--witness-policy", str(policy)], s.lab)
    fork = copy_lab(s, "fork")  # agrees with the witnesses so far
    s.append(what="y")
    victim = s.witnesses[0]
    # Submissions in flight while the witness dies: whatever it had persisted must survive.
    runs = [
        subprocess.Popen([LEDGER, "head", "--witness-policy", str(policy)], cwd=s.lab, env=env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    victim.kill()
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode in (0, 4), err  # 2 of 3 may still be met; never a false fork
    victim.start()  # the same state file, a new port
    policy = s.policy(two_of_three(s))
    cli(["head", "--witness-policy", str(policy)], s.lab)

    rolled = cli(["head", "--witness-policy", str(policy)], old, code=1)
    assert victim.name in rolled.stderr and "rolled back" in rolled.stderr
    s.append(fork, what="other")
    forked = cli(["head", "--witness-policy", str(policy)], fork, code=1)
    assert victim.name in forked.stderr and "forked" in forked.stderr


# --- unreachable witnesses -----------------------------------------------------------------------


@pytest.fixture()
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                accepted.append(conn)  # read nothing, answer nothing
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    sock.close()


def test_a_witness_that_never_answers_times_out_and_is_named(
    setup: Setup, silent_server: int
) -> None:
    s = setup
    mute = s.witnesses[1]
    names = " ".join(w.name for w in s.witnesses)
    urls = {mute.name: f"http://127.0.0.1:{silent_server}"}
    needs_it = s.policy(f"group g all {names}\nquorum g", urls=urls, name="all.policy")
    result = cli(
        ["head", "--witness-policy", str(needs_it)], s.lab, code=4, LEDGER_WITNESS_TIMEOUT="1"
    )
    assert one_error_line(result) is None, result.stderr
    assert f"{mute.name}: no answer within 1s (timeout)" in result.stderr
    without_it = s.policy(f"group g 2 {names}\nquorum g", urls=urls, name="two.policy")
    cli(["head", "--witness-policy", str(without_it)], s.lab, LEDGER_WITNESS_TIMEOUT="1")


def test_a_witness_that_refuses_the_log_key_is_named_with_its_answer(
    setup: Setup, tmp_path: Path
) -> None:
    """A witness configured for another log key answers 403 (or 404 for an unknown origin)."""
    s = setup
    other = tmp_path / "other"
    other.mkdir()
    cli(["init", "--origin", "example.org/other"], other)
    stranger = Witness(
        "stranger.example", tmp_path / "ws", cli(["keys", "export", "log"], other).stdout.strip()
    )
    stranger.init().start()
    try:
        s.witnesses.append(stranger)
        names = " ".join(w.name for w in s.witnesses)
        policy = s.policy(f"group g all {names}\nquorum g")
        result = cli(["head", "--witness-policy", str(policy)], s.lab, code=4)
        assert one_error_line(result) is None, result.stderr
        assert "stranger.example: answered 404" in result.stderr
    finally:
        stranger.stop()


# --- bundles --------------------------------------------------------------------------------------


def _audited(s: Setup) -> None:
    (s.lab / "train.jsonl").write_text(
        json.dumps({"text": "a training record long enough to be segmented by the ledger"}) + "\n"
    )
    cli(["record", "batch", "train.jsonl", "--id", "b1"], s.lab)
    (s.lab / "w.bin").write_bytes(b"weights")
    cli(["record", "checkpoint", "--id", "c1", "--weights", "w.bin", "--batch", "b1"], s.lab)


def test_verify_bundle_with_and_without_the_quorum(setup: Setup) -> None:
    s = setup
    _audited(s)
    policy = s.policy(two_of_three(s))
    cli(["audit", "c1", "--bundle", "cosigned.json", "--witness-policy", str(policy)], s.lab)
    bundle = json.loads((s.lab / "cosigned.json").read_text())
    assert bundle["tree_head"].count("\u2014 ") == 4  # the log's signature and three cosignatures

    checked = json.loads(
        cli(
            ["verify-bundle", "cosigned.json", "--witness-policy", str(policy), "--json"], s.lab
        ).stdout
    )
    assert checked["ok"] and checked["checked"]["cosignatures"] == 3
    (s.lab / "lab.vkey").write_text(s.log_vkey + "\n")
    cli(
        ["verify-bundle", "cosigned.json", "--key", "lab.vkey"], s.lab
    )  # cosignatures change nothing else

    # a bundle whose head no witness saw: the log signature holds, the quorum does not
    s.append()
    cli(["audit", "c1", "--bundle", "plain.json"], s.lab)
    result = cli(
        ["verify-bundle", "plain.json", "--witness-policy", str(policy), "--json"], s.lab, code=1
    )
    problems = json.loads(result.stdout)["problems"]
    assert any(p["where"] == "tree_head" and "quorum q is not met" in p["what"] for p in problems)

    # one cosignature altered: it no longer counts, and 2 of 3 still hold; two altered: 1 of 3
    lines = bundle["tree_head"].splitlines(keepends=True)
    for count, code in ((1, 0), (2, 1)):
        damaged = list(lines)
        for i in range(5, 5 + count):
            name, b64 = damaged[i].rstrip("\n").rsplit(" ", 1)
            raw = bytearray(base64.b64decode(b64))
            raw[-1] ^= 1
            damaged[i] = f"{name} {base64.b64encode(bytes(raw)).decode()}\n"
        (s.lab / "damaged.json").write_text(json.dumps({**bundle, "tree_head": "".join(damaged)}))
        cli(["verify-bundle", "damaged.json", "--witness-policy", str(policy)], s.lab, code=code)

    # a policy whose log key is not the ledger's: the log signature fails, exit 1
    other = s.root / "other"
    other.mkdir()
    cli(["init", "--origin", ORIGIN], other)  # same origin, another key
    impostor = policy.read_text().replace(
        s.log_vkey, cli(["keys", "export", "log"], other).stdout.strip()
    )
    (s.root / "impostor.policy").write_text(impostor)
    cli(["verify-bundle", "cosigned.json", "--witness-policy", str(s.root / "impostor.policy")], s.lab, code=1)  # fmt: skip


def test_verify_bundle_needs_a_key_or_a_policy(keys_only: Setup) -> None:
    s = keys_only
    _audited(s)
    cli(["audit", "c1", "--bundle", "b.json"], s.lab)
    result = cli(["verify-bundle", "b.json"], s.lab, code=2)
    assert "--key" in result.stderr and "--witness-policy" in result.stderr


def test_the_offline_verifier_loads_no_witness_server_nor_duckdb() -> None:
    code = (
        "from ledger.bundle.verify import verify_bundle, load_bundle, policy_vkey\n"
        "import sys; print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "duckdb" not in loaded
    assert not {m for m in loaded if m.startswith("ledger.witness")}


# --- bad policy files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("log {log}\nwitness a {w0}\nwitness b {w0}\nquorum a\n", 3),  # the same key twice
        ("log {log}\nwitness a {w0}\ngroup g 2 a\nquorum g\n", 3),  # k out of range
        ("log {log}\nwitness a {w0}\nquorum b\n", 3),  # an unknown name
        ("log {log}\nwitness a {w0}\n", 3),  # no quorum
        ("log {log}\nwitness a not-a-vkey\nquorum a\n", 2),
    ],
)
def test_a_bad_policy_file_is_one_line_naming_file_and_line(
    keys_only: Setup, text: str, line: int
) -> None:
    s = keys_only
    before = (s.lab / "ledger.duckdb").read_bytes()
    bad = s.root / "bad.policy"
    bad.write_text(text.format(log=s.log_vkey, w0=s.witnesses[0].vkey))
    for args in (["head"], ["verify"], ["audit", "x", "--bundle", "b.json"]):
        result = cli([*args, "--witness-policy", str(bad)], s.lab, code=4)
        assert one_error_line(result) is None, result.stderr
        assert result.stderr.startswith(f"error: {bad}:{line}: "), result.stderr
    result = cli(["verify-bundle", "b.json", "--witness-policy", str(bad)], s.lab, code=4)
    assert result.stderr.startswith(f"error: {bad}:{line}: "), result.stderr
    assert (s.lab / "ledger.duckdb").read_bytes() == before
    missing = cli(["head", "--witness-policy", "nope.policy"], s.lab, code=4)
    assert one_error_line(missing) is None and "nope.policy" in missing.stderr


def test_a_policy_without_this_ledgers_log_key_is_refused_before_asking(keys_only: Setup) -> None:
    s = keys_only
    text = s.policy(two_of_three(s)).read_text().replace(f"log {s.log_vkey}\n", "")
    (s.root / "nolog.policy").write_text(text)
    result = cli(["head", "--witness-policy", str(s.root / "nolog.policy")], s.lab, code=4)
    assert one_error_line(result) is None and ORIGIN in result.stderr


# --- ledgers made before witnesses -----------------------------------------------------------------

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ledger-v1"


def test_a_ledger_made_before_witnesses_gets_its_table_on_the_first_cosignature(
    tmp_path: Path,
) -> None:
    from ledger.log import store
    from ledger.log.store import witness as cosignature_rows

    old = tmp_path / "ledger-v1"
    shutil.copytree(FIXTURE, old)
    os.chmod(old / "ledger.keys", 0o700)
    for pem in (old / "ledger.keys").iterdir():
        os.chmod(pem, 0o600)
    db = old / "ledger.duckdb"
    with store.session(db, read_only=True) as conn:  # no table yet, and a read-only open reads none
        stored = store.head(conn)
        assert cosignature_rows.cosignatures(conn, stored.size, stored.root) == []
    assert json.loads(cli(["head", "--json"], old).stdout)["cosignatures"] == []

    log_vkey = (old / "lab.vkey").read_text().strip()
    witness = Witness("w.example", tmp_path / "w", log_vkey).init().start()
    try:
        policy = tmp_path / "one.policy"
        policy.write_text(f"log {log_vkey}\nwitness w {witness.vkey} {witness.url}\nquorum w\n")
        cli(["head", "--witness-policy", str(policy)], old)
    finally:
        witness.stop()
    with store.session(db, read_only=True) as conn:
        rows = cosignature_rows.cosignatures(conn, stored.size, stored.root)
    assert [(r.name, r.line.startswith("\u2014 w.example ")) for r in rows] == [("w.example", True)]
    report = json.loads(cli(["verify", "--since", "head.txt", "--witness-policy", str(policy), "--json"], old).stdout)  # fmt: skip
    assert report["ok"], report["problems"]
