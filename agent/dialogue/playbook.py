"""Sales playbooks as data: stages, catalogue (plans, prices, add-ons), rivals, objections,
compliance rules and reply templates, loaded from YAML (agent/data/playbooks/NAME.yaml or a path).

Catalogue look-ups go through aliases, so the playbook understands whatever normalised id or
surface word the NLU hands over for a product, feature, system or competitor."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.dialogue.numbers import numbers_in
from agent.errors import OperatorError
from agent.resources import DATA_DIR

PLAYBOOK_DIR = DATA_DIR / "playbooks"


class PlaybookError(OperatorError, ValueError):
    """A playbook could not be found or is malformed; the message says which and why."""

    hint = "fix the playbook file"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Plan(_Model):
    id: str
    name: str
    aliases: list[str] = Field(default_factory=list)
    price_year: int = Field(gt=0)
    capacity: int = Field(gt=0, description="the most of the product's sizing slot this plan carries")
    spec: str = ""


class AddOn(_Model):
    id: str
    name: str
    aliases: list[str] = Field(default_factory=list)
    price_year: int = Field(gt=0)


class Product(_Model):
    id: str
    name: str
    aliases: list[str] = Field(default_factory=list)
    sizing_slot: str = "concurrency"
    required_slots: list[str] = Field(default_factory=list)
    default_plan: str
    plans: list[Plan] = Field(min_length=1)
    addons: list[AddOn] = Field(default_factory=list)
    integrations: dict[str, str] = Field(default_factory=dict)
    features: dict[str, str] = Field(default_factory=dict)

    def plan(self, plan_id: str | None) -> Plan | None:
        return next((p for p in self.plans if p.id == plan_id), None)

    def fit(self, size: int | None) -> Plan:
        """The cheapest plan that carries `size` (the largest if none does; the default if no size)."""
        if size is None:
            return self.plan(self.default_plan) or self.plans[0]
        fitting = [p for p in self.plans if p.capacity >= size]
        if fitting:
            return min(fitting, key=lambda p: p.price_year)
        return max(self.plans, key=lambda p: p.capacity)

    def addon(self, value: Any) -> AddOn | None:
        key = _norm(value)
        return next((a for a in self.addons if key in {_norm(a.id), _norm(a.name), *map(_norm, a.aliases)}), None)

    def plan_by_alias(self, value: Any) -> Plan | None:
        key = _norm(value)
        return next((p for p in self.plans if key in {_norm(p.id), _norm(p.name), *map(_norm, p.aliases)}), None)


class Competitor(_Model):
    id: str
    name: str
    aliases: list[str] = Field(default_factory=list)
    comparison: str


class Objection(_Model):
    cues: list[str] = Field(default_factory=list)
    answer: str


class Compliance(_Model):
    identify_as_ai: bool = True
    honour_do_not_call: bool = True
    max_fallbacks: int = 2


class Playbook(_Model):
    name: str
    version: str
    company: str
    agent_name: str
    max_turns: int = 14
    stages: list[str]
    products: list[Product] = Field(min_length=1)
    competitors: list[Competitor] = Field(default_factory=list)
    competitor_default: str = ""
    objections: dict[str, Objection] = Field(default_factory=dict)
    compliance: Compliance = Compliance()
    slot_questions: dict[str, str] = Field(default_factory=dict)
    templates: dict[str, str]

    model_config = ConfigDict(extra="forbid", frozen=True, ignored_types=(cached_property,))

    # --- catalogue look-ups -------------------------------------------------------------

    def product(self, value: Any) -> Product | None:
        """The product a caller's value (an NLU id or a word) names, or None."""
        key = _norm(value)
        if not key:
            return None
        direct = next(
            (p for p in self.products if key in {_norm(p.id), _norm(p.name), *map(_norm, p.aliases)}), None
        )
        if direct is not None:
            return direct
        found = self.plan(value)  # a version ("saas_pro", "专业版") names its product too
        return found[0] if found else None

    def plan(self, plan_id: Any) -> tuple[Product, Plan] | None:
        for prod in self.products:
            plan = prod.plan(plan_id) or prod.plan_by_alias(plan_id)
            if plan is not None:
                return prod, plan
        return None

    def competitor(self, value: Any) -> Competitor | None:
        key = _norm(value)
        return next(
            (c for c in self.competitors if key in {_norm(c.id), _norm(c.name), *map(_norm, c.aliases)}), None
        )

    def objection_cue(self, text: str) -> str | None:
        for name, obj in self.objections.items():
            if any(cue in text for cue in obj.cues):
                return name
        return None

    @cached_property
    def catalogue_numbers(self) -> frozenset[int | float]:
        """Every number the playbook states anywhere: the only numbers a reply may state
        besides the caller's own and totals computed from catalogue prices."""
        return frozenset(numbers_in(yaml.safe_dump(self.model_dump(), allow_unicode=True)))

    @cached_property
    def prices(self) -> frozenset[int]:
        out = set()
        for p in self.products:
            out |= {pl.price_year for pl in p.plans} | {a.price_year for a in p.addons}
        return frozenset(out)


def _norm(value: Any) -> str:
    return str(value).strip().lower().replace(" ", "").replace("-", "_") if value is not None else ""


def load_playbook(name_or_path: str | Path = "cloud_saas") -> Playbook:
    """Load a playbook by name (agent/data/playbooks/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PLAYBOOK_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PLAYBOOK_DIR.glob("*.yaml")))
        raise PlaybookError(f"playbook {str(name_or_path)!r} not found (known: {known})",
                            hint="set playbook (DIANXIAO_PLAYBOOK, dianxiao.toml or --playbook) "
                                 "to a known name or a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        pb = Playbook.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise PlaybookError(f"playbook {path} is malformed: {exc}") from exc
    _check(pb, path)
    return pb


def _check(pb: Playbook, path: Path) -> None:
    for prod in pb.products:
        if prod.plan(prod.default_plan) is None:
            raise PlaybookError(f"{path}: product {prod.id} default_plan {prod.default_plan!r} is not one of its plans")
    missing = {"opening", "quote", "exit_do_not_call", "identify_ai", "fallback"} - set(pb.templates)
    if missing:
        raise PlaybookError(f"{path}: templates missing {sorted(missing)}")
