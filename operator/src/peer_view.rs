//! Which `WgPeer`s exist, as a reconcile needs to know them: the controller's metadata-only watch
//! store, overlaid with this operator's own writes that the watch has not delivered yet — so a
//! reconcile asks the API server only for peers that exist and that someone else may have
//! changed, never for a peer that does not exist (a cold start over thousands of new
//! subscriptions reads none) nor for one it just wrote itself, and still never misses a peer it
//! wrote a moment ago (missing one would make it generate a second key for that device).
//!
//! [`PeerView`] keeps, per peer (namespace, name), the last object this operator applied (the
//! API server's answer, without `managedFields`) or the fact that it deleted it, with the order
//! of that write among the others. An entry is forgotten when the watch shows the write:
//! - an `Apply`/`Delete` event of that peer whose resource version is the written one or newer
//!   (versions compared as the numbers the API server makes them; an unparsable one only by
//!   equality), or, for a deletion, the peer's `Delete` event;
//! - the end of a re-list that began after the write (the list, a consistent read, holds it).
//!
//! [`PeerView::known`] answers from that: absent, this operator's own write (the newest
//! version), or "read it". The view holds about one entry per peer written since its watch
//! event — a few hundred during a burst, none when the watch is idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use wgsub_crds::WgPeer;

/// Namespace and name.
type PeerKey = (String, String);

#[derive(Debug, Clone)]
enum Written {
    /// The peer as the API server answered the apply.
    Applied(Arc<WgPeer>),
    /// This operator deleted the peer.
    Deleted,
}

#[derive(Debug, Clone)]
struct Entry {
    written: Written,
    /// The write's place among all writes recorded.
    order: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<PeerKey, Entry>,
    /// The number of writes recorded so far (the next write's `order`).
    writes: u64,
    /// Set at a re-list's start: writes recorded before it are in that list.
    relist_from: Option<u64>,
}

/// What [`PeerView::known`] knows of one peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// It does not exist (neither the store nor this operator's writes hold it).
    Absent,
    /// This operator's own write of it is its newest version: no need to read it.
    Written(Arc<WgPeer>),
    /// It exists, and someone else may have changed it: read it from the API.
    Read,
}

/// This operator's peer writes that the watch has not shown yet.
#[derive(Debug, Default)]
pub struct PeerView {
    inner: Mutex<Inner>,
}

/// Whether the version `seen` (of a watch event or the cache) is `written`'s or a later one.
fn covers(seen: Option<&str>, written: Option<&str>) -> bool {
    match (seen, written) {
        (Some(seen), Some(written)) => match (seen.parse::<u64>(), written.parse::<u64>()) {
            (Ok(seen), Ok(written)) => seen >= written,
            _ => seen == written,
        },
        _ => false,
    }
}

fn key_of<K: Resource>(peer: &K) -> PeerKey {
    (peer.namespace().unwrap_or_default(), peer.name_any())
}

