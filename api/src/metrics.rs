//! Prometheus metrics: requests by route and status, request latency by route, payments by
//! outcome, webhook deliveries by outcome and rejections by reason, drift-sync results, and the
//! business gauges read from the ledger (users by state; new users, first payments, renewals and
//! revenue of the last 24 hours; the latest payment).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use wgsub_ledger::Stats;
use wgsub_ledger::stats::Activity;

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CurrencyLabels {
    pub currency: String,
}

/// Gauges of the ledger's numbers, refreshed by the drift loop (every replica reports the same
/// values: aggregate them with `max`).
#[derive(Debug, Default)]
pub struct LedgerGauges {
    users: Family<StateLabels, Gauge>,
    new_users: Gauge,
    payments: Family<KindLabels, Gauge>,
    revenue: Family<CurrencyLabels, Gauge>,
    /// Currencies revenue was ever reported in, so a quiet day reads 0 rather than nothing.
    currencies: std::sync::Mutex<std::collections::BTreeSet<String>>,
    last_payment: Gauge,
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
    pub ledger: LedgerGauges,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = wgsub_runtime::metrics::registry("wgsub_api");
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
        let ledger = LedgerGauges::default();
        registry.register(
            "ledger_users",
            "Users in the ledger by state (active, expired, never_paid, suspended)",
            ledger.users.clone(),
        );
        registry.register(
            "ledger_new_users_24h",
            "Users created in the last 24 hours",
            ledger.new_users.clone(),
        );
        registry.register(
            "ledger_payments_24h",
            "Payments applied in the last 24 hours, by kind (first, renewal)",
            ledger.payments.clone(),
        );
        registry.register(
            "ledger_revenue_24h_minor",
            "Revenue of the last 24 hours net of refunds, in minor units, by currency",
            ledger.revenue.clone(),
        );
        registry.register(
            "ledger_last_payment_timestamp_seconds",
            "Unix time of the latest applied payment; 0 before the first",
            ledger.last_payment.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            payments,
            webhooks,
            webhook_rejections,
            subscription_syncs,
            ledger,
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

    /// Sets the business gauges from the ledger's numbers: `stats` now, `activity` of the last
    /// 24 hours. A currency once reported reads 0 in a window without revenue in it.
    pub fn set_ledger(&self, stats: &Stats, activity: &Activity) {
        let gauges = &self.ledger;
        for (state, count) in [
            ("active", stats.active),
            ("expired", stats.expired),
            ("never_paid", stats.never_paid),
            ("suspended", stats.suspended),
        ] {
            gauges
                .users
                .get_or_create(&StateLabels { state })
                .set(count);
        }
        gauges.new_users.set(activity.new_users);
        for (kind, count) in [
            ("first", activity.first_payments),
            ("renewal", activity.renewals),
        ] {
            gauges
                .payments
                .get_or_create(&KindLabels { kind })
                .set(count);
        }
        let mut currencies = gauges
            .currencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        currencies.extend(activity.revenue.iter().map(|r| r.currency.clone()));
        for currency in currencies.iter() {
            let amount = activity
                .revenue
                .iter()
                .find(|r| &r.currency == currency)
                .map_or(0, |r| r.amount_minor);
            gauges
                .revenue
                .get_or_create(&CurrencyLabels {
                    currency: currency.clone(),
                })
                .set(amount);
        }
        gauges
            .last_payment
            .set(activity.last_payment_at.map_or(0, |at| at.as_second()));
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        wgsub_runtime::metrics::encode(&self.registry)
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

    #[test]
    fn ledger_gauges_show_users_by_state_and_the_windows_activity() {
        use wgsub_ledger::Revenue;
        let metrics = Metrics::new();
        let stats = Stats {
            users: 10,
            active: 4,
            expired: 3,
            never_paid: 2,
            suspended: 1,
            revenue_today: vec![],
            revenue_30_days: vec![],
        };
        let at = jiff::Timestamp::from_second(1_796_000_000).unwrap();
        let busy = Activity {
            new_users: 5,
            first_payments: 2,
            renewals: 3,
            revenue: vec![Revenue {
                currency: "RUB".into(),
                amount_minor: 99_500,
            }],
            last_payment_at: Some(at),
        };
        metrics.set_ledger(&stats, &busy);
        let text = metrics.encode();
        for expected in [
            "wgsub_api_ledger_users{state=\"active\"} 4",
            "wgsub_api_ledger_users{state=\"expired\"} 3",
            "wgsub_api_ledger_users{state=\"never_paid\"} 2",
            "wgsub_api_ledger_users{state=\"suspended\"} 1",
            "wgsub_api_ledger_new_users_24h 5",
            "wgsub_api_ledger_payments_24h{kind=\"first\"} 2",
            "wgsub_api_ledger_payments_24h{kind=\"renewal\"} 3",
            "wgsub_api_ledger_revenue_24h_minor{currency=\"RUB\"} 99500",
            "wgsub_api_ledger_last_payment_timestamp_seconds 1796000000",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        let quiet = Activity {
            new_users: 0,
            first_payments: 0,
            renewals: 0,
            revenue: vec![],
            last_payment_at: Some(at),
        };
        metrics.set_ledger(&stats, &quiet);
        let text = metrics.encode();
        assert!(
            text.contains("wgsub_api_ledger_revenue_24h_minor{currency=\"RUB\"} 0"),
            "{text}"
        );
        assert!(text.contains("wgsub_api_ledger_payments_24h{kind=\"renewal\"} 0"));
    }
}
