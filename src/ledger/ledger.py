"""The `Ledger` facade: one object per ledger file, holding paths and key choices, never the file itself.

Every append is one transaction: re-check the stored head against the stored log (compare-and-swap), add
the entries and their tree nodes, sign a new tree head with the log key, commit. A crash at any point
leaves the previous state.
"""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ledger import keys
from ledger.errors import (
    DuplicateError,
    InputError,
    KeyFileError,
    LedgerError,
    LogKeySigningWarning,
    NotFoundError,
    UsageError,
    VerificationError,
)
from ledger.keys import SigningKey
from ledger.log import store
from ledger.spec import entries, merkle

if TYPE_CHECKING:
    from ledger import audit, recording

DEFAULT_DB = "ledger.duckdb"
LOG_KEY_FILE = "log.pem"
DEFAULT_RECORDER = "default"  # the recorder key `ledger init` makes; entries are signed by it unless told otherwise

Connection = duckdb.DuckDBPyConnection
BodyBuilder = Callable[[Connection, int, "KeyRing"], list[tuple[dict[str, Any], SigningKey]]]


@dataclass(frozen=True)
class KeyInfo:
    keyid: str
    name: str
    role: str
    public_key: str  # base64 raw 32 bytes
    index: int  # the key entry's index
    revoked_at: int | None = None  # index of the revoke entry
    revoke_reason: str | None = None

    @property
    def public(self) -> keys.PublicKey:
        return keys.PublicKey.from_b64(self.public_key)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def vkey(self, origin: str) -> str:
        """Note verifier keys carry the name they sign as: the origin for log keys."""
        return keys.vkey(origin if self.role == "log" else self.name, self.public)

    def active_at(self, index: int) -> bool:
        return self.index < index and (self.revoked_at is None or index < self.revoked_at)


@dataclass
class KeyRing:
    """Keys as the log introduces and retires them, in index order."""

    by_id: dict[str, KeyInfo] = field(default_factory=dict)

    def add(self, body: Mapping[str, Any], index: int) -> None:
        self.by_id[str(body["keyid"])] = KeyInfo(
            str(body["keyid"]), str(body["name"]), str(body["role"]), str(body["public_key"]), index
        )

    def revoke(self, keyid: str, index: int, reason: str) -> None:
        info = self.by_id[keyid]
        self.by_id[keyid] = KeyInfo(
            info.keyid, info.name, info.role, info.public_key, info.index, index, reason
        )

    def current_log_key(self) -> KeyInfo:
        active = [k for k in self.by_id.values() if k.role == "log" and not k.revoked]
        if not active:
            raise VerificationError("the log has no active log key")
        return max(active, key=lambda k: k.index)

    def find(self, name_or_id: str) -> KeyInfo:
        if name_or_id in self.by_id:
            return self.by_id[name_or_id]
        named = [k for k in self.by_id.values() if k.name == name_or_id and not k.revoked]
        if not named:
            named = [
                k
                for k in self.by_id.values()
                if k.keyid.startswith(name_or_id) and len(name_or_id) >= 8
            ]
        if not named:
            raise NotFoundError(f"no key named or with keyid {name_or_id!r}")
        return max(named, key=lambda k: k.index)


@dataclass(frozen=True)
class TreeHeadInfo:
    origin: str
    size: int
    root: bytes
    note: str


@dataclass(frozen=True)
class Entry:
    index: int
    kind: str
    time: str
    signer: str
    ref: str | None
    leaf: bytes
    body: dict[str, Any]

    @property
    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.leaf)


@dataclass(frozen=True)
class InclusionProof:
    index: int
    leaf: bytes
    leaf_hash: bytes
    size: int
    root: bytes
    proof: list[bytes]


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    old_root: bytes
    new_size: int
    new_root: bytes
    proof: list[bytes]


@dataclass(frozen=True)
class AppendResult:
    start: int
    count: int
    head: TreeHeadInfo


def _to_entry(stored: store.StoredEntry) -> Entry:
    envelope = keys.parse_envelope(stored.leaf, index=stored.index)
    return Entry(
        stored.index,
        stored.kind,
        stored.time,
        stored.signer,
        stored.ref,
        stored.leaf,
        envelope.body(),
    )


