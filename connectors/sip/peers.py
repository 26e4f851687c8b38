"""Real SIP peers from Debian (baresip, sipp) driven as subprocesses on 127.0.0.1.

Used by the tests and the benchmark to call the agent the way a phone would.  Every process
runs under `timeout` (a hung peer must never hang the suite) and is killed by its owner.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_udp_port(pairs: bool = False) -> int:
    """A currently free UDP port on loopback (an even one with a free successor when `pairs`)."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
        s.close()
        if not pairs:
            return port
        if port % 2 == 0 and port < 65000:
            try:
                for p in (port, port + 1, port + 2, port + 3):
                    t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    t.bind((LOOPBACK, p))
                    t.close()
                return port
            except OSError:
                continue
    raise RuntimeError("no free UDP port on loopback")


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


def to_caller_wav(src: Path, dst: Path) -> Path:
    """8 kHz mono 16-bit WAV (what baresip's aufile plays), resampled by sox."""
    subprocess.run(["sox", str(src), "-r", "8000", "-c", "1", "-b", "16", str(dst)], check=True, timeout=30)
    return dst


def to_headerless_ulaw(src: Path, dst: Path) -> Path:
    """Headerless 8 kHz mu-law (what sipp's rtp_stream plays: it would send a WAV header as audio)."""
    subprocess.run(["sox", str(src), "-r", "8000", "-c", "1", "-t", "ul", str(dst)], check=True, timeout=30)
    return dst


@dataclass
class PeerRun:
    returncode: int
    stdout: str
    stderr: str


async def _run(argv: list[str], cwd: Path, limit_s: float) -> PeerRun:
    proc = await asyncio.create_subprocess_exec(
        "timeout", "-k", "2", str(int(limit_s)), *argv, cwd=str(cwd),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit_s + 5)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    return PeerRun(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


class Baresip:
    """A headless baresip: plays `wav` into the call and records what it hears.

    After a call, `heard()` is the WAV of the agent's audio (sndfile's `dump-*-dec.wav`)."""

    def __init__(self, workdir: Path, wav: Path, *, port: int | None = None, user: str = "customer") -> None:
        self.dir = workdir
        self.port = port or free_udp_port()
        self.wav = wav.resolve()
        self.user = user
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config").write_text(
            "\n".join(
                [
                    f"sip_listen {LOOPBACK}:{self.port}",
                    f"net_interface {LOOPBACK}",
                    f"audio_source aufile,{self.wav}",
                    "audio_player aubridge,nil",
                    "audio_alert aubridge,nil",
                    f"snd_path {self.dir}",
                    "rtp_ports 30000-39999",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",
                    "module aufile.so",
                    "module aubridge.so",
                    "module sndfile.so",
                    "module_app account.so",
                    "module_app menu.so",
                    "",
                ]
            )
        )
        (self.dir / "accounts").write_text(
            f"<sip:{user}@{LOOPBACK}:{self.port}>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA\n"
        )

    async def dial(self, uri: str, seconds: float) -> PeerRun:
        """Call `uri`, stay at most `seconds` (the call also ends when the WAV ends)."""
        return await _run(
            ["baresip", "-f", str(self.dir), "-e", f"/dial {uri}", "-t", str(int(seconds))], self.dir, seconds + 4
        )

    def heard(self) -> list[Path]:
        return sorted(self.dir.glob("dump-*-dec.wav"))

    def sent(self) -> list[Path]:
        return sorted(self.dir.glob("dump-*-enc.wav"))


class Sipp:
    """sipp (Debian's sip-tester) with a scenario file; -m calls, then it exits."""

    def __init__(self, workdir: Path, *, port: int | None = None, media_port: int | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_udp_port()
        self.media_port = media_port or free_udp_port(pairs=True)

    def argv(self, scenario: str, target: str | None, *extra: str, calls: int = 1) -> list[str]:
        argv = ["sipp", "-i", LOOPBACK, "-mi", LOOPBACK, "-p", str(self.port), "-mp", str(self.media_port),
                "-m", str(calls), "-nostdin", "-trace_err", "-sf", scenario, *extra]
        if target:
            argv.append(target)
        return argv

    async def run(self, scenario: str, target: str | None, *extra: str, calls: int = 1, limit_s: float = 20) -> PeerRun:
        return await _run(self.argv(scenario, target, *extra, calls=calls), self.dir, limit_s)

    def start(self, scenario: str, target: str | None, *extra: str, calls: int = 1, limit_s: float = 20) -> subprocess.Popen[bytes]:
        """Start in the background (a UAS waiting for our INVITE); the caller must kill it."""
        return subprocess.Popen(
            ["timeout", "-k", "2", str(int(limit_s)), *self.argv(scenario, target, *extra, calls=calls)],
            cwd=str(self.dir), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
