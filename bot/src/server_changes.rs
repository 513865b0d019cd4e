//! Telling users that their AmneziaWG server's parameters changed. Every client config carries
//! the server's `Jc`…`H4` (and `I1`–`I5`), so a changed set silently breaks every imported
//! tunnel: the bot watches the servers in its cache, records each server's parameter
//! fingerprint ([`wgsub_crds::amnezia::fingerprint`]), and when it differs from the last one
//! recorded queues one notice per user with a peer on that server — in the same statement, so
//! a restart between the two loses nothing — then sends the notices, each claimed first so a
//! second replica or a restart never sends one twice. The first sight of a server tells
//! nobody; WireGuard servers carry no parameters and never count.
//!
//! The decisions ([`current_fingerprints`], [`step`], [`users_on`]) are pure; [`run`] is the
//! shell around the caches, the bot's tables and the Bot API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use kube::ResourceExt;
use sqlx::Row;
use teloxide::Bot;
use teloxide::prelude::*;
use teloxide::types::InlineKeyboardButton;
use wgsub_crds::resources::{LABEL_SUBSCRIPTION, telegram_user_id_from_name};
use wgsub_crds::{WgPeer, WgServer};
use wgsub_ledger::session::RunOn;
use wgsub_ledger::{Ledger, LedgerError};

use crate::app::App;
use crate::broadcast::Delivery;
use crate::devices::device_label;
use crate::jobs::{OutboxStep, RunReport, outbox_step};
use crate::telegram::{self, CONFIG_PREFIX};
use crate::text::{self, Lang};

/// The metric kind of the notice.
pub const NOTICE_KIND: &str = "server_params_changed";

/// A claim older than this was left by a bot that stopped mid-send; it is sent again.
pub const STALE_CLAIM: SignedDuration = SignedDuration::from_mins(15);

/// The parameter fingerprint of every AmneziaWG server whose set is complete and valid, by
/// name. A WireGuard server, or one whose parameters are still being chosen, is left out.
pub fn current_fingerprints(servers: &[Arc<WgServer>]) -> BTreeMap<String, String> {
    servers
        .iter()
        .filter_map(|server| {
            let params = server.spec.amneziawg_params()?;
            Some((server.name_any(), params.fingerprint()))
        })
        .collect()
}

/// What a server's current fingerprint means against the one recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsStep {
    /// Never seen: record it, tell nobody (their configs already carry it).
    FirstSight,
    Unchanged,
    /// Record the new one and tell the server's users.
    Changed {
        previous: String,
    },
}

pub fn step(recorded: Option<&str>, current: &str) -> ParamsStep {
    match recorded {
        None => ParamsStep::FirstSight,
        Some(recorded) if recorded == current => ParamsStep::Unchanged,
        Some(recorded) => ParamsStep::Changed {
            previous: recorded.to_owned(),
        },
    }
}

/// The Telegram user a peer belongs to (by its subscription label `tg-<id>`).
pub fn user_of(peer: &WgPeer) -> Option<i64> {
    telegram_user_id_from_name(peer.labels().get(LABEL_SUBSCRIPTION)?)
}

/// The users with a peer on `server`, each once, in id order.
pub fn users_on(peers: &[Arc<WgPeer>], server: &str) -> Vec<i64> {
    peers
        .iter()
        .filter(|peer| peer.spec.server == server)
        .filter_map(|peer| user_of(peer))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// How a run went: servers whose change was recorded, and the notices sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangesReport {
    pub first_seen: u32,
    pub changed: u32,
    pub notices: RunReport,
}

