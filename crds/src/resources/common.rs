//! Pieces shared by the three resources: secret references, condition lists, labels and the
//! string patterns the API server checks.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::json_schema;
use serde::{Deserialize, Serialize};

/// Label on a `WgPeer` naming the `VpnSubscription` it belongs to.
pub const LABEL_SUBSCRIPTION: &str = "wgsub.io/subscription";
/// Label on a `WgPeer` naming the `WgServer` it is a peer of.
pub const LABEL_SERVER: &str = "wgsub.io/server";
/// Label on a key `Secret` naming the `WgPeer` whose key it holds.
pub const LABEL_PEER: &str = "wgsub.io/peer";
/// Label the operator puts (value `"true"`) on a `WgPeer` its subscription's `maxDevices` has
/// no room for: the peer stays off the interface, keeping its key and address, until the limit
/// rises. The operator's own switch beside the user's `spec.enabled`, which it never touches.
pub const LABEL_OVER_LIMIT: &str = "wgsub.io/over-limit";
/// Label the operator puts (value `"true"`) on every `WgPeer` of a subscription that used up
/// its data quota for the period: the peers stay off the interface until the next period or a
/// purchase. Like [`LABEL_OVER_LIMIT`], it leaves the user's `spec.enabled` alone.
pub const LABEL_OVER_QUOTA: &str = "wgsub.io/over-quota";

/// The condition type every wgsub status carries.
pub const CONDITION_READY: &str = "Ready";
/// The condition type on a `VpnSubscription` telling whether some of its devices are kept off
/// because they exceed `maxDevices` (their names are in `status.devicesOverLimit`).
pub const CONDITION_DEVICES_OVER_LIMIT: &str = "DevicesOverLimit";
/// The condition type on a `VpnSubscription` that is `"True"` (reason [`REASON_QUOTA_EXHAUSTED`])
/// while the period's received plus sent bytes reach `spec.trafficQuota.bytes`.
pub const CONDITION_QUOTA_EXHAUSTED: &str = "QuotaExhausted";
/// The reason of a true `QuotaExhausted` condition.
pub const REASON_QUOTA_EXHAUSTED: &str = "QuotaExhausted";

/// Regex of a Kubernetes object name (DNS-1123 subdomain, at most 253 characters).
pub(crate) const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Whether `text` is a DNS-1123 label (lower-case alphanumerics and '-', not at either end, at
/// most 63 characters): the names of namespaces, Leases and wgsub's servers given as settings.
pub fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// Regex of a key inside a `Secret`'s data.
pub(crate) const SECRET_DATA_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// A reference to one key of a `Secret` in the resource's own namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
    /// Key inside the Secret's data.
    #[serde(default = "default_private_key_field")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_DATA_KEY_PATTERN))]
    pub key: String,
}

impl SecretKeyRef {
    /// A reference to `key` in the Secret `name`.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            key: key.into(),
        }
    }
}

pub(crate) fn default_private_key_field() -> String {
    "privateKey".to_owned()
}

/// Schema of a `conditions` list: meta/v1 `Condition`s merged by `type` under server-side apply.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "type": "array",
        "description": "Standard conditions (meta/v1 Condition), one per type.",
        "items": item,
        "maxItems": 16,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

/// The condition of `conditions` with the given type, if present.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Sets a condition, keeping its `lastTransitionTime` when the status does not change (as
/// `meta.SetStatusCondition` does in Go). Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let transition = if existing.status == new.status {
                existing.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            let updated = Condition {
                last_transition_time: transition,
                ..new
            };
            if *existing == updated {
                false
            } else {
                *existing = updated;
                true
            }
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Builds a condition with the given fields at `now`.
pub fn new_condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_lower_case_alphanumerics_and_inner_dashes_up_to_63() {
        for good in ["a", "wgsub", "vpn-1", "0", &"a".repeat(63)] {
            assert!(is_dns_label(good), "{good:?}");
        }
        for bad in ["", "-a", "a-", "UPPER", "a.b", "a_b", "ä", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
    }

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut conditions = vec![new_condition("Ready", true, "Ready", "ok", Some(1), at(10))];
        let changed = set_condition(
            &mut conditions,
            new_condition("Ready", true, "Ready", "still ok", Some(2), at(20)),
        );
        assert!(changed);
        assert_eq!(conditions[0].last_transition_time, Time(at(10)));
        assert_eq!(conditions[0].message, "still ok");
    }

    #[test]
    fn set_condition_moves_transition_time_when_status_flips() {
        let mut conditions = vec![new_condition("Ready", true, "Ready", "ok", Some(1), at(10))];
        set_condition(
            &mut conditions,
            new_condition("Ready", false, "PoolExhausted", "full", Some(1), at(20)),
        );
        assert_eq!(conditions[0].last_transition_time, Time(at(20)));
        assert_eq!(conditions[0].status, "False");
    }

    #[test]
    fn set_condition_reports_no_change_for_identical_condition() {
        let mut conditions = vec![new_condition("Ready", true, "Ready", "ok", Some(1), at(10))];
        let changed = set_condition(
            &mut conditions,
            new_condition("Ready", true, "Ready", "ok", Some(1), at(99)),
        );
        assert!(!changed);
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn set_condition_appends_a_new_type() {
        let mut conditions = vec![];
        assert!(set_condition(
            &mut conditions,
            new_condition("Ready", true, "Ready", "ok", None, at(1))
        ));
        assert!(condition(&conditions, "Ready").is_some());
        assert!(condition(&conditions, "Other").is_none());
    }
}
