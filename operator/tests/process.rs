//! The `wgsub-operator` binary as a process, configured and stopped as Kubernetes does it: its
//! `--help`, a bad setting refused at start with the flag named, and two replicas against an
//! in-process API server (`wgsub_testkit::fake_api`, reached through `KUBECONFIG`) — one leads through
//! the Lease and reconciles, both serve `/healthz`, `/readyz` and `/metrics`, JSON logs; on
//! SIGTERM the leader exits 0 and gives the lease up, and the other replica takes over at its
//! next attempt (a sixth of the lease duration), not when the lease would have expired. Every call either replica made is granted by `api-calls.yaml`.

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use wgsub_crds::{
    SecretKeyRef, VpnSubscription, VpnSubscriptionSpec, WgPeer, WgServer, WgServerSpec,
};
use wgsub_testkit::fake_api::{FakeApi, ungranted};
use wgsub_testkit::process::{Process, assert_help_mentions, assert_refused_at_start, eventually};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-operator");
const NS: &str = "vpn";
/// Long enough that a takeover by expiry could not pass for a handover.
const LEASE: Duration = Duration::from_secs(30);
/// How often a replica that does not lead tries the lease (`ElectionTiming`).
const RETRY: Duration = Duration::from_secs(5);

fn server() -> WgServer {
    let mut server = WgServer::new(
        "wg",
        WgServerSpec {
            endpoint: "vpn.example.com:51820".into(),
            listen_port: 51820,
            interface_name: "wg0".into(),
            address_pool: "10.8.0.0/24".into(),
            address_pool6: None,
            dns: vec![],
            mtu: None,
            persistent_keepalive: None,
            client_allowed_ips: vec![],
            node_name: None,
            node_selector: None,
            private_key_secret_ref: SecretKeyRef::new("wg-key", "privateKey"),
            nat: None,
        },
    );
    server.metadata.namespace = Some(NS.into());
    server
}

fn paid_subscription(user: i64) -> VpnSubscription {
    let mut spec = VpnSubscriptionSpec::for_user(user);
    spec.paid_until = Some(Timestamp::now() + SignedDuration::from_hours(24));
    let mut subscription = VpnSubscription::new(&format!("tg-{user}"), spec);
    subscription.metadata.namespace = Some(NS.into());
    subscription
}

/// One replica, configured as the chart configures it.
fn replica(api: &FakeApi, dir: &Path, name: &str) -> Process {
    let kubeconfig = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&kubeconfig, api.kubeconfig(name)).expect("writing a kubeconfig");
    let lease = format!("{}s", LEASE.as_secs());
    let kubeconfig = kubeconfig.display().to_string();
    Process::start(
        BINARY,
        name,
        dir,
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("WGSUB_NAMESPACE", NS),
            ("WGSUB_DEFAULT_SERVER", "wg"),
            ("WGSUB_IDENTITY", name),
            ("WGSUB_LOG_FORMAT", "json"),
            ("WGSUB_LEASE_DURATION", lease.as_str()),
        ],
        &[],
    )
}

fn holder(api: &FakeApi) -> Option<String> {
    api.get::<Lease>(NS, "wgsub-operator")?
        .spec?
        .holder_identity
}

#[test]
fn help_lists_every_setting_and_a_bad_setting_stops_the_start_with_the_flag_named() {
    assert_help_mentions(
        BINARY,
        &[],
        &[
            "--namespace",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_that_hands_the_lease_over_on_sigterm() {
    let api = FakeApi::start().await;
    api.create(&server());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let within = RETRY * 2;

    let mut first = replica(&api, dir.path(), "replica-a");
    first.wait_ready(within).await;
    eventually("replica-a holds the lease", within, async || {
        (holder(&api)? == "replica-a").then_some(())
    })
    .await;
    let mut second = replica(&api, dir.path(), "replica-b");
    second.wait_ready(within).await;

    // The leader reconciles; the other waits.
    api.create(&paid_subscription(1));
    eventually("the leader makes tg-1's peer", within, async || {
        api.get::<WgPeer>(NS, "tg-1-1")?.spec.public_key
    })
    .await;
    assert_eq!(holder(&api).as_deref(), Some("replica-a"));
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
        (holder(&api)? == "replica-b").then_some(())
    })
    .await;
    let takeover = stopped_at.elapsed();
    assert!(
        takeover < RETRY + Duration::from_secs(2) && takeover < LEASE,
        "the takeover took {takeover:?}: the lease was not given up"
    );
    api.create(&paid_subscription(2));
    eventually("the new leader makes tg-2's peer", within, async || {
        api.get::<WgPeer>(NS, "tg-2-1")?.spec.public_key
    })
    .await;
    let exit = second.terminate(within);
    assert!(exit.success(), "replica-b exits 0 on SIGTERM: {exit:?}");

    // Structured logs, and only granted calls.
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
    for name in ["replica-a", "replica-b"] {
        let made = api.requests_from(name);
        assert!(!made.is_empty(), "{name} made no request");
        let refused = ungranted(include_str!("../api-calls.yaml"), &made);
        assert!(refused.is_empty(), "{name}:\n{}", refused.join("\n"));
    }
    println!(
        "operator handover after SIGTERM: {} ms",
        takeover.as_millis()
    );
}
