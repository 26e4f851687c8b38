"""Telephony commands: `dianxiao sip serve`, `ws serve`, `mqtt bridge`, `campaign run`."""

from __future__ import annotations

import asyncio
import hashlib
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from agent.bus import make_bus
from agent.cli.app import app
from agent.observability import configure_logging
from agent.pipeline import AUDIO_STAGES, TEXT_STAGES
from agent.settings import Settings, load
from agent.testing import running_pipeline

console = Console()
sip_app = typer.Typer(help="The agent as a SIP user agent (RTP, G.711).", no_args_is_help=True)
ws_app = typer.Typer(help="Cloud media-stream websockets (Twilio, Telnyx).", no_args_is_help=True)
mqtt_app = typer.Typer(help="MQTT edge link for store devices.", no_args_is_help=True)
campaign_app = typer.Typer(help="Outbound calling campaigns.", no_args_is_help=True)
app.add_typer(sip_app, name="sip")
app.add_typer(ws_app, name="ws")
app.add_typer(mqtt_app, name="mqtt")
app.add_typer(campaign_app, name="campaign")

BusOpt = Annotated[Optional[str], typer.Option("--bus", help="'embedded' (default) or kafka://HOST:PORT")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="where the embedded log lives")]
PipelineOpt = Annotated[
    str,
    typer.Option("--pipeline", help="stages to run in this process: 'audio' (VAD..TTS), 'echo' (line test), "
                                    "'text' (campaign dry runs) or 'none' (stages run elsewhere, e.g. `dianxiao stage`)"),
]


def _settings(**kw: Any) -> Settings:
    s = load(**kw)
    configure_logging(s.log_level, s.log_format)
    return s


def _stages(pipeline: str) -> list[Any]:
    if pipeline == "audio":
        return list(AUDIO_STAGES)
    if pipeline == "text":
        return list(TEXT_STAGES)
    if pipeline == "echo":
        from connectors.echo import EchoStage

        return [EchoStage()]
    if pipeline == "none":
        return []
    raise typer.BadParameter(f"--pipeline must be audio, echo, text or none, not {pipeline!r}")


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()


# One registry per process: the connector's admission counters and the stages' metrics are
# served together on DIANXIAO_METRICS_PORT.
_METRICS: Any = None


async def _serve(settings: Settings, pipeline: str, make_connector: Any) -> None:
    from agent.health import heartbeat
    from agent.observability import Metrics

    # The media thread (RTP pacing every 20 ms) gets the GIL back within 1 ms of asking instead
    # of CPython's 5 ms: with two ASR workers and the VAD busy in Python, 5 ms switches let the
    # bot's audio stutter at 10 calls (bench/bench_telephony.py always ran with this).
    import sys

    sys.setswitchinterval(0.001)
    metrics = _METRICS or Metrics()  # its port serves the connector's /livez and /readyz (agent/health.py)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    probe = metrics.health.component("connector")
    bus = make_bus(settings)
    await bus.start()
    try:
        async with AsyncExitStack() as stack:
            stages = _stages(pipeline)
            if stages:
                await stack.enter_async_context(running_pipeline(bus, settings, stages, metrics=metrics))
            await stack.enter_async_context(make_connector(bus))
            probe.started()  # serving: the connector is listening and its bus is up
            beating = asyncio.create_task(heartbeat(probe))
            await _until_stopped()
            probe.stopped()
            beating.cancel()
    finally:
        await bus.close()


