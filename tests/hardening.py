"""Helpers shared by the hardening suites (test_bad_input, test_tamper, test_concurrency, test_crash).

`CliPool` runs the real `ledger` entry point (`ledger.cli.main`, what the installed console script
calls) in processes forked from a few long-lived servers that imported the package once: exit codes,
stdout and stderr are those of a real process, without paying the interpreter start and imports for
each of the hundreds of invocations these suites make. Crash and concurrency tests, which kill or race
processes, start the installed script itself instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LEDGER = str(Path(sys.executable).with_name("ledger"))

_SERVER = r"""
import json, os, sys
from ledger import cli
# what commands import lazily, loaded once here (no threads are started by these imports)
import ledger.audit.run, ledger.bundle.build, ledger.bundle.export, ledger.bundle.verify, ledger.log.store.lineage, ledger.recording, ledger.log.verify  # noqa: E401,F401

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.chdir(job["cwd"])
            for key, value in job["env"].items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            for fd, name in ((1, job["stdout"]), (2, job["stderr"])):
                target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(target, fd)
                os.close(target)
            sys.argv = ["ledger", *job["args"]]
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


@dataclass(frozen=True)
class Result:
    """What one `ledger` invocation did."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class _Server:
    """One long-lived interpreter that forks a child per invocation."""

    def __init__(self, scratch: Path) -> None:
        self._scratch = scratch
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "COLUMNS": "120",
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
            },
        )
        self._count = 0

    def run(self, args: Sequence[str], cwd: Path, env: Mapping[str, str | None]) -> Result:
        with self._lock:
            self._count += 1
            out = self._scratch / f"{id(self)}-{self._count}.out"
            err = self._scratch / f"{id(self)}-{self._count}.err"
            job = {
                "args": list(args),
                "cwd": str(cwd),
                "env": dict(env),
                "stdout": str(out),
                "stderr": str(err),
            }
            stdin: IO[str] | None = self._proc.stdin
            stdout: IO[str] | None = self._proc.stdout
            assert stdin is not None and stdout is not None
            stdin.write(json.dumps(job) + "\n")
            stdin.flush()
            reply = stdout.readline()
            if not reply:
                raise RuntimeError("the ledger CLI server died")
            code = int(json.loads(reply)["code"])
            result = Result(
                tuple(args), code, out.read_text(errors="replace"), err.read_text(errors="replace")
            )
            out.unlink()
            err.unlink()
            return result

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


class CliPool:
    """A few CLI servers; `run` is thread-safe and `map` spreads invocations over the servers."""

    def __init__(self, size: int = 2) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="ledger-cli-")
        self._servers = [_Server(Path(self._dir.name)) for _ in range(size)]
        self._next = 0
        self._lock = threading.Lock()

    def run(
        self, args: Sequence[str], cwd: Path, env: Mapping[str, str | None] | None = None
    ) -> Result:
        with self._lock:
            server = self._servers[self._next % len(self._servers)]
            self._next += 1
        defaults: dict[str, str | None] = {
            "LEDGER_LOCK_TIMEOUT": "20",
            "LEDGER_PASSPHRASE": None,
            "LEDGER_KEY": None,
            "LEDGER_DB": None,
            "LEDGER_KEYS_DIR": None,
            "LEDGER_VERBOSE": None,
        }
        return server.run(args, cwd, {**defaults, **(env or {})})

    def map(
        self, jobs: Sequence[tuple[Sequence[str], Path, Mapping[str, str | None] | None]]
    ) -> list[Result]:
        with ThreadPoolExecutor(len(self._servers)) as pool:
            return list(pool.map(lambda job: self.run(*job), jobs))

    def close(self) -> None:
        for server in self._servers:
            server.close()
        self._dir.cleanup()


def one_error_line(result: Result) -> str | None:
    """None if stderr is exactly one line `error: ...` with no traceback; else what is wrong."""
    lines = result.stderr.splitlines()
    if "Traceback" in result.stderr + result.stdout or "error: unexpected" in result.stderr:
        return "a traceback or an unexpected exception"
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"expected one line 'error: ...' on stderr, found {len(lines)} lines"
    return None
