//! The operator's Prometheus metrics: reconciles, errors by reason, reconcile duration,
//! subscriptions by phase, address pool usage per server, Events dropped, traffic accounted and
//! data quotas used up, and whether this replica leads.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wgsub_crds::SubscriptionPhase;
use wgsub_runtime::lease::LeaderMetrics;

/// Label of an error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Label of the subscriptions gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// Label of the traffic counter: `rx` (received from the devices) or `tx` (sent to them).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

/// Labels of the pool gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub namespace: String,
    pub server: String,
}

/// Every metric the operator exports, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ReasonLabels, Counter>,
    duration: Histogram,
    subscriptions: Family<PhaseLabels, Gauge>,
    pool_used: Family<PoolLabels, Gauge>,
    pool_capacity: Family<PoolLabels, Gauge>,
    events_dropped: Counter,
    peer_writes_unseen: Gauge,
    traffic: Family<DirectionLabels, Counter>,
    quota_exhaustions: Counter,
    leader: LeaderMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry holding every metric.
    pub fn new() -> Self {
        let mut registry = wgsub_runtime::metrics::registry("wgsub_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            errors.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "How long one reconcile took",
            duration.clone(),
        );
        let subscriptions = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "subscriptions",
            "VpnSubscriptions by phase (as of the last count)",
            subscriptions.clone(),
        );
        let pool_used = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "pool_addresses_used",
            "IPv4 client addresses held by peers, per server",
            pool_used.clone(),
        );
        let pool_capacity = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "pool_addresses_capacity",
            "IPv4 client addresses a server's pool holds",
            pool_capacity.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events not published because too many were waiting",
            events_dropped.clone(),
        );
        let peer_writes_unseen = Gauge::default();
        registry.register(
            "peer_writes_unseen",
            "WgPeer writes of this operator its peer watch has not shown yet (the watch's lag)",
            peer_writes_unseen.clone(),
        );
        let traffic = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "traffic_accounted_bytes",
            "Bytes folded into subscriptions' usage from their peers' counters, by direction",
            traffic.clone(),
        );
        let quota_exhaustions = Counter::default();
        registry.register(
            "quota_exhaustions",
            "Times a subscription used up its data quota for the period",
            quota_exhaustions.clone(),
        );
        let leader = LeaderMetrics::register(&mut registry);
        Self {
            registry,
            reconciles,
            errors,
            duration,
            subscriptions,
            pool_used,
            pool_capacity,
            events_dropped,
            peer_writes_unseen,
            traffic,
            quota_exhaustions,
            leader,
        }
    }

    /// Records one reconcile: its duration and, when it failed, the reason.
    pub fn reconciled(&self, took: Duration, error_reason: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = error_reason {
            self.errors
                .get_or_create(&ReasonLabels {
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    /// Sets the subscription count of every phase.
    pub fn set_phase_counts(&self, counts: impl Fn(SubscriptionPhase) -> i64) {
        for phase in SubscriptionPhase::ALL {
            self.subscriptions
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().to_owned(),
                })
                .set(counts(phase));
        }
    }

    /// Sets the usage of one server's pool.
    pub fn set_pool_usage(&self, namespace: &str, server: &str, used: u64, capacity: u64) {
        let labels = PoolLabels {
            namespace: namespace.to_owned(),
            server: server.to_owned(),
        };
        self.pool_used
            .get_or_create(&labels)
            .set(i64::try_from(used).unwrap_or(i64::MAX));
        self.pool_capacity
            .get_or_create(&labels)
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
    }

    /// Counts an Event dropped because the publisher's queue was full.
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// Sets how many peer writes the watch has not shown yet.
    pub fn set_peer_writes_unseen(&self, count: usize) {
        self.peer_writes_unseen
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts bytes accounted: `rx` received from devices, `tx` sent to them.
    pub fn traffic_accounted(&self, rx: i64, tx: i64) {
        for (direction, bytes) in [("rx", rx), ("tx", tx)] {
            if let Ok(bytes) = u64::try_from(bytes)
                && bytes > 0
            {
                self.traffic
                    .get_or_create(&DirectionLabels { direction })
                    .inc_by(bytes);
            }
        }
    }

    /// Counts a subscription that used up its data quota.
    pub fn quota_exhausted(&self) {
        self.quota_exhaustions.inc();
    }

    /// Whether this replica leads, and how often it started to.
    pub fn leader(&self) -> &LeaderMetrics {
        &self.leader
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        wgsub_runtime::metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_labels() {
        let metrics = Metrics::new();
        metrics.reconciled(Duration::from_millis(3), None);
        metrics.reconciled(Duration::from_millis(5), Some("PoolExhausted"));
        metrics.set_phase_counts(|phase| i64::from(phase == SubscriptionPhase::Active) * 7);
        metrics.set_pool_usage("vpn", "wg", 5, 253);
        metrics.leader().set_leader(true);
        metrics.event_dropped();
        metrics.set_peer_writes_unseen(4);
        metrics.traffic_accounted(1500, 0);
        metrics.traffic_accounted(500, 20);
        metrics.quota_exhausted();
        let text = metrics.encode();
        for expected in [
            "wgsub_operator_reconciles_total 2",
            "wgsub_operator_reconcile_errors_total{reason=\"PoolExhausted\"} 1",
            "wgsub_operator_reconcile_duration_seconds_count 2",
            "wgsub_operator_subscriptions{phase=\"Active\"} 7",
            "wgsub_operator_subscriptions{phase=\"Expired\"} 0",
            "wgsub_operator_pool_addresses_used{namespace=\"vpn\",server=\"wg\"} 5",
            "wgsub_operator_pool_addresses_capacity{namespace=\"vpn\",server=\"wg\"} 253",
            "wgsub_operator_leader 1",
            "wgsub_operator_leader_transitions_total 1",
            "wgsub_operator_events_dropped_total 1",
            "wgsub_operator_peer_writes_unseen 4",
            "wgsub_operator_traffic_accounted_bytes_total{direction=\"rx\"} 2000",
            "wgsub_operator_traffic_accounted_bytes_total{direction=\"tx\"} 20",
            "wgsub_operator_quota_exhaustions_total 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    #[test]
    fn build_info_names_version_commit_and_compiler() {
        use wgsub_crds::build_info::{GIT_COMMIT, RUSTC, VERSION};
        let text = Metrics::new().encode();
        let expected = format!(
            "wgsub_operator_build_info{{version=\"{VERSION}\",git_commit=\"{GIT_COMMIT}\",rustc=\"{RUSTC}\"}} 1"
        );
        assert!(text.contains(&expected), "{expected} missing from\n{text}");
    }
}
