//! The money side of wgsub shared by the API and the bot: the PostgreSQL ledger, the YooKassa
//! client and the sync of `paidUntil` into `VpnSubscription`s.
//!
//! The ledger is the truth for money and identity. Every change to what a user is entitled to
//! (a trial, an admin grant, an applied payment, a refund, a suspension) happens in one database
//! transaction that locks the user's row, records the event, re-folds the user's
//! [`Entitlement`] with [`wgsub_crds::ledger::fold_paid_until`] into `users.paid_until / plan /
//! max_devices / traffic_bytes / traffic_period_days` (the data quota of the latest counted
//! payment, stored per payment at purchase), bumps `users.ledger_version` and (for payments and
//! refunds) writes a notification outbox row. Writing the result into the `VpnSubscription` is a separate,
//! idempotent step ([`SubscriptionSync`]) that can be repeated any time: `synced_version`
//! records what was last written. The API's drift loop ([`drift::DriftRepair`]) compares every
//! user with their resource and writes only what differs, so a missed write, a `kubectl edit`
//! and a deleted resource are all repaired by its next pass.
//!
//! # Public API (stable; used by `wgsub-api` and `wgsub-bot`)
//!
//! **Connecting** — [`db`]
//! - [`DbConfig`] (`url`, `max_connections`, `acquire_timeout`, `pgbouncer`): `pgbouncer = true`
//!   sets the statement cache capacity to 0, runs every query unnamed (non-persistent) and
//!   each single query in its own transaction, for PgBouncer in transaction pooling.
//! - [`db::connect_lazy`]`(&DbConfig) -> PgPool`, [`db::migrate`]`(&PgPool)` (runs
//!   `migrations/` embedded by `sqlx::migrate!`, directly), [`db::migrate_with`]`(&PgPool,
//!   pgbouncer)` (the same, also safe through PgBouncer in transaction pooling when the pool
//!   was made with `DbConfig::pgbouncer`), [`db::MIGRATOR`].
//! - [`Ledger::new`]`(pool, pgbouncer)`, [`Ledger::pool`], [`Ledger::ping`].
//! - [`Ledger::session`]` -> Session` (deref to `PgConnection`; [`session::Session::finish`]
//!   after the last query): how to run your own queries with arguments (e.g. the bot's
//!   tables) so they also work behind PgBouncer — there a session is a transaction, because
//!   sqlx's `Parse` and `Bind` round trips must reach the same server connection. The
//!   ledger's own single queries run this way.
//!
//! **Users** — [`users`]
//! - [`TelegramUser`] → [`Ledger::upsert_user`]`(&TelegramUser, now) -> User` (insert or refresh
//!   names/language, touch last-seen), [`Ledger::touch_last_seen`], [`Ledger::user`]`(id)`,
//!   [`Ledger::user_by_username`]`("@name" or "name")`,
//!   [`Ledger::set_receipt_contact`]`(id, &ReceiptCustomer)` with [`ReceiptCustomer::parse`]
//!   for a typed e-mail or phone.
//!
//! **Grants and suspension** — [`grants`]
//! - [`Ledger::grant_trial`]`(user, days, now) -> Option<Entitlement>`: once per user ever (a
//!   partial unique index), `None` when already granted or `days == 0`.
//! - [`Ledger::admin_grant`]`(&AdminGrant, now) -> Entitlement`, [`Ledger::set_suspended`]`(user,
//!   suspended, admin_id, reason, now) -> changed`; both write `admin_actions`.
//!
//! **Import** — [`import`]: [`Ledger::import_states`]`(ids)` (who the ledger holds, and the
//! `paidUntil` of their import entry), [`Ledger::import_users`]`(&[ImportedUser], now)` (the
//! users and their `import` entries in one transaction, refused whole if one exists).
//!
//! **Payments** — [`payments`], [`yookassa`]
//! - [`YooKassa::new`]`(YooKassaConfig)`: Basic auth, `Idempotence-Key`, retries with the same key.
//! - [`Ledger::create_payment`]`(&YooKassa, PaymentOrder, now) -> CreatedPayment
//!   { id, yookassa_id, confirmation_url }`.
//! - [`Ledger::payment`]`(id)`, [`Ledger::payment_by_yookassa_id`],
//!   [`Ledger::apply_payment`]`(our id, &fetched yookassa::Payment, now) -> ApplyOutcome`
//!   (checks amount/currency/metadata, applies once), [`Ledger::cancel_payment`],
//!   [`Ledger::transition_payment`]`(id, expected, to, now) -> Transition` (a status change
//!   only from an expected status; a lost race is reported, never overwritten),
//!   [`Ledger::record_refund`]`(&yookassa::Refund, now) -> RefundOutcome`.
//!
//! **Sync to Kubernetes** — [`sync`]
//! - [`SubscriptionSync::new`]`(kube::Client, namespace)`; field manager [`FIELD_MANAGER`]
//!   (`wgsub-ledger`, forced: the ledger is the truth and the derivation is idempotent). It owns
//!   `spec.telegramUserId / paidUntil / plan / maxDevices / trafficQuota / suspended` of
//!   `tg-<id>`.
//! - [`SubscriptionSync::sync_user`]`(&Ledger, id)`, [`SubscriptionSync::ensure_subscription`]`(
//!   &Ledger, &TelegramUser, trial_days, now)` (upsert + trial + apply),
//!   [`SubscriptionSync::set_suspended`], [`SubscriptionSync::admin_grant`],
//!   [`SubscriptionSync::sync_unsynced`]`(&Ledger, limit)`.
//! - [`SubscriptionSync::drift_repair`]` -> (DriftRepair, reflector future)`: run the future,
//!   await [`DriftRepair::ready`], then call [`DriftRepair::pass`]`(&Ledger) -> DriftReport`
//!   every interval; [`DriftRepair::cached`]`(id)` is the resource as the pass sees it.
//!
//! **Telegram Stars** — [`stars`]: [`stars::InvoiceKey::from_bot_token`],
//! [`stars::InvoicePayload`]`::encode / decode` (signed invoice payload), [`stars::invoice_for`],
//! [`stars::check_checkout`] (pre-checkout) and [`stars::check_payment`] (successful payment),
//! [`Ledger::apply_star_payment`]`(&StarPurchase, now)` (once per charge id),
//! [`Ledger::star_payment`]`(charge id)`, [`Ledger::record_star_refund`] (once per payment).
//!
//! **Promo codes** — [`promo`]: [`Ledger::create_promo_code`]`(&NewPromoCode, now)`,
//! [`Ledger::promo_codes`]`(limit)`, [`Ledger::promo_code`], [`Ledger::disable_promo_code`],
//! [`Ledger::redeem_promo_code`]`(user, typed, now) -> Redeemed` (free days: a `promo` grant;
//! a percentage: waits, [`Ledger::waiting_discount`]), applied by [`Ledger::create_payment`]
//! and consumed once by [`Ledger::apply_payment`].
//!
//! **Referrals** — [`referral`]: [`Ledger::with_referral_days`]`(days)` turns rewards on;
//! [`Ledger::apply_payment`] and [`Ledger::apply_star_payment`] reward the referrer of a
//! user's first payment (of either kind), [`Ledger::record_refund`] (in full) and
//! [`Ledger::record_star_refund`] revoke it; [`Ledger::referral_summary`]`(user)`,
//! [`referral::referral_link`].
//!
//! **Automatic renewal** — [`renewal`]: [`Ledger::create_payment_saving_card`] (the user agreed
//! to save the card), [`Ledger::settle_renewal`]`(&record, &PaymentDetails, now)` after every
//! re-fetched payment (stores a saved card once, settles a renewal charge),
//! [`Ledger::renewal_status`]`(user)`, [`Ledger::disable_renewal`]`(user, now)` (deletes the
//! saved method), [`Ledger::run_renewals`]`(RenewalContext, now, limit)` (claims each period
//! once, charges with the saved method, polls open charges), [`Ledger::with_renewal_lead`].
//!
//! **Outbox** — [`outbox`]: [`Ledger::claim_notifications`]`(now, limit) -> Vec<Notification>`
//! (each row to one drain at a time; stale claims taken over), then
//! [`Ledger::mark_notification_sent`]`(id, now)` or [`Ledger::release_notification`]`(id, now)`;
//! [`Ledger::unsent_notifications`]`(limit)` to look; [`NotificationEvent`] says what happened.
//!
//! **Stats** — [`stats`]: [`Ledger::stats`]`(now) -> Stats` (users, active / expired / never
//! paid / suspended, revenue today (UTC) and in the last 30 days, per currency).
//!
//! **Audit** — [`audit`]: [`Ledger::record_webhook_delivery`]`(&WebhookDelivery, now)`,
//! [`Ledger::sample_rejected_webhook`]`(&WebhookDelivery, now) -> Sampled` (refusals before a
//! decision: at most [`RejectionSampling`] rows, one writer waiting briefly for a connection),
//! [`Ledger::webhook_deliveries`]`(limit)`, [`Ledger::admin_actions`]`(user)`.
//!
//! **Pure core** — [`entitlement::entitlement`] (rows → paidUntil, plan, devices),
//! [`yookassa::check_succeeded_payment`], [`yookassa::create_payment_body`],
//! [`yookassa::parse_amount_minor`], [`yookassa::should_retry`], [`sync::subscription_patch`],
//! [`drift::repair`] / [`drift::plan_repairs`] (ledger rows + observed resources → the writes
//! to make).

