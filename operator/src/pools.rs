//! Per-server address bookkeeping for one leadership term: the [`AddressBook`] of each
//! `WgServer`, behind a lock held only while a decision runs (microseconds, never across an
//! API call).
//!
//! The book starts empty and is loaded from a fresh list of the peers the first time a
//! reconcile needs the server (concurrent reconciles wait for that one load). A decision claims
//! addresses in it under the lock and reserves the claims of the peers it will write; the
//! writes then run without the lock, concurrently with other reconciles' decisions and writes,
//! and each reservation is settled with its write's outcome ([`Reserved`]). A second decision
//! on the same server sees the first's claims, so no two peers get the same address; a reload
//! (when the book says the pool is full and the last load is older than [`RELOAD_INTERVAL`])
//! keeps the reservations the list may not show. Peers deleted by others (garbage collection
//! of a deleted subscription) free their addresses at the next load.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::addresses::{AddressBook, ListTicket, UsedAddresses, WriteOutcome};

/// The shortest time between two loads of one server's addresses.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// The book of one server and when it was last loaded.
#[derive(Debug, Default)]
pub struct PoolState {
    pub book: AddressBook,
    loaded_at: Option<Instant>,
}

impl PoolState {
    /// Nothing has been read yet.
    pub fn needs_load(&self) -> bool {
        self.loaded_at.is_none()
    }

    /// A pool that looks full may be read again to find addresses freed by others.
    pub fn may_reload(&self) -> bool {
        self.loaded_at
            .is_none_or(|at| at.elapsed() >= RELOAD_INTERVAL)
    }
}

/// The addresses of one server, as far as this leadership term knows.
#[derive(Debug, Default)]
pub struct ServerPool {
    state: Mutex<PoolState>,
    /// Held across a load's list, so concurrent reconciles wait for one load instead of each
    /// listing the peers.
    loading: tokio::sync::Mutex<()>,
}

impl ServerPool {
    /// The book, for one decision (never hold it across an await).
    pub fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the book with `list` unless it was loaded already (or, with `again`, loaded within
    /// [`RELOAD_INTERVAL`]). Returns whether this call loaded it.
    pub async fn load<E, F>(&self, again: bool, list: impl FnOnce() -> F) -> Result<bool, E>
    where
        F: Future<Output = Result<UsedAddresses, E>>,
    {
        let wanted = |state: &PoolState| match again {
            false => state.needs_load(),
            true => state.may_reload(),
        };
        if !wanted(&self.state()) {
            return Ok(false);
        }
        let _loading = self.loading.lock().await;
        let ticket: ListTicket = {
            let mut state = self.state();
            if !wanted(&state) {
                return Ok(false);
            }
            state.book.begin_list()
        };
        let listed = list().await?;
        let mut state = self.state();
        state.book.install(ticket, listed);
        state.loaded_at = Some(Instant::now());
        Ok(true)
    }
}

/// The reservations of one reconcile's writes. Each is settled by [`Reserved::outcome`] once
/// its write answered; one still unsettled when this is dropped is settled as
/// [`WriteOutcome::Refused`] if its write was never sent and [`WriteOutcome::Unknown`] if it
/// was (the reconcile failed or was dropped half-way).
#[derive(Debug)]
pub struct Reserved {
    pool: Arc<ServerPool>,
    /// Peer name → whether its write was sent.
    pending: HashMap<String, bool>,
}

impl Reserved {
    /// Reserves, in `state` (the locked book of `pool`), the addresses of the peers about to
    /// be written.
    pub fn new(
        pool: Arc<ServerPool>,
        state: &mut PoolState,
        peers: impl IntoIterator<Item = (String, Option<Ipv4Addr>, Option<Ipv6Addr>)>,
    ) -> Self {
        let mut pending = HashMap::new();
        for (peer, v4, v6) in peers {
            state.book.reserve(&peer, v4, v6);
            pending.insert(peer, false);
        }
        Self { pool, pending }
    }

    /// No address is reserved.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// `peer`'s write is about to be sent.
    pub fn sending(&mut self, peer: &str) {
        if let Some(sent) = self.pending.get_mut(peer) {
            *sent = true;
        }
    }

