"""Restart benchmark: how long a stage takes to come back, and how much memory it holds, after
N finished calls (issue 16).  Runs the text stages (nlu, dst, policy) in this process on an
embedded bus file, pushes calls through them in chunks (call.started, two caller turns, then
call.ended once the turns were answered), and at each checkpoint:

- waits until the ended calls' state was freed (end grace), reads this process's RSS,
- stops the three stages and starts brand-new ones over a new bus object on the same file
  (what a restarted process does) and times each from `run()` to ready (state restored),
- keeps OPEN calls in the middle of a call across the restart and checks that they are
  restored and answered in context afterwards.

Prints one JSON line per figure, e.g.
  {"bench": "restart", "calls": 10000, "metric": "restart_s", "stage": "dst", "value": 0.01, "unit": "s"}

Usage:  python bench/bench_restart.py [--checkpoints 100,1000,10000] [--chunk 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from agent import events as ev  # noqa: E402
from agent import topics  # noqa: E402
from agent.bus.embedded import EmbeddedBus  # noqa: E402
from agent.observability import configure_logging  # noqa: E402
from agent.pipeline import build_stage  # noqa: E402
from agent.runner import StageRunner  # noqa: E402
from agent.settings import Settings  # noqa: E402
from agent.textcall import end_call, say, start_call  # noqa: E402

STAGES = ("nlu", "dst", "policy")
TURNS = ["我想要一个云服务器，要支持1000并发", "那个的年费是多少？"]
OPEN_CALLS = 5
END_GRACE_S = 1.0


def emit(calls: int, metric: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"bench": "restart", "calls": calls, "metric": metric, "value": round(value, 3), "unit": unit,
                      **extra}), flush=True)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Pipeline:
    def __init__(self, path: Path, settings: Settings) -> None:
        self.path, self.settings = path, settings
        self.bus: EmbeddedBus | None = None
        self.runners: list[StageRunner] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> dict[str, float]:
        """Start brand-new stages; returns each stage's seconds from run() to ready."""
        self.bus = EmbeddedBus(self.path)
        await self.bus.start()
        self.runners = [StageRunner(build_stage(n, self.settings), self.bus, end_grace_s=END_GRACE_S) for n in STAGES]
        took: dict[str, float] = {}
        for r in self.runners:  # one at a time, so each figure is that stage's own
            t0 = time.perf_counter()
            self.tasks.append(asyncio.create_task(r.run()))
            await r.ready.wait()
            took[r.stage.name] = time.perf_counter() - t0
        return took

    async def stop(self) -> None:
        for r in self.runners:
            r.stop()
        await asyncio.gather(*self.tasks)
        self.tasks = []
        assert self.bus is not None
        await self.bus.close()

    async def drained(self) -> None:
        assert self.bus is not None
        while any([await self.bus.lag(r.group, r.reads) for r in self.runners]):
            await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> None:
    checkpoints = sorted(int(x) for x in args.checkpoints.split(","))
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline(Path(tmp) / "bus.sqlite", settings)
        await pipe.start()
        done = 0
        busy = 0.0  # seconds spent pushing calls through (restarts and waits aside)
        for target in checkpoints:
            t0 = time.perf_counter()
            while done < target:
                n = min(args.chunk, target - done)
                ids = [f"bench-{done + i:06d}" for i in range(n)]
                assert pipe.bus is not None
                for cid in ids:
                    await start_call(pipe.bus, cid)
                    for t, text in enumerate(TURNS, 1):
                        await say(pipe.bus, cid, t, text)
                await pipe.drained()
                for cid in ids:
                    await end_call(pipe.bus, cid, len(TURNS))
                await pipe.drained()
                done += n
            busy += time.perf_counter() - t0
            # a few calls left in the middle (one turn said), to be carried across the restart
            assert pipe.bus is not None
            open_ids = [f"open-{target}-{i}" for i in range(OPEN_CALLS)]
            for cid in open_ids:
                await start_call(pipe.bus, cid)
                await say(pipe.bus, cid, 1, TURNS[0])
            await pipe.drained()
            await asyncio.sleep(END_GRACE_S + 1.5)  # the sweep frees the ended calls
            emit(target, "rss_mb", rss_mb(), "MB")
            emit(target, "calls_in_memory", max(len(r.contexts) for r in pipe.runners), "calls")
            emit(target, "calls_per_s", done / busy, "calls/s")
            await pipe.stop()
            took = await pipe.start()
            for name, s in took.items():
                emit(target, "restart_s", s, "s", stage=name)
            emit(target, "restored_calls", min(r.restored for r in pipe.runners), "calls", open_calls=OPEN_CALLS)
            # the open calls go on after the restart: turn 2 asks the fee of "that one" (turn 1's product)
            for cid in open_ids:
                await say(pipe.bus, cid, 2, TURNS[1])
                await end_call(pipe.bus, cid, 2)
            await pipe.drained()
            in_context = 0
            for p in range(pipe.bus.partitions):
                tp = (topics.REPLIES, p)
                for rec in await pipe.bus.read_range(tp, 0, await pipe.bus.end_offset(tp)):
                    e = ev.decode(rec.value)
                    if e.call_id in open_ids and e.turn == 2 and "云服务器" in e.text:
                        in_context += 1
            emit(target, "open_calls_answered_in_context", in_context, "calls", open_calls=OPEN_CALLS)
        await pipe.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", default="100,1000,10000")
    p.add_argument("--chunk", type=int, default=200)
    args = p.parse_args()
    configure_logging("WARNING")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
