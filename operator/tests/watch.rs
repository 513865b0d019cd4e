//! The operator's real leader work (`wgsub_operator::lead`: `controller::run` — its watches,
//! mappers and reconciles — and the key collection) against the real
//! API server (`wgsub_testkit::envtest`), a namespace per test, its client authenticated as the
//! chart's `wgsub-operator` ServiceAccount under the Roles the chart renders: subscriptions
//! arrive through the watch, a deleted peer and a changed server trigger reconciles, the initial
//! peer list is paged, the controller stops on shutdown; the API's `enabled` switch survives the
//! operator's applies (server-side apply ownership), a field edited by hand is taken back, the
//! status goes only through the status subresource; the garbage collector deletes a deleted
//! subscription's peers and the operator their key Secrets (in the peer keys namespace). Each test ends with none of the operator's calls
//! refused by the server's RBAC. The calls themselves are read from the server's audit log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::{CONDITION_READY, LABEL_PEER, LABEL_SUBSCRIPTION, condition};
use wgsub_crds::{SubscriptionPhase, VpnSubscription, WgPeer, WgPeerSpec, WgServer};
use wgsub_operator::controller::{Context, Settings};
use wgsub_operator::decision::{KEY_ID, LABEL_PEER_UID, reasons};
use wgsub_operator::metrics::Metrics;
use wgsub_operator::patches::FIELD_MANAGER;
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, peer_keys_namespace,
    service_account,
};
use wgsub_testkit::envtest::{AuditedRequest, ControlPlane};
use wgsub_testkit::fixtures;
use wgsub_testkit::process::eventually;

const WITHIN: Duration = Duration::from_secs(20);
/// The garbage collector notices a newly established CRD only at its next discovery (up to
/// ~40 s after the CRDs were installed), then collects.
const COLLECTED_WITHIN: Duration = Duration::from_secs(90);
/// Peers of another server, more than one page of the watcher's list (500).
const OTHER_PEERS: usize = 520;
/// The field manager of the API (`api/src/state.rs`).
const API_MANAGER: &str = "wgsub-api";

fn other_peer(i: usize) -> WgPeer {
    WgPeer::new(
        &format!("other-{i}"),
        WgPeerSpec {
            server: "other".into(),
            public_key: None,
            private_key_secret_ref: None,
            preshared_key_secret_ref: None,
            address: Some(format!("10.9.{}.{}/32", i / 250, i % 250 + 2)),
            address6: None,
            expires_at: None,
            enabled: true,
            device_name: None,
        },
    )
}

/// One test's namespace on the real server, with the chart's RBAC applied and the default
/// server `wg` in it.
struct Namespace {
    plane: &'static ControlPlane,
    name: String,
    admin: Client,
}

impl Namespace {
    async fn new(prefix: &str) -> Namespace {
        let plane = ControlPlane::with_crds();
        let name = plane.namespace(prefix).await;
        apply_chart_rbac(plane, &name, &[]).await;
        let namespace = Namespace {
            plane,
            name,
            admin: plane.admin_client(),
        };
        namespace
            .create(&fixtures::server("wg", "10.8.0.0/24"))
            .await;
        namespace
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.admin.clone(), &self.name)
    }

    async fn create<K>(&self, object: &K) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .create(&PostParams::default(), object)
            .await
            .unwrap_or_else(|e| panic!("creating {}: {e}", object.name_any()))
    }

    async fn get<K>(&self, name: &str) -> Option<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>().get_opt(name).await.expect("an admin read")
    }

    /// Every request the operator made so far, from the server's audit log.
    fn requests(&self) -> Vec<AuditedRequest> {
        self.plane
            .requests_of(&self.name, &service_account("operator"))
    }

    /// Waits until the operator has made no request for 500 ms (its reconciles are done);
    /// returns how many it made.
    async fn settled(&self) -> usize {
        let mut seen = self.requests().len();
        let mut quiet_since = Instant::now();
        eventually("the operator stops making requests", WITHIN, async || {
            let now = self.requests().len();
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            }
            (quiet_since.elapsed() >= Duration::from_millis(500)).then_some(now)
        })
        .await
    }

    /// The peer `name` once it carries a published key and an address, with its key Secret.
    async fn published(&self, name: &str) -> Option<(WgPeer, Secret)> {
        let peer = self.get::<WgPeer>(name).await?;
        peer.spec.public_key.as_ref()?;
        peer.spec.address.as_ref()?;
        let reference = peer.spec.private_key_secret_ref.clone()?;
        let secret = self.key(&reference.name).await?;
        // The Secret belongs to this very peer (not to an earlier one of the same name): by
        // the uid of the peer it was written for, or the key id the peer carries.
        let by_uid = secret.labels().get(LABEL_PEER_UID) == peer.metadata.uid.as_ref();
        let by_id = secret
            .labels()
            .get(KEY_ID)
            .is_some_and(|id| peer.annotations().get(KEY_ID) == Some(id));
        (by_uid || by_id).then_some((peer, secret))
    }

    /// The key Secret `name`, from the peer keys namespace.
    async fn key(&self, name: &str) -> Option<Secret> {
        Api::<Secret>::namespaced(self.admin.clone(), &peer_keys_namespace(&self.name))
            .get_opt(name)
            .await
            .expect("an admin read")
    }

    fn assert_nothing_forbidden(&self) {
        assert_nothing_forbidden(self.plane, &self.name, "operator");
    }
}

