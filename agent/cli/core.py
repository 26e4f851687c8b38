"""Core commands: run the pipeline, run one stage, the demo call, the call log and replay."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from agent.bus import make_bus
from agent.calllog import CallLog, Turn
from agent.cli.app import app, calls_app
from agent.observability import Metrics, configure_logging
from agent.pipeline import STAGE_FACTORIES, TEXT_STAGES, build_stage, with_phrasing
from agent.runner import StageRunner
from agent.settings import Settings, load

# Wide enough for the turn table when output is piped (rich defaults to 80 columns then).
console = Console(width=None if sys.stdout.isatty() else 150)

BusOpt = Annotated[
    Optional[str], typer.Option("--bus", help="'embedded' (default) or kafka://HOST:PORT; env DIANXIAO_BUS")
]
DataDirOpt = Annotated[
    Optional[Path], typer.Option("--data-dir", help="where the embedded log lives (default .dianxiao)")
]
LogOpt = Annotated[Optional[Path], typer.Option("--log", help="call-log file (default DATA_DIR/bus.sqlite)")]


def _settings(bus: str | None = None, data_dir: Path | None = None, **kw: Any) -> Settings:
    s = load(bus=bus, data_dir=data_dir, **kw)
    configure_logging(s.log_level, s.log_format)
    return s


def _install_signal_handlers(stop: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop)
        except (NotImplementedError, RuntimeError):  # not on this platform / not main thread
            pass


async def _run_runners(settings: Settings, names: list[str], member: str | None = None) -> None:
    bus = make_bus(settings)
    await bus.start()
    metrics = Metrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    runners = [StageRunner(build_stage(n, settings), bus, metrics=metrics, member=member) for n in names]
    from agent.testing import silence_watch_for

    watch = silence_watch_for(bus, settings, names)

    def stop() -> None:
        for r in runners:
            r.stop()
        if watch is not None:
            watch.stop()

    _install_signal_handlers(stop)
    try:
        await asyncio.gather(*(r.run() for r in runners), *([watch.run()] if watch else []))
    finally:
        await bus.close()


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help=f"stage to run: {', '.join(STAGE_FACTORIES)}")],
    bus: BusOpt = None,
    data_dir: DataDirOpt = None,
    member: Annotated[Optional[str], typer.Option(help="member name within the consumer group")] = None,
) -> None:
    """Run ONE stage as a consumer-group member (start more copies to scale out).

    SIGTERM/SIGINT: the stage finishes the batch in hand, commits its offsets and exits."""
    settings = _settings(bus, data_dir)
    if name not in STAGE_FACTORIES:
        raise typer.BadParameter(f"unknown stage {name!r}; known: {', '.join(STAGE_FACTORIES)}")
    asyncio.run(_run_runners(settings, [name], member))


@app.command()
def run(
    bus: BusOpt = None,
    data_dir: DataDirOpt = None,
    stages: Annotated[
        Optional[str], typer.Option(help="comma-separated stages (default: the text pipeline nlu,dst,policy,hangup,dtmf)")
    ] = None,
) -> None:
    """Run all stages in one process (embedded bus by default) until SIGTERM/SIGINT."""
    settings = _settings(bus, data_dir)
    names = with_phrasing(stages.split(",") if stages else list(TEXT_STAGES), settings)
    asyncio.run(_run_runners(settings, names))


@app.command()
def record(
    bus: BusOpt = None,
    data_dir: DataDirOpt = None,
    log: LogOpt = None,
) -> None:
    """Copy every topic of a Kafka bus into a call-log file (for `calls`, `replay`, the console).

    Not needed on the embedded bus, whose log already is the call log."""
    from agent.recorder import Recorder

    settings = _settings(bus, data_dir)

    async def go() -> None:
        b = make_bus(settings)
        await b.start()
        metrics = Metrics()  # its port also serves the recorder's /livez and /readyz
        if settings.metrics_port:
            metrics.serve(settings.metrics_port)
        rec = Recorder(b, log or settings.data_dir / "calls.sqlite", health=metrics.health)
        _install_signal_handlers(rec.stop)
        try:
            await rec.run()
        finally:
            await b.close()

    asyncio.run(go())


@app.command()
def call(
    turns: Annotated[list[str], typer.Argument(help="what the caller says, one argument per turn")],
    bus: BusOpt = None,
    data_dir: DataDirOpt = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each reply")] = 10.0,
) -> None:
    """Be the caller of a text call against stages that are already running (`dianxiao run` or
    `dianxiao stage …` on Kafka): each turn is sent as a final transcript, the reply printed."""
    from agent.textcall import run_text_call

    settings = _settings(bus, data_dir)

    async def go() -> None:
        b = make_bus(settings)
        await b.start()
        try:
            result = await run_text_call(b, turns, timeout=timeout, direction="simulated", campaign="cli")
        finally:
            await b.close()
        for said, reply in zip(turns, result.replies):
            console.print(f"[bold]caller[/bold] {said}")
            console.print(f"[bold]bot[/bold]    {reply.text}  [dim]({reply.action})[/dim]")
        if result.agent_ended is not None:
            console.print(f"[dim]the agent ended the call ({result.agent_ended.reason})[/dim]")
        elif result.ended_by_bot:
            console.print("[yellow]the bot said goodbye but no call.ended came: is the hangup stage running?[/yellow]")
        console.print(f"call id: {result.call_id}")

    try:
        asyncio.run(go())
    except asyncio.TimeoutError:
        console.print("[red]no reply in time: are the stages running on this bus?[/red]")
        raise typer.Exit(1) from None


# --- demo ---------------------------------------------------------------------------------

DEMO_SCRIPT = [
    "喂，你好",
    "我想要一个性价比高的云服务器，大概1000并发，还要支持异地备份",
    "那这个的年费是多少？",
    "有点贵啊，能便宜点吗",
    "行吧，那先帮我约个演示，明天下午三点",
]


async def _demo(settings: Settings, script: list[str]) -> tuple[str, list[Turn]]:
    from agent.testing import running_pipeline
    from agent.textcall import run_text_call

    bus = make_bus(settings)
    await bus.start()
    try:
        async with running_pipeline(bus, settings):
            call = await run_text_call(bus, script, direction="simulated", campaign="demo")
    finally:
        await bus.close()
    log = CallLog(settings.log_path)
    try:
        return call.call_id, log.turns(call.call_id)
    finally:
        log.close()


def turn_table(call_id: str, turns: list[Turn], title: str | None = None) -> Table:
    table = Table(title=title or f"call {call_id}", show_lines=True)
    for col in ("turn", "caller said", "intents", "dialogue state", "bot replied", "latency (ms)"):
        table.add_column(col, overflow="fold")
    for t in turns:
        intents = ", ".join(f"{n} {s:.2f}" for n, s in t.intents) + (f"\n[{t.nlu_decided_by}]" if t.intents else "")
        table.add_row(
            str(t.turn),
            (t.caller_text or "") + (" ⚡barge-in" if t.barge_in else ""),
            intents,
            _state_brief(t.state),
            t.reply or "",
            "\n".join(f"{k} {v:.1f}" for k, v in t.latency_ms.items()),
        )
    return table


def _state_brief(state: dict[str, Any] | None) -> str:
    if not state:
        return ""
    slots = state.get("slots", {})
    parts = []
    for k, v in slots.items():
        value = v.get("value", v) if isinstance(v, dict) else v
        parts.append(f"{k}={value}")
    if stage := state.get("stage"):
        parts.insert(0, f"stage={stage}")
    return "\n".join(parts)


@app.command()
def demo(
    data_dir: DataDirOpt = None,
    audio: Annotated[bool, typer.Option("--audio", help="run the call on audio (needs the speech extra)")] = False,
) -> None:
    """Run one complete simulated sales call on the embedded bus and print it turn by turn.

    The call is kept in the call log: `dianxiao calls list` / `calls show` / `replay` find it."""
    settings = _settings("embedded", data_dir)
    configure_logging("WARNING", settings.log_format)  # the table is the output; keep logs quiet
    if audio:
        from agent.audiocall import run_audio_demo  # without the speech extra: agent.errors says so
        call_id = asyncio.run(run_audio_demo(settings))
        log = CallLog(settings.log_path)
        turns = log.turns(call_id)
        log.close()
    else:
        call_id, turns = asyncio.run(_demo(settings, DEMO_SCRIPT))
    console.print(turn_table(call_id, turns, title=f"simulated sales call {call_id} (embedded bus)"))
    console.print(f"call log: {settings.log_path}  ·  replay: dianxiao replay {call_id} --check")


# --- call log -----------------------------------------------------------------------------


def _open_log(log: Path | None, data_dir: Path | None) -> CallLog:
    settings = _settings(None, data_dir)
    path = log or settings.log_path
    if not path.exists():
        console.print(f"[red]no call log at {path}[/red] (run `dianxiao demo` first, or pass --log)")
        raise typer.Exit(1)
    return CallLog(path)


@calls_app.command("list")
def calls_list(
    log: LogOpt = None,
    data_dir: DataDirOpt = None,
    limit: int = typer.Option(20, help="how many calls (newest first)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """List calls in the log, newest first."""
    import datetime as dt

    cl = _open_log(log, data_dir)
    calls = cl.calls(limit=limit)
    cl.close()
    if as_json:
        for c in calls:
            print(json.dumps(c.__dict__, ensure_ascii=False))
        return
    table = Table(title="calls")
    for col in ("call id", "started", "mode", "campaign", "turns", "outcome / end"):
        table.add_column(col)
    for c in calls:
        started = dt.datetime.fromtimestamp(c.started_at).strftime("%Y-%m-%d %H:%M:%S") if c.started_at else "?"
        table.add_row(c.call_id, started, c.mode or "", c.campaign or "", str(c.turns), f"{c.outcome or ''} / {c.end_reason or 'open'}")
    console.print(table)


@calls_app.command("show")
def calls_show(
    call_id: str,
    log: LogOpt = None,
    data_dir: DataDirOpt = None,
    events: bool = typer.Option(False, "--events", help="every event instead of the turn table"),
) -> None:
    """Show one call: its turns (caller / intents / state / reply / per-stage latency)."""
    cl = _open_log(log, data_dir)
    try:
        if events:
            for e in cl.events(call_id, with_bad=True):
                if hasattr(e, "model_dump"):
                    d = e.model_dump(mode="json", exclude={"payload", "audio_pcm16"})
                    print(json.dumps(d, ensure_ascii=False))
                else:
                    print(json.dumps({"bad_row": e.__dict__}, ensure_ascii=False))
            return
        turns = cl.turns(call_id)
    finally:
        cl.close()
    if not turns:
        console.print(f"[red]no call {call_id!r} in the log[/red]")
        raise typer.Exit(1)
    console.print(turn_table(call_id, turns))


@calls_app.command("export")
def calls_export(
    out: Annotated[Path, typer.Argument(help="JSONL file to write ('-' for stdout)")],
    call_id: Annotated[Optional[list[str]], typer.Option("--call", help="call id (repeatable); default all")] = None,
    log: LogOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export calls as JSONL (one event per line), e.g. to keep golden calls."""
    cl = _open_log(log, data_dir)
    ids = call_id or cl.call_ids()
    if str(out) == "-":
        n = cl.export_jsonl(ids, sys.stdout)
    else:
        with out.open("w", encoding="utf-8") as fh:
            n = cl.export_jsonl(ids, fh)
    cl.close()
    print(f"exported {n} events of {len(ids)} calls", file=sys.stderr)


