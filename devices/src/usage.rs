//! A subscription's traffic as the user sees it, read from what the operator wrote
//! (`VpnSubscription.spec.trafficQuota`, `status.usage`, the `QuotaExhausted` condition): the
//! period's use against the quota, what remains, when the period ends, the totals, and each
//! device's share (by `WgPeer` name). The api and the bot both show it; the Mini App and the
//! bot's texts (`text::bytes`) format the byte counts. Pure: no I/O.
//!
//! `rx` is what the server received from a device (the user's upload), `tx` what it sent to it
//! (the download).

use jiff::Timestamp;
use wgsub_crds::VpnSubscription;
use wgsub_crds::resources::{CONDITION_QUOTA_EXHAUSTED, condition};

/// The subscription's traffic this period and in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes (received plus sent) allowed per period; `None`: no quota.
    pub quota_bytes: Option<i64>,
    /// Bytes received from the devices this period.
    pub period_rx_bytes: i64,
    /// Bytes sent to the devices this period.
    pub period_tx_bytes: i64,
    /// When the period started (`None` until the operator first counted).
    pub period_start: Option<Timestamp>,
    /// When the period ends and counting restarts (`None` without a quota).
    pub period_end: Option<Timestamp>,
    /// Bytes received from the devices ever.
    pub total_rx_bytes: i64,
    /// Bytes sent to the devices ever.
    pub total_tx_bytes: i64,
    /// The quota is used up: the devices are paused until the period ends or a purchase.
    pub exhausted: bool,
}

impl Usage {
    /// The usage the subscription's spec and status tell.
    pub fn of(subscription: &VpnSubscription) -> Self {
        let status = subscription.status.as_ref();
        let usage = status.and_then(|status| status.usage.as_ref());
        let exhausted = status
            .and_then(|status| condition(&status.conditions, CONDITION_QUOTA_EXHAUSTED))
            .is_some_and(|condition| condition.status == "True");
        Self {
            quota_bytes: subscription.spec.traffic_quota.map(|quota| quota.bytes),
            period_rx_bytes: usage.map_or(0, |u| u.period_rx_bytes),
            period_tx_bytes: usage.map_or(0, |u| u.period_tx_bytes),
            period_start: usage.map(|u| u.period_start),
            period_end: usage.and_then(|u| u.period_end),
            total_rx_bytes: usage.map_or(0, |u| u.total_rx_bytes),
            total_tx_bytes: usage.map_or(0, |u| u.total_tx_bytes),
            exhausted,
        }
    }

    /// Bytes received plus sent this period: what the quota is measured against.
    pub fn period_bytes(&self) -> i64 {
        self.period_rx_bytes.saturating_add(self.period_tx_bytes)
    }

    /// Bytes received plus sent ever.
    pub fn total_bytes(&self) -> i64 {
        self.total_rx_bytes.saturating_add(self.total_tx_bytes)
    }

    /// What is left of the quota this period (never below zero); `None` without a quota.
    pub fn remaining_bytes(&self) -> Option<i64> {
        self.quota_bytes
            .map(|quota| quota.saturating_sub(self.period_bytes()).max(0))
    }

    /// The share of the quota used this period, 0 to 100 (`None` without a quota).
    pub fn percent_used(&self) -> Option<u8> {
        let quota = self.quota_bytes.filter(|quota| *quota > 0)?;
        let used = i128::from(self.period_bytes().max(0));
        let percent = (used * 100 / i128::from(quota)).min(100);
        u8::try_from(percent).ok()
    }
}

/// One device's traffic, this period and in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceTraffic {
    pub period_rx_bytes: i64,
    pub period_tx_bytes: i64,
    pub total_rx_bytes: i64,
    pub total_tx_bytes: i64,
}

