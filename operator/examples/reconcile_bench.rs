//! Benchmark: reconciles N paid subscriptions (default 10,000) against the in-memory API
//! server with the operator's real reconcile, and times address allocation on a /16 with
//! 60,000 addresses in use.
//!
//! `cargo run --release -p wgsub-operator --example reconcile_bench -- [subscriptions] [concurrency]`
//! (defaults 10000 and 8, the operator's default `--concurrency`).
//!
//! # How the operator's memory is told apart from the API server's
//!
//! The in-memory API server (kube-fake-client) keeps every object as a `serde_json::Value`; for
//! 10,000 subscriptions that is about 40,000 objects (subscriptions, peers, key Secrets,
//! Events), far more memory than the operator's. So the two run in **separate processes**: the
//! benchmark starts itself again as the API process (`serve-fake N`), which fills the fake with
//! the WgServer and the N subscriptions and serves it over HTTP on a loopback port; the
//! benchmark process is then the operator alone, talking to that API through a real
//! `kube::Client` (hyper, HTTP/1.1) as the binary talks to a real API server.
//!
//! - **Operator**: the peak RSS (`VmHWM`) of the benchmark process — the runtime, the client,
//!   the subscription cache, the address bookkeeping and every in-flight reconcile. Its state
//!   is held as in the binary: the subscriptions are listed into a reflector store through
//!   [`controller::trim_for_cache`] (what the binary's watch does) and each reconcile takes its
//!   subscription from that store. The fake returns `managedFields`, as a real API server does,
//!   so the operator parses realistic responses. The watches cannot run (the fake has no
//!   watch): the store is filled by reading the subscriptions one at a time, as watch events
//!   deliver them, and refilled so after the run, as the watch would after the status writes,
//!   so the peak also covers the steady state.
//! - **API baseline**: the API process's RSS and peak RSS, read from `/proc/<pid>/status` once
//!   every reconcile is done: the fake holding the final state alone.
//!
//! Printed: total reconcile time and rate, both processes' RSS, the address check (every peer
//! a distinct address and a published key), and the allocation timing on the /16.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use http_body_util::BodyExt;
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube_fake_client::ClientBuilder;
use wgsub_crds::{VpnSubscription, VpnSubscriptionStatus, WgPeer, WgServer};
use wgsub_operator::addresses::UsedAddresses;
use wgsub_operator::controller::{self, Context, Settings};
use wgsub_operator::metrics::Metrics;
use wgsub_testkit::fixtures;

const NS: &str = "vpn";

/// A field of a process's `/proc/<pid>/status` in MiB.
fn rss_mib(pid: &str, field: &str) -> f64 {
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

fn server() -> WgServer {
    let mut server = fixtures::server("wg", "10.8.0.0/16");
    server.metadata.namespace = Some(NS.into());
    server
}

/// The API process: fills the fake with the server and `count` paid subscriptions, serves it
/// on a loopback port (printed on stdout) until killed.
async fn serve_fake(count: i64) {
    let fake = ClientBuilder::new()
        .with_resource::<VpnSubscription>()
        .with_resource::<WgPeer>()
        .with_resource::<WgServer>()
        .with_return_managed_fields()
        .with_object(server())
        .build()
        .await
        .expect("in-memory API");
    let paid_until = Timestamp::now() + SignedDuration::from_hours(24 * 30);
    let subs: Api<VpnSubscription> = Api::namespaced(fake.clone(), NS);
    for user in 1..=count {
        let mut sub = fixtures::paid_subscription(user, paid_until);
        sub.status = Some(VpnSubscriptionStatus::default());
        subs.create(&PostParams::default(), &sub)
            .await
            .expect("create");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    println!("{}", listener.local_addr().expect("bound").port());
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let fake = fake.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.expect("request body").to_bytes();
            let request = http::Request::from_parts(parts, kube::client::Body::from(bytes));
            match fake.send(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let bytes = body.collect().await.expect("response body").to_bytes();
                    http::Response::from_parts(parts, axum::body::Body::from(bytes))
                }
                Err(error) => http::Response::builder()
                    .status(500)
                    .body(axum::body::Body::from(error.to_string()))
                    .expect("a response"),
            }
        }
    });
    // Serve until the benchmark closes our stdin (it is done, or it died).
    let parent_gone = async {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        while tokio::io::AsyncReadExt::read(&mut stdin, &mut buffer)
            .await
            .is_ok_and(|n| n > 0)
        {}
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(parent_gone)
        .await
        .expect("serving");
}

/// The API process, started and filled, and the port it serves on.
fn start_api(count: i64) -> (Child, u16) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["serve-fake", &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the API process starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the API process prints its port");
    let port = line.trim().parse().expect("a port number");
    (child, port)
}

