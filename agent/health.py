"""Liveness and readiness for Kubernetes probes, served beside the Prometheus metrics.

A process registers one `Probe` per thing that must work (a stage runner, the recorder, a
connector).  The owner of the loop calls `beat()` every time the loop makes progress; the
HTTP endpoints read those timestamps from another thread:

- `GET /readyz` is 200 when at least one component is registered and every component has its
  models loaded and has joined its consumer group (first assignment done, per-call state
  rebuilt) and is not shutting down; 503 with the reason otherwise.  Models load when a stage
  is *built* (`agent/pipeline.py`: a model asked for and not loadable is a start-up error), and
  the metrics port opens before that, so "nothing registered yet" means "still loading models".
  A member that joined but holds no partitions (more replicas than partitions) is ready: it is a
  standby the group hands partitions to when a member leaves.
- `GET /livez` is 503 when a started component's loop has not beaten for more than `stall_s`
  seconds (default `STALL_S`, `?stall_s=N` per probe: an ASR pod decodes longer than a DST pod).
  A component still starting (joining the group, rebuilding state) or shutting down is alive:
  a slow start is readiness's business, and killing a stage mid-commit would only redo work.
- Any other path serves the Prometheus metrics, as the plain metrics server did.

The server runs in its own daemon thread, not on the event loop it watches: a loop stuck in a
handler would otherwise also stop answering /livez, and the kubelet would see a timeout rather
than the reason.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

#: seconds without progress after which a started loop counts as stuck.  A stage beats at every
#: poll (at least every 200 ms when idle) and after every record it handled, so only one record's
#: handling can delay a beat; the slowest measured (an ASR decode of a long utterance on 2 cores)
#: takes a few seconds.
STALL_S = 60.0


@dataclass
class Probe:
    """The health of one component; written by its loop, read by the probe thread."""

    name: str
    clock: Callable[[], float] = time.monotonic
    models_loaded: bool = True
    joined: bool = False
    stopping: bool = False
    last_beat: float = 0.0
    _partitions: Callable[[], Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.last_beat = self.clock()

    def beat(self) -> None:
        self.last_beat = self.clock()

    def started(self, assignment: Callable[[], Any] | None = None) -> None:
        """The consumer joined its group and the first assignment (and state rebuild) is done;
        `assignment()` returns what it holds now, for the probe's report."""
        self._partitions = assignment
        self.joined = True
        self.beat()

    def stopped(self) -> None:
        self.stopping = True

    def report(self, now: float, stall_s: float) -> dict[str, Any]:
        silent = round(now - self.last_beat, 3)
        out: dict[str, Any] = {
            "models_loaded": self.models_loaded,
            "joined": self.joined,
            "stopping": self.stopping,
            "seconds_since_beat": silent,
            "live": not (self.joined and not self.stopping and silent > stall_s),
            "ready": self.models_loaded and self.joined and not self.stopping,
        }
        if self._partitions is not None:
            try:
                out["partitions"] = len(self._partitions())
            except Exception:  # a report must never fail the probe
                out["partitions"] = None
        return out


class Health:
    """The probes of one process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._probes: dict[str, Probe] = {}
        self._lock = threading.Lock()

    def component(self, name: str, *, models_loaded: bool = True) -> Probe:
        with self._lock:
            key, n = name, 1
            while key in self._probes:  # two runners of one stage in a process: keep both
                n += 1
                key = f"{name}#{n}"
            probe = Probe(key, clock=self.clock, models_loaded=models_loaded)
            self._probes[key] = probe
            return probe

    def remove(self, probe: Probe) -> None:
        with self._lock:
            self._probes.pop(probe.name, None)

    def _reports(self, stall_s: float) -> dict[str, dict[str, Any]]:
        now = self.clock()
        with self._lock:
            probes = list(self._probes.values())
        return {p.name: p.report(now, stall_s) for p in probes}

    def live(self, stall_s: float = STALL_S) -> tuple[bool, dict[str, Any]]:
        comps = self._reports(stall_s)
        stuck = sorted(n for n, c in comps.items() if not c["live"])
        reason = f"loop stuck > {stall_s:g} s: {', '.join(stuck)}" if stuck else "ok"
        return not stuck, {"live": not stuck, "reason": reason, "stall_s": stall_s, "components": comps}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        comps = self._reports(STALL_S)
        if not comps:
            reason = "no component registered yet (models still loading)"
        else:
            waiting = sorted(n for n, c in comps.items() if not c["ready"])
            reason = "ok" if not waiting else "not ready: " + ", ".join(
                f"{n} ({_why_not_ready(comps[n])})" for n in waiting
            )
        ok = reason == "ok"
        return ok, {"ready": ok, "reason": reason, "components": comps}


async def heartbeat(probe: Probe, every_s: float = 1.0) -> None:
    """Beat while the event loop turns: the liveness of a process with no consumer loop of its
    own to watch (a connector).  Cancel it to stop."""
    while True:
        probe.beat()
        await asyncio.sleep(every_s)


def _why_not_ready(c: dict[str, Any]) -> str:
    if not c["models_loaded"]:
        return "models loading"
    if c["stopping"]:
        return "shutting down"
    return "joining its consumer group"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path == "/livez":
            try:
                stall_s = float(parse_qs(url.query).get("stall_s", [STALL_S])[0])
            except ValueError:
                self._send(400, "application/json", json.dumps({"error": "stall_s must be a number"}).encode())
                return
            ok, body = self.server.health.live(stall_s)
            self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
        elif url.path == "/readyz":
            ok, body = self.server.health.ready()
            self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
        else:
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - probes every few seconds: no access log
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], registry: CollectorRegistry, health: Health) -> None:
        self.registry = registry
        self.health = health
        super().__init__(addr, _Handler)


def serve(port: int, registry: CollectorRegistry, health: Health, host: str = "0.0.0.0") -> _Server:
    """Serve /metrics, /livez and /readyz on HOST:PORT from a daemon thread; returns the server
    (`.shutdown()` stops it, `.server_address` has the bound port when PORT was 0)."""
    srv = _Server((host, port), registry, health)
    threading.Thread(target=srv.serve_forever, name=f"health:{port}", daemon=True).start()
    return srv
