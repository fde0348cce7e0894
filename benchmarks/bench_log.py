"""Benchmark the signed log: bulk append, full verification, and inclusion proofs at 1M entries.

Every figure is printed next to a baseline measured in the same run: raw Ed25519 sign/verify rates
(pyca/cryptography, one core) for appending and verifying, and pymerkle's SQLite tree for proofs when
pymerkle is installed. Rates are given per wall second and per CPU second (this process plus its worker
processes), because the CPU figure is the one that survives other work on a shared 2-core machine; the
load average is printed with each section so wall figures can be read against it.

Concurrency: `verify` reads the file in short sessions, so the longest one is printed, and a recorder
process appends once every 0.1 s while a verify runs: its slowest append is the figure that matters to a
training loop (it must stay far below LEDGER_LOCK_TIMEOUT, 30 s by default).

    .venv/bin/python benchmarks/bench_log.py                  # 100k entries, then grow to 1M for proofs
    .venv/bin/python benchmarks/bench_log.py --skip-big       # 100k only
    .venv/bin/python benchmarks/bench_log.py --entries 20000 --big 200000
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import Ledger
from ledger.log import store
from ledger.log.verify import check_record_set, record_leaves, verify_ledger
from ledger.spec import entries, envelope, jcs, merkle

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # this process and every child it waited for
    own: float = 0.0  # this process alone

    def idle_wall(self, cores: int = 2) -> float:
        """Wall time on an idle machine with `cores` cores if the work spreads as it did here: the
        busiest process (this one) or the total CPU shared over the cores, whichever is longer."""
        return max(self.own, self.cpu / cores)


def timed(fn: Callable[[], T]) -> tuple[Timing, T]:
    def cpu() -> tuple[float, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        mine = own.ru_utime + own.ru_stime
        return mine + kids.ru_utime + kids.ru_stime, mine

    wall, (used, used_own) = time.perf_counter(), cpu()
    result = fn()
    total, own = cpu()
    return Timing(time.perf_counter() - wall, total - used, own - used_own), result


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


@contextlib.contextmanager
def held_sessions() -> Iterator[list[float]]:
    """Seconds each store session of this process held the file, from open (after any wait for the lock)
    to close; worker processes are not counted."""
    held: list[float] = []
    original = store.session

    @contextlib.contextmanager
    def timed_session(path: Path, *, read_only: bool = False) -> Iterator[Any]:
        with original(path, read_only=read_only) as conn:
            start = time.perf_counter()
            yield conn
        held.append(time.perf_counter() - start)

    store.session = timed_session
    try:
        yield held
    finally:
        store.session = original


_RECORDER = """
import json, os, sys, time
from ledger import Ledger
from ledger.spec import entries
lg = Ledger.open(sys.argv[1])
n = 0
while not os.path.exists(sys.argv[2]):
    body = entries.call_body(provider="bench", model="m", endpoint="/e", purpose="other",
                             request="ab" * 32, response="cd" * 32, outputs=[], external_id=f"rec-{n}")
    start = time.time()
    lg.append_bodies([body])
    print(json.dumps([start, time.time() - start]), flush=True)
    n += 1
    time.sleep(0.1)
