"""What aiosipua's UAS does not do for INVITEs, and a phone network sends anyway.

* **Merged requests** (RFC 3261 §8.2.2.2).  A forking proxy can deliver two copies of one
  INVITE by different paths: same Call-ID, From tag and CSeq, no To tag, a different Via branch.
  The second copy must get **482 Loop Detected**.  aiosipua treats it as a brand-new call
  while the first is still being answered (a second `on_invite`, so two answers, two RTP
  sessions and two calls on the bus for one caller) and as an out-of-dialog request (481) once
  the first is answered.
* **Retransmissions** (RFC 3261 §17.2.1).  Over UDP a caller repeats its INVITE (same branch)
  until a response arrives; the repeat must be answered with the last response sent, not
  handled again.  aiosipua has the same double-answer problem here.
* **re-INVITE: hold and resume** (RFC 3264 §8.4, §6.1).  The caller offers `a=sendonly` or
  `a=inactive` (or the older `c=0.0.0.0`): we answer 200 with the matching direction
  (`recvonly` / `inactive`) and stop sending RTP until a later offer says `sendrecv` again;
  the RTP-silence watchdog is off while the caller does not send.  A re-INVITE we cannot
  accept gets 488 and leaves the call as it was (aiosipua's `reject` would end the dialog).
  aiosipua itself only hands a re-INVITE to a callback and answers nothing without one.

`InviteGuardUAS` is a drop-in `SipUAS`; `answer_reinvite` is the SIP agent's `on_reinvite`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiosipua import SipRequest, SipResponse, SipUAS, parse_sdp

from connectors.sip.sdp import NoCommonCodec, answer_offer

if TYPE_CHECKING:
    from aiosipua import IncomingCall, SdpMessage

    from connectors.sip.agent import SipAgent

log = structlog.get_logger("dianxiao.sip")

#: how long an INVITE is remembered for retransmission/merge detection: 64 x T1, the life of
#: an INVITE server transaction (RFC 3261 Timer H)
INVITE_MEMORY_S = 32.0
#: at most this many remembered INVITEs (a flood of distinct INVITEs cannot grow memory)
INVITE_MEMORY_MAX = 4096

_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
_DIRECTIONS = tuple(_ANSWER_DIRECTION)


def _invite_key(request: SipRequest) -> tuple[str, str, int] | None:
    """(Call-ID, From tag, CSeq number) of an INVITE: what two copies of one request share."""
    cseq = request.cseq
    from_addr = request.from_addr
    if cseq is None or from_addr is None:
        return None
    return (request.call_id or "", from_addr.tag or "", cseq.seq)


def _branch(request: SipRequest) -> str | None:
    vias = request.via
    return vias[0].branch if vias else None


@dataclass
class _Seen:
    branch: str | None
    at: float
    response: SipResponse | None = None  # the last response we sent to it (resent on a retransmission)


class InviteGuardUAS(SipUAS):
    """aiosipua's UAS with retransmitted INVITEs absorbed and merged INVITEs refused (482)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen: OrderedDict[tuple[str, str, int], _Seen] = OrderedDict()
        self.merged_refused = 0
        self.retransmissions_absorbed = 0

    def _forget_old(self, now: float) -> None:
        while self._seen:
            key, seen = next(iter(self._seen.items()))
            if now - seen.at < INVITE_MEMORY_S and len(self._seen) <= INVITE_MEMORY_MAX:
                break
            self._seen.pop(key)

    def _handle_request(self, request: SipRequest, addr: tuple[str, int]) -> None:
        # aiosipua parses CSeq, From, To and Via lazily, inside its handlers: a malformed one
        # raises there and the sender gets no answer (and retransmits).  RFC 3261 8.2: 400.
        try:
            routable = bool(request.via)  # the answer goes to the top Via: without one, none can
        except (ValueError, IndexError, KeyError, TypeError):
            routable = False
        for name, read in (("Via", lambda: request.via), ("CSeq", lambda: request.cseq),
                           ("From", lambda: request.from_addr), ("To", lambda: request.to_addr)):
            try:
                read()
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                log.info("SIP request refused: malformed header", header=name, reason=f"{type(exc).__name__}: {exc}")
                if routable and request.method.upper() != "ACK":  # an ACK is never answered
                    self._send_error(request, 400, f"Bad Request (malformed {name})")
                return
        super()._handle_request(request, addr)

    def _handle_invite(self, request: SipRequest, addr: tuple[str, int]) -> None:
        if request.body and request.content_type == "application/sdp":
            # aiosipua parses the offer inside its handler and a malformed one raises there:
            # the caller would get no answer at all and retransmit for 32 s.  Say why instead.
            try:
                parse_sdp(request.text)
            except (ValueError, IndexError, KeyError, UnicodeError) as exc:
                log.info("INVITE refused: malformed SDP", reason=f"{type(exc).__name__}: {exc}")
                self._send_error(request, 400, "Bad Request (malformed SDP)")
                return
        key = _invite_key(request)
        if key is None:
            super()._handle_invite(request, addr)
            return
        now = time.monotonic()
        self._forget_old(now)
        branch = _branch(request)
        seen = self._seen.get(key)
        if seen is not None and seen.branch == branch:
            # A retransmission: the caller has not heard us yet.  Repeat our last answer.
            self.retransmissions_absorbed += 1
            if seen.response is not None:
                self.transport.send_reply(seen.response)
            return
        to_addr = request.to_addr
        if seen is not None and not (to_addr and to_addr.tag):
            # Same request by another path (RFC 3261 8.2.2.2): the first copy is the call.
            self.merged_refused += 1
            log.info("merged INVITE refused (482)", sip_call_id=key[0], cseq=key[2], branch=branch)
            self._send_error(request, 482, "Loop Detected")
            return
        self._seen[key] = _Seen(branch, now)
        super()._handle_invite(request, addr)
        call = self._calls.get(key[0])
        if call is not None:
            _record_responses(call, self._seen[key])


