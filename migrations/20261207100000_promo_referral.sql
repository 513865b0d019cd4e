-- Promo codes and referral rewards: two more kinds of ledger entry folded into paidUntil.
--
-- Free days of a promo code and a referrer's reward are rows of `grants` (kinds `promo` and
-- `referral`), so the fold reads them with the trial and admin grants. A grant can be revoked
-- (a referral reward whose payment was refunded): it stays for the audit trail and the fold
-- takes it out.

ALTER TABLE grants DROP CONSTRAINT grants_kind_check;
ALTER TABLE grants ADD CONSTRAINT grants_kind_check
    CHECK (kind IN ('trial', 'admin', 'promo', 'referral'));
ALTER TABLE grants DROP CONSTRAINT grants_check;
ALTER TABLE grants ADD CONSTRAINT grants_check
    CHECK (kind IN ('trial', 'promo', 'referral') OR (granted_by IS NOT NULL AND reason IS NOT NULL));
ALTER TABLE grants ADD COLUMN revoked_at TIMESTAMPTZ;

-- Codes administrators create: free days, or a percentage off the user's next payment.
CREATE TABLE promo_codes (
    code         TEXT PRIMARY KEY CHECK (code ~ '^[A-Z0-9][A-Z0-9_-]{2,31}$'),
    days         INTEGER CHECK (days BETWEEN 1 AND 3660),
    percent_off  INTEGER CHECK (percent_off BETWEEN 1 AND 99),
    expires_at   TIMESTAMPTZ NOT NULL,
    max_uses     INTEGER NOT NULL CHECK (max_uses > 0),
    -- Counted in the redeeming transaction; the row lock and this check cap it under races.
    uses         INTEGER NOT NULL DEFAULT 0 CHECK (uses BETWEEN 0 AND max_uses),
    created_by   BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    disabled_by  BIGINT,
    disabled_at  TIMESTAMPTZ,
    CHECK ((days IS NULL) <> (percent_off IS NULL)),
    CHECK ((disabled_by IS NULL) = (disabled_at IS NULL))
);

-- One row per (code, user): a user redeems a code once. Days point at their grant; a
-- percentage waits until a payment consumes it (exactly once: the payment's application
-- sets consumed_by, which is unique).
CREATE TABLE promo_redemptions (
    id           BIGSERIAL PRIMARY KEY,
    code         TEXT NOT NULL REFERENCES promo_codes (code),
    user_id      BIGINT NOT NULL REFERENCES users (telegram_id),
    redeemed_at  TIMESTAMPTZ NOT NULL,
    grant_id     BIGINT UNIQUE REFERENCES grants (id),
    percent_off  INTEGER CHECK (percent_off BETWEEN 1 AND 99),
    consumed_by  UUID UNIQUE REFERENCES payments (id),
    consumed_at  TIMESTAMPTZ,
    UNIQUE (code, user_id),
    CHECK ((grant_id IS NULL) <> (percent_off IS NULL)),
    CHECK (consumed_by IS NULL OR percent_off IS NOT NULL),
    CHECK ((consumed_by IS NULL) = (consumed_at IS NULL))
);
-- At most one discount waits per user.
CREATE UNIQUE INDEX promo_one_waiting_discount_per_user ON promo_redemptions (user_id)
    WHERE percent_off IS NOT NULL AND consumed_by IS NULL;

-- A payment created with a waiting discount: the price before it and the redemption.
ALTER TABLE payments ADD COLUMN list_amount_minor BIGINT CHECK (list_amount_minor > 0);
ALTER TABLE payments ADD COLUMN discount_redemption_id BIGINT REFERENCES promo_redemptions (id);
ALTER TABLE payments ADD CONSTRAINT payments_discount_has_list_price
    CHECK (discount_redemption_id IS NULL OR list_amount_minor IS NOT NULL);

-- A referrer's reward for a referred user's first payment: once per referee (the primary
-- key), never for oneself. Revoked when that payment is refunded in full.
CREATE TABLE referral_rewards (
    referee_id   BIGINT PRIMARY KEY REFERENCES users (telegram_id),
    referrer_id  BIGINT NOT NULL REFERENCES users (telegram_id),
    payment_id   UUID NOT NULL UNIQUE REFERENCES payments (id),
    grant_id     BIGINT NOT NULL UNIQUE REFERENCES grants (id),
    days         INTEGER NOT NULL CHECK (days > 0),
    rewarded_at  TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ,
    CHECK (referee_id <> referrer_id)
);
CREATE INDEX referral_rewards_referrer_idx ON referral_rewards (referrer_id);
CREATE INDEX bot_referrals_referrer_idx ON bot_referrals (referrer_id);
