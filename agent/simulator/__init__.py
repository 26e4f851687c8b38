"""Caller simulator: personas with goals that talk to the agent (in-process through the pure
dialogue core, or over the real topics), and the measures of how the calls went."""

from agent.simulator.personas import PERSONAS, Caller, make_caller
from agent.simulator.driver import CallResult, simulate_call, simulate_call_on_bus, summarise

__all__ = ["PERSONAS", "CallResult", "Caller", "make_caller", "simulate_call", "simulate_call_on_bus", "summarise"]
