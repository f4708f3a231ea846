"""LoadOnce: an actor's load from PostgreSQL runs once, and again only after it failed."""

import asyncio

import pytest

from aio.once import LoadOnce


async def test_a_failed_load_is_tried_again_and_a_good_one_is_kept():
    runs = []

    async def load():
        runs.append(1)
        await asyncio.sleep(0.01)
        if len(runs) == 1:
            raise ConnectionError("PostgreSQL away")

    ready = LoadOnce(load)
    outcomes = await asyncio.gather(ready(), ready(), return_exceptions=True)
    assert len(runs) == 1  # concurrent callers shared the one run
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    await ready()  # chaos found call actors answering that first error forever
    await ready()
    assert len(runs) == 2


async def test_a_caller_cancelled_while_waiting_does_not_cancel_the_load():
    done = asyncio.Event()

    async def load():
        await asyncio.sleep(0.05)
        done.set()

    ready = LoadOnce(load)
    waiter = asyncio.create_task(ready())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await ready()
    assert done.is_set()


def test_an_actor_restarting_or_a_server_away_is_transient_and_a_refusal_is_not():
    from ray.exceptions import ActorUnavailableError, RayActorError

    from actors import EngineUnavailable, InsufficientCoins
    from engine.runtime.raycalls import is_transient

    assert is_transient(RayActorError())
    assert is_transient(ActorUnavailableError("restarting", None))
    assert is_transient(EngineUnavailable("PostgreSQL unreachable"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(InsufficientCoins("no"))
    assert not is_transient(ValueError("bad"))