@sip_app.command("serve")
def sip_serve(
    host: Annotated[Optional[str], typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="SIP UDP port (default 5060)")] = None,
    pipeline: PipelineOpt = "audio",
    bus: BusOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Answer SIP calls: each call's audio goes to audio.in, the bot's audio.out comes back as RTP."""
    from connectors.sip.agent import SipAgent, SipAgentConfig
    from connectors.threaded import ThreadedConnector

    settings = _settings(bus=bus, data_dir=data_dir, sip_host=host, sip_port=port)
    global _METRICS
    from agent.observability import Metrics

    _METRICS = Metrics()
    # Admission control only where this process runs the speech stages: their CPU is what the
    # capacity measures (a connector in front of remote stages is limited by those, not here).
    max_calls = settings.call_capacity if pipeline == "audio" else settings.max_calls
    config = SipAgentConfig(host=settings.sip_host, port=settings.sip_port, user=settings.sip_user,
                            rtp_timeout_s=settings.sip_rtp_timeout_s, max_calls=max_calls,
                            retry_after_s=settings.retry_after_s)
    from agent.machine import machine

    # The capacity that holds depends on the CPU (a 2-core AVX2-only box carries 2-3 calls within
    # the latency bars, an AVX-512 one ~10: docs/telephony.md): say which CPU this is.
    m = machine()
    console.print(f"SIP agent on udp:{config.host}:{config.port}, pipeline={pipeline}, "
                  f"capacity {max_calls or 'unlimited'} calls on {m['cpu']} ({m['cores']} cores, "
                  f"{'+'.join(m['simd']) or 'no AVX2'}); Ctrl-C stops")

    def sip_agent(b: Any, bridge: Any) -> SipAgent:
        agent = SipAgent(b, config, bridge=bridge)
        agent.metrics = _METRICS
        return agent

    # SIP and RTP on their own thread: the speech stages' CPU work must not stall the 20 ms clock
    asyncio.run(_serve(settings, pipeline, lambda b: ThreadedConnector(b, "sip", lambda bridge: sip_agent(b, bridge))))


@ws_app.command("serve")
def ws_serve(
    provider: Annotated[str, typer.Option(help="'twilio' or 'telnyx'")] = "twilio",
    host: Annotated[Optional[str], typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default 8765)")] = None,
    pipeline: PipelineOpt = "audio",
    bus: BusOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve a provider's media-stream websocket (needs DIANXIAO_WS_TOKEN or DIANXIAO_TWILIO_AUTH_TOKEN).

    Capacity as for `sip serve`: with --pipeline audio, DIANXIAO_MAX_CALLS streams at once (0 = 5
    per CPU core, measured); otherwise DIANXIAO_MAX_CALLS (0 = no limit).  Past it a new stream
    gets HTTP 503 with Retry-After (DIANXIAO_RETRY_AFTER_S) before the upgrade: the provider
    sees the far end busy.
    """
    from agent.observability import Metrics
    from connectors.websocket.server import MediaStreamConfig, MediaStreamServer

    settings = _settings(bus=bus, data_dir=data_dir, ws_host=host, ws_port=port)
    # Admission control as in `sip serve`: the measured capacity where this process runs the
    # speech stages, else only an explicit DIANXIAO_MAX_CALLS.
    max_calls = settings.call_capacity if pipeline == "audio" else settings.max_calls
    config = MediaStreamConfig(provider=provider, host=settings.ws_host, port=settings.ws_port,
                               token=settings.ws_token, twilio_auth_token=settings.twilio_auth_token,
                               public_url=settings.ws_public_url, max_calls=max_calls,
                               retry_after_s=settings.retry_after_s)
    try:
        MediaStreamServer(make_bus(settings), config)  # validates the config (auth is required)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    global _METRICS
    _METRICS = Metrics()
    console.print(f"{provider} media streams on ws://{config.host}:{config.port}, pipeline={pipeline}, "
                  f"capacity {max_calls or 'unlimited'} calls; Ctrl-C stops")

    def media_server(b: Any) -> MediaStreamServer:
        server = MediaStreamServer(b, config)
        server.metrics = _METRICS
        return server

    asyncio.run(_serve(settings, pipeline, media_server))


