"""The log side of C2SP tlog-witness: submit a signed tree head to witnesses, collect their cosignatures.

`submit` is one `POST <URL>/add-checkpoint` (body: `old N`, the consistency proof lines in base64, an
empty line, the signed note). `ask_witness` runs the protocol with one witness: start from the size it
last cosigned, learn its size from a 409 (`text/x.tlog.size`) and retry once with the proof from that
size. Its answer says whether the witness cosigned, failed (unreachable, timeout, 403 ...), or proved
that the log forked or rolled back: it holds a larger tree than the log's, or refuses the log's root
at a size both hold (409 at an equal size, 422 for a proof that our own tree verifies). `ask_witnesses`
asks every witness of a policy at once, each in its own thread, and returns within a bounded time
whatever the witnesses do. Nothing here reads the ledger: proofs come from a callable.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledger.spec import note as note_spec
from ledger.spec.keys import b64encode
from ledger.spec.witness_policy import PolicyWitness

__all__ = [
    "DEFAULT_TIMEOUT",
    "Conflict",
    "SubmitResult",
    "WitnessAnswer",
    "ask_witness",
    "ask_witnesses",
    "submit",
]

DEFAULT_TIMEOUT = 5.0  # seconds per request: an unreachable witness costs seconds, not minutes
MAX_ANSWER = 64 * 1024  # a witness answers a few cosignature lines; more is not a witness talking
SIZE_CONTENT_TYPE = "text/x.tlog.size"

ProofFrom = Callable[[int], Sequence[bytes]]
"""The consistency proof from an older tree size to the size of the head being submitted."""


@dataclass(frozen=True)
class SubmitResult:
    """One witness answer. `status` 0: no HTTP answer (`error` says why); `size`: from a 409."""

    status: int
    body: str = ""
    size: int | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.status == 0:
            return self.error or "no answer"
        reason = http.client.responses.get(self.status, "")
        first = self.body.strip().splitlines()[0][:120] if self.body.strip() else ""
        return f"answered {self.status} {reason}".rstrip() + (f": {first}" if first else "")


def _request_body(checkpoint_note: str, old_size: int, proof: Sequence[bytes]) -> bytes:
    lines = [f"old {old_size}\n", *(b64encode(p) + "\n" for p in proof), "\n", checkpoint_note]
    return "".join(lines).encode("utf-8")


def _endpoint(url: str) -> tuple[str, str, int | None, str]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"expected an http:// or https:// witness URL, found {url!r:.120}")
    return parsed.scheme, parsed.hostname, parsed.port, parsed.path.rstrip("/") + "/add-checkpoint"


def submit(
    url: str,
    checkpoint_note: str,
    old_size: int,
    proof: Sequence[bytes],
    timeout: float = DEFAULT_TIMEOUT,
    connection: http.client.HTTPConnection | None = None,
) -> SubmitResult:
    """POST the signed note to `<url>/add-checkpoint` with the proof from `old_size`; never raises.

    `timeout` bounds every socket operation (connect, send, each read). A `connection` given is
    reused (HTTP keep-alive, as the spec recommends for the retry after a 409)."""
    try:
        scheme, host, port, path = _endpoint(url)
    except ValueError as exc:
        return SubmitResult(0, error=str(exc))
    conn = connection
    if conn is None:
        factory = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = factory(host, port, timeout=timeout)
    else:
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
    try:
        conn.request(
            "POST",
            path,
            body=_request_body(checkpoint_note, old_size, proof),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        response = conn.getresponse()
        raw = response.read(MAX_ANSWER + 1)
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
    except (TimeoutError, socket.timeout):
        return SubmitResult(0, error=f"no answer within {timeout:g}s (timeout)")
    except ConnectionRefusedError:
        return SubmitResult(0, error="unreachable (connection refused)")
    except (OSError, http.client.HTTPException) as exc:
        what = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return SubmitResult(0, error=f"unreachable ({what})")
    finally:
        if connection is None:
            conn.close()
    if len(raw) > MAX_ANSWER:
        return SubmitResult(0, error=f"answered {response.status} with over {MAX_ANSWER} bytes")
    body = raw.decode("utf-8", errors="replace")
    size = None
    if response.status == 409 and content_type == SIZE_CONTENT_TYPE:
        text = body[:-1] if body.endswith("\n") else body
        if text.isdigit() and (text == "0" or not text.startswith("0")):
            size = int(text)
    return SubmitResult(response.status, body, size)


@dataclass(frozen=True)
class Conflict:
    """A witness's proof that the log forked or rolled back: it holds `witness_size` (a larger tree,
    or another root at that size) where the log's head has `log_size`."""

    witness_size: int
    log_size: int
    larger: bool  # the witness holds a larger tree (rollback, or a fork that grew elsewhere)

    def describe(self, witness: str) -> str:
        if self.larger:
            return (
                f"witness {witness} holds a tree of size {self.witness_size}, larger than the "
                f"log's {self.log_size}: the log was rolled back or forked"
            )
        if self.witness_size == self.log_size:
            return (
                f"witness {witness} holds another root at size {self.witness_size} (the log's "
                f"size {self.log_size}): the log forked"
            )
        return (
            f"witness {witness} refuses the log's tree of size {self.log_size} as an extension "
            f"of its tree of size {self.witness_size}: the log forked"
        )


