"""Writing human sellers' calls as transcript files (the format `dianxiao learn --transcripts`
reads; docs/learning.md): the simulated top seller's calls, and any list of calls."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from agent.dialogue import Playbook

FIELDS = ["call_id", "turn", "speaker", "text", "segment", "outcome"]


def write_csv(calls: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for call in calls:
            for i, t in enumerate(call["turns"], start=1):
                w.writerow({"call_id": call["call_id"], "turn": i, "speaker": t["speaker"], "text": t["text"],
                            "segment": call.get("segment", "") if i == 1 else "",
                            "outcome": call.get("outcome", "") if i == 1 else ""})


def write_jsonl(calls: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for call in calls:
            f.write(json.dumps({k: v for k, v in call.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")


def top_seller_calls(n: int, seed: int, pb: Playbook) -> list[dict[str, Any]]:
    """`n` calls of the simulated top human seller (agent/simulator/customers.py)."""
    from agent.simulator.customers import human_seller_call

    prices = {}
    for pid in ("saas", "cloud_server"):
        prod = pb.product(pid)
        if prod is not None:
            plan = prod.plan(prod.default_plan) or prod.plans[0]
            prices[pid] = (f"{prod.name}{plan.name}", plan.price_year)
    return [human_seller_call(f"H{seed:03d}-{i:05d}", seed, prices) for i in range(n)]


__all__ = ["top_seller_calls", "write_csv", "write_jsonl"]
