"""Kubernetes asks each pod two questions: "may I send you work?" (/readyz) and "are you stuck,
shall I restart you?" (/livez).  A stage answers them from its real consumer loop: ready only
once its models are loaded and it joined its consumer group, not ready while shutting down;
not alive when its loop has made no progress for longer than the probe allows."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agent import events as ev
from agent import topics
from agent.observability import Metrics
from agent.pipeline import build_stage
from agent.runner import StageRunner
from agent.settings import Settings
from agent.stages.base import CallContext, Emit, Stage
from agent.textcall import run_text_call

BIN = Path(sys.executable).with_name("dianxiao")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def aprobe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(probe, port, path)


async def test_a_stage_is_ready_only_after_its_models_loaded_and_it_joined_its_group(embedded_bus):
    metrics = Metrics()
    server = metrics.serve(0)  # the metrics port opens before any stage is built, as in `dianxiao stage`
    port = server.server_address[1]
    try:
        status, body = await aprobe(port, "/readyz")
        assert status == 503 and "models still loading" in body["reason"]

        runner = StageRunner(build_stage("nlu", Settings()), embedded_bus, metrics=metrics)
        status, body = await aprobe(port, "/readyz")
        assert status == 503 and "nlu (joining its consumer group)" in body["reason"]
        assert (await aprobe(port, "/livez"))[0] == 200  # starting is not being stuck

        task = asyncio.create_task(runner.run())
        await runner.ready.wait()
        status, body = await aprobe(port, "/readyz")
        assert status == 200, body
        nlu = body["components"]["nlu"]
        assert nlu["joined"] and nlu["models_loaded"]
        # the only member holds every partition of every topic it reads
        assert nlu["partitions"] == embedded_bus.partitions * len(getattr(runner, "reads", runner.stage.reads))

        # It works while it says so: a caller's words reach the stage, which understands them.
        await embedded_bus.publish_event(topics.TRANSCRIPTS, ev.TranscriptFinal(
            event_id=ev.new_event_id(), call_id="call-ready", turn=1, seq=1, stage="caller", text="云服务器多少钱"))
        async with asyncio.timeout(10):
            while runner.handled < 1:
                await asyncio.sleep(0.05)
        status, body = await aprobe(port, "/livez")
        assert status == 200 and body["components"]["nlu"]["seconds_since_beat"] < 5

        # SIGTERM (stop): no new work for this pod while it finishes and commits.
        runner.stop()
        await task
        status, body = await aprobe(port, "/readyz")
        assert status == 503 and "shutting down" in body["reason"]
        assert (await aprobe(port, "/livez"))[0] == 200  # a clean shutdown is not a reason to kill it
        metrics_page = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        assert 'dianxiao_events_handled_total{stage="nlu",topic="transcripts"} 1.0' in metrics_page  # same port
    finally:
        server.shutdown()


class HangsOnceStage(Stage):
    """A stage whose handler blocks its event loop on one event, as a wedged native call would."""

    name = "wedged"
    reads = (topics.TRANSCRIPTS,)

    def __init__(self, hang_s: float) -> None:
        self.hang_s = hang_s

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if getattr(event, "text", "") == "hang":
            time.sleep(self.hang_s)  # blocks the loop: no poll, no beat
        return []


async def test_liveness_fails_while_the_consumer_loop_is_stuck_and_recovers_after(embedded_bus):
    metrics = Metrics()
    server = metrics.serve(0)
    port = server.server_address[1]
    runner = StageRunner(HangsOnceStage(hang_s=2.5), embedded_bus, metrics=metrics)
    task = asyncio.create_task(runner.run())
    seen: list[tuple[float, int, str]] = []
    done = threading.Event()

    def kubelet() -> None:  # probes from outside the (soon blocked) event loop, every 100 ms
        while not done.is_set():
            status, body = probe(port, "/livez?stall_s=1")
            seen.append((time.monotonic(), status, body["reason"]))
            time.sleep(0.1)

    watcher = threading.Thread(target=kubelet, daemon=True)
    try:
        await runner.ready.wait()
        watcher.start()
        await asyncio.sleep(0.5)
        await embedded_bus.publish_event(topics.TRANSCRIPTS, ev.TranscriptFinal(
            event_id=ev.new_event_id(), call_id="call-hang", turn=1, seq=1, stage="caller", text="hang"))
        async with asyncio.timeout(15):
            while runner.handled < 1:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the loop runs again: beats resume
        done.set()
        await asyncio.to_thread(watcher.join, 5)
        statuses = [s for _, s, _ in seen]
        assert statuses[0] == 200
        assert 503 in statuses, statuses
        stuck = next(r for _, s, r in seen if s == 503)
        assert stuck == "loop stuck > 1 s: wedged"
        assert statuses[-1] == 200  # recovered: the kubelet would not restart it after all
        # a bad probe parameter is a clear 400, not a pass
        status, body = await aprobe(port, "/livez?stall_s=soon")
        assert status == 400 and "stall_s" in body["error"]
    finally:
        done.set()
        runner.stop()
        await task
        server.shutdown()


def test_dianxiao_stage_serves_the_probes_on_its_metrics_port(tmp_path):
    port = _free_port()
    env = {**os.environ, "DIANXIAO_DATA_DIR": str(tmp_path / "data"), "DIANXIAO_METRICS_PORT": str(port)}
    proc = subprocess.Popen([str(BIN), "stage", "dst"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        status, body = 0, {}
        while time.monotonic() < deadline:
            try:
                status, body = probe(port, "/readyz")
            except OSError:  # not listening yet
                status = 0
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, body
        assert body["components"]["dst"]["joined"]
        assert probe(port, "/livez")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def _ready_within(port: int, proc: subprocess.Popen[str], seconds: float) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + seconds
    status, body = 0, {}
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status, body = probe(port, "/readyz")
        except OSError:
            status = 0
        if status == 200:
            break
        time.sleep(0.2)
    return status, body


def test_the_recorder_and_a_connector_serve_the_probes_too(tmp_path):
    # what the recorder StatefulSet and the connector Deployments of deploy/k8s probe
    commands = {"recorder": ["record"], "connector": ["ws", "serve", "--provider", "telnyx", "--pipeline", "none"]}
    for component, args in commands.items():
        port = _free_port()
        env = {**os.environ, "DIANXIAO_DATA_DIR": str(tmp_path / component), "DIANXIAO_METRICS_PORT": str(port),
               "DIANXIAO_WS_TOKEN": "t", "DIANXIAO_WS_PORT": "0"}
        proc = subprocess.Popen([str(BIN), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            status, body = _ready_within(port, proc, 60)
            assert status == 200, (component, body)
            assert body["components"][component]["joined"]
            assert probe(port, "/livez?stall_s=5")[0] == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
