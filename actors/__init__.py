"""The logic of the call and wallet actors, which the placements host in Ray actors: plain
classes, no Ray, no database, no clock."""

from actors import errors
from actors.call import Call
from actors.errors import *  # noqa: F403 - the exceptions, listed once in errors.__all__
from actors.money import RateCard, Transfer, check_transfer
from actors.settlement import Settlement, earn_transfer_id
from actors.transfer_ids import external_transfer_id, minute_transfer_id
from actors.wallet import Wallet

__all__ = [
    *errors.__all__,
    "Call",
    "RateCard",
    "Settlement",
    "Transfer",
    "Wallet",
    "check_transfer",
    "earn_transfer_id",
    "external_transfer_id",
    "minute_transfer_id",
]
