-- Renewal charges asked again are byte-identical to the first ask, and are asked again only
-- while YooKassa still remembers the Idempotence-Key (it keeps one for 24 hours).
--
-- `request_body` is the exact JSON text of the first `POST /v3/payments` of the charge, stored in
-- the claim's transaction: every later ask sends these bytes, never a body rebuilt from data
-- that may have changed since (the user's language, contact, saved method, the plan's title).
-- `unknown`: asked, never answered, and too old to ask again with the same key — nothing is
-- sent any more; a later webhook for the original payment still applies it once.
ALTER TABLE renewal_charges ADD COLUMN request_body TEXT;
ALTER TABLE renewal_charges DROP CONSTRAINT renewal_charges_status_check;
ALTER TABLE renewal_charges ADD CONSTRAINT renewal_charges_status_check
    CHECK (status IN ('charging', 'succeeded', 'failed', 'refused', 'unknown'));
