-- Payments in Telegram Stars (XTR): the bot's invoices, paid inside Telegram.
--
-- A Stars payment is a ledger entry of its own, folded into paidUntil like a YooKassa payment.
-- Telegram's `telegram_payment_charge_id` is unique, so a `successful_payment` update that
-- arrives twice (a retry, or both polling and webhook mode) is applied once.

CREATE TABLE star_payments (
    id                          UUID PRIMARY KEY,
    telegram_payment_charge_id  TEXT NOT NULL UNIQUE CHECK (telegram_payment_charge_id <> ''),
    user_id                     BIGINT NOT NULL REFERENCES users (telegram_id),
    plan                        TEXT NOT NULL,
    days                        INTEGER NOT NULL CHECK (days > 0),
    devices                     INTEGER NOT NULL CHECK (devices BETWEEN 1 AND 10),
    stars                       BIGINT NOT NULL CHECK (stars > 0),
    -- The signed invoice payload the payment carried, for the audit trail.
    invoice_payload             TEXT NOT NULL,
    paid_at                     TIMESTAMPTZ NOT NULL
);
CREATE INDEX star_payments_user_idx ON star_payments (user_id);

-- A Stars payment refunded through refundStarPayment; its primary key makes the refund count
-- once, and the fold takes the payment out.
CREATE TABLE star_refunds (
    payment_id   UUID PRIMARY KEY REFERENCES star_payments (id),
    refunded_at  TIMESTAMPTZ NOT NULL,
    refunded_by  BIGINT NOT NULL,
    reason       TEXT NOT NULL
);
