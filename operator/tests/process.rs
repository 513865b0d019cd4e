//! The `wgsub-operator` binary as a process, configured and stopped as Kubernetes does it: its
//! `--help`, a bad setting refused at start with the flag named, and two replicas against an
//! in-process API server (`wgsub_fake_api`, reached through `KUBECONFIG`) — one leads through
//! the Lease and reconciles, both serve `/healthz`, `/readyz` and `/metrics`, JSON logs; on
//! SIGTERM the leader exits 0 and gives the lease up, and the other replica takes over at its
//! next attempt (a sixth of the lease duration), not when the lease would have expired. Every call either replica made is granted by `api-calls.yaml`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use wgsub_crds::{
    SecretKeyRef, VpnSubscription, VpnSubscriptionSpec, WgPeer, WgServer, WgServerSpec,
};
use wgsub_fake_api::{FakeApi, ungranted};

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One replica: the process, its HTTP port and where its logs go.
struct Replica {
    child: Child,
    port: u16,
    name: &'static str,
    logs: std::path::PathBuf,
}

impl Replica {
    fn start(api: &FakeApi, dir: &Path, name: &'static str) -> Replica {
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&kubeconfig, api.kubeconfig(name)).expect("writing a kubeconfig");
        let logs = dir.join(format!("{name}.log"));
        let port = free_port();
        let child = Command::new(BINARY)
            .env_clear()
            .env("KUBECONFIG", &kubeconfig)
            .env("WGSUB_NAMESPACE", NS)
            .env("WGSUB_DEFAULT_SERVER", "wg")
            .env("WGSUB_IDENTITY", name)
            .env("WGSUB_LOG_FORMAT", "json")
            .args(["--lease-duration", &format!("{}s", LEASE.as_secs())])
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .stdout(std::fs::File::create(&logs).expect("a log file"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the operator starts");
        Replica {
            child,
            port,
            name,
            logs,
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM sent to {}", self.name);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs {within:?} after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.logs)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{}: a log line that is not JSON ({e}): {line}", self.name)
                })
            })
            .collect()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn holder(api: &FakeApi) -> Option<String> {
    api.get::<Lease>(NS, "wgsub-operator")?
        .spec?
        .holder_identity
}

#[test]
fn help_lists_every_setting_and_a_bad_setting_stops_the_start_with_the_flag_named() {
    let help = Command::new(BINARY).arg("--help").output().expect("runs");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--namespace",
        "--lease-duration",
        "--default-server",
        "--http-addr",
        "WGSUB_RETENTION",
    ] {
        assert!(text.contains(flag), "--help mentions {flag}: {text}");
    }
    let bad = Command::new(BINARY)
        .env_clear()
        .args(["--namespace", NS, "--lease-duration", "1s"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2), "a bad setting exits 2");
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(message.contains("--lease-duration"), "{message}");
    assert!(message.contains("shorter than 3s"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_that_hands_the_lease_over_on_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = FakeApi::start().await;
    api.create(&server());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let within = RETRY * 2;

    let mut first = Replica::start(&api, dir.path(), "replica-a");
    for path in ["/healthz", "/readyz"] {
        eventually(&format!("replica-a answers {path}"), within, async || {
            (first.get(path).await?.0 == 200).then_some(())
        })
        .await;
    }
    eventually("replica-a holds the lease", within, async || {
        (holder(&api)? == "replica-a").then_some(())
    })
    .await;
    let mut second = Replica::start(&api, dir.path(), "replica-b");
    eventually("replica-b is ready", within, async || {
        (second.get("/readyz").await?.0 == 200).then_some(())
    })
    .await;

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
        let lines = replica.log_lines();
        assert!(!lines.is_empty(), "{} logged nothing", replica.name);
        assert!(
            lines
                .iter()
                .all(|l| l.get("level").is_some() && l.get("timestamp").is_some()),
            "{} logs carry a level and a timestamp",
            replica.name
        );
    }
    let requests = api.requests();
    for name in ["replica-a", "replica-b"] {
        let made: Vec<_> = requests
            .iter()
            .filter(|r| r.client.as_deref() == Some(name))
            .collect();
        assert!(!made.is_empty(), "{name} made no request");
        let refused = ungranted(include_str!("../api-calls.yaml"), made);
        assert!(refused.is_empty(), "{name}:\n{}", refused.join("\n"));
    }
    println!(
        "operator handover after SIGTERM: {} ms",
        takeover.as_millis()
    );
}