@dataclass(frozen=True)
class WitnessAnswer:
    """What one policy witness did with the head: cosigned (`lines`), failed (`what`), or a `conflict`."""

    witness: str
    lines: tuple[str, ...] = ()
    what: str = "cosigned"
    conflict: Conflict | None = None

    @property
    def cosigned(self) -> bool:
        return bool(self.lines)

    def describe(self) -> str:
        return (
            self.conflict.describe(self.witness)
            if self.conflict
            else f"{self.witness}: {self.what}"
        )


def _valid_lines(witness: PolicyWitness, checkpoint_note: str, body: str) -> tuple[str, ...]:
    """The response's cosignature lines by this witness's key that verify (unknown keys ignored)."""
    lines = [line + "\n" for line in body.split("\n") if line.startswith("\u2014 ")]
    keys = [(witness.key_name, witness.key_id, witness.public)]
    out = []
    for line in lines:
        try:
            cosigned = note_spec.add_signatures(checkpoint_note, [line])
            if note_spec.verify_cosignatures(cosigned, keys):
                out.append(line)
        except Exception:  # noqa: BLE001 - a malformed line from a witness is ignored, as verifiers do
            continue
    return tuple(out)


def ask_witness(
    witness: PolicyWitness,
    checkpoint_note: str,
    size: int,
    start_size: int,
    proof_from: ProofFrom,
    timeout: float = DEFAULT_TIMEOUT,
) -> WitnessAnswer:
    """Submit the head (of tree size `size`) to one witness, starting from `start_size` (the size it
    last cosigned for us, or 0), and learning its size from a 409 once."""
    name = witness.name
    if witness.url is None:
        return WitnessAnswer(name, what="no URL in the policy: not asked")
    old = min(max(start_size, 0), size)
    learned: int | None = None
    try:
        scheme, host, port, _ = _endpoint(witness.url)
    except ValueError as exc:
        return WitnessAnswer(name, what=str(exc))
    factory = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    connection = factory(host, port, timeout=timeout)
    try:
        for attempt in (1, 2):
            result = submit(witness.url, checkpoint_note, old, proof_from(old), timeout, connection)
            if result.status == 200:
                lines = _valid_lines(witness, checkpoint_note, result.body)
                if lines:
                    return WitnessAnswer(name, lines)
                return WitnessAnswer(
                    name, what=f"answered 200 without a valid cosignature by {witness.key_name}"
                )
            if result.status == 409 and result.size is not None:
                theirs = result.size
                if theirs > size:
                    return WitnessAnswer(
                        name, what="conflict", conflict=Conflict(theirs, size, True)
                    )
                if theirs == old:  # it holds our old size with another root (only at old == size)
                    return WitnessAnswer(
                        name, what="conflict", conflict=Conflict(theirs, size, False)
                    )
                if attempt == 2:
                    return WitnessAnswer(
                        name,
                        what=f"its size moved from {learned} to {theirs} while we asked (409 twice)",
                    )
                old = learned = theirs
                continue
            if result.status == 422 and old > 0:
                # Our proof verifies against our own tree (proof_from checks it): the witness's root at
                # size `old` is not ours.
                return WitnessAnswer(name, what="conflict", conflict=Conflict(old, size, False))
            return WitnessAnswer(name, what=result.describe())
    finally:
        connection.close()
    return WitnessAnswer(name, what="no answer")  # pragma: no cover - the loop always returns


def ask_witnesses(
    witnesses: Sequence[PolicyWitness],
    checkpoint_note: str,
    size: int,
    start_sizes: dict[str, int],
    proof_from: ProofFrom,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[WitnessAnswer]:
    """Ask every witness at once (one thread each); return within about twice `timeout` in all.

    A witness still busy at the deadline (a server that trickles bytes) is answered `timeout` and left
    behind on a daemon thread, so it cannot hold the command."""
    answers: dict[str, WitnessAnswer] = {}
    lock = threading.Lock()

    def run(witness: PolicyWitness) -> None:
        try:
            answer = ask_witness(
                witness,
                checkpoint_note,
                size,
                start_sizes.get(witness.name, 0),
                proof_from,
                timeout,
            )
        except Exception as exc:  # noqa: BLE001 - one witness's failure must not sink the others
            answer = WitnessAnswer(witness.name, what=f"failed: {type(exc).__name__}: {exc}")
        with lock:
            answers[witness.name] = answer

    threads = [
        threading.Thread(target=run, args=(w,), name=f"witness {w.name}", daemon=True)
        for w in witnesses
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 2 * timeout + 1.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        return [
            answers.get(w.name)
            or WitnessAnswer(w.name, what=f"no answer within {2 * timeout + 1:g}s (timeout)")
            for w in witnesses
        ]
