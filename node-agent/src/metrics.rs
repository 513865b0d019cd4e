//! The agent's Prometheus metrics: peers on each interface, applies (by kind), apply errors,
//! apply duration, drift corrections, handshake ages, status writes, readiness and build info.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Whether an apply added peers while the first `WgPeer` list arrived (start), came from an
/// event or timer (incremental) or from a full comparison (resync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum ApplyKind {
    Start,
    Incremental,
    Resync,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct InterfaceLabels {
    pub interface: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ApplyLabels {
    pub interface: String,
    pub kind: ApplyKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WriteLabels {
    pub resource: &'static str,
    pub result: &'static str,
}

/// Every metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub peers: Family<InterfaceLabels, Gauge>,
    pub applies: Family<ApplyLabels, Counter>,
    pub apply_errors: Family<InterfaceLabels, Counter>,
    pub apply_duration: Family<ApplyLabels, Histogram>,
    pub drift_corrections: Family<InterfaceLabels, Counter>,
    pub max_handshake_age: Family<InterfaceLabels, Gauge<f64, AtomicU64>>,
    pub recent_handshakes: Family<InterfaceLabels, Gauge>,
    pub status_writes: Family<WriteLabels, Counter>,
    /// 1 once `/readyz` answers 200 (set when `/metrics` is scraped).
    pub ready: Gauge,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = wgsub_runtime::metrics::registry("wgsub_node_agent");
        let peers = Family::<InterfaceLabels, Gauge>::default();
        registry.register("peers", "Peers on the WireGuard interface", peers.clone());
        let applies = Family::<ApplyLabels, Counter>::default();
        registry.register(
            "applies",
            "Updates applied to the interface",
            applies.clone(),
        );
        let apply_errors = Family::<InterfaceLabels, Counter>::default();
        registry.register(
            "apply_errors",
            "Failed reads or updates of the interface",
            apply_errors.clone(),
        );
        let apply_duration = Family::<ApplyLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "apply_duration_seconds",
            "Time to compare and update the interface",
            apply_duration.clone(),
        );
        let drift_corrections = Family::<InterfaceLabels, Counter>::default();
        registry.register(
            "drift_corrections",
            "Differences a full comparison found and corrected (peers, key, port, link)",
            drift_corrections.clone(),
        );
        let max_handshake_age = Family::<InterfaceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "max_handshake_age_seconds",
            "Age of the oldest latest-handshake among peers that ever completed one",
            max_handshake_age.clone(),
        );
        let recent_handshakes = Family::<InterfaceLabels, Gauge>::default();
        registry.register(
            "recent_handshake_peers",
            "Peers whose latest handshake is less than 3 minutes old",
            recent_handshakes.clone(),
        );
        let status_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "status_writes",
            "Status patches sent to the Kubernetes API",
            status_writes.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when the agent is ready (watches listed, first interface sync done), else 0",
            ready.clone(),
        );
        Self {
            registry,
            peers,
            applies,
            apply_errors,
            apply_duration,
            drift_corrections,
            max_handshake_age,
            recent_handshakes,
            status_writes,
            ready,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        wgsub_runtime::metrics::encode(&self.registry)
    }

    pub fn interface(name: &str) -> InterfaceLabels {
        InterfaceLabels {
            interface: name.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_the_issue_names_is_exposed() {
        let metrics = Metrics::default();
        metrics
            .peers
            .get_or_create(&Metrics::interface("wg0"))
            .set(3);
        let labels = ApplyLabels {
            interface: "wg0".into(),
            kind: ApplyKind::Incremental,
        };
        metrics.applies.get_or_create(&labels).inc();
        metrics.apply_duration.get_or_create(&labels).observe(0.002);
        metrics
            .apply_errors
            .get_or_create(&Metrics::interface("wg0"))
            .inc();
        metrics
            .drift_corrections
            .get_or_create(&Metrics::interface("wg0"))
            .inc();
        metrics
            .max_handshake_age
            .get_or_create(&Metrics::interface("wg0"))
            .set(12.0);
        let text = metrics.encode();
        for needle in [
            "wgsub_node_agent_peers{interface=\"wg0\"} 3",
            "wgsub_node_agent_applies_total{interface=\"wg0\",kind=\"Incremental\"} 1",
            "wgsub_node_agent_apply_errors_total{interface=\"wg0\"} 1",
            "wgsub_node_agent_apply_duration_seconds_count{interface=\"wg0\",kind=\"Incremental\"} 1",
            "wgsub_node_agent_drift_corrections_total{interface=\"wg0\"} 1",
            "wgsub_node_agent_max_handshake_age_seconds{interface=\"wg0\"} 12.0",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }

    #[test]
    fn build_info_names_version_commit_and_compiler() {
        use wgsub_crds::build_info::{GIT_COMMIT, RUSTC, VERSION};
        let text = Metrics::default().encode();
        let expected = format!(
            "wgsub_node_agent_build_info{{version=\"{VERSION}\",git_commit=\"{GIT_COMMIT}\",rustc=\"{RUSTC}\"}} 1"
        );
        assert!(text.contains(&expected), "{expected} missing from\n{text}");
    }
}