@mqtt_app.command("bridge")
def mqtt_bridge(
    host: Annotated[Optional[str], typer.Option(help="broker host (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="broker port (default 1883)")] = None,
    local_broker: Annotated[bool, typer.Option(help="start a mosquitto on 127.0.0.1 for this run")] = False,
    pipeline: PipelineOpt = "text",
    bus: BusOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Link store devices over MQTT: their call events in, the agent's commands out."""
    from connectors.mqtt.broker import local_mosquitto
    from connectors.mqtt.edge import EdgeConfig, EdgeLink

    settings = _settings(bus=bus, data_dir=data_dir, mqtt_host=host, mqtt_port=port)

    def link(b: Any) -> EdgeLink:
        return EdgeLink(b, EdgeConfig(host=settings.mqtt_host, port=settings.mqtt_port,
                                      username=settings.mqtt_username, password=settings.mqtt_password))

    if local_broker:
        with local_mosquitto(settings.data_dir / "mosquitto", port=settings.mqtt_port, limit_s=24 * 3600):
            console.print(f"mosquitto on 127.0.0.1:{settings.mqtt_port}; Ctrl-C stops")
            asyncio.run(_serve(settings, pipeline, link))
    else:
        asyncio.run(_serve(settings, pipeline, link))


# --- campaigns ---------------------------------------------------------------------------------

_DRY_RUN_CUSTOMERS = [
    "no_answer",
    "busy",
    ["云服务器多少钱", "好的，可以安排演示"],
    ["现在没空，明天下午三点再打给我吧"],
    ["你好", "不需要，谢谢"],
    ["你好", "不要再给我打电话了"],
]


def _dry_run_customer(lead: Any, attempt: int) -> Any:
    """A deterministic pretend customer per number (busy lines answer on a later attempt)."""
    pick = _DRY_RUN_CUSTOMERS[int(hashlib.sha1(lead.phone.encode()).hexdigest(), 16) % len(_DRY_RUN_CUSTOMERS)]
    if pick == "busy" and attempt > 1:
        return _DRY_RUN_CUSTOMERS[2]
    return pick


def _progress_table(name: str, p: Any) -> Table:
    table = Table(title=f"campaign {name}", show_header=True)
    for col in ("leads", "finished", "dialling", "waiting", "attempts", *sorted(p.outcomes)):
        table.add_column(col, justify="right")
    table.add_row(str(p.total), str(p.finished), str(p.dialling), str(p.waiting_for_hours), str(p.attempts),
                  *(str(p.outcomes[k]) for k in sorted(p.outcomes)))
    return table


@campaign_app.command("run")
def campaign_run(
    leads_csv: Annotated[Optional[Path], typer.Argument(help="CSV: phone,name,product_interest,timezone", exists=True)] = None,
    max_concurrent: Annotated[int, typer.Option(min=1, help="calls up at once")] = 20,
    name: Annotated[Optional[str], typer.Option(help="campaign name (default: the CSV's name)")] = None,
    hours: Annotated[str, typer.Option(help="calling window in each lead's local time")] = "09:00-20:00",
    weekdays: Annotated[Optional[str], typer.Option(help="days to call, Monday=0: '0-4' or '0,2,4' (default all)")] = None,
    dnc: Annotated[Optional[Path], typer.Option(help="do-not-call list (one number a line); grown by 'never call again'")] = None,
    out: Annotated[Optional[Path], typer.Option(help="outcomes CSV (default: NAME-outcomes.csv)")] = None,
    max_attempts: Annotated[int, typer.Option(min=1, help="tries per lead on busy/no answer")] = 3,
    retry_after_s: Annotated[float, typer.Option(help="first retry delay; doubles each time")] = 600.0,
    simulate: Annotated[bool, typer.Option(help="dry run: scripted customers over the text pipeline, no telephony")] = False,
    pipeline: PipelineOpt = "audio",
    bus: BusOpt = None,
    data_dir: DataDirOpt = None,
    arms: Annotated[Optional[str], typer.Option(help="A/B: playbook versions, e.g. cloud_saas@1,cloud_saas@2 (leads split by a hash of the lead id)")] = None,
    split: Annotated[Optional[str], typer.Option(help="A/B shares per arm, e.g. 50/50 (default equal)")] = None,
    customers: Annotated[Optional[int], typer.Option(help="with --arms: this many simulated stochastic customers (docs/learning.md)")] = None,
    seed: Annotated[int, typer.Option(help="simulated customers' seed (another seed: other, held-out customers)")] = 1,
    explore: Annotated[bool, typer.Option(help="with --arms: a random move per objection in each call (data to learn from)")] = False,
    log: Annotated[Optional[Path], typer.Option(help="with --arms: call log to write (default NAME.sqlite)")] = None,
    crm_out: Annotated[Optional[Path], typer.Option(help="with --arms: write the simulated CRM's deal outcomes here (CSV)")] = None,
    playbooks: Annotated[Optional[Path], typer.Option("--playbooks", help="playbook version store (default DATA_DIR/playbooks)")] = None,
) -> None:
    """Dial a list of leads, live progress on screen, one outcome per lead (CSV + CRM webhook)."""
    if arms is not None or customers is not None:
        from agent.cli.learn_cmds import run_arms

        run_arms(arms or "cloud_saas", split, customers, seed, explore, name or "campaign", log, crm_out, playbooks)
        return
    if leads_csv is None:
        raise typer.BadParameter("name the leads CSV (or use --arms … --customers N for a simulated A/B campaign)")
    from connectors.campaign.crm import CrmWebhook, OutcomeCsv
    from connectors.campaign.leads import read_leads
    from connectors.campaign.policy import CallingHours, DoNotCallList, RetryPolicy
    from connectors.campaign.runner import CampaignConfig, CampaignRunner, FastForwardClock

    settings = _settings(bus=bus, data_dir=data_dir)
    try:
        leads, bad = read_leads(leads_csv)
        window = CallingHours.parse(hours, weekdays)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    for row in bad:
        console.print(f"{leads_csv}:{row.line}: skipped: {row.reason}", style="yellow", markup=False)
    if not leads:
        from agent.jsonl import EmptyInput

        raise EmptyInput(f"{leads_csv}: no lead to dial" + (f" (all {len(bad)} rows are bad)" if bad else ""))
    do_not_call = DoNotCallList.load(dnc)
    for line, reason in do_not_call.bad:
        console.print(f"{dnc}:{line}: not on the do-not-call list: {reason}", style="yellow", markup=False)
    name = name or leads_csv.stem
    out = out or leads_csv.with_name(f"{name}-outcomes.csv")
    if not simulate and pipeline == "audio" and max_concurrent > settings.call_capacity:
        # The dialler paces to what the agent can serve: a call dialled past capacity would be
        # answered by a customer and then left waiting for the bot.
        console.print(f"--max-concurrent {max_concurrent} is above this agent's capacity; dialling at most "
                      f"{settings.call_capacity} at once (DIANXIAO_MAX_CALLS)", style="yellow", markup=False)
        max_concurrent = settings.call_capacity
    config = CampaignConfig(name=name, max_concurrent=max_concurrent, hours=window, dnc_path=dnc,
                            retry=RetryPolicy(max_attempts=max_attempts, base_s=retry_after_s))
    if not simulate and not settings.sip_trunk:
        console.print("[red]set DIANXIAO_SIP_TRUNK=HOST:PORT (the trunk/registrar to dial through), or use --simulate[/red]")
        raise typer.Exit(2)

    async def main() -> list[Any]:
        b = make_bus(settings)
        await b.start()
        csv_out = OutcomeCsv(out)
        webhook = (CrmWebhook(settings.crm_webhook_url, settings.crm_webhook_secret or "", settings.data_dir / "crm-outbox.sqlite")
                   if settings.crm_webhook_url else None)
        stop = asyncio.Event()
        try:
            async with AsyncExitStack() as stack:
                stages = _stages("text" if simulate and pipeline == "audio" else pipeline)
                if stages:
                    await stack.enter_async_context(running_pipeline(b, settings, stages))
                if simulate:
                    from agent.textcall import ReplyWaiter
                    from connectors.campaign.runner import SimulatedDialer

                    waiter = await stack.enter_async_context(ReplyWaiter(b))
                    dialer: Any = SimulatedDialer(b, _dry_run_customer, waiter, campaign=name)
                    clock: Any = FastForwardClock(real_limit_s=0.5)  # skip waits: it is a dry run
                    config.retry = RetryPolicy(max_attempts=max_attempts, base_s=min(retry_after_s, 0.2))
                else:
                    from connectors.campaign.runner import ReplyActions, SipDialer
                    from connectors.sip.agent import SipAgent, SipAgentConfig

                    agent = await stack.enter_async_context(SipAgent(b, SipAgentConfig(
                        host=settings.sip_host, port=settings.sip_port, user=settings.sip_user,
                        rtp_timeout_s=settings.sip_rtp_timeout_s), campaign=name))
                    actions = await stack.enter_async_context(ReplyActions(b))
                    auth = (settings.sip_user, settings.sip_password) if settings.sip_password else None
                    dialer = SipDialer(agent, _hostport(settings.sip_trunk or ""), actions, auth=auth)
                    clock = None
                delivery = asyncio.create_task(webhook.run(stop)) if webhook else None
                with Live(_progress_table(name, _blank(len(leads))), console=console, refresh_per_second=4) as live:
                    runner = CampaignRunner(leads, dialer, config, dnc=do_not_call, csv_out=csv_out,
                                            webhook=webhook, clock=clock,
                                            on_progress=lambda p: live.update(_progress_table(name, p)))
                    records = await runner.run()
                stop.set()
                if delivery is not None:
                    await delivery
                    if webhook is not None and webhook.pending():
                        console.print(f"[yellow]{webhook.pending()} outcomes not yet accepted by the CRM; kept in "
                                      f"{settings.data_dir / 'crm-outbox.sqlite'} for the next run[/yellow]")
                return records
        finally:
            csv_out.close()
            if webhook is not None:
                webhook.close()
            await b.close()

    records = asyncio.run(main())
    console.print(f"{len(records)} leads finished; outcomes in {out}")


def _blank(total: int) -> Any:
    from connectors.campaign.runner import Progress

    return Progress(total=total)


__all__ = ["sip_app", "ws_app", "mqtt_app", "campaign_app"]
