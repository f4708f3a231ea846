"""The ledger's totals by kind, and whether coins are conserved system-wide: coins held = opening
+ what came in from outside (purchases, bonuses, offers' grants, refunds, returns) - what left
(minutes spent, expiries, offers' returns)."""

from __future__ import annotations

import asyncpg


async def ledger_totals(pool: asyncpg.Pool) -> dict:
    row = await pool.fetchrow(
        """SELECT
             coalesce(sum(amount) FILTER (WHERE tx_type IN
                        ('purchase', 'bonus', 'referral_bonus')), 0) AS coins_in,
             coalesce(-sum(amount) FILTER (WHERE tx_type = 'spend'), 0) AS coins_spent,
             coalesce(sum(amount) FILTER (WHERE tx_type = 'earn'), 0) AS paise_earned,
             coalesce(-sum(amount) FILTER (WHERE tx_type = 'withdraw'), 0) AS paise_withdrawn,
             coalesce(sum(amount) FILTER (WHERE tx_type = 'payout_void'), 0) AS paise_released,
             coalesce(sum(amount) FILTER (WHERE tx_type = 'refund'), 0) AS coins_refunded,
             coalesce(-sum(amount) FILTER (WHERE tx_type = 'clawback'), 0) AS paise_clawed_back,
             coalesce(-sum(amount) FILTER (WHERE tx_type = 'expire'), 0) AS coins_expired,
             coalesce(sum(amount) FILTER (WHERE tx_type = 'unused'), 0) AS coins_returned,
             coalesce(sum(amount) FILTER (WHERE tx_type = 'offer_grant'), 0) AS coins_offered,
             coalesce(-sum(amount) FILTER (WHERE tx_type = 'offer_return'), 0)
                 AS coins_offer_returned,
             count(*) AS transfers
           FROM ledger"""
    )
    held = await pool.fetchval("SELECT coalesce(sum(balance_coins), 0) FROM wallet_balances")
    opening = await pool.fetchval("SELECT coalesce(sum(opening_coins), 0) FROM wallets")
    out = dict(row)
    out["coins_held"] = held
    out["coins_conserved"] = (
        held
        == opening
        + out["coins_in"]
        + out["coins_refunded"]
        + out["coins_returned"]
        + out["coins_offered"]
        - out["coins_offer_returned"]
        - out["coins_spent"]
        - out["coins_expired"]
    )
    return out
