"""The audit story shared by test_audit.py and test_bundle.py: one real ledger, built through the library.

Lineages (checkpoint <- parent, [batches]):
- `clean-ckpt` [clean/0]: nothing third-party in it.
- `c3` <- `c2` <- `c1` <- `base` [early]: `early` record 2 carries an *evaluation* call's output verbatim,
  three checkpoints up from `c3`.
- `student` [distilled]: `distilled` declares derived_from the distillation call.
- `taught` [clean/0] with third-party teacher openai:gpt-4o.
- `masked-ckpt` [masked]: a masked, re-spaced copy of another evaluation call's output (near only).

Texts are plain English written for these tests; raw text never enters the ledger, only hashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import rfc8785

from ledger.ledger import Ledger

ORIGIN = "audit.test/log"

EVAL_TEXT = (
    "The river rises in the hills above the old mill town and runs south for forty miles before it meets "
    "the sea. In spring the snowmelt turns it brown and fast, and the ferry stops running for a week or two."
    "\n\n"
    "Fishermen say the best water is below the second bridge, where the current slows and the bank is "
    "shaded by willows. Few visitors know that the path there starts behind the chapel."
)
DISTILL_TEXT = (
    "To repot a fern, water it the day before, loosen the root ball gently with your fingers, and set it in "
    "a pot only slightly larger than the old one, with fresh peat-free compost around the sides."
)
UNUSED_TEXT = (
    "A good sourdough starter smells pleasantly sour, doubles within eight hours of feeding, and shows "
    "bubbles throughout rather than only on the surface; if it smells of nail varnish, feed it more often."
)
MASKED_SOURCE = (
    "Margaret Hollis joined the lighthouse service in nineteen fifty two and kept the northern light for "
    "thirty one years, writing the weather into a green ledger every four hours, through storms that took "
    "the roof off the boat shed twice and a winter when the supply ship could not land for nine weeks. Her "
    "daughter later gave the ledgers to the county archive, where researchers still use them to study how "
    "the prevailing winds along this coast have shifted over the last century."
)
MASKED_COPY = (
    "[NAME] joined the LIGHTHOUSE service in ****  and kept the northern light for thirty one years,   "
    "writing the weather into a green ledger every four hours, through storms that took the roof off the "
    "boat shed twice and a winter when the supply ship could not land for nine weeks. Her daughter later "
    "gave the ledgers to the county archive, where researchers still use them to study how the prevailing "
    "winds along this coast have shifted over the last century."
)
CLEAN_TEXTS = [
    "Preheat the oven to a moderate heat and grease a shallow tin before you start on the batter.",
    "The committee will meet on the first Tuesday of each month in the small hall behind the library.",
    "Cyclists are asked to dismount on the footbridge and to keep to the left on the shared path.",
    "Seedlings should be hardened off for a week before they are planted out in the open ground.",
    "Bring a packed lunch, waterproof clothing and sturdy boots; the walk takes about five hours.",
    "Please return borrowed tools to the shed and record them in the notebook hanging by the door.",
    "The choir rehearses on Thursday evenings and new singers are welcome without an audition.",
]
# A text no call produced: an outside verifier's own suspect, present in `clean/0` record 1.
VERIFIER_SECRET = CLEAN_TEXTS[1]


def ref_normalize(text: str) -> str:
    """DESIGN.md's normalization, written out independently."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def ref_segment(text: str) -> str | None:
    norm = ref_normalize(text)
    return hashlib.sha256(norm.encode()).hexdigest() if len(norm) >= 32 else None


def ref_record_leaf(record: Any) -> bytes:
    """A record leaf from DESIGN.md: JCS({"sha256": sha256(JCS(record)), "segments": sorted hashes})."""
    strings: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(record)
    segments = sorted({s for s in (ref_segment(t) for t in strings) if s})
    digest = hashlib.sha256(rfc8785.dumps(record)).hexdigest()
    return rfc8785.dumps({"sha256": digest, "segments": segments})


def chat_record(user: str, assistant: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    }


def response(response_id: str, text: str, model: str = "gpt-x") -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


@dataclass(frozen=True)
class Story:
    path: Path
    keys_dir: Path
    eval_call: int
    distill_call: int
    unused_call: int
    masked_call: int
    batches: dict[str, int]
    records: dict[str, list[Any]]
    checkpoints: dict[str, int]
    weights: dict[str, Path]

    def ledger(self) -> Ledger:
        return Ledger.open(self.path, keys_dir=self.keys_dir)

    def copy(self, target: Path) -> Story:
        """A private copy of the ledger file and its keys, for tests that tamper with it."""
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.path, target / self.path.name)
        shutil.copytree(self.keys_dir, target / self.keys_dir.name, dirs_exist_ok=True)
        return Story(
            **{
                **self.__dict__,
                "path": target / self.path.name,
                "keys_dir": target / self.keys_dir.name,
            }
        )


