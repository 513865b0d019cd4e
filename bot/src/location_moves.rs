//! Telling users that their devices moved to another server (they picked a location, in the
//! Mini App or with `/location`, and the operator re-addressed their devices there): every
//! config of theirs changed — new server endpoint and key, new address — so the old tunnels
//! stop working. The bot records the server each device was last seen on in its cache; when a
//! device shows up on another server it queues one notice for its user in the same statement
//! that records the move (a restart between the two loses nothing), then sends the notices,
//! each claimed first so a second replica or a restart never sends one twice. The first sight
//! of a device tells nobody; several devices moving at once make one notice.
//!
//! The decision ([`plan_moves`]) is pure; [`run`] is the shell around the caches, the bot's
//! tables and the Bot API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use kube::ResourceExt;
use sqlx::Row;
use teloxide::Bot;
use teloxide::prelude::*;
use teloxide::types::InlineKeyboardButton;
use wgsub_crds::locations::{display_name, flag};
use wgsub_crds::{WgPeer, WgServer};
use wgsub_ledger::session::RunOn;
use wgsub_ledger::{Ledger, LedgerError};

use crate::app::App;
use crate::broadcast::Delivery;
use crate::devices::device_label;
use crate::jobs::{OutboxStep, RunReport, outbox_step};
use crate::server_changes::user_of;
use crate::telegram::{self, CONFIG_PREFIX};
use crate::text::{self, Lang};

/// The metric kind of the notice.
pub const NOTICE_KIND: &str = "location_moved";

/// A claim older than this was left by a bot that stopped mid-send; it is sent again.
pub const STALE_CLAIM: SignedDuration = SignedDuration::from_mins(15);

/// A user's device and the server it is on, as the cache shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenDevice {
    pub peer: String,
    pub user_id: i64,
    pub server: String,
}

/// The users' devices among `peers` (those labelled with a subscription).
pub fn seen_devices(peers: &[Arc<WgPeer>]) -> Vec<SeenDevice> {
    peers
        .iter()
        .filter_map(|peer| {
            Some(SeenDevice {
                peer: peer.name_any(),
                user_id: user_of(peer)?,
                server: peer.spec.server.clone(),
            })
        })
        .collect()
}

/// What a pass records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MovesPlan {
    /// Devices never recorded: record them, tell nobody.
    pub first_seen: Vec<SeenDevice>,
    /// Devices on another server than recorded (`(device, the recorded server)`): record the
    /// move and tell the user.
    pub moved: Vec<(SeenDevice, String)>,
    /// Recorded devices that are gone: forget them.
    pub gone: Vec<String>,
}

/// Compares the devices seen with the servers `recorded` per device.
pub fn plan_moves(recorded: &BTreeMap<String, String>, seen: &[SeenDevice]) -> MovesPlan {
    let mut plan = MovesPlan::default();
    for device in seen {
        match recorded.get(&device.peer) {
            None => plan.first_seen.push(device.clone()),
            Some(server) if *server == device.server => {}
            Some(server) => plan.moved.push((device.clone(), server.clone())),
        }
    }
    let present: BTreeSet<&str> = seen.iter().map(|d| d.peer.as_str()).collect();
    plan.gone = recorded
        .keys()
        .filter(|peer| !present.contains(peer.as_str()))
        .cloned()
        .collect();
    plan
}

/// How a run went: devices first seen, moves recorded, and the notices sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MovesReport {
    pub first_seen: u32,
    pub moved: u32,
    pub notices: RunReport,
}

