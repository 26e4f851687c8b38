"""The agent as a SIP user agent: answers inbound INVITEs and places outbound ones.

aiosipua carries SIP itself (transactions, dialogs, 100 Trying, 2xx retransmission until ACK,
BYE/CANCEL handling, digest authentication on 401/407); aiortp carries RTP.  This module only
glues a call's signalling to its media and to the bus:

    INVITE --> SDP answer (PCMU/PCMA, else 488) --> RTP session --> CallStarted + audio.in
    audio.out / barge-in (via connectors.bridge) --> paced RTP back to the caller
    BYE / CANCEL / ACK timeout / RTP silence / max duration --> CallEnded

Everything binds to the host it is given (127.0.0.1 in tests and by default).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiosipua import (
    IncomingCall,
    OutgoingCall,
    SipDigestAuth,
    SipMessage,
    SipRequest,
    SipResponse,
    SipUAC,
    SipUAS,
    UdpSipTransport,
)

from aiosipua.transport import _UdpProtocol as _LibUdpProtocol

from agent.bus.base import Bus
from connectors.bridge import BusBridge
from connectors.rtp.media import CallMedia
from connectors.sip.message import MAX_SIP_BYTES, unroutable
from connectors.sip.sdp import (
    PCMA,
    PCMU,
    NoCommonCodec,
    answer_offer,
    chosen_payload_type,
    make_offer,
    remote_of_answer,
)

log = structlog.get_logger("dianxiao.sip")
STAGE = "sip"


class _UdpProtocol(_LibUdpProtocol):
    # aiosipua asserts isinstance(transport, asyncio.DatagramTransport), which the selector
    # datagram transport of Python 3.11 is not (its class hierarchy changed in 3.12).
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._udp_transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) > MAX_SIP_BYTES:
            return
        super().datagram_received(data, addr)


class AckingUAC(SipUAC):
    """aiosipua's UAC plus the ACK for non-2xx final responses to an INVITE.

    RFC 3261 17.1.1.3: the INVITE client transaction must ACK a 3xx-6xx (same branch, the
    response's To tag).  aiosipua does not, so a strict server (sipp, most registrars) keeps
    retransmitting its 401/407/486 and drops our authenticated retry as out of sequence."""

    def handle_response(self, response: SipResponse, addr: tuple[str, int]) -> None:
        call = self._calls.get(response.call_id or "")
        cseq = response.cseq
        if call is not None and cseq is not None and cseq.method == "INVITE" and response.status_code >= 300:
            invite = call.invite
            ack = (
                f"ACK {invite.uri} SIP/2.0\r\n"
                f"Via: {invite.get_header('via')}\r\n"
                "Max-Forwards: 70\r\n"
                f"From: {invite.get_header('from')}\r\n"
                f"To: {response.get_header('to')}\r\n"
                f"Call-ID: {invite.call_id}\r\n"
                f"CSeq: {cseq.seq} ACK\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            self.transport.send(SipMessage.parse(ack), call.remote_addr)
        super().handle_response(response, addr)


class LoopbackUdpTransport(UdpSipTransport):
    """aiosipua's UDP transport, started with the protocol above; learns its real port."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), local_addr=self.local_addr)
        self._udp_transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("sockname")[:2]
        self.local_addr = (host, port)

    def send(self, message: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        why = unroutable(addr)  # a forged Via port would otherwise close this socket for good
        if why is not None:
            log.warning("SIP message not sent", reason=why)
            return
        super().send(message, addr)


class DialError(RuntimeError):
    """An outbound call was not answered: `status` is the SIP code (408 when nobody answered)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass
class SipAgentConfig:
    host: str = "127.0.0.1"
    port: int = 5060
    user: str = "dianxiao"
    codecs: tuple[int, ...] = (PCMU, PCMA)
    #: hang up when no RTP arrived for this long (the peer vanished without a BYE)
    rtp_timeout_s: float = 15.0
    max_call_s: float = 1800.0
    ring_timeout_s: float = 30.0
    #: ring (180) this long before answering; 0 answers at once
    answer_delay_s: float = 0.0
    #: calls up at once (admission control); 0 = no limit.  Past it an INVITE is refused with
    #: `busy_status` and Retry-After, so that every admitted call is answered in time
    max_calls: int = 0
    busy_status: int = 486
    retry_after_s: int = 30


@dataclass
class SipCall:
    call_id: str  # the bus call id
    sip_call_id: str
    direction: str
    media: CallMedia
    leg: IncomingCall | OutgoingCall
    started_at: float
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str | None = None
    watchdog: asyncio.Task[None] | None = None


def bus_call_id(sip_call_id: str) -> str:
    """A short, stable bus key for a SIP Call-ID (which may be long and contain any token)."""
    return "sip-" + hashlib.sha1(sip_call_id.encode()).hexdigest()[:20]


class _Sink:
    """The bridge's handle on one SIP call's outbound audio."""

    def __init__(self, agent: "SipAgent", call: SipCall) -> None:
        self.agent, self.call = agent, call

    def enqueue(self, payload_pcmu: bytes) -> None:
        self.call.media.enqueue(payload_pcmu)

    def flush(self) -> int:
        return self.call.media.flush()

    async def hangup(self, reason: str) -> None:
        # The bot ended the call: let its last words play out, then BYE.
        asyncio.create_task(self.agent._bot_hangup(self.call, reason))

    def mark(self, on_reached) -> None:  # type: ignore[no-untyped-def]
        self.call.media.pacer.mark(on_reached)


class SipAgent:
    def __init__(self, bus: Bus, config: SipAgentConfig | None = None, *, campaign: str | None = None,
                 bridge: Any = None) -> None:
        self.bus = bus
        self.config = config or SipAgentConfig()
        self.campaign = campaign
        # `bridge` is given when the agent runs on its own media thread (connectors.threaded)
        self.bridge = bridge or BusBridge(bus, STAGE)
        self.calls: dict[str, SipCall] = {}  # by SIP Call-ID
        self.rejected: list[tuple[str, int]] = []  # (sip call id, status) of refused INVITEs
        self.cancelled: set[str] = set()  # SIP Call-IDs the caller cancelled before we answered
        self.registrations: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.transport: UdpSipTransport | None = None
        self.uas: SipUAS | None = None
        self.uac: SipUAC | None = None
        self._admitting = 0  # INVITEs accepted for admission whose media is still being set up
        self.admitted = 0
        self.refused_busy = 0
        self.metrics: Any = None  # agent.observability.Metrics, when the serving process has one

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.local_addr

    async def start(self) -> None:
        self.transport = LoopbackUdpTransport(local_addr=(self.config.host, self.config.port))
        self.uac = AckingUAC(self.transport)
        # retransmitted INVITEs absorbed, merged ones refused (482), re-INVITE hold/resume
        from connectors.sip.dialogs import InviteGuardUAS, answer_reinvite

        self.uas = InviteGuardUAS(self.transport, uac=self.uac, user_agent="dianxiao")
        self.uas.on_reinvite = lambda leg: self._spawn(answer_reinvite(self, leg))
        self.uas.on_invite = lambda call: self._spawn(self._answer(call))
        self.uas.on_bye = self._on_bye
        self.uas.on_cancel = self._on_cancel
        self.uas.on_ack_timeout = lambda call: self._spawn(self._end_by_sip_id(call.call_id, "ack_timeout", bye=True))
        await self.uas.start()
        await self.bridge.start()
        log.info("SIP agent listening", address="%s:%d" % self.address)

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            await self._end(call, "shutdown", bye=True)
        for reg in self.registrations:
            reg.unregister()
        await self.bridge.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.uas is not None:
            await self.uas.stop()

    async def __aenter__(self) -> "SipAgent":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- inbound -----------------------------------------------------------------------

    def at_capacity(self) -> bool:
        return bool(self.config.max_calls) and len(self.calls) + self._admitting >= self.config.max_calls

    async def _answer(self, leg: IncomingCall) -> None:
        if self.at_capacity():
            # Refuse now, cleanly, rather than answer a call the agent cannot serve in time: the
            # caller's side (trunk, dialler) retries after Retry-After or routes elsewhere.
            status = self.config.busy_status
            leg._send_response(status, "Busy Here" if status == 486 else "Service Unavailable",
                               extra_headers={"Retry-After": str(self.config.retry_after_s)})
            leg.dialog.terminate()
            self.rejected.append((leg.call_id, status))
            self.refused_busy += 1
            if self.metrics is not None:
                self.metrics.calls_refused.labels(STAGE).inc()
            log.info("INVITE refused: at capacity", sip_call_id=leg.call_id, calls=len(self.calls),
                     max_calls=self.config.max_calls, status=status)
            return
        self._admitting += 1
        try:
            await self._admit(leg)
        finally:
            self._admitting -= 1

    async def _admit(self, leg: IncomingCall) -> None:
        sip_id = leg.call_id
        if leg.sdp_offer is None:
            # Offerless INVITEs (offer in the ACK) are rare on trunks and not supported here.
            leg.reject(488, "Not Acceptable Here")
            self.rejected.append((sip_id, 488))
            return
        try:
            probe = answer_offer(leg.sdp_offer, self.config.host, 0, self.config.codecs)
        except NoCommonCodec as exc:
            log.info("INVITE refused: no common codec", sip_call_id=sip_id, reason=str(exc))
            leg.reject(488, "Not Acceptable Here")
            self.rejected.append((sip_id, 488))
            return
        if self.config.answer_delay_s > 0:
            leg.ringing()
            await asyncio.sleep(self.config.answer_delay_s)
            if sip_id in self.cancelled:
                log.info("caller cancelled while ringing", sip_call_id=sip_id)
                return
        cid = bus_call_id(sip_id)
        media = await CallMedia.open(
            self.config.host, probe.payload_type, self._frames_to(cid), remote=probe.remote_rtp,
            on_dtmf=self._dtmf_to(cid),
            dtmf_payload_type=probe.dtmf_payload_type or 101,
        )
        answer = answer_offer(leg.sdp_offer, self.config.host, media.local_port, self.config.codecs)
        call = SipCall(cid, sip_id, "inbound", media, leg, asyncio.get_running_loop().time())
        self.calls[sip_id] = call
        await self.bridge.call_started(cid, _Sink(self, call), direction="inbound", caller=leg.caller,
                                       campaign=self.campaign, metadata={"sip_call_id": sip_id,
                                                                         "codec": "PCMA" if answer.payload_type == PCMA else "PCMU"})
        leg.accept(answer.sdp)
        self.admitted += 1
        if self.metrics is not None:
            self.metrics.calls_admitted.labels(STAGE).inc()
        call.watchdog = asyncio.create_task(self._watch(call))
        log.info("call answered", call_id=cid, caller=leg.caller, codec=answer.payload_type)

    def _dtmf_to(self, cid: str):  # type: ignore[no-untyped-def]
        def pressed(digit: str, duration: int) -> None:
            # RFC 4733 durations are in RTP timestamp units: 8 per ms at 8 kHz
            log.info("DTMF", call_id=cid, digit=digit, duration_ms=duration // 8)
            self._spawn(self.bridge.dtmf(cid, digit, duration // 8, "rtp"))

        return pressed

    def _frames_to(self, cid: str):  # type: ignore[no-untyped-def]
        async def publish(frames: list[tuple[int, bytes]]) -> None:
            await self.bridge.caller_audio(cid, frames)

        return publish

    def _on_bye(self, leg: Any, request: SipRequest) -> None:
        self._spawn(self._end_by_sip_id(leg.call_id, "caller_hangup"))

    def _on_cancel(self, request: SipRequest, addr: tuple[str, int]) -> None:
        self.cancelled.add(request.call_id or "")
        self._spawn(self._end_by_sip_id(request.call_id or "", "cancelled"))

    # --- outbound ----------------------------------------------------------------------

    async def dial(self, to_uri: str, remote: tuple[str, int], *, auth: tuple[str, str] | None = None,
                   ring_timeout_s: float | None = None, metadata: dict[str, Any] | None = None) -> SipCall:
        """Call `to_uri` through `remote` (a proxy or the callee).  Raises DialError when the
        call is refused (486 busy, 403...) or not answered in time (408, after a CANCEL)."""
        assert self.uac is not None
        media = await CallMedia.open(self.config.host, PCMU, self._late_frames(), remote=None)
        host, port = self.address
        leg = self.uac.send_invite(
            f"sip:{self.config.user}@{host}:{port}", to_uri, remote, make_offer(host, media.local_port),
            user_agent="dianxiao", auth=SipDigestAuth(*auth) if auth else None,
        )
        try:
            await leg.wait_answered(ring_timeout_s or self.config.ring_timeout_s)
        except TimeoutError:
            leg.cancel(self.uac)
            await media.close()
            raise DialError(408, "no answer") from None
        except RuntimeError:
            await media.close()
            raise DialError(leg._reject_code, leg._reject_reason) from None
        try:
            pt = chosen_payload_type(leg.sdp_answer)
            remote_rtp = remote_of_answer(leg.sdp_answer)
        except NoCommonCodec as exc:
            leg.hangup(self.uac)
            await media.close()
            raise DialError(488, str(exc)) from None
        media.set_payload_type(pt)
        media.set_remote(remote_rtp)
        cid = bus_call_id(leg.call_id)
        media.bind_publisher(self._frames_to(cid))
        call = SipCall(cid, leg.call_id, "outbound", media, leg, asyncio.get_running_loop().time())
        self.calls[leg.call_id] = call
        await self.bridge.call_started(cid, _Sink(self, call), direction="outbound", caller=to_uri,
                                       campaign=self.campaign, metadata={"sip_call_id": leg.call_id, **(metadata or {})})
        call.watchdog = asyncio.create_task(self._watch(call))
        return call

    def _late_frames(self):  # type: ignore[no-untyped-def]
        async def drop(frames: list[tuple[int, bytes]]) -> None:  # early media before the call exists
            return None

        return drop

    async def register(self, registrar: tuple[str, int], aor: str, *, auth: tuple[str, str] | None = None,
                       expires: int = 300, timeout_s: float = 10.0) -> Any:
        """Bind `aor` to this agent at a registrar (digest auth on 401/407; aiosipua refreshes the
        binding before it expires).  Raises DialError with the registrar's status on refusal."""
        from aiosipua import Registration, RegistrationState

        assert self.uac is not None
        reg = Registration(self.uac, aor, registrar, expires=expires, auth=SipDigestAuth(*auth) if auth else None,
                           user_agent="dianxiao")
        outcome: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        reg.on_registered = lambda r: outcome.done() or outcome.set_result((200, "OK"))
        reg.on_failed = lambda r, code, why: outcome.done() or outcome.set_result((code, why))
        reg.register()
        try:
            code, why = await asyncio.wait_for(outcome, timeout_s)
        except asyncio.TimeoutError:
            raise DialError(408, "registrar did not answer") from None
        if reg.state != RegistrationState.REGISTERED:
            raise DialError(code, why)
        self.registrations.append(reg)
        log.info("registered", aor=aor, registrar="%s:%d" % registrar, expires=reg.granted_expires)
        return reg

    async def hangup(self, call_id: str, reason: str = "agent_hangup") -> None:
        for call in list(self.calls.values()):
            if call.call_id == call_id:
                await self._end(call, reason, bye=True)

    # --- ending ------------------------------------------------------------------------

    async def _watch(self, call: SipCall) -> None:
        loop = asyncio.get_running_loop()
        while not call.ended.is_set():
            await asyncio.sleep(0.5)
            if call.media.idle_for() > self.config.rtp_timeout_s:
                self._spawn(self._end(call, "rtp_timeout", bye=True))
                return
            if loop.time() - call.started_at > self.config.max_call_s:
                self._spawn(self._end(call, "max_duration", bye=True))
                return

    async def _bot_hangup(self, call: SipCall, reason: str, quiet_s: float = 0.3) -> None:
        # Play out the goodbye, including frames TTS is still writing: hang up once the queue
        # is empty and nothing new came for `quiet_s`.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            await call.media.pacer.drain(timeout=30)
            queued = call.media.pacer.sent + call.media.pacer.pending
            await asyncio.sleep(quiet_s)
            if call.media.pacer.pending == 0 and call.media.pacer.sent + call.media.pacer.pending == queued:
                break
        await self._end(call, reason, bye=True)

    async def _end_by_sip_id(self, sip_call_id: str, reason: str, bye: bool = False) -> None:
        call = self.calls.get(sip_call_id)
        if call is not None:
            await self._end(call, reason, bye=bye)

    async def _end(self, call: SipCall, reason: str, *, bye: bool = False) -> None:
        if self.calls.pop(call.sip_call_id, None) is None:
            return
        call.end_reason = reason
        if bye:
            if isinstance(call.leg, OutgoingCall):
                assert self.uac is not None
                call.leg.hangup(self.uac)
            else:
                call.leg.hangup()
        if call.watchdog is not None and call.watchdog is not asyncio.current_task():
            call.watchdog.cancel()
        await call.media.close()
        await self.bridge.call_ended(call.call_id, reason)  # not announced again if the agent ended it
        call.ended.set()
        log.info("call ended", call_id=call.call_id, reason=reason, frames_in=call.media.stats.frames_in,
                 frames_out=call.media.stats.frames_out, dtmf="".join(call.media.stats.dtmf))

    async def wait_ended(self, call_id: str, timeout: float) -> SipCall | None:
        """Wait until the call with this bus id ends (None when it is not live)."""
        call = next((c for c in self.calls.values() if c.call_id == call_id), None)
        if call is not None:
            await asyncio.wait_for(call.ended.wait(), timeout)
        return call
