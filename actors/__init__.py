"""The logic of the call and wallet actors, which the placements host in Ray actors: plain
classes, no Ray, no database, no clock."""

from actors.call import Call, Settlement, earn_transfer_id
from actors.errors import (
    BillingError,
    CapacityExceeded,
    EngineUnavailable,
    IdempotencyConflict,
    InsufficientCoins,
    InsufficientEarnings,
    InvalidInput,
    InvariantViolation,
    PartyBusy,
    UnknownCall,
    UnknownUser,
)
from actors.money import RateCard, Transfer, check_transfer
from actors.wallet import Wallet, external_transfer_id, minute_transfer_id

__all__ = [
    "BillingError",
    "Call",
    "CapacityExceeded",
    "EngineUnavailable",
    "IdempotencyConflict",
    "InsufficientCoins",
    "InsufficientEarnings",
    "InvalidInput",
    "InvariantViolation",
    "PartyBusy",
    "RateCard",
    "Settlement",
    "Transfer",
    "UnknownCall",
    "UnknownUser",
    "Wallet",
    "check_transfer",
    "earn_transfer_id",
    "external_transfer_id",
    "minute_transfer_id",
]