"""


def recorder_during_verify(lg: Ledger, tmp: Path) -> None:
    """A recorder process appends every 0.1 s while `verify` runs: how long did its appends wait?"""
    stop = tmp / "stop-recorder"
    stop.unlink(missing_ok=True)
    recorder = subprocess.Popen(
        [sys.executable, "-c", _RECORDER, str(lg.path), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "LEDGER_KEYS_DIR": str(lg.keys_dir)},
    )
    try:
        assert recorder.stdout is not None and recorder.stdout.readline()
        with held_sessions() as held:
            started = time.time()
            report = verify_ledger(lg)
            ended = time.time()
        stop.touch()
        out, _ = recorder.communicate(timeout=120)
    finally:
        stop.touch()
        recorder.kill()
    assert report.ok, report.problems[:3]
    waits = [w for t, w in map(json.loads, out.splitlines()) if started <= t <= ended]
    waits.sort()
    print(
        f"recorder appending every 0.1 s during a {ended - started:.1f} s verify of {report.size:,} entries "
        f"(verified up to that size): {len(waits)} appends, median {waits[len(waits) // 2]:.2f} s, "
        f"slowest {waits[-1]:.2f} s (lock timeout 30 s); verify's longest session {max(held):.2f} s "
        f"of {len(held)}; {load()}"
    )


def call_body(i: int, rng: random.Random) -> dict[str, Any]:
    """A call entry as the OpenAI importer writes one: three output segments, usage, one fingerprint."""
    body = entries.call_body(
        provider="openai",
        model="gpt-4o-mini",
        endpoint="/v1/chat/completions",
        purpose=rng.choice(entries.PURPOSES),
        request=hashlib.sha256(b"req%d" % i).hexdigest(),
        response=hashlib.sha256(b"resp%d" % i).hexdigest(),
        outputs=[hashlib.sha256(b"out%d/%d" % (i, j)).hexdigest() for j in range(3)],
        external_id=f"chatcmpl-{i:012d}",
        usage={
            "prompt_tokens": 40 + i % 100,
            "completion_tokens": 200 + i % 300,
            "total_tokens": 240 + i % 400,
        },
        fingerprints={
            "params": {"scheme": "bench"},
            "values": [base64.b64encode(rng.randbytes(192)).decode()],
        },
    )
    return body


def ed25519_rates(message_size: int, n: int = 5000) -> tuple[float, float]:
    """Raw signs/s and verifies/s per CPU second on one core: the floor under any signed log."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    messages = [os.urandom(message_size) for _ in range(n)]
    sign_t, signatures = timed(lambda: [key.sign(m) for m in messages])
    verify_t, _ = timed(lambda: [public.verify(s, m) for s, m in zip(signatures, messages)])
    return n / sign_t.cpu, n / verify_t.cpu


def pymerkle_proof_ms(n: int) -> float | None:
    try:
        import pymerkle  # type: ignore[import-untyped]
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        tree = pymerkle.SqliteTree(str(Path(tmp) / "p.db"))
        tree.append_entries([i.to_bytes(8, "big") * 4 for i in range(n)])
        rng = random.Random(3)
        tree.prove_inclusion(1)
        t, _ = timed(lambda: [tree.prove_inclusion(rng.randrange(n) + 1) for _ in range(10)])
        tree.close()
    return t.wall / 10 * 1e3


def append_all(lg: Ledger, start: int, count: int, chunk: int) -> Timing:
    rng = random.Random(start)
    total = Timing(0.0, 0.0)
    for lo in range(start, start + count, chunk):
        bodies = [call_body(i, rng) for i in range(lo, min(lo + chunk, start + count))]
        t, _ = timed(functools.partial(lg.append_bodies, bodies))
        total = Timing(total.wall + t.wall, total.cpu + t.cpu)
    return total


def prove_times(lg: Ledger, size: int, samples: int = 20) -> tuple[float, float]:
    """(ms per Ledger.prove call including opening the file, ms per proof inside an open session)."""
    rng = random.Random(5)
    indexes = [rng.randrange(size) for _ in range(samples)]
    whole, _ = timed(lambda: [lg.prove(i) for i in indexes])
    with store.session(lg.path, read_only=True) as conn:
        head = store.head(conn)

        def core() -> None:
            for index in indexes:
                leaf = store.entry_at(conn, index).leaf
                nodes = store.fetch_nodes(
                    conn, merkle.needed_nodes(merkle.inclusion_ranges(index, head.size))
                )
                proof = merkle.inclusion_proof(index, head.size, nodes)
                merkle.verify_inclusion(merkle.leaf_hash(leaf), index, head.size, proof, head.root)

        inner, _ = timed(core)
    return whole.wall / samples * 1e3, inner.wall / samples * 1e3


_STRING_AGG_LEAVES = """
SELECT '{"segments":[' || coalesce(string_agg('"' || lower(hex(s.segment)) || '"', ',' ORDER BY s.segment), '')
       || '],"sha256":"' || lower(hex(r.digest)) || '"}' AS leaf
FROM records r LEFT JOIN record_segments s ON s.batch = r.batch AND s.position = r.position
WHERE r.batch = 1 GROUP BY r.position, r.digest ORDER BY r.position"""