def _passphrase(given: str | None) -> str | None:
    """New key files are encrypted with LEDGER_PASSPHRASE when it is set."""
    return given if given is not None else (os.environ.get("LEDGER_PASSPHRASE") or None)


def default_keys_dir(db_path: Path) -> Path:
    env = os.environ.get("LEDGER_KEYS_DIR")
    if env:
        return Path(env)
    return db_path.with_name(db_path.stem + ".keys")


class Ledger:
    """A ledger file and how to sign for it. Cheap to create; opens the database per operation."""

    def __init__(self, path: Path, *, keys_dir: Path | None = None, key: str | None = None) -> None:
        self.path = Path(path)
        self.keys_dir = Path(keys_dir) if keys_dir else default_keys_dir(self.path)
        self.key = key if key is not None else os.environ.get("LEDGER_KEY")
        self._origin: str | None = None
        self._key_cache: dict[tuple[Any, ...], SigningKey] = {}
        self._warned_log_key = False

    # --- opening -----------------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        path: str | Path = DEFAULT_DB,
        *,
        origin: str | None = None,
        keys_dir: str | Path | None = None,
        passphrase: str | None = None,
    ) -> Ledger:
        """Create the file, a log key and a `default` recorder key (PEM files, 0600), and the first two
        entries: the log key's `key` entry, self-signed, and the recorder's, signed by the log key.

        All or nothing: the database is built under a temporary name and renamed into place, and on any
        failure the key files written here are removed again.
        """
        ledger = cls(Path(path), keys_dir=Path(keys_dir) if keys_dir else None)
        origin = origin or f"ledger.local/{secrets.token_hex(4)}"
        if not origin or any(c.isspace() for c in origin) or "+" in origin:
            raise UsageError(f"origin {origin!r}: must be non-empty with no spaces or '+'")
        key_path = ledger.keys_dir / LOG_KEY_FILE
        recorder_path = ledger.keys_dir / f"{DEFAULT_RECORDER}.pem"
        if ledger.path.exists():
            raise LedgerError(f"{ledger.path}: a ledger (or another file) already exists there")
        if key_path.exists():
            raise KeyFileError(f"{key_path}: a log key already exists; choose another --keys-dir")
        if recorder_path.exists():
            raise KeyFileError(
                f"{recorder_path}: a recorder key already exists; choose another --keys-dir"
            )
        log_key, recorder = SigningKey.generate(), SigningKey.generate()
        bodies = [
            entries.key_body(log_key.public.keyid, log_key.public.b64, origin, "log"),
            entries.key_body(
                recorder.public.keyid, recorder.public.b64, DEFAULT_RECORDER, "recorder"
            ),
        ]
        leaves = [keys.sign_entry(body, log_key) for body in bodies]
        tmp = ledger.path.with_name(ledger.path.name + ".init-tmp")
        tmp.unlink(missing_ok=True)
        written: list[Path] = []
        try:
            for file, key in ((key_path, log_key), (recorder_path, recorder)):
                keys.write_key_file(file, key, _passphrase(passphrase))
                written.append(file)
            conn = store.connect(tmp, create=True)
            try:
                with store.transaction(conn):
                    store.create_schema(conn, origin)
                    root = store.append_entries(
                        conn,
                        0,
                        leaves,
                        [entries.facts_of(b) for b in bodies],
                        [log_key.public.keyid] * len(leaves),
                    )
                    note = keys.sign_tree_head(keys.TreeHead(origin, len(leaves), root), log_key)
                    store.write_head(conn, len(leaves), root, note)
                conn.execute("CHECKPOINT")
            finally:
                conn.close()
            os.replace(tmp, ledger.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            for file in written:
                file.unlink(missing_ok=True)
            raise
        return ledger

    @classmethod
    def open(
        cls,
        path: str | Path = DEFAULT_DB,
        *,
        key: str | None = None,
        keys_dir: str | Path | None = None,
    ) -> Ledger:
        ledger = cls(Path(path), keys_dir=Path(keys_dir) if keys_dir else None, key=key)
        with ledger.session() as conn:
            ledger._origin = store.origin(conn)
        return ledger

    def session(self, read_only: bool = False) -> Any:
        return store.session(self.path, read_only=read_only)

    @property
    def origin(self) -> str:
        if self._origin is None:
            with self.session() as conn:
                self._origin = store.origin(conn)
        return self._origin

    # --- keys --------------------------------------------------------------------------------------
    def _key_ring(self, conn: Connection) -> KeyRing:
        ring = KeyRing()
        for stored in store.iter_entries(conn, kinds=("key", "revoke")):
            body = keys.parse_envelope(stored.leaf, index=stored.index).body()
            if body["kind"] == "key":
                ring.add(body, stored.index)
            elif body["keyid"] in ring.by_id:
                ring.revoke(str(body["keyid"]), stored.index, str(body.get("reason", "")))
        return ring

    def keys(self) -> list[KeyInfo]:
        with self.session() as conn:
            return sorted(self._key_ring(conn).by_id.values(), key=lambda k: k.index)

    def _key_path(self, spec: str) -> Path:
        candidate = Path(spec)
        if candidate.suffix == ".pem" or candidate.exists() or os.sep in spec:
            return candidate
        return self.keys_dir / f"{spec}.pem"

    def _load_key(self, path: Path) -> SigningKey:
        """Load a key file once per process while it is unchanged: a training loop appends every step, and
        an encrypted PEM costs a key derivation per load."""
        try:
            stat = path.stat()
        except OSError:
            return keys.load_key_file(path)  # raises the one-line KeyFileError
        cache_key = (
            str(path.resolve()),
            stat.st_mtime_ns,
            stat.st_size,
            stat.st_ino,
            os.environ.get("LEDGER_PASSPHRASE"),
        )
        cached = self._key_cache.get(cache_key)
        if cached is None:
            cached = keys.load_key_file(path)
            self._key_cache[cache_key] = cached
        return cached

    def _load_log_key(self, ring: KeyRing) -> SigningKey:
        current = ring.current_log_key()
        path = self.keys_dir / LOG_KEY_FILE
        key = self._load_key(path)
        if key.public.keyid != current.keyid and _finish_rotation(path, key, current.keyid):
            key = self._load_key(path)
        if key.public.keyid != current.keyid:
            raise KeyFileError(
                f"{path}: expected the log key {current.keyid[:16]}…, found key {key.public.keyid[:16]}…"
            )
        return key

    def _load_recorder_key(self, ring: KeyRing, log_key: SigningKey) -> SigningKey:
        """The key that signs entries: `--key`/LEDGER_KEY, else the `default` recorder key, else (a ledger
        made before `ledger init` wrote `default`) the log key, with a LogKeySigningWarning."""
        if self.key:
            return self._load_registered_key(self._key_path(self.key), ring)
        default = _default_recorder(ring)
        if default is None:
            if not self._warned_log_key:  # once per Ledger: a training loop appends every step
                self._warned_log_key = True
                warnings.warn(
                    f"this ledger has no `{DEFAULT_RECORDER}` recorder key (made before `ledger init` wrote one); "
                    f"signing with the log key. Create one: ledger keys new --name {DEFAULT_RECORDER}",
                    LogKeySigningWarning,
                    stacklevel=2,
                )
            return log_key
        path = self.keys_dir / f"{DEFAULT_RECORDER}.pem"
        if not path.exists() and not path.is_symlink():
            raise KeyFileError(
                f"{path}: not found; the ledger signs entries with its `{DEFAULT_RECORDER}` recorder key "
                f"({default.keyid[:16]}…): restore the file, or choose a key with --key/LEDGER_KEY"
            )
        key = self._load_registered_key(path, ring)
        if key.public.keyid != default.keyid:
            raise KeyFileError(
                f"{path}: expected the `{DEFAULT_RECORDER}` recorder key {default.keyid[:16]}…, "
                f"found key {key.public.keyid[:16]}…"
            )
        return key

    def _load_registered_key(self, path: Path, ring: KeyRing) -> SigningKey:
        """A recorder key file whose key the log introduced and has not revoked (a rotation killed before its
        file renames is rolled forward first)."""
        key = self._load_key(path)
        info = ring.by_id.get(key.public.keyid)
        if info is not None and info.revoked_at is not None and info.revoke_reason == "rotated":
            # `rotate_key` appends the successor's key entry just before the revocation
            successor = next(
                (k for k in ring.by_id.values() if k.index == info.revoked_at - 1), None
            )
            if successor is not None and _finish_rotation(path, key, successor.keyid):
                key = self._load_key(path)
                info = ring.by_id.get(key.public.keyid)
        if info is None:
            raise KeyFileError(
                f"{path}: this key is not registered in the ledger (run `ledger keys new`)"
            )
        if info.revoked:
            raise KeyFileError(
                f"{path}: key {info.name} ({info.keyid[:16]}…) was revoked at entry {info.revoked_at}"
            )
        return key

    def new_key(self, name: str, role: str = "recorder", passphrase: str | None = None) -> KeyInfo:
        """Write a new key file and append its `key` entry, signed by the log key."""
        if role == "log":
            raise UsageError("a second log key is made with `ledger keys rotate`, not `keys new`")
        if not name or any(c.isspace() for c in name) or "/" in name:
            raise UsageError(f"key name {name!r}: must be non-empty, with no spaces or '/'")
        path = self.keys_dir / f"{name}.pem"
        new = SigningKey.generate()
        written: list[Path] = []
        retired: list[Path] = []

        def build(
            conn: Connection, start: int, ring: KeyRing
        ) -> list[tuple[dict[str, Any], SigningKey]]:
            if any(k.name == name and not k.revoked for k in ring.by_id.values()):
                raise DuplicateError(f"a key named {name!r} is already active in the ledger")
            log_key = ring_log_key(ring)
            if path.exists() or path.is_symlink():
                retired.append(self._retire_revoked_key_file(path, ring))
            keys.write_key_file(path, new, _passphrase(passphrase))
            written.append(path)
            return [(entries.key_body(new.public.keyid, new.public.b64, name, role), log_key)]

        ring_log_key = self._log_key_getter()
        try:
            result = self._append(build)
        except BaseException:
            if written and path.exists():
                path.unlink()
            if retired:
                os.replace(retired[0], path)
            raise
        return KeyInfo(new.public.keyid, name, role, new.public.b64, result.start)

    def _retire_revoked_key_file(self, path: Path, ring: KeyRing) -> Path:
        """Move aside a key file whose key this log has revoked, so its name can be given to a new key
        (`<name>.<keyid8>.revoked.pem`); any other file there is never touched."""
        duplicate = DuplicateError(f"{path}: a key file with that name already exists")
        try:
            old = self._load_key(path)
        except KeyFileError:
            raise duplicate from None
        info = ring.by_id.get(old.public.keyid)
        if info is None or not info.revoked:
            raise duplicate
        target = path.with_name(f"{path.stem}.{info.keyid[:8]}.revoked.pem")
        if target.exists():
            raise duplicate
        os.replace(path, target)
        return target

    def _log_key_getter(self) -> Callable[[KeyRing], SigningKey]:
        cache: dict[str, SigningKey] = {}

        def get(ring: KeyRing) -> SigningKey:
            if "k" not in cache:
                cache["k"] = self._load_log_key(ring)
            return cache["k"]

        return get

    def revoke_key(self, name_or_id: str, reason: str = "unspecified") -> KeyInfo:
        def build(
            conn: Connection, start: int, ring: KeyRing
        ) -> list[tuple[dict[str, Any], SigningKey]]:
            info = ring.find(name_or_id)
            if info.revoked:
                raise DuplicateError(f"key {info.name} ({info.keyid[:16]}…) is already revoked")
            if info.role == "log":
                raise UsageError(
                    "the log key is replaced with `ledger keys rotate`, not revoked alone"
                )
            return [(entries.revoke_body(info.keyid, reason), get_log_key(ring))]

        get_log_key = self._log_key_getter()
        result = self._append(build)
        return next(k for k in self.keys() if k.revoked_at == result.start)

    def rotate_key(self, name_or_id: str = "log", passphrase: str | None = None) -> KeyInfo:
        """Replace a key: a new key under the same name and role, then the old one revoked (`rotated`)."""
        new = SigningKey.generate()
        staged: dict[str, Path] = {}

        def build(
            conn: Connection, start: int, ring: KeyRing
        ) -> list[tuple[dict[str, Any], SigningKey]]:
            old = ring.current_log_key() if name_or_id == "log" else ring.find(name_or_id)
            old_log = get_log_key(ring)
            path = self.keys_dir / (LOG_KEY_FILE if old.role == "log" else f"{old.name}.pem")
            staging = path.with_name(path.name + f".{new.public.keyid[:8]}.new")
            keys.write_key_file(staging, new, _passphrase(passphrase))
            staged["new"], staged["final"] = staging, path
            staged["old"] = path.with_name(f"{path.stem}.{old.keyid[:8]}.retired.pem")
            body = entries.key_body(new.public.keyid, new.public.b64, old.name, old.role)
            revoke_signer = new if old.role == "log" else old_log
            return [(body, old_log), (entries.revoke_body(old.keyid, "rotated"), revoke_signer)]

        get_log_key = self._log_key_getter()
        try:
            result = self._append(build)
        except BaseException:
            if "new" in staged:
                staged["new"].unlink(missing_ok=True)
            raise
        if staged["final"].exists():
            os.replace(staged["final"], staged["old"])
        os.replace(staged["new"], staged["final"])
        return next(k for k in self.keys() if k.index == result.start)

    def export_key(self, name_or_id: str = "log") -> KeyInfo:
        with self.session() as conn:
            ring = self._key_ring(conn)
        return ring.current_log_key() if name_or_id == "log" else ring.find(name_or_id)

    # --- appending ---------------------------------------------------------------------------------
    def _append(self, build: BodyBuilder) -> AppendResult:
        """Run `build` inside one transaction, append what it returns, sign the new tree head, commit."""
        with self.session() as conn, store.transaction(conn):
            stored = store.check_head(conn)
            ring = self._key_ring(conn)
            built = build(conn, stored.size, ring)
            if not built:
                return AppendResult(
                    stored.size,
                    0,
                    TreeHeadInfo(stored.origin, stored.size, stored.root, stored.note),
                )
            leaves, facts, signers = [], [], []
            for offset, (body, signer) in enumerate(built):
                index = stored.size + offset
                entries.check_body(body, index)
                leaves.append(keys.sign_entry(body, signer))
                facts.append(entries.facts_of(body))
                signers.append(signer.public.keyid)
                if body["kind"] == "key":
                    ring.add(body, index)
                elif body["kind"] == "revoke":
                    ring.revoke(str(body["keyid"]), index, str(body["reason"]))
            size = stored.size + len(leaves)
            root = store.append_entries(conn, stored.size, leaves, facts, signers)
            head_signer = self._head_signer(ring, built)
            note = keys.sign_tree_head(keys.TreeHead(stored.origin, size, root), head_signer)
            store.write_head(conn, size, root, note)
        return AppendResult(stored.size, len(leaves), TreeHeadInfo(stored.origin, size, root, note))

    def _head_signer(
        self, ring: KeyRing, built: list[tuple[dict[str, Any], SigningKey]]
    ) -> SigningKey:
        """The tree head is signed by the log key current after the append (a rotation's new key)."""
        current = ring.current_log_key()
        for _, signer in built:
            if signer.public.keyid == current.keyid:
                return signer
        return self._load_log_key(ring)

    def append_bodies(self, bodies: Sequence[dict[str, Any]]) -> AppendResult:
        """Append ready-made bodies signed with the recorder key (used by recorders and tests)."""

        def build(
            conn: Connection, start: int, ring: KeyRing
        ) -> list[tuple[dict[str, Any], SigningKey]]:
            signer = self._load_recorder_key(ring, self._load_log_key(ring))
            return [(dict(b), signer) for b in bodies]

        return self._append(build)

    def signer_for(self, ring: KeyRing) -> SigningKey:
        return self._load_recorder_key(ring, self._load_log_key(ring))

    # --- recording (logic in ledger.recording) -----------------------------------------------------
    def record_batch(
        self,
        records: Iterable[Mapping[str, Any] | str] | None = None,
        *,
        id: str,
        files: Sequence[Path | str] = (),
        split: int | None = None,
        text_fields: Sequence[str] | None = None,
        derived_from: Sequence[int | str] = (),
        dataset: str | None = None,
        min_segment_chars: int = 32,
        progress: Callable[[int], None] | None = None,
    ) -> recording.BatchResult:
        """Record a training batch (or `split` batches) from records or files (a directory: its files in name order); idempotent per id."""
        from ledger import recording

        return recording.record_batch(
            self, records, id=id, files=files, split=split, text_fields=text_fields,
            derived_from=derived_from, dataset=dataset, min_segment_chars=min_segment_chars, progress=progress,
        )  # fmt: skip

    def record_batches(
        self,
        batches: Iterable[tuple[str, Iterable[Mapping[str, Any] | str]]],
        *,
        text_fields: Sequence[str] | None = None,
        derived_from: Sequence[int | str] = (),
        dataset: str | None = None,
        min_segment_chars: int = 32,
        progress: Callable[[int], None] | None = None,
    ) -> recording.BatchResult:
        """Record many (id, records) batches in one transaction: one DuckDB open for buffered steps."""
        from ledger import recording

        return recording.record_batches(
            self, batches, text_fields=text_fields, derived_from=derived_from, dataset=dataset,
            min_segment_chars=min_segment_chars, progress=progress,
        )  # fmt: skip

    def record_call(
        self,
        *,
        provider: str,
        purpose: str,
        request: object | None,
        response: object,
        model: str | None = None,
        endpoint: str | None = None,
        external_id: str | None = None,
        account: str | None = None,
        stream: bool = False,
        complete: bool = True,
    ) -> recording.CallResult:
        """Record one external model call; idempotent on (provider, external_id)."""
        from ledger import recording

        return recording.record_call(
            self, provider=provider, purpose=purpose, request=request, response=response, model=model,
            endpoint=endpoint, external_id=external_id, account=account, stream=stream, complete=complete,
        )  # fmt: skip

    def import_calls(
        self,
        path: Path | str,
        fmt: str,
        *,
        provider: str | None,
        purpose: str,
        requests_path: Path | str | None = None,
        account: str | None = None,
        progress: Callable[[int], None] | None = None,
        chunk: int = 5000,
    ) -> recording.ImportReport:
        """Import a provider log, one transaction per `chunk` calls; re-running adds nothing."""
        from ledger import recording

        return recording.import_calls(
            self, path, fmt, provider=provider, purpose=purpose, requests_path=requests_path,
            account=account, progress=progress, chunk=chunk,
        )  # fmt: skip

    def record_checkpoint(
        self,
        *,
        id: str,
        weights: Sequence[Path | str],
        batches: Sequence[str] = (),
        parents: Sequence[str] = (),
        teachers: Sequence[str] = (),
        config: Path | str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Entry:
        """Record a model checkpoint: weights hashed first, every reference checked on append."""
        from ledger import recording

        recorded = recording.record_checkpoint(
            self, id=id, weights=weights, batches=batches, parents=parents, teachers=teachers,
            config=config, progress=progress,
        )  # fmt: skip
        return self.entry(recorded.index)

    # --- audit (logic in ledger.audit) -------------------------------------------------------------
    def audit(
        self,
        checkpoint: str | None = None,
        *,
        weights: Sequence[Path | str] = (),
        suspects: Path | str | None = None,
        fuzzy: bool = True,
        threshold: float | None = None,
        policy: Path | str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> audit.AuditReport:
        """Audit a checkpoint's lineage for third-party outputs: `report.verdict`, `report.findings`."""
        from ledger import audit

        return audit.audit(
            self, checkpoint, weights=[Path(w) for w in weights], suspects=None if suspects is None else Path(suspects),
            fuzzy=fuzzy, threshold=threshold, policy=None if policy is None else Path(policy), progress=progress,
        )  # fmt: skip

    # --- reading -----------------------------------------------------------------------------------
    @property
    def last_audit_path(self) -> Path:
        return self.path.with_name(self.path.name + ".last-audit.json")

    def remember_audit(self, summary: Mapping[str, Any]) -> None:
        """Keep the latest audit's summary beside the file for `status`. Informational only: evidence is the
        log and bundles, so this file is not covered by any root and `verify` ignores it."""
        import json

        tmp = self.last_audit_path.with_name(self.last_audit_path.name + ".tmp")
        tmp.write_text(json.dumps(dict(summary), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.last_audit_path)

    def last_audit(self) -> dict[str, Any] | None:
        import json

        try:
            value = json.loads(self.last_audit_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def entry_count(self) -> int:
        """Entries stored, without trusting the tree head (for progress totals of `verify`)."""
        with self.session() as conn:
            return store.entry_count(conn)

    def head(self) -> TreeHeadInfo:
        with self.session() as conn:
            stored = store.head(conn)
        return TreeHeadInfo(stored.origin, stored.size, stored.root, stored.note)

    def entry(self, ref: str | int, kinds: Sequence[str] | None = None) -> Entry:
        with self.session() as conn:
            return _to_entry(store.resolve(conn, str(ref), kinds))

    def log(
        self,
        *,
        kinds: Sequence[str] | None = None,
        since: datetime | str | None = None,
        provider: str | None = None,
        purpose: str | None = None,
        start: int = 0,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Entry]:
        """Entries in index order (or newest first), filtered; `since` is an instant or RFC 3339 text."""
        if isinstance(since, str):
            since = entries.parse_time(since, "since")
        elif since is not None and since.tzinfo is None:
            raise UsageError(
                f"since {since.isoformat()}: expected an aware datetime (entry times are UTC)"
            )
        with self.session() as conn:
            return [
                _to_entry(e)
                for e in store.iter_entries(
                    conn,
                    kinds=kinds,
                    since=since,
                    provider=provider,
                    purpose=purpose,
                    start=start,
                    limit=limit,
                    descending=descending,
                )
            ]

    def status(self) -> dict[str, Any]:
        """Size, latest tree head, key counts, entries by kind and record-set totals, in one session."""
        with self.session() as conn:
            stored = store.head(conn)
            counts = store.counts_by_kind(conn)
            tables = store.table_counts(conn)
            ring = self._key_ring(conn)
        infos = list(ring.by_id.values())
        return {
            "db": str(self.path),
            "origin": stored.origin,
            "size": stored.size,
            "root": stored.root.hex(),
            "note": stored.note,
            "counts": counts,
            "keys": {
                "active": sum(not k.revoked for k in infos),
                "revoked": sum(k.revoked for k in infos),
            },
            "records": tables["records"],
            "segments": tables["record_segments"],
            "last_audit": self.last_audit(),
        }

    def prove(self, ref: str | int) -> InclusionProof:
        """Inclusion proof of one entry against the latest tree head, from O(log n) stored nodes."""
        with self.session() as conn:
            stored = store.head(conn)
            found = store.resolve(conn, str(ref))
            nodes = store.fetch_nodes(
                conn, merkle.needed_nodes(merkle.inclusion_ranges(found.index, stored.size))
            )
        proof = merkle.inclusion_proof(found.index, stored.size, nodes)
        leaf_hash = merkle.leaf_hash(found.leaf)
        merkle.verify_inclusion(leaf_hash, found.index, stored.size, proof, stored.root)
        return InclusionProof(found.index, found.leaf, leaf_hash, stored.size, stored.root, proof)

    def inclusion_proofs(
        self, indexes: Sequence[int]
    ) -> tuple[TreeHeadInfo, dict[int, InclusionProof]]:
        """Proofs for many entries against one tree head, read in one session."""
        with self.session() as conn:
            stored = store.head(conn)
            wanted: set[tuple[int, int]] = set()
            for index in indexes:
                wanted |= merkle.needed_nodes(merkle.inclusion_ranges(index, stored.size))
            nodes = store.fetch_nodes(conn, wanted)
            leaves = {i: store.entry_at(conn, i).leaf for i in indexes}
        out = {}
        for index in indexes:
            proof = merkle.inclusion_proof(index, stored.size, nodes)
            leaf_hash = merkle.leaf_hash(leaves[index])
            out[index] = InclusionProof(
                index, leaves[index], leaf_hash, stored.size, stored.root, proof
            )
        return TreeHeadInfo(stored.origin, stored.size, stored.root, stored.note), out

    def consistency(self, old_note: str, source: str = "the tree head") -> ConsistencyProof:
        """Prove the current log extends the tree head in `old_note` (its signature is checked too).

        A head of another ledger (another origin) is the wrong input, not tampering: InputError
        naming `source` (the file it came from)."""
        with self.session() as conn:
            stored = store.head(conn)
            ring = self._key_ring(conn)
            origin = keys.open_signed_note(old_note)[0].origin
            if origin != stored.origin:
                raise InputError(
                    f"{source}: this head's origin is {origin!r}, the ledger's is {stored.origin!r}: "
                    "a tree head of another ledger (wrong file or --db?)"
                )
            old = _verify_note_with_ring(old_note, ring, stored.origin)
            if old.size > stored.size:
                raise VerificationError(
                    f"the given tree head has size {old.size}, larger than the log's {stored.size}: rollback?"
                )
            nodes = store.fetch_nodes(
                conn,
                merkle.needed_nodes(
                    merkle.consistency_ranges(old.size, stored.size) + [(0, old.size)]
                )
                if old.size
                else set(),
            )
        if old.size == 0:
            proof: list[bytes] = []
        else:
            proof = merkle.consistency_proof(old.size, stored.size, nodes)
            local_old_root = merkle.range_hash(0, old.size, nodes)
            if local_old_root != old.root:
                raise VerificationError(
                    f"the log's first {old.size} entries have root {local_old_root.hex()}, "
                    f"the published tree head says {old.root.hex()}"
                )
        merkle.verify_consistency(old.size, stored.size, old.root, stored.root, proof)
        return ConsistencyProof(old.size, old.root, stored.size, stored.root, proof)


def _default_recorder(ring: KeyRing) -> KeyInfo | None:
    """The active `default` recorder key; None when the log never had one (a ledger made before `ledger
    init` wrote it). One that was revoked and not replaced is an error: signing with the log key instead
    would put the root of trust back on every recording host, the very thing the recorder key avoids."""
    named = [k for k in ring.by_id.values() if k.name == DEFAULT_RECORDER and k.role == "recorder"]
    if not named:
        return None
    active = [k for k in named if not k.revoked]
    if active:
        return max(active, key=lambda k: k.index)
    last = max(named, key=lambda k: k.index)
    raise KeyFileError(
        f"the `{DEFAULT_RECORDER}` recorder key ({last.keyid[:16]}…) was revoked at entry {last.revoked_at}; "
        f"make a new one (ledger keys new --name {DEFAULT_RECORDER}) or choose a key with --key/LEDGER_KEY"
    )


def _finish_rotation(path: Path, old: SigningKey, new_keyid: str) -> bool:
    """Roll forward a rotation killed after its commit but before its file renames (the new key is staged).

    The log already names the staged key, so the only consistent move is the renames `rotate_key` would
    have done: the old file to `.retired.pem`, the staged one into place. False when nothing is staged.
    """
    staged = path.with_name(path.name + f".{new_keyid[:8]}.new")
    if not staged.is_file() or keys.load_key_file(staged).public.keyid != new_keyid:
        return False
    os.replace(path, path.with_name(f"{path.stem}.{old.public.keyid[:8]}.retired.pem"))
    os.replace(staged, path)
    return True


def _verify_note_with_ring(note: str, ring: KeyRing, origin: str) -> keys.TreeHead:
    """A published tree head verifies with any log key the ledger ever had (heads outlive rotations)."""
    parsed, _ = keys.open_signed_note(note)
    if parsed.origin != origin:
        raise VerificationError(
            f"tree head origin {parsed.origin!r} is not this ledger's {origin!r}"
        )
    last_error: Exception | None = None
    for info in sorted(ring.by_id.values(), key=lambda k: -k.index):
        if info.role != "log":
            continue
        try:
            return keys.verify_tree_head(note, (origin, info.public))
        except VerificationError as exc:
            last_error = exc
    raise VerificationError(
        f"the tree head is not signed by any log key of this ledger ({last_error})"
    )


def read_note_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read tree head: {exc}") from exc
