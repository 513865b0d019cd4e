//! Deleting the key Secrets of peers that are gone. In a namespace of their own
//! (`--keys-namespace`) no owner reference can point from a key to its peer (owners must share
//! their dependent's namespace), and in the peer's own namespace a key written before its new peer
//! is owned by the subscription, so the operator collects the keys itself:
//!
//! - **at once**: a watch of the peers (metadata only) sees each deletion — by the operator after
//!   retention, by the garbage collector after the subscription, by hand — and deletes the key
//!   Secrets labelled with the deleted peer's uid ([`LABEL_PEER_UID`]) or with the key id it
//!   carried ([`KEY_ID`]);
//! - **by sweep**: after every (re-)list of that watch (a deletion while the watch was down is
//!   not reported) and every [`SWEEP_INTERVAL`], the key Secrets are listed, then the peers, and
//!   [`orphans`] are deleted: Secrets whose labelled peer uid is not live and whose key id is on
//!   no live peer. A key Secret is written just before its peer (which then carries the key id),
//!   so a Secret with a key id is also kept for [`KEY_GRACE`] after its last write
//!   ([`ANNOTATION_WRITTEN_AT`]), by the operator's clock (the one that stamps that time);
//!   Secrets with only the uid label (written before key ids) keep the rule that a uid not among
//!   the peers listed after them is a deleted peer's.
//!
//! Every delete carries the uid and resource version the Secret was seen with, so a Secret
//! rewritten in between (a new peer of the same name got its key) is kept. Secrets with neither
//! label (not the operator's, e.g. a preshared key put there by hand) are never touched.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tracing::{info, warn};
use wgsub_crds::WgPeer;

use jiff::{SignedDuration, Timestamp};
use wgsub_crds::resources::LABEL_PEER;

use crate::controller::Clock;
use crate::decision::{ANNOTATION_WRITTEN_AT, KEY_ID, LABEL_PEER_UID};

/// How often every key Secret is checked against the peers, besides after each re-list.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(300);

/// How long a key Secret is kept after its last write ([`ANNOTATION_WRITTEN_AT`]) although no
/// live peer carries its key id: the peer is written just after its key, and may not be listed
/// yet.
pub const KEY_GRACE: SignedDuration = SignedDuration::from_secs(600);

/// A key Secret to delete, with the uid and resource version it was seen with (the
/// preconditions of its delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

/// What the listed peers hold on to: their uids and the key ids they carry ([`KEY_ID`]).
#[derive(Debug, Default)]
pub struct Live {
    pub peer_uids: HashSet<String>,
    pub key_ids: HashSet<String>,
}

impl Live {
    /// The uids and key ids of `peers`.
    pub fn of<'a>(peers: impl IntoIterator<Item = &'a ObjectMeta>) -> Self {
        let mut live = Self::default();
        for peer in peers {
            live.peer_uids.extend(peer.uid.clone());
            if let Some(id) = peer.annotations.as_ref().and_then(|a| a.get(KEY_ID)) {
                live.key_ids.insert(id.clone());
            }
        }
        live
    }
}

/// Whether the key Secret `meta` is one of the operator's that no live peer holds on to: its
/// labelled peer uid is not live, its labelled key id is on no live peer, and (for a Secret with
/// a key id) its last write is at least `grace` before `now` (an unreadable write time keeps it).
/// Secrets with neither label are not the operator's keys.
fn is_orphan(meta: &ObjectMeta, live: &Live, now: Timestamp, grace: SignedDuration) -> bool {
    let Some(labels) = meta.labels.as_ref() else {
        return false;
    };
    let peer_uid = labels.get(LABEL_PEER_UID);
    let id = labels.get(KEY_ID);
    if peer_uid.is_none() && id.is_none() {
        return false;
    }
    if peer_uid.is_some_and(|uid| live.peer_uids.contains(uid))
        || id.is_some_and(|id| live.key_ids.contains(id))
    {
        return false;
    }
    if id.is_none() {
        return true;
    }
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_WRITTEN_AT))
        .and_then(|text| text.parse::<Timestamp>().ok())
        .is_some_and(|written| now.duration_since(written) >= grace)
}

