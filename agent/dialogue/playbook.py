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
from agent.packs import PACKS_DIR, Pack, PackError, PackPrice, load_packs
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
    per_seat: bool = False  # price_year is per seat (account, user, terminal): times the quantity

    def total_year(self, seats: int | None) -> int:
        """The plan's price for a year; a per-seat price times the seats (at least one)."""
        return self.price_year * max(int(seats or 1), 1) if self.per_seat else self.price_year


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
    answer: str = ""  # what the bot says about the product (domain packs)
    questions: dict[str, str] = Field(default_factory=dict)  # slot -> this product's question
    domain: str = ""

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


class Move(_Model):
    """What the bot answers in a situation the playbook names (learned, then accepted by a sales
    manager with `dianxiao learn accept`): the act, whose words are `templates[act]`, and what
    the reply offers (a caller's "好的" then accepts it: demo -> book_demo, callback -> a time)."""

    act: str
    offer: str | None = None


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
    #: situation ("objection.price", or "objection.price/saas" for one product) -> the move to
    #: answer it with; a situation not listed keeps the policy's built-in answer
    moves: dict[str, Move] = Field(default_factory=dict)
    #: domain packs whose products/rivals are added behind the playbook's own ("*": every pack)
    packs: list[str] = Field(default_factory=lambda: ["*"])
    #: filled by `load_playbook` from the packs, never written in a playbook file
    pack_products: list[Product] = Field(default_factory=list)
    pack_competitors: list[Competitor] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, ignored_types=(cached_property,))

    # --- catalogue look-ups -------------------------------------------------------------

    def product(self, value: Any) -> Product | None:
        """The product a caller's value (an NLU id or a word) names, or None."""
        key = _norm(value)
        if not key:
            return None
        direct = next(
            (p for p in self.catalogue if key in {_norm(p.id), _norm(p.name), *map(_norm, p.aliases)}), None
        )
        if direct is not None:
            return direct
        found = self.plan(value)  # a version ("saas_pro", "专业版") names its product too
        return found[0] if found else None

    @property
    def catalogue(self) -> list[Product]:
        """Every product the bot can talk about: the playbook's own first, then the packs'."""
        return [*self.products, *self.pack_products]

    def plan(self, plan_id: Any) -> tuple[Product, Plan] | None:
        for prod in self.catalogue:
            plan = prod.plan(plan_id) or prod.plan_by_alias(plan_id)
            if plan is not None:
                return prod, plan
        return None

    def competitor(self, value: Any) -> Competitor | None:
        key = _norm(value)
        return next(
            (c for c in [*self.competitors, *self.pack_competitors] if key in {_norm(c.id), _norm(c.name), *map(_norm, c.aliases)}), None
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
        # the playbook's own text only: a pack product's numbers are allowed when that product is
        # the one talked about (`product_numbers`), not in every call of every domain
        own = self.model_dump(exclude={"pack_products", "pack_competitors"})
        return frozenset(numbers_in(yaml.safe_dump(own, allow_unicode=True)))

    def product_numbers(self, value: Any) -> frozenset[int | float]:
        """Every number the catalogue states about one product (prices, capacities, specs)."""
        prod = self.product(value)
        if prod is None:
            return frozenset()
        return frozenset(numbers_in(yaml.safe_dump(prod.model_dump(), allow_unicode=True)))

    @cached_property
    def prices(self) -> frozenset[int]:
        out = set()
        for p in self.catalogue:
            out |= {pl.price_year for pl in p.plans} | {a.price_year for a in p.addons}
        return frozenset(out)


def _norm(value: Any) -> str:
    return str(value).strip().lower().replace(" ", "").replace("-", "_") if value is not None else ""


def load_playbook(name_or_path: str | Path = "cloud_saas", packs_dir: Path | str | None = PACKS_DIR) -> Playbook:
    """Load a playbook by name (agent/data/playbooks/NAME.yaml) or by path to a YAML file, with
    the products and rivals of the domain packs in `packs_dir` behind its own (None: no packs)."""
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
    if raw.get("pack_products") or raw.get("pack_competitors"):
        raise PlaybookError(f"{path}: pack_products/pack_competitors come from the domain packs, not the playbook")
    if packs_dir is not None:
        try:
            packs = load_packs(packs_dir)
        except PackError as exc:
            raise PlaybookError(str(exc), hint="fix the domain pack file") from exc
        pb = with_packs(pb, packs)
    _check(pb, path)
    return pb


def _plan(p: PackPrice) -> Plan:
    return Plan(id=p.id, name=p.name, aliases=list(p.aliases), price_year=p.price_year,
                capacity=p.capacity, spec=p.spec, per_seat=p.per_seat)


def with_packs(pb: Playbook, packs: tuple[Pack, ...]) -> Playbook:
    """The playbook with the packs' products and rivals added behind its own: a product or
    rival the playbook already defines (same id) keeps the playbook's wording and prices."""
    wanted = set(pb.packs)
    own = {p.id for p in pb.products}
    products: list[Product] = []
    rivals: dict[str, Competitor] = {}
    own_rivals = {c.id for c in pb.competitors}
    for pack in packs:
        if "*" not in wanted and pack.domain not in wanted:
            continue
        for pp in pack.products:
            if pp.id in own or any(p.id == pp.id for p in products):
                continue
            products.append(Product(
                id=pp.id, name=pp.name, aliases=[pp.id, pp.name, *pp.names], sizing_slot=pp.sizing_slot,
                required_slots=list(pp.required_slots), default_plan=pp.default_plan,
                plans=[_plan(x) for x in pp.plans],
                addons=[AddOn(id=a.id, name=a.name, aliases=[a.id, *a.aliases], price_year=a.price_year)
                        for a in pp.addons],
                integrations=dict(pp.integrations), features=pack.feature_answers(pp),
                answer=pp.answer, questions=dict(pp.questions), domain=pack.domain,
            ))
        for cid, c in pack.competitors.items():
            if cid in own_rivals or cid in rivals or not c.comparison:
                continue
            rivals[cid] = Competitor(id=cid, name=c.name, aliases=[cid, c.name, *c.names], comparison=c.comparison)
    return pb.model_copy(update={"pack_products": products, "pack_competitors": list(rivals.values())})


def _check(pb: Playbook, path: Path) -> None:
    for prod in pb.catalogue:
        if prod.plan(prod.default_plan) is None:
            raise PlaybookError(f"{path}: product {prod.id} default_plan {prod.default_plan!r} is not one of its plans")
    missing = {"opening", "quote", "exit_do_not_call", "identify_ai", "fallback"} - set(pb.templates)
    if missing:
        raise PlaybookError(f"{path}: templates missing {sorted(missing)}")
    for situation, move in pb.moves.items():
        if move.act not in pb.templates:
            raise PlaybookError(f"{path}: move for {situation} says act {move.act!r}, which has no template")
