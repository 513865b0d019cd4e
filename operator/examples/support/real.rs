//! What the operator's benchmarks on the real API server share: the `WgServer` they create,
//! the operator binary run as a process (as the chart runs it) and its `/metrics`, and what a
//! keyed peer is.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use wgsub_crds::{WgPeer, WgServer};
use wgsub_testkit::fixtures;

/// The one `WgServer` (named `wg`, a /16 pool).
pub fn server() -> WgServer {
    fixtures::server("wg", "10.8.0.0/16")
}

/// The operator binary: `WGSUB_OPERATOR_BIN`, or beside the folder of the running example.
pub fn operator_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WGSUB_OPERATOR_BIN") {
        return path.into();
    }
    let example = std::env::current_exe().expect("the example's path");
    let binary = example
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("wgsub-operator"))
        .expect("the profile folder");
    assert!(
        binary.exists(),
        "{} is missing: cargo build --release -p wgsub-operator --bin wgsub-operator",
        binary.display()
    );
    binary
}

/// A free loopback port for the operator's HTTP server.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The operator's own metrics worth printing, from its `/metrics`.
pub async fn operator_metrics(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let Ok(text) = async { reqwest::get(url).await?.text().await }.await else {
        return "(no /metrics)".to_owned();
    };
    text.lines()
        .filter(|line| {
            [
                "wgsub_operator_reconciles_total",
                "wgsub_operator_events_dropped_total",
                "wgsub_operator_peer_writes_unseen",
            ]
            .iter()
            .any(|name| line.starts_with(name))
        })
        .map(|line| line.trim_start_matches("wgsub_operator_"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The operator as a process on `namespace` with default server `wg` and its key Secrets in the
/// chart's peer keys namespace (`<namespace>-keys`, as the chart runs it), its stdout in `log`.
pub fn start_operator(
    namespace: &str,
    kubeconfig: &PathBuf,
    log: &PathBuf,
    concurrency: Option<&str>,
    port: u16,
) -> Child {
    let mut command = Command::new(operator_binary());
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", kubeconfig)
        .env("WGSUB_NAMESPACE", namespace)
        .env(
            "WGSUB_KEYS_NAMESPACE",
            wgsub_testkit::chart::peer_keys_namespace(namespace),
        )
        .env("WGSUB_DEFAULT_SERVER", "wg")
        .env("WGSUB_IDENTITY", "bench")
        .env("WGSUB_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("WGSUB_LOG", "warn")
        // As the chart runs it (glibc keeps two malloc arenas, not one per busy thread).
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(std::fs::File::create(log).expect("a log file"))
        .stderr(Stdio::inherit());
    if let Some(concurrency) = concurrency {
        command.env("WGSUB_CONCURRENCY", concurrency);
    }
    command.spawn().expect("the operator starts")
}

/// The address of a peer with an address and a published key.
pub fn keyed(peer: &WgPeer) -> Option<String> {
    peer.spec.public_key.as_ref()?;
    peer.spec.private_key_secret_ref.as_ref()?;
    peer.spec.address.clone()
}
