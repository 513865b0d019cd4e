//! The audit trail: YooKassa webhook deliveries (what came, from where, what was done and why)
//! and every administrator action.
//!
//! A delivery that reached a decision (it came from YooKassa's addresses and parsed) is one row
//! each. A delivery refused before that — a wrong source address, a body that is not a
//! notification — can come from anyone on the internet as fast as they like, so it is only
//! *sampled*: at most [`RejectionSampling::per_reason`] rows per reason per
//! [`RejectionSampling::window`] ([`RejectionSampler`], a pure decision), written by one writer
//! at a time that waits at most [`SAMPLE_ACQUIRE_WAIT`] for a connection
//! ([`Ledger::sample_rejected_webhook`]). So refused traffic holds at most one connection of the
//! pool, for a bounded number of short inserts per window, and can never take the connections
//! paying users need. The caller counts every refusal in its metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, FromRow};

use crate::session::RunOn;
use crate::{Ledger, LedgerError};

/// What became of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOutcome {
    /// It changed the ledger (a payment applied, a refund recorded, a payment canceled).
    Applied,
    /// It had already been applied.
    Duplicate,
    /// Recorded without a ledger change (e.g. YooKassa says the payment is still pending).
    Recorded,
    /// Nothing to do (an event wgsub does not act on).
    Ignored,
    /// Refused (wrong sender, bad body, unknown or mismatching payment).
    Rejected,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Applied => "applied",
            DeliveryOutcome::Duplicate => "duplicate",
            DeliveryOutcome::Recorded => "recorded",
            DeliveryOutcome::Ignored => "ignored",
            DeliveryOutcome::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            DeliveryOutcome::Applied,
            DeliveryOutcome::Duplicate,
            DeliveryOutcome::Recorded,
            DeliveryOutcome::Ignored,
            DeliveryOutcome::Rejected,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == text)
    }
}

/// One webhook delivery as audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The client address the decision was made on.
    pub remote_addr: String,
    /// The notification's `event` (`payment.succeeded`, …) when it parsed.
    pub event: Option<String>,
    /// The YooKassa object id when it parsed.
    pub object_id: Option<String>,
    pub outcome: DeliveryOutcome,
    /// A stable reason label (`applied`, `forbidden_address`, `amount_mismatch`, …).
    pub reason: String,
}

/// One administrator action.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct AdminAction {
    #[sqlx(try_from = "jiff_sqlx::Timestamp")]
    pub at: Timestamp,
    pub admin_id: i64,
    pub user_id: i64,
    pub action: String,
    pub reason: String,
    pub details: serde_json::Value,
}

/// How many refused deliveries are kept as rows: at most `per_reason` for each reason within
/// each `window` (counted from the first one kept in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectionSampling {
    pub per_reason: u32,
    pub window: SignedDuration,
}

impl Default for RejectionSampling {
    /// Ten rows per reason per ten minutes: enough to see who is knocking, at most 1440 rows a
    /// day per reason whatever the flood.
    fn default() -> Self {
        Self {
            per_reason: 10,
            window: SignedDuration::from_mins(10),
        }
    }
}

/// Whether a refused delivery is kept as a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Keep it; `suppressed` refusals of this reason were not kept since the last one kept.
    Keep { suppressed: u64 },
    /// The reason's quota for this window is used up.
    Suppress,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Timestamp,
    kept: u32,
    suppressed: u64,
}

/// Decides which refused deliveries are kept ([`RejectionSampling`]). Its memory is one entry
/// per reason; callers pass stable reason labels.
#[derive(Debug, Default)]
pub struct RejectionSampler {
    sampling: RejectionSampling,
    windows: HashMap<String, Window>,
}

impl RejectionSampler {
    pub fn new(sampling: RejectionSampling) -> Self {
        Self {
            sampling,
            windows: HashMap::new(),
        }
    }

    /// Whether the refusal `reason` at `now` is kept.
    pub fn admit(&mut self, reason: &str, now: Timestamp) -> Admission {
        let sampling = self.sampling;
        let window = self.windows.entry(reason.to_owned()).or_insert(Window {
            started: now,
            kept: 0,
            suppressed: 0,
        });
        if now.duration_since(window.started) >= sampling.window || now < window.started {
            window.started = now;
            window.kept = 0;
        }
        if window.kept < sampling.per_reason {
            window.kept += 1;
            let suppressed = std::mem::take(&mut window.suppressed);
            Admission::Keep { suppressed }
        } else {
            window.suppressed += 1;
            Admission::Suppress
        }
    }

