"""Record digests, record leaves and their bulk columns (DESIGN.md "Hashing (fixed)", "Entries").

A record's digest is ``sha256(JCS(record))`` (a ``.txt`` line: its UTF-8 bytes) and its leaf is
``JCS({"sha256": digest, "segments": [...]})``, the unit a batch's ``records_root`` commits to.
``hash_record`` and its bulk forms are the recording hot path: one walk over a record gives its JCS
and its strings (``ledger.spec.jcs``), whose segments (``ledger.spec.text``) are found in bulk.
"""

from __future__ import annotations

import hashlib
from binascii import hexlify
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice, pairwise
from typing import Final

import numpy as np
import numpy.typing as npt

from ledger.spec.digest import sha256_each, sha256_hex
from ledger.spec.jcs import (
    BIG_FLOAT,
    NEEDS_GENERAL,
    HashInputError,
    canonical_json,
    parse_json_line,
    record_jcs,
    walk_flags,
    walk_strings,
    walked_jcs,
)
from ledger.spec.text import MIN_SEGMENT_CHARS, encode_text, field_texts, segments_at, segments_of

__all__ = [
    "LeafGroup",
    "RecordHash",
    "RecordHashColumns",
    "hash_record",
    "hash_record_columns",
    "hash_records",
    "record_digest",
    "record_leaf",
    "record_leaf_groups",
    "record_leaf_hashes",
    "request_response_digest",
]

_sha256 = hashlib.sha256


def record_digest(record: object) -> bytes:
    """sha256 of the record's JCS; a str record (a ``.txt`` line) is hashed as its UTF-8 bytes.

    A text line must already be stripped of its line ending; that is the reader's job.
    """
    if isinstance(record, str):
        return _sha256(encode_text(record)).digest()
    return _sha256(canonical_json(record)).digest()


def _leaf_bytes(digest: bytes, sorted_segments: Iterable[bytes]) -> bytes:
    """JCS of the record leaf object, written directly: hex needs no escaping and
    "segments" sorts before "sha256"."""
    return (
        b'{"segments":['
        + ",".join([f'"{h.hex()}"' for h in sorted_segments]).encode("ascii")
        + b'],"sha256":"'
        + digest.hex().encode("ascii")
        + b'"}'
    )


def _check_digest(value: bytes, what: str) -> None:
    if len(value) != 32:
        raise HashInputError(f"{what} must be a 32-byte SHA-256 digest, found {len(value)} bytes")


def record_leaf(digest: bytes, segments: Sequence[bytes]) -> bytes:
    """A record leaf, ``JCS({"sha256": hex, "segments": [hex, ...]})``; segments are made
    distinct and sorted here so that no caller can commit to a non-canonical leaf."""
    _check_digest(digest, "record digest")
    for segment in segments:
        _check_digest(segment, "segment hash")
    return _leaf_bytes(digest, sorted(set(segments)))


@dataclass(frozen=True, slots=True)
class RecordHash:
    """Everything the ledger keeps about one record, from a single pass over it."""

    digest: bytes
    """sha256 of the record's JCS (or of a text line's UTF-8 bytes), 32 bytes."""
    segments: tuple[bytes, ...]
    """Distinct 32-byte segment hashes, sorted ascending."""
    texts: tuple[str, ...]
    """The normalized text of each segment, in the order of ``segments``; never stored."""

    @property
    def leaf(self) -> bytes:
        """The record leaf bytes committed by the batch's ``records_root``."""
        return _leaf_bytes(self.digest, self.segments)


def hash_record(
    record: object,
    text_fields: Sequence[str] | None = None,
    min_chars: int = MIN_SEGMENT_CHARS,
    extra_texts: Sequence[str] = (),
) -> RecordHash:
    """Digest, segments and segment texts of one record in one walk (the recording hot path).

    ``extra_texts`` are texts of the record found elsewhere than in its strings (the decoded
    pieces of its token ids, DESIGN.md "Tokenized records"); they add to its segments."""
    if isinstance(record, str):
        digest = _sha256(encode_text(record)).digest()
        texts: list[str] = [record]
    else:
        texts = []
        digest = _sha256(record_jcs(record, texts)).digest()
        if text_fields is not None:
            texts = field_texts(record, text_fields)
    found = segments_of([*texts, *extra_texts] if extra_texts else texts, min_chars)
    order = sorted(found)
    return RecordHash(digest, tuple(order), tuple([found[h] for h in order]))


