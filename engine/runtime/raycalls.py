"""The seam to Ray: actor names, handles by name, remote calls that raise the real error, bounded
fan-outs, transient errors."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable

import ray
from ray.exceptions import (
    ActorUnavailableError,
    GetTimeoutError,
    RayActorError,
    RayTaskError,
)

from actors.errors import BillingError, EngineUnavailable, InvariantViolation
from persistence.writer import TRANSIENT_ERRORS

NAMESPACE = "billing"
WRITER_NAME = "writer"


# The kinds of named actor an engine runs, each named `{kind}:{id}`.
SHARD, CALL, WALLET = "shard", "call", "wallet"
# Remote calls one fan-out (to every call or wallet actor) keeps in flight at a time.
FANOUT_MAX = 64
# How the engine's actors are made: Ray restarts them for ever (they reload from PostgreSQL);
# they take no CPU of Ray's accounting, so that as many fit as memory allows.
ACTOR_OPTIONS = {"max_restarts": -1, "max_concurrency": 1000, "num_cpus": 0}


def shard_name(index: int) -> str:
    return f"{SHARD}:{index}"


def call_name(call_id: int) -> str:
    return f"{CALL}:{call_id}"


def wallet_name(user_id: int) -> str:
    return f"{WALLET}:{user_id}"


def id_in_name(name: str, kind: str) -> int | None:
    """The id in an actor's name if it is of `kind` (`call:7` -> 7 for CALL), else None."""
    prefix, _, ident = name.partition(":")
    return int(ident) if prefix == kind and ident.isdigit() else None


def named_actors(namespace: str, kind: str) -> dict[int, str]:
    """The engine's live actors of `kind` in `namespace`, by id: name (from Ray's GCS)."""
    out = {}
    for a in ray.util.list_named_actors(all_namespaces=True):
        ident = id_in_name(a["name"], kind) if a.get("namespace") == namespace else None
        if ident is not None:
            out[ident] = a["name"]
    return out


async def fan_out(
    calls: Iterable[Callable[[], Awaitable]], return_exceptions: bool = False
) -> list:
    """Run the awaitables `calls` make, at most FANOUT_MAX at a time, answers in order."""
    gate = asyncio.Semaphore(FANOUT_MAX)

    async def one(make):
        async with gate:
            return await make()

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=return_exceptions)


def shard_of(user_id: int, shards: int) -> int:
    """The shard that hosts a person's wallet and the calls they pay: the one place this rule
    is written."""
    return user_id % shards


RAY_TRANSIENT = (RayActorError, ActorUnavailableError, GetTimeoutError)


def is_transient(exc: BaseException) -> bool:
    """The actor on the other side is restarting or unreachable: worth a retry."""
    return isinstance(exc, (*RAY_TRANSIENT, OSError))  # EngineUnavailable is a ConnectionError


def answerable(exc: BaseException) -> BaseException | None:
    """What a caller across Ray is told of `exc`, raised in an actor: its own BillingError,
    InvariantViolation or ConnectionError as it was; an actor restarting or unreachable, or
    PostgreSQL or Redis unreachable, as one retryable `EngineUnavailable`; None for anything
    else (a bug, reported as it is)."""
    if isinstance(exc, BillingError | InvariantViolation | ConnectionError):
        return exc
    if isinstance(exc, RAY_TRANSIENT):
        return EngineUnavailable(f"an engine actor is restarting: {exc}")
    if isinstance(exc, TRANSIENT_ERRORS):
        return EngineUnavailable(f"PostgreSQL or Redis unreachable: {exc}")
    return None


async def remote(ref):
    """Await a remote call, raising what `answerable` makes of the callee's error."""
    try:
        return await ref
    except RayTaskError as e:
        answer = answerable(getattr(e, "cause", None) or e)
        if answer is None:
            raise
        raise answer from None
    except RAY_TRANSIENT as e:
        raise EngineUnavailable(f"an engine actor is restarting: {e}") from e


async def ask_host(handle, op):
    """`op` on the host actor `handle` (a shard, a wallet actor), alone in its message: its
    answer, or its error raised here."""
    out = (await remote(handle.handle.remote([op])))[0]
    if isinstance(out, BaseException):
        raise out
    return out


def actor(name: str, namespace: str = NAMESPACE):
    return ray.get_actor(name, namespace=namespace)


def actor_or_none(name: str, namespace: str = NAMESPACE):
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


# Ray binds a node to the machine's address; on macOS and Windows, where it does not run
# clusters, to loopback. This variable turns that on here: the Ray processes inherit it, and a
# client that joins a Ray on 127.0.0.1 sets it too (else it looks for a node on the machine's
# address, and waits a minute for none).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only() -> None:
    from ray._private import ray_constants

    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def join_ray(address: str, namespace: str = NAMESPACE) -> None:
    """Join a running Ray cluster as a client.

    A local Ray cluster enables token authentication and keeps the token in
    ~/.ray/auth_token. Ray picks that token up by itself only for address="auto"; for an
    explicit address we ask it to do the same, unless RAY_AUTH_MODE says otherwise."""
    import logging

    host = address.removeprefix("ray://").rpartition(":")[0]
    if host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        loopback_only()  # a Ray on loopback: its node is 127.0.0.1, not the machine's address
    if address != "auto":
        try:
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available,
            )

            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        except ImportError:  # a Ray without token authentication
            pass
    ray.init(
        address=address,
        namespace=namespace,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
