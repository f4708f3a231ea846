"""Buckets of coins that expire, on the host of their wallet: what an expiry wrote goes to the
writer behind the operation that found it (one record with its transfers), and a granted
bucket is written with its top-up (one record)."""

from __future__ import annotations

from actors import buckets as bk
from actors.money import Transfer
from actors.wallet import Wallet
from persistence.client import WriterClient
from persistence.records import BUCKET, bucket_states_record, row_record


class BucketExpiries:
    def __init__(self, client: WriterClient) -> None:
        self.client = client

    def expire_due(self, w: Wallet, now_ms: int) -> None:
        """Expire `w`'s buckets due by `now_ms` (after the minutes due then), and hand the
        writer what expired, here or while its minutes were billed."""
        if w.buckets:
            w.expire_through(now_ms, bk.position(now_ms, bk.MINUTE) + 1)
        if w.expiring:
            self.client.append(self.expired_records(w))

    @staticmethod
    def expired_records(w: Wallet) -> list:
        """What expired in `w`'s buckets since it was last asked: one record per expiry."""
        return [bucket_states_record(*e) for e in w.take_expired()]

    @staticmethod
    def granted_record(w: Wallet, t: Transfer, expires_ms: int) -> list:
        """The bucket top-up `t` just granted in `w`, with `t`: one record."""
        bucket = next(b for b in w.buckets if b[bk.ID] == t.transfer_id)
        row = {"bucket_id": t.transfer_id, "user_id": t.user_id, "tx_type": t.tx_type}
        row |= {"coins": t.amount, "expires_ms": expires_ms, "as_of": bucket[bk.AS_OF]}
        return row_record(BUCKET, row, [t])
