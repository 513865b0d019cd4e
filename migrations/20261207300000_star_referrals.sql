-- A referral reward earned by a referee's first payment in Telegram Stars.
--
-- A reward points at the payment that earned it: a YooKassa payment (`payment_id`) or a Stars
-- payment (`star_payment_id`), exactly one of them. Each is unique, so a payment earns at most
-- one reward; the primary key (the referee) still makes it once per referee whatever the kind.
-- A full refund of that payment (a Stars refund is always full) revokes the reward.

ALTER TABLE referral_rewards ALTER COLUMN payment_id DROP NOT NULL;
ALTER TABLE referral_rewards
    ADD COLUMN star_payment_id UUID UNIQUE REFERENCES star_payments (id);
ALTER TABLE referral_rewards ADD CONSTRAINT referral_rewards_one_payment
    CHECK ((payment_id IS NULL) <> (star_payment_id IS NULL));
