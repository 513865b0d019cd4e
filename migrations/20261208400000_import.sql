-- Customers brought over from an existing WireGuard server (`wgsub-api import`): each gets one
-- ledger entry of kind `import`, a grant whose days end exactly at the paid-until date they had,
-- so the fold gives them the same paidUntil. One per user ever, so an import run twice adds
-- nothing.

ALTER TABLE grants DROP CONSTRAINT grants_kind_check;
ALTER TABLE grants ADD CONSTRAINT grants_kind_check
    CHECK (kind IN ('trial', 'admin', 'promo', 'referral', 'import'));
ALTER TABLE grants DROP CONSTRAINT grants_check;
ALTER TABLE grants ADD CONSTRAINT grants_check
    CHECK (kind IN ('trial', 'promo', 'referral', 'import') OR (granted_by IS NOT NULL AND reason IS NOT NULL));
CREATE UNIQUE INDEX grants_one_import_per_user ON grants (user_id) WHERE kind = 'import';
