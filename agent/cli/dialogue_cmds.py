"""`dianxiao eval dialogue` (simulated callers) and `dianxiao eval dst` (scripted state tracking)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import typer

from agent.cli.app import eval_app


def _understander(model: str | None):
    from agent import settings as settings_mod
    from agent.nlu import load_understander

    return load_understander(model if model is not None else settings_mod.load().nlu_model)


def _playbook(name: str | None):
    from agent import settings as settings_mod
    from agent.dialogue import PlaybookError, load_playbook

    try:
        return load_playbook(name or settings_mod.load().playbook)
    except PlaybookError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@eval_app.command("dialogue")
def eval_dialogue_cmd(
    calls: int = typer.Option(500, "--calls", min=1, help="simulated calls, spread over all personas"),
    playbook: str | None = typer.Option(None, "--playbook", help="playbook name or path (default: settings)"),
    persona: list[str] = typer.Option([], "--persona", help="only these personas (repeatable)"),
    seed: int = typer.Option(0, "--seed", help="first random seed (call i uses seed+i)"),
    bus: bool = typer.Option(False, "--bus", help="run calls over the real topics on an embedded bus (slower)"),
    model: str | None = typer.Option(None, "--nlu-model", help="trained NLU model dir (default: settings)"),
    show: int = typer.Option(3, "--show", help="print this many failed calls turn by turn"),
    noise: float = typer.Option(0.3, "--asr-noise", min=0.0, max=1.0,
                                help="share of caller turns written as ASR output (no punctuation, numbers as words)"),
) -> None:
    """Simulated callers (personas with goals) talk to the agent: completion rate, average turns,
    joint goal accuracy at call end, compliance violations, failures by reason.  The last line is
    one JSON object."""
    from agent.simulator import PERSONAS, make_caller, simulate_call, summarise

    pb = _playbook(playbook)
    chosen = persona or list(PERSONAS)
    unknown = sorted(set(chosen) - set(PERSONAS))
    if unknown:
        typer.echo(f"error: unknown persona(s) {unknown}; known: {', '.join(PERSONAS)}", err=True)
        raise typer.Exit(2)
    callers = [make_caller(chosen[i % len(chosen)], pb, seed + i, noise=noise) for i in range(calls)]
    t0 = time.perf_counter()
    if bus:
        results = asyncio.run(_on_bus(callers, pb, model))
    else:
        understander = _understander(model)
        results = [simulate_call(c, pb, understander, call_id=f"sim-{i}") for i, c in enumerate(callers)]
    elapsed = time.perf_counter() - t0
    summary = summarise(results)
    summary.update(playbook=f"{pb.name}@{pb.version}", mode="bus" if bus else "in-process", asr_noise=noise,
                   seconds=round(elapsed, 2))
    typer.echo(f"calls {summary['calls']}  completion {summary['completion_rate']:.1%}  "
               f"avg turns {summary['avg_turns']}  JGA {summary['jga'] if summary['jga'] is not None else 'n/a'}  "
               f"compliance violations {summary['compliance_violations']}  ({elapsed:.1f} s)")
    for name, p in summary["by_persona"].items():
        typer.echo(f"  {name:22s} {p['calls']:4d} calls  completion {p['completion']:.1%}")
    if summary["failures"]:
        typer.echo("failures by reason:")
        for reason, n in summary["failures"].items():
            typer.echo(f"  {n:4d}  {reason}")
    for r in [r for r in results if not r.completed or r.slot_errors][:show]:
        typer.echo(f"--- {r.persona}: {r.failure or 'completed'} {r.violations or ''} {r.slot_errors or ''}")
        for t in r.turns:
            typer.echo(f"  caller: {t.caller}\n  bot:    {t.bot}  [{t.action}]")
    typer.echo(json.dumps(summary, ensure_ascii=False))


async def _on_bus(callers, pb, model):
    import tempfile

    from agent.bus import EmbeddedBus
    from agent.settings import Settings
    from agent.simulator import simulate_call_on_bus
    from agent.simulator.driver import judge_final_states
    from agent.testing import running_pipeline
    from agent.textcall import ReplyWaiter

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), playbook=pb.name, nlu_model=model)
        bus = EmbeddedBus(Path(tmp) / "bus.sqlite")
        await bus.start()
        try:
            async with running_pipeline(bus, settings):
                async with ReplyWaiter(bus) as waiter:
                    results = [await simulate_call_on_bus(c, pb, bus, waiter=waiter) for c in callers]
            await judge_final_states(bus, results)
            return results
        finally:
            await bus.close()


@eval_app.command("dst")
def eval_dst_cmd(
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False, help="JSONL caller scripts"),
    playbook: str | None = typer.Option(None, "--playbook", help="playbook name or path (default: settings)"),
    model: str | None = typer.Option(None, "--nlu-model", help="trained NLU model dir (default: settings)"),
    show: int = typer.Option(20, "--show", help="print at most this many failing scripts"),
) -> None:
    """Caller scripts through NLU + dialogue state tracking: joint goal accuracy, per-slot
    accuracy and the failing scripts.  The last line is one JSON object with `jga` and
    `slot_accuracy`."""
    from agent.dialogue.evaluate import ScriptError, evaluate, load_scripts, metrics

    try:
        scripts = load_scripts(data)
    except ScriptError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    pb = _playbook(playbook)
    results, latencies = evaluate(scripts, _understander(model), pb)
    m = metrics(results, latencies)
    typer.echo(f"scripts {m['scripts']}  JGA {m['jga']:.3f}  active-intent accuracy {m['active_intent_accuracy']}")
    for slot, acc in m["slot_accuracy"].items():
        typer.echo(f"  {slot:14s} {acc:.3f}")
    failing = [r for r in results if not r.joint or not r.intents_ok]
    if failing:
        typer.echo(f"failing scripts ({len(failing)}):")
    for r in failing[:show]:
        wrong = [s for s, ok in r.slot_ok.items() if not ok]
        typer.echo(f"  line {r.script.line}: {' / '.join(r.script.turns)}")
        typer.echo(f"    wrong slots {wrong}; expected {json.dumps(r.script.expected_slots, ensure_ascii=False)}; "
                   f"got {json.dumps(r.final, ensure_ascii=False)}"
                   + ("" if r.intents_ok else f"; intents expected {r.script.expected_active_intents} got {r.active_intents}"))
    typer.echo(json.dumps(m, ensure_ascii=False))