/// The operator's controller running in a namespace as the chart's ServiceAccount.
struct Operator {
    stop: CancellationToken,
    running: JoinHandle<()>,
}

impl Operator {
    async fn start(ns: &Namespace) -> Operator {
        let client = component_client(ns.plane, &ns.name, "operator").await;
        let ctx = Arc::new(Context::new(
            client,
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some("test".into()),
            },
            Settings {
                default_server: "wg".into(),
                retention: SignedDuration::from_hours(24 * 30),
                keys_namespace: Some(peer_keys_namespace(&ns.name)),
            },
            Arc::new(Metrics::new()),
            Arc::new(Timestamp::now),
        ));
        let stop = CancellationToken::new();
        let running = tokio::spawn(wgsub_operator::lead(
            ctx,
            Some(ns.name.clone()),
            2,
            stop.clone(),
        ));
        Operator { stop, running }
    }

    /// Asks the controller to stop; fails unless it returns within the deadline.
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(WITHIN, self.running)
            .await
            .expect("the controller stops within the deadline")
            .expect("the controller does not panic");
    }
}

fn assert_key_matches(peer: &WgPeer, secret: &Secret) {
    let reference = peer.spec.private_key_secret_ref.as_ref().unwrap();
    let bytes = &secret.data.as_ref().unwrap()[&reference.key].0;
    let key = PrivateKey::from_base64(std::str::from_utf8(bytes).unwrap()).unwrap();
    assert_eq!(
        peer.spec.public_key.as_deref(),
        Some(key.public_key().to_base64().as_str())
    );
}

/// The path and query parameters of an audited request.
fn parts(request: &AuditedRequest) -> (String, HashMap<String, String>) {
    let url = reqwest::Url::parse(&format!("https://server{}", request.uri)).expect("a URI");
    (
        url.path().to_owned(),
        url.query_pairs().into_owned().collect(),
    )
}

fn is_get_of(request: &AuditedRequest, resource: &str, name: &str) -> bool {
    request.verb == "get"
        && request.resource.as_deref() == Some(resource)
        && parts(request).0.ends_with(&format!("/{resource}/{name}"))
}

/// The `managedFields` entries of `manager` (one per operation and subresource).
fn managed_by<'a>(entries: &'a [ManagedFieldsEntry], manager: &str) -> Vec<&'a ManagedFieldsEntry> {
    entries
        .iter()
        .filter(|e| e.manager.as_deref() == Some(manager))
        .collect()
}

