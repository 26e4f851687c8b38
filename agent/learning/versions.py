"""Playbook versions: `cloud_saas@1` is the shipped file (agent/data/playbooks/cloud_saas.yaml);
`dianxiao learn accept` writes `cloud_saas@2.yaml`, `@3` … into the version store
(DATA_DIR/playbooks, default .dianxiao/playbooks).  A version file is never rewritten, so an
A/B campaign's arm names exactly the words its calls used.  Nothing here touches the live
playbook setting: a manager switches to a version by naming it."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from agent.dialogue.playbook import PLAYBOOK_DIR, Playbook, PlaybookError, load_playbook
from agent.errors import OperatorError

_REF = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)(?:@(?P<version>\d+))?$")


class ProposalError(OperatorError, ValueError):
    hint = "run `dianxiao learn` again against the current playbook version and review the new proposal"


def parse_ref(ref: str) -> tuple[str, int | None]:
    m = _REF.match(ref.strip())
    if not m:
        raise PlaybookError(f"playbook version {ref!r} is not NAME or NAME@N (e.g. cloud_saas@2)",
                            hint="name a playbook and version like cloud_saas@2")
    return m["name"], int(m["version"]) if m["version"] else None


def versions(store: Path, name: str) -> list[int]:
    """The versions of a playbook that exist: 1 (shipped) and every accepted one."""
    out = [1] if (PLAYBOOK_DIR / f"{name}.yaml").is_file() else []
    for p in store.glob(f"{name}@*.yaml"):
        v = p.stem.split("@", 1)[1]
        if v.isdigit():
            out.append(int(v))
    return sorted(set(out))


def path_of(ref: str, store: Path) -> Path:
    """The YAML file of NAME@N (NAME alone: the newest version)."""
    name, version = parse_ref(ref)
    have = versions(store, name)
    if not have:
        known = ", ".join(sorted(p.stem for p in PLAYBOOK_DIR.glob("*.yaml")))
        raise PlaybookError(f"no playbook {name!r} (known: {known})")
    version = version or have[-1]
    if version not in have:
        raise PlaybookError(f"{name}@{version} does not exist (versions: {', '.join(f'@{v}' for v in have)})",
                            hint=f"accept a proposal to make a new version, or use one of {name}@{have[-1]} …")
    if version == 1 and not (store / f"{name}@1.yaml").is_file():
        return PLAYBOOK_DIR / f"{name}.yaml"
    return store / f"{name}@{version}.yaml"


def load_version(ref: str, store: Path) -> Playbook:
    return load_playbook(path_of(ref, store))


def raw_of(ref: str, store: Path) -> dict[str, Any]:
    return yaml.safe_load(path_of(ref, store).read_text(encoding="utf-8"))


def digest(raw: dict[str, Any]) -> str:
    return hashlib.sha256(yaml.safe_dump(raw, allow_unicode=True, sort_keys=True).encode()).hexdigest()[:16]


# --- proposals: a list of changes, each from -> to at a path ---------------------------------

_MISSING = object()


def get_path(raw: dict[str, Any], path: list[str]) -> Any:
    node: Any = raw
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def apply_changes(raw: dict[str, Any], changes: list[dict[str, Any]]) -> dict[str, Any]:
    """The playbook with each change applied; a change whose `from` is not what the playbook
    holds now (someone changed it since the proposal) is refused, naming the path."""
    out = copy.deepcopy(raw)
    for i, ch in enumerate(changes, start=1):
        try:
            path, old, new = list(ch["path"]), ch.get("from"), ch["to"]
        except (KeyError, TypeError) as exc:
            raise ProposalError(f"change {i} of the proposal is malformed (needs path, from, to): {exc}") from None
        have = get_path(out, path)
        if have != old:
            raise ProposalError(
                f"the proposal no longer applies: {'.'.join(path)} is {have!r} in the playbook, the proposal "
                f"expected {old!r}")
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if new is None:
            node.pop(path[-1], None)  # back to the built-in answer
        else:
            node[path[-1]] = new
    return out


def accept(proposal_path: Path, store: Path) -> tuple[str, Path]:
    """Write the proposal's changes as the next version of its base playbook; returns (ref, file).
    The proposal must have been made against the newest version (or apply cleanly to it)."""
    if not proposal_path.is_file():
        raise ProposalError(f"no proposal at {proposal_path}", hint="pass the proposal.yaml that `dianxiao learn` wrote")
    try:
        prop = yaml.safe_load(proposal_path.read_text(encoding="utf-8"))
        base, changes = prop["base"], prop["changes"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise ProposalError(f"{proposal_path} is not a playbook proposal: {exc}",
                            hint="pass the proposal.yaml that `dianxiao learn` wrote") from None
    if not changes:
        raise ProposalError(f"{proposal_path} proposes no change", hint="nothing to accept")
    name, _ = parse_ref(base)
    newest = f"{name}@{versions(store, name)[-1]}"
    raw = raw_of(newest, store)
    new = apply_changes(raw, changes)
    number = versions(store, name)[-1] + 1
    new["version"] = str(number)
    store.mkdir(parents=True, exist_ok=True)
    out = store / f"{name}@{number}.yaml"
    header = (f"# {name}@{number}: accepted from {proposal_path.name} (learned against {base}; applied to {newest}).\n"
              f"# Written by `dianxiao learn accept`; never edited afterwards — accept a new proposal instead.\n")
    text = header + yaml.safe_dump(new, allow_unicode=True, sort_keys=False, width=200)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_playbook(tmp)  # the new version must load (templates for every move, …)
    except PlaybookError:
        tmp.unlink()
        raise
    tmp.replace(out)
    return f"{name}@{number}", out


__all__ = ["ProposalError", "accept", "apply_changes", "digest", "get_path", "load_version", "parse_ref", "path_of",
           "raw_of", "versions"]