def record_set_rates(n: int, segments_per_record: int = 3) -> None:
    """check_record_set on n records vs the bare root part over the same leaves, and vs SQL string_agg."""
    conn = duckdb.connect()
    store.create_schema(conn, "bench")
    conn.execute(
        f"""INSERT INTO records SELECT 1, i, unhex(sha256(i::VARCHAR)), unhex(repeat(sha256('f' || i), 6))
            FROM range({n}) t(i)"""
    )
    conn.execute(
        f"""INSERT INTO record_segments SELECT 1, i // {segments_per_record} AS p,
            unhex(sha256('s' || i::VARCHAR)) AS s FROM range({n * segments_per_record}) t(i) ORDER BY p, s"""
    )
    leaves_t, leaves = timed(lambda: list(record_leaves(conn, 1)))
    sha = hashlib.sha256
    root_t, root = timed(lambda: merkle.root([sha(b"\x00" + leaf).digest() for leaf in leaves]))
    fps = [
        bytes(r[0])
        for r in conn.execute("SELECT fingerprint FROM records ORDER BY position").fetchall()
    ]
    fp_root = merkle.root([sha(b"\x00" + f).digest() for f in fps])
    body = {"count": n, "records_root": root.hex(), "fingerprints": {"root": fp_root.hex()}}
    check_t, problems = timed(lambda: check_record_set(conn, 1, body))
    assert problems == [], problems
    print(
        f"check_record_set, {n:,} records x {segments_per_record} segments (both roots): "
        f"{n / check_t.wall:,.0f}/s wall, {n / check_t.cpu:,.0f}/s per CPU s; "
        f"record_leaves alone {n / leaves_t.cpu:,.0f}/s per CPU s; {load()}"
    )
    print(
        f"  baseline, the bare root part (leaf hash + merkle.root over ready leaves): {n / root_t.cpu:,.0f}/s "
        f"per CPU s -> check_record_set is {root_t.cpu / check_t.cpu:.2f}x of it (target >= 1M/s)"
    )
    small = min(n, 200_000)
    conn.execute(f"DELETE FROM records WHERE position >= {small}")
    conn.execute(f"DELETE FROM record_segments WHERE position >= {small}")
    agg_t, _ = timed(lambda: conn.execute(_STRING_AGG_LEAVES).fetchall())
    ours_t, _ = timed(lambda: list(record_leaves(conn, 1)))
    print(
        f"  leaves by SQL string_agg (ordered): {small / agg_t.wall:,.0f}/s wall vs record_leaves "
        f"{small / ours_t.wall:,.0f}/s wall on {small:,} records"
    )
    conn.close()