fn owns_spec_field(entry: &ManagedFieldsEntry, field: &str) -> bool {
    entry
        .fields_v1
        .as_ref()
        .and_then(|f| f.0.get("f:spec"))
        .and_then(|spec| spec.get(format!("f:{field}")))
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_controller_follows_watches_under_the_charts_rbac_and_stops_on_shutdown() {
    let ns = Namespace::new("operator-watch").await;
    let other_peers: Api<WgPeer> = ns.api();
    futures::stream::iter(0..OTHER_PEERS)
        .for_each_concurrent(16, |i| {
            let api = other_peers.clone();
            async move {
                api.create(&PostParams::default(), &other_peer(i))
                    .await
                    .unwrap_or_else(|e| panic!("other peer {i}: {e}"));
            }
        })
        .await;
    let operator = Operator::start(&ns).await;

    // The four watches are open (each after its initial list) before the subscription exists.
    for resource in ["vpnsubscriptions", "wgpeers", "secrets", "wgservers"] {
        eventually(&format!("a watch of {resource}"), WITHIN, async || {
            ns.requests()
                .iter()
                .any(|r| r.verb == "watch" && r.resource.as_deref() == Some(resource))
                .then_some(())
        })
        .await;
    }

    // 1. A paid subscription created now can only arrive through the watch.
    let paid_until = Timestamp::now() + SignedDuration::from_hours(24 * 30);
    ns.create(&fixtures::paid_subscription(1, paid_until)).await;
    let (peer, secret) = eventually(
        "tg-1 gets a published peer with its key Secret",
        WITHIN,
        async || ns.published("tg-1-1").await,
    )
    .await;
    assert_eq!(peer.spec.address.as_deref(), Some("10.8.0.2/32"));
    assert_eq!(peer.spec.expires_at, Some(paid_until));
    assert_eq!(peer.labels()[LABEL_SUBSCRIPTION], "tg-1");
    assert_eq!(secret.labels()[LABEL_PEER], "tg-1-1");
    assert_key_matches(&peer, &secret);
    let status = eventually("tg-1's status shows it active", WITHIN, async || {
        let status = ns.get::<VpnSubscription>("tg-1").await?.status?;
        (status.phase == Some(SubscriptionPhase::Active)).then_some(status)
    })
    .await;
    assert_eq!(status.peers, vec!["tg-1-1".to_owned()]);
    assert_eq!(status.expires_at, Some(paid_until));
    assert_eq!(
        condition(&status.conditions, CONDITION_READY)
            .unwrap()
            .reason,
        reasons::READY
    );

    // 2. A peer deleted by hand comes back, with a new key: only the metadata watch of the
    // peers reports the deletion.
    ns.settled().await;
    let deleted_uid = peer.metadata.uid.clone();
    ns.api::<WgPeer>()
        .delete("tg-1-1", &DeleteParams::default())
        .await
        .expect("deleted");
    let (again, secret) = eventually("the deleted peer is recreated", WITHIN, async || {
        ns.published("tg-1-1")
            .await
            .filter(|(p, _)| p.metadata.uid != deleted_uid)
    })
    .await;
    // A fresh address of the pool: the operator's bookkeeping learns of addresses freed by
    // others only when it reads the pool again (when it looks full), so the old one stays held.
    let address = again.spec.address.as_deref().unwrap();
    assert!(
        address.starts_with("10.8.0.") && address.ends_with("/32"),
        "{address}"
    );
    assert_ne!(again.spec.public_key, peer.spec.public_key);
    assert_key_matches(&again, &secret);

    // 3. A change of the server reconciles the subscriptions on it: each reads its peer again
    // (nothing else asks for it while the operator is idle; the server comes from the watch).
    let before = ns.settled().await;
    ns.api::<WgServer>()
        .patch(
            "wg",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"dns": ["10.8.0.1"]}})),
        )
        .await
        .expect("the server changed");
    eventually("a server change reconciles tg-1", WITHIN, async || {
        let after = &ns.requests()[before..];
        after
            .iter()
            .any(|r| is_get_of(r, "wgpeers", "tg-1-1"))
            .then_some(())
    })
    .await;

    // Shutdown: the controller returns and closes its watches (the server logs each watch
    // once when it starts streaming and once when it ends).
    ns.settled().await;
    operator.shutdown().await;
    eventually("every watch is closed", WITHIN, async || {
        let watches: Vec<AuditedRequest> = ns
            .requests()
            .into_iter()
            .filter(|r| r.verb == "watch")
            .collect();
        let started = watches
            .iter()
            .filter(|r| r.stage == "ResponseStarted")
            .count();
        let ended = watches
            .iter()
            .filter(|r| r.stage == "ResponseComplete")
            .count();
        (started > 0 && started == ended).then_some(())
    })
    .await;

    // 4. What the operator asked of the server, from its audit log.
    let requests = ns.requests();
    let of = |resource: &str, verb: &str| -> Vec<HashMap<String, String>> {
        requests
            .iter()
            .filter(|r| r.verb == verb && r.resource.as_deref() == Some(resource))
            .map(|r| parts(r).1)
            .collect()
    };
    // Key Secrets are listed and watched by label only (wgsub.io/peer by the controller and the
    // key collection's sweep, wgsub.io/peer-uid or wgsub.io/key-id at a peer's deletion).
    for verb in ["list", "watch"] {
        let calls = of("secrets", verb);
        assert!(!calls.is_empty(), "secrets are {verb}ed");
        for query in calls {
            assert!(
                query.get("labelSelector").is_some_and(
                    |selector| selector.starts_with(LABEL_PEER) || selector.starts_with(KEY_ID)
                ),
                "key Secrets are {verb}ed by label: {query:?}"
            );
        }
    }
    // The peers' initial list is paged.
    let peer_pages: Vec<HashMap<String, String>> = of("wgpeers", "list")
        .into_iter()
        .filter(|q| q.contains_key("limit"))
        .collect();
    assert!(
        peer_pages.iter().any(|q| q.contains_key("continue")),
        "the {OTHER_PEERS} peers are listed in pages: {peer_pages:?}"
    );
    // The few servers are listed whole from the API server's watch cache, not paged from etcd.
    let server_lists = of("wgservers", "list");
    assert!(
        !server_lists.is_empty()
            && server_lists.iter().all(|q| {
                q.get("resourceVersion").map(String::as_str) == Some("0")
                    && !q.contains_key("limit")
            }),
        "{server_lists:?}"
    );
    // Every write is a server-side apply under the operator's field manager.
    for resource in ["wgpeers", "secrets", "vpnsubscriptions/status"] {
        let patches = of(resource, "patch");
        assert!(!patches.is_empty(), "{resource} are applied");
        for query in patches {
            assert_eq!(
                query.get("fieldManager").map(String::as_str),
                Some(FIELD_MANAGER),
                "{resource}: {query:?}"
            );
        }
    }
    // The watches were asked for bookmarks and resumed from their list's resourceVersion.
    for resource in ["vpnsubscriptions", "wgpeers", "secrets", "wgservers"] {
        for query in of(resource, "watch") {
            assert_eq!(
                query.get("allowWatchBookmarks").map(String::as_str),
                Some("true"),
                "{resource}: {query:?}"
            );
            assert!(
                query.get("resourceVersion").is_some_and(|rv| rv != "0"),
                "{resource}: {query:?}"
            );
        }
    }
    ns.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_applies_own_its_fields_only_and_status_goes_through_the_subresource() {
    let ns = Namespace::new("operator-ssa").await;
    let operator = Operator::start(&ns).await;
    let paid_until = Timestamp::now() + SignedDuration::from_hours(24 * 30);
    ns.create(&fixtures::paid_subscription(2, paid_until)).await;
    let (peer, _) = eventually("tg-2 gets a published peer", WITHIN, async || {
        ns.published("tg-2-1").await
    })
    .await;
    let peers = ns.api::<WgPeer>();

    // The user switches the device off through the API (its own forced apply).
    let switch = json!({
        "apiVersion": "wgsub.io/v1alpha1", "kind": "WgPeer",
        "metadata": {"name": "tg-2-1"},
        "spec": {"enabled": false, "deviceName": "phone"},
    });
    peers
        .patch(
            "tg-2-1",
            &PatchParams::apply(API_MANAGER).force(),
            &Patch::Apply(&switch),
        )
        .await
        .expect("the API's switch");

    // Another manager cannot take an operator field without forcing: the server names the owner.
    let grab = json!({
        "apiVersion": "wgsub.io/v1alpha1", "kind": "WgPeer",
        "metadata": {"name": "tg-2-1"},
        "spec": {"address": "10.8.0.77/32"},
    });
    let conflict = peers
        .patch(
            "tg-2-1",
            &PatchParams::apply(API_MANAGER),
            &Patch::Apply(&grab),
        )
        .await
        .expect_err("a conflict");
    assert!(
        matches!(&conflict, kube::Error::Api(s) if s.code == 409 && s.message.contains(FIELD_MANAGER)),
        "{conflict}"
    );

    // A renewal makes the operator apply the peer again; the switch stays the API's.
    let renewed = paid_until + SignedDuration::from_hours(24 * 30);
    ns.api::<VpnSubscription>()
        .patch(
            "tg-2",
            &PatchParams::apply(API_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "wgsub.io/v1alpha1", "kind": "VpnSubscription",
                "metadata": {"name": "tg-2"},
                "spec": {"paidUntil": renewed},
            })),
        )
        .await
        .expect("the renewal");
    let after = eventually("the renewal reaches the peer", WITHIN, async || {
        let peer = ns.get::<WgPeer>("tg-2-1").await?;
        (peer.spec.expires_at == Some(renewed)).then_some(peer)
    })
    .await;
    assert!(!after.spec.enabled, "the operator's apply kept the switch");
    assert_eq!(after.spec.device_name.as_deref(), Some("phone"));
    assert_eq!(after.spec.address, peer.spec.address);
    assert_eq!(after.spec.public_key, peer.spec.public_key);
    let fields = after.metadata.managed_fields.clone().unwrap_or_default();
    let operator_entries = managed_by(&fields, FIELD_MANAGER);
    assert_eq!(operator_entries.len(), 1, "{fields:?}");
    let owned = operator_entries[0];
    assert_eq!(owned.operation.as_deref(), Some("Apply"));
    for field in [
        "server",
        "address",
        "publicKey",
        "privateKeySecretRef",
        "expiresAt",
    ] {
        assert!(owns_spec_field(owned, field), "the operator owns {field}");
    }
    for field in ["enabled", "deviceName"] {
        assert!(
            !owns_spec_field(owned, field),
            "the operator never takes {field}: {owned:?}"
        );
        assert!(
            managed_by(&fields, API_MANAGER)
                .iter()
                .any(|e| owns_spec_field(e, field)),
            "the API owns {field}"
        );
    }

    // An expiry edited by hand (an update, not an apply) is taken back by the next reconcile,
    // which the peers' metadata watch triggers.
    ns.api::<WgPeer>()
        .patch(
            "tg-2-1",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"spec": {"expiresAt": "2030-01-01T00:00:00Z"}})),
        )
        .await
        .expect("a hand edit");
    let repaired = eventually("the hand edit is taken back", WITHIN, async || {
        let peer = ns.get::<WgPeer>("tg-2-1").await?;
        (peer.spec.expires_at == Some(renewed)).then_some(peer)
    })
    .await;
    let fields = repaired.metadata.managed_fields.unwrap_or_default();
    assert!(
        managed_by(&fields, "kubectl-edit")
            .iter()
            .all(|e| !owns_spec_field(e, "expiresAt")),
        "the operator's forced apply took expiresAt back: {fields:?}"
    );

    // The subscription's status is written through the status subresource only: the operator
    // owns nothing of the main resource.
    let status = eventually("tg-2's status follows the renewal", WITHIN, async || {
        let sub = ns.get::<VpnSubscription>("tg-2").await?;
        (sub.status.as_ref()?.expires_at == Some(renewed)).then_some(sub)
    })
    .await;
    let fields = status.metadata.managed_fields.unwrap_or_default();
    let entries = managed_by(&fields, FIELD_MANAGER);
    assert!(!entries.is_empty(), "{fields:?}");
    for entry in entries {
        assert_eq!(entry.subresource.as_deref(), Some("status"), "{entry:?}");
        assert_eq!(entry.operation.as_deref(), Some("Apply"), "{entry:?}");
    }

    operator.shutdown().await;
    ns.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_subscription_collects_its_peers_and_their_key_secrets() {
    let ns = Namespace::new("operator-gc").await;
    let operator = Operator::start(&ns).await;
    let paid_until = Timestamp::now() + SignedDuration::from_hours(24 * 30);
    ns.create(&fixtures::paid_subscription(3, paid_until)).await;
    let (peer, secret) = eventually("tg-3 gets a published peer", WITHIN, async || {
        ns.published("tg-3-1").await
    })
    .await;
    let secret_name = secret.name_any();
    let owner: Vec<Value> = peer
        .owner_references()
        .iter()
        .map(|o| json!({"kind": o.kind, "name": o.name, "controller": o.controller}))
        .collect();
    assert_eq!(
        owner,
        vec![json!({"kind": "VpnSubscription", "name": "tg-3", "controller": true})]
    );

    ns.api::<VpnSubscription>()
        .delete("tg-3", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually(
        "the garbage collector deletes the peer",
        COLLECTED_WITHIN,
        async || ns.get::<WgPeer>("tg-3-1").await.is_none().then_some(()),
    )
    .await;
    eventually(
        "the operator deletes its key Secret at once",
        Duration::from_secs(5),
        async || ns.key(&secret_name).await.is_none().then_some(()),
    )
    .await;
    // Nothing brings them back: the operator does not reconcile a deleted subscription.
    ns.settled().await;
    assert!(ns.get::<WgPeer>("tg-3-1").await.is_none());

    operator.shutdown().await;
    ns.assert_nothing_forbidden();
}