    /// Notes a refusal `reason` that was not offered for keeping (another sample was being
    /// written): it uses none of the quota and is counted as suppressed.
    pub fn skip(&mut self, reason: &str, now: Timestamp) {
        self.windows
            .entry(reason.to_owned())
            .or_insert(Window {
                started: now,
                kept: 0,
                suppressed: 0,
            })
            .suppressed += 1;
    }
}

/// How long a sample's write waits for a pool connection before it is dropped.
pub const SAMPLE_ACQUIRE_WAIT: Duration = Duration::from_millis(250);

/// The ledger's sampler of refused deliveries and the single write slot its rows share.
#[derive(Debug, Default)]
pub(crate) struct RejectionAudit {
    sampler: Mutex<RejectionSampler>,
    writing: AtomicBool,
}

impl RejectionAudit {
    pub(crate) fn new(sampling: RejectionSampling) -> Self {
        Self {
            sampler: Mutex::new(RejectionSampler::new(sampling)),
            writing: AtomicBool::new(false),
        }
    }
}

/// The write slot, held while a sample is written.
struct WriteSlot<'a>(&'a AtomicBool);

impl<'a> WriteSlot<'a> {
    fn take(flag: &'a AtomicBool) -> Option<Self> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Self(flag))
    }
}

impl Drop for WriteSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What became of a refused delivery's sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampled {
    /// Written as the row `id`; `suppressed` refusals of its reason were not written before it.
    Recorded { id: i64, suppressed: u64 },
    /// Not written: the reason's quota for the window is used up.
    Suppressed,
    /// Not written: another sample was being written, or no connection came within
    /// [`SAMPLE_ACQUIRE_WAIT`].
    PoolBusy,
}

/// A `webhook_deliveries` row as stored.
#[derive(FromRow)]
struct DeliveryRow {
    received_at: jiff_sqlx::Timestamp,
    remote_addr: String,
    event: Option<String>,
    object_id: Option<String>,
    outcome: String,
    reason: String,
}