/// Fills a reflector store with subscriptions `tg-1` ..= `tg-{count}`, trimmed as the binary's
/// watch trims. They are read one at a time, as a watch delivers them (the binary's initial
/// list comes in pages of 500; the fake cannot page, and one list of every subscription would
/// measure a response the binary never receives).
async fn fill_cache(
    subs: &Api<VpnSubscription>,
    count: i64,
    writer: &mut reflector::store::Writer<VpnSubscription>,
) {
    let mut fetched = futures::stream::iter(1..=count)
        .map(|user| {
            let subs = subs.clone();
            async move { subs.get(&format!("tg-{user}")).await.expect("get") }
        })
        .buffer_unordered(8);
    while let Some(mut sub) = fetched.next().await {
        controller::trim_for_cache(&mut sub);
        writer.apply_watcher_event(&watcher::Event::Apply(sub));
    }
}

async fn reconcile_many(count: i64, concurrency: usize) {
    let filling = Instant::now();
    let (mut api, port) = start_api(count);
    let api_pid = api.id().to_string();
    println!(
        "API process: {count} subscriptions stored in {:.1} s, RSS {:.1} MiB",
        filling.elapsed().as_secs_f64(),
        rss_mib(&api_pid, "VmRSS:")
    );
    // The dev-dependencies bring a second rustls crypto provider; the binary has ring alone.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("http://127.0.0.1:{port}").parse().expect("url");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
    let subs: Api<VpnSubscription> = Api::namespaced(client.clone(), NS);

    let (store, mut writer) = reflector::store::<VpnSubscription>();
    fill_cache(&subs, count, &mut writer).await;
    let ctx = Arc::new(Context::new(
        client.clone(),
        Reporter {
            controller: "wgsub-operator".into(),
            instance: Some("bench".into()),
        },
        Settings {
            default_server: "wg".into(),
            retention: SignedDuration::from_hours(24 * 30),
            keys_namespace: None,
        },
        Arc::new(Metrics::new()),
        Arc::new(Timestamp::now),
    ));
    println!(
        "operator process: subscription cache filled, RSS {:.1} MiB",
        rss_mib("self", "VmRSS:")
    );

    let started = Instant::now();
    let failures = futures::stream::iter(store.state())
        .map(|sub| controller::reconcile(sub, ctx.clone()))
        .buffer_unordered(concurrency)
        .filter(|result| futures::future::ready(result.is_err()))
        .count()
        .await;
    let took = started.elapsed();
    println!(
        "reconciled {count} subscriptions (concurrency {concurrency}) in {:.2} s ({:.0}/s), {failures} failures",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64(),
    );
    println!(
        "operator process: RSS {:.1} MiB after the run",
        rss_mib("self", "VmRSS:")
    );
    fill_cache(&subs, count, &mut writer).await;
    println!(
        "operator process: RSS {:.1} MiB with the cache refilled, peak RSS {:.1} MiB",
        rss_mib("self", "VmRSS:"),
        rss_mib("self", "VmHWM:")
    );
    println!(
        "API process (the fake alone, holding the final state): RSS {:.1} MiB, peak RSS {:.1} MiB",
        rss_mib(&api_pid, "VmRSS:"),
        rss_mib(&api_pid, "VmHWM:")
    );

    let peers: Api<WgPeer> = Api::namespaced(client, NS);
    let peers = peers.list(&ListParams::default()).await.expect("list");
    let addresses: BTreeSet<String> = peers
        .items
        .iter()
        .filter_map(|p| p.spec.address.clone())
        .collect();
    let published = peers
        .items
        .iter()
        .filter(|p| p.spec.public_key.is_some())
        .count();
    println!(
        "{} peers with {} distinct addresses, {published} with a published key",
        peers.items.len(),
        addresses.len(),
    );
    drop(api.stdin.take());
    api.wait().expect("the API process stops");
    assert_eq!(failures, 0);
    assert_eq!(peers.items.len(), count as usize);
    assert_eq!(addresses.len(), peers.items.len());
    assert_eq!(published, peers.items.len());
    assert!(peers.items.iter().all(|p| p.name_any().ends_with("-1")));
}

fn allocation_on_a_full_slash_16() {
    let pool: ipnet::Ipv4Net = "10.8.0.0/16".parse().expect("pool");
    let mut used = UsedAddresses::default();
    // The server holds .0.1; clients hold the 60,000 addresses after it.
    let first = u32::from(pool.network()) + 2;
    for i in 0..60_000 {
        used.claim_v4(std::net::Ipv4Addr::from(first + i), &format!("p{i}"));
    }
    // Held addresses are kept as runs: the first allocation after a load costs what the others do.
    let started = Instant::now();
    used.allocate_v4(pool, "first").expect("room");
    let first = started.elapsed();
    let rounds = 1_000;
    let started = Instant::now();
    for i in 0..rounds {
        used.allocate_v4(pool, &format!("q{i}")).expect("room");
    }
    let each = started.elapsed() / rounds;
    println!(
        "allocation on a /16 with 60,000 addresses in use: first {:.1} µs, then {:.2} µs per allocation",
        first.as_secs_f64() * 1e6,
        each.as_secs_f64() * 1e6
    );
    assert!(first < Duration::from_millis(1));
    assert!(each < Duration::from_millis(1));
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-fake") {
        let count = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
        serve_fake(count).await;
        return;
    }
    let count = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let concurrency = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(8);
    allocation_on_a_full_slash_16();
    reconcile_many(count, concurrency).await;
}
