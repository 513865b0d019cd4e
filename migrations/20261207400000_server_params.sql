-- AmneziaWG parameter changes (wgsub-bot): every client config carries its server's
-- parameters, so when they change each user with a peer on that server is told, once, to
-- re-import.

-- The last parameter set seen per server: its fingerprint, and how many changes were seen
-- (the first sight is generation 0 and tells nobody).
CREATE TABLE bot_server_params (
    server       TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    generation   BIGINT NOT NULL DEFAULT 0,
    recorded_at  TIMESTAMPTZ NOT NULL
);

-- One notice per (server, change, user), queued in the same statement that records the
-- change and claimed before sending, so a restart or a second replica never sends twice.
CREATE TABLE bot_server_param_notices (
    server      TEXT NOT NULL,
    generation  BIGINT NOT NULL,
    user_id     BIGINT NOT NULL,
    queued_at   TIMESTAMPTZ NOT NULL,
    claimed_at  TIMESTAMPTZ,
    -- pending | claimed (being sent) | delivered | failed (the chat is gone, or kept failing)
    outcome     TEXT NOT NULL CHECK (outcome IN ('pending', 'claimed', 'delivered', 'failed')),
    PRIMARY KEY (server, generation, user_id)
);
CREATE INDEX bot_server_param_notices_open_idx ON bot_server_param_notices (queued_at)
    WHERE outcome IN ('pending', 'claimed');
