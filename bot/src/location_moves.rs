//! Telling users that their devices moved to another server (they picked a location, in the
//! Mini App or with `/location`, and the operator re-addressed their devices there): every
//! config of theirs changed — new server endpoint and key, new address — so the old tunnels
//! stop working. The bot records the server each device was last seen on in its cache; when a
//! device shows up on another server it queues one notice for its user in the same statement
//! that records the move (a restart between the two loses nothing), then sends the notices
//! through the bot's notice queue ([`crate::jobs::queue`]: each claimed first so a second
//! replica or a restart never sends one twice). The first sight of a device tells nobody;
//! several devices moving at once make one notice.
//!
//! The decision ([`plan_moves`]) is pure; [`run`] is the shell around the caches, the bot's
//! tables and the Bot API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use kube::ResourceExt;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{FromRow, Postgres};
use teloxide::Bot;
use wgsub_crds::locations::location_label;
use wgsub_crds::{WgPeer, WgServer};
use wgsub_ledger::session::RunOn;
use wgsub_ledger::{Ledger, LedgerError};

use crate::app::App;
use crate::jobs::RunReport;
use crate::jobs::queue::{self, QueueReport, Queued};
use crate::server_changes::user_of;
use crate::text::{self, Lang};

/// The metric kind of the notice.
pub const NOTICE_KIND: &str = "location_moved";

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

/// One run ([`queue::run`]): records the devices' servers, then sends up to `limit` open
/// notices; `changed` counts the moves.
pub async fn run(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<QueueReport, LedgerError> {
    let send = send_notices(app, bot, now, limit);
    queue::run(app, record_moves(app, now), send).await
}

/// Records the devices' servers: `(first seen, moved)`.
pub async fn record_moves(app: &App, now: Timestamp) -> Result<(u32, u32), LedgerError> {
    let seen = seen_devices(&app.caches.peers());
    let rows = sqlx::query("SELECT peer, server FROM bot_peer_servers")
        .fetch_all_on(&app.ledger)
        .await?;
    let recorded: BTreeMap<String, String> = rows
        .iter()
        .map(<(String, String)>::from_row)
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
    Ok(<(i64,)>::from_row(&row)?.0 == 1)
}

/// A queued notice.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
struct Notice {
    user_id: i64,
    server: String,
}

impl Queued for Notice {
    const TABLE: &'static str = "bot_move_notices";
    const KEY: &'static [&'static str] = &["user_id", "server"];

    fn bind_key<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query.bind(self.user_id).bind(&self.server)
    }
}

/// Sends up to `limit` open notices ([`queue::send_open`]): the text naming the new location,
/// and a button per device the user has there that sends its new config.
pub async fn send_notices(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<RunReport, LedgerError> {
    let (peers, servers) = (app.caches.peers(), app.caches.servers());
    let (peers, servers) = (peers.as_slice(), servers.as_slice());
    let send = move |notice: &Notice, lang| {
        let text = text::location_moved(lang, &location_name(servers, &notice.server, lang));
        let to = (notice.user_id, notice.server.clone());
        async move { queue::send_with_configs(bot, lang, to, peers, text).await }
    };
    queue::send_open(app, now, limit, NOTICE_KIND, send).await
}

/// The name users see for `server`: the country's flag and name and the server's display
/// name ([`location_label`]), or the server's name.
pub fn location_name(servers: &[Arc<WgServer>], server: &str, lang: Lang) -> String {
    servers
        .iter()
        .find(|s| s.name_any() == server)
        .and_then(|s| s.spec.location.as_ref())
        .map_or_else(
            || server.to_owned(),
            |location| location_label(location, Some(lang.code())),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        queue::testing::a_stalled_run_cannot_give_back_the_claim_another_run_took_over(
            &ledger, notice, start,
        )
        .await;
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
            let mut peer = WgPeer::new(name, WgPeerSpec::on_server("main"));
            peer.metadata.labels =
                label.map(|l| [(LABEL_SUBSCRIPTION.to_owned(), l.to_owned())].into());
            Arc::new(peer)
        };
        let seen = seen_devices(&[peer("tg-7-1", Some("tg-7")), peer("stray", None)]);
        assert_eq!(seen, [device("tg-7-1", 7, "main")]);
    }
}
