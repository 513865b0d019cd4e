-- The bot's own tables (wgsub-bot); the ledger's tables are the API's.

-- Expiry reminders, one row per (user, paid period, reminder): a period is identified by its
-- end. The row is claimed before sending so a restart or a second replica never sends twice.
CREATE TABLE bot_reminders_sent (
    user_id     BIGINT NOT NULL REFERENCES users (telegram_id),
    paid_until  TIMESTAMPTZ NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('three_days', 'one_day', 'expired')),
    claimed_at  TIMESTAMPTZ NOT NULL,
    -- claimed | delivered | failed (the user blocked the bot or the chat is gone)
    outcome     TEXT NOT NULL CHECK (outcome IN ('claimed', 'delivered', 'failed')),
    PRIMARY KEY (user_id, paid_until, kind)
);

-- Deep-link payloads of /start (`ref_<id>`), recorded once per user for referrals later.
CREATE TABLE bot_referrals (
    user_id      BIGINT PRIMARY KEY REFERENCES users (telegram_id),
    payload      TEXT NOT NULL,
    referrer_id  BIGINT,
    recorded_at  TIMESTAMPTZ NOT NULL
);

-- Every administrator command the bot carried out (grants and suspensions are also in the
-- ledger's admin_actions), with its outcome.
CREATE TABLE bot_admin_log (
    id         BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    admin_id   BIGINT NOT NULL,
    command    TEXT NOT NULL,
    arguments  TEXT NOT NULL,
    outcome    TEXT NOT NULL
);
CREATE INDEX bot_admin_log_admin_idx ON bot_admin_log (admin_id, at);

-- Broadcasts: who sent what to whom and how it went.
CREATE TABLE bot_broadcasts (
    id           BIGSERIAL PRIMARY KEY,
    admin_id     BIGINT NOT NULL,
    audience     TEXT NOT NULL CHECK (audience IN ('all', 'active')),
    text         TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    recipients   INTEGER NOT NULL,
    delivered    INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0
);
