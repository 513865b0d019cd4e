//! The bot's own notice queues — a user's devices moved to another location
//! ([`crate::location_moves`]), their server's AmneziaWG parameters changed
//! ([`crate::server_changes`]), their data quota used up ([`crate::quota`]): one row per
//! notice, queued in the statement that records what happened. A row is claimed before it is
//! sent, so a second replica or a restart never sends it twice; a claim older than
//! [`STALE_CLAIM`] was left by a bot that stopped mid-send and is taken over; ending a claim
//! ([`finish`]) ends only the claim it names. What differs between the queues — the table and
//! the columns that name one notice — is a [`Queued`] type.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use kube::ResourceExt;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, FromRow, Postgres, Row};
use teloxide::prelude::*;
use teloxide::types::InlineKeyboardButton;
use wgsub_crds::WgPeer;
use wgsub_ledger::session::RunOn;
use wgsub_ledger::{Ledger, LedgerError};

use super::{OutboxStep, RunReport, outbox_step, user_lang};
use crate::app::App;
use crate::broadcast::Delivery;
use crate::devices::device_label;
use crate::server_changes::user_of;
use crate::telegram::{self, CONFIG_PREFIX};
use crate::text::{self, Lang};

/// A claim older than this was left by a bot that stopped mid-send; it is sent again.
pub const STALE_CLAIM: SignedDuration = SignedDuration::from_mins(15);

/// One queued notice, as its table keeps it: the row type of a queue.
pub trait Queued: for<'r> FromRow<'r, PgRow> + Send + Sync + Unpin {
    /// The queue's table; it has `queued_at`, `claimed_at` and `outcome` (`pending`, `claimed`,
    /// `delivered`, `failed`) besides the key.
    const TABLE: &'static str;
    /// The columns that name one notice, in the order [`Queued::bind_key`] binds them (and the
    /// order notices queued at the same instant are sent in); `user_id`, who the notice goes
    /// to, is one of them.
    const KEY: &'static [&'static str];

    /// Binds the notice's key, in [`Queued::KEY`]'s order.
    fn bind_key<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments>;
}

/// A notice [`open`] found to send: the queue's row, who it goes to and when it was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenNotice<N> {
    pub notice: N,
    pub user_id: i64,
    pub queued_at: Timestamp,
}

/// `k1 = $1 AND k2 = $2 …` over the key.
pub(crate) fn key_matches<N: Queued>() -> String {
    N::KEY
        .iter()
        .enumerate()
        .map(|(at, column)| format!("{column} = ${}", at + 1))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// How a run of a queue went: what was seen for the first time, the changes recorded (each
/// queuing notices), and the notices sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueReport {
    pub first_seen: u32,
    pub changed: u32,
    pub notices: RunReport,
}

/// One run of a queue: records what the caches show with `record` (`(first seen, changed)`) —
/// only when they are in sync, as an empty cache after a restart must not look like
/// everything gone — then sends the open notices with `send`.
pub async fn run(
    app: &App,
    record: impl Future<Output = Result<(u32, u32), LedgerError>>,
    send: impl Future<Output = Result<RunReport, LedgerError>>,
) -> Result<QueueReport, LedgerError> {
    let (first_seen, changed) = if app.caches.check().is_ok() {
        record.await?
    } else {
        (0, 0)
    };
    Ok(QueueReport {
        first_seen,
        changed,
        notices: send.await?,
    })
}

