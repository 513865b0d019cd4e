//! Every 4xx the api answers is the JSON error body `{code, message}` with a stable code —
//! including what axum's extractors and router refuse (a query or path parameter that does not
//! decode, a body that is not the JSON asked for, an unknown path, a wrong method) — and
//! initData older than the maximum age is told apart (`init_data_expired`) so the Mini App can
//! ask for fresh initData. Real PostgreSQL and the real API server, as in `api_http.rs` (the
//! harness is `support/`).

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use support::*;

/// Sends `method uri` (as user 1801 when `auth`, with `body` as JSON) and checks the answer is
/// `want` with the JSON error body of `code`.
async fn assert_json_error(
    h: &Harness,
    (method, uri, body, auth): (&str, &str, Option<&str>, bool),
    want: StatusCode,
    code: &str,
) {
    let mut request = Request::builder().method(method).uri(uri);
    if auth {
        request = request.header(header::AUTHORIZATION, format!("tma {}", h.init_data(1801)));
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let (status, bytes, headers) = h.call(request, "127.0.0.1:1").await;
    assert_eq!(
        status,
        want,
        "{method} {uri}: {}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{method} {uri}"
    );
    let error: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{method} {uri}: not JSON: {bytes:?}"));
    assert_eq!(error["code"], json!(code), "{method} {uri}: {error}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{method} {uri}: {error}"
    );
}

#[tokio::test]
async fn every_refusal_by_the_router_and_the_extractors_is_a_json_error() {
    let h = harness("json_errors").await;
    h.active_user(1801).await;
    let peer = "/api/v1/me/peers/tg-1801-1";
    let bad_query = [
        format!("{peer}/qr?format=gif"),
        format!("{peer}/qr?format="),
        format!("{peer}/qr?format=png&format=svg"),
    ];
    for uri in &bad_query {
        assert_json_error(
            &h,
            ("GET", uri, None, true),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    for (method, uri, body) in [
        ("GET", "/api/v1/me/peers/%FF/config", None),
        ("GET", "/api/v1/me/peers/%C3%28/qr", None),
        (
            "PATCH",
            "/api/v1/me/peers/%FF",
            Some(r#"{"enabled": false}"#),
        ),
    ] {
        assert_json_error(
            &h,
            (method, uri, body, true),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        )
        .await;
    }
    assert_json_error(
        &h,
        ("GET", "/miniapp/%FF", None, false),
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    for (method, uri, body, want, code) in [
        (
            "POST",
            "/api/v1/me/peers",
            "{",
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "PATCH",
            peer,
            r#"{"enabled": "yes"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "PATCH",
            peer,
            r#"{"colour": "red"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ] {
        assert_json_error(&h, (method, uri, Some(body), true), want, code).await;
    }
    for (method, uri) in [
        ("GET", "/nope"),
        ("GET", "/api/v1/nope"),
        ("POST", "/api/v2/me"),
        ("GET", "/api/v1/me/peers/tg-1801-1/other"),
        ("GET", "/miniapp/secret.txt"),
    ] {
        assert_json_error(
            &h,
            (method, uri, None, true),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    for (method, uri) in [
        ("DELETE", "/api/v1/me"),
        ("GET", "/api/v1/payments"),
        ("GET", "/api/v1/webhooks/yookassa"),
        ("PUT", "/api/v1/me/peers/tg-1801-1"),
        ("POST", "/healthz"),
    ] {
        assert_json_error(
            &h,
            (method, uri, None, true),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
    assert_json_error(
        &h,
        ("GET", "/api/v1/me", None, false),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn init_data_older_than_an_hour_is_refused_as_expired() {
    let h = harness("init_data_age").await;
    let me = |auth: String| {
        Request::get("/api/v1/me")
            .header(header::AUTHORIZATION, format!("tma {auth}"))
            .body(Body::empty())
            .unwrap()
    };
    let fresh_enough = h.init_data_at(1802, Timestamp::now() - SignedDuration::from_mins(55));
    let (status, _, _) = h.call(me(fresh_enough), "127.0.0.1:1").await;
    assert_eq!(status, StatusCode::OK);
    let stale = h.init_data_at(1802, Timestamp::now() - SignedDuration::from_mins(65));
    let (status, bytes, _) = h.call(me(stale.clone()), "127.0.0.1:1").await;
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("init_data_expired")),
        "{error}"
    );
    // A forged one is refused as such, not as expired.
    let forged = stale.replace("User1802", "User1803");
    let (status, bytes, _) = h.call(me(forged), "127.0.0.1:1").await;
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized")),
        "{error}"
    );
    h.assert_nothing_forbidden();
}
