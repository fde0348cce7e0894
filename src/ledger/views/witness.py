"""What `ledger witness` shows: the new witness's vkey, the ready line, one line per request."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from ledger.views import console


def identity_json(identity: Any) -> dict[str, Any]:
    return {
        "name": identity.name,
        "vkey": identity.vkey,
        "key_file": str(identity.key_path),
        "vkey_file": str(identity.vkey_path),
    }


def show_identity(identity: Any) -> None:
    """The vkey alone on stdout (what customers put in their policy); where the files went on stderr."""
    console.show(Text(identity.vkey))
    console.note(f"wrote witness key {identity.key_path} (0600) and vkey {identity.vkey_path}")


def listening(url: str) -> RenderableType:
    return Text(f"listening on {url}")


def show_listening_json(url: str, name: str, vkey: str, origins: list[str]) -> None:
    """The ready line as one compact JSON document (one line, so a supervisor can read it as such)."""
    document = {"listening": url, "name": name, "vkey": vkey, "logs": origins}
    sys.stdout.write(console.json_text(document))
    sys.stdout.flush()


def request_logger() -> Callable[[Any], None] | None:
    """One line per request on stderr when it is a terminal; nothing when piped or redirected."""
    if not console.err.is_terminal:
        return None

    def log(record: Any) -> None:
        where = f" {record.origin} size {record.size}" if record.origin is not None else ""
        console.note(
            f"{record.client} {record.method} {record.path} {record.status}{where} "
            f"({record.seconds * 1000:.1f} ms)"
        )

    return log
