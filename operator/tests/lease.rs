//! Leader election on a real Lease of the real API server (`wgsub_testkit::envtest`), a namespace
//! per test, as the chart's `wgsub-operator` ServiceAccount under the chart's RBAC: acquiring,
//! renewing, refusing a held lease, taking over an expired one, a stale write refused by the
//! server's resourceVersion check, giving it up, and a leader's work stopping when the lease is
//! lost. Each test ends with none of its calls refused by the server.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;
use wgsub_operator::controller::Clock;
use wgsub_operator::metrics::Metrics;
use wgsub_runtime::lease::{ElectionTiming, LeaseLock, run_elected};
use wgsub_testkit::chart::{apply_chart_rbac, assert_nothing_forbidden, component_client};
use wgsub_testkit::envtest::ControlPlane;

fn t0() -> Timestamp {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

/// A fresh namespace with the chart's RBAC, and the operator's client in it.
struct Replicas {
    plane: &'static ControlPlane,
    namespace: String,
    client: Client,
}

impl Replicas {
    async fn new() -> Replicas {
        let plane = ControlPlane::shared();
        let namespace = plane.namespace("operator-lease").await;
        apply_chart_rbac(plane, &namespace, &[]).await;
        let client = component_client(plane, &namespace, "operator").await;
        Replicas {
            plane,
            namespace,
            client,
        }
    }

    /// Fails the test with the server's 403s when the operator made a call the chart does not
    /// grant.
    fn assert_nothing_forbidden(&self) {
        assert_nothing_forbidden(self.plane, &self.namespace, "operator");
    }
}

/// The operator's client is namespaced by its ServiceAccount's namespace.
fn leases(client: &Client) -> Api<Lease> {
    Api::default_namespaced(client.clone())
}

fn lock(client: &Client, identity: &str) -> LeaseLock {
    LeaseLock::new(
        leases(client),
        "wgsub-operator",
        identity,
        Duration::from_secs(15),
    )
}

async fn holder(client: &Client) -> Option<String> {
    leases(client)
        .get("wgsub-operator")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn the_first_replica_creates_and_holds_the_lease() {
    let replicas = Replicas::new().await;
    let client = replicas.client.clone();
    assert!(lock(&client, "a").try_acquire_or_renew(t0()).await.unwrap());
    let lease = leases(&client)
        .get("wgsub-operator")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("a"));
    assert_eq!(lease.lease_duration_seconds, Some(15));
    assert_eq!(lease.lease_transitions, Some(0));
    replicas.assert_nothing_forbidden();
}

#[tokio::test]
async fn the_holder_renews_and_others_are_refused_while_it_is_held() {
    let replicas = Replicas::new().await;
    let client = replicas.client.clone();
    let a = lock(&client, "a");
    let b = lock(&client, "b");
    assert!(a.try_acquire_or_renew(t0()).await.unwrap());
    assert!(
        !b.try_acquire_or_renew(t0() + SignedDuration::from_secs(10))
            .await
            .unwrap()
    );
    assert!(
        a.try_acquire_or_renew(t0() + SignedDuration::from_secs(10))
            .await
            .unwrap()
    );
    // Renewed at +10 s, so still held at +20 s.
    assert!(
        !b.try_acquire_or_renew(t0() + SignedDuration::from_secs(20))
            .await
            .unwrap()
    );
    assert_eq!(holder(&client).await.as_deref(), Some("a"));
    replicas.assert_nothing_forbidden();
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let replicas = Replicas::new().await;
    let client = replicas.client.clone();
    assert!(lock(&client, "a").try_acquire_or_renew(t0()).await.unwrap());
    let b = lock(&client, "b");
    assert!(
        b.try_acquire_or_renew(t0() + SignedDuration::from_secs(15))
            .await
            .unwrap()
    );
    let lease = leases(&client)
        .get("wgsub-operator")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));
    // The old holder now finds it held by b.
    assert!(
        !lock(&client, "a")
            .try_acquire_or_renew(t0() + SignedDuration::from_secs(16))
            .await
            .unwrap()
    );
    replicas.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_stale_write_loses_the_race() {
    let replicas = Replicas::new().await;
    let client = replicas.client.clone();
    assert!(lock(&client, "a").try_acquire_or_renew(t0()).await.unwrap());
    // b read the expired lease; meanwhile c took it over. b's replace carries the old
    // resourceVersion and must be refused.
    let stale = leases(&client).get("wgsub-operator").await.unwrap();
    assert!(
        lock(&client, "c")
            .try_acquire_or_renew(t0() + SignedDuration::from_secs(20))
            .await
            .unwrap()
    );
    let mut lease = stale;
    lease.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let refused = leases(&client)
        .replace("wgsub-operator", &PostParams::default(), &lease)
        .await;
    assert!(matches!(refused, Err(kube::Error::Api(status)) if status.code == 409));
    assert_eq!(holder(&client).await.as_deref(), Some("c"));
    replicas.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let replicas = Replicas::new().await;
    let client = replicas.client.clone();
    let a = lock(&client, "a");
    assert!(a.try_acquire_or_renew(t0()).await.unwrap());
    lock(&client, "b").release().await.unwrap();
    assert_eq!(
        holder(&client).await.as_deref(),
        Some("a"),
        "only the holder can release"
    );
    a.release().await.unwrap();
    assert!(
        lock(&client, "b")
            .try_acquire_or_renew(t0() + SignedDuration::from_secs(1))
            .await
            .unwrap()
    );
    replicas.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_leader_that_loses_the_lease_stops_its_work_and_shutdown_gives_it_up() {
    let replicas = Replicas::new().await;
    let client = replicas.client.clone();
    let clock_time = Arc::new(Mutex::new(t0()));
    let clock: Clock = {
        let time = clock_time.clone();
        Arc::new(move || *time.lock().unwrap())
    };
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let terms = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicBool::new(false));

    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let timing = ElectionTiming {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_millis(100),
        retry_period: Duration::from_millis(20),
    };
    let elected = {
        let (client, metrics, shutdown, terms, stopped) = (
            client.clone(),
            metrics.clone(),
            shutdown.clone(),
            terms.clone(),
            stopped.clone(),
        );
        tokio::spawn(async move {
            run_elected(
                lock(&client, "a"),
                timing,
                &*clock,
                metrics.leader(),
                shutdown,
                |term| {
                    terms.fetch_add(1, Ordering::SeqCst);
                    let guard = OnDrop(stopped.clone());
                    async move {
                        term.cancelled().await;
                        drop(guard);
                    }
                },
            )
            .await;
        })
    };

    let wait_for = |what: &'static str, check: Box<dyn Fn() -> bool + Send>| async move {
        for _ in 0..1000 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    };
    {
        let terms = terms.clone();
        wait_for(
            "leadership",
            Box::new(move || terms.load(Ordering::SeqCst) == 1),
        )
        .await;
    }
    assert!(metrics.encode().contains("wgsub_operator_leader 1"));

    // Another replica takes the lease (e.g. after a network partition).
    let mut lease = leases(&client).get("wgsub-operator").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("b".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        t0(),
    ));
    leases(&client)
        .replace("wgsub-operator", &PostParams::default(), &lease)
        .await
        .unwrap();
    {
        let stopped = stopped.clone();
        wait_for(
            "the work to stop",
            Box::new(move || stopped.load(Ordering::SeqCst)),
        )
        .await;
    }
    assert!(metrics.encode().contains("wgsub_operator_leader 0"));

    // Once b's lease has expired, a leads again; shutdown then gives the lease up.
    stopped.store(false, Ordering::SeqCst);
    *clock_time.lock().unwrap() = t0() + SignedDuration::from_secs(60);
    {
        let terms = terms.clone();
        wait_for(
            "leadership again",
            Box::new(move || terms.load(Ordering::SeqCst) == 2),
        )
        .await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), elected)
        .await
        .unwrap()
        .unwrap();
    assert!(stopped.load(Ordering::SeqCst));
    assert_eq!(holder(&client).await, None);
    replicas.assert_nothing_forbidden();
}
