"""`catalogue.keep_fresh`: the gateway reads the workers' action catalogue from Redis, often until
it finds one, then seldom; Redis failing never ends it, and a cancellation always does."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from websockets_gateway.catalogue import Catalogue, keep_fresh

from .fakes import CATALOGUE, run


def test_it_reads_often_until_it_finds_a_catalogue_then_seldom():
    async def scenario():
        catalogue = Catalogue()
        answers = [None, RedisConnectionError("down"), b"not a catalogue", CATALOGUE.encode()]
        reads = []

        async def read():
            reads.append(asyncio.get_running_loop().time())
            answer = answers.pop(0) if answers else CATALOGUE.encode()
            if isinstance(answer, Exception):
                raise answer
            return answer

        task = asyncio.create_task(keep_fresh(catalogue, read, interval=60.0, first_interval=0.01))
        while len(reads) < 4:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Four reads a first interval apart (None, Redis down, garbage, found), then none for a minute.
        assert len(reads) == 4
        assert catalogue.action_label("new_message") == "new_message"

    run(scenario())


def test_a_cancellation_the_redis_client_swallows_still_ends_it():
    # On Python 3.11 a wait_for inside the client can swallow a cancellation: the read returns as
    # if nothing happened. Without the loop's own check, the gateway's shutdown waited for it forever.
    async def scenario():
        reading = asyncio.Event()

        async def read():
            reading.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                return None
            return None

        task = asyncio.create_task(keep_fresh(Catalogue(), read, interval=0.01, first_interval=0.01))
        await reading.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)

    run(scenario())
