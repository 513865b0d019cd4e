//! Prometheus metrics: requests by route and status, request latency by route, payments by
//! outcome, webhook deliveries by outcome and rejections by reason, and drift-sync results.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

/// Every metric the API exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Payments created (`created`, `provider_error`, `contact_required`) and applied
    /// (`succeeded`, `canceled`, `refunded`).
    pub payments: Family<StatusLabels, Counter>,
    /// Webhook deliveries by outcome (`applied`, `duplicate`, `recorded`, `ignored`, `rejected`).
    pub webhooks: Family<StatusLabels, Counter>,
    pub webhook_rejections: Family<ReasonLabels, Counter>,
    /// VpnSubscription writes by result (`ok`, `failed`).
    pub subscription_syncs: Family<StatusLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wgsub_api");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        let payments = Family::<StatusLabels, Counter>::default();
        registry.register("payments", "Payments by status", payments.clone());
        let webhooks = Family::<StatusLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "YooKassa webhook deliveries by outcome",
            webhooks.clone(),
        );
        let webhook_rejections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "webhook_rejections",
            "Rejected YooKassa webhook deliveries by reason",
            webhook_rejections.clone(),
        );
        let subscription_syncs = Family::<StatusLabels, Counter>::default();
        registry.register(
            "subscription_syncs",
            "Ledger to VpnSubscription writes by result",
            subscription_syncs.clone(),
        );
        let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        build_info
            .get_or_create(&wgsub_crds::build_info::LABELS.to_vec())
            .set(1);
        registry.register(
            "build_info",
            "What this binary was built from (version, git commit, rustc); always 1",
            build_info,
        );
        Self {
            registry,
            requests,
            latency,
            payments,
            webhooks,
            webhook_rejections,
            subscription_syncs,
        }
    }

    pub fn payment(&self, status: &str) {
        self.payments
            .get_or_create(&StatusLabels {
                status: status.to_owned(),
            })
            .inc();
    }

    pub fn sync(&self, ok: bool) {
        let status = if ok { "ok" } else { "failed" };
        self.subscription_syncs
            .get_or_create(&StatusLabels {
                status: status.to_owned(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_version_commit_and_compiler() {
        use wgsub_crds::build_info::{GIT_COMMIT, RUSTC, VERSION};
        let text = Metrics::new().encode();
        let expected = format!(
            "wgsub_api_build_info{{version=\"{VERSION}\",git_commit=\"{GIT_COMMIT}\",rustc=\"{RUSTC}\"}} 1"
        );
        assert!(text.contains(&expected), "{expected} missing from\n{text}");
    }
}
