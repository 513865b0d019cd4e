//! The custom resources of group `wgsub.io`, version `v1alpha1`, and the validation the API
//! server enforces on them (schema patterns, ranges and CEL rules), plus the names, labels and
//! condition vocabulary the binaries share.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

pub(crate) mod amneziawg;
mod common;
mod location;
mod peer;
mod server;
mod subscription;

pub use amneziawg::{AmneziaVersion, AmneziaWgSpec, Protocol};
pub use common::{
    CONDITION_DEVICES_OVER_LIMIT, CONDITION_QUOTA_EXHAUSTED, CONDITION_READY, LABEL_OVER_LIMIT,
    LABEL_OVER_QUOTA, LABEL_PEER, LABEL_SERVER, LABEL_SUBSCRIPTION, REASON_QUOTA_EXHAUSTED,
    SecretKeyRef, condition, is_dns_label, new_condition, set_condition,
};
pub use location::{DisplayName, LocationSpec, assigned_countries};
pub use peer::{WgPeer, WgPeerSpec, WgPeerStatus, is_over_limit, is_over_quota, peer_name};
pub use server::{NatSpec, WgServer, WgServerSpec, WgServerStatus};
pub use subscription::{
    DeviceUsage, MAX_TELEGRAM_USER_ID, SubscriptionPhase, TrafficQuota, TrafficUsage,
    VpnSubscription, VpnSubscriptionSpec, VpnSubscriptionStatus, subscription_name,
    telegram_user_id_from_name,
};

/// The API group of every wgsub resource.
pub const GROUP: &str = "wgsub.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// The CRDs, one per kind, as the API server gets them. Use these rather than the derived
/// `CustomResourceExt::crd()`: VpnSubscription's adds the schema of its name.
pub fn crds() -> Vec<CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![WgServer::crd(), subscription::crd(), WgPeer::crd()]
}

/// The CRDs as `(file name, YAML)` pairs, one per kind, named by plural as committed under
/// `crds/`.
pub fn crd_documents() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.spec.names.plural);
            serde_yaml::to_string(&crd).map(|yaml| (file, yaml))
        })
        .collect()
}
