"""The domain lexicon the ear is tuned to: products, plans, add-ons, features, competitors and
systems from the active playbook's catalogue and the NLU lexicon, sales words, the taxonomy's
cue words, Latin terms as they are spoken, and the playbook's numbers as spoken (一千并发).

Every term carries its pinyin so the corrector can compare sounds.  Built from YAML files only
(no import of the dialogue or NLU code), so it follows whatever playbook is configured."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from agent.asrfix.pinyin import Syllable, spelled_syllables, text_syllables
from agent.resources import DATA_DIR

_CJK = re.compile(r"^[\u4e00-\u9fff]+$")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]{2,}")

# Order in which kinds go into Whisper's prompt (its prompt holds ~110 tokens: what the caller
# is most likely to say and Whisper least likely to spell right goes first).
PROMPT_ORDER = ("product", "addon", "sales", "spelled", "system", "competitor", "plan", "feature", "number")


class LexiconError(ValueError):
    pass


@dataclass(frozen=True)
class DomainTerm:
    text: str  # how it is written in a corrected transcript
    kind: str  # product | plan | addon | feature | competitor | system | sales | spelled | number
    id: str  # normalised id (lexicon / catalogue) or the text itself
    sounds: tuple[tuple[Syllable, ...], ...]  # one or more pronunciations
    target: bool = True  # may the corrector write it?  (numbers: prompt only)
    source: str = "playbook"  # playbook | nlu | sales
    prompt: bool = True  # in the first round of Whisper's prompt
    # A term that sits beside a number (800并发, 预算5万): "before" = the number comes before it,
    # "after" = after it; beside a number >= number_min the corrector forgives one syllable.
    number_side: str = ""
    number_min: float = 0


@dataclass(frozen=True)
class DomainLexicon:
    terms: tuple[DomainTerm, ...]
    known_words: frozenset[str] = field(default_factory=frozenset)  # valid words never corrected away

    @property
    def surfaces(self) -> frozenset[str]:
        return frozenset(t.text for t in self.terms)

    def targets(self) -> list[DomainTerm]:
        return [t for t in self.terms if t.target]

    def prompt_terms(self, max_chars: int = 80) -> list[str]:
        """Hot-words for Whisper's prompt, most useful first, within a character budget (the
        prompt is capped at ~110 tokens; a CJK character is 1-2 tokens).  Round one takes the
        first surface of every playbook entry (by kind: products, add-ons, plans, systems...),
        round two the NLU lexicon's entries, round three second surfaces."""
        rank = {k: i for i, k in enumerate(PROMPT_ORDER)}
        seen_ids: dict[tuple[str, str], int] = {}
        rounds: list[list[DomainTerm]] = [[], [], []]
        for t in sorted(self.terms, key=lambda t: (rank.get(t.kind, len(rank)))):
            # ids (cloud_server) and lower-case Latin aliases are not how anyone writes them.
            if "_" in t.text or (t.text.isascii() and t.text.islower()):
                continue
            n = seen_ids.get((t.kind, t.id), 0)
            seen_ids[(t.kind, t.id)] = n + 1
            if n == 0:
                first = t.source == "playbook" or (t.source == "sales" and t.prompt)
                rounds[0 if first else 1].append(t)
            elif n == 1:
                rounds[2].append(t)
        chosen: list[str] = []
        used = 0
        for t in (t for r in rounds for t in r):
            if t.text not in chosen and used + len(t.text) + 1 <= max_chars:
                chosen.append(t.text)
                used += len(t.text) + 1
        return chosen


def _spoken_number(n: int) -> str:
    import cn2an

    return cn2an.an2cn(n, "low").replace("二千", "两千").replace("二万", "两万")


def _add(out: dict[tuple[str, str], DomainTerm], text: str, kind: str, id_: str, *, target: bool = True,
         source: str = "playbook") -> None:
    text = str(text).strip()
    if not text:
        return
    key = (text.lower(), kind)
    if key in out:
        return
    if _CJK.match(text):
        sounds = text_syllables(text)
        if sounds is None or len(text) < 2:
            return
        out[key] = DomainTerm(text, kind, id_, (sounds,), target, source)
    # Latin and mixed forms (ERP, 4核8G) are hot-words only; spelled forms are added separately.
    else:
        out[key] = DomainTerm(text, kind, id_, (), False, source)


