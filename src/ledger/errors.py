"""The error hierarchy (and the library's warnings). The CLI maps each class to a fixed exit code in one place."""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error the library raises on purpose."""

    exit_code = 4


class UsageError(LedgerError):
    """An option or argument that cannot be used as given."""

    exit_code = 2


class InputError(LedgerError):
    """Unreadable, malformed or missing input (a file, a line, a row)."""


class OptionHintError(InputError):
    """Input that an option fixes; the message names it as the caller knows it (`model=` or `--model`)."""

    def __init__(self, text: str, keyword: str = "", advice: str = "pass {}") -> None:
        self.text = text
        self.keyword = keyword
        self.advice = advice
        # without a keyword (a caller re-raising with its location in front) it is plain text
        super().__init__(self.naming(f"{keyword}=") if keyword else text)

    def __reduce__(self) -> tuple[type[OptionHintError], tuple[str, str, str]]:
        return (type(self), (self.text, self.keyword, self.advice))  # so it crosses process pools

    def naming(self, option: str) -> str:
        """The message with `option` (a keyword argument, a command-line flag) as the fix."""
        return f"{self.text}: {self.advice.format(option)}" if self.keyword else self.text


class NotFoundError(LedgerError):
    """A REF or id that names no entry."""


class DuplicateError(LedgerError):
    """An id (or external id) that already exists in the log."""


class LockedError(LedgerError):
    """The database file stayed locked by another process past the wait."""


class CorruptDatabaseError(LedgerError):
    """The database file cannot be opened or read as a ledger."""


class KeyFileError(LedgerError):
    """A key file that is missing, unreadable, or has the wrong passphrase."""


class VerificationError(LedgerError):
    """Tampering or an invalid signature: expected one thing, found another."""

    exit_code = 1

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class ForkError(VerificationError):
    """A witness proved the log forked or rolled back: it holds a larger tree, or another root."""


class WitnessQuorumError(LedgerError):
    """The witness policy's quorum of cosignatures could not be reached (each witness's answer named)."""


class FingerprintMismatchError(LedgerError):
    """Fingerprints made with different settings cannot be compared."""


class LedgerWarning(UserWarning):
    """Root of every warning the library issues; the CLI prints each as one `warning:` line."""


class LogKeySigningWarning(LedgerWarning):
    """Entries are being signed by the log key because the ledger has no `default` recorder key."""
