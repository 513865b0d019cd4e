//! `VpnSubscription`: one Telegram user's entitlement — how long they have paid for, how many
//! devices they may connect and which server they use.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{OBJECT_NAME_PATTERN, conditions_schema};

/// Prefix of every subscription's name: `tg-<telegramUserId>`.
const NAME_PREFIX: &str = "tg-";
/// Regex of a subscription's name: the prefix and a positive id without leading zeros, at most
/// 18 digits, so that every name's digits read as an i64 (Telegram's ids have at most 52 bits,
/// 16 digits).
const NAME_PATTERN: &str = "^tg-[1-9][0-9]{0,17}$";
/// The longest subscription name: the prefix and 18 digits.
const NAME_MAX_LENGTH: i64 = 21;

/// The largest Telegram user id a subscription name can hold: 18 digits (the name pattern, `^tg-[1-9][0-9]{0,17}$`).
pub const MAX_TELEGRAM_USER_ID: i64 = 999_999_999_999_999_999;

/// The name of the subscription of a Telegram user.
pub fn subscription_name(telegram_user_id: i64) -> String {
    format!("{NAME_PREFIX}{telegram_user_id}")
}

/// The Telegram user id encoded in a subscription name, if it is one.
pub fn telegram_user_id_from_name(name: &str) -> Option<i64> {
    let digits = name.strip_prefix(NAME_PREFIX)?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|id| (1..=MAX_TELEGRAM_USER_ID).contains(id))
}

/// The VpnSubscription CRD: the derived one, and a schema for `metadata.name` (`tg-` and the
/// user id), which the derive cannot express. The API server refuses a bad name with a message
/// naming `metadata.name`, and the name's `maxLength` keeps the name rule's estimated cost
/// small: the server's cost estimator takes the sizes of `metadata.name` from the schema only
/// when the schema declares `kind`, `apiVersion`, `metadata.name` and `metadata.generateName`
/// (otherwise it prices a name as the largest request, three megabytes).
pub(crate) fn crd() -> CustomResourceDefinition {
    let string = |description: &str| JSONSchemaProps {
        type_: Some("string".into()),
        description: Some(description.into()),
        ..Default::default()
    };
    let name = JSONSchemaProps {
        pattern: Some(NAME_PATTERN.into()),
        max_length: Some(NAME_MAX_LENGTH),
        ..string("tg-<spec.telegramUserId>: one subscription per Telegram user.")
    };
    let metadata = JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(
            [
                ("name".to_owned(), name),
                (
                    "generateName".to_owned(),
                    string("Unused: a subscription's name is given, not generated."),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let mut crd = VpnSubscription::crd();
    for version in &mut crd.spec.versions {
        if let Some(root) = version
            .schema
            .as_mut()
            .and_then(|schema| schema.open_api_v3_schema.as_mut())
        {
            let properties = root.properties.get_or_insert_default();
            properties.insert("apiVersion".to_owned(), string("wgsub.io/v1alpha1"));
            properties.insert("kind".to_owned(), string("VpnSubscription"));
            properties.insert("metadata".to_owned(), metadata.clone());
        }
    }
    crd
}

/// Desired state of a user's subscription.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "wgsub.io",
    version = "v1alpha1",
    kind = "VpnSubscription",
    doc = "One Telegram user's VPN subscription: paid period, devices and server.",
    plural = "vpnsubscriptions",
    namespaced,
    status = "VpnSubscriptionStatus",
    shortname = "vsub",
    category = "wgsub",
    derive = "PartialEq",
    printcolumn(name = "User", type_ = "integer", json_path = ".spec.telegramUserId"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Paid Until", type_ = "date", json_path = ".spec.paidUntil"),
    printcolumn(name = "Devices", type_ = "integer", json_path = ".spec.maxDevices"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // The name's shape is checked by the schema of `metadata.name` (see `crd`), so this only
    // reads the digits; it parses the name rather than printing the id because the API server's
    // cost estimator gives `string(int)` no size bound and refuses the CRD, while the name's
    // `maxLength` bounds the parse.
    validation = Rule::new("int(self.metadata.name.substring(3)) == self.spec.telegramUserId")
        .message("the name of a VpnSubscription must be tg-<spec.telegramUserId>")
        .field_path(".spec.telegramUserId"),
)]
#[serde(rename_all = "camelCase")]
pub struct VpnSubscriptionSpec {
    /// The Telegram user this subscription belongs to; cannot change.
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("telegramUserId is immutable"))]
    pub telegram_user_id: i64,

    /// End of the paid period (RFC 3339); absent when the user never paid. Derived from the
    /// payment ledger, so rewriting it is always safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_until: Option<jiff::Timestamp>,

    /// The plan of the latest payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub plan: Option<String>,

    /// How many devices (peers) the user may have.
    #[serde(default = "default_max_devices")]
    #[schemars(range(min = 1, max = 10))]
    pub max_devices: i32,

    /// An administrator's switch: a suspended subscription has no live peers.
    #[serde(default)]
    pub suspended: bool,

    /// The `WgServer` to use; absent means the operator's default server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub server: Option<String>,

    /// The data quota of the plan (traffic per period); absent means unlimited. Written from
    /// the ledger beside `maxDevices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_quota: Option<TrafficQuota>,
}

/// How much traffic a subscription may use per period: received plus sent bytes of all its
/// devices together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficQuota {
    /// Bytes (received plus sent) allowed per period.
    #[schemars(range(min = 1))]
    pub bytes: i64,
    /// Length of one period in days; a new period starts when one ends and on each purchase.
    #[schemars(range(min = 1, max = 3660))]
    pub period_days: i32,
}

