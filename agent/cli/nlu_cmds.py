"""`dianxiao nlu TEXT` and `dianxiao eval nlu --data FILE`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from agent.cli.app import app, eval_app


def _understander(model: str | None):
    from agent import settings as settings_mod
    from agent.nlu import load_understander

    return load_understander(model if model is not None else settings_mod.load().nlu_model)


@app.command("nlu")
def nlu_cmd(
    text: str = typer.Argument(..., help="what the caller said"),
    context: list[str] = typer.Option([], "--context", "-c", help="a previous caller turn (repeat; oldest first)"),
    model: str | None = typer.Option(None, "--model", help="trained model dir (default: settings.nlu_model; none = rules)"),
) -> None:
    """Understand one utterance and print intents + entities as JSON."""
    out = _understander(model).understand(text, context)
    typer.echo(json.dumps({
        "text": text,
        "intents": [i.model_dump() for i in out.intents],
        "entities": [e.model_dump() for e in out.entities],
        "decided_by": out.decided_by,
        "version": out.version,
    }, ensure_ascii=False))


@eval_app.command("nlu")
def eval_nlu_cmd(
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False, help="JSONL (or CSV) labelled utterances"),
    model: str | None = typer.Option(None, "--model", help="trained model dir (default: settings.nlu_model; none = rules)"),
    rules: bool = typer.Option(False, "--rules", help="force the rule understander"),
    errors: int = typer.Option(0, "--errors", help="print this many misclassified lines"),
) -> None:
    """Per-intent P/R/F1, micro/macro F1, exact match, entity F1, confusion pairs, latency.
    The last line is one JSON object."""
    from agent.nlu.evaluate import DataError, evaluate, load_examples, report_lines

    try:
        examples = load_examples(data)
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    und = _understander(None if rules else model) if not rules else _rules()
    for line in report_lines(evaluate(und, examples), show_errors=errors):
        typer.echo(line)


def _rules():
    from agent.nlu.rules import RuleUnderstander

    return RuleUnderstander()
