//! The bot's Prometheus metrics: updates handled by kind, handler errors, answers to users who
//! cannot be reached (blocked the bot: not an error of the bot, counted apart), notifications
//! sent and failed (by kind), automatic renewal charges by outcome, and in polling mode whether this replica holds the Lease (and how
//! often it took it), served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use wgsub_ledger::RenewalReport;
use wgsub_runtime::lease::LeaderMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabels {
    pub handler: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// payment_succeeded, refund_recorded, reminder_three_days, …, broadcast.
    pub kind: String,
    /// sent or failed.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenewalLabels {
    /// attempted (sent to YooKassa), succeeded, failed, refused, unknown, given_up.
    pub outcome: String,
}

/// The renewal counters a run adds to, by outcome label.
pub fn renewal_counts(report: &RenewalReport) -> [(&'static str, u32); 6] {
    [
        ("attempted", report.attempted),
        ("succeeded", report.succeeded),
        ("failed", report.failed),
        ("refused", report.refused),
        ("unknown", report.unknown),
        ("given_up", report.given_up),
    ]
}

/// The counters, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    updates: Family<KindLabels, Counter>,
    handler_errors: Family<HandlerLabels, Counter>,
    unreachable_users: Family<HandlerLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    renewal_charges: Family<RenewalLabels, Counter>,
    leader: LeaderMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = wgsub_runtime::metrics::registry("wgsub_bot");
        let updates = Family::<KindLabels, Counter>::default();
        registry.register(
            "updates_handled",
            "Telegram updates handled, by kind (command name, callback, text)",
            updates.clone(),
        );
        let handler_errors = Family::<HandlerLabels, Counter>::default();
        registry.register(
            "handler_errors",
            "Handlers that failed, by handler",
            handler_errors.clone(),
        );
        let unreachable_users = Family::<HandlerLabels, Counter>::default();
        registry.register(
            "unreachable_users",
            "Answers Telegram would not deliver because the user blocked the bot or is gone, by handler",
            unreachable_users.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications the bot tried to send, by kind and result (sent, failed)",
            notifications.clone(),
        );
        let renewal_charges = Family::<RenewalLabels, Counter>::default();
        registry.register(
            "renewal_charges",
            "Automatic renewal charges by outcome: attempted (sent to YooKassa), succeeded, \
             failed, refused (before YooKassa), unknown (never answered), given_up (never \
             answered and not asked again)",
            renewal_charges.clone(),
        );
        let leader = LeaderMetrics::register(&mut registry);
        Self {
            registry,
            updates,
            handler_errors,
            unreachable_users,
            notifications,
            renewal_charges,
            leader,
        }
    }

    pub fn update(&self, kind: &str) {
        self.updates
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn handler_error(&self, handler: &str) {
        self.handler_errors
            .get_or_create(&HandlerLabels {
                handler: handler.into(),
            })
            .inc();
    }

    pub fn unreachable_user(&self, handler: &str) {
        self.unreachable_users
            .get_or_create(&HandlerLabels {
                handler: handler.into(),
            })
            .inc();
    }

    pub fn notification(&self, kind: &str, sent: bool) {
        self.notifications(kind, sent, 1);
    }

    pub fn notifications(&self, kind: &str, sent: bool, count: u64) {
        self.notifications
            .get_or_create(&NotificationLabels {
                kind: kind.into(),
                result: if sent { "sent" } else { "failed" }.into(),
            })
            .inc_by(count);
    }

    /// Adds what a renewal run did.
    pub fn renewals(&self, report: &RenewalReport) {
        for (outcome, count) in renewal_counts(report) {
            self.renewal_charges
                .get_or_create(&RenewalLabels {
                    outcome: outcome.into(),
                })
                .inc_by(u64::from(count));
        }
    }

    /// Whether this replica polls as the Lease's holder, and how often it started to.
    pub fn leader(&self) -> &LeaderMetrics {
        &self.leader
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        wgsub_runtime::metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_appear_with_their_labels() {
        let metrics = Metrics::new();
        metrics.update("start");
        metrics.update("start");
        metrics.handler_error("buy");
        metrics.unreachable_user("status");
        metrics.notification("payment_succeeded", true);
        metrics.notification("broadcast", false);
        metrics.leader().set_leader(true);
        let text = metrics.encode();
        assert!(
            text.contains(r#"wgsub_bot_updates_handled_total{kind="start"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"wgsub_bot_handler_errors_total{handler="buy"} 1"#));
        assert!(text.contains(r#"wgsub_bot_unreachable_users_total{handler="status"} 1"#));
        assert!(text.contains(
            r#"wgsub_bot_notifications_total{kind="payment_succeeded",result="sent"} 1"#
        ));
        assert!(
            text.contains(r#"wgsub_bot_notifications_total{kind="broadcast",result="failed"} 1"#)
        );
        assert!(text.contains("wgsub_bot_leader 1\n"), "{text}");
        assert!(
            text.contains("wgsub_bot_leader_transitions_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn renewal_runs_add_up_by_outcome() {
        let metrics = Metrics::new();
        let run = RenewalReport {
            attempted: 3,
            succeeded: 1,
            failed: 1,
            pending: 1,
            given_up: 1,
            ..RenewalReport::default()
        };
        metrics.renewals(&run);
        metrics.renewals(&run);
        metrics.renewals(&RenewalReport::default());
        let text = metrics.encode();
        for (outcome, total) in [
            ("attempted", 6),
            ("succeeded", 2),
            ("failed", 2),
            ("refused", 0),
            ("unknown", 0),
            ("given_up", 2),
        ] {
            let line =
                format!("wgsub_bot_renewal_charges_total{{outcome=\"{outcome}\"}} {total}\n");
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn build_info_names_version_commit_and_compiler() {
        use wgsub_crds::build_info::{GIT_COMMIT, RUSTC, VERSION};
        let text = Metrics::new().encode();
        let expected = format!(
            "wgsub_bot_build_info{{version=\"{VERSION}\",git_commit=\"{GIT_COMMIT}\",rustc=\"{RUSTC}\"}} 1"
        );
        assert!(text.contains(&expected), "{expected} missing from\n{text}");
    }
}
