"""The two kinds of failure (TigerBeetle style).

Expected failures are `BillingError`s: the caller did something the rules refuse, and nothing
changed. They subclass `ValueError` because the older API raised `ValueError` for bad input and
for insufficient coins, and callers still catch that.

A broken invariant is a bug: `InvariantViolation` is raised, the actor holding the state dies,
and it is rebuilt from PostgreSQL.
"""


class BillingError(ValueError):
    """An expected refusal. The message names what is wrong; no state was changed."""


class InvalidInput(BillingError):
    """An argument has the wrong type, sign, size or value."""


class UnknownUser(BillingError):
    """No user or listener with that id."""


class UnknownCall(BillingError):
    """No call with that id."""


class InsufficientCoins(BillingError):
    """The user's wallet cannot pay what was asked."""


class InsufficientEarnings(BillingError):
    """A withdrawal larger than the listener's earnings."""


class PartyBusy(BillingError):
    """A listener already in a call, or a user at their limit of ongoing calls."""


class IdempotencyConflict(BillingError):
    """An idempotency key reused for a different request."""


class CapacityExceeded(BillingError):
    """The placement cannot hold another actor on this node."""


class DataDirInUse(BillingError):
    """Another process started the embedded servers in this data dir and runs an engine on
    them: attach to it, or use another data dir."""


class EngineUnavailable(ConnectionError):
    """No answer now: an actor of the engine is restarting, or PostgreSQL, Redis or Ray cannot
    be reached. What was asked may or may not have happened: retry it, with the same
    idempotency key, and it happens once."""


class InvariantViolation(Exception):
    """A rule of money is broken: a bug. Never caught to carry on."""


__all__ = [
    "BillingError",
    "CapacityExceeded",
    "DataDirInUse",
    "EngineUnavailable",
    "IdempotencyConflict",
    "InsufficientCoins",
    "InsufficientEarnings",
    "InvalidInput",
    "InvariantViolation",
    "PartyBusy",
    "UnknownCall",
    "UnknownUser",
]
