"""Autoscaling on consumer lag, simulated on a real broker: does the ScaledObject's rule keep up
with a load curve, and is anything lost while replicas come and go?

`run` (the default) starts a Tansu broker (tests/kafka_broker.py), reads the stage's KEDA
ScaledObject from deploy/k8s (lagThreshold, minReplicaCount, maxReplicaCount, pollingInterval,
the scale-down stabilization window), and plays a curve of calls arriving over time: each call
is a few caller turns (transcript.final events) on the real `transcripts` topic.  Replicas are
in-process StageRunners of the real stage, each its own consumer-group member; every polling
interval the bench computes what KEDA's Kafka scaler + the HPA would do (desired =
ceil(total lag / lagThreshold), clamped to [min, max] and to the partition count; up at once,
down only after the stabilization window) and starts or stops (SIGTERM-style: finish, commit,
leave) replicas to match.  It prints one JSON line per sample (lag, replicas, arrivals) and a
summary: max lag, replicas over time, events published / answered / lost (must be 0).

The stage's own work is too cheap to build lag on a 2-core box (NLU rules: 0.4 ms per turn), so
each event also costs `--service-ms` of waiting in a worker thread, as a stage that calls out
(an LLM phrasing the reply, an HTTP TTS) or decodes on its own core would: that is what makes
one replica's throughput finite and a second replica useful.  The waiting runs off the GIL, so N
in-process replicas have N times the throughput, as N pods would.  Times are compressed by
`--time-scale` (10: a 15 s polling interval is polled every 1.5 s).

`rss` starts `dianxiao stage NAME` for each stage on an embedded bus, waits for /readyz, and
prints its resident memory: the source of the memory requests in deploy/k8s/base/*.yaml.

Usage:
  python bench/bench_autoscale.py [run] [--stage nlu] [--time-scale 10] [--service-ms 40] [--peak-cps 16]
  python bench/bench_autoscale.py rss [--stages nlu,dst,policy,hangup,dtmf,vad,asr,tts]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agent import events as ev  # noqa: E402
from agent import topics  # noqa: E402
from agent.observability import configure_logging  # noqa: E402

SCALEDOBJECTS = ROOT / "deploy/k8s/overlays/keda/scaledobjects.yaml"
DEPLOY_PARTITIONS = ROOT / "deploy/k8s/base/config.yaml"
TURNS = ["你好", "我想要一个云服务器，要支持1000并发", "那个的年费是多少？", "有点贵啊，能便宜点吗", "好的，谢谢，先这样吧"]


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "autoscale", **fields}, ensure_ascii=False), flush=True)


# --- the rule, read from the manifest -----------------------------------------------------


@dataclass(frozen=True)
class ScaleRule:
    stage: str
    lag_threshold: int
    min_replicas: int
    max_replicas: int
    polling_s: float
    scale_down_window_s: float
    topic: str
    group: str
    up_policies: tuple[tuple[str, int, float], ...] = ()  # (Pods|Percent, value, periodSeconds)
    down_policies: tuple[tuple[str, int, float], ...] = ()

    def desired(self, lag: int, partitions: int) -> int:
        """KEDA's Kafka scaler: a target of lagThreshold per replica (the HPA's AverageValue),
        never more replicas than partitions (an idle member would hold nothing)."""
        want = math.ceil(lag / self.lag_threshold) if lag > 0 else 0
        return max(self.min_replicas, min(self.max_replicas, partitions, want))


def read_rule(stage: str, path: Path = SCALEDOBJECTS) -> ScaleRule:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "ScaledObject" or doc["spec"]["scaleTargetRef"]["name"] != f"dianxiao-{stage}":
            continue
        spec = doc["spec"]
        trig = next(t for t in spec["triggers"] if t["type"] == "kafka")["metadata"]
        behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
        window = behavior.get("scaleDown", {}).get("stabilizationWindowSeconds", 300)  # the HPA default
        def policies(direction: str) -> tuple[tuple[str, int, float], ...]:
            return tuple((p["type"], int(p["value"]), float(p["periodSeconds"]))
                         for p in behavior.get(direction, {}).get("policies", []))

        return ScaleRule(stage, int(trig["lagThreshold"]), int(spec.get("minReplicaCount", 0)),
                         int(spec.get("maxReplicaCount", 100)), float(spec.get("pollingInterval", 30)),
                         float(window), trig["topic"], trig["consumerGroup"],
                         policies("scaleUp"), policies("scaleDown"))
    raise SystemExit(f"no ScaledObject for dianxiao-{stage} in {path}")


def deploy_partitions() -> int:
    for doc in yaml.safe_load_all(DEPLOY_PARTITIONS.read_text()):
        if doc and doc.get("kind") == "ConfigMap" and "DIANXIAO_PARTITIONS" in doc.get("data", {}):
            return int(doc["data"]["DIANXIAO_PARTITIONS"])
    raise SystemExit(f"DIANXIAO_PARTITIONS not found in {DEPLOY_PARTITIONS}")


# --- the simulation ---------------------------------------------------------------------------


def slow(stage: Any, service_s: float) -> Any:
    """The real stage, each event also costing `service_s` of off-GIL waiting (see the module doc)."""
    from agent.stages.base import Stage

    class Slowed(Stage):
        name = stage.name
        reads = stage.reads
        writes = stage.writes
        blocking = True  # the runner calls handle in a worker thread

        def new_state(self, call_id: str) -> Any:
            return stage.new_state(call_id)

        def handle(self, event: Any, ctx: Any) -> list[Any]:
            if isinstance(event, ev.TranscriptFinal):
                time.sleep(service_s)
            return stage.handle(event, ctx)

    return Slowed()


def arrival_rate(t: float, duration: float, peak: float) -> float:
    """Calls per second: quiet, a ramp up to the peak, a plateau, a ramp down, quiet again."""
    x = t / duration
    if x < 0.1 or x >= 0.8:
        return peak * 0.05
    if x < 0.3:
        return peak * (0.05 + 0.95 * (x - 0.1) / 0.2)
    if x < 0.55:
        return peak
    return peak * (1 - 0.95 * (x - 0.55) / 0.25)


@dataclass
class Pool:
    bus: Any
    make_stage: Any
    replicas: list[tuple[Any, asyncio.Task[None]]] = field(default_factory=list)
    serial: int = 0

    async def scale_to(self, n: int) -> None:
        from agent.runner import StageRunner

        while len(self.replicas) < n:
            self.serial += 1
            runner = StageRunner(self.make_stage(), self.bus, member=f"replica-{self.serial}")
            self.replicas.append((runner, asyncio.create_task(runner.run())))
        while len(self.replicas) > n:
            runner, task = self.replicas.pop()  # the newest goes first, as the HPA picks any
            runner.stop()  # SIGTERM: finish the batch in hand, commit, leave the group
            await task


async def simulate(args: argparse.Namespace) -> None:
    from agent.bus.kafka import KafkaBus
    from agent.pipeline import build_stage
    from agent.settings import Settings
    from kafka_broker import start_tansu

    rule = read_rule(args.stage)
    partitions = args.partitions or deploy_partitions()
    scale = args.time_scale
    poll_s = rule.polling_s / scale
    window_s = rule.scale_down_window_s / scale
    emit(kind="rule", stage=rule.stage, lag_threshold=rule.lag_threshold, min_replicas=rule.min_replicas,
         max_replicas=rule.max_replicas, polling_interval_s=rule.polling_s, scale_down_window_s=rule.scale_down_window_s,
         partitions=partitions, time_scale=scale, service_ms=args.service_ms, peak_calls_per_s=args.peak_cps,
         duration_s=args.duration, source=str(SCALEDOBJECTS.relative_to(ROOT)))
    real_stage = build_stage(args.stage, Settings())
    with start_tansu() as broker:
        prefix = f"as{uuid.uuid4().hex[:6]}."
        group_opts = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 6000}
        bus = KafkaBus(broker.bootstrap, partitions=partitions, idempotent=False, topic_prefix=prefix,
                       broker_timeout_s=20.0, consumer_options=group_opts)
        await bus.start()
        await bus.ensure_topics([rule.topic, topics.NLU])
        pool = Pool(bus, lambda: slow(real_stage, args.service_ms / 1000))
        published: set[str] = set()
        timeline: list[dict[str, Any]] = []
        recommendations: list[tuple[float, int]] = []
        started = time.monotonic()
        stop_load = asyncio.Event()

        async def call(call_id: str) -> None:
            for turn, text in enumerate(TURNS, start=1):
                event = ev.TranscriptFinal(event_id=ev.new_event_id(), call_id=call_id, turn=turn, seq=turn,
                                           stage="caller", text=text)
                await bus.publish_event(rule.topic, event)
                published.add(event.event_id)
                await asyncio.sleep(args.turn_gap_s)  # think time between turns

        async def load() -> None:
            calls: list[asyncio.Task[None]] = []
            credit = 0.0
            while (t := time.monotonic() - started) < args.duration:
                credit += arrival_rate(t, args.duration, args.peak_cps) * 0.1
                while credit >= 1:
                    credit -= 1
                    calls.append(asyncio.create_task(call(f"as-{uuid.uuid4().hex[:10]}")))
                await asyncio.sleep(0.1)
            await asyncio.gather(*calls)
            stop_load.set()

        last_down = [-math.inf]

        async def autoscaler() -> None:
            await pool.scale_to(rule.min_replicas)
            while True:
                now = time.monotonic()
                lag = await bus.lag(rule.group, [rule.topic])
                want = rule.desired(lag, partitions)
                recommendations.append((now, want))
                current = len(pool.replicas)
                # HPA: scale up at once; scale down to the highest recommendation of the window;
                # each direction at most as fast as its policies allow (selectPolicy Max).
                recent = [w for ts, w in recommendations if now - ts <= window_s]
                target = want if want > current else min(current, max(recent))
                if target > current and rule.up_policies:
                    target = min(target, max(current + v if kind == "Pods" else math.ceil(current * (1 + v / 100))
                                             for kind, v, _ in rule.up_policies))
                if target < current and rule.down_policies:
                    kind, v, period = rule.down_policies[0]
                    if now - last_down[0] < period / scale:
                        target = current
                    else:
                        target = max(target, current - v if kind == "Pods" else math.floor(current * (1 - v / 100)))
                        last_down[0] = now
                if target != current:
                    emit(kind="scale", t=round(now - started, 2), lag=lag, replicas_from=current, replicas_to=target)
                    await pool.scale_to(target)
                if stop_load.is_set() and lag == 0 and target == rule.min_replicas:
                    return
                await asyncio.sleep(max(0.0, poll_s - (time.monotonic() - now)))

        async def sampler() -> None:
            last = 0
            while True:
                t = time.monotonic() - started
                lag = await bus.lag(rule.group, [rule.topic])
                sample = {"t": round(t, 2), "lag": lag, "replicas": len(pool.replicas),
                          "published": len(published), "arrivals_per_s": round((len(published) - last) / 1.0, 1)}
                last = len(published)
                timeline.append(sample)
                emit(kind="sample", **sample)
                await asyncio.sleep(1.0)

        sampling = asyncio.create_task(sampler())
        try:
            await asyncio.gather(load(), autoscaler())
        finally:
            sampling.cancel()
            await pool.scale_to(0)

        answered: dict[str, int] = {}
        for tp in await bus.topic_partitions(topics.NLU):
            for rec in await bus.read_range(tp, 0, await bus.end_offset(tp)):
                e = ev.decode(rec.value)
                answered[e.caused_by] = answered.get(e.caused_by, 0) + 1
        await bus.close()
    lost = len(published - set(answered))
    lags = [s["lag"] for s in timeline]
    reps = [s["replicas"] for s in timeline]
    dt = 1.0
    emit(kind="summary", stage=rule.stage, events_published=len(published),
         events_answered=len(published & set(answered)), events_lost=lost,
         duplicate_outputs=sum(n - 1 for n in answered.values() if n > 1),
         max_lag=max(lags), p95_lag=sorted(lags)[int(0.95 * (len(lags) - 1))], max_replicas=max(reps),
         replica_seconds=round(sum(reps) * dt, 1), fixed_max_replica_seconds=round(rule.max_replicas * len(reps) * dt, 1),
         wall_s=round(time.monotonic() - started, 1))
    if lost:
        raise SystemExit(f"{lost} events were lost")


# --- resident memory per stage --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(args: argparse.Namespace) -> None:
    exe = Path(sys.executable).with_name("dianxiao")
    for name in args.stages.split(","):
        port = _free_port()
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "DIANXIAO_DATA_DIR": tmp, "DIANXIAO_METRICS_PORT": str(port)}
            began = time.monotonic()
            proc = subprocess.Popen([str(exe), "stage", name], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                ready_s = None
                while time.monotonic() - began < 180 and proc.poll() is None:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                            if r.status == 200:
                                ready_s = time.monotonic() - began
                                break
                    except (OSError, urllib.error.HTTPError):
                        pass
                    time.sleep(0.2)
                status = Path(f"/proc/{proc.pid}/status").read_text() if proc.poll() is None else ""
                kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), None)
                hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), None)
                emit(kind="rss", stage=name, ready_s=None if ready_s is None else round(ready_s, 1),
                     rss_mib=None if kb is None else round(kb / 1024, 1),
                     peak_rss_mib=None if hwm is None else round(hwm / 1024, 1))
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    r = sub.add_parser("run", help="simulate a load curve with lag-based scaling (the default)")
    m = sub.add_parser("rss", help="resident memory of each stage process once ready")
    m.add_argument("--stages", default="nlu,dst,policy,hangup,dtmf,vad,asr,tts")
    for q in (p, r):
        q.add_argument("--stage", default="nlu")
        q.add_argument("--time-scale", type=float, default=10.0, help="compress the manifest's times by this")
        q.add_argument("--service-ms", type=float, default=40.0, help="extra per-event service time (see doc)")
        q.add_argument("--peak-cps", type=float, default=16.0, help="calls per second at the peak of the curve")
        q.add_argument("--duration", type=float, default=90.0, help="seconds of arrivals")
        q.add_argument("--turn-gap-s", type=float, default=0.8, help="seconds between a call's turns")
        q.add_argument("--partitions", type=int, default=0, help="default: DIANXIAO_PARTITIONS of deploy/k8s")
    args = p.parse_args()
    configure_logging("WARNING")
    if args.cmd == "rss":
        rss(args)
    else:
        asyncio.run(simulate(args))


if __name__ == "__main__":
    main()
