"""The bridge that streams an export from its writer thread to the ASGI ``send``: chunk
sizes, backpressure, and cancellation when the client leaves."""

from __future__ import annotations

import asyncio

from headgraph.api.streaming import Cancelled, Channel, ChunkWriter


def test_chunk_writer_sends_bounded_chunks_with_backpressure():
    async def run() -> tuple[list[bytes], int]:
        channel = Channel(asyncio.get_running_loop(), depth=2)
        sent = [0]

        def produce() -> None:
            writer = ChunkWriter(channel, chunk_chars=1000)
            for i in range(3000):
                writer.write(f"{i:09d}\n")
                sent[0] = writer.bytes_sent
            writer.flush()
            channel.close(("end", None))

        task = asyncio.create_task(asyncio.to_thread(produce))
        chunks: list[bytes] = []
        most_ahead = 0
        while (item := await channel.get())[0] == "data":
            chunks.append(item[1])
            await asyncio.sleep(0.002)  # a slow client
            most_ahead = max(most_ahead, sent[0] - sum(map(len, chunks)))
        await task
        return chunks, most_ahead

    chunks, most_ahead = asyncio.run(run())
    assert b"".join(chunks) == "".join(f"{i:09d}\n" for i in range(3000)).encode()
    assert len(chunks) == 30 and all(len(c) >= 1000 for c in chunks)
    assert most_ahead <= 2 * 1000  # never more than `depth` chunks beyond the reader


def test_a_cancelled_channel_stops_the_producer():
    async def run() -> BaseException | None:
        channel = Channel(asyncio.get_running_loop(), depth=1)
        failure: list[BaseException] = []

        def produce() -> None:
            writer = ChunkWriter(channel, chunk_chars=10)
            try:
                for _ in range(1000):
                    writer.write("x" * 10)
            except Cancelled as exc:
                failure.append(exc)

        task = asyncio.create_task(asyncio.to_thread(produce))
        await channel.get()
        channel.cancel()
        await asyncio.wait_for(task, 5)
        return failure[0] if failure else None

    assert isinstance(asyncio.run(run()), Cancelled)
