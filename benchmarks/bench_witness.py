"""Benchmark `ledger witness serve`: cosignatures per second under concurrent submissions from many logs.

One witness process serves `--logs` logs; `--clients` client processes (each owning some logs)
submit growing tree heads over keep-alive HTTP connections, each with its RFC 6962 consistency
proof, as fast as the witness answers. Every answer must be a 200 carrying a cosignature; the figure
is cosignatures per wall-clock second. The baseline, measured in the same run, is bare Ed25519:
signatures per second of the same message in one process (`cryptography`), so the ratio says how
much of a core's signing speed survives HTTP, the checks and the fsync'd state per cosignature.

    .venv/bin/python benchmarks/bench_witness.py                       # 8 logs, 4 clients
    .venv/bin/python benchmarks/bench_witness.py --logs 32 --clients 8 --heads 100
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from ledger.spec.keys import SigningKey, b64encode
from ledger.spec.merkle import consistency_proof, leaf_hash, nodes_from_leaves, root
from ledger.spec.note import TreeHead, cosignature_message, sign_tree_head, vkey

LEDGER = str(Path(sys.executable).with_name("ledger"))


def log_key(number: int) -> SigningKey:
    return SigningKey.from_seed(number.to_bytes(32, "big"))


def origin(number: int) -> str:
    return f"bench.example/log-{number}"


def bodies(number: int, heads: int, step: int) -> list[bytes]:
    """The requests that grow log `number` from 0 to heads*step leaves, `step` leaves at a time."""
    leaves = [leaf_hash(f"{number}/{i}".encode()) for i in range(heads * step)]
    nodes = nodes_from_leaves(leaves)
    key = log_key(number)
    out = []
    for k in range(1, heads + 1):
        old, size = (k - 1) * step, k * step
        proof = consistency_proof(old, size, nodes) if old else []
        note = sign_tree_head(TreeHead(origin(number), size, root(leaves[:size])), key)
        lines = "".join(f"{b64encode(p)}\n" for p in proof)
        out.append(f"old {old}\n{lines}\n{note}".encode())
    return out


def client(url: str, logs: list[int], heads: int, step: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    prepared = [bodies(n, heads, step) for n in logs]
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    queue.put("ready")
    ok = 0
    start = time.monotonic()
    for k in range(heads):  # interleave the client's logs: one head of each in turn
        for log_bodies in prepared:
            connection.request("POST", "/add-checkpoint", body=log_bodies[k])
            answer = connection.getresponse()
            body = answer.read()
            if answer.status != 200 or not body.startswith("\u2014 ".encode()):
                raise SystemExit(f"unexpected answer {answer.status}: {body[:200]!r}")
            ok += 1
    queue.put((ok, start, time.monotonic()))


def bare_signatures_per_second(seconds: float = 1.0) -> float:
    key = SigningKey.generate()
    head = TreeHead(origin(0), 123456, bytes(32))
    message = cosignature_message(sign_tree_head(head, key), 1700000000)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            key.sign(message)
        count += 200
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logs", type=int, default=8, help="logs the witness serves")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--heads", type=int, default=60, help="tree heads submitted per log")
    parser.add_argument("--step", type=int, default=7, help="leaves added per tree head")
    args = parser.parse_args()
    baseline = bare_signatures_per_second()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        subprocess.run(
            [LEDGER, "witness", "init", "--name", "bench.example/witness", "--out", tmp],
            check=True,
            capture_output=True,
        )
        command = [LEDGER, "witness", "serve", "--key", str(directory / "witness.pem"),
                   "--state", str(directory / "state.json"), "--listen", "127.0.0.1:0"]  # fmt: skip
        for n in range(args.logs):
            command += ["--log", vkey(origin(n), log_key(n).public)]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[-1]
            queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
            shares = [list(range(c, args.logs, args.clients)) for c in range(args.clients)]
            workers = [
                multiprocessing.Process(
                    target=client, args=(url, share, args.heads, args.step, queue)
                )
                for share in shares
                if share
            ]
            for worker in workers:
                worker.start()
            for _ in workers:
                assert queue.get() == "ready"
            results = [queue.get() for _ in workers]
            for worker in workers:
                worker.join()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    total = sum(r[0] for r in results)
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    rate = total / wall
    print(f"witness: {args.logs} logs, {len(workers)} concurrent clients, {total} cosignatures "
          f"in {wall:.2f} s wall = {rate:,.0f} cosignatures/s")  # fmt: skip
    print(
        f"baseline: bare Ed25519 signing of the same message, one process: {baseline:,.0f} signs/s"
    )
    print(f"ratio: witness throughput / bare signing = {rate / baseline:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
