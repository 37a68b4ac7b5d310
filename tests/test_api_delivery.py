"""Downloads are produced into a spool and sent from it: the spool's byte limit, its
spill to a temporary file, a producer stopped when its client leaves, and the chunks sent
with a Content-Length (headgraph/api/delivery.py), driven through ASGI receive/send."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from headgraph.api.delivery import CHUNK, SPOOL_MEMORY, Cancelled, Download, Spool
from headgraph.errors import LimitExceededError


def test_a_spool_keeps_what_was_written_past_its_memory_and_enforces_its_limit():
    spool = Spool()
    text = "é" * (SPOOL_MEMORY // 2 + 10)  # two bytes each: over the memory part
    spool.write(text)
    assert spool.size == len(text.encode())
    spool.rewind()
    data = b"".join(iter(spool.read_chunk, b""))
    assert data.decode() == text
    spool.close()
    limited = Spool(limit=10, what="this view")
    limited.write("x" * 10)
    with pytest.raises(LimitExceededError, match="this view is over .* 10 bytes"):
        limited.write("y")
    limited.close()


def _receiver(leave_after: float | None):
    async def receive():
        if leave_after is None:
            await asyncio.Event().wait()  # the client never leaves
        await asyncio.sleep(leave_after)
        return {"type": "http.disconnect"}
    return receive


def test_a_download_is_sent_whole_with_its_length():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    def produce(out: Spool) -> int:
        for i in range(20_000):
            out.write(f"{i:09d}\n")
        return 20_000

    async def run() -> int:
        async with Download(_receiver(None)) as download:
            n = await download.produce(produce, download.spool)
            await download.send(send, 200, [(b"content-type", b"text/plain")])
        return n

    assert asyncio.run(run()) == 20_000
    start, *bodies = sent
    assert dict(start["headers"])[b"content-length"] == b"200000"
    assert all(len(b["body"]) <= CHUNK for b in bodies) and len(bodies) == 4
    assert [b["more_body"] for b in bodies] == [True, True, True, False]
    assert b"".join(b["body"] for b in bodies).decode().splitlines()[-1] == "000019999"


def test_a_producer_stops_when_its_client_leaves():
    stopped = threading.Event()

    def produce(out: Spool) -> None:
        try:
            while True:  # endless, unless its writes are cancelled
                out.write("x" * 1000)
                time.sleep(0.001)
        except Cancelled:
            stopped.set()
            raise

    async def run() -> None:
        async with Download(_receiver(0.2)) as download:
            await download.produce(produce, download.spool)

    with pytest.raises(Cancelled):
        asyncio.run(run())
    assert stopped.wait(5)
