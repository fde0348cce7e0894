"""Errors that say the right thing (issue #11): the right exit code, one line `error: ...` saying what is
wrong in the caller's terms (`--model`, `--requests`, the file), and a ledger left as it was.

Everything runs through the installed `ledger` command in real processes, on DuckDB files on disk.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from ledger import Ledger
from ledger.errors import InputError, UsageError

LEDGER = str(Path(sys.executable).with_name("ledger"))
ANSWER = "The capital of France is Paris, a city on the Seine with many museums and bridges."
RESPONSE = {"id": "chatcmpl-err-1", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}]}  # fmt: skip


def env(**overrides: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return {**base, "LEDGER_LOCK_TIMEOUT": "20", "COLUMNS": "200", **overrides}


def run(args: Sequence[str], cwd: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LEDGER, *args], cwd=cwd, env=env(**overrides), capture_output=True, text=True,
                          check=False, timeout=180)  # fmt: skip


def the_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The exit code is `code`, stderr is exactly one line `error: ...`, stdout is empty; return that line."""
    lines = result.stderr.splitlines()
    assert result.returncode == code, (result.returncode, result.stdout[-500:], result.stderr)
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert result.stdout == "", result.stdout[:300]
    return lines[0]


def state(db: Path) -> tuple[str, int]:
    """What a failed command must leave as it was: the signed tree head and the number of entries."""
    lg = Ledger.open(db)
    return lg.head().note, lg.entry_count()


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A ledger `lab.duckdb` in tmp_path with a call, a batch and a checkpoint."""
    lg = Ledger.init(tmp_path / "lab.duckdb", origin="lab.test/log")
    lg.record_call(provider="openai", purpose="evaluation", request=None, response=RESPONSE)
    lg.record_batch(
        [{"text": ANSWER}, {"text": "An unrelated record about the weather in the hills."}], id="b"
    )
    (tmp_path / "w.bin").write_bytes(b"weights")
    lg.record_checkpoint(id="ck", weights=[tmp_path / "w.bin"], batches=["b"])
    return tmp_path


# --- verify --since with another ledger's tree head ------------------------------------------------------


def test_verify_since_another_ledgers_head_is_the_wrong_file(lab: Path) -> None:
    db = lab / "lab.duckdb"
    Ledger.init(lab / "other.duckdb", origin="other.test/log")
    assert run(["head", "--db", "other.duckdb", "--out", "other.head"], lab).returncode == 0
    assert run(["head", "--db", "lab.duckdb", "--out", "lab.head"], lab).returncode == 0
    before = state(db)
    for extra in ([], ["--json"]):
        line = the_error(
            run(["verify", "--since", "other.head", "--db", "lab.duckdb", *extra], lab), 4
        )
        assert "other.head" in line and "TAMPERING" not in line
        assert "this head's origin is 'other.test/log', the ledger's is 'lab.test/log'" in line
    assert state(db) == before
    assert run(["verify", "--since", "lab.head", "--db", "lab.duckdb"], lab).returncode == 0


def test_consistency_from_another_ledgers_head_is_the_wrong_file(lab: Path) -> None:
    db = lab / "lab.duckdb"
    Ledger.init(lab / "other.duckdb", origin="other.test/log")
    assert run(["head", "--db", "other.duckdb", "--out", "other.head"], lab).returncode == 0
    assert run(["head", "--db", "lab.duckdb", "--out", "lab.head"], lab).returncode == 0
    before = state(db)
    line = the_error(run(["consistency", "--from", "other.head", "--db", "lab.duckdb"], lab), 4)
    assert "other.head" in line
    assert "this head's origin is 'other.test/log', the ledger's is 'lab.test/log'" in line
    assert state(db) == before
    assert run(["consistency", "--from", "lab.head", "--db", "lab.duckdb"], lab).returncode == 0


def test_verify_since_another_ledgers_head_still_reports_tampering(lab: Path) -> None:
    """The wrong-file answer is given only for an intact log: a damaged one is still exit 1."""
    Ledger.init(lab / "other.duckdb", origin="other.test/log")
    assert run(["head", "--db", "other.duckdb", "--out", "other.head"], lab).returncode == 0
    with duckdb.connect(str(lab / "lab.duckdb")) as conn:
        conn.execute("UPDATE entries SET leaf = leaf || 'x'::BLOB WHERE idx = 2")
    result = run(["verify", "--since", "other.head", "--db", "lab.duckdb", "--json"], lab)
    assert result.returncode == 1, result.stderr
    problems = [p["what"] for p in json.loads(result.stdout)["problems"]]
    assert any("expected origin 'lab.test/log', found 'other.test/log'" in p for p in problems), (
        problems
    )
    assert len(problems) > 1, problems


# --- verify-bundle: unusable input is exit 4, a failed check exit 1 ----------------------------------------


@pytest.fixture
def bundle(lab: Path) -> Path:
    """lab/bundle.json (an audit bundle of `ck`) and lab/lab.vkey."""
    assert (
        run(
            ["audit", "ck", "--db", "lab.duckdb", "--bundle", "bundle.json", "--json"], lab
        ).returncode
        == 1
    )
    assert (
        run(["keys", "export", "log", "--db", "lab.duckdb", "--out", "lab.vkey"], lab).returncode
        == 0
    )
    return lab / "bundle.json"


def test_verify_bundle_exit_codes(bundle: Path) -> None:
    lab = bundle.parent
    assert run(["verify-bundle", "bundle.json", "--key", "lab.vkey"], lab).returncode == 0
    vkey = (lab / "lab.vkey").read_text().strip()
    name, key_id, key = vkey.split("+", 2)
    (lab / "bad.vkey").write_text(f"{name}+{key_id}+{key[:-4]}\n")
    (lab / "not-json.json").write_text("this is not JSON at all\n")
    (lab / "array.json").write_text("[1, 2, 3]\n")
    raw = bundle.read_bytes()
    (lab / "cut.json").write_bytes(raw[: len(raw) // 2])
    unusable = {
        ("bundle.json", "not-a-key"): ("not-a-key", "verifier key"),
        ("bundle.json", f"{name}+{key_id}"): ("verifier key",),
        ("bundle.json", "bad.vkey"): ("bad.vkey", "verifier key"),
        ("not-json.json", "lab.vkey"): ("not-json.json", "not valid JSON"),
        ("cut.json", "lab.vkey"): ("cut.json", "not valid JSON"),
        ("array.json", "lab.vkey"): ("array.json", "expected a JSON object, found list"),
    }
    for (path, key_arg), names in unusable.items():
        for extra in ([], ["--json"]):
            line = the_error(run(["verify-bundle", path, "--key", key_arg, *extra], lab), 4)
            assert all(n in line for n in names), (path, key_arg, line)
    # A well-formed bundle that fails a check is still exit 1: a vkey of another ledger, an altered leaf.
    Ledger.init(lab / "other.duckdb", origin="other.test/log")
    other = run(["keys", "export", "log", "--db", "other.duckdb"], lab).stdout.strip()
    assert other.startswith("other.test/log+")
    wrong_key = run(["verify-bundle", "bundle.json", "--key", other], lab)
    assert wrong_key.returncode == 1 and "does not verify with the given key" in wrong_key.stdout, (
        wrong_key
    )
    document = json.loads(raw)
    leaf = document["entries"][-1]["leaf"]
    document["entries"][-1]["leaf"] = ("B" if leaf[4] != "B" else "C").join([leaf[:4], leaf[5:]])
    (lab / "altered.json").write_text(json.dumps(document))
    altered = run(["verify-bundle", "altered.json", "--key", "lab.vkey", "--json"], lab)
    assert altered.returncode == 1 and json.loads(altered.stdout)["ok"] is False, altered.stderr


# --- import calls: the Batch input file given as the output file -------------------------------------------


def test_import_calls_refuses_the_batch_input_file(lab: Path) -> None:
    db = lab / "lab.duckdb"
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"question {i}"}]}} for i in range(3)]  # fmt: skip
    (lab / "batch_input.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    before = state(db)
    for requests in ([], ["--requests", "batch_input.jsonl"]):
        line = the_error(run(["import", "calls", "batch_input.jsonl", "--format", "openai-batch", *requests,
                              "--provider", "openai", "--purpose", "evaluation", "--db", "lab.duckdb"], lab), 4)  # fmt: skip
        assert "batch_input.jsonl:1: this is the Batch input file" in line, line
        assert line.endswith("pass it with --requests") and "requests_path" not in line, line
    assert state(db) == before
    # Its output file, with the input as --requests, imports.
    outputs = [{"id": f"batch_req_{i}", "custom_id": f"r{i}", "error": None,
                "response": {"status_code": 200, "request_id": f"req{i}",
                             "body": {**RESPONSE, "id": f"chatcmpl-batch-{i}"}}} for i in range(3)]  # fmt: skip
    (lab / "batch_output.jsonl").write_text("".join(json.dumps(line) + "\n" for line in outputs))
    ok = run(["import", "calls", "batch_output.jsonl", "--format", "openai-batch", "--requests", "batch_input.jsonl",
              "--provider", "openai", "--purpose", "evaluation", "--db", "lab.duckdb", "--json"], lab)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert state(db)[1] == before[1] + 3


# --- log --since: RFC 3339 instants and dates --------------------------------------------------------------


def test_log_since_compares_instants(lab: Path) -> None:
    everything = json.loads(run(["log", "--db", "lab.duckdb", "--json"], lab).stdout)
    times = [datetime.fromisoformat(e["time"]) for e in everything]
    assert len(times) >= 4 and all(t.tzinfo is not None for t in times)

    def since(value: str) -> list[int]:
        result = run(["log", "--db", "lab.duckdb", "--json", "--since", value], lab)
        assert result.returncode == 0, result.stderr
        return [e["index"] for e in json.loads(result.stdout)]

    def at_or_after(t: datetime) -> list[int]:
        return [e["index"] for e, et in zip(everything, times, strict=True) if et >= t]

    last, third = times[-1], times[2]
    plus_two = timezone(timedelta(hours=2))
    # A space-separated time used to compare as text below every stored `T` and list everything.
    assert (
        since(last.astimezone(UTC).isoformat(sep=" ")) == at_or_after(last) != at_or_after(times[0])
    )
    assert since(third.astimezone(plus_two).isoformat()) == at_or_after(third)
    assert since(third.astimezone(plus_two).isoformat(sep=" ")) == at_or_after(third)
    lower = third.astimezone(UTC).isoformat().replace("+00:00", "z").replace("T", "t")
    assert since(lower) == at_or_after(third)
    just_after = third + timedelta(microseconds=1)
    assert since(just_after.isoformat().replace("+00:00", "Z")) == at_or_after(just_after)
    day = times[0].astimezone(UTC).date()
    assert since(day.isoformat()) == [e["index"] for e in everything]
    assert since((day + timedelta(days=1)).isoformat()) == at_or_after(
        datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    )
    assert since("2999-01-01") == []


def test_log_since_unparsable_is_a_usage_error(lab: Path) -> None:
    before = state(lab / "lab.duckdb")
    for value in ("yesterday", "2026-13-01", "2026-12-01T10:00:00", "12/01/2026"):
        line = the_error(run(["log", "--db", "lab.duckdb", "--since", value, "--json"], lab), 2)
        assert f"--since {value!r}" in line, line
        assert "Z" in line and ("RFC 3339" in line or "offset" in line), line
    assert state(lab / "lab.duckdb") == before
    lg = Ledger.open(lab / "lab.duckdb")
    with pytest.raises(UsageError, match="since 'yesterday'"):
        lg.log(since="yesterday")
    with pytest.raises(UsageError, match="aware"):
        lg.log(since=datetime(2026, 1, 1))  # a naive value: which zone would it be in?
    assert len(lg.log(since="2000-01-01")) == lg.entry_count()


# --- record call: an API error body, a body without a model ----------------------------------------------


def test_record_call_refuses_an_api_error_response(lab: Path) -> None:
    db = lab / "lab.duckdb"
    bodies = {
        "openai-error.json": (
            {
                "error": {
                    "message": "Incorrect API key provided: sk-...",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
            "error.type invalid_request_error",
        ),
        "anthropic-error.json": (
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "error.type overloaded_error: Overloaded",
        ),
        "gemini-error.json": (
            {
                "error": {
                    "code": 429,
                    "message": "Resource exhausted",
                    "status": "RESOURCE_EXHAUSTED",
                }
            },
            "error.status RESOURCE_EXHAUSTED",
        ),
    }
    before = state(db)
    for name, (body, says) in bodies.items():
        (lab / name).write_text(json.dumps(body))
        line = the_error(run(["record", "call", "--provider", "openai", "--purpose", "evaluation", "--response", name,
                              "--db", "lab.duckdb"], lab), 4)  # fmt: skip
        assert line.startswith(f"error: {name}: this is an API error response ("), line
        assert (
            says in line
            and "not a model output; nothing to record" in line
            and "model=" not in line
        ), line
    assert state(db) == before
    with pytest.raises(InputError, match="API error response"):
        Ledger.open(db).record_call(provider="openai", purpose="evaluation", request=None,
                                    response=bodies["openai-error.json"][0])  # fmt: skip


def test_record_call_without_a_model_names_the_option(lab: Path) -> None:
    db = lab / "lab.duckdb"
    body = {"id": "chatcmpl-nomodel", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}]}  # fmt: skip
    (lab / "nomodel.json").write_text(json.dumps(body))
    before = state(db)
    line = the_error(run(["record", "call", "--provider", "openai", "--purpose", "evaluation", "--response",
                          "nomodel.json", "--db", "lab.duckdb"], lab), 4)  # fmt: skip
    assert (
        "cannot tell the call's model" in line
        and line.endswith("pass --model")
        and "model=" not in line
    ), line
    assert state(db) == before
    ok = run(["record", "call", "--provider", "openai", "--purpose", "evaluation", "--response", "nomodel.json",
              "--model", "gpt-4o", "--db", "lab.duckdb", "--json"], lab)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    with pytest.raises(InputError, match="pass model=$"):  # the Python API names its keyword
        Ledger.open(db).record_call(provider="openai", purpose="evaluation", request=None,
                                    response={**body, "id": "chatcmpl-nomodel-2"})  # fmt: skip


def test_import_calls_without_a_model_names_the_line(lab: Path) -> None:
    """`import calls` has no --model: the line itself must carry one, and the error says which line."""
    line_body = {"provider": "acme", "response": {"id": "x-1", "object": "chat.completion",
                                                  "choices": [{"index": 0, "message": {"content": ANSWER}}]}}  # fmt: skip
    (lab / "calls.jsonl").write_text(json.dumps(line_body) + "\n")
    line = the_error(run(["import", "calls", "calls.jsonl", "--format", "jsonl", "--provider", "acme",
                          "--purpose", "evaluation", "--db", "lab.duckdb"], lab), 4)  # fmt: skip
    assert "calls.jsonl:1: cannot tell the call's model" in line and "pass" not in line, line


# --- record batch DIR ------------------------------------------------------------------------------------


def test_record_batch_reads_a_directory_in_name_order(lab: Path) -> None:
    shards = lab / "shards"
    (shards / "more").mkdir(parents=True)
    (shards / ".cache").mkdir()
    records = [
        {"text": f"training record number {i} about rivers, hills and the weather"}
        for i in range(6)
    ]
    (shards / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[2:4]))
    with gzip.open(shards / "a.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records[0:2]))
    pq.write_table(pa.Table.from_pylist(records[4:5]), shards / "more" / "c.parquet")
    (shards / "more" / "d.txt").write_text(records[5]["text"] + "\n")
    (shards / ".cache" / "junk.jsonl").write_text('{"text": "hidden: not read"}\n')
    (shards / ".DS_Store").write_bytes(b"\x00\x01")
    (shards / "_SUCCESS").write_text("")
    result = run(["record", "batch", "shards", "--db", "lab.duckdb", "--json"], lab)
    assert result.returncode == 0, result.stderr
    (batch,) = json.loads(result.stdout)["batches"]
    assert batch["id"] == "shards" and batch["count"] == 6
    body = Ledger.open(lab / "lab.duckdb").entry("shards").body
    assert [s["file"] for s in body["source"]] == [
        "a.jsonl.gz",
        "b.jsonl",
        "more/c.parquet",
        "more/d.txt",
    ]
    # The same files named one by one, in that order, give the same records root.
    files = ["shards/a.jsonl.gz", "shards/b.jsonl", "shards/more/c.parquet", "shards/more/d.txt"]
    same = run(["record", "batch", *files, "--id", "by-name", "--db", "lab.duckdb", "--json"], lab)
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["batches"][0]["records_root"] == batch["records_root"]
    assert [
        s["sha256"] for s in Ledger.open(lab / "lab.duckdb").entry("by-name").body["source"]
    ] == [s["sha256"] for s in body["source"]]


def test_record_batch_directory_without_data_files(lab: Path) -> None:
    db = lab / "lab.duckdb"
    (lab / "empty").mkdir()
    (lab / "hidden-only" / ".git").mkdir(parents=True)
    (lab / "hidden-only" / ".git" / "x.jsonl").write_text('{"text": "not data"}\n')
    (lab / "hidden-only" / "_SUCCESS").write_text("")
    (lab / "stray").mkdir()
    (lab / "stray" / "a.jsonl").write_text('{"text": "fine"}\n')
    (lab / "stray" / "notes.md").write_text("# not records\n")
    before = state(db)
    for directory in ("empty", "hidden-only"):
        line = the_error(run(["record", "batch", directory, "--db", "lab.duckdb"], lab), 4)
        assert f"error: {directory}: the directory holds no data file" in line, line
    line = the_error(run(["record", "batch", "stray", "--db", "lab.duckdb"], lab), 4)
    assert "stray/notes.md: cannot tell the record format" in line, line
    assert state(db) == before


# --- the lock notice ---------------------------------------------------------------------------------------


@contextmanager
def holding_the_file(db: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process with the file open for writing, until a line is written to its stdin."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, duckdb
        conn = duckdb.connect(sys.argv[1])
        print("holding", flush=True)
        sys.stdin.readline()
        conn.close()
    """), str(db)], env=env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("waiting for ")]