    /// `peer`'s write answered.
    pub fn outcome(&mut self, peer: &str, outcome: WriteOutcome) {
        if self.pending.remove(peer).is_some() {
            self.pool.state().book.settle(peer, outcome);
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut state = self.pool.state();
        for (peer, sent) in self.pending.drain() {
            let outcome = match sent {
                true => WriteOutcome::Unknown,
                false => WriteOutcome::Refused,
            };
            state.book.settle(&peer, outcome);
        }
    }
}

/// The books of every server, by namespace and name.
#[derive(Debug, Default)]
pub struct ServerPools {
    pools: Mutex<HashMap<(String, String), Arc<ServerPool>>>,
}

impl ServerPools {
    /// The pool of a server (created empty, to be loaded).
    pub fn pool(&self, namespace: &str, server: &str) -> Arc<ServerPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry((namespace.to_owned(), server.to_owned()))
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;

    fn subnet() -> Ipv4Net {
        "10.8.0.0/24".parse().unwrap()
    }

    #[tokio::test]
    async fn concurrent_first_reconciles_wait_for_one_load() {
        let pool = Arc::new(ServerPool::default());
        let lists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let (pool, lists) = (pool.clone(), lists.clone());
            tokio::spawn(async move {
                pool.load(false, || async move {
                    lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    wait.await.unwrap();
                    let mut used = UsedAddresses::default();
                    used.claim_v4("10.8.0.2".parse().unwrap(), "listed");
                    Ok::<_, ()>(used)
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        let second = {
            let (pool, lists) = (pool.clone(), lists.clone());
            tokio::spawn(async move {
                pool.load(false, || async move {
                    lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, ()>(UsedAddresses::default())
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "the second waits for the first load");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(true));
        assert_eq!(second.await.unwrap(), Ok(false));
        assert_eq!(lists.load(std::sync::atomic::Ordering::SeqCst), 1);
        let next = pool.state().book.used.allocate_v4(subnet(), "new").unwrap();
        assert_eq!(next, "10.8.0.3".parse::<Ipv4Addr>().unwrap());
    }

    #[tokio::test]
    async fn a_reservation_survives_a_load_that_did_not_see_it_and_an_unsent_one_is_freed() {
        let pool = Arc::new(ServerPool::default());
        pool.load(false, || async { Ok::<_, ()>(UsedAddresses::default()) })
            .await
            .unwrap();
        let (a, b) = {
            let mut state = pool.state();
            let a = state.book.used.allocate_v4(subnet(), "a").unwrap();
            let b = state.book.used.allocate_v4(subnet(), "b").unwrap();
            (a, b)
        };
        let mut reserved = {
            let mut state = pool.state();
            Reserved::new(
                pool.clone(),
                &mut state,
                [
                    ("a".to_owned(), Some(a), None),
                    ("b".to_owned(), Some(b), None),
                ],
            )
        };
        reserved.sending("a");
        // A reload whose list saw neither write.
        {
            let mut state = pool.state();
            state.loaded_at = None;
        }
        pool.load(false, || async { Ok::<_, ()>(UsedAddresses::default()) })
            .await
            .unwrap();
        assert_eq!(pool.state().book.used.owner_v4(a), Some("a"));
        assert_eq!(pool.state().book.used.owner_v4(b), Some("b"));
        // The reconcile fails after sending a's write: a's outcome is unknown (kept), b's write
        // was never sent (freed).
        drop(reserved);
        assert_eq!(pool.state().book.used.owner_v4(a), Some("a"));
        assert_eq!(pool.state().book.used.owner_v4(b), None);
    }

    #[test]
    fn servers_do_not_share_a_pool() {
        let pools = ServerPools::default();
        let one = pools.pool("ns", "wg");
        assert!(Arc::ptr_eq(&one, &pools.pool("ns", "wg")));
        assert!(!Arc::ptr_eq(&one, &pools.pool("ns", "wg2")));
        assert!(!Arc::ptr_eq(&one, &pools.pool("ns2", "wg")));
    }

    #[tokio::test]
    async fn a_fresh_load_is_not_reloaded_at_once() {
        let pool = ServerPool::default();
        assert!(pool.state().may_reload());
        let loaded = pool
            .load(true, || async { Ok::<_, ()>(UsedAddresses::default()) })
            .await;
        assert_eq!(loaded, Ok(true));
        assert!(!pool.state().needs_load());
        let again = pool
            .load(true, || async { Ok::<_, ()>(UsedAddresses::default()) })
            .await;
        assert_eq!(again, Ok(false));
    }
}
