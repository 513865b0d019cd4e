//! Traffic accounting and the data quota: folds the node-agent's per-peer counters
//! (`WgPeer.status.rxBytes/txBytes`) into a subscription's `status.usage`, rolls the quota's
//! periods, tells whether the quota is used up (the `QuotaExhausted` condition and the
//! `wgsub.io/over-quota` label on every peer) and whether the usage is worth writing now.
//!
//! The counters are the interface's: they restart from zero when a peer is re-added, the
//! interface rebuilt or the agent restarted. A device's delta is therefore `new - last` while the
//! counter grows and `new` after it went back (a restart). A device that disappears keeps its
//! bytes in the subscription's totals; its entry leaves `devices`.
//!
//! Periods: with a quota, a period is `periodDays` long, starting at the first fold (or when the
//! quota appears); when it ends the next starts at its end (whole periods are skipped when the
//! operator was away); a purchase (`paidUntil` later than the one the period started under)
//! starts a new period at once — the top-up. A new period zeroes the period's counters. Without
//! a quota the totals keep counting and the period starts at the first fold or the last
//! purchase, without an end.
//!
//! Writes: a subscription's status is written when the exhaustion changes, a period starts or
//! the devices change, else at most once per write interval ([`should_write`]) — so the
//! node-agents' frequent status writes do not each become a subscription write. The operator
//! keeps its latest fold in memory as the base of the next one, so bytes seen between two
//! writes are not lost to a counter restart. A subscription's first fold in a leadership term
//! writes nothing for the interval alone: a cold start over thousands of subscriptions does not
//! rewrite each one's status for bytes counted while no operator looked; the reconciles that
//! the peers' next counters trigger (spread over the node-agents' counters interval) do.
//!
//! Pure: no I/O, no clock.

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use wgsub_crds::resources::{DeviceUsage, TrafficQuota, TrafficUsage};
use wgsub_crds::{VpnSubscriptionSpec, WgPeer};

/// The default of `--usage-write-interval`: the longest a folded usage waits to be written when
/// nothing else forces a write.
pub const DEFAULT_WRITE_INTERVAL: SignedDuration = SignedDuration::from_secs(60);

/// One existing peer and its counters as the node-agent last wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// The `WgPeer`'s name.
    pub peer: String,
    /// Bytes received from the device (`status.rxBytes`) and sent to it (`status.txBytes`);
    /// `None` when the peer was read without a status (not reported yet, or known from the
    /// operator's own write, which carries none): its device keeps what it had.
    pub bytes: Option<(i64, i64)>,
}

/// The counters of every peer.
pub fn observed_counters(peers: &[WgPeer]) -> Vec<Counters> {
    peers
        .iter()
        .map(|peer| Counters {
            peer: peer.name_any(),
            bytes: peer
                .status
                .as_ref()
                .map(|status| (status.rx_bytes.max(0), status.tx_bytes.max(0))),
        })
        .collect()
}

/// How far a counter moved since `last`: the difference while it grows, everything it holds
/// after a restart.
pub fn counter_delta(last: i64, new: i64) -> i64 {
    if new >= last { new - last } else { new }
}

/// One fold: the new usage, and the bytes it accounted (received, sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    pub usage: TrafficUsage,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
}

