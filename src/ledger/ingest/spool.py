"""Spool files: what a training rank writes instead of appending to a ledger (`StepRecorder(spool=DIR)`).

Layout: `DIR/rank-RRRRR/SSSSSSSSS.parquet`, one file per recorded step (a `batch`) or per checkpoint
part, `S` counting up per rank in the order the rank recorded them. A batch file holds the kernel's
rows (`ledger.engine.kernel.RECORD_SCHEMA`, one per example in order); a checkpoint file holds no rows.
Either way the Parquet schema's metadata key `ledger.spool` holds the entry as JSON (`SpoolFile`).

Writes are atomic: the file is written as `.NAME.tmp-HOST-PID`, fsynced, then renamed into place
(and the directory fsynced), so a rank killed mid-write leaves at most a hidden temporary file, never
a half `.parquet`. Readers ignore such files and delete those of dead processes on this host.

Reading checks every file completely (`read_spool_file(verify=True)`): the rows' record leaves are
recomputed from their digests and segments, and the batch's records and fingerprint roots must be
the ones the rank wrote, so a damaged or foreign file is an `InputError` naming it.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ledger.engine.kernel import RECORD_SCHEMA
from ledger.errors import InputError, UsageError
from ledger.ingest.durable import fsync_dir, process_alive
from ledger.spec import leaves, merkle

__all__ = [
    "FORMAT",
    "SpoolFile",
    "batch_id",
    "read_spool_file",
    "rank_dir",
    "spool_files",
    "next_seq",
    "write_spool_file",
]

FORMAT: Final = "ledger-spool/1"
META_KEY: Final = b"ledger.spool"
_NAME = re.compile(r"^(\d{9})\.parquet$")
_RANK = re.compile(r"^rank-(\d{5})$")
_TEMP = re.compile(r"^\.\d{9}\.parquet\.tmp-(.+)-(\d+)$")
KINDS: Final = ("batch", "checkpoint")


def batch_id(run: str, step: int, rank: int = 0, micro_batch: int | None = None) -> str:
    """A training step's batch id, `{run}/rank-{rank:05d}/step-{step:09d}[/mb-{micro_batch:04d}]`:
    unique per rank and micro-batch, zero-padded so ids sort in step order."""
    if step < 0 or rank < 0 or (micro_batch is not None and micro_batch < 0):
        raise UsageError(f"step {step}, rank {rank}, micro-batch {micro_batch}: expected >= 0")
    out = f"{run}/rank-{rank:05d}/step-{step:09d}"
    return out if micro_batch is None else f"{out}/mb-{micro_batch:04d}"


@dataclass(frozen=True)
class SpoolFile:
    """One spool file's entry: a step's batch or one rank's part of a checkpoint.

    Batch: `count`, `records_root`, `fingerprints_root`, `records_without_text` and the hashing
    settings (`text_fields`, `min_segment_chars`, `tokenizer`, `token_field`, `fingerprint_params`).
    Checkpoint part: `weights` (`[{"path", "sha256"}]`, empty on a rank that saved no files),
    `batches` (this rank's batch ids since the previous checkpoint), `parents`, `teachers`, `config`.
    `step` is the batch's step, or for a checkpoint the number of steps the rank had taken.
    """

    kind: str
    id: str
    run: str
    rank: int
    world_size: int
    seq: int
    step: int
    micro_batch: int | None = None
    count: int = 0
    records_root: str = ""
    fingerprints_root: str = ""
    records_without_text: int = 0
    text_fields: tuple[str, ...] | None = None
    min_segment_chars: int = 32
    tokenizer: str | None = None
    token_field: str | None = None
    fingerprint_params: Mapping[str, Any] = field(default_factory=dict)
    weights: tuple[tuple[str, str], ...] = ()
    batches: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    teachers: tuple[str, ...] = ()
    config: str | None = None
    path: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "kind": self.kind,
            "id": self.id,
            "run": self.run,
            "rank": self.rank,
            "world_size": self.world_size,
            "seq": self.seq,
            "step": self.step,
        }
        if self.kind == "batch":
            out.update(
                micro_batch=self.micro_batch,
                count=self.count,
                records_root=self.records_root,
                fingerprints_root=self.fingerprints_root,
                records_without_text=self.records_without_text,
                text_fields=None if self.text_fields is None else list(self.text_fields),
                min_segment_chars=self.min_segment_chars,
                tokenizer=self.tokenizer,
                token_field=self.token_field,
                fingerprint_params=dict(self.fingerprint_params),
            )
        else:
            out.update(
                weights=[{"path": p, "sha256": h} for p, h in self.weights],
                batches=list(self.batches),
                parents=list(self.parents),
                teachers=list(self.teachers),
                config=self.config,
            )
        return out

    @classmethod
    def from_json(cls, data: object, path: Path) -> SpoolFile:
        """The entry of a file's metadata; InputError naming the file when it is not one."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{path}: not a ledger spool file (expected format {FORMAT})")
        try:
            kind = data["kind"]
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r}")
            common: dict[str, Any] = {
                "kind": kind,
                "id": _str(data["id"]),
                "run": _str(data["run"]),
                "rank": _int(data["rank"]),
                "world_size": _int(data["world_size"]),
                "seq": _int(data["seq"]),
                "step": _int(data["step"]),
                "path": path,
            }
            if common["world_size"] < 1 or not 0 <= common["rank"] < common["world_size"]:
                raise ValueError(f"rank {common['rank']} of world size {common['world_size']}")
            if kind == "batch":
                fields = data["text_fields"]
                micro = data.get("micro_batch")
                micro = None if micro is None else _int(micro)
                expected = batch_id(common["run"], common["step"], common["rank"], micro)
                if common["id"] != expected:
                    raise ValueError(f"batch id {common['id']!r} is not {expected!r}")
                return cls(
                    **common,
                    micro_batch=micro,
                    count=_int(data["count"]),
                    records_root=_hex(data["records_root"]),
                    fingerprints_root=_hex(data["fingerprints_root"]),
                    records_without_text=_int(data["records_without_text"]),
                    text_fields=None if fields is None else tuple(map(_str, fields)),
                    min_segment_chars=_int(data["min_segment_chars"]),
                    tokenizer=None if data["tokenizer"] is None else _hex(data["tokenizer"]),
                    token_field=None if data["token_field"] is None else _str(data["token_field"]),
                    fingerprint_params=dict(data["fingerprint_params"]),
                )
            config = data.get("config")
            return cls(
                **common,
                weights=tuple((_str(w["path"]), _hex(w["sha256"])) for w in data["weights"]),
                batches=tuple(map(_str, data["batches"])),
                parents=tuple(map(_str, data["parents"])),
                teachers=tuple(map(_str, data["teachers"])),
                config=None if config is None else _hex(config),
            )
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise InputError(f"{path}: malformed spool entry: {what}") from exc