pub mod audit;
pub mod db;
pub mod drift;
pub mod entitlement;
pub mod grants;
pub mod import;
pub mod outbox;
pub mod payments;
pub mod promo;
pub mod referral;
pub mod renewal;
pub mod session;
pub mod stars;
pub mod stats;
pub mod sync;
mod txn;
pub mod users;
pub mod yookassa;

use sqlx::PgPool;

pub use audit::{
    AdminAction, DeliveryOutcome, RejectionSampler, RejectionSampling, Sampled, WebhookDelivery,
};
pub use db::DbConfig;
pub use drift::{DriftRepair, DriftReport};
pub use entitlement::{Entitlement, GrantKind};
pub use grants::AdminGrant;
pub use outbox::{Notification, NotificationEvent};
pub use payments::{
    ApplyError, ApplyOutcome, CreatedPayment, PaymentError, PaymentLimited, PaymentLimits,
    PaymentOrder, PaymentRecord, PaymentStatus, RecentPayment, RefundOutcome, Transition,
    payment_allowance,
};
pub use promo::{
    CodeSyntaxError, CreateCodeError, NewPromoCode, PromoBenefit, PromoCode, RedeemError,
    RedeemRefusal, Redeemed, WaitingDiscount,
};
pub use referral::ReferralSummary;
pub use renewal::{ChargeOutcome, RenewalContext, RenewalReport, RenewalStatus, SavedCard};
pub use stars::{StarApplyOutcome, StarPaymentRecord, StarPurchase, StarRefundOutcome};
pub use stats::{Revenue, Stats};
pub use sync::{FIELD_MANAGER, SubscriptionSync, SyncError, SyncReport};
pub use users::{TelegramUser, User};
pub use yookassa::{ReceiptCustomer, ReceiptSettings, YooKassa, YooKassaConfig, YooKassaError};

