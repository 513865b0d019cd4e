//! The operator's Kubernetes shell where the real API server cannot be made to show the case, on
//! an in-memory API (kube-fake-client); everything else of the shell runs on the real server
//! (`shell.rs`):
//! - a key Secret write that fails once (an injected 500 between the peer's first apply and its
//!   key): the reconcile must publish no key and the retry must not regenerate one;
//! - a WgServer whose pool is not a network address (`10.8.0.7/24`): the real server's CEL rule
//!   refuses to store it, but an object admitted before the rule (or by an older CRD) can still
//!   be read, and its subscriptions must be told, not crash the operator.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use kube_fake_client::{ClientBuilder, interceptor};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::{CONDITION_READY, condition};
use wgsub_crds::{VpnSubscription, VpnSubscriptionStatus, WgPeer, WgServer};
use wgsub_operator::controller::{self, Context, Error, Settings};
use wgsub_operator::decision::{CONDITION_KEY_REGENERATED, reasons};
use wgsub_operator::metrics::Metrics;
use wgsub_testkit::fixtures;

const NS: &str = "vpn";
const DAY: SignedDuration = SignedDuration::from_hours(24);

fn start() -> Timestamp {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

fn server(name: &str, pool: &str) -> WgServer {
    let mut server = fixtures::server(name, pool);
    server.metadata.namespace = Some(NS.into());
    server
}

/// An in-memory cluster (with optional injected faults) and one operator context.
struct Cluster {
    client: Client,
    ctx: Arc<Context>,
}

impl Cluster {
    async fn with_interceptors(servers: Vec<WgServer>, funcs: Option<interceptor::Funcs>) -> Self {
        let mut builder = ClientBuilder::new()
            .with_resource::<VpnSubscription>()
            .with_resource::<WgPeer>()
            .with_resource::<WgServer>()
            .with_objects(servers);
        if let Some(funcs) = funcs {
            builder = builder.with_interceptor_funcs(funcs);
        }
        let client = builder.build().await.unwrap();
        let clock = Mutex::new(start());
        let ctx = Arc::new(Context::new(
            client.clone(),
            Reporter {
                controller: "wgsub-operator".into(),
                instance: Some("test".into()),
            },
            Settings {
                default_server: "wg".into(),
                retention: DAY * 30,
                keys_namespace: None,
            },
            Arc::new(Metrics::new()),
            Arc::new(move || *clock.lock().unwrap()),
        ));
        Self { client, ctx }
    }

    fn peers(&self) -> Api<WgPeer> {
        Api::namespaced(self.client.clone(), NS)
    }
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), NS)
    }
    fn subs(&self) -> Api<VpnSubscription> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn subscribe(&self, user: i64, paid_until: Timestamp) -> String {
        let mut sub = fixtures::paid_subscription(user, paid_until);
        sub.status = Some(VpnSubscriptionStatus::default());
        self.subs()
            .create(&PostParams::default(), &sub)
            .await
            .unwrap();
        sub.name_any()
    }

    async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let sub = self.subs().get(name).await.unwrap();
        controller::reconcile(Arc::new(sub), self.ctx.clone()).await
    }

    async fn sub(&self, name: &str) -> VpnSubscription {
        self.subs().get(name).await.unwrap()
    }

    async fn peer(&self, name: &str) -> WgPeer {
        self.peers().get(name).await.unwrap()
    }

    async fn private_key_of(&self, peer: &str) -> PrivateKey {
        let reference = self.peer(peer).await.spec.private_key_secret_ref.unwrap();
        let secret = self.secrets().get(&reference.name).await.unwrap();
        let bytes = &secret.data.unwrap()[&reference.key].0;
        PrivateKey::from_base64(std::str::from_utf8(bytes).unwrap()).unwrap()
    }

    /// The reasons of the Events about `subscription`, oldest first.
    async fn event_reasons(&self, subscription: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), NS);
        let mut list: Vec<Event> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(subscription))
            .collect();
        list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        list.into_iter().filter_map(|e| e.reason).collect()
    }
}

fn ready_reason(sub: &VpnSubscription) -> String {
    condition(&sub.status.as_ref().unwrap().conditions, CONDITION_READY)
        .unwrap()
        .reason
        .clone()
}

#[tokio::test]
async fn an_invalid_server_pool_is_reported_on_its_subscriptions() {
    let cluster = Cluster::with_interceptors(vec![server("wg", "10.8.0.7/24")], None).await;
    let name = cluster.subscribe(1, start() + DAY).await;
    let error = cluster.reconcile(&name).await.unwrap_err();
    assert_eq!(error.reason(), reasons::INVALID_SERVER);
    assert_eq!(
        ready_reason(&cluster.sub(&name).await),
        reasons::INVALID_SERVER
    );
    assert!(cluster.peers().get_opt("tg-1-1").await.unwrap().is_none());
}

#[tokio::test]
async fn a_key_secret_write_that_fails_once_writes_no_peer_and_regenerates_nothing() {
    let failures_left = Arc::new(AtomicU32::new(1));
    let secret_writes = Arc::new(AtomicU32::new(0));
    let funcs = {
        let failures_left = failures_left.clone();
        let secret_writes = secret_writes.clone();
        interceptor::Funcs::new().patch(move |ctx| {
            if ctx.patch["kind"] != "Secret" {
                return Ok(None);
            }
            secret_writes.fetch_add(1, Ordering::SeqCst);
            match failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            {
                Ok(_) => Err(kube_fake_client::Error::Internal(
                    "the API server is unavailable".into(),
                )),
                Err(_) => Ok(None),
            }
        })
    };
    let cluster = Cluster::with_interceptors(vec![server("wg", "10.8.0.0/24")], Some(funcs)).await;
    let name = cluster.subscribe(1, start() + DAY).await;

    let failed = cluster.reconcile(&name).await;
    assert!(matches!(failed, Err(Error::Kube(_))), "{failed:?}");
    assert_eq!(secret_writes.load(Ordering::SeqCst), 1);
    assert!(
        cluster.peers().get_opt("tg-1-1").await.unwrap().is_none(),
        "a new peer is written only with its key, after its Secret"
    );
    assert!(
        cluster
            .secrets()
            .get_opt("tg-1-1-key")
            .await
            .unwrap()
            .is_none()
    );

    cluster.reconcile(&name).await.unwrap();
    assert_eq!(secret_writes.load(Ordering::SeqCst), 2);
    let peer = cluster.peer("tg-1-1").await;
    assert_eq!(peer.spec.address.as_deref(), Some("10.8.0.2/32"));
    assert_eq!(
        cluster
            .private_key_of("tg-1-1")
            .await
            .public_key()
            .to_base64(),
        peer.spec.public_key.unwrap()
    );
    // The status of a new device follows with the next reconcile.
    cluster.reconcile(&name).await.unwrap();
    assert_eq!(
        secret_writes.load(Ordering::SeqCst),
        2,
        "settled: no further key"
    );
    let sub = cluster.sub(&name).await;
    assert!(
        condition(
            &sub.status.as_ref().unwrap().conditions,
            CONDITION_KEY_REGENERATED
        )
        .is_none()
    );
    assert_eq!(ready_reason(&sub), reasons::READY);
    assert_eq!(cluster.event_reasons(&name).await, vec![reasons::ACTIVATED]);
}
