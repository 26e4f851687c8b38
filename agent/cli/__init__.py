"""`dianxiao` command line.  Each command module registers its commands on the apps in
agent.cli.app when imported; add a module to _COMMAND_MODULES to add commands.

Operator errors (agent/errors.py) end the command here, as one line on stderr and exit code 2;
anything else is a bug and keeps its traceback."""

from __future__ import annotations

import importlib
import os
import sys

from agent.cli.app import app, debug_requested
from agent.errors import EXIT_CODE, one_line

_COMMAND_MODULES = (
    "agent.cli.core",
    "agent.cli.speech_cmds",
    "agent.cli.console_cmds",
    "agent.cli.nlu_cmds",
    "agent.cli.dialogue_cmds",
    "agent.cli.spoken_cmds",
    "agent.cli.telephony_cmds",
    "agent.cli.learn_cmds",
)


def main() -> None:
    try:
        for name in _COMMAND_MODULES:
            importlib.import_module(name)
        app()
    except Exception as exc:
        line = one_line(exc)
        if line is None or debug_requested() or os.environ.get("DIANXIAO_DEBUG", "") not in ("", "0"):
            raise
        print(line, file=sys.stderr)
        sys.exit(EXIT_CODE)
