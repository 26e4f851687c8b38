"""`dianxiao` command line.  Each command module registers its commands on the apps in
agent.cli.app when imported; add a module to _COMMAND_MODULES to add commands."""

from __future__ import annotations

import importlib

from agent.cli.app import app

_COMMAND_MODULES = (
    "agent.cli.core",
    "agent.cli.speech_cmds",
    "agent.cli.console_cmds",
    "agent.cli.nlu_cmds",
    "agent.cli.dialogue_cmds",
    "agent.cli.spoken_cmds",
    "agent.cli.telephony_cmds",
)


def main() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name)
    app()
