"""Failures an operator can fix, and how the CLI shows them: one line that says what went wrong
and what to do, exit code 2, no traceback (`dianxiao --debug …` or DIANXIAO_DEBUG=1 shows it).

Our own operator-facing errors subclass `OperatorError` and carry a `hint`; the few foreign
exceptions that are operator problems too (a missing optional extra) are translated here, so
that no command needs its own try/except for them."""

from __future__ import annotations

import difflib
import importlib.metadata
import re
from collections.abc import Iterable

EXIT_CODE = 2  # click's code for usage errors: "you asked for something that cannot work"


class OperatorError(Exception):
    """Something the operator can fix (configuration, a broker that is down, a missing extra).
    The message says what is wrong; `hint` says what to do about it."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(OperatorError, ValueError):
    """A setting (dianxiao.toml, DIANXIAO_* or a flag) has an unusable value or name."""

    hint = "fix it in dianxiao.toml (or the file DIANXIAO_CONFIG names), the DIANXIAO_* variable or the flag"


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


# Import names that differ from the distribution names pyproject.toml lists.
_DIST_OF_MODULE = {"argon2": "argon2-cffi", "multipart": "python-multipart", "tensorflow": "tensorflow-cpu"}


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "_", dist).lower()


def extras_providing(module: str) -> list[str]:
    """The optional extras (pyproject.toml's optional-dependencies, in file order) that install
    `module`, read from the installed package metadata so the two cannot drift apart."""
    wanted = _norm(_DIST_OF_MODULE.get(module, module))
    try:
        requirements = importlib.metadata.requires("dianxiao") or []
    except importlib.metadata.PackageNotFoundError:  # running from a bare source tree
        return []
    extras: list[str] = []
    for req in requirements:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;.*extra\s*==\s*['\"]([^'\"]+)['\"]", req)
        if m and _norm(m.group(1)) == wanted and m.group(2) not in extras:
            extras.append(m.group(2))
    return extras


def missing_extra(exc: ModuleNotFoundError) -> OperatorError | None:
    """A ModuleNotFoundError for a package of one of our extras, as the pip line that fixes it;
    None for any other module (that is a bug, and its traceback should be seen)."""
    module = (exc.name or "").split(".")[0]
    extras = extras_providing(module)
    if not extras:
        return None
    also = f" (it is also in: {', '.join(extras[1:])})" if len(extras) > 1 else ""
    return OperatorError(
        f"this needs the Python package {module!r}, which is not installed",
        hint=f"install the {extras[0]} extra: pip install 'dianxiao[{extras[0]}]'{also}",
    )


def one_line(exc: BaseException) -> str | None:
    """The single line to show for `exc`, or None when it is not an operator error (a bug)."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return one_line(exc.exceptions[0])
    if isinstance(exc, ModuleNotFoundError):
        exc = missing_extra(exc) or exc
    if not isinstance(exc, OperatorError):
        return None
    text = " ".join(str(exc).split())  # messages that quote a multi-line error stay on one line
    return f"error: {text}" + (f" — {exc.hint}" if exc.hint else "")