/// One run: records what the caches show (when they are in sync — an empty cache after a
/// restart must not look like a server without users), then sends up to `limit` open notices.
pub async fn run(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<ChangesReport, LedgerError> {
    let mut report = ChangesReport::default();
    if app.caches.check().is_ok() {
        (report.first_seen, report.changed) = record_changes(app, now).await?;
    }
    report.notices = send_notices(app, bot, now, limit).await?;
    Ok(report)
}

/// Compares every AmneziaWG server's fingerprint with the recorded one: `(first seen,
/// changed)`.
pub async fn record_changes(app: &App, now: Timestamp) -> Result<(u32, u32), LedgerError> {
    let current = current_fingerprints(&app.caches.servers());
    if current.is_empty() {
        return Ok((0, 0));
    }
    let recorded = recorded_fingerprints(&app.ledger).await?;
    let peers = app.caches.peers();
    let (mut first_seen, mut changed) = (0, 0);
    for (server, fingerprint) in &current {
        match step(recorded.get(server).map(String::as_str), fingerprint) {
            ParamsStep::Unchanged => {}
            ParamsStep::FirstSight => {
                first_seen += u32::from(record_first(&app.ledger, server, fingerprint, now).await?);
            }
            ParamsStep::Changed { previous } => {
                let users = users_on(&peers, server);
                if record_change(&app.ledger, server, &previous, fingerprint, &users, now).await? {
                    tracing::info!(server, users = users.len(), "AmneziaWG parameters changed");
                    changed += 1;
                }
            }
        }
    }
    Ok((first_seen, changed))
}

async fn recorded_fingerprints(ledger: &Ledger) -> Result<BTreeMap<String, String>, LedgerError> {
    let rows = sqlx::query("SELECT server, fingerprint FROM bot_server_params")
        .fetch_all_on(ledger)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("server")?, row.try_get("fingerprint")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Records a server's first fingerprint; false when another replica did first.
async fn record_first(
    ledger: &Ledger,
    server: &str,
    fingerprint: &str,
    now: Timestamp,
) -> Result<bool, LedgerError> {
    let inserted = sqlx::query(
        "INSERT INTO bot_server_params (server, fingerprint, recorded_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(server)
    .bind(fingerprint)
    .bind(now.to_sqlx())
    .execute_on(ledger)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Records the change from `previous` and queues a notice for each of `users`, in one
/// statement; false when the record no longer held `previous` (another replica recorded it).
async fn record_change(
    ledger: &Ledger,
    server: &str,
    previous: &str,
    fingerprint: &str,
    users: &[i64],
    now: Timestamp,
) -> Result<bool, LedgerError> {
    let row = sqlx::query(
        "WITH changed AS ( \
             UPDATE bot_server_params \
             SET fingerprint = $3, generation = generation + 1, recorded_at = $4 \
             WHERE server = $1 AND fingerprint = $2 \
             RETURNING generation \
         ), queued AS ( \
             INSERT INTO bot_server_param_notices (server, generation, user_id, queued_at, outcome) \
             SELECT $1, changed.generation, users.id, $4, 'pending' \
             FROM changed CROSS JOIN unnest($5::BIGINT[]) AS users (id) \
             ON CONFLICT DO NOTHING \
         ) \
         SELECT count(*) AS changed FROM changed",
    )
    .bind(server)
    .bind(previous)
    .bind(fingerprint)
    .bind(now.to_sqlx())
    .bind(users)
    .fetch_one_on(ledger)
    .await?;
    Ok(row.try_get::<i64, _>("changed")? == 1)
}

/// A queued notice.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Notice {
    server: String,
    generation: i64,
    user_id: i64,
    queued_at: Timestamp,
}

async fn open_notices(
    ledger: &Ledger,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<Notice>, LedgerError> {
    let rows = sqlx::query(
        "SELECT server, generation, user_id, queued_at FROM bot_server_param_notices \
         WHERE outcome = 'pending' OR (outcome = 'claimed' AND claimed_at < $1) \
         ORDER BY queued_at, server, generation, user_id LIMIT $2",
    )
    .bind((now - STALE_CLAIM).to_sqlx())
    .bind(limit)
    .fetch_all_on(ledger)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Notice {
                server: row.try_get("server")?,
                generation: row.try_get("generation")?,
                user_id: row.try_get("user_id")?,
                queued_at: row
                    .try_get::<jiff_sqlx::Timestamp, _>("queued_at")?
                    .to_jiff(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Claims a notice for sending; false when another replica holds it or it is done.
async fn claim(ledger: &Ledger, notice: &Notice, now: Timestamp) -> Result<bool, LedgerError> {
    let claimed = sqlx::query(
        "UPDATE bot_server_param_notices SET outcome = 'claimed', claimed_at = $4 \
         WHERE server = $1 AND generation = $2 AND user_id = $3 \
           AND (outcome = 'pending' OR (outcome = 'claimed' AND claimed_at < $5))",
    )
    .bind(&notice.server)
    .bind(notice.generation)
    .bind(notice.user_id)
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
async fn finish(
    ledger: &Ledger,
    notice: &Notice,
    claimed_at: Timestamp,
    outcome: Option<bool>,
) -> Result<(), LedgerError> {
    let outcome = match outcome {
        Some(true) => "delivered",
        Some(false) => "failed",
        None => "pending",
    };
    sqlx::query(
        "UPDATE bot_server_param_notices \
         SET outcome = $4, claimed_at = CASE WHEN $4 = 'pending' THEN NULL ELSE claimed_at END \
         WHERE server = $1 AND generation = $2 AND user_id = $3 AND outcome = 'claimed' \
           AND claimed_at = $5",
    )
    .bind(&notice.server)
    .bind(notice.generation)
    .bind(notice.user_id)
    .bind(outcome)
    .bind(claimed_at.to_sqlx())
    .execute_on(ledger)
    .await?;
    Ok(())
}

/// Sends up to `limit` open notices: the text, and a button per device the user has on the
/// server that sends its new config. Failures are treated as the ledger's outbox treats them
/// ([`outbox_step`]): a gone chat is final, a passing failure is retried for a while,
/// `retry_after` ends the run.
pub async fn send_notices(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<RunReport, LedgerError> {
    let mut report = RunReport::default();
    let peers = app.caches.peers();
    let mut sent_any = false;
    for notice in open_notices(&app.ledger, now, limit).await? {
        if !claim(&app.ledger, &notice, now).await? {
            continue;
        }
        if sent_any {
            tokio::time::sleep(app.settings.pacing.interval()).await;
        }
        sent_any = true;
        let lang = Lang::from_code(
            app.ledger
                .user(notice.user_id)
                .await?
                .and_then(|user| user.language_code)
                .as_deref(),
        );
        let delivery = send_notice(bot, lang, &notice, &peers).await;
        let delivered = delivery == Delivery::Delivered;
        app.metrics.notification(NOTICE_KIND, delivered);
        if delivered {
            report.sent += 1;
        } else {
            report.failed += 1;
        }
        match outbox_step(delivery, now.duration_since(notice.queued_at)) {
            OutboxStep::MarkSent => finish(&app.ledger, &notice, now, Some(delivered)).await?,
            OutboxStep::Keep => finish(&app.ledger, &notice, now, None).await?,
            OutboxStep::Stop => {
                finish(&app.ledger, &notice, now, None).await?;
                break;
            }
        }
    }
    Ok(report)
}

async fn send_notice(bot: &Bot, lang: Lang, notice: &Notice, peers: &[Arc<WgPeer>]) -> Delivery {
    let mut devices: Vec<&WgPeer> = peers
        .iter()
        .map(AsRef::as_ref)
        .filter(|peer| peer.spec.server == notice.server && user_of(peer) == Some(notice.user_id))
        .collect();
    devices.sort_by_key(|peer| peer.name_any());
    let buttons = devices.iter().map(|peer| {
        InlineKeyboardButton::callback(
            text::new_config_button(lang, &device_label(peer)),
            format!("{CONFIG_PREFIX}{}", peer.name_any()),
        )
    });
    let request = bot.send_message(ChatId(notice.user_id), text::server_params_changed(lang));
    let result = if devices.is_empty() {
        request.await
    } else {
        request.reply_markup(telegram::column(buttons)).await
    };
    if let Err(error) = &result {
        tracing::debug!(chat = notice.user_id, %error, "server change notice failed");
    }
    telegram::delivery(&result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run stalled past [`STALE_CLAIM`] whose send then fails for a passing reason gives
    /// back only its own claim, never the one another run took over since: a third run would
    /// send the notice again.
    #[tokio::test]
    async fn a_stalled_run_cannot_give_back_the_claim_another_run_took_over() {
        let (pool, _) = wgsub_ledger::testing::fresh_database("bot_param_claims").await;
        let ledger = Ledger::new(pool, false);
        let start: Timestamp = "2026-03-01T00:00:00.123456Z".parse().unwrap();
        sqlx::query("INSERT INTO bot_server_param_notices (server, generation, user_id, queued_at, outcome) VALUES ('awg-1', 2, 7, $1, 'pending')")
            .bind(start.to_sqlx())
            .execute_on(&ledger)
            .await
            .unwrap();
        let notice = Notice {
            server: "awg-1".into(),
            generation: 2,
            user_id: 7,
            queued_at: start,
        };
        let stalled = start;
        assert!(claim(&ledger, &notice, stalled).await.unwrap());
        let takeover = stalled + STALE_CLAIM + SignedDuration::from_secs(1);
        assert_eq!(
            open_notices(&ledger, takeover, 10).await.unwrap(),
            std::slice::from_ref(&notice)
        );
        assert!(claim(&ledger, &notice, takeover).await.unwrap());
        finish(&ledger, &notice, stalled, None).await.unwrap();
        let third = takeover + SignedDuration::from_secs(1);
        assert!(open_notices(&ledger, third, 10).await.unwrap().is_empty());
        assert!(!claim(&ledger, &notice, third).await.unwrap());
        // The stalled run delivering late does not end the holder's claim either; the holder
        // ends it.
        finish(&ledger, &notice, stalled, Some(true)).await.unwrap();
        finish(&ledger, &notice, takeover, Some(false))
            .await
            .unwrap();
        let outcome: String =
            sqlx::query("SELECT outcome FROM bot_server_param_notices WHERE user_id = 7")
                .fetch_one_on(&ledger)
                .await
                .unwrap()
                .try_get("outcome")
                .unwrap();
        assert_eq!(outcome, "failed");
    }
    use serde_json::json;
    use wgsub_crds::WgPeerSpec;

    fn server(name: &str, spec: serde_json::Value) -> Arc<WgServer> {
        let mut base = json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": "key"},
        });
        for (key, value) in spec.as_object().unwrap() {
            base[key] = value.clone();
        }
        Arc::new(WgServer::new(name, serde_json::from_value(base).unwrap()))
    }

    fn amnezia(jc: i32) -> serde_json::Value {
        json!({"protocol": "amneziawg", "amneziawg": {
            "jc": jc, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61,
            "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890",
        }})
    }

    fn peer(name: &str, server: &str, subscription: Option<&str>) -> Arc<WgPeer> {
        let mut peer = WgPeer::new(
            name,
            WgPeerSpec {
                server: server.into(),
                public_key: None,
                private_key_secret_ref: None,
                preshared_key_secret_ref: None,
                address: None,
                address6: None,
                expires_at: None,
                enabled: true,
                device_name: None,
            },
        );
        peer.metadata.labels =
            subscription.map(|label| [(LABEL_SUBSCRIPTION.to_owned(), label.to_owned())].into());
        Arc::new(peer)
    }

    #[test]
    fn only_complete_amneziawg_servers_have_fingerprints() {
        let incomplete = json!({"protocol": "amneziawg", "amneziawg": {"jc": 4}});
        let servers = [
            server("plain", json!({})),
            server("awg", amnezia(4)),
            server("choosing", incomplete),
        ];
        let current = current_fingerprints(&servers);
        assert_eq!(current.keys().collect::<Vec<_>>(), ["awg"]);
        let params = servers[1].spec.amneziawg_params().unwrap();
        assert_eq!(current["awg"], params.fingerprint());
        assert_ne!(
            current_fingerprints(&[server("awg", amnezia(5))])["awg"],
            current["awg"]
        );
    }

    #[test]
    fn a_first_sight_is_recorded_and_only_a_different_set_is_a_change() {
        assert_eq!(step(None, "aa"), ParamsStep::FirstSight);
        assert_eq!(step(Some("aa"), "aa"), ParamsStep::Unchanged);
        assert_eq!(
            step(Some("aa"), "bb"),
            ParamsStep::Changed {
                previous: "aa".into()
            }
        );
    }

    #[test]
    fn the_users_of_a_server_are_its_peers_owners_once_each() {
        let peers = [
            peer("tg-7-1", "awg", Some("tg-7")),
            peer("tg-7-2", "awg", Some("tg-7")),
            peer("tg-3-1", "awg", Some("tg-3")),
            peer("tg-5-1", "other", Some("tg-5")),
            peer("stray", "awg", None),
            peer("odd", "awg", Some("not-a-user")),
        ];
        assert_eq!(users_on(&peers, "awg"), [3, 7]);
        assert_eq!(users_on(&peers, "other"), [5]);
        assert!(users_on(&peers, "none").is_empty());
    }
}
