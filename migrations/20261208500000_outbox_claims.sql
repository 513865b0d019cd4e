-- Outbox claims (wgsub-bot): every bot replica drains the notification outbox, so a row is
-- claimed before it is sent and only the claimer sends it. A claim older than the ledger's
-- `OUTBOX_STALE_CLAIM` was left by a replica that stopped mid-send and is claimable again; a
-- passing failure clears the claim so the next drain retries the row.
ALTER TABLE notifications ADD COLUMN claimed_at TIMESTAMPTZ;
