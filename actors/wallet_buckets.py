"""The wallet's coins that expire (actors/buckets.py): when a bucket is granted, and expiring
the buckets due by a time. A part of `Wallet`, kept apart."""

from __future__ import annotations

from actors import buckets as bk


class ExpiringCoins:
    """Needs the wallet's `user_id`, `balance_coins`, `buckets`, `expiring`, `debit_ms` and
    `_check`."""

    __slots__ = ()

    def grant_ms(self, now_ms: int) -> int:
        """When a bucket granted at `now_ms` is applied: after every debit from outside."""
        return max(now_ms, self.debit_ms + 1)

    def expire_through(self, at_ms: int, as_of: int) -> None:
        """Expire the buckets due by `at_ms`: their rest leaves the balance, and what expired
        waits in `expiring` with the buckets' state as of the position `as_of`."""
        if not self.buckets or self.buckets[0][bk.EXPIRES_MS] > at_ms:
            return
        ids, gone = bk.expire(self.user_id, self.buckets, at_ms)
        self.balance_coins += sum(t.amount for t in gone)
        self._check()
        if not self.expiring:
            self.expiring = []
        self.expiring.append((as_of, ids, gone, [b[:] for b in self.buckets]))

    def take_expired(self) -> list[tuple]:
        """What expired since the last time this was asked (`expiring`), emptied."""
        out, self.expiring = self.expiring, ()
        return out or []  # the list itself, not a copy; a fresh one for the shared tuple
