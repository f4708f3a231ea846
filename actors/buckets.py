"""Coins that expire (CGRateS's balances with weights and expiry). A bonus or referral bonus
topped up with an expiry is a bucket; purchased coins, and bonuses without one, never expire.
Every coin a call minute or a spend takes comes from the bucket that expires first, purchased
coins last. At its expiry the rest of a bucket leaves the wallet as its own transfer
(`expire:{bucket}`), dated at the expiry: at that instant it comes first, so a minute due before
it may use the bucket and one due at or after it may not.

Where things happen in time is a position: `ms * 4 + rank`, rank 0 before anything at that ms
(an expiry), 1 a minute due then (minute 2 on), 3 an outside input (a top-up, a spend, a call's
minute 1). A bucket's state is known as of a position (`as_of`): its grant, or the last expiry
of its wallet (a checkpoint of every bucket the wallet holds). After it, the debits draw as
`replay` says, the same on a host that reloads the wallet and in the audit.

A bucket is a list `[bucket_id, tx_type, coins_left, expires_ms, as_of]`; a wallet keeps its
buckets in order of expiry (then id) until they expire, empty ones included.
"""

from __future__ import annotations

from actors.errors import CapacityExceeded, InvalidInput
from actors.money import BONUS, COINS, EXPIRE, REFERRAL_BONUS, Transfer

BUCKET_TYPES = (BONUS, REFERRAL_BONUS)
BUCKETS_MAX = 100  # buckets a wallet holds at once; another top-up with an expiry is refused
BUCKET_LIFETIME_S_MAX = 400 * 86_400  # an expiry at most this far ahead
ID, TX_TYPE, LEFT, EXPIRES_MS, AS_OF = range(5)

BEFORE, MINUTE, OUTSIDE = 0, 1, 3


def check_expiring(tx_type: str) -> None:
    """Only bonus and referral bonus coins may expire."""
    if tx_type not in BUCKET_TYPES:
        raise InvalidInput(f"only {' and '.join(BUCKET_TYPES)} coins expire, not {tx_type}")


def position(ms: int, rank: int) -> int:
    return ms * 4 + rank


def expire_id(bucket_id: str) -> str:
    return f"expire:{bucket_id}"


def sort(buckets: list[list]) -> None:
    buckets.sort(key=lambda b: (b[EXPIRES_MS], b[ID]))


def draw(buckets: list[list], amount: int) -> None:
    """Take `amount` coins from the buckets, earliest expiry first; what they lack comes from
    the coins that never expire (the caller checked the balance). Only buckets not expired are
    here."""
    for b in buckets:
        if amount <= 0:
            return
        take = b[LEFT] if b[LEFT] < amount else amount
        b[LEFT] -= take
        amount -= take


def expire(user_id: int, buckets: list[list], at_ms: int) -> tuple[list[str], list[Transfer]]:
    """Remove the buckets that expire at or before `at_ms`: their ids, and the transfers of
    their rest (none for an empty one)."""
    ids, out = [], []
    while buckets and buckets[0][EXPIRES_MS] <= at_ms:
        b = buckets.pop(0)
        ids.append(b[ID])
        if b[LEFT]:
            e = b[EXPIRES_MS]
            out.append(
                Transfer(expire_id(b[ID]), user_id, COINS, -b[LEFT], EXPIRE, None, None, e, e)
            )
    return ids, out


def replay(buckets: list[list], debits: list[tuple[int, int]]) -> None:
    """Draw `debits` ((position, coins), in position order) from `buckets` as the wallet did:
    a debit draws from the buckets whose state is from before it (`as_of` < its position) and
    that had not expired by its time, earliest expiry first."""
    sort(buckets)
    for pos, coins in debits:
        at_ms = pos // 4
        draw([b for b in buckets if b[AS_OF] < pos and b[EXPIRES_MS] > at_ms], coins)


def minutes_affordable(
    balance: int, buckets: list[list], rate: int, first_ms: int, minute_ms: int, limit: int
) -> int:
    """How many minutes at `rate`, the first due at `first_ms`, the coins pay, when the buckets
    that expire before a minute cannot pay it (at most `limit`)."""
    if not buckets:
        return min(balance // rate, limit)
    left = [b[:] for b in buckets]
    n = 0
    while n < limit:
        due = first_ms + n * minute_ms
        balance -= sum(b[LEFT] for b in left if b[EXPIRES_MS] <= due)
        left = [b for b in left if b[EXPIRES_MS] > due]
        if balance < rate:
            break
        draw(left, rate)
        balance -= rate
        n += 1
        if not left:
            return n + min(balance // rate, limit - n)
    return n


def grant(
    buckets: list[list] | tuple, bucket_id: str, tx_type: str, coins: int, at_ms: int,
    expires_ms: int, user_id: int,
) -> list[list]:  # fmt: skip
    """`buckets` with one more, granted at `at_ms` (a list of its own in place of a wallet's
    shared empty tuple)."""
    check_expiring(tx_type)
    if expires_ms <= at_ms:
        raise InvalidInput(f"expires_at must be after the top-up, {expires_ms} <= {at_ms} ms")
    if len(buckets) >= BUCKETS_MAX:
        raise CapacityExceeded(
            f"user {user_id} holds {len(buckets)} buckets of expiring coins, the most allowed "
            f"(BUCKETS_MAX)"
        )
    out = buckets if buckets else []
    out.append([bucket_id, tx_type, coins, expires_ms, position(at_ms, OUTSIDE) - 1])
    sort(out)
    return out


def view(buckets: list[list] | tuple) -> list[dict]:
    """The buckets with coins left, as a person sees them."""
    return [
        {"bucket_id": b[ID], "tx_type": b[TX_TYPE], "coins": b[LEFT],
         "expires_at": b[EXPIRES_MS] / 1000}
        for b in buckets if b[LEFT]
    ]  # fmt: skip
