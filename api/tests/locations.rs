//! Locations over HTTP on the real Kubernetes API server (the support harness: a namespace per
//! test with the chart's RBAC, the handlers authenticated as the api's ServiceAccount): the
//! offered servers in the user's language with the full one and the user's own marked, a move
//! written as `spec.server` by the location field manager, a payment's `server`, and every
//! refusal (a full, hidden, unoffered or unknown server) writing nothing and creating no
//! payment — with no call the chart does not grant.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use wgsub_ledger::sync::LOCATION_FIELD_MANAGER;

mod support;

use support::*;

/// `de-1` (no limit), `nl-1` (one user, taken by user 902's second device) and the hidden
/// `fi-1`; `main` has no location. User 901 is active on `main`.
async fn world(label: &str) -> Harness {
    let h = harness(label).await;
    offered_server(
        &h,
        "de-1",
        "10.20.0.0/24",
        json!({"displayName": {"ru": "Германия", "en": "Germany"}, "country": "DE"}),
    )
    .await;
    offered_server(
        &h,
        "nl-1",
        "10.21.0.0/24",
        json!({"displayName": {"ru": "Амстердам", "en": "Amsterdam"}, "country": "NL",
               "capacity": 1}),
    )
    .await;
    offered_server(
        &h,
        "fi-1",
        "10.22.0.0/24",
        json!({"displayName": {"ru": "Финляндия", "en": "Finland"}, "country": "FI",
               "hidden": true}),
    )
    .await;
    h.active_user(901).await;
    h.active_user(902).await;
    h.ready_device(902, 2, "nl-1", "10.21.0.2/32", "Laptop")
        .await;
    h
}

