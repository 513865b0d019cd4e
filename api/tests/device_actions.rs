//! Self-served devices over HTTP on the real Kubernetes API server (the support harness: a
//! namespace per test with the chart's RBAC, the handlers authenticated as the api's
//! ServiceAccount): deleting a device, rotating its key, renaming it, and the device list's
//! `connected`, traffic and last handshake — including every refusal (another user's or an
//! unknown device, an inactive subscription, an empty or overlong name) changing nothing, and
//! no call the chart does not grant.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use wgsub_crds::devices::ANNOTATION_DEVICES_REMOVED;
use wgsub_crds::{VpnSubscription, WgPeer};

mod support;

use support::*;

fn names(devices: &Value) -> Vec<String> {
    devices
        .as_array()
        .expect("a device list")
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn peer(h: &Harness, name: &str) -> Option<WgPeer> {
    Api::<WgPeer>::namespaced(h.admin.clone(), &h.namespace)
        .get_opt(name)
        .await
        .unwrap()
}

async fn removed_mark(h: &Harness, user: i64) -> Option<String> {
    h.subscription(user)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
        .get(ANNOTATION_DEVICES_REMOVED)
        .cloned()
}

#[tokio::test]
async fn the_owner_deletes_devices_down_to_none_and_the_subscription_says_so_until_one_is_added() {
    let h = harness("delete").await;
    h.active_user(801).await;
    h.ready_device(801, 2, "main", "10.8.0.102/32", "Laptop")
        .await;

    let (status, body) = h
        .user_call(801, "DELETE", "/api/v1/me/peers/tg-801-2", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(peer(&h, "tg-801-2").await.is_none(), "the peer is deleted");
    let (_, listed) = h.user_call(801, "GET", "/api/v1/me/peers", None).await;
    assert_eq!(
        names(&listed),
        ["tg-801-1"],
        "the next read no longer lists it"
    );
    let (status, error) = h
        .user_call(801, "GET", "/api/v1/me/peers/tg-801-2/config", None)
        .await;
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::NOT_FOUND, json!("peer_not_found"))
    );
    assert_eq!(removed_mark(&h, 801).await, None, "a device is left");

    // The last device: the subscription is marked so the operator does not give it back.
    let (status, _) = h
        .user_call(801, "DELETE", "/api/v1/me/peers/tg-801-1", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(peer(&h, "tg-801-1").await.is_none());
    assert_eq!(removed_mark(&h, 801).await.as_deref(), Some("true"));
    let (_, me) = h.user_call(801, "GET", "/api/v1/me", None).await;
    assert_eq!(me["devices"], json!([]));

    // Deleting it again: 404, as for any device that is not there.
    let (status, error) = h
        .user_call(801, "DELETE", "/api/v1/me/peers/tg-801-1", None)
        .await;
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::NOT_FOUND, json!("peer_not_found"))
    );

    // Adding a device removes the mark.
    let sub = h.subscription(801).await.unwrap();
    h.visible(&sub).await;
    let (status, added) = h
        .user_call(
            801,
            "POST",
            "/api/v1/me/peers",
            Some(json!({"deviceName": "Tablet"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["name"], "tg-801-1");
    assert_eq!(removed_mark(&h, 801).await, None);
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn deleting_or_rotating_another_users_or_an_unknown_device_is_404_and_changes_nothing() {
    let h = harness("foreign").await;
    h.active_user(811).await;
    h.active_user(812).await;
    let before = peer(&h, "tg-812-1").await.unwrap();
    for (method_, uri) in [
        ("DELETE", "/api/v1/me/peers/tg-812-1"),
        ("POST", "/api/v1/me/peers/tg-812-1/rotate"),
        ("DELETE", "/api/v1/me/peers/tg-811-7"),
        ("POST", "/api/v1/me/peers/tg-811-7/rotate"),
        ("DELETE", "/api/v1/me/peers/main"),
        ("DELETE", "/api/v1/me/peers/..%2Ftg-812-1"),
    ] {
        let (status, error) = h.user_call(811, method_, uri, None).await;
        assert_eq!(
            (status, error["code"].clone()),
            (StatusCode::NOT_FOUND, json!("peer_not_found")),
            "{method_} {uri}: {error}"
        );
    }
    let after = peer(&h, "tg-812-1").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the other user's device is untouched"
    );
    let peers = Api::<WgPeer>::namespaced(h.admin.clone(), &h.namespace)
        .list(&Default::default())
        .await
        .unwrap();
    let mut all: Vec<String> = peers
        .items
        .iter()
        .map(kube::ResourceExt::name_any)
        .collect();
    all.sort();
    assert_eq!(all, ["tg-811-1", "tg-812-1"], "nothing created or deleted");
    assert_eq!(removed_mark(&h, 812).await, None);
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn rotating_replaces_the_device_under_a_new_name_with_no_key_until_the_operator_gives_one() {
    let h = harness("rotate").await;
    h.active_user(821).await;
    let old = peer(&h, "tg-821-1").await.unwrap();

    let (status, device) = h
        .user_call(821, "POST", "/api/v1/me/peers/tg-821-1/rotate", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!(device["name"], "tg-821-2");
    assert_eq!(device["deviceName"], "Phone");
    assert_eq!(
        (device["ready"].clone(), device["enabled"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(device["connected"], false);
    assert!(
        peer(&h, "tg-821-1").await.is_none(),
        "the old peer and its key are gone"
    );
    let new = peer(&h, "tg-821-2").await.unwrap();
    assert!(new.spec.public_key.is_none() && new.spec.address.is_none());
    assert_ne!(new.spec.public_key, old.spec.public_key);
    assert_eq!(
        new.metadata.owner_references.as_ref().unwrap()[0].name,
        "tg-821"
    );
    let (_, listed) = h.user_call(821, "GET", "/api/v1/me/peers", None).await;
    assert_eq!(names(&listed), ["tg-821-2"]);
    // The old config is no longer served; the new one waits for its key.
    let (status, _) = h
        .user_call(821, "GET", "/api/v1/me/peers/tg-821-1/config", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) = h
        .user_call(821, "GET", "/api/v1/me/peers/tg-821-2/config", None)
        .await;
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::CONFLICT, json!("peer_not_ready"))
    );
    // Rotating never leaves the user without a device, so the subscription is not marked.
    assert_eq!(removed_mark(&h, 821).await, None);
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn an_inactive_subscription_cannot_rotate_and_keeps_its_device() {
    let h = harness("rotate-inactive").await;
    h.active_user(831).await;
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    let mut sub = subs.get("tg-831").await.unwrap();
    sub.spec.paid_until = Some(Timestamp::now() - SignedDuration::from_hours(1));
    let sub = subs
        .replace("tg-831", &Default::default(), &sub)
        .await
        .unwrap();
    h.visible(&sub).await;
    let (status, error) = h
        .user_call(831, "POST", "/api/v1/me/peers/tg-831-1/rotate", None)
        .await;
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::FORBIDDEN, json!("subscription_inactive"))
    );
    assert!(peer(&h, "tg-831-1").await.is_some());
    assert!(peer(&h, "tg-831-2").await.is_none());
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn renaming_to_an_empty_or_overlong_name_is_400_and_changes_nothing() {
    let h = harness("rename").await;
    h.active_user(841).await;
    for name in [
        String::new(),
        "   ".into(),
        "\u{200B}".into(),
        "x".repeat(200),
    ] {
        let (status, error) = h
            .user_call(
                841,
                "PATCH",
                "/api/v1/me/peers/tg-841-1",
                Some(json!({"deviceName": name})),
            )
            .await;
        assert_eq!(
            (status, error["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("invalid_device_name")),
            "{name:?}"
        );
        assert!(error["message"].is_string());
        let stored = peer(&h, "tg-841-1").await.unwrap();
        assert_eq!(stored.spec.device_name.as_deref(), Some("Phone"));
    }
    let (status, device) = h
        .user_call(
            841,
            "PATCH",
            "/api/v1/me/peers/tg-841-1",
            Some(json!({"deviceName": " Work phone "})),
        )
        .await;
    assert_eq!(
        (status, &device["deviceName"]),
        (StatusCode::OK, &json!("Work phone"))
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn the_device_list_shows_handshake_traffic_and_connected() {
    let h = harness("connected").await;
    h.active_user(851).await;
    h.ready_device(851, 2, "main", "10.8.0.152/32", "Laptop")
        .await;
    let peers: Api<WgPeer> = Api::namespaced(h.admin.clone(), &h.namespace);
    let recent = Timestamp::now() - SignedDuration::from_secs(30);
    let stale = Timestamp::now() - SignedDuration::from_mins(10);
    for (name, at, rx, tx) in [("tg-851-1", recent, 1200, 3400), ("tg-851-2", stale, 5, 6)] {
        let status = json!({
            "apiVersion": "wgsub.io/v1alpha1", "kind": "WgPeer", "metadata": {"name": name},
            "status": {"active": true, "lastHandshake": at.to_string(), "rxBytes": rx, "txBytes": tx},
        });
        let written = peers
            .patch_status(
                name,
                &PatchParams::apply("wgsub-test-agent"),
                &Patch::Apply(&status),
            )
            .await
            .unwrap();
        h.visible(&written).await;
    }
    let (status, listed) = h.user_call(851, "GET", "/api/v1/me/peers", None).await;
    assert_eq!(status, StatusCode::OK);
    let shown: Vec<(bool, i64, i64, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["connected"].as_bool().unwrap(),
                d["rxBytes"].as_i64().unwrap(),
                d["txBytes"].as_i64().unwrap(),
                d["lastHandshake"].is_string(),
            )
        })
        .collect();
    assert_eq!(shown, [(true, 1200, 3400, true), (false, 5, 6, true)]);
    let (_, me) = h.user_call(851, "GET", "/api/v1/me", None).await;
    assert_eq!(me["devices"][0]["connected"], true);
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn the_openapi_document_has_delete_rotate_and_connected() {
    let h = harness("device-openapi").await;
    let (status, body, _) = h
        .call(
            Request::get("/openapi.json").body(Body::empty()).unwrap(),
            "127.0.0.1:1",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let device = &doc["paths"]["/api/v1/me/peers/{name}"];
    assert!(device["delete"]["responses"]["204"].is_object(), "{device}");
    assert!(device["delete"]["responses"]["404"].is_object());
    assert!(device["patch"].is_object());
    let rotate = &doc["paths"]["/api/v1/me/peers/{name}/rotate"]["post"];
    assert!(rotate["responses"]["200"].is_object(), "{rotate}");
    let view = &doc["components"]["schemas"]["DeviceView"];
    assert_eq!(view["properties"]["connected"]["type"], "boolean", "{view}");
    assert!(
        view["required"]
            .as_array()
            .unwrap()
            .contains(&json!("connected"))
    );
}
