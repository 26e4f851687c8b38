"""A websocket server for cloud media streams (Twilio, Telnyx): one connection = one call.

The provider connects when a call starts, streams the caller's mu-law in JSON, and plays what we
send back.  Connections must authenticate before the upgrade (token in `?token=` or an
`Authorization: Bearer` header, or, for Twilio, a valid `X-Twilio-Signature`); messages over
`max_message_bytes` close the connection (1009), as does a message that breaks the protocol.

Admission control: with `max_calls` set, a connection that authenticates while `max_calls`
streams are already admitted (upgraded and not yet ended) is refused before the upgrade with
HTTP 503 and `Retry-After: retry_after_s` -- the nearest a media stream has to SIP's 486/503: the
far end is busy and no call starts.  An unauthenticated request still gets 401 whatever the load.
What the providers do with it (their documentation, not tried against a live account): Twilio
logs error 31920 "Stream - WebSocket - Handshake Error" (the server answered with an HTTP code
other than 101) and probably posts `stream-error` to a `<Stream statusCallback>` (documented
for stream errors in general, not for this one); Telnyx posts a `streaming.failed` webhook with
`failure_reason: connection_failed`.  Neither documents honouring `Retry-After` or retrying the
connect, nor (not verified) what the call itself does next -- the application that gave them the
stream URL must route the caller elsewhere.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agent.bus.base import Bus
from connectors.bridge import BusBridge
from connectors.pacer import FramePacer
from connectors.websocket.protocols import PROVIDERS, ProtocolError, StreamEvent, twilio_signature

log = structlog.get_logger("dianxiao.websocket")
FRAME = 160  # 20 ms of 8 kHz mu-law


@dataclass
class MediaStreamConfig:
    provider: str = "twilio"
    host: str = "127.0.0.1"
    port: int = 8765
    #: shared secret a connection must present (?token= or Authorization: Bearer)
    token: str | None = None
    #: Twilio auth token: accept connections carrying a valid X-Twilio-Signature
    twilio_auth_token: str | None = None
    #: the public wss:// base URL the provider was given (Twilio signs the full URL)
    public_url: str | None = None
    max_message_bytes: int = 64 * 1024
    #: streams carried at once; past it a new connection gets HTTP 503 + Retry-After (0 = no limit)
    max_calls: int = 0
    #: the Retry-After (seconds) of a connection refused at capacity
    retry_after_s: int = 30


class _StreamSink:
    """Bot audio for one stream: paced 20 ms media messages; barge-in flushes and sends clear."""

    def __init__(self, ws: ServerConnection, provider: Any, stream_id: str) -> None:
        self.ws, self.provider, self.stream_id = ws, provider, stream_id
        self.out: asyncio.Queue[str] = asyncio.Queue()
        self.pacer = FramePacer(lambda p: self.out.put_nowait(json.dumps(provider.media(stream_id, p))))
        self.hangup_reason: str | None = None
        self.writer = asyncio.create_task(self._write())
        self.pacer.start()

    async def _write(self) -> None:
        try:
            while True:
                await self.ws.send(await self.out.get())
        except ConnectionClosed:
            return

    def enqueue(self, payload_pcmu: bytes) -> None:
        self.pacer.enqueue(payload_pcmu)

    def flush(self) -> int:
        dropped = self.pacer.flush()
        while not self.out.empty():  # media already handed to the writer but not yet sent
            self.out.get_nowait()
            dropped += 1
        self.out.put_nowait(json.dumps(self.provider.clear(self.stream_id)))  # the provider drops its buffer
        return dropped

    def mark(self, on_reached) -> None:  # type: ignore[no-untyped-def]
        self.pacer.mark(on_reached)

    async def hangup(self, reason: str) -> None:
        # Neither Twilio's nor Telnyx's stream protocol has a hang-up message: closing the
        # stream is how the agent hangs up in-band (with <Connect><Stream> and nothing after it
        # in the TwiML, Twilio then ends the call); the provider's REST hang-up is not called.
        self.hangup_reason = reason

        async def close_after_playout() -> None:
            await self.pacer.drain()
            while not self.out.empty():
                await asyncio.sleep(0.02)
            await self.ws.close(1000, f"call ended by agent: {reason}"[:120])

        asyncio.create_task(close_after_playout())

    async def close(self) -> None:
        await self.pacer.stop()
        self.writer.cancel()
        await asyncio.gather(self.writer, return_exceptions=True)


class MediaStreamServer:
    def __init__(self, bus: Bus, config: MediaStreamConfig | None = None) -> None:
        self.config = config or MediaStreamConfig()
        if self.config.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {self.config.provider!r}; known: {', '.join(PROVIDERS)}")
        if not self.config.token and not self.config.twilio_auth_token:
            raise ValueError("a media stream server needs a token or a Twilio auth token: unauthenticated streams are refused")
        self.provider = PROVIDERS[self.config.provider]
        self.bridge = BusBridge(bus, f"ws-{self.provider.name}")
        self._server: Server | None = None
        self.rejected = 0  # refused: not authenticated (401)
        self.protocol_errors = 0
        # Admitted streams: a connection is added when its upgrade is accepted (in the
        # process_request hook, which runs without yielding, so N+1 simultaneous upgrades admit
        # exactly N) and removed when its handler ends -- or, for a handshake that never reached
        # the handler, when its TCP connection is gone.
        self._streams: set[ServerConnection] = set()
        self._watchers: set[asyncio.Task[None]] = set()
        self.admitted = 0  # streams upgraded (handler started)
        self.refused_busy = 0  # refused at capacity (503)
        self.metrics: Any = None  # agent.observability.Metrics, when the serving process has one

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        sock = next(iter(self._server.sockets))
        return sock.getsockname()[:2]

    async def start(self) -> None:
        await self.bridge.start()
        self._server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self._process_request, max_size=self.config.max_message_bytes,
        )
        log.info("media stream server listening", provider=self.provider.name, address="%s:%d" % self.address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await self.bridge.stop()

    async def __aenter__(self) -> "MediaStreamServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- authentication (before the upgrade) -------------------------------------------

    def authorised(self, path: str, headers: Any) -> bool:
        cfg = self.config
        if cfg.token:
            query = parse_qs(urlsplit(path).query)
            offered = (query.get("token") or [""])[0]
            bearer = headers.get("Authorization", "")
            if bearer.startswith("Bearer "):
                offered = offered or bearer[len("Bearer "):]
            if offered and hmac.compare_digest(offered.encode(), cfg.token.encode()):
                return True
        if cfg.twilio_auth_token:
            signature = headers.get("X-Twilio-Signature", "")
            base = (cfg.public_url or f"ws://{cfg.host}:{cfg.port}").rstrip("/")
            expected = twilio_signature(cfg.twilio_auth_token, base + path)
            if signature and hmac.compare_digest(signature.encode(), expected.encode()):
                return True
        return False

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.authorised(request.path, request.headers):
            self.rejected += 1
            log.warning("media stream refused: not authenticated", path=urlsplit(request.path).path)
            return connection.respond(HTTPStatus.UNAUTHORIZED, "authentication required\n")
        if self.at_capacity():
            # Refuse before the upgrade rather than take a call the agent cannot serve in time.
            self.refused_busy += 1
            if self.metrics is not None:
                self.metrics.calls_refused.labels(self.bridge.stage).inc()
            log.info("media stream refused: at capacity", streams=len(self._streams), max_calls=self.config.max_calls)
            response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy: at capacity, retry later\n")
            response.headers["Retry-After"] = str(self.config.retry_after_s)
            return response
        self._streams.add(connection)
        # A handshake can still fail after this (not a websocket upgrade, connection lost): the
        # handler then never runs, so the slot is also released when the TCP connection closes.
        watcher = asyncio.create_task(self._release_when_closed(connection))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return None

    # --- admission control ------------------------------------------------------------

    @property
    def active(self) -> int:
        """Streams admitted and not yet ended."""
        return len(self._streams)

    def at_capacity(self) -> bool:
        return bool(self.config.max_calls) and len(self._streams) >= self.config.max_calls

    async def _release_when_closed(self, connection: ServerConnection) -> None:
        await connection.wait_closed()
        self._streams.discard(connection)

    # --- one call ----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        call_id: str | None = None
        sink: _StreamSink | None = None
        frame_index = 0
        pending = bytearray()
        reason = "stream_closed"
        self.admitted += 1
        if self.metrics is not None:
            self.metrics.calls_admitted.labels(self.bridge.stage).inc()
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    if not isinstance(msg, dict):
                        raise ProtocolError("a message must be a JSON object")
                    event: StreamEvent = self.provider.parse(msg)
                except (ValueError, ProtocolError) as exc:  # JSONDecodeError is a ValueError
                    self.protocol_errors += 1
                    log.warning("media stream protocol error", provider=self.provider.name, reason=str(exc)[:200])
                    await ws.close(1007 if isinstance(exc, json.JSONDecodeError) else 1002, str(exc)[:100])
                    reason = "protocol_error"
                    break
                if event.kind == "start" and call_id is None:
                    stream_id = event.stream_id or uuid.uuid4().hex
                    call_id = f"{self.provider.name}-{stream_id}"[:128]
                    sink = _StreamSink(ws, self.provider, stream_id)
                    await self.bridge.call_started(
                        call_id, sink, direction="inbound", caller=event.metadata.get("from"),
                        metadata={"provider": self.provider.name, "stream_id": stream_id,
                                  "provider_call_id": event.call_ref, **event.metadata},
                    )
                elif event.kind == "media" and call_id is not None and event.track.startswith("inbound"):
                    pending.extend(event.payload)
                    frames = []
                    while len(pending) >= FRAME:
                        frames.append((frame_index, bytes(pending[:FRAME])))
                        del pending[:FRAME]
                        frame_index += 1
                    await self.bridge.caller_audio(call_id, frames)
                elif event.kind == "dtmf" and call_id is not None:
                    log.info("DTMF", call_id=call_id, digit=event.name)
                    await self.bridge.dtmf(call_id, str(event.name), 0, self.provider.name)
                elif event.kind == "mark":
                    log.debug("provider played up to mark", call_id=call_id, mark=event.name)
                elif event.kind == "stop":
                    reason = "caller_hangup"
                    break
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 1009 or (exc.sent is not None and exc.sent.code == 1009):
                reason = "message_too_big"
        finally:
            try:
                if sink is not None:
                    if sink.hangup_reason is None:
                        sink.pacer.flush()
                    await sink.close()
                if call_id is not None:
                    await self.bridge.call_ended(call_id, reason)
            finally:
                self._streams.discard(ws)  # the call has ended: its slot is free
