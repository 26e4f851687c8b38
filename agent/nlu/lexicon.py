"""The sales lexicon and intent taxonomy, loaded from data/ (YAML), and a longest-match finder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from agent.resources import DATA_DIR

TAXONOMY_PATH = DATA_DIR / "taxonomy.yaml"
LEXICON_PATH = DATA_DIR / "nlu" / "lexicon.yaml"
REWRITES_PATH = DATA_DIR / "nlu" / "rewrites.yaml"

ENTITY_KINDS = ("product", "feature", "competitor", "system", "region")


@dataclass(frozen=True)
class Term:
    kind: str  # product | feature | competitor | system | region
    value: str
    pack: str | None = None


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    surface: str
    terms: tuple[Term, ...]  # every reading of this surface form (金蝶: system ERP or competitor)


@dataclass(frozen=True)
class IntentSpec:
    name: str
    description: str
    cues: tuple[re.Pattern[str], ...]
    unless: tuple[re.Pattern[str], ...]


@dataclass(frozen=True)
class Taxonomy:
    intents: tuple[IntentSpec, ...]
    entity_types: tuple[str, ...]

    @property
    def intent_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.intents)


@lru_cache(maxsize=4)
def load_taxonomy(path: Path = TAXONOMY_PATH) -> Taxonomy:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    intents = tuple(
        IntentSpec(
            name=name,
            description=spec.get("description", ""),
            cues=tuple(re.compile(c) for c in spec.get("cues") or ()),
            unless=tuple(re.compile(c) for c in spec.get("unless") or ()),
        )
        for name, spec in raw["intents"].items()
    )
    return Taxonomy(intents=intents, entity_types=tuple(raw["entities"]))


@dataclass(frozen=True)
class Lexicon:
    by_surface: dict[str, tuple[Term, ...]]
    rewrites: dict[str, str]
    pinyin_targets: tuple[str, ...]

    @property
    def pattern(self) -> re.Pattern[str]:
        return _surface_pattern(tuple(sorted(self.by_surface)))

    def find(self, text: str) -> list[Hit]:
        return [
            Hit(m.start(), m.end(), m.group(0), self.by_surface[m.group(0)])
            for m in self.pattern.finditer(text)
        ]

    def values(self, kind: str) -> list[str]:
        return sorted({t.value for terms in self.by_surface.values() for t in terms if t.kind == kind})


@lru_cache(maxsize=8)
def _surface_pattern(surfaces: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for s in sorted(surfaces, key=len, reverse=True):
        esc = re.escape(s)
        if re.fullmatch(r"[a-z0-9 .+-]+", s):
            esc = rf"(?<![a-z]){esc}(?![a-z])"  # 'oa' must not match inside 'goal'
        parts.append(esc)
    return re.compile("|".join(parts))


def _add(table: dict[str, list[Term]], surface: str, term: Term) -> None:
    key = str(surface).strip().lower()
    if key and term not in table.setdefault(key, []):
        table[key].append(term)


@lru_cache(maxsize=4)
def load_lexicon(path: Path = LEXICON_PATH, rewrites_path: Path = REWRITES_PATH) -> Lexicon:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    table: dict[str, list[Term]] = {}
    for pid, spec in (raw.get("products") or {}).items():
        for name in spec["names"]:
            _add(table, name, Term("product", pid, spec.get("pack")))
    for kind, section in (("feature", "features"), ("competitor", "competitors"), ("system", "systems"), ("region", "regions")):
        for value, names in (raw.get(section) or {}).items():
            for name in names:
                _add(table, name, Term(kind, str(value)))
    rw = yaml.safe_load(rewrites_path.read_text(encoding="utf-8")) if rewrites_path.exists() else {}
    rewrites = {str(k).lower(): str(v) for k, v in {**(rw.get("dialect") or {}), **(rw.get("asr") or {})}.items()}
    return Lexicon(
        by_surface={k: tuple(v) for k, v in table.items()},
        rewrites=rewrites,
        pinyin_targets=tuple(rw.get("pinyin_targets") or ()),
    )
