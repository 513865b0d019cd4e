//! Deleting the key Secrets of peers that are gone, when the keys live in a namespace of their
//! own (`--keys-namespace`). An owner reference cannot point from there to the peer (owners must
//! share their dependent's namespace; the garbage collector would treat such an owner as absent
//! and delete the key at once), so the operator collects the keys itself:
//!
//! - **at once**: a watch of the peers (metadata only) sees each deletion — by the operator after
//!   retention, by the garbage collector after the subscription, by hand — and deletes the key
//!   Secrets labelled with the deleted peer's uid ([`LABEL_PEER_UID`]);
//! - **by sweep**: after every (re-)list of that watch (a deletion while the watch was down is
//!   not reported) and every [`SWEEP_INTERVAL`], the key Secrets are listed, then the peers, and
//!   [`orphans`] — Secrets whose labelled peer uid is in neither — are deleted. A key Secret is
//!   written only once its peer exists (the peer is applied first, and the Secret carries the uid
//!   that apply returned), so a Secret listed before the peers whose uid is not among them
//!   belongs to a peer deleted meanwhile.
//!
//! Every delete carries the uid and resource version the Secret was seen with, so a Secret
//! rewritten in between (a new peer of the same name got its key) is kept. Secrets without the
//! uid label (not the operator's, e.g. a preshared key put there by hand) are never touched.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tracing::{info, warn};
use wgsub_crds::WgPeer;

use crate::decision::LABEL_PEER_UID;

/// How often every key Secret is checked against the peers, besides after each re-list.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(300);

/// A key Secret to delete, with the uid and resource version it was seen with (the
/// preconditions of its delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

/// The key Secrets (their metadata, listed before the peers) whose peer uid is not among the
/// uids of the peers listed after them: their peers are gone. Secrets without the uid label,
/// or without a uid or resource version to make the delete conditional on, are kept.
pub fn orphans<'a>(
    secrets: impl IntoIterator<Item = &'a ObjectMeta>,
    live_peer_uids: &HashSet<String>,
) -> Vec<Orphan> {
    secrets
        .into_iter()
        .filter_map(|meta| {
            let peer_uid = meta.labels.as_ref()?.get(LABEL_PEER_UID)?;
            if live_peer_uids.contains(peer_uid) {
                return None;
            }
            Some(Orphan {
                name: meta.name.clone()?,
                uid: meta.uid.clone()?,
                resource_version: meta.resource_version.clone()?,
            })
        })
        .collect()
}

/// The label selector of the key Secrets of the peer with uid `peer_uid`.
pub fn keys_of_peer(peer_uid: &str) -> String {
    format!("{LABEL_PEER_UID}={peer_uid}")
}

/// The collection of one watched namespace's keys in `keys_namespace`.
#[derive(Clone, Debug)]
pub struct KeyCleanup {
    peers: Api<PartialObjectMeta<WgPeer>>,
    secrets: Api<PartialObjectMeta<Secret>>,
    deleter: Api<Secret>,
}

