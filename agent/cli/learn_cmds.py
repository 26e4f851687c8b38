"""Learning commands: `dianxiao learn` (+ `learn accept`, `learn sellers`, `learn tag`),
`dianxiao campaign report`, the simulated side of `dianxiao campaign run --arms`, and
`dianxiao outcomes import|serve` (business outcomes from a CRM into the call log)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from agent.cli.app import app

learn_app = typer.Typer(help="Learn the playbook from the best calls (docs/learning.md).", invoke_without_command=True)
outcomes_app = typer.Typer(help="Business outcomes (deal won/lost) from a CRM, joined to calls.", no_args_is_help=True)
app.add_typer(learn_app, name="learn")
app.add_typer(outcomes_app, name="outcomes")

StoreOpt = Annotated[Optional[Path], typer.Option("--playbooks", help="playbook version store (default DATA_DIR/playbooks)")]


def store_dir(store: Path | None) -> Path:
    if store is not None:
        return store
    from agent.settings import load

    return load().data_dir / "playbooks"


@learn_app.callback()
def learn(
    ctx: typer.Context,
    calls: Annotated[Optional[Path], typer.Option("--calls", help="call log (the bot's calls)")] = None,
    transcripts: Annotated[Optional[Path], typer.Option("--transcripts", help="human sellers' transcripts: a .csv/.jsonl file or a folder of them")] = None,
    outcomes: Annotated[Optional[Path], typer.Option("--outcomes", help="CRM export: call_id,outcome,amount,date")] = None,
    playbook: Annotated[str, typer.Option("--playbook", help="the playbook version the proposal changes (NAME@N; NAME: newest)")] = "cloud_saas",
    out: Annotated[Path, typer.Option("--out", help="folder for proposal.yaml and report.html")] = Path("."),
    win: Annotated[str, typer.Option("--win", help="what counts as a win: call (demo/deal on the call), deal (CRM), auto")] = "auto",
    min_n: Annotated[int, typer.Option("--min-n", min=1, help="fewest decisions for a move to be proposed")] = 30,
    skip_unknown_outcomes: Annotated[bool, typer.Option(help="skip CRM outcomes for calls not in the log/transcripts")] = False,
    store: StoreOpt = None,
) -> None:
    """Which moves win per situation (vs the playbook's), a playbook proposal (YAML diff) and an HTML report."""
    if ctx.invoked_subcommand is not None:
        return
    from agent.learning import versions
    from agent.learning.data import LearnInputError, join_outcomes, read_call_log, read_transcripts
    from agent.learning.learn import analyse, write_proposal, write_report
    from agent.outcomes import read_outcomes_csv

    if calls is None and transcripts is None:
        raise LearnInputError("nothing to learn from", hint="pass --calls LOG and/or --transcripts DIR")
    store = store_dir(store)
    name, version = versions.parse_ref(playbook)
    have = versions.versions(store, name)
    ref = f"{name}@{version or (have[-1] if have else 1)}"
    pb = versions.load_version(ref, store)
    raw = versions.raw_of(ref, store)
    records = read_call_log(calls, pb) if calls is not None else []
    if transcripts is not None:
        from agent.learning.campaign import CachedUnderstander
        from agent.nlu import load_understander

        records += read_transcripts(transcripts, pb, CachedUnderstander(load_understander(None)))
    joined = 0
    if outcomes is not None:
        good, bad = read_outcomes_csv(outcomes)
        for line in bad:
            typer.echo(f"skipped: {line}", err=True)
        joined = join_outcomes(records, good, strict=not skip_unknown_outcomes)
    if win == "auto":
        win = "deal" if any(r.business for r in records) else "call"
    if win not in ("call", "deal"):
        raise LearnInputError(f"--win must be call, deal or auto, not {win!r}")
    learned = analyse(records, pb, ref, raw, win_on=win, min_n=min_n)
    out.mkdir(parents=True, exist_ok=True)
    sources = {"calls": str(calls) if calls else None, "transcripts": str(transcripts) if transcripts else None,
               "outcomes": str(outcomes) if outcomes else None, "outcomes_joined": joined}
    write_proposal(learned, raw, out / "proposal.yaml", sources)
    write_report(learned, out / "report.html", str(out / "proposal.yaml"))
    typer.echo(f"{learned.calls} bot calls, {learned.human_calls} human calls; win = {win}")
    for res in learned.situations:
        best = res.proposed
        typer.echo(f"  {res.situation:<22} now {res.current:<16} "
                   + (f"→ propose {best.move} ({best.lift.diff:+.1%}, 95 % CI {best.lift.lo:+.1%} to {best.lift.hi:+.1%}, "
                      f"n={best.n}{', an act the bot never used' if best.move not in learned.bot_acts else ''})"
                      if best and best.lift else "keep"))
    typer.echo(f"proposal: {out / 'proposal.yaml'} ({len(learned.changes)} changes); report: {out / 'report.html'}")
    typer.echo(f"accept with: dianxiao learn accept {out / 'proposal.yaml'}")


@learn_app.command("accept")
def learn_accept(
    proposal: Annotated[Path, typer.Argument(help="proposal.yaml from `dianxiao learn`")],
    store: StoreOpt = None,
) -> None:
    """Write the proposal as the next playbook version (the only way a learned change is used)."""
    from agent.learning.versions import accept

    ref, path = accept(proposal, store_dir(store))
    typer.echo(f"accepted: {ref} written to {path}; use it with --playbook {ref} or in an A/B campaign (--arms)")


@learn_app.command("sellers")
def learn_sellers(
    out: Annotated[Path, typer.Option("--out", help="transcript file to write (.csv or .jsonl)")],
    calls: Annotated[int, typer.Option("--calls", min=1, help="how many calls")] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 202,
) -> None:
    """Simulated top human seller's calls as transcripts (a stand-in for an export of real ones)."""
    from agent.dialogue import load_playbook
    from agent.learning.transcripts import top_seller_calls, write_csv, write_jsonl

    made = top_seller_calls(calls, seed, load_playbook("cloud_saas"))
    (write_jsonl if out.suffix == ".jsonl" else write_csv)(made, out)
    won = sum(c["outcome"] == "demo_booked" for c in made)
    typer.echo(f"{len(made)} calls ({won} demos booked) written to {out}")


@learn_app.command("tag")
def learn_tag(
    calls: Annotated[Optional[Path], typer.Option("--calls", help="call log")] = None,
    transcripts: Annotated[Optional[Path], typer.Option("--transcripts", help="transcript file or folder")] = None,
    limit: Annotated[int, typer.Option(help="calls to show")] = 5,
) -> None:
    """Show the acts both sides made, call by call (what the learner sees)."""
    from agent.dialogue import load_playbook
    from agent.learning.data import LearnInputError, read_call_log, read_transcripts

    pb = load_playbook("cloud_saas")
    if calls is None and transcripts is None:
        raise LearnInputError("nothing to tag", hint="pass --calls LOG or --transcripts FILE")
    records = read_call_log(calls, pb) if calls is not None else []
    if transcripts is not None:
        from agent.nlu import load_understander

        records += read_transcripts(transcripts, pb, load_understander(None))
    for r in records[:limit]:
        typer.echo(f"{r.call_id} [{r.source}, {r.segment}] outcome={r.outcome}")
        typer.echo(f"  seller: {' · '.join(r.seller_acts)}")
        typer.echo(f"  caller: {' · '.join('+'.join(a) for a in r.caller_acts)}")
        for d in r.decisions:
            typer.echo(f"  decision: {d.situation} → {d.move}")


# --- campaigns -----------------------------------------------------------------------------------


def run_arms(arms: str, split: str | None, customers: int | None, seed: int, explore: bool, name: str,
             log: Path | None, crm_out: Path | None, store: Path | None) -> None:
    """`campaign run --arms …` with simulated customers (called from telephony_cmds)."""
    from agent.learning.campaign import CampaignError, parse_arms, run_simulated_campaign
    from agent.learning.versions import load_version

    if not customers:
        raise CampaignError("A/B arms run on simulated customers here: pass --customers N",
                            hint="over SIP every stage would need a per-call playbook, which the policy stage does not take yet")
    store = store_dir(store)
    table = parse_arms(arms, split)
    books = [(a, load_version(a.ref, store)) for a in table]
    log = log or Path(f"{name}.sqlite")
    summary = run_simulated_campaign(books, customers, seed=seed, log=log, name=name, explore=explore, crm_csv=crm_out)
    for arm, c in summary.by_arm.items():
        typer.echo(f"{arm}: {c['calls']} calls, {c['wins']} wins ({c['wins'] / max(c['calls'], 1):.1%}); "
                   + ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in ("calls", "wins")))
    typer.echo(f"{summary.calls} calls in {summary.seconds:.0f} s; call log {log}" + (f"; CRM outcomes {crm_out}" if crm_out else ""))