/// One run: records what the caches show (only when they are in sync — an empty cache after a
/// restart must not look like every device gone), then sends up to `limit` open notices.
pub async fn run(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<MovesReport, LedgerError> {
    let mut report = MovesReport::default();
    if app.caches.check().is_ok() {
        (report.first_seen, report.moved) = record_moves(app, now).await?;
    }
    report.notices = send_notices(app, bot, now, limit).await?;
    Ok(report)
}

/// Records the devices' servers: `(first seen, moved)`.
pub async fn record_moves(app: &App, now: Timestamp) -> Result<(u32, u32), LedgerError> {
    let seen = seen_devices(&app.caches.peers());
    let rows = sqlx::query("SELECT peer, server FROM bot_peer_servers")
        .fetch_all_on(&app.ledger)
        .await?;
    let recorded: BTreeMap<String, String> = rows
        .iter()
        .map(|row| Ok((row.try_get("peer")?, row.try_get("server")?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let plan = plan_moves(&recorded, &seen);

    let mut first_seen = 0;
    if !plan.first_seen.is_empty() {
        let peers: Vec<&str> = plan.first_seen.iter().map(|d| d.peer.as_str()).collect();
        let users: Vec<i64> = plan.first_seen.iter().map(|d| d.user_id).collect();
        let servers: Vec<&str> = plan.first_seen.iter().map(|d| d.server.as_str()).collect();
        let inserted = sqlx::query(
            "INSERT INTO bot_peer_servers (peer, user_id, server, recorded_at) \
             SELECT d.peer, d.user_id, d.server, $4 \
             FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[]) AS d (peer, user_id, server) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&peers)
        .bind(&users)
        .bind(&servers)
        .bind(now.to_sqlx())
        .execute_on(&app.ledger)
        .await?
        .rows_affected();
        first_seen = u32::try_from(inserted).unwrap_or(u32::MAX);
    }
    let mut moved = 0;
    for (device, from) in &plan.moved {
        if record_move(&app.ledger, device, from, now).await? {
            tracing::info!(peer = %device.peer, from = %from, to = %device.server, "device moved");
            moved += 1;
        }
    }
    if !plan.gone.is_empty() {
        sqlx::query("DELETE FROM bot_peer_servers WHERE peer = ANY($1::TEXT[])")
            .bind(&plan.gone)
            .execute_on(&app.ledger)
            .await?;
    }
    Ok((first_seen, moved))
}

/// Records a device's move from `from` and (re-)queues its user's notice, in one statement;
/// false when the record no longer held `from` (another replica recorded it).
async fn record_move(
    ledger: &Ledger,
    device: &SeenDevice,
    from: &str,
    now: Timestamp,
) -> Result<bool, LedgerError> {
    let row = sqlx::query(
        "WITH moved AS ( \
             UPDATE bot_peer_servers SET server = $3, recorded_at = $4 \
             WHERE peer = $1 AND server = $2 \
             RETURNING user_id \
         ), queued AS ( \
             INSERT INTO bot_move_notices (user_id, server, queued_at, outcome) \
             SELECT moved.user_id, $3, $4, 'pending' FROM moved \
             ON CONFLICT (user_id) DO UPDATE \
             SET server = EXCLUDED.server, queued_at = EXCLUDED.queued_at, claimed_at = NULL, \
                 outcome = 'pending' \
             WHERE bot_move_notices.outcome <> 'pending' \
                OR bot_move_notices.server <> EXCLUDED.server \
         ) \
         SELECT count(*) AS moved FROM moved",
    )
    .bind(&device.peer)
    .bind(from)
    .bind(&device.server)
    .bind(now.to_sqlx())
    .fetch_one_on(ledger)
    .await?;
    Ok(row.try_get::<i64, _>("moved")? == 1)
}

/// A queued notice.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Notice {
    user_id: i64,
    server: String,
    queued_at: Timestamp,
}

async fn open_notices(
    ledger: &Ledger,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<Notice>, LedgerError> {
    let rows = sqlx::query(
        "SELECT user_id, server, queued_at FROM bot_move_notices \
         WHERE outcome = 'pending' OR (outcome = 'claimed' AND claimed_at < $1) \
         ORDER BY queued_at, user_id LIMIT $2",
    )
    .bind((now - STALE_CLAIM).to_sqlx())
    .bind(limit)
    .fetch_all_on(ledger)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Notice {
                user_id: row.try_get("user_id")?,
                server: row.try_get("server")?,
                queued_at: row
                    .try_get::<jiff_sqlx::Timestamp, _>("queued_at")?
                    .to_jiff(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Claims a notice for sending; false when another replica holds it, it is done, or a newer
/// move replaced it.
async fn claim(ledger: &Ledger, notice: &Notice, now: Timestamp) -> Result<bool, LedgerError> {
    let claimed = sqlx::query(
        "UPDATE bot_move_notices SET outcome = 'claimed', claimed_at = $3 \
         WHERE user_id = $1 AND server = $2 \
           AND (outcome = 'pending' OR (outcome = 'claimed' AND claimed_at < $4))",
    )
    .bind(notice.user_id)
    .bind(&notice.server)
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
        "UPDATE bot_move_notices \
         SET outcome = $3, claimed_at = CASE WHEN $3 = 'pending' THEN NULL ELSE claimed_at END \
         WHERE user_id = $1 AND server = $2 AND outcome = 'claimed' \
           AND claimed_at = $4",
    )
    .bind(notice.user_id)
    .bind(&notice.server)
    .bind(outcome)
    .bind(claimed_at.to_sqlx())
    .execute_on(ledger)
    .await?;
    Ok(())
}

/// Sends up to `limit` open notices: the text naming the new location, and a button per
/// device the user has there that sends its new config. Failures are treated as the ledger's
/// outbox treats them ([`outbox_step`]).
pub async fn send_notices(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<RunReport, LedgerError> {
    let mut report = RunReport::default();
    let peers = app.caches.peers();
    let servers = app.caches.servers();
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
        let delivery = send_notice(bot, lang, &notice, &peers, &servers).await;
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

/// The name users see for `server`: flag and display name, or the server's name.
pub fn location_name(servers: &[Arc<WgServer>], server: &str, lang: Lang) -> String {
    servers
        .iter()
        .find(|s| s.name_any() == server)
        .and_then(|s| s.spec.location.as_ref())
        .map_or_else(
            || server.to_owned(),
            |location| {
                format!(
                    "{} {}",
                    flag(&location.country).unwrap_or_default(),
                    display_name(location, Some(lang.code()))
                )
            },
        )
}

async fn send_notice(
    bot: &Bot,
    lang: Lang,
    notice: &Notice,
    peers: &[Arc<WgPeer>],
    servers: &[Arc<WgServer>],
) -> Delivery {
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
    let name = location_name(servers, &notice.server, lang);
    let request = bot.send_message(ChatId(notice.user_id), text::location_moved(lang, &name));
    let result = if devices.is_empty() {
        request.await
    } else {
        request.reply_markup(telegram::column(buttons)).await
    };
    if let Err(error) = &result {
        tracing::debug!(chat = notice.user_id, %error, "location move notice failed");
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
        let (pool, _) = wgsub_ledger::testing::fresh_database("bot_move_claims").await;
        let ledger = Ledger::new(pool, false);
        let start: Timestamp = "2026-03-01T00:00:00.123456Z".parse().unwrap();
        sqlx::query("INSERT INTO bot_move_notices (user_id, server, queued_at, outcome) VALUES (7, 'de-1', $1, 'pending')")
            .bind(start.to_sqlx())
            .execute_on(&ledger)
            .await
            .unwrap();
        let notice = Notice {
            user_id: 7,
            server: "de-1".into(),
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
        let outcome: String = sqlx::query("SELECT outcome FROM bot_move_notices WHERE user_id = 7")
            .fetch_one_on(&ledger)
            .await
            .unwrap()
            .try_get("outcome")
            .unwrap();
        assert_eq!(outcome, "failed");
    }

    fn device(peer: &str, user_id: i64, server: &str) -> SeenDevice {
        SeenDevice {
            peer: peer.into(),
            user_id,
            server: server.into(),
        }
    }

    fn recorded(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
            .collect()
    }

    #[test]
    fn a_device_never_recorded_is_first_seen_and_tells_nobody() {
        let plan = plan_moves(&recorded(&[]), &[device("tg-1-1", 1, "main")]);
        assert_eq!(plan.first_seen, [device("tg-1-1", 1, "main")]);
        assert!(plan.moved.is_empty() && plan.gone.is_empty());
    }

    #[test]
    fn a_device_on_another_server_than_recorded_moved_from_there() {
        let plan = plan_moves(
            &recorded(&[("tg-1-1", "main"), ("tg-1-2", "main"), ("tg-2-1", "main")]),
            &[
                device("tg-1-1", 1, "de-1"),
                device("tg-1-2", 1, "de-1"),
                device("tg-2-1", 2, "main"),
            ],
        );
        assert_eq!(
            plan.moved,
            [
                (device("tg-1-1", 1, "de-1"), "main".to_owned()),
                (device("tg-1-2", 1, "de-1"), "main".to_owned())
            ]
        );
        assert!(plan.first_seen.is_empty() && plan.gone.is_empty());
    }

    #[test]
    fn recorded_devices_no_longer_seen_are_forgotten() {
        let plan = plan_moves(
            &recorded(&[("tg-1-1", "main"), ("tg-1-2", "main")]),
            &[device("tg-1-1", 1, "main")],
        );
        assert_eq!(plan.gone, ["tg-1-2"]);
        assert_eq!(
            plan,
            MovesPlan {
                gone: vec!["tg-1-2".into()],
                ..MovesPlan::default()
            }
        );
    }

    #[test]
    fn only_devices_of_users_are_seen() {
        use wgsub_crds::WgPeerSpec;
        use wgsub_crds::resources::LABEL_SUBSCRIPTION;
        let peer = |name: &str, label: Option<&str>| {
            let mut peer = WgPeer::new(
                name,
                WgPeerSpec {
                    server: "main".into(),
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
                label.map(|l| [(LABEL_SUBSCRIPTION.to_owned(), l.to_owned())].into());
            Arc::new(peer)
        };
        let seen = seen_devices(&[peer("tg-7-1", Some("tg-7")), peer("stray", None)]);
        assert_eq!(seen, [device("tg-7-1", 7, "main")]);
    }
}