impl DeviceTraffic {
    /// The traffic of the device whose `WgPeer` is `peer`, as its subscription's usage counts
    /// it (zero when the operator has not counted it yet, or there is no subscription).
    pub fn of(subscription: Option<&VpnSubscription>, peer: &str) -> Self {
        subscription
            .and_then(|subscription| subscription.status.as_ref())
            .and_then(|status| status.usage.as_ref())
            .and_then(|usage| usage.device(peer))
            .map(|device| Self {
                period_rx_bytes: device.period_rx_bytes,
                period_tx_bytes: device.period_tx_bytes,
                total_rx_bytes: device.total_rx_bytes,
                total_tx_bytes: device.total_tx_bytes,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use wgsub_crds::resources::{
        DeviceUsage, TrafficQuota, TrafficUsage, VpnSubscriptionSpec, VpnSubscriptionStatus,
    };

    const MIB: i64 = 1 << 20;
    const GIB: i64 = 1 << 30;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn subscription(
        quota: Option<i64>,
        usage: Option<TrafficUsage>,
        exhausted: Option<&str>,
    ) -> VpnSubscription {
        let mut subscription = VpnSubscription::new(
            "tg-7",
            VpnSubscriptionSpec {
                traffic_quota: quota.map(|bytes| TrafficQuota {
                    bytes,
                    period_days: 30,
                }),
                ..VpnSubscriptionSpec::for_user(7)
            },
        );
        subscription.status = Some(VpnSubscriptionStatus {
            usage,
            conditions: exhausted
                .map(|status| Condition {
                    type_: CONDITION_QUOTA_EXHAUSTED.into(),
                    status: status.into(),
                    reason: "QuotaExhausted".into(),
                    message: String::new(),
                    last_transition_time: Time(t("2026-12-01T00:00:00Z")),
                    observed_generation: None,
                })
                .into_iter()
                .collect(),
            ..VpnSubscriptionStatus::default()
        });
        subscription
    }

    fn usage() -> TrafficUsage {
        TrafficUsage {
            period_start: t("2026-12-01T00:00:00Z"),
            period_end: Some(t("2026-12-31T00:00:00Z")),
            period_rx_bytes: 300 * MIB,
            period_tx_bytes: 700 * MIB,
            total_rx_bytes: 2 * GIB,
            total_tx_bytes: 5 * GIB,
            devices: vec![DeviceUsage {
                peer: "tg-7-1".into(),
                last_rx_bytes: 10,
                last_tx_bytes: 20,
                period_rx_bytes: 100,
                period_tx_bytes: 200,
                total_rx_bytes: 1000,
                total_tx_bytes: 2000,
            }],
            ..TrafficUsage::default()
        }
    }

    #[test]
    fn usage_against_a_quota_tells_used_remaining_and_the_period_end() {
        let got = Usage::of(&subscription(Some(GIB), Some(usage()), Some("False")));
        assert_eq!(got.quota_bytes, Some(GIB));
        assert_eq!(got.period_bytes(), 1000 * MIB);
        assert_eq!(got.remaining_bytes(), Some(24 * MIB));
        assert_eq!(got.percent_used(), Some(97));
        assert_eq!(got.period_start, Some(t("2026-12-01T00:00:00Z")));
        assert_eq!(got.period_end, Some(t("2026-12-31T00:00:00Z")));
        assert_eq!(got.total_bytes(), 7 * GIB);
        assert!(!got.exhausted, "the condition is False");
    }

    #[test]
    fn the_exhausted_condition_decides_and_remaining_never_goes_below_zero() {
        let mut over = usage();
        over.period_tx_bytes = 2 * GIB;
        let got = Usage::of(&subscription(Some(GIB), Some(over), Some("True")));
        assert!(got.exhausted);
        assert_eq!(got.remaining_bytes(), Some(0));
        assert_eq!(got.percent_used(), Some(100));
        // Without the condition nothing is paused, whatever the numbers say.
        let mut over = usage();
        over.period_tx_bytes = 2 * GIB;
        assert!(!Usage::of(&subscription(Some(GIB), Some(over), None)).exhausted);
    }

    #[test]
    fn without_a_quota_only_the_counts_are_told() {
        let got = Usage::of(&subscription(None, Some(usage()), None));
        assert_eq!(
            (got.quota_bytes, got.remaining_bytes(), got.percent_used()),
            (None, None, None)
        );
        assert_eq!(got.total_bytes(), 7 * GIB);
        let nothing_counted = Usage::of(&subscription(Some(GIB), None, None));
        assert_eq!(nothing_counted.period_bytes(), 0);
        assert_eq!(nothing_counted.remaining_bytes(), Some(GIB));
        assert_eq!(nothing_counted.period_start, None);
    }

    #[test]
    fn a_device_gets_its_own_counts_and_zero_until_counted() {
        let sub = subscription(Some(GIB), Some(usage()), None);
        assert_eq!(
            DeviceTraffic::of(Some(&sub), "tg-7-1"),
            DeviceTraffic {
                period_rx_bytes: 100,
                period_tx_bytes: 200,
                total_rx_bytes: 1000,
                total_tx_bytes: 2000,
            }
        );
        assert_eq!(
            DeviceTraffic::of(Some(&sub), "tg-7-2"),
            DeviceTraffic::default()
        );
        assert_eq!(DeviceTraffic::of(None, "tg-7-1"), DeviceTraffic::default());
    }
}