/// The notices to send at `now`, oldest first: those waiting and those whose claim is stale.
pub async fn open<N: Queued>(
    ledger: &Ledger,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<OpenNotice<N>>, LedgerError> {
    let key = N::KEY.join(", ");
    let sql = format!(
        "SELECT {key}, queued_at FROM {} \
         WHERE outcome = 'pending' OR (outcome = 'claimed' AND claimed_at < $1) \
         ORDER BY queued_at, {key} LIMIT $2",
        N::TABLE
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind((now - STALE_CLAIM).to_sqlx())
        .bind(limit)
        .fetch_all_on(ledger)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(OpenNotice {
                notice: N::from_row(row)?,
                user_id: row.try_get("user_id")?,
                queued_at: row
                    .try_get::<jiff_sqlx::Timestamp, _>("queued_at")?
                    .to_jiff(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Claims a notice for sending at `now`; false when another run holds it, it is done, or a
/// newer one replaced it.
pub async fn claim<N: Queued>(
    ledger: &Ledger,
    notice: &N,
    now: Timestamp,
) -> Result<bool, LedgerError> {
    let next = N::KEY.len();
    let sql = format!(
        "UPDATE {} SET outcome = 'claimed', claimed_at = ${} \
         WHERE {} AND (outcome = 'pending' OR (outcome = 'claimed' AND claimed_at < ${}))",
        N::TABLE,
        next + 1,
        key_matches::<N>(),
        next + 2
    );
    let claimed = notice
        .bind_key(sqlx::query(AssertSqlSafe(sql)))
        .bind(now.to_sqlx())
        .bind((now - STALE_CLAIM).to_sqlx())
        .execute_on(ledger)
        .await?
        .rows_affected();
    Ok(claimed == 1)
}

/// Ends the claim made at `claimed_at` (the `now` given to [`claim`]): `Some(delivered)` for
/// done, `None` to give it back for the next run. A claim taken over as stale since is left to
/// its new holder: giving it back would let a third run send the notice again.
pub async fn finish<N: Queued>(
    ledger: &Ledger,
    notice: &N,
    claimed_at: Timestamp,
    outcome: Option<bool>,
) -> Result<(), LedgerError> {
    let outcome = match outcome {
        Some(true) => "delivered",
        Some(false) => "failed",
        None => "pending",
    };
    let (set, at) = (N::KEY.len() + 1, N::KEY.len() + 2);
    let sql = format!(
        "UPDATE {} \
         SET outcome = ${set}, claimed_at = CASE WHEN ${set} = 'pending' THEN NULL ELSE claimed_at END \
         WHERE {} AND outcome = 'claimed' AND claimed_at = ${at}",
        N::TABLE,
        key_matches::<N>()
    );
    notice
        .bind_key(sqlx::query(AssertSqlSafe(sql)))
        .bind(outcome)
        .bind(claimed_at.to_sqlx())
        .execute_on(ledger)
        .await?;
    Ok(())
}

/// Sends up to `limit` open notices, paced, each claimed first and in its user's language,
/// counted under the metric `kind`; `send` makes the send of one (a future that owns what it
/// needs). Failures are treated as the ledger's outbox treats them ([`outbox_step`]): a gone
/// chat is final, a passing failure is retried for a while, `retry_after` ends the run.
pub async fn send_open<N: Queued, F: Future<Output = Delivery>>(
    app: &App,
    now: Timestamp,
    limit: i64,
    kind: &str,
    mut send: impl FnMut(&N, Lang) -> F,
) -> Result<RunReport, LedgerError> {
    let mut report = RunReport::default();
    let mut sent_any = false;
    for OpenNotice {
        notice,
        user_id,
        queued_at,
    } in open::<N>(&app.ledger, now, limit).await?
    {
        if !claim(&app.ledger, &notice, now).await? {
            continue;
        }
        if sent_any {
            tokio::time::sleep(app.settings.pacing.interval()).await;
        }
        sent_any = true;
        let lang = user_lang(app, user_id).await?;
        let delivery = send(&notice, lang).await;
        let delivered = delivery == Delivery::Delivered;
        app.metrics.notification(kind, delivered);
        report.count(delivered);
        let step = outbox_step(delivery, now.duration_since(queued_at));
        let outcome = (step == OutboxStep::MarkSent).then_some(delivered);
        finish(&app.ledger, &notice, now, outcome).await?;
        if step == OutboxStep::Stop {
            break;
        }
    }
    Ok(report)
}

/// Sends `text` to `user_id` with a button per device they have on `server` that sends its
/// new config.
pub async fn send_with_configs(
    bot: &Bot,
    lang: Lang,
    (user_id, server): (i64, String),
    peers: &[Arc<WgPeer>],
    text: String,
) -> Delivery {
    let mut devices: Vec<&WgPeer> = peers
        .iter()
        .map(AsRef::as_ref)
        .filter(|peer| peer.spec.server == server && user_of(peer) == Some(user_id))
        .collect();
    devices.sort_by_key(|peer| peer.name_any());
    let buttons = devices.iter().map(|peer| {
        InlineKeyboardButton::callback(
            text::new_config_button(lang, &device_label(peer)),
            format!("{CONFIG_PREFIX}{}", peer.name_any()),
        )
    });
    let request = bot.send_message(ChatId(user_id), text);
    let result = if devices.is_empty() {
        request.await
    } else {
        request.reply_markup(telegram::column(buttons)).await
    };
    if let Err(error) = &result {
        tracing::debug!(chat = user_id, %error, "notice failed");
    }
    telegram::delivery(&result)
}

/// The claim rules checked against a real table, for each queue's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A run stalled past [`STALE_CLAIM`] whose send then fails for a passing reason gives
    /// back only its own claim, never the one another run took over since: a third run would
    /// send the notice again. `notice` is queued (pending) at `start` in `ledger`.
    pub async fn a_stalled_run_cannot_give_back_the_claim_another_run_took_over<
        N: Queued + Clone + PartialEq + std::fmt::Debug,
    >(
        ledger: &Ledger,
        notice: N,
        start: Timestamp,
    ) {
        let stalled = start;
        assert!(claim(ledger, &notice, stalled).await.unwrap());
        let takeover = stalled + STALE_CLAIM + SignedDuration::from_secs(1);
        let found = open::<N>(ledger, takeover, 10).await.unwrap();
        let found: Vec<_> = found
            .iter()
            .map(|open| (&open.notice, open.queued_at))
            .collect();
        assert_eq!(found, [(&notice, start)]);
        assert!(claim(ledger, &notice, takeover).await.unwrap());
        finish(ledger, &notice, stalled, None).await.unwrap();
        let third = takeover + SignedDuration::from_secs(1);
        assert!(open::<N>(ledger, third, 10).await.unwrap().is_empty());
        assert!(!claim(ledger, &notice, third).await.unwrap());
        // The stalled run delivering late does not end the holder's claim either; the holder
        // ends it.
        finish(ledger, &notice, stalled, Some(true)).await.unwrap();
        finish(ledger, &notice, takeover, Some(false))
            .await
            .unwrap();
        let sql = format!(
            "SELECT outcome FROM {} WHERE {}",
            N::TABLE,
            key_matches::<N>()
        );
        let row = notice
            .bind_key(sqlx::query(AssertSqlSafe(sql)))
            .fetch_one_on(ledger)
            .await
            .unwrap();
        assert_eq!(<(String,)>::from_row(&row).unwrap().0, "failed");
    }
}
