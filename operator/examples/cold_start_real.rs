//! Benchmark: the operator's cold start over N paid subscriptions (default 10,000) on the REAL
//! API server (`wgsub_testkit::envtest`: kube-apiserver + etcd), the operator binary running as a
//! process under the chart's RBAC, as it runs in a cluster.
//!
//! In the environment `scripts/test` sets up (`KUBEBUILDER_ASSETS` for the control plane,
//! `WGSUB_HELM` for the chart's RBAC; `WGSUB_KUBECTL` for the optional profile below):
//!
//! ```text
//! cargo build --release -p wgsub-operator --bin wgsub-operator --example cold_start_real
//! "${CARGO_TARGET_DIR:-target}/release/examples/cold_start_real" [subscriptions] [concurrency]
//! ```
//!
//! (defaults 10000 and the binary's default `WGSUB_CONCURRENCY`; the binary is found beside the
//! example's folder, or at `WGSUB_OPERATOR_BIN`.)
//!
//! What it does: starts the control plane, makes a namespace with the chart's RBAC, one
//! `WgServer` with a /16 pool, and N paid `VpnSubscription`s (created 64 at a time, before the
//! operator runs); then starts the operator binary with a kubeconfig carrying the
//! `wgsub-operator` ServiceAccount's token and its key Secrets in `<namespace>-keys` (as the
//! chart runs it), and watches the `WgPeer`s (as admin, one watch) until every subscription has
//! a peer with an address and a published key.
//!
//! Printed: the time from the operator's start to the last keyed peer (and to 50 % / 90 %), the
//! operator's peak RSS (`VmHWM` of `/proc/<pid>/status`), whether every address is distinct, and
//! the operator's requests by verb and resource (from the API server's audit log), the API
//! server's own time by verb and resource (its `apiserver_request_duration_seconds`), and the
//! operator's own counters from its `/metrics` (reconciles, Events dropped, peer writes its
//! watch had not shown yet — also printed every 10 s beside the RSS), and the CPU time each
//! process spent from the operator's start to the last keyed peer (etcd, kube-apiserver,
//! kube-controller-manager, the operator, this benchmark's own watch): on a machine of two
//! cores, where the time went.
//!
//! With `WGSUB_BENCH_APISERVER_PROFILE=<file>` it also saves a 30-second CPU profile of the
//! kube-apiserver (its `/debug/pprof/profile`, through `WGSUB_KUBECTL get --raw`), from 5 s after
//! the operator's start; read it with `go tool pprof -top <file>`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use wgsub_crds::{VpnSubscription, WgPeer, WgServer};
use wgsub_testkit::chart::{apply_chart_rbac, component_kubeconfig, service_account};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;

#[path = "support/real.rs"]
mod real;
use real::{free_port, keyed, operator_metrics, server, start_operator};

/// The longest the benchmark waits for the last keyed peer.
const GIVE_UP: Duration = Duration::from_secs(900);

fn subscription(user: usize, paid_until: Timestamp) -> VpnSubscription {
    fixtures::paid_subscription(1_000_000 + user as i64, paid_until)
}

/// A field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The CPU seconds (user + system) of this process and each of its children (the control
/// plane's processes and the operator), by command name.
fn cpu_seconds() -> BTreeMap<String, f64> {
    let me = std::process::id();
    let ticks = 100.0; // USER_HZ on Linux
    let mut seconds = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return seconds;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the comm may hold spaces, so split after its last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        let (Some(ppid), Some(utime), Some(stime)) = (field(1), field(11), field(12)) else {
            continue;
        };
        if pid == me || ppid as u32 == me {
            *seconds.entry(comm.to_owned()).or_default() += (utime + stime) / ticks;
        }
    }
    seconds
}

