"""Sales playbooks as data (placeholder; the dialogue issue loads YAML)."""

from __future__ import annotations

from pydantic import BaseModel


class Playbook(BaseModel):
    name: str = "cloud_saas"
    version: str = "0"
    prices: dict[str, int] = {"cloud_server": 3600}


def load_playbook(name: str = "cloud_saas") -> Playbook:
    return Playbook(name=name)
