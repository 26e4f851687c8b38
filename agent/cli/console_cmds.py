"""`dianxiao console` (serve the QA review console, manage its users) and `dianxiao labels`."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.app import app
from agent.cli.core import DataDirOpt, LogOpt, _settings

console_app = typer.Typer(
    help="The call review console for QA (a web page over the call log).", invoke_without_command=True
)
labels_app = typer.Typer(help="Reviewer labels: export them as training data.", no_args_is_help=True)
app.add_typer(console_app, name="console")
app.add_typer(labels_app, name="labels")

StoreOpt = Annotated[
    Optional[Path], typer.Option("--store", help="console store (users, labels, audit; default DATA_DIR/console.sqlite)")
]


def _open(data_dir: Path | None, log: Path | None, store: Path | None):  # type: ignore[no-untyped-def]
    from agent.console.app import open_console

    settings = _settings(None, data_dir)
    return open_console(settings, log_path=log, store_path=store)


@console_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on (keep 127.0.0.1 unless behind a TLS proxy)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    secure_cookies: Annotated[
        bool, typer.Option("--secure-cookies", help="mark cookies Secure (when served over HTTPS by a proxy)")
    ] = False,
    data_dir: DataDirOpt = None,
    log: LogOpt = None,
    store: StoreOpt = None,
) -> None:
    """Serve the console on http://HOST:PORT (default 127.0.0.1:8080) over the call log."""
    ctx.ensure_object(dict)
    ctx.obj.update(data_dir=data_dir, log=log, store=store)
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from agent.console.app import create_app

    con = _open(data_dir, log, store)
    if not con.store.users():
        typer.echo("no users yet: run `dianxiao console create-user ADMIN --role admin` first", err=True)
        raise typer.Exit(1)
    con.secure_cookies = secure_cookies
    typer.echo(f"indexing the call log {con.log.path} …", err=True)
    con.sync()
    typer.echo(f"console on http://{host}:{port}  (log {con.log.path}, store {con.store.path})", err=True)
    uvicorn.run(create_app(con), host=host, port=port, log_level="warning")


@console_app.command("create-user")
def create_user(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="viewer, reviewer or admin")] = "admin",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin (for scripts) instead of a prompt")
    ] = False,
) -> None:
    """Create a user (or reset its password and role); the first one should be an admin."""
    from agent.console.store import ConsoleStore, StoreError

    settings = _settings(None, ctx.obj.get("data_dir"))
    store = ConsoleStore(ctx.obj.get("store") or settings.data_dir / "console.sqlite")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            typer.echo("the passwords differ", err=True)
            raise typer.Exit(1)
    try:
        store.set_user(username, password, role)  # type: ignore[arg-type]
    except StoreError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    store.close()
    typer.echo(f"user {username} ({role}) saved in {store.path}")


@labels_app.command("export")
def labels_export(
    kind: Annotated[str, typer.Option("--for", help="'nlu' (JSONL for NLU training) or 'asr' (manifest + WAVs)")],
    out: Annotated[
        Optional[Path], typer.Option("--out", help="nlu: the JSONL file (default labels-nlu.jsonl); asr: a folder (default labels-asr/)")
    ] = None,
    data_dir: DataDirOpt = None,
    log: LogOpt = None,
    store: StoreOpt = None,
) -> None:
    """Export reviewers' labels in the formats the NLU and ASR training pipelines read."""
    from agent.labels import export_asr, export_nlu

    con = _open(data_dir, log, store)
    if kind == "nlu":
        path = out or Path("labels-nlu.jsonl")
        n = export_nlu(con.labels, con.log, path)
        typer.echo(f"wrote {n} NLU examples to {path}")
    elif kind == "asr":
        path = out or Path("labels-asr")
        n = export_asr(con.labels, con.log, path)
        typer.echo(f"wrote {n} clips and {path / 'manifest.jsonl'}")
    else:
        raise typer.BadParameter("--for is 'nlu' or 'asr'")
