//! Telling users that their AmneziaWG server's parameters changed. Every client config carries
//! the server's `Jc`…`H4` (and `I1`–`I5`), so a changed set silently breaks every imported
//! tunnel: the bot watches the servers in its cache, records each server's parameter
//! fingerprint ([`wgsub_crds::amnezia::fingerprint`]), and when it differs from the last one
//! recorded queues one notice per user with a peer on that server — in the same statement, so
//! a restart between the two loses nothing — then sends the notices through the bot's notice
//! queue ([`crate::jobs::queue`]: each claimed first so a second replica or a restart never
//! sends one twice). The first sight of a server tells nobody; WireGuard servers carry no
//! parameters and never count.
//!
//! The decisions ([`current_fingerprints`], [`step`], [`users_on`]) are pure; [`run`] is the
//! shell around the caches, the bot's tables and the Bot API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use kube::ResourceExt;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{FromRow, Postgres};
use teloxide::Bot;
use wgsub_crds::resources::{LABEL_SUBSCRIPTION, telegram_user_id_from_name};
use wgsub_crds::{WgPeer, WgServer};
use wgsub_ledger::session::RunOn;
use wgsub_ledger::{Ledger, LedgerError};

use crate::app::App;
use crate::jobs::RunReport;
use crate::jobs::queue::{self, QueueReport, Queued};
use crate::text;

/// The metric kind of the notice.
pub const NOTICE_KIND: &str = "server_params_changed";

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

/// One run ([`queue::run`]): records the servers' fingerprints, then sends up to `limit` open
/// notices; `changed` counts the servers whose parameters changed.
pub async fn run(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<QueueReport, LedgerError> {
    let send = send_notices(app, bot, now, limit);
    queue::run(app, record_changes(app, now), send).await
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
        .map(<(String, String)>::from_row)
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
    Ok(<(i64,)>::from_row(&row)?.0 == 1)
}

/// A queued notice.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
struct Notice {
    server: String,
    generation: i64,
    user_id: i64,
}

impl Queued for Notice {
    const TABLE: &'static str = "bot_server_param_notices";
    const KEY: &'static [&'static str] = &["server", "generation", "user_id"];

    fn bind_key<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(&self.server)
            .bind(self.generation)
            .bind(self.user_id)
    }
}

/// Sends up to `limit` open notices ([`queue::send_open`]): the text, and a button per device
/// the user has on the server that sends its new config.
pub async fn send_notices(
    app: &App,
    bot: &Bot,
    now: Timestamp,
    limit: i64,
) -> Result<RunReport, LedgerError> {
    let peers = app.caches.peers();
    let peers = peers.as_slice();
    let send = move |notice: &Notice, lang| {
        let text = text::server_params_changed(lang).to_owned();
        let to = (notice.user_id, notice.server.clone());
        async move { queue::send_with_configs(bot, lang, to, peers, text).await }
    };
    queue::send_open(app, now, limit, NOTICE_KIND, send).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        queue::testing::a_stalled_run_cannot_give_back_the_claim_another_run_took_over(
            &ledger, notice, start,
        )
        .await;
    }

    #[test]
    fn a_notice_is_named_by_its_server_generation_and_user() {
        assert_eq!(
            queue::key_matches::<Notice>(),
            "server = $1 AND generation = $2 AND user_id = $3"
        );
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
        let mut peer = WgPeer::new(name, WgPeerSpec::on_server(server));
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