/// Folds `counters` into `base` at `now`, under the subscription's quota and `paidUntil`.
/// `None` while there is nothing to account: no usage yet, no quota and no reported peer.
/// `updatedAt` is carried over from `base`; the writer sets it.
pub fn fold(
    base: Option<&TrafficUsage>,
    quota: Option<TrafficQuota>,
    paid_until: Option<Timestamp>,
    counters: &[Counters],
    now: Timestamp,
) -> Option<Fold> {
    if base.is_none() && quota.is_none() && counters.iter().all(|c| c.bytes.is_none()) {
        return None;
    }
    // A usage counted without an end had no quota: one that appears starts its first period.
    let quota_appeared = quota.is_some() && base.is_some_and(|base| base.period_end.is_none());
    let mut usage = base.cloned().unwrap_or_else(|| TrafficUsage {
        period_start: now,
        paid_until_at_start: paid_until,
        ..TrafficUsage::default()
    });
    let (mut rx_bytes, mut tx_bytes) = (0_i64, 0_i64);
    let mut devices = Vec::with_capacity(counters.len());
    for counter in counters {
        let known = usage.device(&counter.peer).cloned();
        let Some((new_rx, new_tx)) = counter.bytes else {
            devices.extend(known);
            continue;
        };
        let mut device = known.unwrap_or_else(|| DeviceUsage {
            peer: counter.peer.clone(),
            ..DeviceUsage::default()
        });
        let rx = counter_delta(device.last_rx_bytes, new_rx);
        let tx = counter_delta(device.last_tx_bytes, new_tx);
        device.last_rx_bytes = new_rx;
        device.last_tx_bytes = new_tx;
        device.period_rx_bytes = device.period_rx_bytes.saturating_add(rx);
        device.period_tx_bytes = device.period_tx_bytes.saturating_add(tx);
        device.total_rx_bytes = device.total_rx_bytes.saturating_add(rx);
        device.total_tx_bytes = device.total_tx_bytes.saturating_add(tx);
        rx_bytes = rx_bytes.saturating_add(rx);
        tx_bytes = tx_bytes.saturating_add(tx);
        devices.push(device);
    }
    devices.sort_by(|a, b| a.peer.cmp(&b.peer));
    usage.devices = devices;
    usage.period_rx_bytes = usage.period_rx_bytes.saturating_add(rx_bytes);
    usage.period_tx_bytes = usage.period_tx_bytes.saturating_add(tx_bytes);
    usage.total_rx_bytes = usage.total_rx_bytes.saturating_add(rx_bytes);
    usage.total_tx_bytes = usage.total_tx_bytes.saturating_add(tx_bytes);
    roll_period(&mut usage, quota, quota_appeared, paid_until, now);
    Some(Fold {
        usage,
        rx_bytes,
        tx_bytes,
    })
}

/// Starts a new period when one is due: now on a purchase or a quota that just appeared, at the
/// end of the last whole period when periods ran out; sets or clears the period's end.
fn roll_period(
    usage: &mut TrafficUsage,
    quota: Option<TrafficQuota>,
    quota_appeared: bool,
    paid_until: Option<Timestamp>,
    now: Timestamp,
) {
    let purchased = match (paid_until, usage.paid_until_at_start) {
        (Some(new), Some(old)) => new > old,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if purchased {
        start_period(usage, now, paid_until);
    } else if paid_until < usage.paid_until_at_start {
        // A refund moved paidUntil back: the next purchase is measured from there.
        usage.paid_until_at_start = paid_until;
    }
    let Some(quota) = quota else {
        usage.period_end = None;
        return;
    };
    let period = quota.period();
    if quota_appeared && !purchased {
        start_period(usage, now, paid_until);
    }
    let end = usage.period_start.checked_add(period).ok();
    usage.period_end = end;
    if let Some(end) = end
        && now >= end
    {
        let behind = now.duration_since(end).as_secs();
        let whole = behind / period.as_secs().max(1);
        let start = period
            .checked_mul(i32::try_from(whole).unwrap_or(i32::MAX))
            .and_then(|skipped| end.checked_add(skipped).ok())
            .unwrap_or(now);
        let paid = usage.paid_until_at_start;
        start_period(usage, start, paid);
        usage.period_end = start.checked_add(period).ok();
    }
}

fn start_period(usage: &mut TrafficUsage, start: Timestamp, paid_until: Option<Timestamp>) {
    usage.period_start = start;
    usage.paid_until_at_start = paid_until;
    usage.period_rx_bytes = 0;
    usage.period_tx_bytes = 0;
    for device in &mut usage.devices {
        device.period_rx_bytes = 0;
        device.period_tx_bytes = 0;
    }
}

/// Whether the quota is used up: the period's received plus sent bytes reach it. Never without
/// a quota.
pub fn is_exhausted(quota: Option<TrafficQuota>, usage: Option<&TrafficUsage>) -> bool {
    match (quota, usage) {
        (Some(quota), Some(usage)) => usage.period_bytes() >= quota.bytes,
        _ => false,
    }
}

/// Whether the folded usage must be written now rather than later: something a reader acts on
/// changed (the exhaustion, the period, the set of devices) or — once `settled`, i.e. not the
/// subscription's first fold of the leadership term — the last write is at least `interval` old.
/// Never when nothing but `updatedAt` would change.
pub fn should_write(
    written: Option<&TrafficUsage>,
    folded: &TrafficUsage,
    exhaustion_changed: bool,
    now: Timestamp,
    (interval, settled): (SignedDuration, bool),
) -> bool {
    let Some(written) = written else {
        return true;
    };
    if same_content(written, folded) {
        return false;
    }
    exhaustion_changed
        || written.period_start != folded.period_start
        || written.period_end != folded.period_end
        || !same_devices(written, folded)
        || (settled
            && written
                .updated_at
                .is_none_or(|at| now >= at.checked_add(interval).unwrap_or(at)))
}

/// When a fold held back by [`should_write`] is due: `interval` after the last write, or after
/// `now` for a first fold of the term (not `settled`). `None` when the written usage already
/// says everything.
pub fn next_write(
    written: Option<&TrafficUsage>,
    folded: &TrafficUsage,
    now: Timestamp,
    (interval, settled): (SignedDuration, bool),
) -> Option<Timestamp> {
    let written = written?;
    if same_content(written, folded) {
        return None;
    }
    let from = if settled {
        written.updated_at
    } else {
        Some(now)
    };
    from.and_then(|at| at.checked_add(interval).ok())
}

fn same_content(a: &TrafficUsage, b: &TrafficUsage) -> bool {
    TrafficUsage {
        updated_at: None,
        ..a.clone()
    } == TrafficUsage {
        updated_at: None,
        ..b.clone()
    }
}

fn same_devices(a: &TrafficUsage, b: &TrafficUsage) -> bool {
    a.devices.len() == b.devices.len()
        && a.devices
            .iter()
            .zip(&b.devices)
            .all(|(x, y)| x.peer == y.peer)
}

/// What one reconcile does about a subscription's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounting {
    /// The latest fold, for the operator to keep as the next base.
    pub folded: Option<TrafficUsage>,
    /// The usage the status carries after this reconcile: the fold stamped `updatedAt = now`
    /// when it is written, else the usage written before.
    pub status_usage: Option<TrafficUsage>,
    /// The quota is used up: the `QuotaExhausted` condition is true and every peer carries the
    /// over-quota label.
    pub exhausted: bool,
    /// The quota was not used up before this reconcile and is now.
    pub became_exhausted: bool,
    /// The next instant the usage changes by the clock alone: the period's end, or when a
    /// held-back fold is due.
    pub requeue_at: Option<Timestamp>,
    /// Bytes this fold accounted (received, sent).
    pub accounted: (i64, i64),
}

