"""Parsing SIP from the wire with one error type.

aiosipua parses SIP (RFC 3261 grammar, compact headers, Content-Length reconciliation).  Its
parser raises whatever the bad input provokes (ValueError, IndexError, UnicodeError...); the
transport catches everything, but our own code and the fuzz test want one documented error,
so this thin wrapper turns any failure into `SipParseError` and caps the datagram size.
"""

from __future__ import annotations

import ipaddress

from aiosipua import SipMessage, SipRequest, SipResponse

#: the largest SIP datagram we read (a UDP datagram on a normal path is well under this)
MAX_SIP_BYTES = 65_535


class SipParseError(ValueError):
    """The bytes are not a SIP message we can act on; the message says why."""


def parse_sip(data: bytes) -> SipRequest | SipResponse:
    if len(data) > MAX_SIP_BYTES:
        raise SipParseError(f"SIP message of {len(data)} bytes exceeds {MAX_SIP_BYTES}")
    if not data.strip():
        raise SipParseError("empty SIP message")
    try:
        msg = SipMessage.parse(data)
    except RecursionError as exc:  # pragma: no cover - defensive
        raise SipParseError("SIP message nests too deeply") from exc
    except Exception as exc:  # noqa: BLE001 - the point is to normalise every parser failure
        raise SipParseError(f"{type(exc).__name__}: {exc}") from exc
    if isinstance(msg, SipRequest):
        # Touch the fields every handler reads, so that a lazily failing accessor fails here.
        try:
            _ = (msg.method, msg.call_id, msg.via, msg.cseq, msg.body)
        except Exception as exc:  # noqa: BLE001
            raise SipParseError(f"malformed request headers: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            _ = (msg.status_code, msg.call_id, msg.cseq)
        except Exception as exc:  # noqa: BLE001
            raise SipParseError(f"malformed response headers: {type(exc).__name__}: {exc}") from exc
    return msg


def unroutable(addr: tuple[object, object]) -> str | None:
    """Why a SIP message must not be sent to `addr` (None when it may).

    The destination of a response comes from the request's top Via, which the sender wrote.
    A port outside 1-65535 makes the datagram socket raise OverflowError, which asyncio treats
    as fatal and closes the agent's SIP socket: one forged request would take the listener
    down (found by tests/test_sip_fuzz.py).  A host name would be resolved by a blocking DNS
    lookup on the signalling loop; aiosipua already replaces a Via host that differs from the
    packet's source with the source address (`received`), so only IP literals are legitimate."""
    host, port = addr[0], addr[1]
    if not isinstance(port, int) or not 0 < port < 65536:
        return f"port {port!r} is not 1-65535"
    try:
        ipaddress.ip_address(str(host))
    except ValueError:
        return f"host {host!r} is not an IP address"
    return None