def _str(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, found {value!r}"[:120])
    return value


def _int(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"expected a non-negative integer, found {value!r}"[:120])
    return value


def _hex(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"expected a hex sha256, found {value!r}"[:120])
    return value


def rank_dir(spool: Path, rank: int) -> Path:
    return spool / f"rank-{rank:05d}"


def next_seq(directory: Path) -> int:
    """The sequence number after the last file a rank wrote (0 for a new rank directory)."""
    if not directory.is_dir():
        return 0
    found = [int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return max(found, default=-1) + 1


def write_spool_file(spool: Path, entry: SpoolFile, rows: pa.Table | None = None) -> Path:
    """Write one spool file atomically (temporary file, fsync, rename, directory fsync)."""
    directory = rank_dir(spool, entry.rank)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{entry.seq:09d}.parquet"
    if final.exists():
        raise UsageError(f"{final}: spool file exists already (two writers for rank {entry.rank}?)")
    temp = directory / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    table = rows if rows is not None else RECORD_SCHEMA.empty_table()
    meta = json.dumps(entry.to_json(), sort_keys=True).encode()
    table = table.replace_schema_metadata({META_KEY: meta})
    try:
        with open(temp, "wb") as out:
            pq.write_table(table, out, compression="none", use_dictionary=False)
            out.flush()
            os.fsync(out.fileno())
        os.rename(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)
    return final


def spool_files(spool: Path) -> Iterator[Path]:
    """Every spool file under `spool`, rank by rank, in sequence order; a file or directory that
    is not part of a spool is an InputError naming it. Temporary files are skipped (and removed
    when their writer, on this host, is gone)."""
    if not spool.is_dir():
        raise InputError(f"{spool}: no such spool directory")
    host = socket.gethostname()
    for entry in sorted(spool.iterdir()):
        if entry.name.startswith("."):
            continue
        if not (entry.is_dir() and _RANK.match(entry.name)):
            raise InputError(f"{entry}: not part of a spool (expected rank-NNNNN directories)")
        for path in sorted(entry.iterdir()):
            temp = _TEMP.match(path.name)
            if temp:
                if temp.group(1) == host and not process_alive(int(temp.group(2))):
                    path.unlink(missing_ok=True)
                continue
            if not _NAME.match(path.name) or not path.is_file():
                raise InputError(f"{path}: not a spool file (expected NNNNNNNNN.parquet)")
            yield path


def read_spool_file(path: Path, verify: bool = True) -> tuple[SpoolFile, pa.Table]:
    """A spool file's entry and rows. With `verify`, the rows are checked against the entry (record
    leaves recomputed, both roots compared); any mismatch is an InputError naming the file."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable spool file ({exc})") from exc
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise InputError(f"{path}: not a ledger spool file (no {META_KEY.decode()} metadata)")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"{path}: malformed spool entry ({exc})") from exc
    entry = SpoolFile.from_json(data, path)
    expected = f"rank-{entry.rank:05d}/{entry.seq:09d}.parquet"
    if f"{path.parent.name}/{path.name}" != expected:
        raise InputError(f"{path}: the entry says it is {expected}")
    table = table.replace_schema_metadata(None)
    if not table.schema.equals(RECORD_SCHEMA):
        raise InputError(f"{path}: rows are not the record hashing kernel's columns")
    if entry.kind == "checkpoint":
        if table.num_rows:
            raise InputError(f"{path}: a checkpoint spool file holds rows")
        return entry, table
    if table.num_rows != entry.count or not entry.count:
        raise InputError(f"{path}: expected {entry.count} records, found {table.num_rows}")
    if verify:
        _verify_rows(path, entry, table)
    return entry, table


def _verify_rows(path: Path, entry: SpoolFile, table: pa.Table) -> None:
    n = table.num_rows
    digests = table.column("digest").to_pylist()
    segment_lists: Sequence[list[bytes]] = table.column("segments").to_pylist()
    counts = np.fromiter(map(len, segment_lists), dtype=np.int64, count=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    flat = [s for segs in segment_lists for s in segs]
    if any(list(segs) != sorted(set(segs)) for segs in segment_lists):
        raise InputError(f"{path}: segments of a record are not distinct and sorted")
    digest_rows = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(n, 32)
    segment_rows = np.frombuffer(b"".join(flat), dtype=np.uint8).reshape(len(flat), 32)
    groups = leaves.record_leaf_groups(digest_rows, counts, starts, segment_rows)
    leaf_hashes = leaves.record_leaf_hashes(groups, n)
    if leaf_hashes != table.column("leaf_hash").to_pylist():
        raise InputError(f"{path}: record leaf hashes do not match the digests and segments")
    if merkle.root(leaf_hashes).hex() != entry.records_root:
        raise InputError(f"{path}: records root does not match the rows")
    prints = [b"" if v is None else v for v in table.column("fingerprint").to_pylist()]
    print_hashes = [merkle.leaf_hash(blob) for blob in prints]
    if print_hashes != table.column("fingerprint_hash").to_pylist():
        raise InputError(f"{path}: fingerprint hashes do not match the fingerprints")
    if merkle.root(print_hashes).hex() != entry.fingerprints_root:
        raise InputError(f"{path}: fingerprints root does not match the rows")
    if int((counts == 0).sum()) != entry.records_without_text:
        raise InputError(f"{path}: records_without_text does not match the rows")
