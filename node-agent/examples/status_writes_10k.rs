//! Benchmark: the node-agent's `WgPeer` status writes per minute at 10,000 busy peers, and how
//! long a peer's first `Ready` waits behind them.
//!
//! Ten thousand live peers cannot be given real traffic on this machine, so the interface is
//! modelled: every peer moves bytes in every status pass and renews its handshake every two
//! minutes (WireGuard's rekey interval), each at its own phase. Each pass (every
//! `status_interval`, 10 s) runs the agent's own status decisions (`status::peer_ready`,
//! `peer_status`, `routine_interval`, `peer_write_due`, `RoutineBudget`) with the agent's
//! bookkeeping of what it wrote, and queues the writes that are due the way the agent's status queue does (one pending
//! write per peer, a newer one replacing it); the queue is drained in name order at
//! `--status-writes-per-second` (20), as the writer sends them. An hour is simulated (the first
//! pass writes every peer once, as after an agent start over peers without status); reported
//! are the writes sent per minute, their mean over the second half hour, the backlog, and how
//! long a peer added in the 45th minute (named to sort last) waited for its first `Ready`
//! write to be sent.
//!
//! `cargo run -p wgsub-node-agent --example status_writes_10k [-- PEERS]`

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use wgsub_crds::WgPeerStatus;
use wgsub_crds::keys::PrivateKey;
use wgsub_node_agent::desired::PeerState;
use wgsub_node_agent::snapshot::PeerStats;
use wgsub_node_agent::status::{
    Due, RoutineBudget, peer_ready, peer_status, peer_write_due, routine_interval,
};

/// The agent's defaults (`--status-interval`, `--counters-interval`,
/// `--status-writes-per-second`).
const STATUS_INTERVAL: Duration = Duration::from_secs(10);
const COUNTERS_INTERVAL: Duration = Duration::from_secs(60);
const WRITES_PER_SECOND: u64 = 20;
/// WireGuard renews a busy session's handshake every two minutes.
const REKEY: u64 = 120;
const MINUTES: u64 = 60;
/// From this minute on, writes are counted as the steady state (the start's one write per peer
/// and the first round of routine writes are over by then).
const STEADY_FROM: u64 = 30;
/// The minute the late peer joins.
const LATE_AT: u64 = 45;

fn main() {
    let peers: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let start: Timestamp = "2026-06-01T12:00:00Z".parse().expect("a timestamp");
    let at = |second: u64| start + SignedDuration::from_secs(second as i64);
    let names: Vec<String> = (0..peers)
        .map(|i| format!("tg-{}-1", 1_000_000 + i))
        .collect();
    let late = "zz-late-1".to_owned();
    let state = PeerState::Live(PrivateKey::generate().public_key());

    // What the API holds (as the agent's index sees it) and what the agent last queued.
    let mut current: HashMap<String, WgPeerStatus> = HashMap::new();
    let mut written: HashMap<String, (WgPeerStatus, Option<Timestamp>)> = HashMap::new();
    let mut queue: BTreeMap<String, WgPeerStatus> = BTreeMap::new();
    let mut sent_per_minute = vec![0u64; MINUTES as usize];
    let mut backlog_max = 0usize;
    let mut late_ready_at: Option<u64> = None;

    let mut budget = RoutineBudget::new(STATUS_INTERVAL);
    let passes = MINUTES * 60 / STATUS_INTERVAL.as_secs();
    for pass in 0..passes {
        let second = pass * STATUS_INTERVAL.as_secs();
        let now = at(second);
        let mut live: Vec<&String> = names.iter().collect();
        if second >= LATE_AT * 60 {
            live.push(&late);
        }
        let interval = routine_interval(COUNTERS_INTERVAL, live.len());
        budget.refill(now);
        for (i, name) in live.iter().enumerate() {
            let phase = (i as u64 * 7919) % REKEY;
            let handshake = second.saturating_sub((second + REKEY - phase) % REKEY);
            let stats = PeerStats {
                last_handshake: Some(at(handshake)),
                rx_bytes: 1_000 * (second + 1) + i as u64,
                tx_bytes: 3_000 * (second + 1) + i as u64,
            };
            let ready = peer_ready(&state, true, "wg0", Some(1), now);
            let stored = current.get(*name);
            let new = peer_status(stored, ready, Some(&stats), Some(1));
            let (last, counters_at) = match written.get(*name) {
                Some((status, at)) => (Some(status), *at),
                None => (stored, None),
            };
            let write = match peer_write_due(&new, last, counters_at, now, interval) {
                Some(Due::Now) => true,
                Some(Due::Routine) => budget.take(),
                None => false,
            };
            if write {
                let counters_changed = last.is_none_or(|l| {
                    l.rx_bytes != new.rx_bytes
                        || l.tx_bytes != new.tx_bytes
                        || l.last_handshake != new.last_handshake
                });
                let at = if counters_changed {
                    Some(now)
                } else {
                    counters_at
                };
                queue.insert((*name).clone(), new.clone());
                written.insert((*name).clone(), (new, at));
            }
        }
        backlog_max = backlog_max.max(queue.len());
        // The writer until the next pass.
        for tick in 0..STATUS_INTERVAL.as_secs() * WRITES_PER_SECOND {
            let Some((name, status)) = queue.pop_first() else {
                break;
            };
            let sent_at = second * WRITES_PER_SECOND + tick;
            if name == late && late_ready_at.is_none() {
                late_ready_at = Some(sent_at);
            }
            sent_per_minute[(second / 60) as usize] += 1;
            current.insert(name, status);
        }
    }

    let steady: Vec<u64> = sent_per_minute[STEADY_FROM as usize..].to_vec();
    let mean = steady.iter().sum::<u64>() as f64 / steady.len() as f64;
    println!(
        "node-agent status writes at {peers} busy peers (modelled interface; the agent's status \
         decisions; writer at {WRITES_PER_SECOND}/s):"
    );
    println!(
        "  routine (counters/handshake) interval per peer: {:?}",
        routine_interval(COUNTERS_INTERVAL, peers)
    );
    println!("  writes sent per minute, minutes 1..{MINUTES}: {sent_per_minute:?}");
    println!(
        "  steady state (minutes {}..{MINUTES}): {mean:.0} writes/min, max {}; writer capacity {} writes/min",
        STEADY_FROM + 1,
        steady.iter().max().copied().unwrap_or(0),
        WRITES_PER_SECOND * 60
    );
    println!(
        "  largest backlog: {backlog_max} writes; backlog at the end: {}",
        queue.len()
    );
    match late_ready_at {
        Some(sent) => println!(
            "  a peer added at minute {LATE_AT}: first Ready sent after {:.1} s",
            sent as f64 / WRITES_PER_SECOND as f64 - (LATE_AT * 60) as f64
        ),
        None => println!(
            "  a peer added at minute {LATE_AT}: first Ready NOT sent within {} s",
            (MINUTES - LATE_AT) * 60
        ),
    }
}
