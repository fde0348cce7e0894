"""Fingerprint schemes and the parameters that fix their bytes (``ledger.spec.fingerprint``).

Every setting that changes fingerprint bytes or band keys is a field of `FingerprintParams`, stored
with the fingerprints; fingerprints compare only under identical params (`check_compatible`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ledger.errors import FingerprintMismatchError, InputError

__all__ = [
    "CANON",
    "CANON_V2",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_PARAMS",
    "DEFAULT_THRESHOLD",
    "SCHEME",
    "SCHEMES",
    "SCHEME_V2",
    "V2_PARAMS",
    "FingerprintParams",
    "check_compatible",
]

SCHEME = "sampled-shingles-v3"
CANON = "skeleton-drop-ignorable-mask-email-digit-punct-space-v1"
SCHEME_V2 = "sampled-shingles-v2"
CANON_V2 = "drop-mask-email-digit-punct-space-v1"
# Every scheme the audit and the bundle verifier read, with its canonical text. v3 is v2 on a text
# with default-ignorable code points stripped and letters folded to their TR39 skeletons.
SCHEMES = {SCHEME_V2: CANON_V2, SCHEME: CANON}


@dataclass(frozen=True)
class FingerprintParams:
    """Everything that changes fingerprint bytes or band keys (stored with the fingerprints)."""

    scheme: str = SCHEME
    canon: str = CANON
    shingle_bytes: int = 7
    """Shingle length in UTF-8 bytes of the canonical text (letters only, no spaces). v3 takes 7
    (v2 took 8): a filler word inserted every fourth word leaves more shingles whole."""
    sample_rate: int = 8
    """One shingle in `sample_rate` is kept (by hash value, the same ones in every text)."""
    value_bits: int = 16
    """Bits stored per kept shingle: 16 or 32."""
    band_rows: int = 3
    """Consecutive kept values hashed into one band key."""
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.scheme not in SCHEMES:
            problems.append(f"scheme {self.scheme!r} (expected one of {sorted(SCHEMES)})")
        elif self.canon != SCHEMES[self.scheme]:
            problems.append(f"canon {self.canon!r} (expected {SCHEMES[self.scheme]!r})")
        if not 1 <= self.shingle_bytes <= 16:
            problems.append(f"shingle_bytes {self.shingle_bytes} (expected 1..16)")
        if not 1 <= self.sample_rate <= 1 << 16:
            problems.append(f"sample_rate {self.sample_rate} (expected 1..65536)")
        if self.value_bits not in (16, 32):
            problems.append(f"value_bits {self.value_bits} (expected 16 or 32)")
        if not 1 <= self.band_rows <= 8:
            problems.append(f"band_rows {self.band_rows} (expected 1..8)")
        if not 0 <= self.seed < 1 << 64:
            problems.append(f"seed {self.seed} (expected 0..2**64-1)")
        if problems:
            raise InputError("invalid fingerprint params: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        """A JSON object naming every setting, for storage next to the fingerprints."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: object) -> FingerprintParams:
        """Parse `to_json` output strictly: unknown or missing keys and wrong types are errors."""
        if not isinstance(d, dict):
            raise InputError(f"fingerprint params must be a JSON object, found {type(d).__name__}")
        names = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(d) - set(names))
        missing = sorted(set(names) - set(d))
        if unknown or missing:
            raise InputError(f"fingerprint params: unknown keys {unknown}, missing keys {missing}")
        for name, typ in names.items():
            want = str if typ in ("str", str) else int
            value = d[name]
            if not isinstance(value, want) or isinstance(value, bool):
                raise InputError(
                    f"fingerprint params: {name} must be {want.__name__}, found {value!r}"
                )
        return cls(**d)

    @property
    def folds(self) -> bool:
        """Whether the canonical text folds confusables and strips default-ignorables (v3 on)."""
        return self.scheme != SCHEME_V2

    @property
    def value_dtype(self) -> np.dtype[Any]:
        """Little-endian storage type of one kept value."""
        return np.dtype("<u2") if self.value_bits == 16 else np.dtype("<u4")


DEFAULT_PARAMS = FingerprintParams()
V2_PARAMS = FingerprintParams(scheme=SCHEME_V2, canon=CANON_V2, shingle_bytes=8)
"""The scheme ledgers recorded before v3 carry; the audit and the bundle verifier still read it."""
DEFAULT_THRESHOLD = 0.5
"""Similarity at or above which a candidate is a `near` finding (chosen in benchmarks/near_sweep.py)."""
DEFAULT_MIN_SAMPLES = 12
"""Floor on a similarity's denominator: a text must share this many kept values (about 100
letters of canonical text) to score 1, so short stock phrases cannot reach the threshold alone.
A scoring choice, not part of the fingerprint."""


def check_compatible(a: FingerprintParams, b: FingerprintParams) -> None:
    """Raise unless fingerprints made with `a` and `b` can be compared (they must be identical)."""
    if a != b:
        da, db = a.to_json(), b.to_json()
        diff = ", ".join(f"{k}: {da[k]!r} vs {db[k]!r}" for k in da if da[k] != db[k])
        raise FingerprintMismatchError(f"fingerprints made with different settings: {diff}")
