"""The witness server: C2SP tlog-witness `POST /add-checkpoint`, answered with cosignature/v1 lines.

`Witness.add_checkpoint` is the protocol (bytes in, an `Answer` out, no HTTP); `WitnessServer` is
a threading HTTP/1.1 server around it. The checks run in the spec's order: the checkpoint's origin
must be a configured log (404), one of its signatures must verify with that log's key (403) before
anything else is looked at, the request must be well formed with old size <= checkpoint size (400),
the old size must be the witness's latest size for the log and an equal size must have the same
root (409, body: the latest size), and the consistency proof must verify (422). Only then is the
new view persisted, atomically with the check (`WitnessState.advance`), and cosigned (200).
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ledger.errors import InputError, LedgerError, UsageError, VerificationError
from ledger.spec.keys import PublicKey, SigningKey
from ledger.spec.merkle import EMPTY_ROOT, verify_consistency
from ledger.spec.note import (
    TreeHead,
    cosign,
    note_signature_lines,
    parse_tree_head,
    parse_vkey,
)
from ledger.witness.state import LogView, WitnessState

__all__ = [
    "MAX_BODY",
    "MAX_PROOF_LINES",
    "Answer",
    "RequestRecord",
    "Witness",
    "WitnessServer",
    "parse_listen",
]

MAX_PROOF_LINES = (
    63  # tlog-witness: "The client MUST NOT send more than 63 consistency proof lines"
)
MAX_BODY = 1 << 16  # a checkpoint with 100 signatures and 63 proof lines is well under this
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD_RE = re.compile(rb"old (0|[1-9][0-9]{0,18})")
_MAX_SIZE = 2**63 - 1


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, content type and body; `origin` and `size` are for the request log."""

    status: int
    content_type: str
    body: bytes
    origin: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One served request, for the optional per-request log line."""

    client: str
    method: str
    path: str
    status: int
    origin: str | None
    size: int | None
    seconds: float


class _Refused(Exception):
    """A request the witness answers with an error status (internal control flow, never escapes)."""

    def __init__(
        self, status: int, message: str, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        super().__init__(message)
        self.status = status
        self.content_type = content_type


def _text(status: int, message: str, origin: str | None = None, size: int | None = None) -> Answer:
    return Answer(status, "text/plain; charset=utf-8", (message + "\n").encode(), origin, size)


class Witness:
    """A witness: its name and key, the logs it serves (origin -> trusted keys) and its state."""

    def __init__(
        self,
        name: str,
        key: SigningKey,
        logs: Iterable[str],
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.key = key
        self.state = state
        self.clock = clock
        trusted: dict[str, list[tuple[bytes, PublicKey]]] = {}
        for text in logs:
            origin, key_id, public = parse_vkey(text)
            trusted.setdefault(origin, []).append((key_id, public))
        if not trusted:
            raise UsageError("a witness needs at least one log (--log VKEY)")
        self.logs: Mapping[str, list[tuple[bytes, PublicKey]]] = trusted

    def add_checkpoint(self, body: bytes) -> Answer:
        """Answer one `add-checkpoint` request body (see the module docstring for the order)."""
        origin: str | None = None
        size: int | None = None
        try:
            head_text, old_line, proof_lines, note = _frame(body)
            origin = head_text.split("\n", 1)[0]
            trusted = self.logs.get(origin)
            if trusted is None:
                raise _Refused(HTTPStatus.NOT_FOUND, f"unknown log origin {origin!r:.200}")
            if not self._log_signed(note, origin, trusted):
                raise _Refused(HTTPStatus.FORBIDDEN, f"no valid signature by a key of {origin}")
            head = _parse_checkpoint(head_text)
            size = head.size
            old_size = _parse_old(old_line)
            proof = _parse_proof(proof_lines)
            if old_size > head.size:
                raise _Refused(
                    HTTPStatus.BAD_REQUEST,
                    f"old size {old_size} is above the checkpoint size {head.size}",
                )

            def decide(current: LogView | None) -> LogView:
                latest = current or LogView(0, EMPTY_ROOT)
                if old_size != latest.size:
                    raise _Refused(HTTPStatus.CONFLICT, f"{latest.size}", SIZE_CONTENT_TYPE)
                if head.size == latest.size and head.root != latest.root:
                    # the same size with another root: a fork (a split view) of the log
                    raise _Refused(HTTPStatus.CONFLICT, f"{latest.size}", SIZE_CONTENT_TYPE)
                try:
                    verify_consistency(latest.size, head.size, latest.root, head.root, proof)
                except VerificationError as exc:
                    raise _Refused(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
                return LogView(head.size, head.root)

            try:
                self.state.advance(origin, decide)
            except (OSError, LedgerError) as exc:
                # nothing is cosigned unless its view is on disk
                raise _Refused(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot persist: {exc}") from None
        except _Refused as refused:
            return Answer(
                refused.status,
                refused.content_type,
                (str(refused) + "\n").encode("utf-8"),
                origin,
                size,
            )
        cosignature = cosign(head_text, self.key, self.name, int(self.clock()))
        return Answer(
            HTTPStatus.OK,
            "text/plain; charset=utf-8",
            cosignature.line().encode("utf-8"),
            origin,
            size,
        )

    def _log_signed(self, note: str, origin: str, trusted: list[tuple[bytes, PublicKey]]) -> bool:
        """Whether any signature line by one of `origin`'s trusted keys verifies (others ignored)."""
        text, lines = note_signature_lines(note)
        message = text.encode("utf-8")
        keys = dict(trusted)
        for name, raw in lines:
            public = keys.get(raw[:4]) if name == origin else None
            if public is not None and public.verify(raw[4:], message):
                return True
        return False


