//! The background work: expiry reminders (the pure schedule in [`crate::reminders`], what was
//! sent kept in the database), the ledger's notification outbox (payment succeeded, refund,
//! a failed automatic renewal) and the automatic renewals themselves ([`run_renewals`]).
//! Each run is one function of `now` so tests drive it directly. The bot's own notice queues
//! (moves, changed server parameters) share [`queue`].

use jiff::{SignedDuration, Timestamp};
use teloxide::Bot;
use wgsub_ledger::{LedgerError, NotificationEvent, RenewalContext, RenewalReport};

use crate::app::App;
use crate::broadcast::Delivery;
use crate::reminders::{candidate_range, due_reminders};
use crate::store;
use crate::telegram::send_text;
use crate::text::{self, Lang};

pub mod queue;

/// How a run went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    pub sent: u32,
    pub failed: u32,
}

impl RunReport {
    /// Counts one send.
    pub fn count(&mut self, delivered: bool) {
        if delivered {
            self.sent += 1;
        } else {
            self.failed += 1;
        }
    }
}

/// The language of a user's messages, by the code Telegram last gave the ledger for them.
pub async fn user_lang(app: &App, user_id: i64) -> Result<Lang, LedgerError> {
    let user = app.ledger.user(user_id).await?;
    Ok(Lang::from_code(
        user.and_then(|user| user.language_code).as_deref(),
    ))
}

/// Sends the reminders due at `now`, each claimed in the database first so it goes out once
/// even across restarts and replicas. A chat that blocked the bot is recorded as failed and
/// never retried; a passing failure gives the claim back for the next run; `retry_after` ends
/// the run.
pub async fn send_due_reminders(
    app: &App,
    bot: &Bot,
    now: Timestamp,
) -> Result<RunReport, LedgerError> {
    let (from, to) = candidate_range(now);
    let candidates = store::reminder_candidates(&app.ledger, from, to).await?;
    let ids: Vec<i64> = candidates.iter().map(|c| c.period.user_id).collect();
    let sent = store::sent_reminders(&app.ledger, &ids).await?;
    let periods: Vec<_> = candidates.iter().map(|c| c.period).collect();
    let mut report = RunReport::default();
    for (index, key) in due_reminders(&periods, &sent, now).into_iter().enumerate() {
        if !store::claim_reminder(&app.ledger, &key, now).await? {
            continue;
        }
        if index > 0 {
            tokio::time::sleep(app.settings.pacing.interval()).await;
        }
        let lang = Lang::from_code(
            candidates
                .iter()
                .find(|c| c.period.user_id == key.user_id)
                .and_then(|c| c.language_code.as_deref()),
        );
        let metric = format!("reminder_{}", key.kind.as_str());
        let delivery = send_text(
            bot,
            key.user_id,
            text::reminder(lang, key.kind, key.paid_until),
        )
        .await;
        app.metrics
            .notification(&metric, delivery == Delivery::Delivered);
        match delivery {
            Delivery::Delivered => {
                store::finish_reminder(&app.ledger, &key, true).await?;
                report.sent += 1;
            }
            Delivery::Unreachable => {
                store::finish_reminder(&app.ledger, &key, false).await?;
                report.failed += 1;
            }
            Delivery::Failed => {
                store::release_reminder(&app.ledger, &key).await?;
                report.failed += 1;
            }
            Delivery::RetryAfter(_) => {
                store::release_reminder(&app.ledger, &key).await?;
                report.failed += 1;
                break;
            }
        }
    }
    Ok(report)
}

/// Renewal periods charged per run.
pub const RENEWAL_BATCH: i64 = 50;

/// Charges the automatic renewals due at `now` with the saved cards and settles those still
/// open (see [`wgsub_ledger::renewal`]): safe on every replica at once, each period is claimed
/// in the database before YooKassa is asked. The user hears of a failure through the outbox;
/// the run's outcomes are counted in the metrics.
pub async fn run_renewals(app: &App, now: Timestamp) -> Result<RenewalReport, LedgerError> {
    let ctx = RenewalContext {
        yookassa: &app.yookassa,
        plans: &app.plans,
        receipt: app.settings.receipts,
    };
    let report = app.ledger.run_renewals(ctx, now, RENEWAL_BATCH).await?;
    app.metrics.renewals(&report);
    Ok(report)
}

/// How long a notification that keeps failing (not a blocked chat) is retried.
pub const OUTBOX_GIVE_UP_AFTER: SignedDuration = SignedDuration::from_hours(1);

