-- The wgsub ledger: users, payments, grants, refunds, the audit trail and the notification
-- outbox. Money and identity live here; VpnSubscription.spec.paidUntil is derived from it.

CREATE TABLE users (
    telegram_id     BIGINT PRIMARY KEY CHECK (telegram_id > 0),
    username        TEXT,
    first_name      TEXT NOT NULL DEFAULT '',
    last_name       TEXT,
    language_code   TEXT,
    -- Contact for 54-FZ receipts.
    email           TEXT,
    phone           TEXT,
    suspended       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TIMESTAMPTZ NOT NULL,
    last_seen_at    TIMESTAMPTZ NOT NULL,
    -- The ledger fold, cached in the transaction of every ledger change.
    paid_until      TIMESTAMPTZ,
    plan            TEXT,
    max_devices     INTEGER NOT NULL DEFAULT 1 CHECK (max_devices BETWEEN 1 AND 10),
    -- Bumped with every ledger change; synced_version is the last one written to the
    -- VpnSubscription. The drift loop re-applies users whose versions differ.
    ledger_version  BIGINT NOT NULL DEFAULT 0,
    synced_version  BIGINT NOT NULL DEFAULT -1
);
CREATE INDEX users_username_idx ON users (lower(username));
CREATE INDEX users_unsynced_idx ON users (telegram_id) WHERE ledger_version <> synced_version;

CREATE TABLE payments (
    id                UUID PRIMARY KEY,
    yookassa_id       TEXT UNIQUE,
    user_id           BIGINT NOT NULL REFERENCES users (telegram_id),
    plan              TEXT NOT NULL,
    days              INTEGER NOT NULL CHECK (days > 0),
    devices           INTEGER NOT NULL CHECK (devices BETWEEN 1 AND 10),
    amount_minor      BIGINT NOT NULL CHECK (amount_minor > 0),
    currency          TEXT NOT NULL,
    -- pending | succeeded | canceled | failed (YooKassa could not be asked)
    status            TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'canceled', 'failed')),
    idempotence_key   UUID NOT NULL UNIQUE,
    confirmation_url  TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    succeeded_at      TIMESTAMPTZ
);
CREATE INDEX payments_user_idx ON payments (user_id);

-- A payment counts in the fold once it has a row here; the primary key makes applying it
-- happen exactly once however many webhooks race.
CREATE TABLE payment_applications (
    payment_id  UUID PRIMARY KEY REFERENCES payments (id),
    applied_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE grants (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (telegram_id),
    kind        TEXT NOT NULL CHECK (kind IN ('trial', 'admin')),
    days        INTEGER NOT NULL CHECK (days > 0),
    granted_at  TIMESTAMPTZ NOT NULL,
    granted_by  BIGINT,
    reason      TEXT,
    CHECK (kind = 'trial' OR (granted_by IS NOT NULL AND reason IS NOT NULL))
);
-- The trial is granted once per user ever.
CREATE UNIQUE INDEX grants_one_trial_per_user ON grants (user_id) WHERE kind = 'trial';
CREATE INDEX grants_user_idx ON grants (user_id);

CREATE TABLE refunds (
    yookassa_id   TEXT PRIMARY KEY,
    payment_id    UUID NOT NULL REFERENCES payments (id),
    amount_minor  BIGINT NOT NULL CHECK (amount_minor > 0),
    currency      TEXT NOT NULL,
    refunded_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX refunds_payment_idx ON refunds (payment_id);

-- Every YooKassa webhook delivery, accepted or not.
CREATE TABLE webhook_deliveries (
    id           BIGSERIAL PRIMARY KEY,
    received_at  TIMESTAMPTZ NOT NULL,
    remote_addr  TEXT NOT NULL,
    event        TEXT,
    object_id    TEXT,
    outcome      TEXT NOT NULL CHECK (outcome IN ('applied', 'duplicate', 'recorded', 'ignored', 'rejected')),
    reason       TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_object_idx ON webhook_deliveries (object_id);

-- Administrator actions (grants, suspensions).
CREATE TABLE admin_actions (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    admin_id    BIGINT NOT NULL,
    user_id     BIGINT NOT NULL REFERENCES users (telegram_id),
    action      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    details     JSONB NOT NULL DEFAULT '{}'::jsonb
);

-- Notifications for the bot to send, written in the transaction of the event they report.
CREATE TABLE notifications (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (telegram_id),
    kind        TEXT NOT NULL,
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    sent_at     TIMESTAMPTZ
);
CREATE INDEX notifications_unsent_idx ON notifications (id) WHERE sent_at IS NULL;