impl PeerView {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, key: PeerKey, written: Written) {
        let mut inner = self.lock();
        let order = inner.writes;
        inner.writes += 1;
        inner.entries.insert(key, Entry { written, order });
    }

    /// Records that this operator applied `peer` (the API server's answer), kept without its
    /// `managedFields` and status like the cache's peers.
    pub fn applied(&self, peer: &WgPeer) {
        let mut kept = peer.clone();
        kept.metadata.managed_fields = None;
        kept.status = None;
        self.record(key_of(peer), Written::Applied(Arc::new(kept)));
    }

    /// Records that this operator deleted the peer `namespace/name`.
    pub fn deleted(&self, namespace: &str, name: &str) {
        self.record((namespace.to_owned(), name.to_owned()), Written::Deleted);
    }

    /// Takes in one event of the peer watch (after the store has applied it).
    pub fn seen<K: Resource>(&self, event: &watcher::Event<K>) {
        let mut inner = self.lock();
        match event {
            watcher::Event::Init => inner.relist_from = Some(inner.writes),
            watcher::Event::InitDone => {
                if let Some(from) = inner.relist_from.take() {
                    inner.entries.retain(|_, entry| entry.order >= from);
                }
            }
            watcher::Event::InitApply(_) => {}
            watcher::Event::Apply(peer) => {
                let key = key_of(peer);
                if let Some(Entry {
                    written: Written::Applied(mine),
                    ..
                }) = inner.entries.get(&key)
                    && covers(
                        peer.resource_version().as_deref(),
                        mine.resource_version().as_deref(),
                    )
                {
                    inner.entries.remove(&key);
                }
            }
            watcher::Event::Delete(peer) => {
                let key = key_of(peer);
                let shown = match inner.entries.get(&key) {
                    Some(Entry {
                        written: Written::Applied(mine),
                        ..
                    }) => covers(
                        peer.resource_version().as_deref(),
                        mine.resource_version().as_deref(),
                    ),
                    Some(Entry {
                        written: Written::Deleted,
                        ..
                    }) => true,
                    None => false,
                };
                if shown {
                    inner.entries.remove(&key);
                }
            }
        }
    }

    /// What this operator knows of the peer `namespace/name`, given what `cached` reads of it
    /// from the watch's store (its resource version, `None` when the store does not hold it).
    /// The store is read under the view's lock, so an event that lands in the store and ends
    /// an overlay in between cannot make the answer older than either.
    pub fn known(
        &self,
        namespace: &str,
        name: &str,
        cached: impl FnOnce() -> Option<Option<String>>,
    ) -> Known {
        let key = (namespace.to_owned(), name.to_owned());
        let mut inner = self.lock();
        let cached = cached();
        let Some(entry) = inner.entries.get(&key) else {
            return match cached {
                Some(_) => Known::Read,
                None => Known::Absent,
            };
        };
        match &entry.written {
            Written::Applied(mine) => {
                let mine = mine.clone();
                let written = mine.resource_version();
                match cached {
                    Some(seen) if covers(seen.as_deref(), written.as_deref()) => {
                        inner.entries.remove(&key);
                        if seen == written {
                            Known::Written(mine)
                        } else {
                            Known::Read
                        }
                    }
                    _ => Known::Written(mine),
                }
            }
            Written::Deleted => Known::Absent,
        }
    }

    /// How many writes the watch has not shown yet.
    pub fn pending(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, version: &str, address: &str) -> WgPeer {
        let mut peer = WgPeer::new(
            name,
            wgsub_crds::WgPeerSpec {
                address: Some(address.into()),
                ..wgsub_crds::WgPeerSpec::on_server("wg")
            },
        );
        peer.metadata.namespace = Some("vpn".into());
        peer.metadata.resource_version = Some(version.into());
        peer
    }

    fn version(v: &str) -> Option<Option<String>> {
        Some(Some(v.to_owned()))
    }

    fn written_address(known: Known) -> Option<String> {
        match known {
            Known::Written(peer) => peer.spec.address.clone(),
            other => panic!("expected the written peer, got {other:?}"),
        }
    }

    #[test]
    fn without_writes_the_store_says_absent_or_read() {
        let view = PeerView::default();
        assert_eq!(view.known("vpn", "tg-1-1", || None), Known::Absent);
        assert_eq!(view.known("vpn", "tg-1-1", || version("7")), Known::Read);
    }

    #[test]
    fn a_peer_written_but_not_yet_watched_is_the_written_one_until_its_event_comes() {
        let view = PeerView::default();
        let written = peer("tg-1-1", "20", "10.8.0.2/32");
        view.applied(&written);
        // The store has not seen it at all, or holds an older version.
        assert_eq!(
            written_address(view.known("vpn", "tg-1-1", || None)),
            Some("10.8.0.2/32".into())
        );
        assert_eq!(
            written_address(view.known("vpn", "tg-1-1", || version("9"))),
            Some("10.8.0.2/32".into())
        );
        // An older event of it changes nothing; its own event ends the overlay.
        view.seen(&watcher::Event::Apply(peer("tg-1-1", "9", "10.8.0.7/32")));
        assert_eq!(view.pending(), 1);
        view.seen(&watcher::Event::Apply(written.clone()));
        assert_eq!(view.pending(), 0);
        assert_eq!(view.known("vpn", "tg-1-1", || None), Known::Absent);
    }

    #[test]
    fn the_written_peer_is_kept_without_managed_fields_or_status() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let view = PeerView::default();
        let mut written = peer("tg-1-1", "20", "10.8.0.2/32");
        written.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        written.status = Some(wgsub_crds::WgPeerStatus::default());
        view.applied(&written);
        let Known::Written(kept) = view.known("vpn", "tg-1-1", || None) else {
            panic!("the written peer");
        };
        assert_eq!(kept.metadata.managed_fields, None);
        assert_eq!(kept.status, None);
        assert_eq!(kept.spec, written.spec);
    }

    #[test]
    fn a_store_at_the_written_version_keeps_the_write_and_a_later_one_asks_for_a_read() {
        let view = PeerView::default();
        view.applied(&peer("tg-1-1", "20", "10.8.0.2/32"));
        assert_eq!(
            written_address(view.known("vpn", "tg-1-1", || version("20"))),
            Some("10.8.0.2/32".into())
        );
        assert_eq!(view.pending(), 0);

        view.applied(&peer("tg-1-1", "21", "10.8.0.2/32"));
        assert_eq!(view.known("vpn", "tg-1-1", || version("25")), Known::Read);
        assert_eq!(view.pending(), 0);

        // Versions that are not numbers are compared by equality only.
        view.applied(&peer("tg-1-1", "b", "10.8.0.2/32"));
        assert_eq!(
            written_address(view.known("vpn", "tg-1-1", || version("c"))),
            Some("10.8.0.2/32".into())
        );
        assert_eq!(view.pending(), 1);
        assert_eq!(
            written_address(view.known("vpn", "tg-1-1", || version("b"))),
            Some("10.8.0.2/32".into())
        );
        assert_eq!(view.pending(), 0);
    }

    #[test]
    fn other_peers_and_namespaces_are_untouched() {
        let view = PeerView::default();
        view.applied(&peer("tg-1-1", "20", "10.8.0.2/32"));
        assert_eq!(view.known("vpn", "tg-2-1", || None), Known::Absent);
        assert_eq!(view.known("other", "tg-1-1", || None), Known::Absent);
        view.seen(&watcher::Event::Apply(peer("tg-2-1", "30", "10.8.0.5/32")));
        assert_eq!(view.pending(), 1);
    }

    #[test]
    fn a_deleted_peer_is_absent_until_its_delete_event() {
        let view = PeerView::default();
        view.deleted("vpn", "tg-1-1");
        assert_eq!(view.known("vpn", "tg-1-1", || version("20")), Known::Absent);
        // A modification from before the delete still arrives first: still absent.
        view.seen(&watcher::Event::Apply(peer("tg-1-1", "21", "10.8.0.2/32")));
        assert_eq!(view.known("vpn", "tg-1-1", || version("21")), Known::Absent);
        view.seen(&watcher::Event::Delete(peer("tg-1-1", "21", "10.8.0.2/32")));
        assert_eq!(view.pending(), 0);
        assert_eq!(view.known("vpn", "tg-1-1", || None), Known::Absent);
    }

    #[test]
    fn a_delete_older_than_the_write_keeps_the_write() {
        let view = PeerView::default();
        // Someone deleted the peer (version 15), and this operator applied it again (20)
        // before the delete event came.
        view.applied(&peer("tg-1-1", "20", "10.8.0.2/32"));
        view.seen(&watcher::Event::Delete(peer("tg-1-1", "15", "10.8.0.9/32")));
        assert_eq!(
            written_address(view.known("vpn", "tg-1-1", || None)),
            Some("10.8.0.2/32".into())
        );
        // Deleted again after the write: the write is shown, the peer is gone.
        view.seen(&watcher::Event::Delete(peer("tg-1-1", "31", "10.8.0.2/32")));
        assert_eq!(view.known("vpn", "tg-1-1", || None), Known::Absent);
    }

    #[test]
    fn a_relist_ends_the_overlay_of_writes_made_before_it_began() {
        let view = PeerView::default();
        view.applied(&peer("tg-1-1", "20", "10.8.0.2/32"));
        view.deleted("vpn", "tg-3-1");
        view.seen(&watcher::Event::<WgPeer>::Init);
        // Written while the list was being read: the list may not hold it.
        view.applied(&peer("tg-2-1", "40", "10.8.0.4/32"));
        view.seen(&watcher::Event::InitApply(peer(
            "tg-9-1",
            "41",
            "10.8.0.9/32",
        )));
        assert_eq!(view.pending(), 3);
        view.seen(&watcher::Event::<WgPeer>::InitDone);
        assert_eq!(view.pending(), 1);
        assert_eq!(view.known("vpn", "tg-1-1", || None), Known::Absent);
        assert_eq!(view.known("vpn", "tg-3-1", || version("5")), Known::Read);
        assert_eq!(
            written_address(view.known("vpn", "tg-2-1", || None)),
            Some("10.8.0.4/32".into())
        );
        // A second InitDone without an Init forgets nothing.
        view.seen(&watcher::Event::<WgPeer>::InitDone);
        assert_eq!(view.pending(), 1);
    }
}