def hash_records(
    records: Sequence[object],
    text_fields: Sequence[str] | None = None,
    min_chars: int = MIN_SEGMENT_CHARS,
) -> list[RecordHash]:
    """``[hash_record(r, text_fields, min_chars) for r in records]``, computed in bulk (see
    ``hash_record_columns``). Raises on the first bad record without saying which; callers that
    must name it hash the records one by one then.
    """
    hashed = _hash_all(records, text_fields, min_chars)
    hashes, texts, bounds = hashed.hashes, hashed.texts, hashed.bounds
    return [
        RecordHash(digest, tuple(hashes[a:b]), tuple(texts[a:b]))
        for digest, (a, b) in zip(hashed.digests, pairwise(bounds), strict=True)
    ]


@dataclass(frozen=True, slots=True)
class RecordHashColumns:
    """``hash_records`` as columns: a few buffers for a block of records instead of objects per
    record, for callers that go on to build Merkle roots and Arrow columns.

    Record ``i`` has digest ``digests[32*i:32*i+32]``, leaf hash ``leaf_hashes[32*i:32*i+32]``,
    the ``segment_counts[i]`` sorted segment hashes that follow those of records ``0..i-1`` in
    ``segments``, and their normalized texts ``texts[i]`` in the same order.
    """

    count: int
    digests: bytes
    """sha256 of each record's JCS (or of a text line's UTF-8 bytes), 32 bytes per record."""
    leaf_hashes: bytes
    """RFC 6962 leaf hash ``sha256(0x00 || leaf)`` of each ``RecordHash.leaf``, 32 bytes each."""
    segment_counts: npt.NDArray[np.int64]
    segments: bytes
    """Every record's distinct segment hashes, sorted ascending within the record, end to end."""
    texts: list[list[str]]
    """Per record, the normalized text of each segment in segment order (``RecordHash.texts``)."""


def hash_record_columns(
    records: Sequence[object],
    text_fields: Sequence[str] | None = None,
    min_chars: int = MIN_SEGMENT_CHARS,
    *,
    lines: Sequence[bytes | memoryview] | None = None,
    extra_texts: Sequence[Sequence[str]] | None = None,
) -> RecordHashColumns:
    """``hash_records`` with the record leaf hashes, as columns. Raises on the first bad record
    without saying which, like ``hash_records``.

    ``lines``, the JSON line of each record, lets the records come from
    ``parse_json_lines(..., exact_ints=False)``: a record holding a float of magnitude >= 2**63
    (perhaps an integer beyond 64 bits that orjson made a float) is hashed as
    ``parse_json_line`` of its line instead, so the result is the exact parse's.
    ``extra_texts``, one list per record, are added to each record's texts (``hash_record``).
    """
    if lines is not None and len(lines) != len(records):
        raise ValueError(f"expected one line per record ({len(records)}), found {len(lines)}")
    if extra_texts is not None and len(extra_texts) != len(records):
        raise ValueError(f"expected texts per record ({len(records)}), found {len(extra_texts)}")
    hashed = _hash_all(records, text_fields, min_chars, lines, extra_texts)
    bounds = hashed.bounds
    digests = b"".join(hashed.digests)
    segments = b"".join(hashed.hashes)
    texts = hashed.texts
    ends = np.array(bounds, dtype=np.int64)
    counts = ends[1:] - ends[:-1]
    return RecordHashColumns(
        count=len(hashed.digests),
        digests=digests,
        leaf_hashes=_leaf_hashes(digests, segments, counts),
        segment_counts=counts,
        segments=segments,
        texts=[texts[a:b] for a, b in pairwise(bounds)],
    )


def _leaf_hashes(digests: bytes, segments: bytes, counts: npt.NDArray[np.int64]) -> bytes:
    """The RFC 6962 leaf hash of every record leaf, ``counts[i]`` being record ``i``'s number of
    segments (`record_leaf_groups`, ~3x cheaper than joining each leaf from slices)."""
    groups = record_leaf_groups(
        np.frombuffer(digests, dtype=np.uint8).reshape(-1, 32),
        counts,
        np.cumsum(counts) - counts,
        np.frombuffer(segments, dtype=np.uint8).reshape(-1, 32),
    )
    return b"".join(record_leaf_hashes(groups, len(counts)))


# Record leaves in bulk: the fixed parts of ``0x00 || {"segments":[...],"sha256":"..."}``.
_LEAF_HEAD: Final = np.frombuffer(b'\x00{"segments":', dtype=np.uint8)  # 0x00: the leaf prefix
_LEAF_MIDDLE: Final = np.frombuffer(b'],"sha256":"', dtype=np.uint8)
_LEAF_END: Final = np.frombuffer(b'"}', dtype=np.uint8)
# The two lowercase hex digits of every byte value as one uint16 (in memory order), for lookup.
_HEX_PAIRS: Final = np.frombuffer(hexlify(bytes(range(256))), dtype=np.uint16)


