"""An operator who gets something wrong (a broker that is down, a misspelt setting, a missing
extra) sees one line on stderr that says what is wrong and what to do, and exit code 2: no
traceback to scroll through, unless they ask for it with --debug."""

from __future__ import annotations

import json

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent.errors import extras_providing

BIN = Path(sys.executable).with_name("dianxiao")
REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # A clean slate: no DIANXIAO_* from the developer's shell, logs and data under tmp_path.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DIANXIAO_")}
    return {**env, "DIANXIAO_DATA_DIR": str(tmp_path / "data"), "DIANXIAO_KAFKA_BROKER_TIMEOUT_S": "10", **extra}


def dianxiao(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `dianxiao` command in tmp_path (so ./dianxiao.toml is the test's)."""
    return subprocess.run([str(BIN), *args], cwd=tmp_path, env=_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=60)


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


# --- runtime failures -----------------------------------------------------------------------


def test_a_stage_pointed_at_a_broker_that_is_down_says_so_and_what_to_check(tmp_path):
    line = one_error_line(dianxiao(tmp_path, "stage", "nlu", "--bus", "kafka://127.0.0.1:1"))
    assert "Kafka at 127.0.0.1:1" in line
    assert "check that the broker is running" in line and "DIANXIAO_BUS" in line


def test_a_bus_url_of_an_unknown_kind_lists_the_kinds_there_are(tmp_path):
    line = one_error_line(dianxiao(tmp_path, "stage", "nlu", "--bus", "redis://x"))
    assert "unknown bus 'redis://x'" in line and "'embedded' or 'kafka://HOST:PORT" in line


@pytest.mark.parametrize("args", [["demo"], ["replay", "call-x"]], ids=["demo", "replay"])
def test_an_unknown_playbook_names_the_playbooks_there_are(tmp_path, args):
    line = one_error_line(dianxiao(tmp_path, *args, DIANXIAO_PLAYBOOK="nope"))
    assert "playbook 'nope' not found" in line and "cloud_saas" in line and "DIANXIAO_PLAYBOOK" in line


def test_a_dianxiao_toml_that_is_not_toml_is_reported_with_its_line(tmp_path):
    (tmp_path / "dianxiao.toml").write_text('bus = "embedded\n', encoding="utf-8")
    line = one_error_line(dianxiao(tmp_path, "demo"))
    assert "dianxiao.toml is not valid TOML" in line and "line 1" in line


def test_the_file_dianxiao_config_names_is_checked_too(tmp_path):
    bad = tmp_path / "prod.toml"
    bad.write_text("partitions = = 4\n", encoding="utf-8")
    assert "prod.toml is not valid TOML" in one_error_line(dianxiao(tmp_path, "demo", DIANXIAO_CONFIG=str(bad)))
    missing = one_error_line(dianxiao(tmp_path, "demo", DIANXIAO_CONFIG=str(tmp_path / "nope.toml")))
    assert "nope.toml, which is not a file" in missing


def test_a_missing_optional_extra_prints_the_pip_line_that_installs_it(tmp_path):
    # The console without its extra: uvicorn cannot be imported (None in sys.modules).
    code = "import sys; sys.modules['uvicorn'] = None; from agent.cli import main; main()"
    res = subprocess.run([sys.executable, "-c", code, "console"], cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    line = one_error_line(res)
    assert "'uvicorn'" in line and "pip install 'dianxiao[console]'" in line


def test_every_optional_dependency_maps_back_to_its_extra_in_pyproject():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    import_name = {"argon2-cffi": "argon2", "python-multipart": "multipart", "tensorflow-cpu": "tensorflow"}
    for extra, reqs in extras.items():
        for req in reqs:
            dist = req.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()
            if dist == "dianxiao":
                continue
            assert extra in extras_providing(import_name.get(dist, dist.replace("-", "_"))), (extra, dist)


def test_debug_shows_the_traceback_for_whoever_needs_it(tmp_path):
    for res in (dianxiao(tmp_path, "--debug", "stage", "nlu", "--bus", "redis://x"),
                dianxiao(tmp_path, "stage", "nlu", "--bus", "redis://x", DIANXIAO_DEBUG="1")):
        assert "Traceback" in res.stderr and "ConfigError: unknown bus" in res.stderr


def test_version_prints_the_installed_version(tmp_path):
    from importlib.metadata import version

    res = dianxiao(tmp_path, "--version")
    assert res.returncode == 0 and res.stdout.strip() == f"dianxiao {version('dianxiao')}"


# --- unknown settings -------------------------------------------------------------------------


def test_a_misspelt_key_in_dianxiao_toml_is_named_with_the_setting_meant(tmp_path):
    (tmp_path / "dianxiao.toml").write_text('playbok = "industrial_software"\n', encoding="utf-8")
    line = one_error_line(dianxiao(tmp_path, "demo"))
    assert "unknown setting 'playbok' in dianxiao.toml (did you mean playbook?)" in line


def test_a_misspelt_dianxiao_variable_is_named_with_the_setting_meant(tmp_path):
    line = one_error_line(dianxiao(tmp_path, "demo", DIANXIAO_PLAYBOK="industrial_software"))
    assert "DIANXIAO_PLAYBOK (did you mean DIANXIAO_PLAYBOOK?)" in line


def test_correct_settings_from_file_and_environment_are_accepted(tmp_path):
    (tmp_path / "dianxiao.toml").write_text('partitions = 2\nplaybook = "industrial_software"\n', encoding="utf-8")
    from agent import events as ev

    started = ev.CallStarted(call_id="settings-check", stage="caller")
    (tmp_path / "one.jsonl").write_text(json.dumps({"topic": "call.control", "event": json.loads(started.model_dump_json())}) + "\n",
                                        encoding="utf-8")
    res = dianxiao(tmp_path, "calls", "import", "one.jsonl", DIANXIAO_LOG_LEVEL="WARNING", DIANXIAO_DEBUG="0",
                   DIANXIAO_CACHE=str(tmp_path / "cache"))  # the model cache's place: not a setting, not refused
    assert res.returncode == 0, res.stderr
    assert "imported 1 events" in res.stdout
