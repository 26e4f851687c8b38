"""Two real `dianxiao stage` processes on one embedded log: the embedded bus keeps a consumer
group inside one process, so the second member of a group is refused with one clear line,
while other groups (other stages) share the file freely, and a crashed holder is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).with_name("dianxiao")


def stage(name: str, log: Path, tmp: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DIANXIAO_DATA_DIR": str(tmp / "data"), "DIANXIAO_LOG_FORMAT": "json"}
    return subprocess.Popen([str(BIN), "stage", name, "--bus", f"embedded:{log}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_started(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    for line in proc.stderr:  # the json log lines
        if b'"stage started"' in line:
            return
        assert time.monotonic() < deadline, "stage did not start"
    raise AssertionError(f"stage exited with {proc.wait()}")


def test_a_second_process_of_the_same_stage_is_refused_with_one_line_and_takes_over_after_a_crash(tmp_path: Path) -> None:
    log = tmp_path / "bus.sqlite"
    first = stage("nlu", log, tmp_path)
    other = None
    try:
        wait_started(first)

        second = stage("nlu", log, tmp_path)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 2
        lines = [l for l in err.decode().strip().splitlines() if not l.startswith("{")]  # json log lines aside
        assert len(lines) == 1, lines  # one line, no traceback
        assert "consumer group 'nlu' already runs in another process" in lines[0]
        assert f"pid {first.pid}" in lines[0] and "kafka://" in lines[0]

        # another stage (another group) shares the same log without complaint
        other = stage("dst", log, tmp_path)
        wait_started(other)

        # the holder dies without a goodbye: its lease goes with its pid
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        third = stage("nlu", log, tmp_path)
        wait_started(third)
        third.send_signal(signal.SIGTERM)
        assert third.wait(30) == 0
    finally:
        for p in (first, other):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
