"""Structured logs (structlog, call id and turn bound on every line) and Prometheus metrics.

Metrics live in a registry object handed to whoever records them (no global state), so two
pipelines in one test process do not share counters."""

from __future__ import annotations

import logging
import sys

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agent import health as _health


class _CurrentStderr:
    """Writes to whatever sys.stderr is *now*: a logger bound to the stream of the moment breaks
    once that stream is closed (typer's CliRunner swaps stderr per invocation)."""

    def msg(self, message: str) -> None:
        try:
            print(message, file=sys.stderr, flush=True)
        except ValueError:  # a closed stream: drop the line rather than fail the caller
            pass

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    renderer = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *args: _CurrentStderr(),
        cache_logger_on_first_use=False,
    )


class Metrics:
    """The Prometheus metrics, named per its conventions: counters end in `_total`, durations
    are in seconds, and a gauge says its unit.  docs/kafka.md lists them for operators."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # Liveness/readiness of whatever records into these metrics (each StageRunner registers
        # a probe here), served on the same port as /metrics.
        self.health = _health.Health()
        self.handled = Counter(
            "dianxiao_events_handled_total", "events a stage handled", ["stage", "topic"], registry=self.registry
        )
        self.emitted = Counter(
            "dianxiao_events_emitted_total", "events a stage produced", ["stage", "topic"], registry=self.registry
        )
        self.handle_seconds = Histogram(
            "dianxiao_stage_handle_duration_seconds",
            "time a stage spends handling one event",
            ["stage"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "dianxiao_dead_letters_total", "messages a stage sent to dead letters", ["stage"], registry=self.registry
        )
        self.duplicates = Counter(
            "dianxiao_duplicates_dropped_total", "events a stage dropped as already handled", ["stage"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "dianxiao_consumer_lag_messages",
            "records in a partition the stage's consumer group has not committed yet",
            ["stage", "group", "topic", "partition"],
            registry=self.registry,
        )
        # Issue 17: where the time goes under load.  The age of the last event a stage took up
        # is the VAD's real-time lag (an audio frame's age = how far behind the call it runs).
        self.event_age = Gauge(
            "dianxiao_stage_event_age_seconds",
            "wall-clock age of the last event a stage started handling (the VAD's real-time lag)",
            ["stage"], registry=self.registry,
        )
        self.queue_depth = Gauge(
            "dianxiao_decode_queue_depth",
            "events waiting for one of a parallel stage's workers (the ASR's decode queue)",
            ["stage"], registry=self.registry,
        )
        self.skipped = Counter(
            "dianxiao_superseded_dropped_total",
            "events a stage dropped unhandled because a newer one of the same turn replaced them "
            "(a partial segment the ASR never decodes)",
            ["stage"], registry=self.registry,
        )
        self.calls_admitted = Counter(
            "dianxiao_calls_admitted_total", "calls a connector answered", ["connector"], registry=self.registry
        )
        self.calls_refused = Counter(
            "dianxiao_calls_refused_total", "calls a connector refused at capacity (486/503, provider busy)",
            ["connector"], registry=self.registry,
        )

    def serve(self, port: int) -> _health._Server:
        """/metrics, plus /livez and /readyz from the probes the runners registered (agent/health.py)."""
        return _health.serve(port, self.registry, self.health)
