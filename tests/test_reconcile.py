"""Completeness against the provider's records: `ledger reconcile`, `audit --usage`, `export log` and
`verify-bundle --log --usage`, through the installed CLI on a DuckDB file on disk.

The usage files are shaped exactly as `GET /v1/organization/usage/completions` returns them (pages of
buckets with `organization.usage.completions.result` rows, `has_more`/`next_page`), the receipts as JSONL
of ids and as `GET /v1/chat/completions` list pages. Calls come from Batch output files (`batch: true` in
the usage) and from the SDK wrapper against a local HTTP server.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hardening import LEDGER, one_error_line

from ledger import Ledger
from ledger.integrations.openai import recorded

ROOT = Path(__file__).resolve().parent.parent
HOUR, DAY = 3600, 86400
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
ANSWER = "Tides follow the moon because its gravity pulls the oceans into two bulges. " * 2


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run([LEDGER, *args], cwd=cwd, env=env, capture_output=True, text=True)


def ok(cwd: Path, *args: str) -> Any:
    result = run(cwd, *args, "--json")
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


def write_jsonl(path: Path, lines: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def completion(cid: str, model: str, created: int | None, prompt: int, out: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"{ANSWER} ({cid})"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out},
    }
    if created is not None:
        body["created"] = created
    return body


def import_batch(
    shop: Path, name: str, calls: Sequence[tuple[str, str, int | None, int, int]]
) -> None:
    """A Batch API output file and its input file: calls (id, model, created, prompt, completion)."""
    inputs, outputs = [], []
    for n, (cid, model, created, prompt, out) in enumerate(calls):
        custom = f"{name}-{n}"
        request = {"model": model, "messages": [{"role": "user", "content": f"question {cid}"}]}
        inputs.append(
            {"custom_id": custom, "method": "POST", "url": "/v1/chat/completions", "body": request}
        )
        outputs.append({
            "id": f"batch_req_{cid}", "custom_id": custom, "error": None,
            "response": {"status_code": 200, "request_id": f"req_{cid}",
                         "body": completion(cid, model, created, prompt, out)},
        })  # fmt: skip
    out_path = write_jsonl(shop / f"{name}-out.jsonl", outputs)
    in_path = write_jsonl(shop / f"{name}-in.jsonl", inputs)
    ok(shop, "import", "calls", str(out_path), "--format", "openai-batch", "--requests", str(in_path),
       "--provider", "openai", "--purpose", "evaluation")  # fmt: skip


def import_chat(
    shop: Path, name: str, calls: Sequence[tuple[str, str, int | None, int, int]]
) -> None:
    """Synchronous chat completions from a log (not the Batch API): `batch: false` in the usage."""
    lines = [
        {"request": {"model": m, "messages": [{"role": "user", "content": c}]},
         "response": completion(c, m, t, p, o)}
        for c, m, t, p, o in calls
    ]  # fmt: skip
    path = write_jsonl(shop / f"{name}.jsonl", lines)
    ok(shop, "import", "calls", str(path), "--format", "openai-chat", "--provider", "openai",
       "--purpose", "evaluation")  # fmt: skip


def result(
    requests: int, inp: int, out: int, *, model: str | None = None, batch: bool | None = None,
    project_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": inp,
        "output_tokens": out,
        "input_cached_tokens": 0,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": requests,
        "project_id": project_id,
        "user_id": None,
        "api_key_id": None,
        "model": model,
        "batch": batch,
    }


def bucket(start: int, width: int, *results: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "bucket",
        "start_time": start,
        "end_time": start + width,
        "results": list(results),
    }


def page(path: Path, buckets: Sequence[dict[str, Any]], next_page: str | None = None) -> Path:
    document = {"object": "page", "data": list(buckets), "has_more": next_page is not None,
                "next_page": next_page}  # fmt: skip
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def validate(document: Any, schema: str) -> None:
    jsonschema.validate(
        document, json.loads((ROOT / "schemas" / f"{schema}.schema.json").read_text())
    )


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    ok(tmp_path, "init", "--origin", "example.org/reconcile")
    return tmp_path


MINI, FOUR = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"


@pytest.fixture()
def hourly(shop: Path) -> Path:
    """Batch calls at 00:10 and 00:20 (mini) and 02:30 (4o); synchronous mini calls at 00:40 and 03:05."""
    import_batch(shop, "b1", [
        ("chatcmpl-b1", MINI, T0 + 600, 100, 20), ("chatcmpl-b2", MINI, T0 + 1200, 110, 30),
        ("chatcmpl-b3", FOUR, T0 + 2 * HOUR + 1800, 50, 5),
    ])  # fmt: skip
    import_chat(shop, "sync", [
        ("chatcmpl-s1", MINI, T0 + 2400, 7, 3), ("chatcmpl-s2", MINI, T0 + 3 * HOUR + 300, 9, 4),
    ])  # fmt: skip
    return shop


def hourly_pages(shop: Path, extra: int = 0) -> list[Path]:
    """Five hourly buckets grouped by model and batch, in two pages given out of order, overlapping
    on the 02:00 bucket; 01:00 and 04:00 are empty. `extra` requests the ledger never saw at 03:00."""
    b = [
        bucket(T0, HOUR, result(2, 210, 50, model=MINI, batch=True), result(1, 7, 3, model=MINI, batch=False)),
        bucket(T0 + HOUR, HOUR),
        bucket(T0 + 2 * HOUR, HOUR, result(1, 50, 5, model=FOUR, batch=True)),
        bucket(T0 + 3 * HOUR, HOUR, result(1 + extra, 9 + 40 * extra, 4 + 8 * extra, model=MINI, batch=False)),
        bucket(T0 + 4 * HOUR, HOUR),
    ]  # fmt: skip
    second = page(shop / "usage-2.json", b[2:], None)
    first = page(shop / "usage-1.json", b[:3], "page_AAAAAGdGxdEiJdKO")
    return [second, first]


def usage_args(paths: Sequence[Path]) -> list[str]:
    return [arg for p in paths for arg in ("--usage", str(p))]


def test_hourly_grouped_paged_usage_matches_batch_and_synchronous_calls(hourly: Path) -> None:
    report = ok(hourly, "reconcile", *usage_args(hourly_pages(hourly)))
    validate(report, "reconcile")
    assert report["verdict"] == "match" and report["differences"] == []
    assert [b["start_time"] for b in report["buckets"]] == [T0 + i * HOUR for i in range(5)]
    first = {(r["model"], r["batch"]): r for r in report["buckets"][0]["rows"]}
    assert first[(MINI, True)]["recorded"] == {
        "requests": 2, "input_tokens": 210, "output_tokens": 50, "without_usage": 0
    }  # fmt: skip
    assert first[(MINI, False)]["served"]["requests"] == 1
    assert report["buckets"][1]["rows"] and all(
        r["served"]["requests"] == r["recorded"]["requests"] == 0
        for r in report["buckets"][1]["rows"]
    )
    human = run(hourly, "reconcile", *usage_args(hourly_pages(hourly)))
    assert human.returncode == 0, human.stderr
    assert "MATCH" in human.stdout and "UNRECORDED" not in human.stdout


def test_unrecorded_usage_names_the_bucket_model_and_both_numbers(hourly: Path) -> None:
    result_ = run(hourly, "reconcile", *usage_args(hourly_pages(hourly, extra=3)), "--json")
    assert result_.returncode == 1, result_.stderr
    report = json.loads(result_.stdout)
    validate(report, "reconcile")
    assert report["verdict"] == "mismatch"
    [diff] = report["differences"]
    assert diff["kind"] == "unrecorded" and diff["start_time"] == T0 + 3 * HOUR
    assert (diff["model"], diff["batch"]) == (MINI, False)
    assert diff["served"] == {"requests": 4, "input_tokens": 129, "output_tokens": 28}
    assert diff["recorded"]["requests"] == 1 and diff["recorded"]["input_tokens"] == 9
    assert [c["external_id"] for c in diff["calls"]] == ["chatcmpl-s2"]
    human = run(hourly, "reconcile", *usage_args(hourly_pages(hourly, extra=3)))
    assert human.returncode == 1
    assert "UNRECORDED" in human.stdout and "4 / 1" in human.stdout
    assert "2026-01-01 03:00" in human.stdout


def test_a_recorded_call_the_provider_never_served_is_named(hourly: Path) -> None:
    # a fabricated call in the empty 04:00 bucket, and one misattributed to another model at 02:00
    import_chat(hourly, "made-up", [
        ("chatcmpl-ghost", MINI, T0 + 4 * HOUR + 60, 12, 12), ("chatcmpl-other", FOUR, T0 + 2 * HOUR + 60, 3, 3),
    ])  # fmt: skip
    result_ = run(hourly, "reconcile", *usage_args(hourly_pages(hourly)), "--json")
    assert result_.returncode == 1, result_.stderr
    report = json.loads(result_.stdout)
    by_id = {c["external_id"]: d for d in report["differences"] for c in d["calls"]}
    ghost = by_id["chatcmpl-ghost"]
    assert ghost["kind"] == "unserved" and ghost["start_time"] == T0 + 4 * HOUR
    assert ghost["served"]["requests"] == 0 and ghost["recorded"]["requests"] == 1
    other = by_id["chatcmpl-other"]
    assert other["kind"] == "unserved" and (other["model"], other["batch"]) == (FOUR, False)
    human = run(hourly, "reconcile", *usage_args(hourly_pages(hourly)))
    assert "NEVER SERVED" in human.stdout and "chatcmpl-ghost" in human.stdout


def test_daily_ungrouped_and_project_grouped_exports(hourly: Path) -> None:
    day = page(hourly / "day.json", [bucket(T0, DAY, result(5, 276, 62))])
    assert ok(hourly, "reconcile", "--usage", str(day))["verdict"] == "match"
    # grouped by project: the ledger records no project, so the rows are summed over it
    by_project = page(hourly / "projects.json", [
        bucket(T0, DAY, result(3, 200, 40, project_id="proj_a"), result(2, 76, 22, project_id="proj_b")),
    ])  # fmt: skip
    report = ok(hourly, "reconcile", "--usage", str(by_project))
    assert report["verdict"] == "match" and report["merged"] == ["project_id"]
    # the same requests, more output tokens than recorded
    tokens = page(hourly / "tokens.json", [bucket(T0, DAY, result(5, 276, 99))])
    result_ = run(hourly, "reconcile", "--usage", str(tokens), "--json")
    assert result_.returncode == 1
    [diff] = json.loads(result_.stdout)["differences"]
    assert diff["kind"] == "tokens" and diff["served"]["output_tokens"] == 99
    assert diff["recorded"]["output_tokens"] == 62


def test_calls_outside_the_window_are_reported_and_calls_without_created_are_a_gap(
    hourly: Path,
) -> None:
    import_chat(hourly, "later", [("chatcmpl-next-week", MINI, T0 + 8 * DAY, 1, 1)])
    report = ok(hourly, "reconcile", *usage_args(hourly_pages(hourly)))
    assert report["verdict"] == "match"
    assert report["outside"]["calls"] == 1
    assert report["outside"]["examples"][0]["external_id"] == "chatcmpl-next-week"

    import_chat(hourly, "untimed", [("chatcmpl-no-time", MINI, None, 1, 1)])
    result_ = run(hourly, "reconcile", *usage_args(hourly_pages(hourly)), "--json")
    assert result_.returncode == 3, result_.stderr
    report = json.loads(result_.stdout)
    assert report["verdict"] == "incomplete"
    assert [c["external_id"] for c in report["unplaced"]] == ["chatcmpl-no-time"]
    assert any("created" in reason for reason in report["reasons"])


def test_receipts_ids_and_stored_completion_pages(hourly: Path) -> None:
    ids = write_jsonl(hourly / "ids.jsonl", [{"id": f"chatcmpl-{n}"} for n in ("b1", "b2", "s1")])
    report = ok(hourly, "reconcile", "--receipts", str(ids))
    assert report["receipts"]["unrecorded"] == [] and report["receipts"]["window"] is None

    served_more = write_jsonl(
        hourly / "more.jsonl", [{"id": "chatcmpl-b1"}, {"id": "chatcmpl-unseen"}]
    )
    result_ = run(hourly, "reconcile", "--receipts", str(served_more), "--json")
    assert result_.returncode == 1
    unrecorded = json.loads(result_.stdout)["receipts"]["unrecorded"]
    assert [r["id"] for r in unrecorded] == ["chatcmpl-unseen"]
    assert unrecorded[0]["source"].endswith("more.jsonl:2")

    # stored completions cover 00:00..03:05: both synchronous calls must be in them (batch ones are not)
    stored = {
        "object": "list",
        "data": [completion("chatcmpl-s1", MINI, T0 + 2400, 7, 3), completion("chatcmpl-s2", MINI, T0 + 3 * HOUR + 300, 9, 4)],
        "first_id": "chatcmpl-s1", "last_id": "chatcmpl-s2", "has_more": False,
    }  # fmt: skip
    path = hourly / "stored.json"
    path.write_text(json.dumps(stored), encoding="utf-8")
    report = ok(hourly, "reconcile", "--receipts", str(path), *usage_args(hourly_pages(hourly)))
    assert report["receipts"]["calls_in_window"] == 2
    stored["data"] = stored["data"][1:]
    stored["data"].insert(0, completion("chatcmpl-x", MINI, T0 + 60, 1, 1))
    path.write_text(json.dumps(stored), encoding="utf-8")
    result_ = run(hourly, "reconcile", "--receipts", str(path), "--json")
    assert result_.returncode == 1
    receipts = json.loads(result_.stdout)["receipts"]
    assert [c["external_id"] for c in receipts["unreceipted"]] == ["chatcmpl-s1"]
    assert [r["id"] for r in receipts["unrecorded"]] == ["chatcmpl-x"]


# --- the SDK wrapper against a local server ---------------------------------------------------------


class Served(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Answer)
        self.count = 0


class Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Served

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.count += 1
        n = self.server.count
        body = json.dumps(
            completion(f"chatcmpl-sdk{n}", req["model"] + "-2024-07-18", T0 + 60 * n, 10, 5)
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


@pytest.fixture()
def server() -> Iterator[Served]:
    httpd = Served()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_calls_recorded_through_the_sdk_wrapper_reconcile(shop: Path, server: Served) -> None:
    lg = Ledger.open(shop / "ledger.duckdb")
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    client = recorded(openai.OpenAI(api_key="sk-test", base_url=base), lg, purpose="evaluation")
    for n in range(3):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{n}"}]
        )
    # the provider's minute buckets: 3 requests at 00:01..00:03, and one more the ledger never saw
    minutes = [
        bucket(T0 + 60 * n, 60, *([result(1, 10, 5, model=MINI)] if 1 <= n <= 3 else []))
        for n in range(5)
    ]
    usage = page(shop / "minutes.json", minutes)
    assert ok(shop, "reconcile", "--usage", str(usage))["verdict"] == "match"
    minutes[4]["results"] = [result(1, 10, 5, model=MINI)]
    usage = page(shop / "minutes.json", minutes)
    result_ = run(shop, "reconcile", "--usage", str(usage), "--json")
    assert result_.returncode == 1
    [diff] = json.loads(result_.stdout)["differences"]
    assert diff["kind"] == "unrecorded" and diff["start_time"] == T0 + 240


# --- the audit and the provider's offline check -------------------------------------------------------


@pytest.fixture()
def audited(hourly: Path) -> Path:
    data = write_jsonl(
        hourly / "clean.jsonl",
        [{"text": "Our own shipping notes for the winter season, reviewed twice."}],
    )
    ok(hourly, "record", "batch", str(data), "--id", "run/step-1")
    weights = hourly / "w.bin"
    weights.write_bytes(b"weights")
    ok(
        hourly,
        "record",
        "checkpoint",
        "--id",
        "run/ckpt",
        "--weights",
        str(weights),
        "--batch",
        "run/step-1",
    )
    return hourly


def test_audit_with_usage_turns_clean_into_inconclusive_with_the_reason(audited: Path) -> None:
    report = ok(audited, "audit", "run/ckpt", *usage_args(hourly_pages(audited)))
    assert report["verdict"] == "clean" and report["reconciliation"]["verdict"] == "match"
    validate(report, "audit")

    result_ = run(audited, "audit", "run/ckpt", *usage_args(hourly_pages(audited, extra=2)), "--json",
                  "--bundle", str(audited / "bundle.json"))  # fmt: skip
    assert result_.returncode == 3, result_.stderr
    report = json.loads(result_.stdout)
    validate(report, "audit")
    assert report["verdict"] == "inconclusive" and report["problems"] == []
    assert report["reconciliation"]["verdict"] == "mismatch"
    assert any("served more requests than recorded" in n for n in report["notes"])
    human = run(audited, "audit", "run/ckpt", *usage_args(hourly_pages(audited, extra=2)))
    assert "provider's own records disagree" in human.stdout
    # the bundle carries the reconciliation, so its inconclusive verdict still verifies
    vkey = run(audited, "keys", "export", "log").stdout.strip()
    checked = run(audited, "verify-bundle", str(audited / "bundle.json"), "--key", vkey, "--json")
    assert checked.returncode == 0, checked.stdout
    bundle = json.loads((audited / "bundle.json").read_text())
    validate(bundle, "audit-bundle")
    del bundle["reconciliation"]  # without it, clean would be expected
    (audited / "stripped.json").write_text(json.dumps(bundle), encoding="utf-8")
    checked = run(audited, "verify-bundle", str(audited / "stripped.json"), "--key", vkey)
    assert checked.returncode == 1


@pytest.fixture()
def exported(audited: Path) -> tuple[Path, str]:
    ok(audited, "audit", "run/ckpt", "--bundle", str(audited / "bundle.json"))
    written = ok(audited, "export", "log", str(audited / "log"))
    validate(written, "export-log")
    table = pq.read_table(audited / "log" / "log.parquet")
    assert (
        table.schema.field("index").type == pa.int64()
        and table.schema.field("leaf").type == pa.binary()
    )
    assert table.column("index").to_pylist() == list(range(written["size"]))
    vkey = run(audited, "keys", "export", "log").stdout.strip()
    return audited, vkey


def verify_log(shop: Path, vkey: str, *usage: Path) -> subprocess.CompletedProcess[str]:
    return run(shop, "verify-bundle", str(shop / "bundle.json"), "--key", vkey, "--log", str(shop / "log"),
               *usage_args(usage), "--json")  # fmt: skip


def test_the_provider_checks_the_exported_log_offline(exported: tuple[Path, str]) -> None:
    shop, vkey = exported
    result_ = verify_log(shop, vkey, *hourly_pages(shop))
    assert result_.returncode == 0, result_.stdout
    checked = json.loads(result_.stdout)
    validate(checked, "verify-bundle")
    assert checked["checked"]["log_calls"] == 5

    result_ = verify_log(shop, vkey, *hourly_pages(shop, extra=1))
    assert result_.returncode == 1
    assert "served more requests than recorded" in result_.stdout


@pytest.mark.parametrize("defect", ["removed", "extra", "altered"])
def test_an_exported_log_with_a_bad_row_fails(exported: tuple[Path, str], defect: str) -> None:
    shop, vkey = exported
    path = shop / "log" / "log.parquet"
    table = pq.read_table(path)
    indexes, leaves = table.column("index").to_pylist(), table.column("leaf").to_pylist()
    bodies = [json.loads(base64.b64decode(json.loads(leaf)["payload"])) for leaf in leaves]
    call_row = next(i for i, body in enumerate(bodies) if body.get("external_id") == "chatcmpl-s2")
    if defect == "removed":  # a call the lab would rather the provider not see
        del indexes[-1], leaves[call_row]
    elif defect == "extra":
        indexes.append(len(indexes))
        leaves.append(leaves[call_row])
    else:
        leaves[call_row] = leaves[call_row].replace(b'"payload":"', b'"payload":"e30', 1)
    pq.write_table(
        pa.table({"index": pa.array(indexes, pa.int64()), "leaf": pa.array(leaves, pa.binary())}),
        path,
    )
    result_ = verify_log(shop, vkey, *hourly_pages(shop))
    assert result_.returncode == 1, result_.stdout
    problems = " ".join(p["what"] for p in json.loads(result_.stdout)["problems"])
    expected = {"removed": "missing", "extra": "extra", "altered": "a row was altered"}[defect]
    assert expected in problems, problems


# --- bad files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "content", "where"),
    [
        ("--usage", "{not json", ":1:"),
        ("--usage", json.dumps({"object": "list", "data": []}), ":1:"),
        (
            "--usage",
            json.dumps(
                {
                    "object": "page",
                    "data": [
                        bucket(
                            T0,
                            HOUR,
                            {
                                "object": "organization.usage.embeddings.result",
                                "input_tokens": 1,
                                "num_model_requests": 1,
                            },
                        )
                    ],
                }
            ),
            ":1:",
        ),  # fmt: skip
        (
            "--usage",
            json.dumps({"object": "page", "data": [bucket(T0, HOUR, result(-1, 0, 0))]}),
            ":1:",
        ),
        ("--receipts", '{"id": "chatcmpl-1"}\n{"object": "page", "data": []}\n', ":2:"),
        ("--receipts", '{"id": "chatcmpl-1"}\n{"id": 7}\n', ":2:"),
    ],
)
def test_a_file_that_is_not_a_usage_page_or_receipts_is_exit_4(
    shop: Path, option: str, content: str, where: str
) -> None:
    path = shop / "bad.json"
    path.write_text(content, encoding="utf-8")
    result_ = run(shop, "reconcile", option, str(path))
    assert result_.returncode == 4, (result_.stdout, result_.stderr)
    assert one_error_line(result_) is None, result_.stderr
    assert result_.stderr.startswith(f"error: {path}{where}"), result_.stderr


def test_pages_that_disagree_on_a_bucket_are_bad_input(hourly: Path) -> None:
    a = page(hourly / "a.json", [bucket(T0, HOUR, result(3, 217, 53))])
    b = page(hourly / "b.json", [bucket(T0, HOUR, result(4, 217, 53))])
    result_ = run(hourly, "reconcile", "--usage", str(a), "--usage", str(b))
    assert result_.returncode == 4 and "differs from the same bucket" in result_.stderr
    c = page(hourly / "c.json", [bucket(T0, DAY, result(5, 276, 62))])
    result_ = run(hourly, "reconcile", "--usage", str(a), "--usage", str(c))
    assert result_.returncode == 4 and "overlaps" in result_.stderr
