-- Location moves (wgsub-bot): when the operator moves a user's devices to another server (the
-- user picked a location), every config of theirs changed, so the user is told, once.

-- The server each device was last seen on (first sight tells nobody).
CREATE TABLE bot_peer_servers (
    peer         TEXT PRIMARY KEY,
    user_id      BIGINT NOT NULL,
    server       TEXT NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL
);

-- One open notice per user: queued in the statement that records a device's move, re-armed by a
-- later move, claimed before sending so a restart or a second replica never sends it twice.
CREATE TABLE bot_move_notices (
    user_id     BIGINT PRIMARY KEY,
    server      TEXT NOT NULL,
    queued_at   TIMESTAMPTZ NOT NULL,
    claimed_at  TIMESTAMPTZ,
    -- pending | claimed (being sent) | delivered | failed (the chat is gone, or kept failing)
    outcome     TEXT NOT NULL CHECK (outcome IN ('pending', 'claimed', 'delivered', 'failed'))
);
CREATE INDEX bot_move_notices_open_idx ON bot_move_notices (queued_at)
    WHERE outcome IN ('pending', 'claimed');
