"""Admission control on the media-stream websocket (issue 17 item 4): the agent takes as many
streams as it can serve in time, and the provider's next connect, past that, is refused busy
before the upgrade -- HTTP 503 with Retry-After -- so no admitted call goes unanswered.

Stories with a real websockets client against a real server on 127.0.0.1, speaking Twilio's
media-stream JSON; no speech stages (the calls only need to start and end)."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from agent import events as ev
from agent import topics
from agent.observability import Metrics
from connectors.websocket.server import MediaStreamConfig, MediaStreamServer
from tests.test_sip_calls import log_events

TOKEN = "t0ken-for-admission"


def url(server: MediaStreamServer, token: str | None = TOKEN) -> str:
    host, port = server.address
    return f"ws://{host}:{port}/media" + (f"?token={token}" if token else "")


async def call_in(server: MediaStreamServer, stream: str) -> ClientConnection:
    """The provider connects for a new call and starts its stream."""
    ws = await connect(url(server))
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": stream,
        "start": {"accountSid": "AC1", "streamSid": stream, "callSid": f"CA-{stream}", "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    }))
    return ws


async def hang_up(ws: ClientConnection, stream: str) -> None:
    """The caller hangs up: the provider sends stop, and the agent closes the stream once the call
    has ended on its side (that close is what this waits for)."""
    await ws.send(json.dumps({"event": "stop", "sequenceNumber": "99", "streamSid": stream,
                              "stop": {"accountSid": "AC1", "callSid": f"CA-{stream}"}}))
    async with asyncio.timeout(5):
        await ws.wait_closed()
    assert ws.close_code == 1000


async def refused(target: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as err:
        async with asyncio.timeout(5):
            await connect(target)
    return err.value


async def until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Wait (polling) for something the server does after the client's last step."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def cfg(**kw) -> MediaStreamConfig:  # type: ignore[no-untyped-def]
    return MediaStreamConfig(port=0, token=TOKEN, **kw)


async def test_at_capacity_the_third_stream_is_refused_busy_with_retry_after(embedded_bus):
    async with MediaStreamServer(embedded_bus, cfg(max_calls=2, retry_after_s=17)) as server:
        first = await call_in(server, "MZa")
        second = await call_in(server, "MZb")
        busy = await refused(url(server))
        assert busy.response.status_code == 503
        assert busy.response.headers["Retry-After"] == "17"
        assert b"busy" in busy.response.body
        assert (server.active, server.refused_busy) == (2, 1)
        # the two admitted calls are untouched by the refusal: both still hang up normally
        await hang_up(first, "MZa")
        await hang_up(second, "MZb")
    assert server.admitted == 2
    control = log_events(embedded_bus, topics.CONTROL)
    started = [e.metadata["stream_id"] for e in control if isinstance(e, ev.CallStarted)]
    assert started == ["MZa", "MZb"]  # the refused stream never became a call
    assert [e.reason for e in control if isinstance(e, ev.CallEnded)] == ["caller_hangup", "caller_hangup"]


async def test_when_a_call_ends_its_slot_goes_to_the_next_stream(embedded_bus):
    async with MediaStreamServer(embedded_bus, cfg(max_calls=2)) as server:
        first = await call_in(server, "MZ1")
        second = await call_in(server, "MZ2")
        assert (await refused(url(server))).response.status_code == 503
        await hang_up(first, "MZ1")  # the agent closed MZ1 after ending its call: its slot is free
        third = await call_in(server, "MZ3")
        assert (await refused(url(server))).response.status_code == 503  # full again
        await hang_up(second, "MZ2")
        await hang_up(third, "MZ3")
    assert (server.admitted, server.refused_busy) == (3, 2)
    started = [e.metadata["stream_id"] for e in log_events(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallStarted)]
    assert started == ["MZ1", "MZ2", "MZ3"]


async def test_a_stream_that_drops_without_stop_frees_its_slot(embedded_bus):
    async with MediaStreamServer(embedded_bus, cfg(max_calls=1)) as server:
        dropped = await call_in(server, "MZx")
        await dropped.close()  # the provider's side went away: no stop message
        await until(lambda: server.active == 0)
        again = await call_in(server, "MZy")
        await hang_up(again, "MZy")
    ended = {e.call_id: e.reason for e in log_events(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallEnded)}
    assert ended == {"twilio-MZx": "stream_closed", "twilio-MZy": "caller_hangup"}


async def test_simultaneous_upgrades_past_capacity_admit_exactly_the_capacity(embedded_bus):
    async with MediaStreamServer(embedded_bus, cfg(max_calls=2)) as server:
        target = url(server)
        async with asyncio.timeout(10):
            results = await asyncio.gather(*(connect(target) for _ in range(5)), return_exceptions=True)
        admitted = [r for r in results if not isinstance(r, BaseException)]
        busy = [r for r in results if isinstance(r, InvalidStatus)]
        assert len(admitted) == 2 and len(busy) == 3, results
        assert {r.response.status_code for r in busy} == {503}
        assert (server.active, server.refused_busy) == (2, 3)
        for ws in admitted:
            await ws.close()


async def test_a_request_that_is_not_an_upgrade_does_not_keep_a_slot(embedded_bus):
    """The capacity check passes it, then the websocket handshake itself fails (no Upgrade
    header): no handler runs, and the slot is released when its connection closes."""
    async with MediaStreamServer(embedded_bus, cfg(max_calls=1)) as server:
        host, port = server.address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /media?token={TOKEN} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.split()[1].startswith(b"4")  # 426 Upgrade Required (or 400)
        writer.close()
        await until(lambda: server.active == 0)
        ws = await call_in(server, "MZok")
        await hang_up(ws, "MZok")
    assert (server.admitted, server.refused_busy) == (1, 0)


async def test_an_unauthenticated_request_at_capacity_still_gets_401(embedded_bus):
    async with MediaStreamServer(embedded_bus, cfg(max_calls=1)) as server:
        ws = await call_in(server, "MZfull")
        assert (await refused(url(server, token=None))).response.status_code == 401
        assert (await refused(url(server, token="wrong"))).response.status_code == 401
        assert (await refused(url(server))).response.status_code == 503  # the same load, authenticated
        assert (server.rejected, server.refused_busy) == (2, 1)
        await hang_up(ws, "MZfull")


async def test_admitted_and_refused_streams_are_counted_in_the_process_metrics(embedded_bus):
    metrics = Metrics()
    server = MediaStreamServer(embedded_bus, cfg(max_calls=1))
    server.metrics = metrics
    async with server:
        ws = await call_in(server, "MZm")
        for _ in range(2):
            assert (await refused(url(server))).response.status_code == 503
        await hang_up(ws, "MZm")
    value = lambda name: metrics.registry.get_sample_value(name, {"connector": "ws-twilio"})  # noqa: E731
    assert value("dianxiao_calls_admitted_total") == 1
    assert value("dianxiao_calls_refused_total") == 2


async def test_without_a_limit_every_authenticated_stream_is_admitted(embedded_bus):
    async with MediaStreamServer(embedded_bus, cfg()) as server:  # max_calls=0: no limit
        streams = [await call_in(server, f"MZ{i}") for i in range(4)]
        for i, ws in enumerate(streams):
            await hang_up(ws, f"MZ{i}")
    assert (server.admitted, server.refused_busy) == (4, 0)