def _playbook_path(playbook: str | Path) -> Path:
    path = Path(playbook)
    if not path.suffix:
        path = DATA_DIR / "playbooks" / f"{playbook}.yaml"
    if not path.is_file():
        raise LexiconError(f"playbook {str(playbook)!r} not found at {path}")
    return path


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LexiconError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise LexiconError(f"{path}: expected a mapping at the top level")
    return data


def _from_playbook(out: dict, pb: dict) -> None:
    for prod in pb.get("products") or []:
        _add(out, prod.get("name", ""), "product", prod.get("id", ""))
        for a in prod.get("aliases") or []:
            _add(out, a, "product", prod.get("id", ""))
        for plan in prod.get("plans") or []:
            _add(out, plan.get("name", ""), "plan", plan.get("id", ""))
            for a in plan.get("aliases") or []:
                _add(out, a, "plan", plan.get("id", ""))
            if plan.get("capacity"):
                spoken = _spoken_number(int(plan["capacity"]))
                _add(out, spoken + "并发", "number", str(plan["capacity"]), target=False)
        for addon in prod.get("addons") or []:
            _add(out, addon.get("name", ""), "addon", addon.get("id", ""))
            for a in addon.get("aliases") or []:
                if "_" not in str(a):  # ids listed as aliases are not words anyone says
                    _add(out, a, "addon", addon.get("id", ""))
    for comp in pb.get("competitors") or []:
        _add(out, comp.get("name", ""), "competitor", comp.get("id", ""))
        for a in comp.get("aliases") or []:
            _add(out, a, "competitor", comp.get("id", ""))


def _from_nlu_lexicon(out: dict, lex: dict) -> None:
    for pid, spec in (lex.get("products") or {}).items():
        for name in (spec or {}).get("names", []):
            _add(out, name, "product", pid, source="nlu")
    for section, kind in (("features", "feature"), ("competitors", "competitor"), ("systems", "system")):
        for id_, names in (lex.get(section) or {}).items():
            for name in names or []:
                _add(out, name, kind, id_, source="nlu")


def _taxonomy_words(tax: dict) -> set[str]:
    """Literal CJK runs of the intents' cue regexes: ordinary sales-call words (不需要, 多少钱)
    that the corrector must never rewrite into a domain term."""
    words: set[str] = set()
    for spec in (tax.get("intents") or {}).values():
        for cue in (spec or {}).get("cues") or []:
            words.update(_CJK_RUN.findall(str(cue)))
    return words


def build_lexicon(
    playbook: str | Path = "cloud_saas",
    *,
    nlu_lexicon: Path | None = DATA_DIR / "nlu" / "lexicon.yaml",
    taxonomy: Path | None = DATA_DIR / "taxonomy.yaml",
    extra_terms: Iterable[str] = (),
) -> DomainLexicon:
    out: dict[tuple[str, str], DomainTerm] = {}
    _from_playbook(out, _load_yaml(_playbook_path(playbook)))
    if nlu_lexicon is not None and nlu_lexicon.is_file():
        _from_nlu_lexicon(out, _load_yaml(nlu_lexicon))
    sales = yaml.safe_load((resources.files("agent.asrfix") / "sales_terms.yaml").read_text(encoding="utf-8"))
    for i, word in enumerate(sales.get("sales") or []):
        _add(out, word, "sales", word, source="sales")
        if i >= 5 and (word, "sales") in out:  # only the first few sales words lead the prompt
            out[(word, "sales")] = dataclasses.replace(out[(word, "sales")], prompt=False)
    for word, spec in (sales.get("beside_numbers") or {}).items():
        side = str((spec or {}).get("number", ""))
        if side not in ("before", "after") or (word, "sales") not in out:
            raise LexiconError(f"sales_terms.yaml beside_numbers: {word!r} needs number: before|after and a sales entry")
        out[(word, "sales")] = dataclasses.replace(out[(word, "sales")], number_side=side,
                                                   number_min=float(spec.get("min", 0)))
    for latin, spellings in (sales.get("spelled") or {}).items():
        out[(latin.lower(), "spelled")] = DomainTerm(
            latin, "spelled", latin.lower(), tuple(spelled_syllables(s) for s in spellings), True, "sales",
            latin in ("SaaS", "ERP", "CRM", "API")
        )
    for word in extra_terms:
        _add(out, word, "sales", word, source="sales")
    known = _taxonomy_words(_load_yaml(taxonomy)) if taxonomy is not None and taxonomy.is_file() else set()
    return DomainLexicon(tuple(out.values()), frozenset(known - {t.text for t in out.values()}))