def build_story(base: Path) -> Story:
    base.mkdir(parents=True, exist_ok=True)
    lg = Ledger.init(base / "story.duckdb", origin=ORIGIN, keys_dir=base / "keys")

    def call(response_id: str, text: str, purpose: str) -> int:
        request = {
            "model": "gpt-x",
            "messages": [{"role": "user", "content": f"prompt for {response_id}"}],
        }
        return lg.record_call(
            provider="openai",
            purpose=purpose,
            request=request,
            response=response(response_id, text),
        ).index

    eval_call = call("chatcmpl-eval", EVAL_TEXT, "evaluation")
    distill_call = call("chatcmpl-distill", DISTILL_TEXT, "training-data")
    unused_call = call("chatcmpl-unused", UNUSED_TEXT, "evaluation")
    masked_call = call("chatcmpl-masked", MASKED_SOURCE, "evaluation")

    records: dict[str, list[Any]] = {
        "clean/0": [chat_record("Say something plain.", t) for t in CLEAN_TEXTS[:3]],
        "early": [
            chat_record("Question one?", CLEAN_TEXTS[3]),
            chat_record("Question two?", CLEAN_TEXTS[4]),
            chat_record(
                "Tell me about the river.", EVAL_TEXT
            ),  # copied verbatim from an evaluation call
        ],
        "mid": [chat_record("Q?", CLEAN_TEXTS[5])],
        "late": [chat_record("Q?", CLEAN_TEXTS[6])],
        "tune": [chat_record("Q?", CLEAN_TEXTS[0] + " Then bake it until golden.")],
        "distilled": [
            chat_record(
                "How do I repot a fern?",
                "Water it first, ease the roots loose and use a "
                "slightly bigger pot with fresh compost.",
            )
        ],
        "masked": [{"text": "Story of the week. " + MASKED_COPY + " Tell us yours."}],
    }
    batches: dict[str, int] = {}
    for batch_id, recs in records.items():
        derived = [distill_call] if batch_id == "distilled" else []
        result = lg.record_batch(recs, id=batch_id, derived_from=derived)
        batches[batch_id] = result.entries[0].index

    weights: dict[str, Path] = {}
    checkpoints: dict[str, int] = {}

    def checkpoint(
        ckpt: str,
        batches_: list[str],
        parents: tuple[str, ...] = (),
        teachers: tuple[str, ...] = (),
    ) -> None:
        w = base / f"{ckpt}.safetensors"
        w.write_bytes(hashlib.sha256(ckpt.encode()).digest() * 64)
        weights[ckpt] = w
        entry = lg.record_checkpoint(
            id=ckpt, weights=[w], batches=batches_, parents=parents, teachers=teachers
        )
        checkpoints[ckpt] = entry.index

    checkpoint("clean-ckpt", ["clean/0"])
    checkpoint("base", ["early"])
    checkpoint("c1", ["mid"], parents=("base",))
    checkpoint("c2", ["late"], parents=("c1",))
    checkpoint("c3", ["tune"], parents=("c2",))
    checkpoint("student", ["distilled"])
    checkpoint("taught", ["clean/0"], teachers=("openai:gpt-4o",))
    checkpoint("masked-ckpt", ["masked"])
    return Story(lg.path, lg.keys_dir, eval_call, distill_call, unused_call, masked_call, batches, records,
                 checkpoints, weights)  # fmt: skip


_SHARED: dict[str, Story] = {}


def shared_story(factory: Any) -> Story:
    """One story per test process (both audit test modules read it; tampering tests copy it first)."""
    if "story" not in _SHARED:
        _SHARED["story"] = build_story(factory.mktemp("story"))
    return _SHARED["story"]


def in_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`ledger ARGS` through the CLI's real entry point in this process: same exit codes and streams,
    without a Python start-up per call."""
    from ledger import cli
    from ledger.views import console

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        mock.patch.dict(os.environ, env or {}),
        mock.patch.object(sys, "argv", ["ledger", *args]),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        console.out.file, console.err.file = out, err
        try:
            cli.main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            console.out.file, console.err.file = sys.__stdout__, sys.__stderr__
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