async fn insert_delivery(
    conn: &mut PgConnection,
    persistent: bool,
    delivery: &WebhookDelivery,
    now: Timestamp,
) -> Result<i64, LedgerError> {
    let id = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (received_at, remote_addr, event, object_id, outcome, reason) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .persistent(persistent)
    .bind(now.to_sqlx())
    .bind(&delivery.remote_addr)
    .bind(delivery.event.as_deref().map(|e| e.chars().take(64).collect::<String>()))
    .bind(delivery.object_id.as_deref().map(|e| e.chars().take(64).collect::<String>()))
    .bind(delivery.outcome.as_str())
    .bind(&delivery.reason)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

impl Ledger {
    /// Audits one webhook delivery; returns its id.
    pub async fn record_webhook_delivery(
        &self,
        delivery: &WebhookDelivery,
        now: Timestamp,
    ) -> Result<i64, LedgerError> {
        let mut session = self.session().await?;
        let id = insert_delivery(&mut session, self.persistent, delivery, now).await?;
        session.finish().await?;
        Ok(id)
    }

    /// Samples a delivery refused before any decision (see the module comment): written only
    /// when the sampler keeps it, no other sample is being written and a connection comes
    /// within [`SAMPLE_ACQUIRE_WAIT`].
    pub async fn sample_rejected_webhook(
        &self,
        delivery: &WebhookDelivery,
        now: Timestamp,
    ) -> Result<Sampled, LedgerError> {
        let slot = WriteSlot::take(&self.rejections.writing);
        let admission = {
            let mut sampler = self
                .rejections
                .sampler
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if slot.is_none() {
                sampler.skip(&delivery.reason, now);
                return Ok(Sampled::PoolBusy);
            }
            sampler.admit(&delivery.reason, now)
        };
        let Admission::Keep { suppressed } = admission else {
            return Ok(Sampled::Suppressed);
        };
        let Ok(conn) = tokio::time::timeout(SAMPLE_ACQUIRE_WAIT, self.pool.acquire()).await else {
            return Ok(Sampled::PoolBusy);
        };
        let mut conn = conn?;
        let id = if self.persistent {
            insert_delivery(&mut conn, true, delivery, now).await?
        } else {
            // Behind PgBouncer one query's round trips must stay in one transaction.
            let mut tx = Connection::begin(&mut *conn).await?;
            let id = insert_delivery(&mut tx, false, delivery, now).await?;
            tx.commit().await?;
            id
        };
        Ok(Sampled::Recorded { id, suppressed })
    }

    /// The latest webhook deliveries, newest first.
    pub async fn webhook_deliveries(
        &self,
        limit: i64,
    ) -> Result<Vec<(Timestamp, WebhookDelivery)>, LedgerError> {
        let rows = sqlx::query(
            "SELECT received_at, remote_addr, event, object_id, outcome, reason \
             FROM webhook_deliveries ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all_on(self)
        .await?;
        rows.iter()
            .map(|row| {
                let row = DeliveryRow::from_row(row)?;
                let outcome = row.outcome;
                Ok((
                    row.received_at.to_jiff(),
                    WebhookDelivery {
                        remote_addr: row.remote_addr,
                        event: row.event,
                        object_id: row.object_id,
                        outcome: DeliveryOutcome::parse(&outcome).ok_or_else(|| {
                            LedgerError::Corrupt(format!("delivery outcome {outcome:?}"))
                        })?,
                        reason: row.reason,
                    },
                ))
            })
            .collect()
    }

    /// The administrator actions on a user, oldest first.
    pub async fn admin_actions(&self, user_id: i64) -> Result<Vec<AdminAction>, LedgerError> {
        let rows = sqlx::query(
            "SELECT at, admin_id, user_id, action, reason, details FROM admin_actions \
             WHERE user_id = $1 ORDER BY id",
        )
        .bind(user_id)
        .fetch_all_on(self)
        .await?;
        rows.iter()
            .map(|row| Ok(AdminAction::from_row(row)?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn sampler() -> RejectionSampler {
        RejectionSampler::new(RejectionSampling {
            per_reason: 2,
            window: SignedDuration::from_secs(60),
        })
    }

    #[test]
    fn at_most_the_quota_per_reason_is_kept_in_a_window() {
        let mut sampler = sampler();
        let kept = (0..100)
            .filter(|i| {
                matches!(
                    sampler.admit("forbidden_address", at(i / 10)),
                    Admission::Keep { .. }
                )
            })
            .count();
        assert_eq!(kept, 2);
        // Another reason has its own quota.
        assert_eq!(
            sampler.admit("malformed_body", at(5)),
            Admission::Keep { suppressed: 0 }
        );
    }

    #[test]
    fn a_new_window_keeps_again_and_says_how_many_were_suppressed() {
        let mut sampler = sampler();
        for second in 0..5 {
            sampler.admit("forbidden_address", at(second));
        }
        assert_eq!(
            sampler.admit("forbidden_address", at(59)),
            Admission::Suppress
        );
        assert_eq!(
            sampler.admit("forbidden_address", at(60)),
            Admission::Keep { suppressed: 4 }
        );
        assert_eq!(
            sampler.admit("forbidden_address", at(61)),
            Admission::Keep { suppressed: 0 }
        );
        assert_eq!(
            sampler.admit("forbidden_address", at(62)),
            Admission::Suppress
        );
    }

    #[test]
    fn skipped_refusals_use_no_quota_and_count_as_suppressed() {
        let mut sampler = sampler();
        for _ in 0..3 {
            sampler.skip("bad_body", at(0));
        }
        assert_eq!(
            sampler.admit("bad_body", at(1)),
            Admission::Keep { suppressed: 3 }
        );
        assert_eq!(
            sampler.admit("bad_body", at(2)),
            Admission::Keep { suppressed: 0 }
        );
        assert_eq!(sampler.admit("bad_body", at(3)), Admission::Suppress);
    }

    #[test]
    fn a_clock_that_steps_back_starts_a_new_window() {
        let mut sampler = sampler();
        for second in 0..3 {
            sampler.admit("bad_body", at(100 + second));
        }
        assert_eq!(
            sampler.admit("bad_body", at(10)),
            Admission::Keep { suppressed: 1 }
        );
    }
}
