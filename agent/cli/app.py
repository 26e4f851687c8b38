"""The typer apps every command module registers on (kept apart to avoid import cycles)."""

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
