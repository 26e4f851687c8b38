"""One way to configure dianxiao: pydantic-settings (env vars `DIANXIAO_*`, then an optional
TOML file named by `DIANXIAO_CONFIG` or `./dianxiao.toml`, then defaults).  CLI flags override
by constructing Settings with explicit values.

A misspelt name is an error, not a silently ignored line: unknown TOML keys and DIANXIAO_*
variables that match no setting are rejected with the closest valid name."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agent.errors import ConfigError, did_you_mean

ENV_PREFIX = "DIANXIAO_"
# DIANXIAO_* variables that are read outside Settings, so are not settings themselves.
# Read before any settings exist: where the settings file is, tracebacks on, and where derived
# model files (merged NLU layers, INT8 layers built at first use) are cached (agent/nlu/encoder.py).
_NOT_SETTINGS = {"DIANXIAO_CONFIG", "DIANXIAO_DEBUG", "DIANXIAO_CACHE"}


def _config_file() -> Path:
    # The one place that reads the environment outside pydantic-settings: where the file is.
    named = os.environ.get("DIANXIAO_CONFIG")
    if named and not Path(named).is_file():
        # An explicitly named file that is not there would otherwise be silently skipped.
        raise ConfigError(f"DIANXIAO_CONFIG names {named}, which is not a file",
                          hint="point DIANXIAO_CONFIG at your TOML file, or unset it")
    return Path(named or "dianxiao.toml")


class _TomlSource(TomlConfigSettingsSource):
    """The TOML file, with the two mistakes people make reported by file and line or key."""

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path) -> None:
        super().__init__(settings_cls, toml_file=toml_file)
        fields = settings_cls.model_fields
        for key in self.toml_data:
            if key not in fields:
                raise ConfigError(f"unknown setting {key!r} in {toml_file}{did_you_mean(key, fields)}",
                                  hint="fix or remove that line (the settings are listed in agent/settings.py)")

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            return super()._read_file(file_path)
        except tomllib.TOMLDecodeError as exc:  # its message names the line and column
            raise ConfigError(f"{file_path} is not valid TOML: {exc}",
                              hint="fix the syntax (strings need quotes, one key = value per line)") from None


def _check_env_names(fields: Iterable[str]) -> None:
    """pydantic-settings only looks up the variables it knows, so DIANXIAO_PLAYBOK would be
    ignored without a word; reject it instead, naming the closest real one."""
    valid = {ENV_PREFIX + f.upper() for f in fields}
    for name in os.environ:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in valid and upper not in _NOT_SETTINGS:
            raise ConfigError(f"unknown setting in the environment: {name}{did_you_mean(upper, valid)}",
                              hint="rename it to the setting you meant, or unset it")


class Settings(BaseSettings):
    # extra="forbid": an unknown key from any source (TOML, or a typo in code passing a
    # keyword) fails instead of being dropped; _TomlSource reports the TOML case first, readably.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    bus: str = Field(
        default="embedded",
        description="'embedded' (SQLite log under data_dir) or 'kafka://HOST:PORT[,HOST:PORT]'",
    )
    data_dir: Path = Field(default=Path(".dianxiao"), description="where the embedded log and models live")
    partitions: int = Field(default=4, ge=1, description="partitions per topic (embedded and new Kafka topics)")
    kafka_idempotent: bool = Field(
        default=True,
        description="idempotent producer (Apache Kafka/Redpanda); set false for brokers without it (Tansu)",
    )
    kafka_topic_prefix: str = Field(default="", description="prefix for every Kafka topic name")
    kafka_replication: int = Field(default=1, ge=1)
    kafka_session_timeout_ms: int = Field(
        default=10000, ge=100, description="a group member silent this long is dropped (its partitions move)"
    )
    kafka_heartbeat_interval_ms: int = Field(default=3000, ge=10, description="below a third of the session timeout")
    kafka_broker_timeout_s: float = Field(
        default=30.0, gt=0, description="an unreachable broker becomes an error after this long (no endless hang)"
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=50, ge=1, description="consumer fetch long-poll; Tansu waits it out on every hop (Kafka does not)"
    )
    playbook: str = Field(default="cloud_saas", description="playbook name (agent/data/playbooks/NAME.yaml) or path")
    nlu_model: str | None = Field(
        default=None,
        description="none = the shipped joint model ('joint'); 'rules'; a joint adapter (.npz or its folder); an "
                    "ensemble of adapters (ensemble.json or its folder, pipelines/nlu_ensemble.py); an ONNX intent-model folder",
    )
    llm_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) to phrase replies; none = templates"
    )
    llm_model: str = Field(default="qwen2.5-1.5b-instruct", description="model name sent to the LLM endpoint")
    llm_timeout_s: float = Field(default=1.5, gt=0, description="LLM phrasing timeout; the template is used after it")
    llm_api_key: str | None = Field(default=None, description="bearer token for the LLM endpoint, if it needs one")
    log_level: str = "INFO"
    log_format: str = Field(default="console", description="'json' or 'console'")
    metrics_port: int | None = Field(default=None, description="serve Prometheus metrics on this port")
    # --- speech (agent/speech, docs/speech.md) ---
    models_dir: Path | None = Field(default=None, description="where speech models live; default data_dir/models")
    asr_engine: str = Field(default="faster-whisper", description="'faster-whisper' or 'package.module:factory'")
    asr_model: str = Field(
        default="whisper-base",
        description="'whisper-base' (ships offline), a faster-whisper model dir, or a hub name (small, large-v3)",
    )
    asr_compute_type: str = Field(default="int8", description="CTranslate2 compute type (int8, int8_float16, float16)")
    asr_device: str = Field(default="cpu", description="'cpu' or 'cuda'")
    asr_threads: int = Field(default=2, ge=1, description="CPU threads for decoding, shared by the ASR workers")
    asr_workers: int = Field(
        default=0, ge=0,
        description="decodes in parallel (different calls), each on asr_threads // workers threads; 0 = one per "
                    "CPU core (CTranslate2 inter_threads); on CUDA the workers' segments are decoded as one batch",
    )
    asr_beam_size: int = Field(default=5, ge=1)
    asr_language: str = Field(default="zh")
    asr_correction: bool = Field(
        default=True,
        description="correct near-homophones of playbook/lexicon terms in final transcripts (pinyin, guarded)",
    )
    asr_nbest: int = Field(
        default=5, ge=1, le=10,
        description="Whisper hypotheses kept per final transcript; with asr_correction the one with the most "
                    "domain terms / an understood request wins (agent/asrfix/rescore.py); 1 = first only",
    )
    asr_short_window: bool = Field(default=True, description="encoder window sized to the utterance (fast); false = 30 s")
    asr_hotwords: list[str] = Field(default_factory=list, description="extra ASR hot-words (the playbook's terms are added)")
    asr_initial_prompt: str = Field(default="", description="sentence appended to the hot-word prompt")
    asr_playbook_hotwords: bool = Field(
        default=False, description="prompt Whisper with the playbook's terms (measured: hurts CER on general speech)"
    )
    vad_model: Path | None = Field(default=None, description="silero_vad.onnx; default: from the pipecat-ai wheel")
    turn_model: Path | None = Field(default=None, description="Smart Turn v3 ONNX; default: from the pipecat-ai wheel")
    turn_smart: bool = Field(default=True, description="use Smart Turn for end of turn (else silence only)")
    turn_max_silence_ms: int = Field(default=1200, ge=200, description="end the turn after this much silence")
    turn_smart_early: bool = Field(
        default=False,
        description="also ask Smart Turn at the early point (~96 ms of silence), ending the turn there when it "
        "scores >= 0.95: ~80 ms sooner, but more callers cut off mid-sentence (bench/bench_endpointing.py)",
    )
    turn_semantic: bool = Field(
        default=True,
        description="keep a Smart Turn end only when the partial transcript's words read finished "
        "(agent/speech/completeness.py); else hold the turn up to turn_semantic_hold_ms of silence. "
        "On since session 8: live at 10 calls it cut premature endpoints 34 of 159 -> 19 of 150 turns "
        "for about 150 ms more endpoint wait at p50 (docs/telephony.md); false: Smart Turn alone "
        "(sooner, more callers cut off)",
    )
    turn_semantic_model: Path | None = Field(
        default=None, description="turn-completeness weights (.npz); default: agent/data/turn/completeness.npz")
    turn_semantic_complete: float = Field(
        default=0.5, ge=0.0, le=1.0, description="P(complete) of the partial's words at or above which a Smart Turn end stands")
    turn_semantic_hold_ms: int = Field(
        default=800, ge=200, description="silence after which a turn held for unfinished words ends")
    turn_semantic_wait_ms: int = Field(
        default=600, ge=0, description="silence up to which a Smart Turn end waits for the partial's transcript")
    tts_engine: str = Field(default="espeak-ng", description="'espeak-ng', 'http', 'piper' or 'package.module:factory'")
    tts_voice: str = Field(default="cmn", description="espeak-ng voice (cmn, yue), piper model path, or HTTP voice")
    tts_url: str | None = Field(default=None, description="HTTP TTS endpoint (tts_engine=http)")
    tts_speed: int = Field(default=170, ge=80, le=400, description="espeak-ng words per minute")
    # --- ending calls (agent/stages/hangup.py, agent/silence.py, docs/telephony.md) ---
    silence_hangup_s: float = Field(
        default=20.0, ge=0,
        description="say a polite goodbye and end the call after this long without caller speech or key press (0: never)",
    )
    # --- telephony (connectors/, docs/telephony.md) ---
    max_calls: int = Field(
        default=0, ge=0,
        description="calls this agent takes at once; past it a new INVITE gets 486 with Retry-After (websocket: "
                    "the stream is closed busy) and the dialler paces to it; 0 = 5 per CPU core (measured: "
                    "bench/bench_voice.py, docs/telephony.md)",
    )
    retry_after_s: int = Field(default=30, ge=1, description="Retry-After of a call refused at capacity")
    sip_host: str = Field(default="127.0.0.1", description="address the SIP user agent and RTP bind to")
    sip_port: int = Field(default=5060, ge=0, le=65535, description="SIP UDP port (0 = any free port)")
    sip_user: str = Field(default="dianxiao", description="user part of the agent's SIP address (and digest user)")
    sip_password: str | None = Field(default=None, description="digest password toward the registrar/trunk")
    sip_trunk: str | None = Field(default=None, description="HOST:PORT of the SIP trunk/registrar outbound calls go through")
    sip_rtp_timeout_s: float = Field(default=15.0, gt=0, description="hang up after this long without RTP")
    ws_host: str = Field(default="127.0.0.1", description="address the media-stream websocket server binds to")
    ws_port: int = Field(default=8765, ge=0, le=65535)
    ws_token: str | None = Field(default=None, description="token media-stream connections must present")
    twilio_auth_token: str | None = Field(default=None, description="Twilio auth token (validates X-Twilio-Signature)")
    ws_public_url: str | None = Field(default=None, description="public wss:// base URL given to the provider")
    mqtt_host: str = Field(default="127.0.0.1")
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    crm_webhook_url: str | None = Field(default=None, description="where campaign outcomes are POSTed")
    crm_webhook_secret: str | None = Field(default=None, description="HMAC-SHA256 key of the outcome webhook")

    @property
    def speech_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def call_capacity(self) -> int:
        """max_calls, or what this box was measured to carry: 5 calls per CPU core (2 cores:
        10 calls at voice-to-voice p95 <= 1.5 s, bench/bench_voice.py)."""
        import os

        return self.max_calls or 5 * max(1, os.cpu_count() or 1)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "bus.sqlite"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        _check_env_names(settings_cls.model_fields)
        return (
            init_settings,
            env_settings,
            _TomlSource(settings_cls, toml_file=_config_file()),
        )


def load(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
