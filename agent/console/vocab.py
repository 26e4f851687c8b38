"""What a reviewer may write in a label: intent names from the taxonomy, entity types from the
taxonomy, and entity values in the form each type takes (ids from the lexicon and the domain
packs where the type has a closed list).

A free-text field let `not_a_real_intent` be saved, exported as training data and counted in
the dashboard's accuracy; every label now goes through `check_label` on save and on import.
Pure: the taxonomy and lexicon are read once (both are cached by agent.nlu.lexicon)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

#: entity types whose value is a whole number (taxonomy: concurrency, quantity, budget, term)
INT_TYPES = frozenset({"concurrency", "quantity", "budget", "term"})
#: types whose value must be one of the lexicon's ids (no open vocabulary in the labelling guide)
CLOSED_TYPES = frozenset({"feature", "system", "region"})
#: types with lexicon ids *and* open vocabulary (docs/nlu-labelling.md: "otherwise the caller's
#: words, normalised": lower-case, no spaces)
OPEN_TYPES = frozenset({"product", "competitor"})
#: system categories of the labelling guide beyond the lexicon's (OTHER when no category fits)
EXTRA_SYSTEMS = ("FINANCE", "EMAIL", "IM", "LMS", "OTHER")

_DAY = r"(today|tomorrow|day_after_tomorrow|next_week|this_weekend|next_month|(next_)?(monday|tuesday|wednesday|thursday|friday|saturday|sunday))"
_CALLBACK = re.compile(rf"^(later|PT(\d+H)?(\d+M)?|{_DAY}( ([01]\d|2[0-3]):[0-5]\d| morning| noon| afternoon| evening)?)$")
_PHONE = re.compile(r"^\d{7,15}$")
_OPEN_WORD = re.compile(r"^[^\sA-Z]{1,40}$")


class VocabError(ValueError):
    """A label names something outside the taxonomy; the message names it."""


@dataclass(frozen=True)
class Vocabulary:
    intents: tuple[str, ...]
    descriptions: dict[str, str]
    entity_types: tuple[str, ...]
    values: dict[str, tuple[str, ...]]  # entity type -> known values (ids)

    def check_intents(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        bad = [n for n in names if n not in self.intents]
        if bad:
            raise VocabError(f"unknown intent {bad[0]!r} (not in agent/data/taxonomy.yaml)")
        return sorted(set(names), key=self.intents.index)

    def check_entity(self, typ: str, value: Any) -> tuple[str, Any]:
        """The entity as it is stored (ints as int), or VocabError naming what is wrong."""
        typ = str(typ).strip()
        if typ not in self.entity_types:
            raise VocabError(f"unknown entity type {typ!r} (taxonomy: {', '.join(self.entity_types)})")
        text = str(value).strip()
        if not text:
            raise VocabError(f"entity {typ} has no value")
        if typ in INT_TYPES:
            if not re.fullmatch(r"\d{1,12}", text):
                raise VocabError(f"entity {typ} value {text!r} is not a whole number")
            return typ, int(text)
        if typ == "phone":
            if not _PHONE.fullmatch(text):
                raise VocabError(f"entity phone value {text!r} is not 7-15 digits")
            return typ, text
        if typ == "callback_time":
            if not _CALLBACK.fullmatch(text):
                raise VocabError(
                    f"entity callback_time value {text!r} is not a callback time (tomorrow 10:00, next_monday afternoon, PT30M, later)"
                )
            return typ, text
        known = self.values.get(typ, ())
        if typ in CLOSED_TYPES and text not in known:
            raise VocabError(f"unknown {typ} {text!r} (not in the lexicon or the domain packs)")
        if typ in OPEN_TYPES and text not in known and not _OPEN_WORD.fullmatch(text):
            # open vocabulary is allowed, but in the guide's normal form, so one thing is one value
            raise VocabError(f"{typ} {text!r} is neither a known id nor a normalised name (lower-case, no spaces)")
        return typ, text

    def check_label(self, intents: Sequence[str] | None, entities: Sequence[tuple[str, Any]] | None) -> tuple[
        list[str] | None, list[tuple[str, Any]] | None
    ]:
        return (
            None if intents is None else self.check_intents(intents),
            None if entities is None else [self.check_entity(t, v) for t, v in entities],
        )

    def is_known(self, intents: Sequence[str] | None, entities: Sequence[tuple[str, Any]] | None) -> bool:
        try:
            self.check_label(intents, entities)
        except VocabError:
            return False
        return True


@lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    from agent.nlu.lexicon import load_lexicon, load_taxonomy

    tax = load_taxonomy()
    lex = load_lexicon()
    values: dict[str, tuple[str, ...]] = {}
    for kind in ("product", "feature", "competitor", "system", "region"):
        found = set(lex.values(kind))
        if kind == "system":
            found.update(EXTRA_SYSTEMS)
        values[kind] = tuple(sorted(found))
    return Vocabulary(
        intents=tax.intent_names,
        descriptions={i.name: i.description for i in tax.intents},
        entity_types=tax.entity_types,
        values=values,
    )
