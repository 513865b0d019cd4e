//! The data quota in the bot: the traffic lines of `/status` ([`status_with_usage`]) and the
//! one message a user gets when their quota for the period runs out — the VPN is paused until
//! the period ends or a purchase, with the plans as buttons (by card, with renewal, in Stars).
//!
//! The operator marks a subscription whose period's traffic reached its quota with the
//! condition `QuotaExhausted` (and keeps its peers off the interface). The bot watches the
//! subscriptions in its cache; for each exhausted one it queues a notice keyed by the user and
//! the period (`bot_quota_notices`, primary key `(user_id, period_start)`), so one exhaustion
//! is told once per period whatever the restarts and replicas, then sends the notices through
//! the bot's notice queue ([`crate::jobs::queue`]: each claimed before it is sent).
//!
//! The decision ([`exhausted_periods`]) is pure; [`run`] is the shell around the caches, the
//! bot's table and the Bot API.

use std::sync::Arc;

use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use kube::ResourceExt;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{FromRow, Postgres};
use teloxide::Bot;
use teloxide::prelude::*;
use wgsub_crds::VpnSubscription;
use wgsub_crds::resources::{subscription_name, telegram_user_id_from_name};
use wgsub_devices::Caches;
use wgsub_devices::usage::Usage;
use wgsub_ledger::session::RunOn;
use wgsub_ledger::{Entitlement, Ledger, LedgerError};

use crate::app::App;
use crate::handlers::plans_keyboard;
use crate::jobs::RunReport;
use crate::jobs::queue::{self, QueueReport, Queued};
use crate::telegram;
use crate::text::{self, Lang};

/// The metric kind of the notice.
pub const NOTICE_KIND: &str = "quota_exhausted";

/// A user's period whose quota ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExhaustedPeriod {
    pub user_id: i64,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
}

/// The periods of `subscriptions` whose quota the operator says is used up. A subscription
/// that is not a user's (`tg-<id>`), or whose period the operator has not written, is left out.
pub fn exhausted_periods(subscriptions: &[Arc<VpnSubscription>]) -> Vec<ExhaustedPeriod> {
    let mut periods: Vec<ExhaustedPeriod> = subscriptions
        .iter()
        .filter_map(|subscription| {
            let usage = Usage::of(subscription);
            if !usage.exhausted {
                return None;
            }
            Some(ExhaustedPeriod {
                user_id: telegram_user_id_from_name(&subscription.name_any())?,
                period_start: usage.period_start?,
                period_end: usage.period_end?,
            })
        })
        .collect();
    periods.sort_by_key(|period| (period.user_id, period.period_start));
    periods
}

/// The user's traffic as `/status` shows it: from their cached subscription, or — before the
/// cache has one — the quota the ledger gives and nothing counted.
pub fn usage_of(caches: &Caches, user_id: i64, entitlement: &Entitlement) -> Usage {
    caches
        .subscription(&subscription_name(user_id))
        .map_or_else(
            || Usage {
                quota_bytes: entitlement.traffic_quota.map(|quota| quota.bytes),
                ..Usage::default()
            },
            |subscription| Usage::of(&subscription),
        )
}

/// The `/status` answer `status` with the traffic lines of `usage` after it (none when there
/// is nothing to tell).
pub fn status_with_usage(lang: Lang, status: String, usage: &Usage) -> String {
    let lines = text::usage_lines(lang, usage);
    if lines.is_empty() {
        status
    } else {
        format!("{status}\n\n{lines}")
    }
}