def _hex_rows(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """(n, w) bytes as (n, 2w) lowercase hex digits, one table lookup per byte."""
    hexed: npt.NDArray[np.uint8] = _HEX_PAIRS[raw].view(np.uint8)
    return hexed.reshape(len(raw), 2 * raw.shape[1])


@dataclass(frozen=True)
class LeafGroup:
    """The ``0x00``-prefixed leaves of records with the same number of segments, as the rows of
    one array (`record_leaf_groups`)."""

    rows: npt.NDArray[np.intp]
    """Which records, in the order given."""
    block: npt.NDArray[np.uint8]
    """One leaf per row, behind its 0x00 prefix."""
    whole: bool
    """The only group: its rows are all the records, in order."""

    def hashes(self) -> list[bytes]:
        """The RFC 6962 leaf hash of each row."""
        # Leaves end in '"}', so the S dtype's dropping of trailing NULs takes nothing from them.
        leaves = self.block.view(f"S{self.block.shape[1]}").ravel().tolist()
        return sha256_each(leaves)

    def leaves(self) -> list[bytes]:
        """Each row's leaf, without its prefix."""
        return [row[1:] for row in self.block.view(f"S{self.block.shape[1]}").ravel().tolist()]


def record_leaf_groups(
    digests: npt.NDArray[np.uint8],
    counts: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    segments: npt.NDArray[np.uint8],
) -> list[LeafGroup]:
    """The record leaves (`record_leaf`) of many records at once: record ``i`` has the digest
    ``digests[i]`` and the sorted segments ``segments[starts[i]:starts[i] + counts[i]]`` (32-byte
    rows).

    Records with the same segment count have the same leaf length, so each such group is one 2-D
    uint8 array filled column block by column block: numpy does the work, not a Python loop per
    record. When a group's segments lie back to back (records in order, the usual case) they are
    copied as one slice instead of gathered.
    """
    hex_digests = _hex_rows(digests)
    hex_segments = _hex_rows(segments)
    kinds = np.unique(counts).tolist()
    groups: list[LeafGroup] = []
    for k in kinds:
        rows = np.flatnonzero(counts == k) if len(kinds) > 1 else np.arange(len(counts))
        n = len(rows)
        body = 67 * k if k else 1  # k '"hex"' entries after a comma each, or the '[' of []
        width = 13 + body + 78
        block = np.empty((n, width), np.uint8)
        block[:, :13] = _LEAF_HEAD
        if k:
            first = int(starts[rows[0]])
            if np.array_equal(starts[rows], first + k * np.arange(n)):
                picked = hex_segments[first : first + k * n].reshape(n, k, 64)
            else:
                picked = hex_segments[starts[rows][:, None] + np.arange(k)]
            cells = block[:, 13 : 13 + body]
            cells.shape = (n, k, 67)  # a view of the block (assigning .shape never copies)
            cells[:, :, 0] = ord(",")
            cells[:, :, 1] = cells[:, :, 66] = ord('"')
            cells[:, :, 2:66] = picked
        block[:, 13] = ord("[")  # over the first entry's comma
        at = 13 + body
        block[:, at : at + 12] = _LEAF_MIDDLE
        block[:, at + 12 : at + 76] = hex_digests[rows]
        block[:, at + 76 :] = _LEAF_END
        groups.append(LeafGroup(rows, block, len(kinds) == 1))
    return groups


def record_leaf_hashes(groups: Sequence[LeafGroup], count: int) -> list[bytes]:
    """The leaf hashes of `count` records, in record order, from their `record_leaf_groups`."""
    out: list[bytes] = [b""] * count
    for group in groups:
        hashes = group.hashes()
        if group.whole:
            return hashes
        for row, digest in zip(group.rows.tolist(), hashes, strict=True):
            out[row] = digest
    return out


@dataclass(frozen=True, slots=True)
class _Hashed:
    """What ``hash_records`` and ``hash_record_columns`` share: record ``i`` has ``digests[i]``
    and the segments ``hashes[bounds[i]:bounds[i+1]]`` (sorted) with their ``texts``."""

    digests: list[bytes]
    hashes: list[bytes]
    texts: list[str]
    bounds: list[int]


_CHUNK: Final = 256
"""Records hashed together: enough to spread numpy's per-call cost thin, few enough that their
texts are still in the CPU cache when their segments are computed."""


def _hash_all(
    records: Iterable[object],
    text_fields: Sequence[str] | None,
    min_chars: int,
    lines: Sequence[bytes | memoryview] | None = None,
    extra_texts: Sequence[Sequence[str]] | None = None,
) -> _Hashed:
    """``_hash_chunk`` over consecutive chunks of the records (and of their ``lines`` and
    ``extra_texts``)."""
    digests: list[bytes] = []
    hashes: list[bytes] = []
    texts: list[str] = []
    counts: list[npt.NDArray[np.int64]] = [np.zeros(1, dtype=np.int64)]
    it = iter(records)
    done = 0
    while chunk := list(islice(it, _CHUNK)):
        chunk_lines = None if lines is None else lines[done : done + len(chunk)]
        extra = None if extra_texts is None else extra_texts[done : done + len(chunk)]
        counts.append(
            _hash_chunk(chunk, text_fields, min_chars, digests, hashes, texts, chunk_lines, extra)
        )
        done += len(chunk)
    return _Hashed(digests, hashes, texts, np.cumsum(np.concatenate(counts)).tolist())


def _hash_chunk(
    records: Sequence[object],
    text_fields: Sequence[str] | None,
    min_chars: int,
    digests: list[bytes],
    hashes: list[bytes],
    texts: list[str],
    lines: Sequence[bytes | memoryview] | None = None,
    extra_texts: Sequence[Sequence[str]] | None = None,
) -> npt.NDArray[np.int64]:
    """Append the records' digests, and their segment hashes and texts (sorted and distinct
    per record); return each record's number of segments. Digests come from one loop, then
    the segments of all texts at once, sorted per record by numpy. A record whose walk meets a
    ``BIG_FLOAT`` is parsed exactly from its line in ``lines``, when given."""
    raw: list[str] = []
    ends: list[int] = []
    for i, record in enumerate(records):
        if isinstance(record, str):
            digests.append(_sha256(encode_text(record)).digest())
            raw.append(record)
            ends.append(len(raw))
            continue
        out = raw if text_fields is None else []
        start = len(out)
        try:
            flags = walk_strings(record, out)  # walk_flags, inlined to save a call per record
        except RecursionError:
            flags = NEEDS_GENERAL
        if flags & BIG_FLOAT and lines is not None:
            del out[start:]
            record = parse_json_line(lines[i])
            flags = walk_flags(record, out)
        digests.append(_sha256(walked_jcs(record, out, start, flags)).digest())
        if text_fields is not None:
            raw.extend(field_texts(record, text_fields))
        if extra_texts is not None:
            raw.extend(extra_texts[i])
        ends.append(len(raw))
    where, found, normalized = segments_at(raw, min_chars)
    if not found:
        return np.zeros(len(records), dtype=np.int64)
    owner = np.searchsorted(np.array(ends, dtype=np.int64), where, side="right")
    order, keep = segment_order(owner, b"".join(found), len(records))
    picked = order[keep].tolist()
    hashes.extend([found[j] for j in picked])
    texts.extend([normalized[j] for j in picked])
    return np.bincount(owner[picked], minlength=len(records))


def segment_order(
    owner: npt.NDArray[np.int64], joined: bytes, count: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """The order that sorts segments by (record, hash), and which of them to keep (the first of
    each repeat within a record). ``owner`` holds each segment's record, below ``count``;
    ``joined`` their 32-byte hashes end to end.

    One stable argsort of a 64-bit key (the record in the top bits, the hash's leading bits
    below) is ~5x cheaper than a lexsort over five keys. The key decides the order unless two
    segments share it; then (a repeat, or a collision of the leading bits) the exact lexsort
    over the whole hash does.
    """
    # Big-endian words compare as the bytes do.
    words = np.frombuffer(joined, dtype=">u8").reshape(-1, 4)
    shift = np.uint64(max(count - 1, 1).bit_length())
    key = (owner.astype(np.uint64) << (np.uint64(64) - shift)) | (
        words[:, 0].astype(np.uint64) >> shift
    )
    order = np.argsort(key, kind="stable")
    key = key[order]
    keep = np.ones(len(order), dtype=np.bool_)
    np.not_equal(key[1:], key[:-1], out=keep[1:])
    if keep.all():
        return order, keep
    order = np.lexsort((words[:, 3], words[:, 2], words[:, 1], words[:, 0], owner))
    owner, words = owner[order], words[order]
    keep[1:] = (owner[1:] != owner[:-1]) | (words[1:] != words[:-1]).any(axis=1)
    return order, keep


def request_response_digest(body: object | None) -> str | None:
    """A call's ``request``/``response`` hash: sha256 hex of the body's JCS, None when absent."""
    if body is None:
        return None
    return sha256_hex(canonical_json(body))