def verify_record_rates(n: int, tmp: Path) -> None:
    """verify_ledger on a ledger whose bulk is one batch of n records: record sets in 1 vs 2 processes."""
    lg = Ledger.init(tmp / "records.duckdb", origin="bench.local/records")
    with duckdb.connect(str(tmp / "rows.duckdb")) as conn:
        store.create_schema(conn, "rows")
        conn.execute(
            f"""INSERT INTO records SELECT 1, i, unhex(sha256(i::VARCHAR)),
                unhex(repeat(sha256('f' || i), 6)) FROM range({n}) t(i)"""
        )
        conn.execute(
            f"""INSERT INTO record_segments SELECT 1, i // 3 AS p, unhex(sha256('s' || i::VARCHAR)) AS s
                FROM range({3 * n}) t(i) ORDER BY p, s"""
        )
        sha = hashlib.sha256
        root = merkle.root([sha(b"\x00" + leaf).digest() for leaf in record_leaves(conn, 1)])
        fps = conn.execute("SELECT fingerprint FROM records ORDER BY position").fetchall()
        fp_root = merkle.root([sha(b"\x00" + bytes(f)).digest() for (f,) in fps])
    body = entries.batch_body(
        id="big",
        count=n,
        records_root=root.hex(),
        fingerprints={"params": {}, "root": fp_root.hex()},
    )
    index = lg.append_bodies([body]).start
    with duckdb.connect(str(lg.path)) as conn:
        conn.execute(f"ATTACH '{tmp / 'rows.duckdb'}' AS rows (READ_ONLY)")
        conn.execute(
            f"INSERT INTO records SELECT {index}, position, digest, fingerprint FROM rows.records"
        )
        conn.execute(
            f"INSERT INTO record_segments SELECT {index}, position, segment FROM rows.record_segments"
        )
    for workers in (1, 2):
        with held_sessions() as held:
            t, report = timed(functools.partial(verify_ledger, lg, workers=workers))
        assert report.ok, report.problems[:3]
        print(
            f"verify, one batch of {n:,} records ({workers} process{'es' if workers > 1 else ''}): "
            f"{n / t.wall:,.0f} records/s wall, {n / t.cpu:,.0f}/s per CPU s, "
            f"on 2 idle cores ~{n / t.idle_wall():,.0f}/s; {len(held)} sessions in this process, "
            f"longest {max(held):.2f} s; {load()}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--entries", type=int, default=100_000, help="entries appended and verified"
    )
    parser.add_argument("--big", type=int, default=1_000_000, help="log size for the proof timings")
    parser.add_argument(
        "--skip-big", action="store_true", help="do not grow the log for proof timings"
    )
    parser.add_argument("--chunk", type=int, default=100_000, help="entries per append_bodies call")
    parser.add_argument(
        "--records", type=int, default=1_000_000, help="records for the record-set check"
    )
    args = parser.parse_args()
    print(load())
    record_set_rates(args.records)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        verify_record_rates(args.records, Path(tmp))

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        lg = Ledger.init(Path(tmp) / "bench.duckdb", origin="bench.local/log")
        leaf_size = len(
            envelope.pae(envelope.PAYLOAD_TYPE, jcs.canonical_json(call_body(0, random.Random(0))))
        )
        sign_rate, verify_rate = ed25519_rates(leaf_size)
        print(
            f"baseline Ed25519 (1 core, {leaf_size}-byte messages): {sign_rate:,.0f} signs/s, "
            f"{verify_rate:,.0f} verifies/s per CPU second"
        )

        t = append_all(lg, 1, args.entries, args.chunk)
        n = args.entries
        print(
            f"append_bodies, {n:,} signed call entries: {n / t.wall:,.0f}/s wall, {n / t.cpu:,.0f}/s per CPU s "
            f"= {n / t.cpu / sign_rate:.2f}x raw signing (target >= 10k/s); {load()}"
        )

        for workers in (1, None):
            with held_sessions() as held:
                t, report = timed(functools.partial(verify_ledger, lg, workers=workers))
            assert report.ok, report.problems[:3]
            label = "1 process" if workers == 1 else "auto workers"
            print(
                f"verify ({label}), {report.size:,} entries: {report.size / t.wall:,.0f}/s wall, "
                f"{report.size / t.cpu:,.0f}/s per CPU s = {report.size / t.cpu / verify_rate:.2f}x raw "
                f"verification per CPU s; on 2 idle cores ~{report.size / t.idle_wall():,.0f}/s "
                f"(target >= 10k/s); {len(held)} sessions, longest {max(held):.2f} s; {load()}"
            )
        recorder_during_verify(lg, Path(tmp))

        size = lg.head().size
        if not args.skip_big and args.big > size:
            t = append_all(lg, size, args.big - size, args.chunk)
            size = lg.head().size
            print(
                f"grew the log to {size:,} entries in {t.wall:,.0f} s wall ({(args.big - n) / t.wall:,.0f}/s)"
            )
        whole_ms, core_ms = prove_times(lg, size)
        theirs = pymerkle_proof_ms(size)
        ref = (
            f"; pymerkle SqliteTree proof @ {size:,}: {theirs:.2f} ms" if theirs is not None else ""
        )
        print(
            f"inclusion proof @ {size:,}: Ledger.prove {whole_ms:.2f} ms (opens the file), "
            f"{core_ms:.3f} ms inside a session (target < 1 ms){ref}"
        )
        print(f"file size: {os.path.getsize(lg.path) / 1e6:,.0f} MB for {size:,} entries")


if __name__ == "__main__":
    main()
