//! Benchmark: reconciles N paid subscriptions (default 10,000) against the in-memory API
//! server with the operator's real reconcile, and times address allocation on a /16 with
//! 60,000 addresses in use. Prints total time, reconciles per second and peak RSS.
//!
//! `cargo run --release -p wgsub-operator --example reconcile_bench -- [subscriptions] [concurrency]`

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::Reporter;
use kube_fake_client::ClientBuilder;
use wgsub_crds::{
    SecretKeyRef, VpnSubscription, VpnSubscriptionSpec, VpnSubscriptionStatus, WgPeer, WgServer,
    WgServerSpec,
};
use wgsub_operator::addresses::UsedAddresses;
use wgsub_operator::controller::{self, Context, Settings};
use wgsub_operator::metrics::Metrics;

const NS: &str = "vpn";

fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
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
    let mut server = WgServer::new(
        "wg",
        WgServerSpec {
            endpoint: "vpn.example.com:51820".into(),
            listen_port: 51820,
            interface_name: "wg0".into(),
            address_pool: "10.8.0.0/16".into(),
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

async fn reconcile_many(count: i64, concurrency: usize) {
    let client = ClientBuilder::new()
        .with_resource::<VpnSubscription>()
        .with_resource::<WgPeer>()
        .with_resource::<WgServer>()
        .with_object(server())
        .build()
        .await
        .expect("in-memory API");
    let now = Timestamp::now();
    let paid_until = now + SignedDuration::from_hours(24 * 30);
    let subs: Api<VpnSubscription> = Api::namespaced(client.clone(), NS);
    let mut created = Vec::with_capacity(count as usize);
    for user in 1..=count {
        let mut spec = VpnSubscriptionSpec::for_user(user);
        spec.paid_until = Some(paid_until);
        let mut sub = VpnSubscription::new(&format!("tg-{user}"), spec);
        sub.status = Some(VpnSubscriptionStatus::default());
        created.push(Arc::new(
            subs.create(&PostParams::default(), &sub)
                .await
                .expect("create"),
        ));
    }
    println!(
        "{count} subscriptions stored in the in-memory API: RSS {:.1} MiB",
        rss_mib("VmRSS:")
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        Reporter {
            controller: "wgsub-operator".into(),
            instance: Some("bench".into()),
        },
        Settings {
            default_server: "wg".into(),
            retention: SignedDuration::from_hours(24 * 30),
        },
        Arc::new(Metrics::new()),
        Arc::new(Timestamp::now),
    ));

    let started = Instant::now();
    let failures = futures::stream::iter(created)
        .map(|sub| controller::reconcile(sub, ctx.clone()))
        .buffer_unordered(concurrency)
        .filter(|result| futures::future::ready(result.is_err()))
        .count()
        .await;
    let took = started.elapsed();
    println!("after reconciling: RSS {:.1} MiB", rss_mib("VmRSS:"));

    let peers: Api<WgPeer> = Api::namespaced(client, NS);
    let peers = peers.list(&Default::default()).await.expect("list");
    let addresses: BTreeSet<String> = peers
        .items
        .iter()
        .filter_map(|p| p.spec.address.clone())
        .collect();
    println!(
        "reconciled {count} subscriptions (concurrency {concurrency}) in {:.2} s ({:.0}/s), {failures} failures, {} peers with {} distinct addresses",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64(),
        peers.items.len(),
        addresses.len(),
    );
    assert_eq!(addresses.len(), peers.items.len());
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
    // The first allocation walks every held address; the next ones start at the low-water mark.
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
        "allocation on a /16 with 60,000 addresses in use: first {:.1} µs (full walk), then {:.2} µs per allocation",
        first.as_secs_f64() * 1e6,
        each.as_secs_f64() * 1e6
    );
    assert!(each < Duration::from_millis(1));
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let concurrency = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    // Allocation first: after the reconcile run the in-memory API frees its objects on a
    // runtime thread, and that contention would be measured instead.
    allocation_on_a_full_slash_16();
    reconcile_many(count, concurrency).await;
    println!("peak RSS: {:.1} MiB", rss_mib("VmHWM:"));
}