/// A database failure or a ledger rule that was broken.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("user {0} is not in the ledger")]
    UnknownUser(i64),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
}

impl LedgerError {
    /// True when the database could not be reached (as opposed to a query being refused), so
    /// callers can answer 503 and let the sender retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            LedgerError::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed
            )
        )
    }
}

/// The ledger: a PostgreSQL pool and whether queries must avoid persistent statements.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: PgPool,
    persistent: bool,
    payment_limits: PaymentLimits,
    /// Which refused webhook deliveries are kept (shared by the clones).
    rejections: std::sync::Arc<audit::RejectionAudit>,
    referral_days: u32,
    referral_bot: Option<String>,
    renewal_lead: jiff::SignedDuration,
}

impl Ledger {
    /// Wraps a pool; `pgbouncer` makes every query unnamed (see [`DbConfig::pgbouncer`]).
    pub fn new(pool: PgPool, pgbouncer: bool) -> Self {
        Self {
            pool,
            persistent: !pgbouncer,
            payment_limits: PaymentLimits::default(),
            rejections: Default::default(),
            referral_days: 0,
            referral_bot: None,
            renewal_lead: renewal::DEFAULT_RENEWAL_LEAD,
        }
    }

    /// The same ledger rewarding a referrer with `days` days when a user they brought pays for
    /// the first time (0, the default, rewards nobody).
    pub fn with_referral_days(self, referral_days: u32) -> Self {
        Self {
            referral_days,
            ..self
        }
    }