/// Accounts a subscription's traffic at `now`: folds its peers' counters into `kept` (the
/// operator's latest fold, when it has one this term, else the written usage), decides the
/// exhaustion and whether the status gets the new usage now.
pub fn account(
    spec: &VpnSubscriptionSpec,
    written: Option<&TrafficUsage>,
    was_exhausted: bool,
    kept: Option<&TrafficUsage>,
    peers: &[WgPeer],
    now: Timestamp,
    interval: SignedDuration,
) -> Accounting {
    let settled = kept.is_some();
    let base = newest(written, kept);
    let quota = spec.traffic_quota;
    let Some(fold) = fold(base, quota, spec.paid_until, &observed_counters(peers), now) else {
        return Accounting {
            folded: None,
            status_usage: written.cloned(),
            exhausted: false,
            became_exhausted: false,
            requeue_at: None,
            accounted: (0, 0),
        };
    };
    let exhausted = is_exhausted(quota, Some(&fold.usage));
    let write = should_write(
        written,
        &fold.usage,
        exhausted != was_exhausted,
        now,
        (interval, settled),
    );
    let status_usage = if write {
        Some(TrafficUsage {
            updated_at: Some(now),
            ..fold.usage.clone()
        })
    } else {
        written.cloned()
    };
    let held_back = next_write(status_usage.as_ref(), &fold.usage, now, (interval, settled));
    let requeue_at = [fold.usage.period_end, held_back]
        .into_iter()
        .flatten()
        .min();
    Accounting {
        folded: Some(fold.usage),
        status_usage,
        exhausted,
        became_exhausted: exhausted && !was_exhausted,
        requeue_at,
        accounted: (fold.rx_bytes, fold.tx_bytes),
    }
}

/// The base of the next fold: the operator's own latest fold, unless the written usage is ahead
/// of it (a fold of another leader, or a subscription written anew).
fn newest<'a>(
    written: Option<&'a TrafficUsage>,
    kept: Option<&'a TrafficUsage>,
) -> Option<&'a TrafficUsage> {
    match (written, kept) {
        (Some(written), Some(kept))
            if kept.period_start >= written.period_start
                && kept.total_bytes() >= written.total_bytes() =>
        {
            Some(kept)
        }
        (Some(written), _) => Some(written),
        (None, kept) => kept,
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
