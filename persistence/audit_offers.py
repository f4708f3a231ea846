"""The rules of offers that the database can show, each a query counting its violations (added
to `audit.CHECKS`; what a call's offer charged and earned is checked with its price,
`audit.CHARGED`), and how the ledger tells a minute a credit paid in its grace."""

from __future__ import annotations

OFFER_CHECKS: list[tuple[str, str]] = [
    (
        "offers whose budget counters disagree with their claims and calls, or over budget",
        """SELECT count(*) FROM offers o
           LEFT JOIN (SELECT offer_id, sum(minutes) FILTER (WHERE NOT settled) AS held
                      FROM offer_claims GROUP BY offer_id) k USING (offer_id)
           LEFT JOIN (SELECT offer_id, sum(offer_minutes_used) AS used FROM calls
                      WHERE offer_id IS NOT NULL AND status <> 'ongoing'
                      GROUP BY offer_id) c USING (offer_id)
           WHERE o.minutes_reserved <> coalesce(k.held, 0)
              OR o.minutes_used <> coalesce(c.used, 0)
              OR o.minutes_reserved + o.minutes_used > o.budget_minutes""",
    ),
    (
        "offers taken beyond their per-user limit, outside their window or call types, by a "
        "call that was not the payer's first (with the listener), or unclaimed",
        """SELECT (SELECT count(*) FROM (
                     SELECT k.offer_id, k.user_id FROM offer_claims k JOIN offers o USING (offer_id)
                     GROUP BY k.offer_id, k.user_id, o.per_user_max
                     HAVING count(*) > o.per_user_max) x)
                + (SELECT count(*) FROM calls c JOIN offers o USING (offer_id)
                   LEFT JOIN offer_claims k ON k.call_id = c.call_id
                   WHERE c.connected_at < o.valid_from OR c.connected_at >= o.valid_until
                      OR NOT c.call_type = ANY(o.call_types)
                      OR c.offer_pays <> o.pays_listener
                      OR k.call_id IS NULL OR k.offer_id <> c.offer_id
                      OR k.minutes <> c.offer_minutes OR k.user_id <> c.user_id
                      OR k.settled <> (c.status <> 'ongoing')
                      OR (o.eligible <> 'code' AND EXISTS (
                            SELECT 1 FROM calls p WHERE p.user_id = c.user_id
                              AND p.call_id <> c.call_id AND p.connected_at <= c.connected_at
                              AND (o.eligible = 'first_call' OR p.listener_id = c.listener_id)))
                      OR (o.pays_listener = 'nobody' AND NOT EXISTS (
                            SELECT 1 FROM listener_offer_optins i
                            WHERE i.listener_id = c.listener_id)))""",
    ),
    (
        "free minutes not paid from their offer's grant, or its rest not returned at the end",
        """SELECT (SELECT count(*) FROM calls c
                   LEFT JOIN ledger g ON g.transfer_id = 'offer:' || c.call_id
                   LEFT JOIN ledger r ON r.transfer_id = 'offer_return:' || c.call_id
                   WHERE c.offer_id IS NOT NULL AND (
                         g.transfer_id IS NULL OR g.tx_type <> 'offer_grant'
                      OR g.amount <> c.offer_minutes * c.rate_coins OR g.user_id <> c.user_id
                      OR g.call_id <> c.call_id OR g.created_at <> c.connected_at
                      OR (c.status <> 'ongoing' AND ((r.transfer_id IS NOT NULL)
                                                     <> (c.offer_coins_returned > 0)
                          OR r.amount <> -c.offer_coins_returned OR r.user_id <> c.user_id
                          OR r.created_at <> c.ended_at))
                      OR (c.status = 'ongoing' AND r.transfer_id IS NOT NULL)))
                + (SELECT count(*) FROM ledger l
                   WHERE l.tx_type IN ('offer_grant', 'offer_return') AND NOT EXISTS
                     (SELECT 1 FROM calls c WHERE c.offer_id IS NOT NULL
                      AND l.transfer_id IN ('offer:' || c.call_id,
                                            'offer_return:' || c.call_id)))""",
    ),
]

# A payer's coins in time order count an offer's grant as its free minutes draw it: the grant
# and the minutes it paid are left out, and its return stands for what of the prepaid free
# minutes the price did not charge (the grant's rest never was the payer's to spend).
OFFER_FREE_MINUTE = """EXISTS (SELECT 1 FROM calls c WHERE c.call_id = l.call_id
                               AND l.minute_no <= c.offer_minutes)"""
OFFER_RETURN_AS_SPENT = """l.amount + coalesce((
    SELECT (c.offer_minutes - least(c.billed_minutes, c.offer_minutes)) * c.rate_coins
    FROM calls c WHERE c.call_id = l.call_id), 0)"""

# A minute that waited in its grace is dated at the credit that paid it (its `call_resumed`
# event, written with it, says so), and is ordered as that credit's outside input is (after it:
# credits before debits), not as a minute that fell due, even when the credit came at its due
# time.
RESUMED_MINUTE = """(l.billed_at = l.created_at AND EXISTS (
    SELECT 1 FROM events e
    WHERE e.event_key = 'call_resumed:' || l.call_id || ':' || l.minute_no))"""