impl KeyCleanup {
    pub fn new(client: Client, namespace: &str, keys_namespace: &str) -> Self {
        Self {
            peers: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client.clone(), keys_namespace),
            deleter: Api::namespaced(client, keys_namespace),
        }
    }

    /// Deletes the key Secrets of the (deleted) peer with uid `peer_uid`; returns how many.
    pub async fn delete_keys_of(&self, peer_uid: &str) -> Result<usize, kube::Error> {
        let listed = self
            .secrets
            .list_metadata(&ListParams::default().labels(&keys_of_peer(peer_uid)))
            .await?;
        let found = orphans(listed.items.iter().map(|s| &s.metadata), &HashSet::new());
        self.delete_all(found).await
    }

    /// Deletes every key Secret whose peer is gone; returns how many.
    pub async fn sweep(&self) -> Result<usize, kube::Error> {
        let keys = ListParams::default().labels(LABEL_PEER_UID);
        let secrets = self.secrets.list_metadata(&keys).await?;
        let peers = self.peers.list_metadata(&ListParams::default()).await?;
        let live: HashSet<String> = peers.items.iter().filter_map(|p| p.uid()).collect();
        let found = orphans(secrets.items.iter().map(|s| &s.metadata), &live);
        self.delete_all(found).await
    }

    async fn delete_all(&self, found: Vec<Orphan>) -> Result<usize, kube::Error> {
        let mut deleted = 0;
        for orphan in found {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(orphan.uid.clone()),
                    resource_version: Some(orphan.resource_version.clone()),
                }),
                ..DeleteParams::default()
            };
            match self.deleter.delete(&orphan.name, &params).await {
                Ok(_) => {
                    deleted += 1;
                    info!(secret = %orphan.name, "deleted the key Secret of a deleted peer");
                }
                // Gone already, or rewritten since it was listed (kept: it is someone's key).
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        Ok(deleted)
    }

    /// Collects keys until `shutdown` (which stops it at once, also in the middle of a sweep):
    /// at each peer deletion, after each (re-)list of the peers and every [`SWEEP_INTERVAL`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let events =
            watcher::watcher(self.peers.clone(), watcher::Config::default()).default_backoff();
        let mut events = std::pin::pin!(events);
        let mut shutdown = std::pin::pin!(shutdown);
        // The first sweep follows the first list; the timer's from then on.
        let mut sweeps =
            tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_INTERVAL, SWEEP_INTERVAL);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The step (a sweep may list and delete thousands) is dropped at shutdown: every
            // delete is conditional and the next sweep finds whatever was left.
            let step = async {
                tokio::select! {
                    _ = sweeps.tick() => Some(self.sweep().await),
                    event = events.next() => match event {
                        Some(Ok(Event::Delete(peer))) => Some(match peer.uid() {
                            Some(uid) => self.delete_keys_of(&uid).await,
                            None => Ok(0),
                        }),
                        Some(Ok(Event::InitDone)) => Some(self.sweep().await),
                        Some(Ok(_)) => Some(Ok(0)),
                        Some(Err(error)) => {
                            warn!(%error, "the peer watch of the key collection failed; retrying");
                            Some(Ok(0))
                        }
                        None => None,
                    },
                }
            };
            let outcome = tokio::select! {
                () = &mut shutdown => return,
                outcome = step => outcome,
            };
            match outcome {
                None => return,
                Some(Err(error)) => {
                    warn!(%error, "could not collect the key Secrets of deleted peers; will retry");
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn key(name: &str, peer_uid: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("secret-uid-{name}")),
            resource_version: Some("42".into()),
            labels: peer_uid.map(|uid| BTreeMap::from([(LABEL_PEER_UID.to_owned(), uid.into())])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_key_whose_peer_uid_is_not_live_is_an_orphan_with_its_preconditions() {
        let live = HashSet::from(["peer-a".to_owned()]);
        let secrets = [
            key("tg-1-1-key", Some("peer-a")),
            key("tg-1-2-key", Some("peer-gone")),
        ];
        assert_eq!(
            orphans(&secrets, &live),
            [Orphan {
                name: "tg-1-2-key".into(),
                uid: "secret-uid-tg-1-2-key".into(),
                resource_version: "42".into(),
            }]
        );
    }

    #[test]
    fn a_key_of_an_older_peer_of_the_same_name_is_an_orphan() {
        let live = HashSet::from(["uid-of-the-new-tg-1-1".to_owned()]);
        let secrets = [key("tg-1-1-key", Some("uid-of-the-old-tg-1-1"))];
        assert_eq!(orphans(&secrets, &live).len(), 1);
    }

    #[test]
    fn secrets_without_the_uid_label_or_preconditions_are_never_collected() {
        let none = HashSet::new();
        let mut unversioned = key("b", Some("peer-gone"));
        unversioned.resource_version = None;
        let mut unnamed = key("c", Some("peer-gone"));
        unnamed.name = None;
        let secrets = [key("psk-by-hand", None), unversioned, unnamed];
        assert!(orphans(&secrets, &none).is_empty());
    }

    #[test]
    fn the_selector_names_the_peer_uid() {
        assert_eq!(keys_of_peer("u-1"), "wgsub.io/peer-uid=u-1");
    }
}
