//! The API end to end over HTTP (tower `oneshot`): real PostgreSQL (a fresh database per test
//! from `WGSUB_TEST_DATABASE_URL`), YooKassa faked by wiremock (checking Basic auth and the
//! Idempotence-Key), and the real Kubernetes API server of the test process
//! (`wgsub_testkit::envtest`, a namespace per test) with the chart's RBAC applied: the handlers
//! talk to it as the api's ServiceAccount, so server-side apply of `VpnSubscription.spec` and
//! `WgPeer.spec.enabled/deviceName`, creating device peers and reading key Secrets are judged by
//! the server's schemas, field managers and RBAC, and every test that touches Kubernetes ends
//! with no call refused. One test injects a fault a real server cannot be made to show and keeps
//! an in-memory Kubernetes (kube-fake-client); its doc comment says so.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use jiff::{SignedDuration, Timestamp};
use kube::Api;
use serde_json::{Value, json};
use wgsub_api::state::FIELD_MANAGER;
use wgsub_crds::{VpnSubscription, WgPeer};
use wgsub_testkit::chart::{apply_chart_rbac, component_client};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;

mod support;

use support::*;

#[tokio::test]
async fn pay_then_webhook_applies_the_ledger_and_writes_paid_until() {
    let h = harness("pay_flow").await;
    h.fake_yookassa("2f000000-000f-5000-8000-00000000aa01", "succeeded")
        .await;
    let (status, created) = h
        .user_call(
            101,
            "POST",
            "/api/v1/payments",
            Some(json!({"plan": "month"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["confirmationUrl"],
        json!("https://yoomoney.example/pay")
    );
    let before = Timestamp::now();
    let status = h
        .webhook(
            notification("payment.succeeded", "2f000000-000f-5000-8000-00000000aa01"),
            YOOKASSA_ADDR,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let sub = h
        .subscription(101)
        .await
        .expect("the subscription was written");
    let until = sub.spec.paid_until.unwrap();
    assert!(until >= before + SignedDuration::from_hours(24 * 30) - SignedDuration::from_secs(5));
    assert_eq!(sub.spec.plan.as_deref(), Some("month"));
    assert_eq!(sub.spec.max_devices, 2);
    let owned = applied_by(&sub.metadata, wgsub_ledger::sync::FIELD_MANAGER);
    for field in ["f:paidUntil", "f:plan", "f:maxDevices"] {
        assert!(owned["f:spec"].get(field).is_some(), "{field}: {owned}");
    }
    let outbox = h.state.ledger.unsent_notifications(10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    let audit = h.state.ledger.webhook_deliveries(10).await.unwrap();
    assert_eq!(audit[0].1.reason, "payment_applied");
    let (_, me) = h.user_call(101, "GET", "/api/v1/me", None).await;
    assert_eq!(me["subscription"]["phase"], json!("Active"));
    assert_eq!(me["user"]["id"], json!(101));
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn the_same_webhook_twenty_times_concurrently_is_applied_once() {
    let h = harness("webhook_20").await;
    h.fake_yookassa("2f000000-000f-5000-8000-00000000aa02", "succeeded")
        .await;
    h.user_call(
        102,
        "POST",
        "/api/v1/payments",
        Some(json!({"plan": "month"})),
    )
    .await;
    let body = notification("payment.succeeded", "2f000000-000f-5000-8000-00000000aa02");
    let statuses =
        futures::future::join_all((0..20).map(|_| h.webhook(body.clone(), YOOKASSA_ADDR, None)))
            .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let audit = h.state.ledger.webhook_deliveries(50).await.unwrap();
    let applied = audit
        .iter()
        .filter(|(_, d)| d.reason == "payment_applied")
        .count();
    let duplicates = audit
        .iter()
        .filter(|(_, d)| d.reason == "already_applied")
        .count();
    assert_eq!((applied, duplicates), (1, 19));
    assert_eq!(
        h.state.ledger.unsent_notifications(50).await.unwrap().len(),
        1
    );
    let user = h.state.ledger.user(102).await.unwrap().unwrap();
    let paid = user.entitlement.paid_until.unwrap();
    assert!(paid <= Timestamp::now() + SignedDuration::from_hours(24 * 30));
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_payment_yookassa_calls_pending_changes_nothing() {
    let h = harness("pending").await;
    h.fake_yookassa("2f000000-000f-5000-8000-00000000aa03", "pending")
        .await;
    h.user_call(
        103,
        "POST",
        "/api/v1/payments",
        Some(json!({"plan": "month"})),
    )
    .await;
    // The body claims success; YooKassa says pending, and YooKassa wins.
    let status = h
        .webhook(
            notification("payment.succeeded", "2f000000-000f-5000-8000-00000000aa03"),
            YOOKASSA_ADDR,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.subscription(103).await.is_none());
    assert_eq!(
        h.state
            .ledger
            .user(103)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until,
        None
    );
    assert_eq!(
        h.state.ledger.webhook_deliveries(5).await.unwrap()[0]
            .1
            .reason,
        "payment_pending"
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn webhooks_from_outside_yookassas_ranges_are_refused_and_audited() {
    let h = harness("forbidden").await;
    h.fake_yookassa("2f000000-000f-5000-8000-00000000aa04", "succeeded")
        .await;
    h.user_call(
        104,
        "POST",
        "/api/v1/payments",
        Some(json!({"plan": "month"})),
    )
    .await;
    let body = notification("payment.succeeded", "2f000000-000f-5000-8000-00000000aa04");
    assert_eq!(
        h.webhook(body.clone(), "203.0.113.7:443", None).await,
        StatusCode::FORBIDDEN
    );
    // A forged X-Forwarded-For from an untrusted peer does not help.
    assert_eq!(
        h.webhook(body.clone(), "203.0.113.7:443", Some("185.71.76.10"))
            .await,
        StatusCode::FORBIDDEN
    );
    let audit = h.state.ledger.webhook_deliveries(5).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert!(
        audit
            .iter()
            .all(|(_, d)| d.reason == "forbidden_address" && d.remote_addr == "203.0.113.7")
    );
    assert_eq!(
        h.state
            .ledger
            .user(104)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until,
        None
    );
    // Through the trusted proxy, YooKassa's address is seen and accepted.
    assert_eq!(
        h.webhook(body, "10.1.1.1:443", Some("185.71.76.10")).await,
        StatusCode::OK
    );
    assert!(
        h.state
            .ledger
            .user(104)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until
            .is_some()
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn an_unknown_payment_id_has_no_side_effects() {
    let h = harness("unknown").await;
    h.fake_yookassa("2f000000-000f-5000-8000-00000000aa05", "succeeded")
        .await;
    let status = h
        .webhook(
            notification("payment.succeeded", "2f000000-000f-5000-8000-0000000000ff"),
            YOOKASSA_ADDR,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.state.ledger.webhook_deliveries(5).await.unwrap()[0]
            .1
            .reason,
        "unknown_payment"
    );
    assert!(
        h.state
            .ledger
            .unsent_notifications(5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        h.state.ledger.stats(Timestamp::now()).await.unwrap().users,
        0
    );
    h.assert_nothing_forbidden();
}

/// Keeps the in-memory Kubernetes: the API server answering 500 to the subscription's apply is
/// a fault the real server cannot be made to show.
#[tokio::test]
async fn a_failed_subscription_write_after_the_ledger_commit_is_repaired_by_the_drift_pass() {
    let h = harness_failing_first_subscription_patch("drift").await;
    h.fake_yookassa("2f000000-000f-5000-8000-00000000aa06", "succeeded")
        .await;
    h.user_call(
        106,
        "POST",
        "/api/v1/payments",
        Some(json!({"plan": "month"})),
    )
    .await;
    let status = h
        .webhook(
            notification("payment.succeeded", "2f000000-000f-5000-8000-00000000aa06"),
            YOOKASSA_ADDR,
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the money is recorded, so YooKassa must stop"
    );
    assert!(
        h.subscription(106).await.is_none(),
        "the injected failure stopped the write"
    );
    let report = h
        .state
        .kube
        .sync
        .sync_unsynced(&h.state.ledger, 10)
        .await
        .unwrap();
    assert_eq!(report.applied, 1);
    let sub = h.subscription(106).await.unwrap();
    assert_eq!(
        sub.spec.paid_until,
        h.state
            .ledger
            .user(106)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until
    );
}

#[tokio::test]
async fn a_user_cannot_reach_another_users_devices_on_any_endpoint() {
    let h = harness("isolation").await;
    h.active_user(201).await;
    h.active_user(202).await;
    for (method_, uri, body) in [
        ("GET", "/api/v1/me/peers/tg-202-1/config", None),
        ("GET", "/api/v1/me/peers/tg-202-1/qr", None),
        ("GET", "/api/v1/me/peers/tg-202-1/qr?format=svg", None),
        (
            "PATCH",
            "/api/v1/me/peers/tg-202-1",
            Some(json!({"enabled": false})),
        ),
        ("GET", "/api/v1/me/peers/tg-9999-1/config", None),
        ("GET", "/api/v1/me/peers/..%2Ftg-202-1/config", None),
    ] {
        let (status, error) = h.user_call(201, method_, uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method_} {uri}: {error}");
        assert_eq!(error["code"], json!("peer_not_found"), "{uri}");
    }
    let (_, mine) = h.user_call(201, "GET", "/api/v1/me/peers", None).await;
    let names: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tg-201-1"]);
    let peer = Api::<WgPeer>::namespaced(h.admin.clone(), &h.namespace)
        .get("tg-202-1")
        .await
        .unwrap();
    assert!(peer.spec.enabled, "B's device was not switched off");
    // Without valid initData nothing is reachable.
    let request = Request::get("/api/v1/me/peers")
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = h.call(request, "127.0.0.1:1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        json!("unauthorized")
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn the_owner_downloads_config_and_qr_switches_and_adds_devices() {
    let h = harness("devices").await;
    h.active_user(301).await;
    let request = Request::get("/api/v1/me/peers/tg-301-1/config")
        .header(header::AUTHORIZATION, format!("tma {}", h.init_data(301)))
        .body(Body::empty())
        .unwrap();
    let (status, body, headers) = h.call(request, "127.0.0.1:1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"wgsub-Phone.conf\""
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("Endpoint = vpn.example.com:51820") && text.contains("PrivateKey = "));
    let request = Request::get("/api/v1/me/peers/tg-301-1/qr")
        .header(header::AUTHORIZATION, format!("tma {}", h.init_data(301)))
        .body(Body::empty())
        .unwrap();
    let (status, png, headers) = h.call(request, "127.0.0.1:1").await;
    assert_eq!(
        (status, &headers[header::CONTENT_TYPE]),
        (StatusCode::OK, &"image/png".parse().unwrap())
    );
    assert_eq!(&png[..4], b"\x89PNG");
    let (status, device) = h
        .user_call(
            301,
            "PATCH",
            "/api/v1/me/peers/tg-301-1",
            Some(json!({"enabled": false, "deviceName": "Work phone"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!(
        (device["enabled"].clone(), device["deviceName"].clone()),
        (json!(false), json!("Work phone"))
    );
    // The switch is the API's own apply; the operator's fields stay as they were.
    let switched = Api::<WgPeer>::namespaced(h.admin.clone(), &h.namespace)
        .get("tg-301-1")
        .await
        .unwrap();
    assert!(!switched.spec.enabled);
    assert!(switched.spec.public_key.is_some() && switched.spec.address.is_some());
    let owned = applied_by(&switched.metadata, FIELD_MANAGER);
    assert_eq!(
        owned["f:spec"],
        json!({"f:enabled": {}, "f:deviceName": {}}),
        "{owned}"
    );
    let (status, added) = h
        .user_call(
            301,
            "POST",
            "/api/v1/me/peers",
            Some(json!({"deviceName": "Laptop"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["name"], json!("tg-301-2"));
    let created = Api::<WgPeer>::namespaced(h.admin.clone(), &h.namespace)
        .get("tg-301-2")
        .await
        .unwrap();
    assert_eq!(
        created.metadata.owner_references.as_ref().unwrap()[0].name,
        "tg-301"
    );
    assert!(created.spec.public_key.is_none() && created.spec.address.is_none());
    assert!(
        created
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .all(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER)),
        "created by the API's field manager: {:?}",
        created.metadata.managed_fields
    );
    // Renaming the device the API created (its create wrote the name), twice: each as asked,
    // on the resource too (an empty name is refused: tests/device_actions.rs).
    for (name, want) in [
        ("Old laptop", json!("Old laptop")),
        ("  New laptop ", json!("New laptop")),
    ] {
        let (status, device) = h
            .user_call(
                301,
                "PATCH",
                "/api/v1/me/peers/tg-301-2",
                Some(json!({"deviceName": name})),
            )
            .await;
        assert_eq!((status, &device["deviceName"]), (StatusCode::OK, &want));
        let stored = Api::<WgPeer>::namespaced(h.admin.clone(), &h.namespace)
            .get("tg-301-2")
            .await
            .unwrap();
        assert_eq!(json!(stored.spec.device_name), want, "{name:?}");
        assert!(stored.spec.enabled);
    }
    let (status, error) = h
        .user_call(301, "POST", "/api/v1/me/peers", Some(json!({})))
        .await;
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::CONFLICT, json!("device_limit"))
    );
    // The new device has no key yet: its config is not ready.
    let (status, error) = h
        .user_call(301, "GET", "/api/v1/me/peers/tg-301-2/config", None)
        .await;
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::CONFLICT, json!("peer_not_ready"))
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn an_inactive_subscription_gets_a_clear_error_code() {
    let h = harness("inactive").await;
    h.active_user(401).await;
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    let mut sub = subs.get("tg-401").await.unwrap();
    sub.spec.paid_until = Some(Timestamp::now() - SignedDuration::from_hours(1));
    let sub = subs
        .replace("tg-401", &Default::default(), &sub)
        .await
        .unwrap();
    h.visible(&sub).await;
    for (method_, uri) in [
        ("GET", "/api/v1/me/peers/tg-401-1/config"),
        ("POST", "/api/v1/me/peers"),
    ] {
        let body = (method_ == "POST").then(|| json!({}));
        let (status, error) = h.user_call(401, method_, uri, body).await;
        assert_eq!(
            (status, error["code"].clone()),
            (StatusCode::FORBIDDEN, json!("subscription_inactive")),
            "{uri}"
        );
    }
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn malformed_oversized_and_wrongly_typed_bodies_get_4xx_json() {
    let h = harness("bodies").await;
    let auth = format!("tma {}", h.init_data(501));
    let cases = [
        (
            "application/json",
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "text/plain",
            "{\"plan\":\"month\"}".to_owned(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "application/json",
            format!("{{\"plan\":\"{}\"}}", "x".repeat(10_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "application/json",
            "{\"plan\": 5}".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "application/json",
            "{\"plan\": \"gold\"}".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_plan",
        ),
    ];
    for (content_type, body, want, code) in cases {
        let request = Request::post("/api/v1/payments")
            .header(header::AUTHORIZATION, &auth)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let (status, bytes, _) = h.call(request, "127.0.0.1:1").await;
        let error: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{code}: not JSON"));
        assert_eq!(
            (status, error["code"].as_str().unwrap()),
            (want, code),
            "{error}"
        );
        assert!(error["message"].is_string());
    }
    let request = Request::post("/api/v1/webhooks/yookassa")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("[]"))
        .unwrap();
    let (status, bytes, _) = h.call(request, YOOKASSA_ADDR).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap()["code"],
        json!("malformed_body")
    );
    let (status, bytes, _) = h
        .call(
            Request::get("/nope").body(Body::empty()).unwrap(),
            "127.0.0.1:1",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap()["code"],
        json!("not_found")
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn openapi_metrics_health_and_the_mini_app_are_served() {
    let h = harness("system").await;
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let (status, body, _) = h.call(get("/openapi.json"), "127.0.0.1:1").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    for route in [
        "/api/v1/me",
        "/api/v1/payments",
        "/api/v1/me/peers/{name}/qr",
        "/api/v1/webhooks/yookassa",
    ] {
        assert!(doc["paths"].get(route).is_some(), "{route}");
    }
    // Every code the api answers a 401 with (no initData; initData older than the maximum age)
    // is listed on every 401 of the document.
    let me = |auth: Option<String>| {
        let request = Request::get("/api/v1/me");
        match auth {
            Some(auth) => request.header(header::AUTHORIZATION, format!("tma {auth}")),
            None => request,
        }
        .body(Body::empty())
        .unwrap()
    };
    let stale = h.init_data_at(1, Timestamp::now() - SignedDuration::from_hours(2));
    let mut codes = std::collections::BTreeSet::new();
    for auth in [None, Some(stale)] {
        let (status, bytes, _) = h.call(me(auth), "127.0.0.1:1").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let error: Value = serde_json::from_slice(&bytes).unwrap();
        codes.insert(error["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes.len(), 2, "two distinct 401 codes: {codes:?}");
    let mut described = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(unauthorized) = operation["responses"].get("401") else {
                continue;
            };
            let description = unauthorized["description"].as_str().unwrap_or_default();
            for code in &codes {
                assert!(
                    description.contains(&format!("`{code}`")),
                    "{method} {path}: the 401 does not list `{code}`: {description:?}"
                );
            }
            described += 1;
        }
    }
    assert!(described >= 10, "only {described} operations answer 401");
    assert_eq!(
        h.call(get("/healthz"), "127.0.0.1:1").await.0,
        StatusCode::OK
    );
    assert_eq!(
        h.call(get("/readyz"), "127.0.0.1:1").await.0,
        StatusCode::OK
    );
    let (status, page, headers) = h.call(get("/miniapp/"), "127.0.0.1:1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8(page).unwrap().contains("app.js"));
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let (_, metrics, _) = h.call(get("/metrics"), "127.0.0.1:1").await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(
            "wgsub_api_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("wgsub_api_http_request_duration_seconds_bucket"));
    h.assert_nothing_forbidden();
}

/// The plans of the browser test: the harness's month, also sold for Stars.
const BROWSER_PLANS: &str = "plans:
  - {id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 2, priceStars: 150, trafficGib: 50}
";

/// initData of `user_id` speaking `language`, as Telegram signs it now, with the user object
/// the page's stub shows as `initDataUnsafe.user`.
fn signed_user(h: &Harness, user_id: i64, language: &str) -> Value {
    let user =
        json!({"id": user_id, "first_name": format!("User{user_id}"), "language_code": language});
    let init_data = wgsub_api::initdata::sign(
        &[
            ("auth_date", &Timestamp::now().as_second().to_string()),
            ("user", &user.to_string()),
        ],
        &h.token,
    );
    json!({"initData": init_data, "user": user})
}

/// The node-agent's report on a device: connected 30 s ago, 342 KiB up and 1.5 MiB down.
async fn device_seen(h: &Harness, name: &str) {
    let status = json!({
        "apiVersion": "wgsub.io/v1alpha1", "kind": "WgPeer",
        "status": {
            "active": true,
            "lastHandshake": (Timestamp::now() - SignedDuration::from_secs(30)).to_string(),
            "rxBytes": 342 * 1024, "txBytes": 3 * 512 * 1024,
        }
    });
    let peer = Api::<WgPeer>::namespaced(h.admin.clone(), &h.namespace)
        .patch_status(
            name,
            &kube::api::PatchParams::apply("wgsub-test-agent"),
            &kube::api::Patch::Apply(&status),
        )
        .await
        .unwrap();
    h.visible(&peer).await;
}

/// A subscription of `user` paid until `from_now` (negative: it ran out), with its device
/// `tg-<user>-1` (kept while expired).
async fn user_paid_until(h: &Harness, user: i64, from_now: SignedDuration) {
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    let mut sub = fixtures::paid_subscription(user, Timestamp::now() + from_now);
    sub.spec.plan = Some("month".into());
    sub.metadata.namespace = Some(h.namespace.clone());
    let sub = subs.create(&Default::default(), &sub).await.unwrap();
    h.visible(&sub).await;
    let address = format!("10.8.0.{}/32", user % 200 + 2);
    h.ready_device(user, 1, "main", &address, "Phone").await;
}

/// Gives `user` the plan's 50 GiB quota (as the ledger's sync writes it) and this period's
/// traffic as the operator counts it: 40 GiB on `tg-<user>-1`, or all 50 and the quota
/// `exhausted` (condition QuotaExhausted).
async fn traffic_used(h: &Harness, user: i64, exhausted: bool) {
    const GIB: i64 = 1 << 30;
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    let name = format!("tg-{user}");
    let quota = json!({"spec": {"trafficQuota": {"bytes": 50 * GIB, "periodDays": 30}}});
    subs.patch(&name, &Default::default(), &kube::api::Patch::Merge(quota))
        .await
        .unwrap();
    let (rx, tx) = if exhausted {
        (20 * GIB, 30 * GIB)
    } else {
        (10 * GIB, 30 * GIB)
    };
    let now = Timestamp::now();
    let status = json!({"status": {
        "usage": {
            "periodStart": (now - SignedDuration::from_hours(24 * 10)).to_string(),
            "periodEnd": (now + SignedDuration::from_hours(24 * 20)).to_string(),
            "periodRxBytes": rx, "periodTxBytes": tx,
            "totalRxBytes": 25 * GIB, "totalTxBytes": 90 * GIB,
            "devices": [{"peer": format!("tg-{user}-1"), "periodRxBytes": rx, "periodTxBytes": tx,
                         "totalRxBytes": 25 * GIB, "totalTxBytes": 90 * GIB}],
        },
        "conditions": [{"type": "QuotaExhausted", "status": if exhausted { "True" } else { "False" },
                        "reason": if exhausted { "QuotaExhausted" } else { "WithinQuota" },
                        "message": "", "lastTransitionTime": now.to_string()}],
    }});
    let written = subs
        .patch_status(&name, &Default::default(), &kube::api::Patch::Merge(status))
        .await
        .unwrap();
    h.visible(&written).await;
}

/// The Mini App in headless Chromium against this API (api/tests/miniapp_browser.cjs says what
/// it covers): users active (a connected WireGuard device and an AmneziaWG one), expired, a day
/// from the end, never paid, with a free device slot and one to move; three offered locations, one full;
/// Telegram's Bot API faked for the Stars invoice; YooKassa reporting the card saved when the
/// user agreed to automatic renewal. The script
/// asks for the YooKassa webhook of its first payment on stdout (`@@webhook`) and gets the
/// webhook's status on stdin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mini_app_in_headless_chromium_guides_pays_renews_and_feels_native() {
    let node_modules = std::env::var("WGSUB_NODE_MODULES").expect(
        "WGSUB_NODE_MODULES is not set: this test needs playwright-core (run scripts/test)",
    );
    let chromium = std::env::var("WGSUB_CHROMIUM")
        .expect("WGSUB_CHROMIUM is not set: this test needs Chromium (run scripts/test)");
    assert!(
        std::path::Path::new(&node_modules)
            .join("playwright-core")
            .is_dir(),
        "playwright-core is missing under WGSUB_NODE_MODULES={node_modules}"
    );
    assert!(
        std::path::Path::new(&chromium).exists(),
        "WGSUB_CHROMIUM={chromium} does not exist"
    );
    let artifacts = std::env::var("WGSUB_TEST_ARTIFACTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("wgsub-test-artifacts"));
    std::fs::create_dir_all(&artifacts).unwrap();
    let mut h = harness("browser").await;
    // Stars need a plan sold for them and Telegram's createInvoiceLink.
    let telegram = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(format!(
            "/bot{}/createInvoiceLink",
            h.token
        )))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "result": "https://t.me/$StarsInvoice"})),
        )
        .mount(&telegram)
        .await;
    h.router = axum::Router::new();
    let state = std::sync::Arc::get_mut(&mut h.state).expect("only the harness holds the state");
    state.plans = wgsub_crds::plans::PlanCatalogue::from_yaml_str(BROWSER_PLANS).unwrap();
    state.settings.telegram_api_url = telegram.uri();
    h.router = wgsub_api::app(h.state.clone());

    const PAYMENT: &str = "2f000000-000f-5000-8000-00000000bb01";
    h.fake_yookassa(PAYMENT, "succeeded").await;
    h.active_user(601).await;
    device_seen(&h, "tg-601-1").await;
    // A second device on an AmneziaWG server: its guide names the AmneziaWG apps.
    create_amneziawg_server(&h, "awg").await;
    h.ready_device(601, 2, "awg", "10.9.0.2/32", "Laptop").await;
    user_paid_until(&h, 603, SignedDuration::from_hours(-48)).await;
    user_paid_until(&h, 608, SignedDuration::from_hours(47)).await;
    h.active_user(604).await;
    // Locations: Frankfurt in Germany, the Netherlands (full: user 606 has a device there)
    // and the AmneziaWG server as Finland.
    offered_server(
        &h,
        "de-1",
        "10.20.0.0/24",
        json!({"displayName": {"ru": "Франкфурт", "en": "Frankfurt"}, "country": "DE"}),
    )
    .await;
    offered_server(
        &h,
        "nl-1",
        "10.21.0.0/24",
        json!({"displayName": {"ru": "Нидерланды", "en": "Netherlands"}, "country": "NL",
               "capacity": 1}),
    )
    .await;
    h.active_user(606).await;
    h.ready_device(606, 2, "nl-1", "10.21.0.2/32", "Tablet")
        .await;
    let awg = Api::<wgsub_crds::WgServer>::namespaced(h.admin.clone(), &h.namespace)
        .patch(
            "awg",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"location": {
                "displayName": {"ru": "Финляндия", "en": "Finland"}, "country": "FI"}}})),
        )
        .await
        .unwrap();
    h.visible(&awg).await;
    h.active_user(607).await;
    h.active_user(609).await;
    traffic_used(&h, 609, false).await;
    h.active_user(610).await;
    traffic_used(&h, 610, true).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = h.router.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let mut users = serde_json::Map::new();
    for (role, id) in [
        ("active", 601),
        ("expired", 603),
        ("adder", 604),
        ("pending", 605),
        ("mover", 607),
        ("ending", 608),
        ("quota", 609),
        ("exhausted", 610),
    ] {
        users.insert(
            role.into(),
            json!({"en": signed_user(&h, id, "en"), "ru": signed_user(&h, id, "ru")}),
        );
    }
    let mut child = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/miniapp_browser.cjs"
        ))
        .env("WGSUB_MINIAPP_BASE", format!("http://{addr}"))
        .env("WGSUB_USERS_JSON", Value::Object(users).to_string())
        .env(
            "WGSUB_STALE_INIT_DATA",
            h.init_data_at(601, Timestamp::now() - SignedDuration::from_hours(2)),
        )
        .env("WGSUB_TEST_ARTIFACTS", &artifacts)
        .env("WGSUB_NODE_MODULES", &node_modules)
        .env("WGSUB_CHROMIUM", &chromium)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (this test needs Node.js)");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text)
            .await
            .unwrap();
        text
    });
    let mut log = String::new();
    let mut webhooks = 0;
    let talk = async {
        let mut line = String::new();
        while tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
            .await
            .unwrap()
            > 0
        {
            if line.trim_end() == "@@webhook" {
                // The user agreed to save the card: YooKassa was asked to, and its copy of the
                // payment says it did.
                let requests = h.yookassa.received_requests().await.unwrap_or_default();
                let created = requests
                    .iter()
                    .find(|r| r.method.as_str() == "POST")
                    .expect("the payment was created");
                let body: Value = serde_json::from_slice(&created.body).unwrap();
                assert_eq!(body["save_payment_method"], json!(true), "{body}");
                wiremock::Mock::given(wiremock::matchers::method("GET"))
                    .and(wiremock::matchers::path(format!("/v3/payments/{PAYMENT}")))
                    .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({
                        "id": PAYMENT, "status": "succeeded", "paid": true,
                        "amount": body["amount"], "metadata": body["metadata"],
                        "payment_method": {
                            "type": "bank_card", "id": "2f000000-000f-5000-8000-00000000cc01",
                            "saved": true,
                            "card": {"last4": "4242", "expiry_month": "12",
                                     "expiry_year": "2027", "card_type": "Visa"},
                        },
                    })))
                    .with_priority(1)
                    .mount(&h.yookassa)
                    .await;
                let status = h
                    .webhook(
                        notification("payment.succeeded", PAYMENT),
                        YOOKASSA_ADDR,
                        None,
                    )
                    .await;
                webhooks += 1;
                tokio::io::AsyncWriteExt::write_all(
                    &mut stdin,
                    format!("{}\n", status.as_u16()).as_bytes(),
                )
                .await
                .unwrap();
            } else {
                log.push_str(&line);
            }
            line.clear();
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(300), talk)
        .await
        .expect("the browser test finishes within five minutes");
    let stderr = stderr.await.unwrap();
    assert!(
        status.success(),
        "the browser test failed:\n{log}\n{stderr}"
    );
    assert_eq!(webhooks, 1, "{log}");
    for screen in [
        "status",
        "plans",
        "keys",
        "guide",
        "locations",
        "expired",
        "ending",
        "pending",
    ] {
        for theme in ["light", "dark"] {
            for lang in ["en", "ru"] {
                let shot = artifacts.join(format!("miniapp-{theme}-{lang}-{screen}.png"));
                assert!(shot.exists(), "{} was kept", shot.display());
            }
        }
    }
    for shot in [
        "payment-received",
        "payment-late",
        "guide-amneziawg-ios",
        "expired",
    ] {
        assert!(artifacts.join(format!("miniapp-{shot}.png")).exists());
    }
    h.assert_nothing_forbidden();
}

/// The requests the api's ServiceAccount made that were not watches (`(verb, resource, uri)`).
fn non_watch_requests(plane: &ControlPlane, namespace: &str) -> Vec<String> {
    plane
        .requests_of(namespace, "wgsub-api")
        .into_iter()
        .filter(|request| request.verb != "watch")
        .map(|request| request.to_string())
        .collect()
}

#[tokio::test]
async fn mini_app_reads_make_no_api_server_request() {
    let h = harness("no_calls").await;
    h.active_user(601).await;
    let plane = h.plane.unwrap();
    let before = non_watch_requests(plane, &h.namespace);
    for _ in 0..20 {
        for uri in [
            "/api/v1/me",
            "/api/v1/me/peers",
            "/api/v1/me/peers/tg-601-1/config",
            "/api/v1/me/peers/tg-601-1/qr",
            "/api/v1/me/peers/tg-601-1/qr?format=svg",
            "/readyz",
        ] {
            let request = Request::get(uri)
                .header(header::AUTHORIZATION, format!("tma {}", h.init_data(601)))
                .body(Body::empty())
                .unwrap();
            let (status, _, _) = h.call(request, "127.0.0.1:1").await;
            assert_eq!(status, StatusCode::OK, "{uri}");
        }
    }
    let after = non_watch_requests(plane, &h.namespace);
    assert!(
        !before.is_empty(),
        "the audit log shows the caches' lists: {before:?}"
    );
    assert_eq!(
        after[before.len()..],
        [] as [String; 0],
        "120 reads and 20 readiness probes asked the API server nothing"
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_read_right_after_the_users_own_write_sees_it() {
    let h = harness("read_own_write").await;
    h.active_user(701).await;
    for round in 0..5 {
        let enabled = round % 2 == 1;
        let (status, _) = h
            .user_call(
                701,
                "PATCH",
                "/api/v1/me/peers/tg-701-1",
                Some(json!({"enabled": enabled})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, me) = h.user_call(701, "GET", "/api/v1/me", None).await;
        assert_eq!(me["devices"][0]["enabled"], json!(enabled), "round {round}");
    }
    let (status, _) = h
        .user_call(701, "POST", "/api/v1/me/peers", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, peers) = h.user_call(701, "GET", "/api/v1/me/peers", None).await;
    let names: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tg-701-1", "tg-701-2"]);
    h.assert_nothing_forbidden();
}

/// The api's ServiceAccount before the chart's RBAC exists cannot list anything: its caches
/// cannot sync, so every read answers 503 `cache_not_ready` (never "no subscription" or "no
/// such device") and `/readyz` is not ready; once RBAC is applied the failing watches re-list
/// and the same reads answer.
#[tokio::test]
async fn before_the_caches_sync_reads_answer_503_and_readiness_waits() {
    let plane = ControlPlane::with_crds();
    let namespace = plane.namespace("api-unsynced").await;
    let admin = plane.admin_client();
    create_server(&admin, &namespace).await;
    let client = component_client(plane, &namespace, "api").await;
    let mut h = harness_with("unsynced", client, admin, &namespace).await;
    h.plane = Some(plane);
    for uri in [
        "/api/v1/me",
        "/api/v1/me/peers",
        "/api/v1/me/peers/tg-801-1/config",
        "/api/v1/me/peers/tg-801-1/qr",
    ] {
        let (status, error) = h.user_call(801, "GET", uri, None).await;
        assert_eq!(
            (status, error["code"].clone()),
            (StatusCode::SERVICE_UNAVAILABLE, json!("cache_not_ready")),
            "{uri}: {error}"
        );
        assert!(error["message"].is_string());
    }
    let (status, body, _) = h
        .call(
            Request::get("/readyz").body(Body::empty()).unwrap(),
            "127.0.0.1:1",
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], json!("cache_not_ready"), "{body}");

    apply_chart_rbac(plane, &namespace, &[]).await;
    assert!(
        h.state.caches.synced(Duration::from_secs(30)).await,
        "the caches re-list once they may"
    );
    h.active_user(801).await;
    for uri in ["/api/v1/me", "/api/v1/me/peers/tg-801-1/config"] {
        let (status, _) = h.user_call(801, "GET", uri, None).await;
        assert_ne!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
    }
    let (status, _, _) = h
        .call(
            Request::get("/readyz").body(Body::empty()).unwrap(),
            "127.0.0.1:1",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// One account looping `POST /api/v1/payments` is stopped by the ledger's limits (three open
/// payments by default): 429 with `Retry-After` and the JSON error body, and no further
/// YooKassa call.
#[tokio::test]
async fn payments_started_in_a_loop_get_429_with_retry_after_and_no_yookassa_call() {
    let h = harness("pay_limit").await;
    h.fake_yookassa("2f000000-000f-5000-8000-00000000aa1f", "pending")
        .await;
    for _ in 0..3 {
        let (status, body) = h
            .user_call(
                1601,
                "POST",
                "/api/v1/payments",
                Some(json!({"plan": "month"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let request = Request::post("/api/v1/payments")
        .header(header::AUTHORIZATION, format!("tma {}", h.init_data(1601)))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"plan": "month"}).to_string()))
        .unwrap();
    let (status, bytes, headers) = h.call(request, "127.0.0.1:5000").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let error: Value = serde_json::from_slice(&bytes).expect("a JSON error body");
    assert_eq!(error["code"], json!("too_many_payments"), "{error}");
    assert!(error["message"].is_string());
    // The oldest open payment lapses in an hour.
    let retry_after: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&retry_after), "{retry_after}");
    let created = h
        .yookassa
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(created, 3);
}
