"""Domain packs: one YAML file per sales domain (agent/data/packs/<domain>.yaml).

A pack holds what the agent knows about one domain: its products (the ids of
docs/nlu-labelling.md, the words callers use for them, ASR-ish variants), features with names
and what the bot says about them, plans with list prices, and the rivals of the domain.  Three
readers share it, so that a new domain is a new file and no code:

* the NLU lexicon (`agent.nlu.lexicon.load_lexicon`): every name becomes a surface form;
* the playbook catalogue (`agent.dialogue.playbook.load_playbook`): pack products, plans and
  rivals are added behind the playbook's own;
* the tracker reads values through both (the ids are the same everywhere).

This module only parses and validates; it imports neither the NLU nor the dialogue code."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.resources import DATA_DIR

PACKS_DIR = DATA_DIR / "packs"
#: how a list price is given; a seat price is multiplied by the seat count when quoted
PER = ("year", "month", "seat_year", "seat_month")


class PackError(ValueError):
    """A pack file is malformed; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)  # 263, 360: names


class PackPrice(_Model):
    id: str
    name: str
    aliases: list[str] = Field(default_factory=list)
    price: int = Field(gt=0)
    per: str = "year"
    capacity: int = Field(default=1, gt=0)
    spec: str = ""

    @field_validator("per")
    @classmethod
    def _per(cls, v: str) -> str:
        if v not in PER:
            raise ValueError(f"per must be one of {PER}, not {v!r}")
        return v

    @property
    def price_year(self) -> int:
        """The price for a year (of one seat, when priced per seat)."""
        return self.price * 12 if self.per.endswith("month") else self.price

    @property
    def per_seat(self) -> bool:
        return self.per.startswith("seat")


class PackProduct(_Model):
    id: str
    name: str
    names: list[str] = Field(min_length=1)  # the caller's words for it (surface forms)
    answer: str = ""  # what the bot says about the product in one breath
    sizing_slot: str = "quantity"
    required_slots: list[str] = Field(default_factory=list)
    questions: dict[str, str] = Field(default_factory=dict)  # slot -> the question for this product
    default_plan: str
    plans: list[PackPrice] = Field(min_length=1)
    addons: list[PackPrice] = Field(default_factory=list)
    integrations: dict[str, str] = Field(default_factory=dict)
    features: dict[str, str] = Field(default_factory=dict)  # product-specific feature answers


class PackFeature(_Model):
    names: list[str] = Field(default_factory=list)
    answer: str = ""


class PackCompetitor(_Model):
    name: str
    names: list[str] = Field(default_factory=list)
    comparison: str = ""


class Pack(_Model):
    domain: str
    name: str = ""
    products: list[PackProduct] = Field(default_factory=list)
    features: dict[str, PackFeature] = Field(default_factory=dict)
    competitors: dict[str, PackCompetitor] = Field(default_factory=dict)

    def feature_answers(self, product: PackProduct) -> dict[str, str]:
        """What the bot says about each feature for this product: the product's own answers
        over the domain's."""
        out = {fid: f.answer for fid, f in self.features.items() if f.answer}
        return out | dict(product.features)


@lru_cache(maxsize=8)
def load_packs(packs_dir: Path | str = PACKS_DIR) -> tuple[Pack, ...]:
    """Every `*.yaml` pack in `packs_dir`, sorted by file name; a missing directory is no packs."""
    d = Path(packs_dir)
    if not d.is_dir():
        return ()
    out = []
    for path in sorted(d.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            raw.setdefault("domain", path.stem)
            # YAML reads `"360": {...}` keys as str but bare 263 as int: ids are strings
            for section in ("features", "competitors"):
                raw[section] = {str(k): v for k, v in (raw.get(section) or {}).items()}
            pack = Pack.model_validate(raw)
        except (yaml.YAMLError, ValidationError) as exc:
            raise PackError(f"domain pack {path} is malformed: {exc}") from exc
        for prod in pack.products:
            if not any(p.id == prod.default_plan for p in prod.plans):
                raise PackError(f"{path}: product {prod.id} default_plan {prod.default_plan!r} is not one of its plans")
        out.append(pack)
    return tuple(out)