/// Saves a 30-second CPU profile of the kube-apiserver into `file`, starting in 5 s, on a thread
/// of its own (`WGSUB_KUBECTL get --raw /debug/pprof/profile`).
fn profile_apiserver(
    admin_kubeconfig: &str,
    dir: &std::path::Path,
    file: std::path::PathBuf,
) -> std::thread::JoinHandle<std::path::PathBuf> {
    let kubeconfig = dir.join("admin.kubeconfig");
    std::fs::write(&kubeconfig, admin_kubeconfig).expect("writing the admin kubeconfig");
    let kubectl = std::env::var_os("WGSUB_KUBECTL").unwrap_or_else(|| "kubectl".into());
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        let output = Command::new(kubectl)
            .env("KUBECONFIG", &kubeconfig)
            .args(["get", "--raw", "/debug/pprof/profile?seconds=30"])
            .output()
            .expect("kubectl runs");
        assert!(output.status.success(), "the profile: {output:?}");
        std::fs::write(&file, output.stdout).expect("writing the profile");
        file
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

/// Creates the subscriptions, `parallel` requests at a time.
async fn create_subscriptions(client: &Client, namespace: &str, count: usize, parallel: usize) {
    let api: Api<VpnSubscription> = Api::namespaced(client.clone(), namespace);
    let paid_until = Timestamp::now() + SignedDuration::from_hours(24 * 30);
    futures::stream::iter(0..count)
        .map(|user| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &subscription(user, paid_until))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<()>>()
        .await
        .expect("creating the subscriptions");
}

/// The API server's own time spent per verb and resource (`apiserver_request_duration_seconds`
/// sums and counts from its `/metrics`), largest first: where the server's time went.
async fn server_time(admin: &Client) -> Vec<(String, f64, f64)> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    let text = admin.request_text(request).await.unwrap_or_default();
    let label = |line: &str, name: &str| {
        let start = line
            .find(&format!("{name}=\""))
            .map(|i| i + name.len() + 2)?;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_owned())
    };
    let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let (metric, value) = match line.rsplit_once(' ') {
            Some((metric, value)) => (metric, value.parse::<f64>().unwrap_or(0.0)),
            None => continue,
        };
        let count = metric.starts_with("apiserver_request_duration_seconds_count{");
        if !count && !metric.starts_with("apiserver_request_duration_seconds_sum{") {
            continue;
        }
        let (Some(verb), Some(resource)) = (label(metric, "verb"), label(metric, "resource"))
        else {
            continue;
        };
        if verb == "WATCH" {
            continue;
        }
        let subresource = label(metric, "subresource").unwrap_or_default();
        let entry = sums
            .entry(format!("{verb} {resource} {subresource}"))
            .or_default();
        match count {
            true => entry.1 += value,
            false => entry.0 += value,
        }
    }
    let mut sorted: Vec<(String, f64, f64)> = sums
        .into_iter()
        .map(|(key, (seconds, count))| (key, seconds, count))
        .collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    sorted
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: usize = args.first().map_or(10_000, |a| a.parse().expect("a count"));
    let concurrency = args.get(1).cloned();
    println!("load average at start: {}", load_average().trim());

    let plane = ControlPlane::with_crds();
    let namespace = plane.namespace("cold").await;
    apply_chart_rbac(plane, &namespace, &[]).await;
    let admin = plane.admin_client();
    Api::<WgServer>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &server())
        .await
        .expect("creating the WgServer");
    let started = Instant::now();
    create_subscriptions(&admin, &namespace, count, 64).await;
    println!(
        "created {count} subscriptions in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("a scratch folder");
    let kubeconfig = dir.path().join("operator.kubeconfig");
    std::fs::write(
        &kubeconfig,
        component_kubeconfig(plane, &namespace, "operator").await,
    )
    .expect("writing the kubeconfig");
    let log = dir.path().join("operator.log");

    // One admin watch of the peers, so the measurement costs the API server one stream.
    let peers: Api<WgPeer> = Api::namespaced(admin.clone(), &namespace);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let watching = tokio::spawn(async move {
        let mut addresses: HashMap<String, String> = HashMap::new();
        let mut stream = std::pin::pin!(watcher(peers, watcher::Config::default()));
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            let objects: Vec<WgPeer> = match event {
                watcher::Event::Apply(peer) | watcher::Event::InitApply(peer) => vec![peer],
                _ => vec![],
            };
            for peer in objects {
                if let Some(address) = keyed(&peer)
                    && addresses.insert(peer.name_any(), address).is_none()
                {
                    let _ = done_tx.send((addresses.len(), Instant::now()));
                }
            }
            if addresses.len() >= count {
                return addresses;
            }
        }
        addresses
    });

    let port = free_port();
    let mut operator = start_operator(&namespace, &kubeconfig, &log, concurrency.as_deref(), port);
    let pid = operator.id();
    let launched = Instant::now();
    let cpu_at_start = cpu_seconds();
    let profiling = std::env::var_os("WGSUB_BENCH_APISERVER_PROFILE")
        .map(|file| profile_apiserver(&plane.admin_kubeconfig(), dir.path(), file.into()));
    let mut marks = BTreeMap::new();
    let mut max_load = 0.0f64;
    let mut last_print = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), done_rx.recv()).await {
            Ok(Some((keyed, at))) => {
                for percent in [1usize, 50, 90, 100] {
                    if keyed * 100 >= count * percent && !marks.contains_key(&percent) {
                        marks.insert(percent, at.duration_since(launched));
                    }
                }
                if keyed >= count {
                    break;
                }
            }
            Ok(None) => panic!("the peer watch ended early"),
            Err(_) => {}
        }
        if let Some(load) = load_average()
            .split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
        {
            max_load = max_load.max(load);
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            println!(
                "  {:>5.0} s: RSS {:.1} MiB, load {}; {}",
                launched.elapsed().as_secs_f64(),
                status_mib(pid, "VmRSS:"),
                load_average().trim(),
                operator_metrics(port).await
            );
        }
        if launched.elapsed() > GIVE_UP {
            let _ = operator.kill();
            panic!("not every subscription had a keyed peer within {GIVE_UP:?}");
        }
    }
    let total = launched.elapsed();
    let cpu_at_end = cpu_seconds();
    // Let the reconciles the last writes triggered run out before reading the peak.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let peak = status_mib(pid, "VmHWM:");
    let rss = status_mib(pid, "VmRSS:");
    let counters = operator_metrics(port).await;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = operator.wait();
    let addresses = watching.await.expect("the watch task");
    if let Some(profiling) = profiling {
        let file = profiling.join().expect("the profile thread");
        println!("  kube-apiserver CPU profile: {}", file.display());
    }
    let distinct: HashSet<&String> = addresses.values().collect();

    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    let requests = plane.requests_of(&namespace, &service_account("operator"));
    for request in &requests {
        let code = request.code.map_or("-".to_owned(), |c| c.to_string());
        let resource = request.resource.as_deref().unwrap_or("-");
        *calls
            .entry(format!("{} {resource} -> {code}", request.verb))
            .or_default() += 1;
    }

    println!("operator cold start over {count} subscriptions on the real API server:");
    for (percent, at) in &marks {
        println!("  {percent:>3} % keyed after {:.1} s", at.as_secs_f64());
    }
    println!("  all keyed after {:.1} s", total.as_secs_f64());
    println!("  operator peak RSS (VmHWM) {peak:.1} MiB, RSS at the end {rss:.1} MiB");
    println!("  operator metrics at the end: {counters}");
    println!(
        "  {} peers with an address and a key, {} distinct addresses",
        addresses.len(),
        distinct.len()
    );
    println!(
        "  {} operator requests ({:.1} per subscription):",
        requests.len(),
        requests.len() as f64 / count as f64
    );
    for (call, n) in calls {
        println!("    {n:>7}  {call}");
    }
    println!("  the API server's time by request (all clients; sum of latencies, count, mean):");
    for (request, seconds, count) in server_time(&admin).await.into_iter().take(12) {
        println!(
            "    {seconds:>8.1} s {count:>7.0}  {:>6.1} ms  {request}",
            1000.0 * seconds / count.max(1.0)
        );
    }
    println!(
        "  CPU seconds from the operator's start to the last keyed peer ({:.1} s of wall time):",
        total.as_secs_f64()
    );
    for (process, seconds) in &cpu_at_end {
        let spent = seconds - cpu_at_start.get(process).copied().unwrap_or(0.0);
        println!("    {spent:>7.1} s  {process}");
    }
    println!("  highest 1-minute load average seen: {max_load:.2} (2 cores)");
    assert_eq!(
        distinct.len(),
        addresses.len(),
        "two peers share an address"
    );
}
