"""Shared fixtures: an embedded bus on a temporary log, and a running text pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.bus import EmbeddedBus
from agent.observability import configure_logging
from agent.testing import running_pipeline

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

configure_logging("WARNING")


@pytest.fixture(autouse=True)
def _logs_go_to_a_live_stream():
    """A CLI test (typer's CliRunner) points structlog at its own stderr, which is closed after
    that test; a later test that logs would then fail with "I/O operation on closed file".
    Re-point logging at the current stream before every test."""
    configure_logging("WARNING")


@pytest.fixture
async def embedded_bus(tmp_path: Path):
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    await bus.start()
    yield bus
    await bus.close()


@pytest.fixture
async def text_pipeline(embedded_bus):
    async with running_pipeline(embedded_bus) as pipe:
        yield pipe


@pytest.fixture
async def rules_pipeline(embedded_bus):
    """The text pipeline with the rule understander: for stories about campaigns, outcomes and
    dialogue whose caller lines were written with the rules (the default joint model's own
    figures are in docs/nlu.md)."""
    from agent.settings import Settings

    async with running_pipeline(embedded_bus, Settings(nlu_model="rules")) as pipe:
        yield pipe
