//! The operator's real `controller::run` (its watches, mappers and reconciles) against an
//! in-process API server with list and watch semantics (`wgsub_testkit::fake_api`): subscriptions
//! arrive through the watch, a deleted peer and a changed server trigger reconciles, every call
//! is one the RBAC contract (`api-calls.yaml`) grants, and the controller stops on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::events::Reporter;
use serde_json::json;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::{CONDITION_READY, LABEL_PEER, LABEL_SUBSCRIPTION, condition};
use wgsub_crds::{
    SecretKeyRef, SubscriptionPhase, VpnSubscription, VpnSubscriptionSpec, WgPeer, WgPeerSpec,
    WgServer, WgServerSpec,
};
use wgsub_operator::controller::{self, Context, Settings};
use wgsub_operator::decision::reasons;
use wgsub_operator::metrics::Metrics;
use wgsub_testkit::fake_api::{FakeApi, Recorded, ungranted};

const NS: &str = "vpn";
const WITHIN: Duration = Duration::from_secs(10);
/// Peers of another server, more than one page of the watcher's list (500).
const OTHER_PEERS: usize = 520;

fn server(name: &str, pool: &str) -> WgServer {
    let mut server = WgServer::new(
        name,
        WgServerSpec {
            endpoint: "vpn.example.com:51820".into(),
            listen_port: 51820,
            interface_name: "wg0".into(),
            address_pool: pool.into(),
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

fn other_peer(i: usize) -> WgPeer {
    let mut peer = WgPeer::new(
        &format!("other-{i}"),
        WgPeerSpec {
            server: "other".into(),
            public_key: None,
            private_key_secret_ref: None,
            preshared_key_secret_ref: None,
            address: Some(format!("10.9.{}.{}/32", i / 250, i % 250 + 2)),
            address6: None,
            expires_at: None,
            enabled: true,
            device_name: None,
        },
    );
    peer.metadata.namespace = Some(NS.into());
    peer
}

/// Polls `check` until it gives a value; fails naming `what` after `within`.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the operator has made no request for 300 ms (its reconciles are done).
async fn settled(api: &FakeApi) -> usize {
    let mut seen = api.requests().len();
    let mut quiet_since = Instant::now();
    eventually("the operator stops making requests", || {
        let now = api.requests().len();
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        }
        (quiet_since.elapsed() >= Duration::from_millis(300)).then_some(now)
    })
    .await
}

fn path(resource: &str, name: Option<&str>) -> String {
    let base = match resource {
        "secrets" => format!("/api/v1/namespaces/{NS}/secrets"),
        other => format!("/apis/wgsub.io/v1alpha1/namespaces/{NS}/{other}"),
    };
    match name {
        Some(name) => format!("{base}/{name}"),
        None => base,
    }
}

fn gets_of(requests: &[Recorded], resource: &str, name: &str) -> usize {
    let path = path(resource, Some(name));
    requests
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .count()
}

/// The peer `name` once it carries a published key and an address, with its key Secret.
fn published(api: &FakeApi, name: &str) -> Option<(WgPeer, Secret)> {
    let peer = api.get::<WgPeer>(NS, name)?;
    peer.spec.public_key.as_ref()?;
    peer.spec.address.as_ref()?;
    let reference = peer.spec.private_key_secret_ref.clone()?;
    let secret = api.get::<Secret>(NS, &reference.name)?;
    // The Secret belongs to this very peer (not to an earlier one of the same name).
    let owner = secret.owner_references().first()?.uid.clone();
    (Some(owner) == peer.metadata.uid).then_some((peer, secret))
}

fn assert_key_matches(peer: &WgPeer, secret: &Secret) {
    let reference = peer.spec.private_key_secret_ref.as_ref().unwrap();
    let bytes = &secret.data.as_ref().unwrap()[&reference.key].0;
    let key = PrivateKey::from_base64(std::str::from_utf8(bytes).unwrap()).unwrap();
    assert_eq!(
        peer.spec.public_key.as_deref(),
        Some(key.public_key().to_base64().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_controller_follows_watches_with_only_granted_calls_and_stops_on_shutdown() {
    let api = FakeApi::start().await;
    api.create(&server("wg", "10.8.0.0/24"));
    for i in 0..OTHER_PEERS {
        api.create(&other_peer(i));
    }
    let ctx = Arc::new(Context::new(
        api.client(),
        Reporter {
            controller: "wgsub-operator".into(),
            instance: Some("test".into()),
        },
        Settings {
            default_server: "wg".into(),
            retention: SignedDuration::from_hours(24 * 30),
        },
        Arc::new(Metrics::new()),
        Arc::new(Timestamp::now),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(ctx, Some(NS.into()), 2, async move {
        let _ = stopped.await;
    }));

    // The four watches are open (each after its initial list) before the subscription exists.
    for resource in ["vpnsubscriptions", "wgpeers", "secrets", "wgservers"] {
        let collection = path(resource, None);
        eventually(&format!("a watch of {resource}"), || {
            api.requests()
                .iter()
                .any(|r| r.is_watch() && r.path == collection)
                .then_some(())
        })
        .await;
    }

    // 1. A paid subscription created now can only arrive through the watch.
    let paid_until = Timestamp::now() + SignedDuration::from_hours(24 * 30);
    let mut spec = VpnSubscriptionSpec::for_user(1);
    spec.paid_until = Some(paid_until);
    let mut sub = VpnSubscription::new("tg-1", spec);
    sub.metadata.namespace = Some(NS.into());
    api.create(&sub);

    let (peer, secret) = eventually("tg-1 gets a published peer with its key Secret", || {
        published(&api, "tg-1-1")
    })
    .await;
    assert_eq!(peer.spec.address.as_deref(), Some("10.8.0.2/32"));
    assert_eq!(peer.spec.expires_at, Some(paid_until));
    assert_eq!(peer.labels()[LABEL_SUBSCRIPTION], "tg-1");
    assert_eq!(secret.labels()[LABEL_PEER], "tg-1-1");
    assert_key_matches(&peer, &secret);
    let status = eventually("tg-1's status shows it active", || {
        let status = api.get::<VpnSubscription>(NS, "tg-1")?.status?;
        (status.phase == Some(SubscriptionPhase::Active)).then_some(status)
    })
    .await;
    assert_eq!(status.peers, vec!["tg-1-1".to_owned()]);
    assert_eq!(status.expires_at, Some(paid_until));
    assert_eq!(
        condition(&status.conditions, CONDITION_READY)
            .unwrap()
            .reason,
        reasons::READY
    );

    // 2. A peer deleted by hand (its key Secret not yet collected) comes back, with a new key:
    // only the metadata watch of the peers reports the deletion.
    settled(&api).await;
    let deleted_uid = peer.metadata.uid.clone();
    api.delete::<WgPeer>(NS, "tg-1-1");
    let (again, secret) = eventually("the deleted peer is recreated", || {
        published(&api, "tg-1-1").filter(|(p, _)| p.metadata.uid != deleted_uid)
    })
    .await;
    // A fresh address of the pool: the operator's bookkeeping learns of addresses freed by
    // others only when it reads the pool again (when it looks full), so the old one stays held.
    let address = again.spec.address.as_deref().unwrap();
    assert!(
        address.starts_with("10.8.0.") && address.ends_with("/32"),
        "{address}"
    );
    assert_ne!(again.spec.public_key, peer.spec.public_key);
    assert_key_matches(&again, &secret);

    // 3. A change of the server reconciles the subscriptions on it: each reads its server and
    // peer again (nothing else asks for them while the operator is idle).
    let before = settled(&api).await;
    api.modify::<WgServer>(NS, "wg", |server| {
        server["spec"]["dns"] = json!(["10.8.0.1"]);
    });
    eventually("a server change reconciles tg-1", || {
        let after = &api.requests()[before..];
        (gets_of(after, "wgservers", "wg") > 0 && gets_of(after, "wgpeers", "tg-1-1") > 0)
            .then_some(())
    })
    .await;

    // Shutdown: the controller returns and closes its watches.
    settled(&api).await;
    stop.send(()).expect("the controller is running");
    tokio::time::timeout(WITHIN, running)
        .await
        .expect("the controller stops within the deadline")
        .expect("the controller does not panic");
    eventually("every watch is closed", || {
        (api.open_watches() == 0).then_some(())
    })
    .await;

    // 4. Every call is granted by api-calls.yaml, and the real API would have accepted it.
    let requests = api.requests();
    let contract = include_str!("../api-calls.yaml");
    let refused = ungranted(contract, &requests);
    assert!(refused.is_empty(), "{}", refused.join("\n"));
    let of = |resource: &str| -> Vec<&Recorded> {
        let collection = path(resource, None);
        requests.iter().filter(|r| r.path == collection).collect()
    };
    // Peers and key Secrets: listed and watched metadata-only, the Secrets by label.
    for resource in ["wgpeers", "secrets"] {
        for request in of(resource).into_iter().filter(|r| r.method == "GET") {
            assert!(
                request.wants_metadata_only()
                    || !request.query.contains_key("limit") && !request.is_watch(),
                "{resource} are watched metadata-only: {request:?}"
            );
            if resource == "secrets" {
                assert_eq!(
                    request.query.get("labelSelector").map(String::as_str),
                    Some(LABEL_PEER),
                    "key Secrets are watched by label: {request:?}"
                );
            }
        }
    }
    let peer_watch_lists: Vec<&Recorded> = of("wgpeers")
        .into_iter()
        .filter(|r| !r.is_watch() && r.wants_metadata_only())
        .collect();
    assert!(
        peer_watch_lists
            .iter()
            .any(|r| r.query.contains_key("continue")),
        "the {OTHER_PEERS} peers are listed in pages: {peer_watch_lists:?}"
    );
    for resource in ["vpnsubscriptions", "wgservers"] {
        assert!(
            of(resource).iter().all(|r| !r.wants_metadata_only()),
            "{resource} are watched whole"
        );
    }
    // The few servers are listed whole from the API server's watch cache, not paged from etcd.
    let server_lists: Vec<&Recorded> = of("wgservers")
        .into_iter()
        .filter(|r| r.method == "GET" && !r.is_watch())
        .collect();
    assert!(
        !server_lists.is_empty()
            && server_lists.iter().all(|r| {
                r.query.get("resourceVersion").map(String::as_str) == Some("0")
                    && !r.query.contains_key("limit")
            }),
        "{server_lists:?}"
    );
    // Peers, key Secrets and statuses are written by server-side apply with the field manager.
    for request in requests.iter().filter(|r| r.method == "PATCH") {
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{request:?}"
        );
        assert_eq!(
            request.query.get("fieldManager").map(String::as_str),
            Some("wgsub-operator"),
            "{request:?}"
        );
    }
    // The watches were asked for bookmarks and resumed from their list's resourceVersion.
    for resource in ["vpnsubscriptions", "wgpeers", "secrets", "wgservers"] {
        for request in of(resource).into_iter().filter(|r| r.is_watch()) {
            assert_eq!(
                request.query.get("allowWatchBookmarks").map(String::as_str),
                Some("true")
            );
            assert!(
                request
                    .query
                    .get("resourceVersion")
                    .is_some_and(|rv| rv != "0"),
                "{request:?}"
            );
        }
    }
}