@calls_app.command("import")
def calls_import(
    src: Annotated[Path, typer.Argument(help="JSONL file written by `calls export`")],
    log: LogOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Import exported calls; bad lines are reported by number and the rest imported."""
    settings = _settings(None, data_dir)
    cl = CallLog(log or settings.log_path)
    with src.open("rb") as fh:  # binary: a non-UTF-8 line is reported, not fatal to the rest
        report = cl.import_jsonl(fh, partitions=settings.partitions)
    cl.close()
    if not report.lines:
        from agent.jsonl import EmptyInput

        raise EmptyInput(f"{src}: nothing to import (the file is empty)")
    for number, reason in report.errors:
        print(f"{src}:{number}: {reason}", file=sys.stderr)
    print(f"imported {report.imported} events, skipped {report.skipped} already present, {len(report.errors)} bad lines")
    if report.errors:
        raise typer.Exit(1)


# --- replay -------------------------------------------------------------------------------


@app.command()
def replay(
    call_id: str,
    through: Annotated[str, typer.Option(help="stages to re-run, in flow order")] = "nlu,dst,policy",
    check: Annotated[bool, typer.Option("--check", help="exit 1 when anything changed")] = False,
    playbook: Annotated[Optional[str], typer.Option(help="playbook to replay with")] = None,
    nlu_model: Annotated[Optional[str], typer.Option(help="NLU model dir to replay with")] = None,
    log: LogOpt = None,
    data_dir: DataDirOpt = None,
    as_json: bool = typer.Option(False, "--json", help="print the diff as JSON"),
) -> None:
    """Re-run recorded inputs through the chosen stages and print what changed, turn by turn."""
    from agent.replay import replay_call

    settings = _settings(None, data_dir, playbook=playbook, nlu_model=nlu_model)
    stages = [build_stage(n.strip(), settings) for n in through.split(",") if n.strip()]
    cl = _open_log(log, data_dir)
    try:
        result = replay_call(cl, call_id, stages)
    except LookupError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        cl.close()
    if as_json:
        print(json.dumps([d.__dict__ for d in result.diffs], ensure_ascii=False, default=str))
    else:
        for d in result.diffs:
            mark = "[red]changed[/red]" if d.changes else "[green]same[/green]"
            console.print(f"turn {d.turn} {d.stage:7s} {mark}")
            for line in d.changes:
                console.print(f"    {line}", markup=False)
        console.print(f"{len(result.changed)} of {len(result.diffs)} outputs changed ({result.inputs} inputs replayed)")
    if check and result.changed:
        raise typer.Exit(1)
