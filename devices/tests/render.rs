//! A device's config rendered from the caches of what the real Kubernetes API server of the
//! test process holds (`wgsub_testkit::envtest`, a namespace per test): the peer's `WgServer`
//! (its public key published through the status subresource) and its private key `Secret` (in
//! the peer keys namespace, the only place the chart lets them read Secrets),
//! watched by the api's and by the bot's ServiceAccount under the chart's RBAC — the two
//! callers of this crate — with no call refused; each missing piece named as not ready; and a
//! Secret without the `wgsub.io/peer` label never cached.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::{SecretKeyRef, WgPeer, WgPeerSpec, WgServer};
use wgsub_devices::{
    CacheOptions, Caches, DeviceConfigError, RenderedConfig, render_device_config,
};
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, peer_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;

/// The components that render configs.
const READERS: [&str; 2] = ["api", "bot"];

/// A namespace with the chart's RBAC and, as asked, the server `main` (with or without its
/// published key) and the key Secret `tg-1-1-key` holding `key`, labelled as the operator
/// labels it.
async fn cluster(server: Option<bool>, key: Option<&PrivateKey>) -> String {
    cluster_with(server, key, true).await
}

async fn cluster_with(server: Option<bool>, key: Option<&PrivateKey>, labelled: bool) -> String {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("devices").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let admin = plane.admin_client();
    if let Some(with_key) = server {
        let servers: Api<WgServer> = Api::namespaced(admin.clone(), &ns);
        servers
            .create(
                &PostParams::default(),
                &fixtures::server("main", "10.8.0.0/24"),
            )
            .await
            .unwrap();
        if with_key {
            fixtures::publish_server_key(&servers, "main").await;
        }
    }
    if let Some(key) = key {
        let mut secret = fixtures::key_secret("tg-1-1", key);
        if !labelled {
            secret.metadata.labels = None;
        }
        Api::<Secret>::namespaced(admin, &peer_keys_namespace(&ns))
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    ns
}

fn peer(key_secret: Option<&str>) -> WgPeer {
    WgPeer::new(
        "tg-1-1",
        WgPeerSpec {
            server: "main".into(),
            public_key: None,
            private_key_secret_ref: key_secret.map(|name| SecretKeyRef::new(name, "privateKey")),
            preshared_key_secret_ref: None,
            address: Some("10.8.0.2/32".into()),
            address6: None,
            expires_at: None,
            enabled: true,
            device_name: Some("My Phone".into()),
        },
    )
}

/// Renders `peer` from caches watched as `component` (its ServiceAccount under the chart's
/// RBAC) once they have synced, and checks that the server refused none of its calls.
async fn render_as(
    component: &str,
    ns: &str,
    peer: &WgPeer,
) -> Result<RenderedConfig, DeviceConfigError> {
    let plane = ControlPlane::with_crds();
    let client = component_client(plane, ns, component).await;
    let caches = Caches::spawn(
        client,
        ns,
        CacheOptions {
            keys_namespace: Some(peer_keys_namespace(ns)),
            ..CacheOptions::default()
        },
    );
    assert!(
        caches.synced(Duration::from_secs(10)).await,
        "{component}: synced"
    );
    let rendered = render_device_config(&caches, peer, "1");
    assert_nothing_forbidden(plane, ns, component);
    rendered
}

#[tokio::test]
async fn a_ready_peer_renders_its_config_and_file_name_for_the_api_and_the_bot() {
    let key = PrivateKey::generate();
    let ns = cluster(Some(true), Some(&key)).await;
    for component in READERS {
        let rendered = render_as(component, &ns, &peer(Some("tg-1-1-key")))
            .await
            .unwrap_or_else(|e| panic!("{component}: {e}"));
        assert!(
            rendered
                .text
                .contains(&format!("PrivateKey = {}", key.to_base64().as_str()))
        );
        assert!(rendered.text.contains("Endpoint = vpn.example.com:51820"));
        assert_eq!(rendered.file_name, "wgsub-My-Phone.conf");
        assert!(!format!("{rendered:?}").contains(key.to_base64().as_str()));
    }
}

#[tokio::test]
async fn each_missing_piece_is_named_as_not_ready() {
    let key = PrivateKey::generate();
    let cases = [
        (Some(true), Some(&key), None, "no key held by wgsub"),
        (
            None,
            Some(&key),
            Some("tg-1-1-key"),
            "server does not exist",
        ),
        (Some(false), Some(&key), Some("tg-1-1-key"), "server"),
        (Some(true), None, Some("tg-1-1-key"), "key is not ready"),
    ];
    for (server, key, secret, expected) in cases {
        let ns = cluster(server, key).await;
        for component in READERS {
            match render_as(component, &ns, &peer(secret)).await {
                Err(DeviceConfigError::NotReady(message)) => {
                    assert!(message.contains(expected), "{message} ∌ {expected}");
                }
                other => panic!("{component}: expected NotReady({expected}), got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_secret_without_the_peer_label_is_never_cached_so_never_served() {
    let key = PrivateKey::generate();
    let ns = cluster_with(Some(true), Some(&key), false).await;
    for component in READERS {
        match render_as(component, &ns, &peer(Some("tg-1-1-key"))).await {
            Err(DeviceConfigError::NotReady(message)) => {
                assert!(message.contains("key is not ready"), "{message}");
            }
            other => panic!("{component}: expected NotReady, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn before_the_caches_sync_rendering_is_refused_not_answered_not_ready() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("devices-unsynced").await;
    // No RBAC: the ServiceAccount cannot list, so the caches never sync.
    let client = plane.service_account_client(&ns, "wgsub-api").await;
    let caches = Caches::spawn(client, &ns, CacheOptions::default());
    assert!(!caches.synced(Duration::from_secs(2)).await);
    assert!(matches!(
        render_device_config(&caches, &peer(Some("tg-1-1-key")), "1"),
        Err(DeviceConfigError::Cache(
            wgsub_devices::CacheError::NotSynced(_)
        ))
    ));
}