impl TrafficQuota {
    /// The length of one period.
    pub fn period(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(24 * i64::from(self.period_days))
    }
}

impl VpnSubscriptionSpec {
    /// A fresh, never-paid subscription for a user.
    pub fn for_user(telegram_user_id: i64) -> Self {
        Self {
            telegram_user_id,
            paid_until: None,
            plan: None,
            max_devices: default_max_devices(),
            suspended: false,
            server: None,
            traffic_quota: None,
        }
    }
}

fn default_max_devices() -> i32 {
    1
}

/// Where a subscription stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SubscriptionPhase {
    /// Never paid.
    #[default]
    Pending,
    /// Paid, not suspended: its peers are live.
    Active,
    /// The paid period is over.
    Expired,
    /// Suspended by an administrator.
    Suspended,
}

impl SubscriptionPhase {
    /// Every phase, for metrics that report each one.
    pub const ALL: [SubscriptionPhase; 4] = [
        SubscriptionPhase::Pending,
        SubscriptionPhase::Active,
        SubscriptionPhase::Expired,
        SubscriptionPhase::Suspended,
    ];

    /// The phase's name as it appears in the resource.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionPhase::Pending => "Pending",
            SubscriptionPhase::Active => "Active",
            SubscriptionPhase::Expired => "Expired",
            SubscriptionPhase::Suspended => "Suspended",
        }
    }
}

/// Observed state of a subscription, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpnSubscriptionStatus {
    /// Pending, Active, Expired or Suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SubscriptionPhase>,
    /// When the peers stop being live (mirrors `spec.paidUntil`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
    /// Names of the subscription's `WgPeer`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(max = 253)))]
    pub peers: Vec<String>,
    /// Names of the peers kept off the interface because they exceed `spec.maxDevices` (they
    /// carry the `wgsub.io/over-limit` label; see the `DevicesOverLimit` condition). They keep
    /// their keys and addresses and come back when the limit rises or another device is
    /// switched off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(max = 253)))]
    pub devices_over_limit: Vec<String>,
    /// Traffic the subscription's devices used, this period and in total; written by the
    /// operator from the peers' counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TrafficUsage>,
    /// Standard conditions: `Ready` with reasons such as `ServerNotFound`, `PoolExhausted`,
    /// `InvalidServer`; `KeyRegenerated`; `DevicesOverLimit`; `QuotaExhausted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Traffic of a subscription's devices, folded by the operator from the node-agent's per-peer
/// counters (`WgPeer.status.rxBytes/txBytes`, which restart at zero when a peer is re-added).
/// `rx` is what the server received from the devices (the user's upload), `tx` what it sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficUsage {
    /// When the current period started.
    pub period_start: jiff::Timestamp,
    /// When the current period ends and counting restarts; absent without a quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_end: Option<jiff::Timestamp>,
    /// `spec.paidUntil` when the period started: a later `paidUntil` is a purchase, which
    /// starts a new period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_until_at_start: Option<jiff::Timestamp>,
    /// When the operator last wrote this usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<jiff::Timestamp>,
    /// Bytes received from all devices in this period.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub period_rx_bytes: i64,
    /// Bytes sent to all devices in this period.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub period_tx_bytes: i64,
    /// Bytes received from all devices ever, including removed ones.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub total_rx_bytes: i64,
    /// Bytes sent to all devices ever, including removed ones.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub total_tx_bytes: i64,
    /// One entry per current device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub devices: Vec<DeviceUsage>,
}

impl TrafficUsage {
    /// Bytes received plus sent in this period: what the quota is measured against.
    pub fn period_bytes(&self) -> i64 {
        self.period_rx_bytes.saturating_add(self.period_tx_bytes)
    }

    /// Bytes received plus sent ever.
    pub fn total_bytes(&self) -> i64 {
        self.total_rx_bytes.saturating_add(self.total_tx_bytes)
    }

    /// The usage of one device (by `WgPeer` name).
    pub fn device(&self, peer: &str) -> Option<&DeviceUsage> {
        self.devices.iter().find(|device| device.peer == peer)
    }
}

/// Traffic of one device (`WgPeer`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceUsage {
    /// The `WgPeer`'s name.
    #[schemars(length(min = 1, max = 253))]
    pub peer: String,
    /// The peer's `status.rxBytes` at the last fold (to tell the next delta, or a restart).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub last_rx_bytes: i64,
    /// The peer's `status.txBytes` at the last fold.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub last_tx_bytes: i64,
    /// Bytes received from the device in this period.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub period_rx_bytes: i64,
    /// Bytes sent to the device in this period.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub period_tx_bytes: i64,
    /// Bytes received from the device ever.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub total_rx_bytes: i64,
    /// Bytes sent to the device ever.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub total_tx_bytes: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_name_round_trips_the_user_id() {
        assert_eq!(subscription_name(42), "tg-42");
        assert_eq!(telegram_user_id_from_name("tg-42"), Some(42));
    }

    #[test]
    fn names_that_are_not_subscription_names_give_no_user() {
        for name in [
            "tg-",
            "tg-0",
            "tg-007",
            "tg--1",
            "tg-1a",
            "xx-1",
            "tg-99999999999999999999",
        ] {
            assert_eq!(telegram_user_id_from_name(name), None, "{name}");
        }
    }
}
