"""The two kinds of failure (TigerBeetle style).

Expected failures are `BillingError`s: the caller did something the rules refuse, and nothing
changed. They subclass `ValueError` because the older API raised `ValueError` for bad input and
for insufficient coins, and callers still catch that.

An operator's mistake (a data dir another engine uses, no engine where one was expected) is an
`OperatorError`: not a refusal of a request, and not retryable as it is.

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


class UnknownPayout(BillingError):
    """No payout with that id."""


class UnknownKey(BillingError):
    """No API key by that name."""


class UnknownWebhook(BillingError):
    """No webhook endpoint with that id (or it was deleted)."""


class UnknownOffer(BillingError):
    """No offer with that id, or no offer has that code."""


class KeyInUse(BillingError):
    """An API key asked to revoke itself: another admin key (or the CLI) must, so that an
    admin never locks themselves out."""


class PayoutSettled(BillingError):
    """A payout already paid asked to be rejected, or rejected asked to be paid."""


class RefundExceedsBilled(BillingError):
    """A refund of more minutes than the call billed and has not refunded yet."""


class CallOngoing(BillingError):
    """What needs a call's settlement (a refund) asked of a call still ongoing."""


class PartyBusy(BillingError):
    """A listener already in a call, or a user at their limit of ongoing calls."""


class IdempotencyConflict(BillingError):
    """An idempotency key reused for a different request."""


class CapacityExceeded(BillingError):
    """A named limit is full: the placement's actors per node, or a bounded queue."""


class OperatorError(Exception):
    """The engine was started or reached the wrong way; the message says how to do it."""


class DataDirInUse(OperatorError):
    """Another process started the embedded servers in this data dir and runs an engine on
    them: attach to it, or use another data dir."""


class NotRunning(OperatorError):
    """No engine runs where one was asked for (a namespace, an address)."""


class EngineUnavailable(ConnectionError):
    """No answer now: an actor of the engine is restarting, or PostgreSQL, Redis or Ray cannot
    be reached. What was asked may or may not have happened: retry it, with the same
    idempotency key, and it happens once."""


class InvariantViolation(Exception):
    """A rule of money is broken: a bug. Never caught to carry on."""


__all__ = [
    "BillingError",
    "CallOngoing",
    "CapacityExceeded",
    "DataDirInUse",
    "EngineUnavailable",
    "IdempotencyConflict",
    "InsufficientCoins",
    "InsufficientEarnings",
    "InvalidInput",
    "InvariantViolation",
    "NotRunning",
    "OperatorError",
    "PartyBusy",
    "PayoutSettled",
    "RefundExceedsBilled",
    "UnknownCall",
    "UnknownKey",
    "UnknownOffer",
    "UnknownPayout",
    "UnknownUser",
    "UnknownWebhook",
]