def test_a_lock_wait_is_said_once_then_times_out(lab: Path) -> None:
    db = lab / "lab.duckdb"
    (lab / "late.jsonl").write_text(
        '{"text": "a record that cannot be recorded while the file is held"}\n'
    )
    before = state(db)
    with holding_the_file(db) as holder:
        result = run(["record", "batch", "late.jsonl", "--db", "lab.duckdb", "--json"], lab,
                     LEDGER_LOCK_TIMEOUT="1")  # fmt: skip
        assert result.returncode == 4 and result.stdout == "", result
        lines = result.stderr.splitlines()
        assert notices(result.stderr) == [
            f"waiting for lab.duckdb: locked by another process (PID {holder.pid}); up to LEDGER_LOCK_TIMEOUT=1 s"
        ], lines
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1 and "still locked" in errors[0] and len(lines) == 2, lines
    assert state(db) == before


def test_a_lock_wait_is_said_once_and_json_stays_clean(lab: Path) -> None:
    db = lab / "lab.duckdb"
    with holding_the_file(db) as holder:
        waiting = subprocess.Popen([LEDGER, "verify", "--db", "lab.duckdb", "--json"], cwd=lab,
                                   env=env(LEDGER_LOCK_TIMEOUT="120"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)  # fmt: skip
        assert waiting.stderr is not None
        first = waiting.stderr.readline()  # blocks until the command says it waits
        assert first.startswith(
            f"waiting for lab.duckdb: locked by another process (PID {holder.pid})"
        ), first
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        out, rest = waiting.communicate(timeout=180)
    assert waiting.returncode == 0, first + rest
    assert notices(first + rest) == [first.rstrip("\n")] and rest == "", rest
    assert json.loads(out)["ok"] is True