def _record_responses(call: IncomingCall, seen: _Seen) -> None:
    """Remember the last response the call sends to its current INVITE, for retransmissions.
    aiosipua builds every INVITE response in `_send_response`; we wrap that one instance's
    method (the call object lives on through re-INVITEs, so the current INVITE is looked up at
    send time)."""
    if getattr(call, "_dianxiao_recording", False):
        seen_by_key = getattr(call, "_dianxiao_seen", {})
        seen_by_key[_invite_key(call.invite)] = seen
        return
    original = call._send_response
    seen_by_key: dict[Any, _Seen] = {_invite_key(call.invite): seen}

    def send_and_record(*args: Any, **kwargs: Any) -> SipResponse | None:
        response = original(*args, **kwargs)
        entry = seen_by_key.get(_invite_key(call.invite))
        if entry is not None and response is not None:
            entry.response = response
        return response

    call._send_response = send_and_record  # type: ignore[method-assign]
    call._dianxiao_recording = True  # type: ignore[attr-defined]
    call._dianxiao_seen = seen_by_key  # type: ignore[attr-defined]


# --- re-INVITE: hold / resume / new media address ------------------------------------------


def offered_direction(offer: SdpMessage) -> str:
    """The offerer's audio direction: media-level attribute, else session-level (RFC 4566),
    else sendrecv; `c=0.0.0.0` (RFC 2543 hold) means "do not send to me"."""
    audio = offer.audio
    direction = next((d for d in _DIRECTIONS if audio is not None and d in audio.attributes), None)
    if direction is None:
        direction = next((d for d in _DIRECTIONS if d in offer.attributes), "sendrecv")
    address = offer.rtp_address
    if address is not None and address[0] in ("0.0.0.0", "::") and direction in ("sendrecv", "recvonly"):
        direction = "sendonly" if direction == "sendrecv" else "inactive"
    return direction


@dataclass(frozen=True)
class MediaDirection:
    offered: str
    answered: str

    @property
    def we_send(self) -> bool:
        return self.answered in ("sendrecv", "sendonly")

    @property
    def they_send(self) -> bool:
        return self.answered in ("sendrecv", "recvonly")


def direction_for(offer: SdpMessage) -> MediaDirection:
    offered = offered_direction(offer)
    return MediaDirection(offered, _ANSWER_DIRECTION[offered])


def _set_direction(sdp: SdpMessage, direction: str) -> None:
    audio = sdp.audio
    if audio is None:
        return
    for d in _DIRECTIONS:
        audio.attributes.pop(d, None)
    audio.attributes[direction] = []


def _next_version(answer: SdpMessage, previous: SdpMessage | None) -> None:
    # RFC 3264 8: a new answer in the same session keeps the o= session id and increments its
    # version, or the peer may take it for the old one.
    if previous is None:
        return
    answer.origin.session_id = previous.origin.session_id
    try:
        answer.origin.session_version = str(int(previous.origin.session_version) + 1)
    except ValueError:
        answer.origin.session_version = str(int(time.time()))


def _refuse_reinvite(uas: SipUAS, leg: IncomingCall, status: int, reason: str) -> None:
    """Answer the re-INVITE with an error and keep the call (the dialog is not touched)."""
    response = leg.dialog.create_response(leg.invite, status, reason)
    if uas.user_agent:
        response.headers.set_single("User-Agent", uas.user_agent)
    uas.transport.send_reply(response)


async def answer_reinvite(agent: SipAgent, leg: IncomingCall) -> None:
    """The SIP agent's `on_reinvite`: hold, resume, or new media address for a live call."""
    assert agent.uas is not None
    call = agent.calls.get(leg.call_id)
    if call is None:  # a dialog the agent is no longer (or not yet) carrying a call for
        _refuse_reinvite(agent.uas, leg, 481, "Call/Transaction Does Not Exist")
        return
    request = leg.invite
    if not request.body:
        # Offerless re-INVITE (RFC 3261 14.2: we would offer in the 200 and take the answer in
        # the ACK); not supported, and refusing it leaves the call as it was.
        _refuse_reinvite(agent.uas, leg, 488, "Not Acceptable Here")
        return
    try:
        offer = parse_sdp(request.text)
        answer = answer_offer(offer, agent.config.host, call.media.local_port, agent.config.codecs)
    except (NoCommonCodec, ValueError, IndexError) as exc:
        log.info("re-INVITE refused", call_id=call.call_id, reason=str(exc))
        _refuse_reinvite(agent.uas, leg, 488, "Not Acceptable Here")
        return
    direction = direction_for(offer)
    _set_direction(answer.sdp, direction.answered)
    _next_version(answer.sdp, leg.sdp_answer)
    media = call.media
    if answer.remote_rtp[0] not in ("0.0.0.0", "::") and answer.remote_rtp != media.session.expected_source:
        media.set_remote(answer.remote_rtp)
    if answer.payload_type != media.payload_type:
        media.set_payload_type(answer.payload_type)
    # Media first, then the 200: no RTP leaves after we have told the caller we will not send.
    await media.set_direction(send=direction.we_send, expect_rtp=direction.they_send)
    leg.accept(answer.sdp)  # 200 with our answer, retransmitted until the ACK (inbound calls)
    log.info("re-INVITE answered", call_id=call.call_id, offered=direction.offered, answered=direction.answered,
             sending=direction.we_send)
