"""Migrations of price plans and offers (kept apart from `schema.py`, which holds the ones
before)."""

# Their tables, those that name others first (`schema.TABLES`, emptied by tests and benches).
PLAN_TABLES = ("offer_claims", "listener_offer_optins", "offers", "listener_prices", "rate_cards")

PRICE_PLAN_MIGRATIONS: list[tuple[int, str, str]] = [
    (
        13,
        "price plans: each call's price, its end's charge and return, dated rate cards, "
        "listeners' prices",
        """
        ALTER TABLE ledger DROP CONSTRAINT ledger_tx_type_check;
        ALTER TABLE ledger ADD CONSTRAINT ledger_tx_type_check CHECK (tx_type IN
            ('purchase', 'spend', 'earn', 'withdraw', 'bonus', 'referral_bonus',
             'payout_void', 'refund', 'clawback', 'expire', 'unused'));
        -- A call's price as fixed at its start (calls before this were whole minutes on the
        -- first card), and what its end charged, returned and left the platform.
        ALTER TABLE calls
            ADD COLUMN increment_s      integer NOT NULL DEFAULT 60
                CHECK (increment_s > 0 AND 60 % increment_s = 0),
            ADD COLUMN free_s           integer NOT NULL DEFAULT 0 CHECK (free_s >= 0),
            ADD COLUMN earnings_rule    text NOT NULL DEFAULT 'tier'
                CHECK (earnings_rule IN ('tier', 'share')),
            ADD COLUMN share_pct        integer CHECK (share_pct BETWEEN 0 AND 100),
            ADD COLUMN coin_value_paise bigint CHECK (coin_value_paise > 0),
            ADD COLUMN price_source     text NOT NULL DEFAULT 'card'
                CHECK (price_source IN ('card', 'listener')),
            ADD COLUMN rate_card_id     bigint NOT NULL DEFAULT 0,
            ADD COLUMN clamped_from     bigint,
            ADD COLUMN coins_charged    bigint CHECK (coins_charged >= 0),
            ADD COLUMN coins_returned   bigint CHECK (coins_returned >= 0),
            ADD COLUMN charged_seconds  bigint CHECK (charged_seconds >= 0),
            ADD COLUMN platform_paise   bigint;
        UPDATE calls SET coins_charged = coins_spent, coins_returned = 0,
                         charged_seconds = 60 * billed_minutes
        WHERE status <> 'ongoing';
        -- Card 0 is the engine's configured card (BILLING_RATE_CARD); these take effect at
        -- their date, never before. `created_at` is the engine's clock when it was scheduled.
        CREATE TABLE rate_cards (
            rate_card_id bigserial PRIMARY KEY,
            effective_at timestamptz NOT NULL,
            card         jsonb NOT NULL,
            created_at   timestamptz NOT NULL,
            idempotency_key text UNIQUE
        );
        CREATE INDEX rate_cards_by_date ON rate_cards (effective_at);
        -- Each change of a listener's prices (the whole set), with the tier and the bounds it
        -- was checked against; their prices now are the latest change.
        CREATE TABLE listener_prices (
            change_id       bigserial PRIMARY KEY,
            listener_id     bigint NOT NULL REFERENCES users,
            prices          jsonb NOT NULL,
            tier            text NOT NULL,
            rate_card_id    bigint NOT NULL,
            bounds          jsonb NOT NULL,
            set_at          timestamptz NOT NULL,
            idempotency_key text,
            UNIQUE (listener_id, idempotency_key)
        );
        CREATE INDEX listener_prices_latest ON listener_prices (listener_id, change_id DESC);
        """,
    ),
]

