-- Data quotas: the traffic a purchase allows per period, as its plan said when it was bought.
--
-- A plan may include traffic per period (`trafficGib`); each payment keeps the quota of the plan
-- it bought (YooKassa payments, renewals and Stars payments alike), so a later change of the
-- catalogue never changes what was paid for. The fold takes the quota of the latest payment
-- that counts, like the plan and the device count, and caches it in `users` beside them; the
-- sync writes it into `VpnSubscription.spec.trafficQuota`. NULL everywhere means no quota.

ALTER TABLE payments
    ADD COLUMN traffic_bytes        BIGINT,
    ADD COLUMN traffic_period_days  INTEGER,
    ADD CONSTRAINT payments_traffic_quota CHECK (
        (traffic_bytes IS NULL AND traffic_period_days IS NULL)
        OR (traffic_bytes > 0 AND traffic_period_days > 0)
    );

ALTER TABLE star_payments
    ADD COLUMN traffic_bytes        BIGINT,
    ADD COLUMN traffic_period_days  INTEGER,
    ADD CONSTRAINT star_payments_traffic_quota CHECK (
        (traffic_bytes IS NULL AND traffic_period_days IS NULL)
        OR (traffic_bytes > 0 AND traffic_period_days > 0)
    );

ALTER TABLE users
    ADD COLUMN traffic_bytes        BIGINT,
    ADD COLUMN traffic_period_days  INTEGER,
    ADD CONSTRAINT users_traffic_quota CHECK (
        (traffic_bytes IS NULL AND traffic_period_days IS NULL)
        OR (traffic_bytes > 0 AND traffic_period_days > 0)
    );
