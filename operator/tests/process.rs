//! The `wgsub-operator` binary as a process, configured and stopped as Kubernetes does it: its
//! `--help`, a bad setting refused at start with the flag named, and two replicas against the
//! real API server (`wgsub_testkit::envtest`), each reaching it through a `KUBECONFIG` with the
//! token of the chart's `wgsub-operator` ServiceAccount, under the Roles the chart renders — one
//! leads through a real Lease and reconciles, both serve `/healthz`, `/readyz` and `/metrics`,
//! JSON logs; on SIGTERM the leader exits 0 and gives the lease up, and the other replica takes
//! over at its next attempt (a sixth of the lease duration), not when the lease would have
//! expired. The server refused none of their calls.

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use wgsub_crds::{VpnSubscription, WgPeer, WgServer};
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_kubeconfig, peer_keys_namespace,
    service_account,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;
use wgsub_testkit::process::{
    Process, assert_help_mentions, assert_refused_at_start, assert_stops_without_kubeconfig,
    eventually,
};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-operator");
/// The namespace of `--help` and refused-setting checks (no server involved).
const NS: &str = "vpn";
/// Long enough that a takeover by expiry could not pass for a handover.
const LEASE: Duration = Duration::from_secs(30);
/// How often a replica that does not lead tries the lease (`ElectionTiming`).
const RETRY: Duration = Duration::from_secs(5);

fn paid_subscription(user: i64) -> VpnSubscription {
    fixtures::paid_subscription(user, Timestamp::now() + SignedDuration::from_hours(24))
}

/// One replica, configured as the chart configures it: `kubeconfig` carries the
/// ServiceAccount's token, as a pod's mounted token does.
fn replica(namespace: &str, kubeconfig: &str, dir: &Path, name: &str) -> Process {
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, kubeconfig).expect("writing a kubeconfig");
    let lease = format!("{}s", LEASE.as_secs());
    let path = path.display().to_string();
    let keys = peer_keys_namespace(namespace);
    Process::start(
        BINARY,
        name,
        dir,
        &[
            ("KUBECONFIG", path.as_str()),
            ("WGSUB_NAMESPACE", namespace),
            ("WGSUB_KEYS_NAMESPACE", keys.as_str()),
            ("WGSUB_DEFAULT_SERVER", "wg"),
            ("WGSUB_IDENTITY", name),
            ("WGSUB_LOG_FORMAT", "json"),
            ("WGSUB_LEASE_DURATION", lease.as_str()),
        ],
        &[],
    )
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("wgsub-operator")
        .await
        .expect("an admin read")?
        .spec?
        .holder_identity
}

async fn published_key(peers: &Api<WgPeer>, name: &str) -> Option<String> {
    peers
        .get_opt(name)
        .await
        .expect("an admin read")?
        .spec
        .public_key
}

#[test]
fn help_lists_every_setting_and_a_bad_setting_stops_the_start_with_the_flag_named() {
    assert_help_mentions(
        BINARY,
        &[],
        &[
            "--namespace",
            "--keys-namespace",
            "--lease-duration",
            "--default-server",
            "--http-addr",
            "WGSUB_RETENTION",
        ],
    );
    let message = assert_refused_at_start(
        BINARY,
        &["--namespace", NS, "--lease-duration", "1s"],
        "--lease-duration",
    );
    assert!(message.contains("shorter than 3s"), "{message}");
}

#[test]
fn without_a_kubernetes_configuration_the_start_stops_with_one_line_naming_the_cause() {
    assert_stops_without_kubeconfig(BINARY, &[], &["--namespace", NS]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_that_hands_the_lease_over_on_sigterm() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("operator-process").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let kubeconfig = component_kubeconfig(plane, &ns, "operator").await;
    let admin: Client = plane.admin_client();
    let (leases, peers, subscriptions) = (
        Api::<Lease>::namespaced(admin.clone(), &ns),
        Api::<WgPeer>::namespaced(admin.clone(), &ns),
        Api::<VpnSubscription>::namespaced(admin.clone(), &ns),
    );
    Api::<WgServer>::namespaced(admin, &ns)
        .create(
            &PostParams::default(),
            &fixtures::server("wg", "10.8.0.0/24"),
        )
        .await
        .expect("the server");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let within = RETRY * 2;

    let mut first = replica(&ns, &kubeconfig, dir.path(), "replica-a");
    first.wait_ready(within).await;
    eventually("replica-a holds the lease", within, async || {
        (holder(&leases).await? == "replica-a").then_some(())
    })
    .await;
    let mut second = replica(&ns, &kubeconfig, dir.path(), "replica-b");
    second.wait_ready(within).await;

    // The leader reconciles; the other waits.
    subscriptions
        .create(&PostParams::default(), &paid_subscription(1))
        .await
        .expect("tg-1");
    eventually("the leader makes tg-1's peer", within, async || {
        published_key(&peers, "tg-1-1").await
    })
    .await;
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"));
    let in_namespace = |namespace: &str| Api::<Secret>::namespaced(plane.admin_client(), namespace);
    assert!(
        in_namespace(&peer_keys_namespace(&ns))
            .get_opt("tg-1-1-key")
            .await
            .expect("an admin read")
            .is_some()
            && in_namespace(&ns)
                .get_opt("tg-1-1-key")
                .await
                .expect("an admin read")
                .is_none(),
        "the key Secret is written to the keys namespace (WGSUB_KEYS_NAMESPACE) only"
    );
    let (status, metrics) = first.get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("wgsub_operator_reconciles_total"),
        "{metrics}"
    );

    // SIGTERM: the leader finishes, gives the lease up and exits 0; the other leads at its next
    // attempt. Had the lease not been given up, that would take until it expired (25 s or more
    // after the last renewal).
    let stopped_at = Instant::now();
    let exit = first.terminate(within);
    assert!(exit.success(), "replica-a exits 0 on SIGTERM: {exit:?}");
    eventually("replica-b takes the lease over", within, async || {
        (holder(&leases).await? == "replica-b").then_some(())
    })
    .await;
    let takeover = stopped_at.elapsed();
    assert!(
        takeover < RETRY + Duration::from_secs(2) && takeover < LEASE,
        "the takeover took {takeover:?}: the lease was not given up"
    );
    subscriptions
        .create(&PostParams::default(), &paid_subscription(2))
        .await
        .expect("tg-2");
    eventually("the new leader makes tg-2's peer", within, async || {
        published_key(&peers, "tg-2-1").await
    })
    .await;
    let exit = second.terminate(within);
    assert!(exit.success(), "replica-b exits 0 on SIGTERM: {exit:?}");

    // Structured logs, and only calls the chart's RBAC grants.
    for replica in [&first, &second] {
        assert!(
            replica
                .json_log()
                .iter()
                .all(|l| l.get("timestamp").is_some()),
            "{} logs carry a timestamp",
            replica.name()
        );
    }
    let made = plane.requests_of(&ns, &service_account("operator"));
    assert!(
        made.iter()
            .any(|r| r.verb == "update" && r.resource.as_deref() == Some("leases")),
        "the replicas renewed the lease: {made:?}"
    );
    assert_nothing_forbidden(plane, &ns, "operator");
    println!(
        "operator handover after SIGTERM: {} ms",
        takeover.as_millis()
    );
}
