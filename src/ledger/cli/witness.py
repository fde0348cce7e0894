"""`ledger witness init` and `ledger witness serve`: run a C2SP tlog-witness for the logs of others."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from ledger.cli.app import Json, app
from ledger.views import console
from ledger.views import witness as witness_views

witness_app = typer.Typer(
    help="Run a witness that cosigns tree heads (C2SP tlog-witness).",
    no_args_is_help=True,
)
app.add_typer(witness_app, name="witness")


@witness_app.command("init")
def witness_init(
    name: Annotated[
        str,
        typer.Option(
            "--name", help="Witness name, e.g. witness.example.com/w1 (no spaces, no '+')."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Directory for witness.pem and witness.vkey.")],
    json: Json = False,
) -> None:
    """Make a witness key (Ed25519 PEM, 0600) and print its vkey, which logs put in their policy.

    Example: ledger witness init --name witness.example.com/w1 --out /etc/ledger-witness
    """
    from ledger.witness.keys import create_witness

    identity = create_witness(name, out)
    if json:
        console.print_json(witness_views.identity_json(identity))
    else:
        witness_views.show_identity(identity)


@witness_app.command("serve")
def witness_serve(
    key: Annotated[
        Path, typer.Option("--key", help="The witness key (witness.pem; its .vkey beside it).")
    ],
    log: Annotated[
        list[str],
        typer.Option(
            "--log", metavar="VKEY", help="A log's vkey, or a file holding it (repeat per log)."
        ),
    ],
    state: Annotated[
        Path, typer.Option("--state", help="State file: the latest size and root per log.")
    ],
    listen: Annotated[
        str,
        typer.Option(
            "--listen", metavar="HOST:PORT", help="Address to listen on (port 0: any free port)."
        ),
    ] = "127.0.0.1:7380",
    json: Json = False,
) -> None:
    """Serve POST /add-checkpoint until SIGTERM or SIGINT; print `listening on URL` once ready.

    With --json the ready line is one JSON document: {"listening", "name", "vkey", "logs"}.

    Example: ledger witness serve --key w/witness.pem --log ledger.vkey --state w/state.json --listen 0.0.0.0:7380
    """
    # The server (http.server, socketserver) loads only for this command, not for every `ledger` run.
    from ledger.witness.keys import load_witness
    from ledger.witness.server import Witness, WitnessServer, parse_listen
    from ledger.witness.state import WitnessState

    identity = load_witness(key)
    logs = [Path(v).read_text(encoding="utf-8").strip() if Path(v).is_file() else v for v in log]
    witness_state = WitnessState(state)
    witness = Witness(identity.name, identity.key, logs, witness_state)
    server = WitnessServer(witness, parse_listen(listen), witness_views.request_logger())

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if json:
        origins = sorted(witness.logs)
        witness_views.show_listening_json(server.url, identity.name, identity.vkey, origins)
    else:
        console.show(witness_views.listening(server.url))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        witness_state.close()
