//! Two `wgsub-bot` replicas in polling mode, as processes configured as the chart configures them
//! (the environment, the chart's ServiceAccount and Roles on the real API server of the test
//! process), each against its own stand-in Bot API so that every `getUpdates` is known by its
//! caller: exactly one polls — the one the coordination.k8s.io Lease names — while the other
//! waits, ready; after SIGTERM the leader gives the Lease up and the other takes over within a
//! few seconds. And in the library: a leader whose Lease is taken (lost) stops its work at once
//! and waits, and a process of the same identity renews rather than fights, with the bot's
//! leader gauge following. The API server refused none of the bot's calls.
//!
//! Needs PostgreSQL (`WGSUB_TEST_DATABASE_URL`) and the control plane's binaries
//! (`KUBEBUILDER_ASSETS`, `WGSUB_HELM`), as scripts/test provides.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wgsub_bot::metrics::Metrics;
use wgsub_ledger::testing::fresh_database;
use wgsub_runtime::lease::{ElectionTiming, LeaseLock, run_elected};
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, component_kubeconfig,
    peer_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::process::{Process, eventually};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-bot");
const WITHIN: Duration = Duration::from_secs(20);
const LEASE: &str = "wgsub-bot";
const PLANS: &str = "plans:\n  - id: month\n    title: {ru: \"Месяц\", en: \"Month\"}\n    days: 30\n    priceMinor: 19900\n    currency: RUB\n    devices: 2\n";

/// A Bot API that answers every long poll with no update (held a little, as a long poll is) and
/// counts the polls.
struct PollCounter(Arc<AtomicUsize>);

impl Respond for PollCounter {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let method = request
            .url
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let ok = |result: Value| {
            ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": result}))
        };
        match method.as_str() {
            "getme" => ok(json!({
                "id": 1, "is_bot": true, "first_name": "wgsub", "username": "wgsub_test_bot",
                "can_join_groups": false, "can_read_all_group_messages": false,
                "supports_inline_queries": false, "has_main_web_app": false
            })),
            "getupdates" => {
                self.0.fetch_add(1, Ordering::SeqCst);
                ok(json!([])).set_delay(Duration::from_millis(200))
            }
            _ => ok(json!(true)),
        }
    }
}

struct Replica {
    process: Process,
    polls: Arc<AtomicUsize>,
    _telegram: MockServer,
}

