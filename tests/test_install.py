"""Installing the project: a plain wheel carries its data and runs from any directory, and the
environment the tests run in holds exactly the versions the lock files name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _locked(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return pins


def test_the_test_environment_holds_the_locked_versions():
    """What `make test` installed is what requirements/test.lock says, package for package, so a
    fresh machine of any CPU vendor runs the same onnxruntime, numpy and CTranslate2."""
    pins = _locked(REPO / "requirements" / "test.lock")
    assert len(pins) > 50 and "onnxruntime" in pins and "ctranslate2" in pins
    wrong = {}
    for name, version in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong[name] = (version, have)
    assert not wrong, f"installed versions differ from requirements/test.lock (run `make test` in a new venv): {wrong}"


def test_every_extra_has_a_lock_file():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for extra in project["optional-dependencies"]:
        lock = REPO / "requirements" / f"{extra}.lock"
        assert lock.exists(), f"no lock for the extra '{extra}': run `make lock`"
        assert "--hash=sha256:" in lock.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_plain_wheel_carries_its_data_and_runs_the_demo_from_another_directory(tmp_path):
    """`pip install .` (not editable) used to ship no taxonomy or playbooks: the demo failed with
    FileNotFoundError in site-packages. Build the wheel, install it on its own, run the demo
    from an unrelated directory."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("dianxiao-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("agent/data/taxonomy.yaml", "agent/data/nlu/lexicon.yaml", "agent/data/playbooks/cloud_saas.yaml",
                   "agent/data/asr/whisper-base-phone-lora.npz"):
        assert needed in names, needed

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "DIANXIAO_DATA_DIR": str(elsewhere / "state")}
    run = subprocess.run(
        [sys.executable, "-c", "import agent, sys; print(agent.__file__, file=sys.stderr); "
                               "from agent.cli import main; sys.argv = ['dianxiao', 'demo']; main()"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert str(site) in run.stderr.splitlines()[0]  # the installed copy ran, not the checkout
    assert "云服务器" in run.stdout
