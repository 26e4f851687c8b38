"""SDP offer/answer for G.711 calls (RFC 3264), on aiosipua's SDP model and negotiator."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiosipua import SdpMessage, SdpNegotiationError, build_sdp, negotiate_sdp, parse_sdp, serialize_sdp

PCMU, PCMA = 0, 8
CODEC_NAMES = {PCMU: "PCMU", PCMA: "PCMA"}


class NoCommonCodec(ValueError):
    """The offer has no G.711 codec we speak (answered with 488 Not Acceptable Here)."""


@dataclass(frozen=True)
class Answer:
    sdp: SdpMessage
    payload_type: int
    remote_rtp: tuple[str, int]
    dtmf_payload_type: int | None

    @property
    def text(self) -> str:
        return serialize_sdp(self.sdp)


def _dtmf_pt(offer: SdpMessage) -> int | None:
    audio = offer.audio
    if audio is None:
        return None
    for codec in audio.codecs:
        if (codec.encoding_name or "").lower() == "telephone-event":
            return codec.payload_type
    return None


def answer_offer(offer: SdpMessage | str, local_ip: str, rtp_port: int,
                 codecs: tuple[int, ...] = (PCMU, PCMA)) -> Answer:
    """Pick the offerer's first codec we support and build our answer; NoCommonCodec if none."""
    if isinstance(offer, str):
        try:
            offer = parse_sdp(offer)
        except Exception as exc:  # noqa: BLE001 - any parse failure is "not acceptable"
            raise NoCommonCodec(f"unparseable SDP offer: {exc}") from exc
    dtmf = _dtmf_pt(offer)
    try:
        sdp, pt = negotiate_sdp(offer, local_ip, rtp_port, supported_codecs=list(codecs),
                                dtmf_payload_type=dtmf or 0)
    except SdpNegotiationError as exc:
        raise NoCommonCodec(str(exc)) from exc
    remote = offer.rtp_address
    if remote is None:
        raise NoCommonCodec("offer has no audio address")
    _check_rtp_address(remote[0], remote[1])
    return Answer(sdp=sdp, payload_type=pt, remote_rtp=(remote[0], int(remote[1])), dtmf_payload_type=dtmf)


def _check_rtp_address(host: object, port: object) -> None:
    # RTP is sent to what the peer's SDP says.  A host that is not an IP literal would be
    # looked up by blocking DNS on the media loop, or (undecodable bytes) make the RTP socket
    # raise, which asyncio treats as fatal and closes the call's RTP socket; a port outside
    # 1-65535 does the same (found by tests/test_sip_fuzz.py).  Port 0 is a refused stream.
    try:
        ipaddress.ip_address(str(host))
    except ValueError:
        raise NoCommonCodec(f"audio address {host!r} is not an IP address") from None
    if not isinstance(port, int) or not 0 < port < 65536:
        raise NoCommonCodec(f"audio port {port!r} is not 1-65535")


def make_offer(local_ip: str, rtp_port: int, payload_type: int = PCMU) -> SdpMessage:
    return build_sdp(local_ip, rtp_port, payload_type, CODEC_NAMES[payload_type])


def remote_of_answer(answer: SdpMessage | None) -> tuple[str, int]:
    if answer is None or answer.rtp_address is None:
        raise NoCommonCodec("answer has no audio address")
    ip, port = answer.rtp_address
    _check_rtp_address(ip, port)
    return ip, int(port)


def chosen_payload_type(answer: SdpMessage | None) -> int:
    audio = answer.audio if answer is not None else None
    if audio is None:
        raise NoCommonCodec("answer has no audio media")
    for codec in audio.codecs:
        if codec.payload_type in CODEC_NAMES:
            return codec.payload_type
    raise NoCommonCodec("answer chose no G.711 codec")