/// The key Secrets (their metadata, listed before the peers) that no peer listed after them
/// holds on to (see `is_orphan`): their peers are gone, or were never written. Secrets without
/// a uid or resource version to make the delete conditional on are kept.
pub fn orphans<'a>(
    secrets: impl IntoIterator<Item = &'a ObjectMeta>,
    live: &Live,
    now: Timestamp,
    grace: SignedDuration,
) -> Vec<Orphan> {
    secrets
        .into_iter()
        .filter(|meta| is_orphan(meta, live, now, grace))
        .filter_map(|meta| {
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

/// The label selector of the key Secret of the key with id `id`.
pub fn key_with_id(id: &str) -> String {
    format!("{KEY_ID}={id}")
}

/// The collection of one watched namespace's keys in `keys_namespace`.
#[derive(Clone)]
pub struct KeyCleanup {
    peers: Api<PartialObjectMeta<WgPeer>>,
    secrets: Api<PartialObjectMeta<Secret>>,
    deleter: Api<Secret>,
    clock: Clock,
}

impl std::fmt::Debug for KeyCleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCleanup")
            .field("peers", &self.peers)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl KeyCleanup {
    /// The collection of `namespace`'s keys in `keys_namespace`, judging [`KEY_GRACE`] by
    /// `clock` (the operator's, which stamps [`ANNOTATION_WRITTEN_AT`] on the keys it writes).
    pub fn new(client: Client, namespace: &str, keys_namespace: &str, clock: Clock) -> Self {
        Self {
            peers: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client.clone(), keys_namespace),
            deleter: Api::namespaced(client, keys_namespace),
            clock,
        }
    }

    /// Deletes the key Secrets of the (deleted) peer `peer`: those labelled with its uid or
    /// with the key id it carried; returns how many.
    pub async fn delete_keys_of(&self, peer: &ObjectMeta) -> Result<usize, kube::Error> {
        let mut selectors: Vec<String> = peer.uid.iter().map(|uid| keys_of_peer(uid)).collect();
        if let Some(id) = peer.annotations.as_ref().and_then(|a| a.get(KEY_ID)) {
            selectors.push(key_with_id(id));
        }
        let mut deleted = 0;
        for selector in selectors {
            let listed = self
                .secrets
                .list_metadata(&ListParams::default().labels(&selector))
                .await?;
            let found = orphans(
                listed.items.iter().map(|s| &s.metadata),
                &Live::default(),
                (self.clock)(),
                SignedDuration::ZERO,
            );
            deleted += self.delete_all(found).await?;
        }
        Ok(deleted)
    }

    /// Deletes every key Secret whose peer is gone; returns how many.
    pub async fn sweep(&self) -> Result<usize, kube::Error> {
        let keys = ListParams::default().labels(LABEL_PEER);
        let secrets = self.secrets.list_metadata(&keys).await?;
        let peers = self.peers.list_metadata(&ListParams::default()).await?;
        let live = Live::of(peers.items.iter().map(|p| &p.metadata));
        let found = orphans(
            secrets.items.iter().map(|s| &s.metadata),
            &live,
            (self.clock)(),
            KEY_GRACE,
        );
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
                        Some(Ok(Event::Delete(peer))) => {
                            Some(self.delete_keys_of(&peer.metadata).await)
                        }
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

    fn now() -> Timestamp {
        "2030-01-01T12:00:00Z".parse().unwrap()
    }

    fn key(name: &str, peer_uid: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("secret-uid-{name}")),
            resource_version: Some("42".into()),
            labels: peer_uid.map(|uid| BTreeMap::from([(LABEL_PEER_UID.to_owned(), uid.into())])),
            ..ObjectMeta::default()
        }
    }

    /// A key Secret with key id `id`, last written `ago` before [`now`].
    fn keyed(name: &str, id: &str, ago: SignedDuration) -> ObjectMeta {
        let mut meta = key(name, None);
        meta.labels = Some(BTreeMap::from([(KEY_ID.to_owned(), id.into())]));
        meta.annotations = Some(BTreeMap::from([(
            ANNOTATION_WRITTEN_AT.to_owned(),
            (now() - ago).to_string(),
        )]));
        meta
    }

    fn live_uids(uids: &[&str]) -> Live {
        Live {
            peer_uids: uids.iter().map(|u| (*u).to_owned()).collect(),
            key_ids: HashSet::new(),
        }
    }

    fn names(found: &[Orphan]) -> Vec<&str> {
        found.iter().map(|o| o.name.as_str()).collect()
    }

    #[test]
    fn a_key_whose_peer_uid_is_not_live_is_an_orphan_with_its_preconditions() {
        let live = live_uids(&["peer-a"]);
        let secrets = [
            key("tg-1-1-key", Some("peer-a")),
            key("tg-1-2-key", Some("peer-gone")),
        ];
        assert_eq!(
            orphans(&secrets, &live, now(), KEY_GRACE),
            [Orphan {
                name: "tg-1-2-key".into(),
                uid: "secret-uid-tg-1-2-key".into(),
                resource_version: "42".into(),
            }]
        );
    }

    #[test]
    fn a_key_of_an_older_peer_of_the_same_name_is_an_orphan() {
        let live = live_uids(&["uid-of-the-new-tg-1-1"]);
        let secrets = [key("tg-1-1-key", Some("uid-of-the-old-tg-1-1"))];
        assert_eq!(orphans(&secrets, &live, now(), KEY_GRACE).len(), 1);
    }

    #[test]
    fn secrets_without_a_key_label_or_preconditions_are_never_collected() {
        let none = Live::default();
        let mut unversioned = key("b", Some("peer-gone"));
        unversioned.resource_version = None;
        let mut unnamed = key("c", Some("peer-gone"));
        unnamed.name = None;
        let secrets = [key("psk-by-hand", None), unversioned, unnamed];
        assert!(orphans(&secrets, &none, now(), KEY_GRACE).is_empty());
    }

    #[test]
    fn a_key_whose_id_is_on_a_live_peer_is_kept_however_old() {
        let live = Live::of(&[ObjectMeta {
            uid: Some("peer-a".into()),
            annotations: Some(BTreeMap::from([(KEY_ID.to_owned(), "id-a".into())])),
            ..ObjectMeta::default()
        }]);
        let secrets = [
            keyed("tg-1-1-key", "id-a", SignedDuration::from_hours(24 * 365)),
            keyed("tg-1-2-key", "id-gone", SignedDuration::from_hours(1)),
        ];
        assert_eq!(
            names(&orphans(&secrets, &live, now(), KEY_GRACE)),
            ["tg-1-2-key"]
        );
    }

    #[test]
    fn a_key_written_within_the_grace_period_is_kept_until_its_peer_is_listed() {
        let none = Live::default();
        let just = keyed("fresh", "id-1", KEY_GRACE - SignedDuration::from_secs(1));
        let due = keyed("due", "id-2", KEY_GRACE);
        let mut unreadable = keyed("unreadable", "id-3", KEY_GRACE * 2);
        unreadable.annotations = Some(BTreeMap::from([(
            ANNOTATION_WRITTEN_AT.to_owned(),
            "yesterday".into(),
        )]));
        let secrets = [just, due, unreadable];
        assert_eq!(names(&orphans(&secrets, &none, now(), KEY_GRACE)), ["due"]);
    }

    #[test]
    fn a_key_with_a_live_peer_uid_is_kept_whatever_its_key_id() {
        let mut both = keyed("tg-1-1-key", "id-unpublished", KEY_GRACE * 2);
        both.labels
            .as_mut()
            .unwrap()
            .insert(LABEL_PEER_UID.to_owned(), "peer-a".into());
        let secrets = [both];
        assert!(orphans(&secrets, &live_uids(&["peer-a"]), now(), KEY_GRACE).is_empty());
        assert_eq!(
            orphans(&secrets, &Live::default(), now(), KEY_GRACE).len(),
            1
        );
    }

    #[test]
    fn the_selectors_name_the_peer_uid_and_the_key_id() {
        assert_eq!(keys_of_peer("u-1"), "wgsub.io/peer-uid=u-1");
        assert_eq!(key_with_id("00ff"), "wgsub.io/key-id=00ff");
    }
}
