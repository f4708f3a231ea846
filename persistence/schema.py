"""Versioned migrations, applied in order at start and recorded in `schema_migrations`."""

from __future__ import annotations

import asyncpg

from persistence.schema_plans import OFFER_MIGRATIONS, PLAN_TABLES, PRICE_PLAN_MIGRATIONS

# Held while migrating so that two processes starting at once do not both migrate.
MIGRATION_LOCK_KEY = 0x6269_6C6C

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "users, wallets, earnings, ledger, calls, badges",
        """
        CREATE TABLE users (
            user_id     bigserial PRIMARY KEY,
            name        text NOT NULL,
            role        text NOT NULL CHECK (role IN ('user', 'listener')),
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE wallets (
            user_id        bigint PRIMARY KEY REFERENCES users,
            opening_coins  bigint NOT NULL DEFAULT 0 CHECK (opening_coins >= 0),
            balance_coins  bigint NOT NULL DEFAULT 0 CHECK (balance_coins >= 0)
        );
        CREATE TABLE listener_earnings (
            listener_id     bigint PRIMARY KEY REFERENCES users,
            opening_paise   bigint NOT NULL DEFAULT 0 CHECK (opening_paise >= 0),
            earnings_paise  bigint NOT NULL DEFAULT 0 CHECK (earnings_paise >= 0)
        );
        -- One row per transfer. The id is deterministic (rule 2); "C" collation lets a prefix
        -- range ('call:42:' ..) use the primary key.
        CREATE TABLE ledger (
            transfer_id  text COLLATE "C" PRIMARY KEY,
            user_id      bigint NOT NULL,
            unit         text NOT NULL CHECK (unit IN ('coins', 'paise')),
            amount       bigint NOT NULL CHECK (amount <> 0),
            tx_type      text NOT NULL CHECK (tx_type IN
                           ('purchase', 'spend', 'earn', 'withdraw', 'bonus', 'referral_bonus')),
            call_id      bigint,
            minute_no    integer,
            created_at   timestamptz NOT NULL
        );
        -- Everything but call minutes, by account: idempotency keys and earnings reload from it.
        -- Call minutes (the hot path) stay out of it, so a billed minute costs one index entry.
        CREATE INDEX ledger_external_by_user ON ledger (user_id) WHERE tx_type <> 'spend';
        CREATE TABLE calls (
            call_id         bigint PRIMARY KEY,
            user_id         bigint NOT NULL REFERENCES users,
            listener_id     bigint NOT NULL REFERENCES users,
            call_type       text NOT NULL CHECK (call_type IN ('audio', 'video')),
            tier            text NOT NULL CHECK (tier IN ('basic', 'bronze', 'silver', 'gold')),
            rate_coins      bigint NOT NULL CHECK (rate_coins > 0),
            rate_paise      bigint NOT NULL CHECK (rate_paise > 0),
            status          text NOT NULL CHECK (status IN ('ongoing', 'completed', 'dropped')),
            end_reason      text,
            connected_at    timestamptz NOT NULL,
            ended_at        timestamptz,
            billed_minutes  integer NOT NULL DEFAULT 0 CHECK (billed_minutes >= 0),
            coins_spent     bigint NOT NULL DEFAULT 0 CHECK (coins_spent >= 0),
            earnings_paise  bigint NOT NULL DEFAULT 0 CHECK (earnings_paise >= 0),
            CHECK ((status = 'ongoing') = (ended_at IS NULL)),
            CHECK ((status = 'ongoing') = (end_reason IS NULL))
        );
        CREATE SEQUENCE calls_call_id_seq OWNED BY calls.call_id;
        -- Rule 8 in the database too: one ongoing call per listener.
        CREATE UNIQUE INDEX calls_one_ongoing_per_listener ON calls (listener_id)
            WHERE status = 'ongoing';
        CREATE INDEX calls_ongoing_by_user ON calls (user_id) WHERE status = 'ongoing';
        CREATE TABLE listener_badges (
            listener_id  bigint NOT NULL REFERENCES users,
            day          date NOT NULL,
            tier         text NOT NULL CHECK (tier IN ('basic', 'bronze', 'silver', 'gold')),
            minutes      integer NOT NULL CHECK (minutes >= 0),
            assigned_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (listener_id, day)
        );
        """,
    ),
    (
        2,
        "day windows over the ledger; the older system's user_calls name",
        """
        -- Badges count yesterday's minutes: a BRIN index finds a day of an append-mostly
        -- ledger for almost nothing on the hot path.
        CREATE INDEX ledger_created_brin ON ledger USING brin (created_at);
        -- The older code reads `SELECT * FROM user_calls WHERE call_id = $1`.
        CREATE VIEW user_calls AS
            SELECT call_id, user_id, listener_id, call_type, tier, rate_coins, rate_paise,
                   status, end_reason, connected_at AS start_time, ended_at AS end_time,
                   connected_at, ended_at, billed_minutes AS duration_minutes,
                   billed_minutes, coins_spent, earnings_paise
            FROM calls;
        """,
    ),
    (
        3,
        "call minutes settle into the wallet when the call ends; wallet_balances is live",
        """
        -- A billed minute is one ledger row and nothing else: the wallet row moves by a call's
        -- minutes once, when the call settles. `settled_coins` is the balance without the
        -- minutes of ongoing calls; `wallet_balances` adds them (rule 3 holds on the view).
        ALTER TABLE wallets RENAME COLUMN balance_coins TO settled_coins;
        ALTER TABLE wallets RENAME CONSTRAINT wallets_balance_coins_check
            TO wallets_settled_coins_check;
        -- Ongoing calls of a database migrated from version 2 already moved their wallets.
        UPDATE wallets w SET settled_coins = w.settled_coins - s.spent
        FROM (SELECT c.user_id, sum(l.amount) AS spent
              FROM calls c JOIN ledger l ON l.call_id = c.call_id AND l.tx_type = 'spend'
              WHERE c.status = 'ongoing' GROUP BY c.user_id) s
        WHERE w.user_id = s.user_id;
        -- The minutes of a call are one range of the primary key ('call:42:' .. 'call:42;').
        CREATE VIEW wallet_balances AS
            SELECT w.user_id, w.opening_coins, w.settled_coins,
                   coalesce(u.coins, 0)::bigint AS unsettled_coins,
                   (w.settled_coins + coalesce(u.coins, 0))::bigint AS balance_coins
            FROM wallets w
            LEFT JOIN LATERAL (
                SELECT sum(l.amount) AS coins
                FROM calls c
                JOIN LATERAL (
                    SELECT amount FROM ledger
                    WHERE transfer_id >= 'call:' || c.call_id || ':'
                      AND transfer_id < 'call:' || c.call_id || ';'
                ) l ON true
                WHERE c.user_id = w.user_id AND c.status = 'ongoing'
            ) u ON true;
        """,
    ),
    (
        4,
        "each call records its minute length, its maximum and its start key",
        """
        -- The audit checks a call's billed minutes against its own start, end and minute
        -- length, so a call records the minute it was billed by (NULL: a call from before).
        ALTER TABLE calls ADD COLUMN minute_ms integer CHECK (minute_ms > 0);
        ALTER TABLE calls ADD COLUMN max_minutes integer CHECK (max_minutes > 0);
        -- A start retried with its idempotency key returns the call it made.
        ALTER TABLE calls ADD COLUMN start_key text;
        CREATE INDEX calls_by_start_key ON calls (user_id, start_key)
            WHERE start_key IS NOT NULL;
        """,
    ),
    (
        5,
        "an outbox of call events, written in the transaction of what they report",
        """
        -- One row per event. `event_key` is what makes a replay after a crash the same event;
        -- `event_id` is the order consumers read in: the one writer commits one transaction
        -- at a time, so ids are committed in increasing order.
        CREATE TABLE events (
            event_id bigserial PRIMARY KEY,
            event_key text NOT NULL UNIQUE,
            type text NOT NULL CHECK (type IN
                ('call_started', 'low_balance', 'call_dropped', 'call_settled')),
            call_id bigint NOT NULL,
            user_id bigint NOT NULL,
            at timestamptz NOT NULL,
            data jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX events_by_user ON events (user_id, event_id);
        """,
    ),
    (
        6,
        "a person's calls, newest first, by index",
        """
        -- `calls_of` pages through a person's calls as payer or listener, newest first. Without
        -- these it read every call (a sequential scan per page).
        CREATE INDEX calls_by_user ON calls (user_id, call_id);
        CREATE INDEX calls_by_listener ON calls (listener_id, call_id);
        """,
    ),
    (
        7,
        "when each transfer was billed and committed",
        """
        -- `created_at` is when a transfer happened (a minute: when it started); `billed_at`
        -- when the host made it (a minute billed late, or again after a crash: later);
        -- `committed_at` the time of the writer's transaction that wrote it. Rows from before
        -- this migration have neither.
        ALTER TABLE ledger ADD COLUMN billed_at timestamptz;
        ALTER TABLE ledger ADD COLUMN committed_at timestamptz;
        ALTER TABLE ledger ALTER COLUMN committed_at SET DEFAULT transaction_timestamp();
        """,
    ),
    (
        8,
        "a person's statement, a page per index range",
        """
        -- Every transfer but call minutes, by person and time (the hot path's minutes stay out
        -- of it); and the calls a person paid, by when they ended (their minutes, one row).
        CREATE INDEX ledger_statement ON ledger (user_id, created_at, transfer_id)
            INCLUDE (amount, unit) WHERE NOT (tx_type = 'spend' AND call_id IS NOT NULL);
        CREATE INDEX calls_by_payer_end ON calls (user_id, ended_at)
            INCLUDE (coins_spent, billed_minutes) WHERE ended_at IS NOT NULL;
        """,
    ),
    (
        9,
        "payouts in two steps, refunds of a call's minutes",
        """
        ALTER TABLE ledger DROP CONSTRAINT ledger_tx_type_check;
        ALTER TABLE ledger ADD CONSTRAINT ledger_tx_type_check CHECK (tx_type IN
            ('purchase', 'spend', 'earn', 'withdraw', 'bonus', 'referral_bonus',
             'payout_void', 'refund', 'clawback'));
        -- A payout: its withdraw transfer is the hold on the earnings, taken at once; it is
        -- then paid (the hold stays) or rejected (a payout_void transfer releases it).
        CREATE TABLE payouts (
            payout_id     bigint PRIMARY KEY,
            listener_id   bigint NOT NULL REFERENCES users,
            amount_paise  bigint NOT NULL CHECK (amount_paise > 0),
            transfer_id   text COLLATE "C" NOT NULL UNIQUE,
            status        text NOT NULL CHECK (status IN ('pending', 'paid', 'rejected')),
            reason        text,
            created_at    timestamptz NOT NULL,
            settled_at    timestamptz,
            CHECK ((status = 'pending') = (settled_at IS NULL))
        );
        CREATE SEQUENCE payouts_payout_id_seq OWNED BY payouts.payout_id;
        CREATE INDEX payouts_by_listener ON payouts (listener_id, payout_id);
        CREATE INDEX payouts_pending ON payouts (listener_id) WHERE status = 'pending';
        -- Withdrawals from before payouts were paid when they were made.
        INSERT INTO payouts
            SELECT nextval('payouts_payout_id_seq'), user_id, -amount, transfer_id, 'paid',
                   'paid before payouts had two steps', created_at, created_at
            FROM ledger WHERE tx_type = 'withdraw' ORDER BY created_at, transfer_id;
        -- A refund of a call's minutes: the listener's claw-back first (on their host), then
        -- the payer's coins (on theirs); `refunded_at` is set by the second.
        CREATE TABLE refunds (
            refund_id      text COLLATE "C" PRIMARY KEY,
            call_id        bigint NOT NULL REFERENCES calls,
            user_id        bigint NOT NULL,
            listener_id    bigint NOT NULL,
            minutes        integer NOT NULL CHECK (minutes > 0),
            coins          bigint NOT NULL CHECK (coins > 0),
            paise          bigint NOT NULL CHECK (paise >= 0),
            listener_pays  boolean NOT NULL,
            reason         text NOT NULL,
            created_at     timestamptz NOT NULL,
            refunded_at    timestamptz
        );
        CREATE INDEX refunds_by_call ON refunds (call_id);
        CREATE INDEX refunds_unfinished ON refunds (created_at) WHERE refunded_at IS NULL;
        -- Events of payouts and refunds: a payout belongs to no call.
        ALTER TABLE events ALTER COLUMN call_id DROP NOT NULL;
        ALTER TABLE events DROP CONSTRAINT events_type_check;
        ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (type IN
            ('call_started', 'low_balance', 'call_dropped', 'call_settled', 'call_refunded',
             'payout_pending', 'payout_paid', 'payout_rejected'));
        """,
    ),
    (
        10,
        "buckets of bonus coins that expire",
        """
        ALTER TABLE ledger DROP CONSTRAINT ledger_tx_type_check;
        ALTER TABLE ledger ADD CONSTRAINT ledger_tx_type_check CHECK (tx_type IN
            ('purchase', 'spend', 'earn', 'withdraw', 'bonus', 'referral_bonus',
             'payout_void', 'refund', 'clawback', 'expire'));
        -- A bucket is its top-up (bucket_id = that transfer's id). `coins_left` is what it held
        -- as of `as_of` (a position: ms * 4 + rank, actors/buckets.py), its grant or its
        -- wallet's last expiry; the minutes and spends after are drawn again on load. At its
        -- expiry an `expire:{bucket_id}` transfer takes the rest, and `expired` is set.
        CREATE TABLE buckets (
            bucket_id   text COLLATE "C" PRIMARY KEY,
            user_id     bigint NOT NULL REFERENCES users,
            tx_type     text NOT NULL CHECK (tx_type IN ('bonus', 'referral_bonus')),
            coins       bigint NOT NULL CHECK (coins > 0),
            expires_at  timestamptz NOT NULL,
            created_at  timestamptz NOT NULL,
            coins_left  bigint NOT NULL CHECK (coins_left >= 0 AND coins_left <= coins),
            as_of       bigint NOT NULL,
            expired     boolean NOT NULL DEFAULT false
        );
        CREATE INDEX buckets_live ON buckets (user_id) WHERE NOT expired;
        """,
    ),
    (
        11,
        "API keys: their digests and scopes, never the keys",
        """
        -- A key is shown once when it is made; only its SHA-256 is kept. A name is never
        -- reused (a revoked key keeps its row), so a log line naming a key names one key.
        CREATE TABLE api_keys (
            name        text COLLATE "C" PRIMARY KEY,
            sha256      text NOT NULL UNIQUE CHECK (sha256 ~ '^[0-9a-f]{64}$'),
            scopes      text[] NOT NULL CHECK (cardinality(scopes) > 0 AND
                          scopes <@ ARRAY['read', 'calls', 'payouts', 'admin']),
            created_at  timestamptz NOT NULL DEFAULT now(),
            revoked_at  timestamptz
        );
        """,
    ),
    (
        12,
        "webhooks: endpoints, and their deliveries of events",
        """
        -- An endpoint's event of its own (webhook_disabled) is nobody's: no user.
        ALTER TABLE events ALTER COLUMN user_id DROP NOT NULL;
        ALTER TABLE events DROP CONSTRAINT events_type_check;
        ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (type IN
            ('call_started', 'low_balance', 'call_dropped', 'call_settled', 'call_refunded',
             'payout_pending', 'payout_paid', 'payout_rejected', 'webhook_disabled'));
        -- `queued_through`: every event up to this id is queued as a delivery, or is not of
        -- the endpoint's types. The secret signs (HMAC needs it): kept, never shown again.
        CREATE TABLE webhooks (
            webhook_id      bigserial PRIMARY KEY,
            url             text NOT NULL,
            event_types     text[] NOT NULL CHECK (cardinality(event_types) > 0),
            secret          text NOT NULL,
            status          text NOT NULL DEFAULT 'enabled'
                            CHECK (status IN ('enabled', 'disabled', 'deleted')),
            queued_through  bigint NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            disabled_at     timestamptz,
            disabled_reason text
        );
        -- One row per endpoint and event: pending until a 2xx, then delivered. `lane` is what
        -- order is kept within (a call; a person's payouts): its next waits for its last.
        CREATE TABLE webhook_deliveries (
            webhook_id      bigint NOT NULL REFERENCES webhooks,
            event_id        bigint NOT NULL REFERENCES events,
            lane            text NOT NULL,
            status          text NOT NULL CHECK (status IN ('pending', 'delivered')),
            attempts        integer NOT NULL DEFAULT 0,
            next_at         timestamptz NOT NULL,
            first_failed_at timestamptz,
            last_attempt_at timestamptz,
            last_status     integer,
            last_error      text,
            delivered_at    timestamptz,
            PRIMARY KEY (webhook_id, event_id)
        );
        CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, event_id)
            WHERE status = 'pending';
        """,
    ),
    *PRICE_PLAN_MIGRATIONS,
    *OFFER_MIGRATIONS,
]


def call_minutes(call_id_sql: str, ledger: str = "ledger") -> str:
    """SQL condition: the rows of `ledger` that are the minutes of the call `call_id_sql`
    names. They are one range of the primary key ('call:42:' .. 'call:42;', in "C" order),
    so finding them costs an index range scan. (Migration 3's view spells out the same.)"""
    return (
        f"{ledger}.transfer_id >= 'call:' || {call_id_sql} || ':' "
        f"AND {ledger}.transfer_id < 'call:' || {call_id_sql} || ';'"
    )


async def migrate(conn: asyncpg.Connection, through: int | None = None) -> int:
    """Apply the migrations not applied yet (up to `through`, for tests of a migration);
    returns the schema version."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version     integer PRIMARY KEY,
                   description text NOT NULL,
                   applied_at  timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, description, sql in MIGRATIONS:
            if version in applied or (through is not None and version > through):
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
                    version,
                    description,
                )
        return max(v for v, _, _ in MIGRATIONS if through is None or v <= through)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


TABLES = (
    *PLAN_TABLES,
    *("webhook_deliveries", "webhooks", "api_keys", "buckets", "refunds", "payouts", "events"),
    *("listener_badges", "ledger", "calls", "listener_earnings", "wallets", "users"),
)