def _register_report() -> None:
    from agent.cli.telephony_cmds import campaign_app

    @campaign_app.command("report")
    def campaign_report(
        log: Annotated[Path, typer.Option("--log", help="call log of the campaign")],
        campaign: Annotated[Optional[str], typer.Option("--campaign", help="campaign name (default: every call)")] = None,
        on: Annotated[str, typer.Option("--on", help="conversion: call (demo/deal on the call) or deal (CRM)")] = "call",
        alpha: Annotated[float, typer.Option(help="error rate of the sequential test")] = 0.05,
        look_every: Annotated[int, typer.Option(min=1, help="calls between looks of the stop rule")] = 200,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the report as JSON")] = None,
    ) -> None:
        """Conversion per arm with 95 % intervals, and an always-valid sequential test with its stop rule."""
        from agent.learning.abtest import ReportError, report, write_json

        if on not in ("call", "deal"):
            raise ReportError(f"--on must be call or deal, not {on!r}")
        rep = report(log, campaign, on=on, alpha=alpha, look_every=look_every)
        typer.echo(rep.text())
        if json_out is not None:
            write_json(rep, json_out)


_register_report()


# --- outcomes ------------------------------------------------------------------------------------


@outcomes_app.command("import")
def outcomes_import(
    file: Annotated[Path, typer.Argument(help="CSV: call_id,outcome(deal_won|deal_lost),amount,date[,external_id]")],
    log: Annotated[Optional[Path], typer.Option("--log", help="call log (default: the embedded bus file)")] = None,
) -> None:
    """Join a CRM's deal outcomes to the calls in the log (as call.outcome events)."""
    from agent.outcomes import OutcomeError, OutcomeWriter, read_outcomes_csv

    log = log or _default_log()
    good, bad = read_outcomes_csv(file)
    writer = OutcomeWriter(log)
    try:
        rep = writer.write(good, "csv")
    finally:
        writer.close()
    for line in bad + rep.errors:
        typer.echo(f"skipped: {line}", err=True)
    typer.echo(f"{rep.written} outcomes written, {rep.duplicates} already there, {len(bad) + len(rep.errors)} skipped")
    if bad or rep.errors:
        raise OutcomeError(f"{len(bad) + len(rep.errors)} outcome rows were not imported (listed above; the rest were)")


@outcomes_app.command("serve")
def outcomes_serve(
    log: Annotated[Optional[Path], typer.Option("--log", help="call log (default: the embedded bus file)")] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8091,
    secret: Annotated[Optional[str], typer.Option(help="HMAC secret (default DIANXIAO_CRM_WEBHOOK_SECRET)")] = None,
) -> None:
    """The CRM webhook in: POST /outcomes, HMAC-signed (docs/learning.md)."""
    import uvicorn

    from agent.outcomes import webhook_app
    from agent.settings import load

    secret = secret or load().crm_webhook_secret or ""
    uvicorn.run(webhook_app(log or _default_log(), secret), host=host, port=port, log_level="warning")


def _default_log() -> Path:
    from agent.settings import load

    return load().data_dir / "bus.sqlite"


__all__ = ["learn_app", "outcomes_app", "run_arms"]