OFFER_MIGRATIONS: list[tuple[int, str, str]] = [
    (
        14,
        "offers: their terms and budgets, each start's claim, listeners' opt-in, calls' offers",
        """
        ALTER TABLE ledger DROP CONSTRAINT ledger_tx_type_check;
        ALTER TABLE ledger ADD CONSTRAINT ledger_tx_type_check CHECK (tx_type IN
            ('purchase', 'spend', 'earn', 'withdraw', 'bonus', 'referral_bonus',
             'payout_void', 'refund', 'clawback', 'expire', 'unused', 'offer_grant',
             'offer_return'));
        ALTER TABLE events DROP CONSTRAINT events_type_check;
        ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (type IN
            ('call_started', 'low_balance', 'call_dropped', 'call_settled', 'call_refunded',
             'payout_pending', 'payout_paid', 'payout_rejected', 'webhook_disabled',
             'call_suspended', 'call_resumed'));
        -- The budget is never overspent: what the calls under way hold and what ended calls
        -- used is within it, row by row, whatever starts at once.
        CREATE TABLE offers (
            offer_id         bigserial PRIMARY KEY,
            free_minutes     integer NOT NULL CHECK (free_minutes > 0),
            eligible         text NOT NULL
                CHECK (eligible IN ('first_call', 'first_call_with_listener', 'code')),
            code             text UNIQUE,
            call_types       text[] NOT NULL CHECK (cardinality(call_types) > 0),
            valid_from       timestamptz NOT NULL,
            valid_until      timestamptz NOT NULL,
            budget_minutes   bigint NOT NULL CHECK (budget_minutes > 0),
            per_user_max     integer NOT NULL CHECK (per_user_max > 0),
            pays_listener    text NOT NULL CHECK (pays_listener IN ('platform', 'nobody')),
            minutes_reserved bigint NOT NULL DEFAULT 0 CHECK (minutes_reserved >= 0),
            minutes_used     bigint NOT NULL DEFAULT 0 CHECK (minutes_used >= 0),
            created_at       timestamptz NOT NULL,
            idempotency_key  text UNIQUE,
            CHECK (valid_until > valid_from),
            CHECK (minutes_reserved + minutes_used <= budget_minutes),
            CHECK ((eligible = 'code') = (code IS NOT NULL))
        );
        -- A start's claim on an offer, made before its call starts: released if the call does
        -- not start, settled with the call's end. A start retried with its key finds its claim.
        CREATE TABLE offer_claims (
            call_id      bigint PRIMARY KEY,
            offer_id     bigint NOT NULL REFERENCES offers,
            user_id      bigint NOT NULL,
            listener_id  bigint NOT NULL,
            minutes      integer NOT NULL CHECK (minutes > 0),
            start_key    text,
            claimed_at   timestamptz NOT NULL,
            settled      boolean NOT NULL DEFAULT false,
            UNIQUE (user_id, start_key)
        );
        CREATE INDEX offer_claims_by_user ON offer_claims (user_id, offer_id);
        CREATE INDEX offer_claims_under_way ON offer_claims (claimed_at) WHERE NOT settled;
        -- Listeners who take calls whose free minutes nobody pays them for.
        CREATE TABLE listener_offer_optins (
            listener_id  bigint PRIMARY KEY REFERENCES users,
            free_minutes boolean NOT NULL,
            set_at       timestamptz NOT NULL
        );
        ALTER TABLE calls
            ADD COLUMN offer_id             bigint REFERENCES offers,
            ADD COLUMN offer_minutes        integer NOT NULL DEFAULT 0 CHECK (offer_minutes >= 0),
            ADD COLUMN offer_pays           text CHECK (offer_pays IN ('platform', 'nobody')),
            ADD COLUMN offer_minutes_used   integer NOT NULL DEFAULT 0
                CHECK (offer_minutes_used >= 0),
            ADD COLUMN offer_coins_returned bigint NOT NULL DEFAULT 0
                CHECK (offer_coins_returned >= 0),
            ADD COLUMN offer_earnings_paise bigint NOT NULL DEFAULT 0
                CHECK (offer_earnings_paise >= 0),
            ADD CHECK ((offer_id IS NULL) = (offer_minutes = 0));
        CREATE INDEX calls_by_offer ON calls (offer_id) WHERE offer_id IS NOT NULL;
        """,
    ),
    (
        15,
        "grace at the cut-off: the billed seconds a call's unpaid minute waits for a credit",
        """
        ALTER TABLE calls ADD COLUMN grace_s integer NOT NULL DEFAULT 0
            CHECK (grace_s >= 0 AND grace_s < 60);
        """,
    ),
]
