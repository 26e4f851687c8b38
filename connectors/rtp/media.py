"""One call's RTP media: caller audio in (jitter buffer, G.711 decode, RFC 4733 DTMF) and bot
audio out (paced 20 ms frames).

aiortp carries the protocol (packet format, jitter buffer with reordering and loss concealment,
RTCP, RFC 4733 telephone-events).  What it does not do, and we add here:
* drop RTP from any source other than the address the peer's SDP announced (aiortp accepts
  packets from anywhere, or latches onto a new source with symmetric RTP, which would let a
  third party inject audio into a call);
* re-frame the decoded audio into exact 160-sample frames of mu-law for audio.in (concealment
  may hand us odd sizes);
* paced sending with an instant flush for barge-in (connectors.pacer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiortp import RTPSession
from aiortp.codecs import get_codec

from connectors.pacer import FramePacer

log = structlog.get_logger("dianxiao.rtp")

PCMU, PCMA = 0, 8
SAMPLES_PER_FRAME = 160  # 20 ms at 8 kHz
_PCM_FRAME_BYTES = SAMPLES_PER_FRAME * 2


class GuardedRTPSession(RTPSession):
    """An RTPSession that accepts media only from the negotiated remote address."""

    expected_source: tuple[str, int] | None = None
    dropped_foreign: int = 0
    last_packet_at: float = 0.0

    def _handle_rtp(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: D401 - aiortp hook
        if self.expected_source is not None and tuple(addr[:2]) != self.expected_source:
            self.dropped_foreign += 1
            if self.dropped_foreign in (1, 100, 1000):
                log.warning("RTP from an unexpected source dropped", source=f"{addr[0]}:{addr[1]}",
                            expected=f"{self.expected_source[0]}:{self.expected_source[1]}",
                            dropped=self.dropped_foreign)
            return
        self.last_packet_at = asyncio.get_running_loop().time()
        super()._handle_rtp(data, addr)

    def _handle_rtcp(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.expected_source is not None and addr[0] != self.expected_source[0]:
            return
        super()._handle_rtcp(data, addr)


@dataclass
class RtpStats:
    frames_in: int = 0
    frames_out: int = 0
    dtmf: list[str] = field(default_factory=list)


class CallMedia:
    """RTP for one call.  `on_frames(list[(frame_index, mulaw160)])` receives caller audio."""

    def __init__(self, session: GuardedRTPSession, payload_type: int,
                 on_frames: Callable[[list[tuple[int, bytes]]], Awaitable[None]],
                 on_dtmf: Callable[[str, int], None] | None = None) -> None:
        self.session = session
        self.payload_type = payload_type
        self._pcmu = get_codec(PCMU)
        self._wire = get_codec(payload_type)
        self._on_frames = on_frames
        self._on_dtmf = on_dtmf
        self._pcm_buf = bytearray()
        self._frame_index = 0
        self._inbox: asyncio.Queue[list[tuple[int, bytes]]] = asyncio.Queue()
        self.stats = RtpStats()
        self.pacer = FramePacer(self._send_frame)
        self._publisher: asyncio.Task[None] | None = None
        session.on_audio = self._on_audio
        session.on_dtmf = self._dtmf

    @classmethod
    async def open(cls, local_ip: str, payload_type: int,
                   on_frames: Callable[[list[tuple[int, bytes]]], Awaitable[None]],
                   remote: tuple[str, int] | None = None,
                   on_dtmf: Callable[[str, int], None] | None = None,
                   dtmf_payload_type: int = 101) -> "CallMedia":
        session = await GuardedRTPSession.create(
            local_addr=(local_ip, 0),
            remote_addr=remote or (local_ip, 9),  # discard port until the answer tells us
            payload_type=payload_type,
            dtmf_payload_type=dtmf_payload_type,
            jitter_capacity=16,
            jitter_prefetch=2,  # 40 ms of reordering slack on top of arrival jitter
        )
        media = cls(session, payload_type, on_frames, on_dtmf)
        if remote is not None:
            media.set_remote(remote)
        media._opened_at = asyncio.get_running_loop().time()
        media.pacer.start()
        media._publisher = asyncio.create_task(media._publish_loop())
        return media

    @property
    def local_port(self) -> int:
        return int(self.session._rtp_transport._transport.get_extra_info("sockname")[1])  # type: ignore[union-attr]

    def set_remote(self, remote: tuple[str, int]) -> None:
        self.session._remote_addr = remote
        self.session._remote_rtcp_addr = (remote[0], remote[1] + 1)
        self.session.expected_source = remote

    def set_payload_type(self, payload_type: int) -> None:
        """Switch the wire codec (an outbound call learns it from the answer)."""
        self.payload_type = payload_type
        self._wire = get_codec(payload_type)
        self.session._payload_type = payload_type
        if self.session._sender is not None:
            self.session._sender._payload_type = payload_type

    def bind_publisher(self, on_frames: Callable[[list[tuple[int, bytes]]], Awaitable[None]]) -> None:
        self._on_frames = on_frames

    # --- caller -> agent ---------------------------------------------------------------

    def _on_audio(self, pcm: bytes, timestamp: int) -> None:
        self._pcm_buf.extend(pcm)
        frames = []
        while len(self._pcm_buf) >= _PCM_FRAME_BYTES:
            chunk = bytes(self._pcm_buf[:_PCM_FRAME_BYTES])
            del self._pcm_buf[:_PCM_FRAME_BYTES]
            frames.append((self._frame_index, self._pcmu.encode(chunk)))
            self._frame_index += 1
        if frames:
            self.stats.frames_in += len(frames)
            self._inbox.put_nowait(frames)

    async def _publish_loop(self) -> None:
        # aiortp calls back synchronously; bus writes are async, so frames queue here and go out
        # in batches (several frames per bus write when the bus is slower than 20 ms).
        while True:
            batch = await self._inbox.get()
            while not self._inbox.empty():
                batch.extend(self._inbox.get_nowait())
            self._publishing = True
            try:
                await self._on_frames(batch)
            except Exception:  # the call goes on even if one write failed
                log.exception("publishing caller audio failed", frames=len(batch))
            finally:
                self._publishing = False

    def _dtmf(self, digit: str, duration: int) -> None:
        self.stats.dtmf.append(digit)
        if self._on_dtmf is not None:
            self._on_dtmf(digit, duration)

    # --- agent -> caller ---------------------------------------------------------------

    def enqueue(self, payload_pcmu: bytes) -> None:
        self.pacer.enqueue(payload_pcmu)

    def flush(self) -> int:
        return self.pacer.flush()

    def _send_frame(self, payload_pcmu: bytes) -> None:
        if self.payload_type != PCMU:
            payload = self._wire.encode(self._pcmu.decode(payload_pcmu))
        else:
            payload = payload_pcmu
        self.session.send_audio_auto(payload)
        self.stats.frames_out += 1

    def idle_for(self) -> float:
        """Seconds since the last accepted RTP packet (since opening when none came, or since
        the caller resumed from hold); 0 while the caller has said it will not send (hold)."""
        if not self.expect_rtp:
            return 0.0
        return asyncio.get_running_loop().time() - max(self.session.last_packet_at or self._opened_at, self._resumed_at)

    async def set_direction(self, *, send: bool, expect_rtp: bool) -> None:
        """Hold and resume (a re-INVITE's direction): `send` False stops bot audio leaving - the
        pacer stops with its queue kept, so a reply interrupted by hold goes on where it stopped
        on resume; `expect_rtp` False turns the RTP-silence watchdog off while the caller holds."""
        if send and not self.sending:
            self.pacer.start()
        elif not send and self.sending:
            await self.pacer.stop()
        self.sending = send
        if expect_rtp and not self.expect_rtp:
            self._resumed_at = asyncio.get_running_loop().time()
        self.expect_rtp = expect_rtp

    _opened_at: float = 0.0
    _resumed_at: float = 0.0
    _publishing: bool = False
    #: whether bot audio is sent (False while the caller holds the call)
    sending: bool = True
    #: whether the caller said it sends RTP (False while it holds with a=inactive or recvonly)
    expect_rtp: bool = True

    async def close(self) -> None:
        await self.pacer.stop()
        if self._publisher is not None:
            # let the last caller frames reach the bus before the call is declared over
            for _ in range(50):
                if self._inbox.empty() and not self._publishing:
                    break
                await asyncio.sleep(0.01)
            self._publisher.cancel()
            await asyncio.gather(self._publisher, return_exceptions=True)
        await self.session.close()
