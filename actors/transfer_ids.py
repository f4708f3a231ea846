"""The ids of the transfers a wallet makes: each names what it moves money for, so the same
request or minute is the same row however often it is made (the ledger's primary key)."""


def external_transfer_id(user_id: int, key: str) -> str:
    """Idempotency keys are scoped to the account they move money in."""
    return f"ext:{user_id}:{key}"


def minute_transfer_id(call_id: int, minute_no: int) -> str:
    return f"call:{call_id}:{minute_no}"


def payout_void_id(payout_id: int) -> str:
    return f"payout:{payout_id}:void"


def refund_id(call_id: int, key: str) -> str:
    """A refund's id, and its coin transfer's: scoped to the call it refunds."""
    return f"refund:{call_id}:{key}"


def clawback_id(refund: str) -> str:
    return f"{refund}:clawback"