/// `(server, displayName, flag, full, current, protocol)` of a location list.
fn rows(list: &Value) -> Vec<(String, String, String, bool, bool, String)> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|l| {
            (
                l["server"].as_str().unwrap().to_owned(),
                l["displayName"].as_str().unwrap().to_owned(),
                l["flag"].as_str().unwrap().to_owned(),
                l["full"].as_bool().unwrap(),
                l["current"].as_bool().unwrap(),
                l["protocol"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn row(
    server: &str,
    name: &str,
    flag: &str,
    full: bool,
    current: bool,
) -> (String, String, String, bool, bool, String) {
    (
        server.into(),
        name.into(),
        flag.into(),
        full,
        current,
        "wireguard".into(),
    )
}

async fn picked_server(h: &Harness, user: i64) -> Option<String> {
    h.subscription(user).await.and_then(|s| s.spec.server)
}

#[tokio::test]
async fn offered_locations_are_listed_with_the_full_one_and_the_users_own_marked() {
    let h = world("locations-list").await;

    let (status, list) = h.user_call(901, "GET", "/api/v1/locations", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        rows(&list),
        [
            row("de-1", "Germany", "🇩🇪", false, false),
            row("nl-1", "Amsterdam", "🇳🇱", true, false),
        ],
        "hidden fi-1 and unoffered main are left out; nl-1 is full of user 902"
    );
    assert_eq!(list[0]["country"], "DE");
    assert_eq!(list[0]["countryName"], "Germany");
    assert_eq!(
        list[0]["label"], "🇩🇪 Germany",
        "a display name that is the country's name is said once"
    );
    assert_eq!(list[1]["label"], "🇳🇱 Netherlands · Amsterdam");

    // The user on nl-1 sees it as theirs and not full.
    let (_, theirs) = h.user_call(902, "GET", "/api/v1/locations", None).await;
    assert_eq!(
        rows(&theirs)[1],
        row("nl-1", "Amsterdam", "🇳🇱", false, false)
    );
    let (status, body) = h
        .user_call(
            902,
            "PUT",
            "/api/v1/me/location",
            Some(json!({"server": "nl-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, theirs) = h.user_call(902, "GET", "/api/v1/locations", None).await;
    assert_eq!(
        rows(&theirs)[1],
        row("nl-1", "Amsterdam", "🇳🇱", false, true)
    );

    let (status, _, _) = h
        .call(
            Request::get("/api/v1/locations")
                .body(Body::empty())
                .unwrap(),
            "127.0.0.1:5000",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "initData is required");
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_move_writes_the_pick_as_the_location_manager_and_answers_the_me_view() {
    let h = world("locations-move").await;
    let (_, me) = h.user_call(901, "GET", "/api/v1/me", None).await;
    assert_eq!(me["subscription"]["server"], "main", "the default server");

    let (status, me) = h
        .user_call(
            901,
            "PUT",
            "/api/v1/me/location",
            Some(json!({"server": "de-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["subscription"]["server"], "de-1");
    assert_eq!(me["subscription"]["phase"], "Active");
    assert_eq!(me["devices"][0]["name"], "tg-901-1");

    let sub = h.subscription(901).await.unwrap();
    assert_eq!(sub.spec.server.as_deref(), Some("de-1"));
    let owned = applied_by(&sub.metadata, LOCATION_FIELD_MANAGER);
    assert!(owned["f:spec"]["f:server"].is_object(), "{owned}");
    assert!(
        owned["f:spec"]["f:paidUntil"].is_null(),
        "the location manager owns no ledger field: {owned}"
    );
    let (_, list) = h.user_call(901, "GET", "/api/v1/locations", None).await;
    assert_eq!(rows(&list)[0], row("de-1", "Germany", "🇩🇪", false, true));
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_full_hidden_unoffered_or_unknown_location_is_refused_and_nothing_changes() {
    let h = world("locations-refused").await;
    let (status, body) = h
        .user_call(
            901,
            "PUT",
            "/api/v1/me/location",
            Some(json!({"server": "de-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = h.subscription(901).await.unwrap();

    for (server, expected, code) in [
        ("nl-1", StatusCode::CONFLICT, "server_full"),
        ("fi-1", StatusCode::NOT_FOUND, "location_not_found"),
        ("main", StatusCode::NOT_FOUND, "location_not_found"),
        ("nowhere", StatusCode::NOT_FOUND, "location_not_found"),
        ("Not/A/Name", StatusCode::NOT_FOUND, "location_not_found"),
    ] {
        let (status, body) = h
            .user_call(
                901,
                "PUT",
                "/api/v1/me/location",
                Some(json!({"server": server})),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (expected, Some(code)),
            "{server}: {body}"
        );
        assert!(body["message"].is_string(), "{body}");
    }
    let (status, body) = h
        .user_call(
            901,
            "PUT",
            "/api/v1/me/location",
            Some(json!({"region": "de-1"})),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");

    let after = h.subscription(901).await.unwrap();
    assert_eq!(after.spec, before.spec);
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "nothing was written"
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_payment_with_a_location_moves_the_user_when_it_is_created_and_a_bad_one_creates_none() {
    let h = world("locations-payment").await;
    h.fake_yookassa("pay-loc-1", "pending").await;

    for (server, expected) in [
        ("nl-1", StatusCode::CONFLICT),
        ("fi-1", StatusCode::NOT_FOUND),
    ] {
        let (status, body) = h
            .user_call(
                903,
                "POST",
                "/api/v1/payments",
                Some(json!({"plan": "month", "server": server})),
            )
            .await;
        assert_eq!(status, expected, "{server}: {body}");
    }
    assert!(
        h.yookassa.received_requests().await.unwrap().is_empty(),
        "a refused location starts no payment"
    );
    assert!(h.subscription(903).await.is_none(), "and writes nothing");

    // A user who never started the bot: the pick creates their subscription, never paid.
    let (status, body) = h
        .user_call(
            903,
            "POST",
            "/api/v1/payments",
            Some(json!({"plan": "month", "server": "de-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(picked_server(&h, 903).await.as_deref(), Some("de-1"));
    let sub = h.subscription(903).await.unwrap();
    assert_eq!(sub.spec.telegram_user_id, 903);
    assert_eq!(sub.spec.paid_until, None);

    // Without `server` a payment leaves the location alone.
    let (status, body) = h
        .user_call(
            901,
            "POST",
            "/api/v1/payments",
            Some(json!({"plan": "month"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(picked_server(&h, 901).await, None);
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn the_openapi_document_has_the_location_contract() {
    let h = harness("locations-openapi").await;
    let (status, body, _) = h
        .call(
            Request::get("/openapi.json").body(Body::empty()).unwrap(),
            "127.0.0.1:5000",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert!(doc["paths"]["/api/v1/locations"]["get"].is_object());
    let put = &doc["paths"]["/api/v1/me/location"]["put"];
    for code in ["200", "404", "409"] {
        assert!(put["responses"][code].is_object(), "{code}: {put}");
    }
    let schemas = &doc["components"]["schemas"];
    for field in [
        "server",
        "displayName",
        "country",
        "flag",
        "countryName",
        "label",
        "full",
        "current",
        "protocol",
    ] {
        assert!(
            schemas["LocationView"]["properties"][field].is_object(),
            "LocationView.{field}"
        );
    }
    assert!(schemas["CreatePaymentRequest"]["properties"]["server"].is_object());
    assert!(schemas["SubscriptionView"]["properties"]["server"].is_object());
}