impl Replica {
    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

async fn start_replica(name: &str, dir: &std::path::Path, env: &[(&str, String)]) -> Replica {
    let telegram = MockServer::start().await;
    let polls = Arc::new(AtomicUsize::new(0));
    Mock::given(wiremock::matchers::any())
        .respond_with(PollCounter(polls.clone()))
        .mount(&telegram)
        .await;
    let mut env: Vec<(&str, String)> = env.to_vec();
    env.push(("WGSUB_TELEGRAM_API_URL", telegram.uri()));
    env.push(("WGSUB_IDENTITY", name.to_owned()));
    let process = Process::start(BINARY, name, dir, &env, &[]);
    Replica {
        process,
        polls,
        _telegram: telegram,
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .expect("an admin read")
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_polling_replicas_only_the_lease_holder_polls_and_the_other_takes_over_on_sigterm() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("bot-leader").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let (_, database_url) = fresh_database("bot_leader").await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, component_kubeconfig(plane, &ns, "bot").await)
        .expect("a kubeconfig");
    let plans = dir.path().join("plans.yaml");
    std::fs::write(&plans, PLANS).expect("a plans file");
    let token = format!(
        "{}:{}",
        7_400_000_000_u64 + u64::from(std::process::id()),
        uuid::Uuid::new_v4().simple()
    );
    let env = [
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("WGSUB_BOT_TOKEN", token),
        ("WGSUB_DATABASE_URL", database_url),
        ("WGSUB_NAMESPACE", ns.clone()),
        ("WGSUB_KEYS_NAMESPACE", peer_keys_namespace(&ns)),
        ("WGSUB_PLANS_FILE", plans.display().to_string()),
        (
            "WGSUB_MINIAPP_URL",
            "https://vpn.example.com/miniapp/".into(),
        ),
        ("WGSUB_YOOKASSA_SHOP_ID", "100500".into()),
        (
            "WGSUB_YOOKASSA_SECRET_KEY",
            format!("test_{}", uuid::Uuid::new_v4().simple()),
        ),
        (
            "WGSUB_YOOKASSA_RETURN_URL",
            "https://t.me/wgsub_test_bot".into(),
        ),
        ("WGSUB_LEASE_NAME", LEASE.into()),
        ("WGSUB_LEASE_DURATION", "6".into()),
        ("WGSUB_LOG_FORMAT", "json".into()),
    ];
    let first = start_replica("bot-a", dir.path(), &env).await;
    let second = start_replica("bot-b", dir.path(), &env).await;
    first.process.wait_ready(WITHIN).await;
    second.process.wait_ready(WITHIN).await;

    let leases: Api<Lease> = Api::namespaced(plane.admin_client(), &ns);
    let leader = eventually("one replica holds the lease", WITHIN, async || {
        holder(&leases).await
    })
    .await;
    let (mut leading, waiting) = match leader.as_str() {
        "bot-a" => (first, second),
        "bot-b" => (second, first),
        other => panic!("the lease is held by {other:?}"),
    };
    eventually("the leader polls", WITHIN, async || {
        (leading.polls() > 2).then_some(())
    })
    .await;
    // Several of the follower's retry periods (a sixth of the lease) pass: it never polls.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(waiting.polls(), 0, "the replica without the lease polled");
    assert_eq!(holder(&leases).await.as_deref(), Some(leader.as_str()));

    let exit = leading.process.terminate(WITHIN);
    assert!(exit.success(), "the leader exits 0 on SIGTERM: {exit:?}");
    let polls_of_old_leader = leading.polls();
    let successor = waiting.process.name().to_owned();
    // Given up on SIGTERM, the lease is taken at the follower's next retry (1 s), not after
    // the 6 s lease runs out.
    let taken = tokio::time::Instant::now();
    eventually("the other replica takes the lease", WITHIN, async || {
        (holder(&leases).await.as_deref() == Some(successor.as_str())).then_some(())
    })
    .await;
    assert!(
        taken.elapsed() < Duration::from_secs(4),
        "the lease was given up, not left to expire: {:?}",
        taken.elapsed()
    );
    eventually("the new leader polls", WITHIN, async || {
        (waiting.polls() > 0).then_some(())
    })
    .await;
    assert_eq!(
        leading.polls(),
        polls_of_old_leader,
        "the old leader polled after stopping"
    );

    let mut waiting = waiting;
    let exit = waiting.process.terminate(WITHIN);
    assert!(exit.success(), "{exit:?}");
    let lease = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(
        lease.holder_identity, None,
        "the last one gives the lease up too"
    );
    assert_eq!(lease.lease_transitions, Some(1));
    assert_nothing_forbidden(plane, &ns, "bot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_stops_its_work_at_once_and_waits() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("bot-lease-lost").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let client = component_client(plane, &ns, "bot").await;
    let lock = LeaseLock::new(
        Api::namespaced(client, &ns),
        LEASE,
        "bot-a",
        Duration::from_secs(3),
    );
    let working = Arc::new(AtomicBool::new(false));
    let terms = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let election = tokio::spawn({
        let (working, terms, shutdown, metrics) = (
            working.clone(),
            terms.clone(),
            shutdown.clone(),
            metrics.clone(),
        );
        async move {
            run_elected(
                lock,
                ElectionTiming::from_lease_duration(Duration::from_secs(3)),
                Timestamp::now,
                metrics.leader(),
                shutdown,
                |term| {
                    let working = working.clone();
                    terms.fetch_add(1, Ordering::SeqCst);
                    async move {
                        struct Stopped(Arc<AtomicBool>);
                        impl Drop for Stopped {
                            fn drop(&mut self) {
                                self.0.store(false, Ordering::SeqCst);
                            }
                        }
                        working.store(true, Ordering::SeqCst);
                        let _stopped = Stopped(working);
                        term.cancelled().await;
                    }
                },
            )
            .await;
        }
    });
    eventually(
        "the work runs while the lease is held",
        WITHIN,
        async || working.load(Ordering::SeqCst).then_some(()),
    )
    .await;
    assert!(metrics.encode().contains("wgsub_bot_leader 1\n"));

    // Another replica takes the lease (as after a partition): its holder, renewed now, for 60 s.
    let leases: Api<Lease> = Api::namespaced(plane.admin_client(), &ns);
    let mut lease = leases.get(LEASE).await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("bot-b".into());
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    spec.lease_duration_seconds = Some(60);
    leases
        .replace(LEASE, &PostParams::default(), &lease)
        .await
        .unwrap();
    eventually(
        "the work stops once the lease is lost",
        WITHIN,
        async || (!working.load(Ordering::SeqCst)).then_some(()),
    )
    .await;
    // Waiting, it neither restarts the work nor takes the lease back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!working.load(Ordering::SeqCst));
    assert!(metrics.encode().contains("wgsub_bot_leader 0\n"));
    assert_eq!(terms.load(Ordering::SeqCst), 1);
    assert_eq!(holder(&leases).await.as_deref(), Some("bot-b"));

    // Once that holder gives it up, it leads again; on shutdown it gives the lease up.
    let mut lease = leases.get(LEASE).await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = None;
    leases
        .replace(LEASE, &PostParams::default(), &lease)
        .await
        .unwrap();
    eventually("it leads again", WITHIN, async || {
        working.load(Ordering::SeqCst).then_some(())
    })
    .await;
    assert_eq!(terms.load(Ordering::SeqCst), 2);
    assert!(
        metrics
            .encode()
            .contains("wgsub_bot_leader_transitions_total 2\n")
    );
    shutdown.cancel();
    tokio::time::timeout(WITHIN, election)
        .await
        .expect("the election ends after shutdown")
        .unwrap();
    assert!(!working.load(Ordering::SeqCst));
    assert_eq!(holder(&leases).await, None);
    assert_nothing_forbidden(plane, &ns, "bot");
}
