"""Where the package's runtime data lives (taxonomy, lexicons, playbooks, corpora, adapters).

The data ships inside the `agent` package (`agent/data/`), so a plain `pip install .` or a
wheel carries it; `importlib.resources` finds it wherever the package was installed."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def data_dir() -> Path:
    """The package's data folder as a real path (the package is always installed unzipped)."""
    return Path(str(files("agent") / "data"))


DATA_DIR = data_dir()