    /// Days a referral reward gives (0: off).
    pub fn referral_days(&self) -> u32 {
        self.referral_days
    }

    /// The same ledger making users' referral links to the bot `username` (with or without
    /// the `@`); without one, [`Ledger::referral_link`] is `None`.
    pub fn with_referral_bot(self, username: Option<String>) -> Self {
        Self {
            referral_bot: username,
            ..self
        }
    }

    /// The user's personal `https://t.me/<bot>?start=ref_<id>` link, when the bot is known.
    pub fn referral_link(&self, user_id: i64) -> Option<String> {
        self.referral_bot
            .as_deref()
            .map(|bot| referral::referral_link(bot, user_id))
    }

    /// The same ledger with other limits on starting payments (the default is
    /// [`PaymentLimits::default`]).
    pub fn with_payment_limits(self, payment_limits: PaymentLimits) -> Self {
        Self {
            payment_limits,
            ..self
        }
    }

    /// The same ledger sampling refused webhook deliveries with `sampling` (the default is
    /// [`RejectionSampling::default`]).
    pub fn with_rejection_sampling(self, sampling: RejectionSampling) -> Self {
        Self {
            rejections: std::sync::Arc::new(audit::RejectionAudit::new(sampling)),
            ..self
        }
    }

    /// The pool, for callers with their own tables (e.g. the bot's).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether queries may use persistent (named, cached) statements.
    pub fn persistent_statements(&self) -> bool {
        self.persistent
    }

    /// A round trip to the database (for readiness probes).
    pub async fn ping(&self) -> Result<(), LedgerError> {
        sqlx::query("SELECT 1")
            .persistent(self.persistent)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Test support: a fresh database per test in the server at `WGSUB_TEST_DATABASE_URL`.
#[doc(hidden)]
pub mod testing {
    use super::*;
    use sqlx::Connection;
    use sqlx::postgres::PgConnection;

    /// Creates a uniquely named database, runs the migrations and returns its pool. Panics with
    /// a clear message when `WGSUB_TEST_DATABASE_URL` is not set (the test needs PostgreSQL).
    pub async fn fresh_database(label: &str) -> (PgPool, String) {
        let base = std::env::var("WGSUB_TEST_DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "WGSUB_TEST_DATABASE_URL is not set: this test needs PostgreSQL \
                 (run scripts/test, or `source scripts/test-postgres; start_test_postgres DIR`)"
            )
        });
        let name = format!(
            "wgsub_{}_{}",
            label
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(30)
                .collect::<String>()
                .to_ascii_lowercase(),
            uuid::Uuid::new_v4().simple()
        );
        let mut admin = PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to WGSUB_TEST_DATABASE_URL: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let url = match base.rfind('/') {
            Some(slash) if !base[slash..].contains('@') => format!("{}/{name}", &base[..slash]),
            _ => panic!("WGSUB_TEST_DATABASE_URL must end in /<database>"),
        };
        let config = DbConfig {
            max_connections: 30,
            ..DbConfig::new(url.clone())
        };
        let pool = db::connect_lazy(&config).expect("test database URL");
        db::migrate(&pool).await.expect("migrations run");
        (pool, url)
    }
}
