-- Automatic renewal with YooKassa: a card the user agreed to save at purchase, and the renewal
-- charges made with it, once per user and paid period.
--
-- A renewal charge is an ordinary row of `payments` (applied once through
-- `payment_applications`, folded into paidUntil like any payment); `renewal_charges` is the
-- claim that makes it happen once per period: its primary key (user, the paidUntil the charge
-- extends) is taken before YooKassa is asked, so two replicas or a restart cannot charge a
-- period twice, and the payment's Idempotence-Key is derived from the same pair.

-- The user agreed to save the card used for this payment (YooKassa `save_payment_method`).
ALTER TABLE payments ADD COLUMN save_card BOOLEAN NOT NULL DEFAULT FALSE;
-- When the card this payment saved was stored: once per payment, so a late repeat of its
-- webhook cannot bring back a card the user has switched off since.
ALTER TABLE payments ADD COLUMN card_stored_at TIMESTAMPTZ;

-- The saved card of a user with renewal on; no row = renewal off. Switching renewal off
-- deletes the row, so nothing can be charged with it afterwards.
CREATE TABLE payment_methods (
    user_id             BIGINT PRIMARY KEY REFERENCES users (telegram_id),
    yookassa_method_id  TEXT NOT NULL CHECK (yookassa_method_id <> ''),
    -- Masked for display: "Visa •••• 4242". Never the full number.
    title               TEXT NOT NULL,
    expiry_month        INTEGER CHECK (expiry_month BETWEEN 1 AND 12),
    expiry_year         INTEGER CHECK (expiry_year BETWEEN 2000 AND 2200),
    -- The plan renewed (the one bought when the card was saved).
    plan                TEXT NOT NULL,
    -- The payment that saved it.
    saved_by            UUID NOT NULL REFERENCES payments (id),
    saved_at            TIMESTAMPTZ NOT NULL
);

-- One renewal per user and paid period. `payment_id` is the charge's payment (absent when it
-- was refused before YooKassa was asked, e.g. for a plan that no longer exists).
CREATE TABLE renewal_charges (
    user_id      BIGINT NOT NULL REFERENCES users (telegram_id),
    period_end   TIMESTAMPTZ NOT NULL,
    payment_id   UUID UNIQUE REFERENCES payments (id),
    plan         TEXT NOT NULL,
    -- charging: claimed, YooKassa asked or about to be; succeeded | failed | refused: final.
    status       TEXT NOT NULL CHECK (status IN ('charging', 'succeeded', 'failed', 'refused')),
    reason       TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, period_end),
    CHECK (status <> 'charging' OR payment_id IS NOT NULL),
    CHECK (status IN ('charging', 'succeeded') OR reason IS NOT NULL)
);
CREATE INDEX renewal_charges_open_idx ON renewal_charges (created_at) WHERE status = 'charging';

-- The audit trail of renewal: cards saved, renewal switched off, charges made, failed or
-- refused.
CREATE TABLE renewal_events (
    id       BIGSERIAL PRIMARY KEY,
    user_id  BIGINT NOT NULL REFERENCES users (telegram_id),
    at       TIMESTAMPTZ NOT NULL,
    event    TEXT NOT NULL,
    details  JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX renewal_events_user_idx ON renewal_events (user_id);
