"""Reading what a consumer has, for tests of the buses."""

from __future__ import annotations


async def drain(consumer, want: int, tries: int = 40) -> list:
    """Records from `consumer` until `want` arrived or `tries` polls of 50 ms came back short."""
    got = []
    for _ in range(tries):
        got += await consumer.getmany(timeout_ms=50)
        if len(got) >= want:
            break
    return got
