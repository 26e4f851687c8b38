"""The typer apps every command module registers on (kept apart to avoid import cycles), and
the options that apply to every command (--version, --debug)."""

import importlib.metadata
from typing import Annotated

import typer

app = typer.Typer(
    name="dianxiao",
    help="dianxiao (电销): an event-driven telephony voice agent for Chinese sales calls.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
calls_app = typer.Typer(help="Browse, export and import the call log.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate NLU, dialogue, ASR and spoken understanding.", no_args_is_help=True)
app.add_typer(calls_app, name="calls")
app.add_typer(eval_app, name="eval")

_debug = False


def debug_requested() -> bool:
    return _debug


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dianxiao {importlib.metadata.version('dianxiao')}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="show the full traceback of an error (also DIANXIAO_DEBUG=1)")
    ] = False,
) -> None:
    global _debug
    _debug = debug