/// One run ([`queue::run`]): queues a notice for every exhausted period not queued before,
/// then sends up to `limit` open notices; `changed` counts the periods queued.
pub async fn run(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<QueueReport, LedgerError> {
    queue::run(
        app,
        record_exhausted(app, now),
        send_notices(app, bot, now, limit),
    )
    .await
}

/// Queues a notice for each exhausted period of the cached subscriptions: `(0, queued)`.
/// A notice still waiting for a period that is no longer used up (a purchase started a new
/// period, or the period ended, before it was sent) is withdrawn: it would tell of a pause that
/// is over.
pub async fn record_exhausted(app: &App, now: Timestamp) -> Result<(u32, u32), LedgerError> {
    let subscriptions = app.caches.subscriptions();
    let exhausted = exhausted_periods(&subscriptions);
    let mut queued = 0;
    for period in &exhausted {
        if queue_notice(&app.ledger, period, now).await? {
            tracing::info!(
                user = period.user_id,
                "data quota used up; telling the user"
            );
            queued += 1;
        }
    }
    let withdrawn = withdraw_stale(&app.ledger, &exhausted).await?;
    if withdrawn > 0 {
        tracing::info!(
            withdrawn,
            "quota notices of periods no longer used up withdrawn"
        );
    }
    Ok((0, queued))
}

/// Deletes the waiting notices whose period is not among `exhausted`; returns how many.
async fn withdraw_stale(
    ledger: &Ledger,
    exhausted: &[ExhaustedPeriod],
) -> Result<u64, LedgerError> {
    let users: Vec<i64> = exhausted.iter().map(|period| period.user_id).collect();
    // As the table holds them: to the microsecond, the rest dropped (as the binding does).
    let starts: Vec<String> = exhausted
        .iter()
        .map(|period| Timestamp::from_microsecond(period.period_start.as_microsecond()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| LedgerError::Invalid(error.to_string()))?
        .iter()
        .map(Timestamp::to_string)
        .collect();
    let deleted = sqlx::query(
        "DELETE FROM bot_quota_notices WHERE outcome = 'pending' \
           AND (user_id, period_start) NOT IN ( \
               SELECT id, start::timestamptz FROM unnest($1::BIGINT[], $2::TEXT[]) AS e (id, start))",
    )
    .bind(users)
    .bind(starts)
    .execute_on(ledger)
    .await?
    .rows_affected();
    Ok(deleted)
}

/// Queues the period's notice; false when it was queued before (by this or another replica).
async fn queue_notice(
    ledger: &Ledger,
    period: &ExhaustedPeriod,
    now: Timestamp,
) -> Result<bool, LedgerError> {
    let inserted = sqlx::query(
        "INSERT INTO bot_quota_notices (user_id, period_start, period_end, queued_at, outcome) \
         VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT DO NOTHING",
    )
    .bind(period.user_id)
    .bind(period.period_start.to_sqlx())
    .bind(period.period_end.to_sqlx())
    .bind(now.to_sqlx())
    .execute_on(ledger)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// A queued notice. `period_end` rides in the key so the row read for sending names the whole
/// period the message tells about.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
struct Notice {
    user_id: i64,
    period_start: jiff_sqlx::Timestamp,
    period_end: jiff_sqlx::Timestamp,
}

impl Queued for Notice {
    const TABLE: &'static str = "bot_quota_notices";
    const KEY: &'static [&'static str] = &["user_id", "period_start", "period_end"];

    fn bind_key<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(self.user_id)
            .bind(self.period_start)
            .bind(self.period_end)
    }
}

/// Sends up to `limit` open notices ([`queue::send_open`]): that the quota is used up, until
/// when the VPN is paused, and the plans to buy.
pub async fn send_notices(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<RunReport, LedgerError> {
    let send = move |notice: &Notice, lang| {
        let text = text::quota_exhausted(lang, Some(notice.period_end.to_jiff()));
        let (chat, buttons) = (ChatId(notice.user_id), plans_keyboard(lang, &app.plans));
        async move {
            let result = bot.send_message(chat, text).reply_markup(buttons).await;
            if let Err(error) = &result {
                tracing::debug!(%chat, %error, "quota notice failed");
            }
            telegram::delivery(&result)
        }
    };
    queue::send_open(app, now, limit, NOTICE_KIND, send).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use wgsub_crds::resources::{
        CONDITION_QUOTA_EXHAUSTED, TrafficQuota, TrafficUsage, VpnSubscriptionSpec,
        VpnSubscriptionStatus,
    };

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn subscription(name: &str, exhausted: Option<&str>, counted: bool) -> Arc<VpnSubscription> {
        let mut subscription = VpnSubscription::new(
            name,
            VpnSubscriptionSpec {
                traffic_quota: Some(TrafficQuota {
                    bytes: 1 << 30,
                    period_days: 30,
                }),
                ..VpnSubscriptionSpec::for_user(1)
            },
        );
        subscription.status = Some(VpnSubscriptionStatus {
            usage: counted.then(|| TrafficUsage {
                period_start: t("2026-12-01T00:00:00Z"),
                period_end: Some(t("2026-12-31T00:00:00Z")),
                period_tx_bytes: 1 << 30,
                ..TrafficUsage::default()
            }),
            conditions: exhausted
                .map(|status| Condition {
                    type_: CONDITION_QUOTA_EXHAUSTED.into(),
                    status: status.into(),
                    reason: "QuotaExhausted".into(),
                    message: String::new(),
                    last_transition_time: Time(t("2026-12-20T00:00:00Z")),
                    observed_generation: None,
                })
                .into_iter()
                .collect(),
            ..VpnSubscriptionStatus::default()
        });
        Arc::new(subscription)
    }

    #[test]
    fn only_users_exhausted_periods_the_operator_wrote_are_told() {
        let subscriptions = [
            subscription("tg-9", Some("True"), true),
            subscription("tg-3", Some("True"), true),
            subscription("tg-4", Some("False"), true),
            subscription("tg-5", None, true),
            subscription("tg-6", Some("True"), false),
            subscription("not-a-user", Some("True"), true),
        ];
        let period = |user_id| ExhaustedPeriod {
            user_id,
            period_start: t("2026-12-01T00:00:00Z"),
            period_end: t("2026-12-31T00:00:00Z"),
        };
        assert_eq!(exhausted_periods(&subscriptions), [period(3), period(9)]);
    }

    #[test]
    fn status_gets_the_traffic_lines_after_it_and_nothing_without_traffic() {
        let usage = Usage::of(&subscription("tg-9", Some("True"), true));
        let shown = status_with_usage(Lang::En, "Subscription: active".into(), &usage);
        assert!(
            shown.starts_with("Subscription: active\n\nTraffic this period:"),
            "{shown}"
        );
        assert!(shown.contains("⛔"), "{shown}");
        assert_eq!(
            status_with_usage(Lang::En, "Subscription: active".into(), &Usage::default()),
            "Subscription: active"
        );
    }

    #[tokio::test]
    async fn a_stalled_run_cannot_give_back_the_claim_another_run_took_over() {
        let (pool, _) = wgsub_ledger::testing::fresh_database("bot_quota_claims").await;
        let ledger = Ledger::new(pool, false);
        let start: Timestamp = "2026-03-01T00:00:00.123456Z".parse().unwrap();
        let period = ExhaustedPeriod {
            user_id: 7,
            period_start: t("2026-02-01T00:00:00Z"),
            period_end: t("2026-03-03T00:00:00Z"),
        };
        assert!(queue_notice(&ledger, &period, start).await.unwrap());
        assert!(
            !queue_notice(&ledger, &period, start).await.unwrap(),
            "a period is queued once"
        );
        let notice = Notice {
            user_id: 7,
            period_start: period.period_start.to_sqlx(),
            period_end: period.period_end.to_sqlx(),
        };
        queue::testing::a_stalled_run_cannot_give_back_the_claim_another_run_took_over(
            &ledger, notice, start,
        )
        .await;
    }
}
