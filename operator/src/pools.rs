//! Per-server address bookkeeping for one leadership term: one async lock per `WgServer`, behind
//! which lives the [`UsedAddresses`] of that server.
//!
//! The bookkeeping starts empty and is loaded from a fresh list of the peers in the API the first
//! time a reconcile needs the server; from then on every claim the reconcile decision makes is
//! recorded in it before the peer is written, and the lock is held until the written peer is in
//! the API. So a second reconcile that allocates on the same server — running concurrently under
//! the Controller's concurrency — waits for the first and sees its claim: no two peers of a
//! server get the same address. Claims whose write failed stay (the address is merely withheld)
//! until the next load; peers deleted by others (garbage collection of a deleted subscription)
//! free their addresses at the next load, which happens when the bookkeeping says the pool is
//! full and the last load is older than [`RELOAD_INTERVAL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use crate::addresses::UsedAddresses;

/// The shortest time between two loads of one server's addresses.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// The addresses of one server, as far as this leadership term knows.
#[derive(Debug, Default)]
pub struct ServerPool {
    pub used: UsedAddresses,
    loaded_at: Option<Instant>,
}

impl ServerPool {
    /// Replaces the bookkeeping with addresses read from the API just now.
    pub fn load(&mut self, used: UsedAddresses) {
        self.used = used;
        self.loaded_at = Some(Instant::now());
    }

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

/// A server's pool behind its async lock.
type LockedPool = Arc<tokio::sync::Mutex<ServerPool>>;

/// The locks and bookkeeping of every server, by namespace and name.
#[derive(Debug, Default)]
pub struct ServerPools {
    pools: Mutex<HashMap<(String, String), LockedPool>>,
}

impl ServerPools {
    /// Waits for the lock of a server's pool.
    pub async fn lock(&self, namespace: &str, server: &str) -> OwnedMutexGuard<ServerPool> {
        let pool = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools
                .entry((namespace.to_owned(), server.to_owned()))
                .or_default()
                .clone()
        };
        pool.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;

    #[tokio::test]
    async fn a_second_locker_waits_and_sees_the_first_claim() {
        let pools = Arc::new(ServerPools::default());
        let pool: Ipv4Net = "10.8.0.0/24".parse().unwrap();
        let mut first = pools.lock("ns", "wg").await;
        assert!(first.needs_load());
        first.load(UsedAddresses::default());
        let address = first.used.allocate_v4(pool, "a-1").unwrap();

        let contender = {
            let pools = pools.clone();
            tokio::spawn(async move {
                let mut second = pools.lock("ns", "wg").await;
                second.used.allocate_v4(pool, "b-1").unwrap()
            })
        };
        tokio::task::yield_now().await;
        assert!(!contender.is_finished(), "the second locker must wait");
        drop(first);
        let other = contender.await.unwrap();
        assert_ne!(address, other);
    }

    #[tokio::test]
    async fn servers_do_not_share_a_lock() {
        let pools = ServerPools::default();
        let _held = pools.lock("ns", "wg").await;
        let other = tokio::time::timeout(Duration::from_secs(1), pools.lock("ns", "wg2")).await;
        assert!(other.is_ok());
        let same_name_other_namespace =
            tokio::time::timeout(Duration::from_secs(1), pools.lock("ns2", "wg")).await;
        assert!(same_name_other_namespace.is_ok());
    }

    #[test]
    fn a_fresh_load_is_not_reloaded_at_once() {
        let mut pool = ServerPool::default();
        assert!(pool.may_reload());
        pool.load(UsedAddresses::default());
        assert!(!pool.needs_load());
        assert!(!pool.may_reload());
    }
}
