"""Migrations of price plans (kept apart from `schema.py`, which holds the ones before)."""

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
