"""Typed entry bodies: every builder's body reads back as its kind's typed view, with the defaults in
one place, and a malformed or hostile body is a VerificationError naming its index, never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.errors import VerificationError
from ledger.spec import entries

H = "ab" * 32


def test_each_builder_reads_back_typed() -> None:
    key = entries.typed(entries.key_body("k" * 64, "cHVi", "default", "recorder"), 1)
    assert isinstance(key, entries.KeyBody) and (key.name, key.role) == ("default", "recorder")
    revoke = entries.typed(entries.revoke_body("k" * 64, "lost"), 2)
    assert isinstance(revoke, entries.RevokeBody) and revoke.reason == "lost"
    call = entries.typed(
        entries.call_body(
            provider="openai",
            model="m",
            endpoint="/v1/chat/completions",
            purpose="evaluation",
            request=None,
            response=H,
            outputs=[H, H],
            external_id="chatcmpl-1",
        ),
        3,
    )
    assert isinstance(call, entries.CallBody)
    assert (call.outputs, call.external_id, call.fingerprints) == ((H,), "chatcmpl-1", None)
    batch = entries.typed(entries.batch_body(id="b", count=3, records_root=H, derived_from=[3]), 4)
    assert isinstance(batch, entries.BatchBody)
    assert (batch.derived_from, batch.dataset, batch.text_fields) == ((3,), None, None)
    assert (batch.min_segment_chars, batch.records_without_text) == (32, None)
    ckpt = entries.typed(
        entries.checkpoint_body(
            id="c", weights=[{"path": "w", "sha256": H}], batches=["b"], teachers=["t"]
        ),
        5,
    )
    assert isinstance(ckpt, entries.CheckpointBody)
    assert (ckpt.batches, ckpt.parents, ckpt.teachers) == (("b",), (), ("t",))
    dataset = entries.typed(entries.dataset_body(id="d", batches=2, count=5, split=3), 6)
    assert isinstance(dataset, entries.DatasetBody) and (dataset.batches, dataset.split) == (2, 3)


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "batch", "v": 1, "time": "t", "id": "b", "count": -1, "records_root": H},
        {"kind": "batch", "v": 1, "time": "t", "id": "b", "count": 1},
        {"kind": "nope", "v": 1, "time": "t"},
        ["not", "an", "object"],
    ],
)
def test_malformed_bodies_name_their_index(body: Any) -> None:
    with pytest.raises(VerificationError, match="entry 9"):
        entries.typed(body, 9)


def test_hostile_optional_fields_fall_back_to_their_defaults() -> None:
    body = entries.batch_body(id="b", count=1, records_root=H)
    body.update(min_segment_chars="many", fingerprints="x", text_fields=[1, "text"])
    batch = entries.typed(body, 4)
    assert isinstance(batch, entries.BatchBody)
    assert (batch.min_segment_chars, batch.fingerprints, batch.text_fields) == (32, None, ("text",))
    ckpt = entries.checkpoint_body(id="c", weights=[])
    ckpt.update(parents="p", teachers=[7, {"provider": "x", "model": "y"}])
    typed = entries.typed(ckpt, 5)
    assert isinstance(typed, entries.CheckpointBody)
    assert typed.parents == () and typed.teachers == ({"provider": "x", "model": "y"},)