/// What to do with an outbox row after a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStep {
    /// Done with it (delivered, the chat is gone, or it failed for too long).
    MarkSent,
    /// Try again next run.
    Keep,
    /// Telegram asked to wait: stop this run.
    Stop,
}

/// The outbox decision for a send of a notification `age` old.
pub fn outbox_step(delivery: Delivery, age: SignedDuration) -> OutboxStep {
    match delivery {
        Delivery::Delivered | Delivery::Unreachable => OutboxStep::MarkSent,
        Delivery::RetryAfter(_) => OutboxStep::Stop,
        Delivery::Failed if age >= OUTBOX_GIVE_UP_AFTER => OutboxStep::MarkSent,
        Delivery::Failed => OutboxStep::Keep,
    }
}

/// The message of an outbox event in the user's language.
pub fn notification_text(lang: Lang, event: &NotificationEvent) -> String {
    match event {
        NotificationEvent::PaymentSucceeded { paid_until, .. } => {
            text::payment_succeeded(lang, *paid_until)
        }
        NotificationEvent::RefundRecorded { paid_until, .. } => {
            text::refund_recorded(lang, *paid_until)
        }
        NotificationEvent::ReferralRewarded { days, paid_until } => {
            text::referral_rewarded(lang, *days, *paid_until)
        }
        NotificationEvent::ReferralRevoked { days, paid_until } => {
            text::referral_revoked(lang, *days, *paid_until)
        }
        NotificationEvent::RenewalFailed {
            reason, paid_until, ..
        } => text::renewal_failed(lang, reason, *paid_until),
        NotificationEvent::RenewalUnconfirmed { paid_until, .. } => {
            text::renewal_unconfirmed(lang, *paid_until)
        }
    }
}

/// Sends up to `limit` notifications of the ledger's outbox, each claimed first so it goes out
/// once even with several replicas draining; marks them sent, or gives the claim back for the
/// next run on a passing failure (and for the rest of the batch when Telegram asks to wait).
pub async fn drain_outbox(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<RunReport, LedgerError> {
    let mut report = RunReport::default();
    let claimed = app.ledger.claim_notifications(now, limit).await?;
    for (index, notification) in claimed.iter().enumerate() {
        if index > 0 {
            tokio::time::sleep(app.settings.pacing.interval()).await;
        }
        let lang = user_lang(app, notification.user_id).await?;
        let delivery =
            crate::guide::send_notice(bot, notification.user_id, lang, &notification.event).await;
        let delivered = delivery == Delivery::Delivered;
        app.metrics
            .notification(notification.event.kind(), delivered);
        report.count(delivered);
        match outbox_step(delivery, now.duration_since(notification.created_at)) {
            OutboxStep::MarkSent => {
                app.ledger
                    .mark_notification_sent(notification.id, now)
                    .await?;
            }
            OutboxStep::Keep => {
                app.ledger
                    .release_notification(notification.id, now)
                    .await?;
            }
            OutboxStep::Stop => {
                for unsent in &claimed[index..] {
                    app.ledger.release_notification(unsent.id, now).await?;
                }
                break;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn outbox_rows_are_done_when_delivered_or_the_chat_is_gone() {
        let young = SignedDuration::from_mins(1);
        assert_eq!(
            outbox_step(Delivery::Delivered, young),
            OutboxStep::MarkSent
        );
        assert_eq!(
            outbox_step(Delivery::Unreachable, young),
            OutboxStep::MarkSent
        );
        assert_eq!(outbox_step(Delivery::Failed, young), OutboxStep::Keep);
        assert_eq!(
            outbox_step(Delivery::Failed, OUTBOX_GIVE_UP_AFTER),
            OutboxStep::MarkSent
        );
        assert_eq!(
            outbox_step(Delivery::RetryAfter(Duration::from_secs(3)), young),
            OutboxStep::Stop
        );
    }

    #[test]
    fn payment_notifications_carry_the_new_date() {
        let until: Timestamp = "2026-04-01T00:00:00Z".parse().unwrap();
        let event = NotificationEvent::PaymentSucceeded {
            payment_id: uuid_like(),
            plan: "month".into(),
            amount_minor: 19_900,
            currency: "RUB".into(),
            paid_until: Some(until),
            first_purchase: false,
        };
        assert!(notification_text(Lang::En, &event).contains("2026-04-01 00:00 UTC"));
        assert!(notification_text(Lang::Ru, &event).contains("2026-04-01 00:00 UTC"));
    }

    fn uuid_like() -> uuid::Uuid {
        uuid::Uuid::from_u128(7)
    }
}
