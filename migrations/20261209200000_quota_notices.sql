-- Data quota notices (wgsub-bot): when the operator marks a subscription's quota for the period
-- used up (condition QuotaExhausted), the user is told once per period that the VPN is paused
-- until the period ends or a purchase.

-- One notice per user and period: queued when the bot first sees the period exhausted (the
-- primary key makes a second sighting, a restart or another replica queue nothing), claimed
-- before sending so it is never sent twice.
CREATE TABLE bot_quota_notices (
    user_id       BIGINT NOT NULL,
    period_start  TIMESTAMPTZ NOT NULL,
    period_end    TIMESTAMPTZ NOT NULL,
    queued_at     TIMESTAMPTZ NOT NULL,
    claimed_at    TIMESTAMPTZ,
    -- pending | claimed (being sent) | delivered | failed (the chat is gone, or kept failing)
    outcome       TEXT NOT NULL CHECK (outcome IN ('pending', 'claimed', 'delivered', 'failed')),
    PRIMARY KEY (user_id, period_start)
);
CREATE INDEX bot_quota_notices_open_idx ON bot_quota_notices (queued_at)
    WHERE outcome IN ('pending', 'claimed');
