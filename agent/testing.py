"""Helpers to run a pipeline in-process (used by the demo, tests, benchmarks and evaluation)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import asynccontextmanager
from typing import AsyncIterator

from agent.bus.base import Bus
from agent.observability import Metrics
from agent.pipeline import TEXT_STAGES, build_stage, with_phrasing
from agent.runner import StageRunner
from agent.silence import SilenceWatch
from agent.settings import Settings
from agent.stages.base import Stage


class RunningPipeline:
    def __init__(self, bus: Bus, runners: list[StageRunner]) -> None:
        self.bus = bus
        self.runners = runners
        self.tasks: list[asyncio.Task[None]] = []
        self.silence: SilenceWatch | None = None

    def runner(self, name: str) -> StageRunner:
        return next(r for r in self.runners if r.stage.name == name)

    async def stop_stage(self, name: str) -> None:
        """Stop one stage gracefully (SIGTERM semantics: finish, commit, leave)."""
        r = self.runner(name)
        r.stop()
        await self.tasks[self.runners.index(r)]

    async def restart_stage(self, name: str, stage: Stage) -> StageRunner:
        i = self.runners.index(self.runner(name))
        new = StageRunner(stage, self.bus, metrics=self.runners[i].metrics)
        self.runners[i] = new
        self.tasks[i] = asyncio.create_task(new.run())
        await new.ready.wait()
        return new


@asynccontextmanager
async def running_pipeline(
    bus: Bus, settings: Settings | None = None, stages: Iterable[str | Stage] = TEXT_STAGES,
    metrics: Metrics | None = None,
) -> AsyncIterator[RunningPipeline]:
    settings = settings or Settings()
    built = [build_stage(s, settings) if isinstance(s, str) else s for s in with_phrasing(stages, settings)]
    pipe = RunningPipeline(bus, [StageRunner(s, bus, metrics=metrics) for s in built])
    pipe.tasks = [asyncio.create_task(r.run()) for r in pipe.runners]
    pipe.silence = silence_watch_for(bus, settings, [s.name for s in built])
    watching = asyncio.create_task(pipe.silence.run()) if pipe.silence else None
    try:
        await asyncio.gather(*(r.ready.wait() for r in pipe.runners))
        if pipe.silence:
            await pipe.silence.ready.wait()
        yield pipe
    finally:
        for r in pipe.runners:
            r.stop()
        if pipe.silence and watching:
            pipe.silence.stop()
            await asyncio.gather(watching, return_exceptions=True)
        await asyncio.gather(*pipe.tasks, return_exceptions=True)


def silence_watch_for(bus: Bus, settings: Settings, stage_names: list[str]) -> SilenceWatch | None:
    """The silence clock runs where the hangup stage runs (it is what acts on CallerSilent)."""
    if "hangup" in stage_names and settings.silence_hangup_s > 0:
        return SilenceWatch(bus, settings.silence_hangup_s)
    return None