def _frame(body: bytes) -> tuple[str, bytes, list[bytes], str]:
    """Split a body into (checkpoint text, old line, proof lines, signed note); contents unchecked."""
    end_of_proof = body.find(b"\n\n")
    if end_of_proof < 0:
        raise _Refused(
            HTTPStatus.BAD_REQUEST, "expected 'old N', proof lines, an empty line, a note"
        )
    head, note_bytes = body[:end_of_proof], body[end_of_proof + 2 :]
    old_line, *proof_lines = head.split(b"\n")
    try:
        note = note_bytes.decode("utf-8")
        text, _ = note_signature_lines(note)
    except (UnicodeDecodeError, InputError) as exc:
        raise _Refused(
            HTTPStatus.BAD_REQUEST, f"the checkpoint is not a signed note: {exc}"
        ) from None
    return text, old_line, proof_lines, note


def _parse_checkpoint(text: str) -> TreeHead:
    """The origin, size and root of a C2SP checkpoint; extension lines are allowed and cosigned."""
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines[3:]):
        raise _Refused(HTTPStatus.BAD_REQUEST, "expected a checkpoint: origin, size and root lines")
    try:
        return parse_tree_head("\n".join(lines[:3]) + "\n")
    except LedgerError as exc:
        raise _Refused(HTTPStatus.BAD_REQUEST, f"malformed checkpoint: {exc}") from None


def _parse_old(line: bytes) -> int:
    match = _OLD_RE.fullmatch(line)
    if match is None or int(match.group(1)) > _MAX_SIZE:
        raise _Refused(HTTPStatus.BAD_REQUEST, f"expected the line 'old N', found {line[:80]!r}")
    return int(match.group(1))


def _parse_proof(lines: list[bytes]) -> list[bytes]:
    if len(lines) > MAX_PROOF_LINES:
        raise _Refused(
            HTTPStatus.BAD_REQUEST, f"{len(lines)} consistency proof lines, at most 63 allowed"
        )
    proof: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        try:
            digest = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != 32:
            raise _Refused(
                HTTPStatus.BAD_REQUEST,
                f"consistency proof line {number}: expected a base64 32-byte hash",
            )
        proof.append(digest)
    return proof


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[IPv6]:PORT`) as a (host, port) pair; port 0 picks a free port."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen: expected HOST:PORT, found {text!r:.80}")
    return host, int(port)


class WitnessServer(ThreadingHTTPServer):
    """A threading HTTP/1.1 server (keep-alive) answering `POST /add-checkpoint` for one witness."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        witness: Witness,
        listen: tuple[str, int],
        on_request: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.witness = witness
        self.on_request = on_request
        host = listen[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__(listen, _Handler)
        except OSError as exc:
            raise UsageError(
                f"--listen: cannot listen on {host}:{listen[1]}: {exc.strerror or exc}"
            ) from None

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that vanished mid-request is not news; say nothing (no traceback on stderr)."""

    @property
    def url(self) -> str:
        """The base URL (the submission prefix) the server listens on."""
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the spec asks witnesses to support
    timeout = 30  # a stalled client loses its connection, not a thread forever
    disable_nagle_algorithm = True  # headers and body go out at once, not after a delayed ACK
    server: WitnessServer

    def do_POST(self) -> None:  # noqa: N802 - the http.server naming
        started = time.monotonic()
        answer = self._answer_post()
        self._send(answer, started)

    def do_GET(self) -> None:  # noqa: N802
        self._not_post()

    do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET  # noqa: N815

    def _not_post(self) -> None:
        started = time.monotonic()
        if self._path() == "/add-checkpoint":
            answer = _text(HTTPStatus.METHOD_NOT_ALLOWED, "use POST")
        else:
            answer = _text(
                HTTPStatus.NOT_FOUND, "not found: this witness serves POST /add-checkpoint"
            )
        self._send(answer, started, allow="POST")

    def _path(self) -> str:
        return re.sub("/+", "/", self.path.split("?", 1)[0])

    def _answer_post(self) -> Answer:
        if self._path() != "/add-checkpoint":
            return _text(
                HTTPStatus.NOT_FOUND, "not found: this witness serves POST /add-checkpoint"
            )
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return _text(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self.close_connection = True
            return _text(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        length = int(length_text)
        if length > MAX_BODY:
            self.close_connection = True
            return _text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body above {MAX_BODY} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return _text(HTTPStatus.BAD_REQUEST, "body shorter than its Content-Length")
        return self.server.witness.add_checkpoint(body)

    def _send(self, answer: Answer, started: float, allow: str | None = None) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        if allow is not None:
            self.send_header("Allow", allow)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer.body)
        if self.server.on_request is not None:
            self.server.on_request(
                RequestRecord(
                    self.client_address[0],
                    self.command,
                    self.path,
                    answer.status,
                    answer.origin,
                    answer.size,
                    time.monotonic() - started,
                )
            )

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the CLI's `on_request` callback decides what, if anything, is shown."""
