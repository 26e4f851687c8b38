"""The sales lexicon and intent taxonomy, loaded from data/ (YAML), and a longest-match finder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from agent.packs import PACKS_DIR, load_packs
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
    # one reading per (kind, value): lexicon.yaml and a pack may both list 云服务器
    if key and not any((t.kind, t.value) == (term.kind, term.value) for t in table.setdefault(key, [])):
        table[key].append(term)


_CJK_WORD = re.compile(r"[\u4e00-\u9fff]{3,8}")


def _add_packs(table: dict[str, list[Term]], packs_dir: Path) -> list[str]:
    """Surface forms from the domain packs; returns the product names worth pinyin repair
    (all-CJK, 3+ characters: 云服物器/呼叫中新 are fixed by sound, 2-character words are not)."""
    targets: list[str] = []
    for pack in load_packs(packs_dir):
        for prod in pack.products:
            for name in [prod.name, *prod.names]:
                _add(table, name, Term("product", prod.id, pack.domain))
                if _CJK_WORD.fullmatch(name):
                    targets.append(name)
        for fid, feat in pack.features.items():
            for name in feat.names:
                _add(table, name, Term("feature", fid, pack.domain))
        for cid, comp in pack.competitors.items():
            for name in [comp.name, *comp.names]:
                _add(table, name, Term("competitor", cid, pack.domain))
    return targets


@lru_cache(maxsize=4)
def load_lexicon(path: Path = LEXICON_PATH, rewrites_path: Path = REWRITES_PATH,
                 packs_dir: Path | None = PACKS_DIR) -> Lexicon:
    """lexicon.yaml (cross-domain features, systems, regions, the first two packs' products)
    merged with every domain pack in `packs_dir` (None: lexicon.yaml alone)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    table: dict[str, list[Term]] = {}
    for pid, spec in (raw.get("products") or {}).items():
        for name in spec["names"]:
            _add(table, name, Term("product", pid, spec.get("pack")))
    for kind, section in (("feature", "features"), ("competitor", "competitors"), ("system", "systems"), ("region", "regions")):
        for value, names in (raw.get(section) or {}).items():
            for name in names:
                _add(table, name, Term(kind, str(value)))
    pack_targets = _add_packs(table, Path(packs_dir)) if packs_dir is not None else []
    rw = yaml.safe_load(rewrites_path.read_text(encoding="utf-8")) if rewrites_path.exists() else {}
    rewrites = {str(k).lower(): str(v) for k, v in {**(rw.get("dialect") or {}), **(rw.get("asr") or {})}.items()}
    return Lexicon(
        by_surface={k: tuple(v) for k, v in table.items()},
        rewrites=rewrites,
        pinyin_targets=tuple(dict.fromkeys([*(rw.get("pinyin_targets") or ()), *pack_targets])),
    )
