//! The YooKassa webhook under a flood of deliveries it refuses (wrong source address, bodies
//! that are not notifications, object ids that are not YooKassa ids), on a database pool of two
//! connections: every refusal is answered and counted in the metrics, the audit keeps only a
//! bounded sample of them, YooKassa is never asked, and a Mini App request made during the flood
//! still gets its database connection at once. Real PostgreSQL and the real API server, as in
//! `api_http.rs` (the harness is `support/`).

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use support::*;
use wgsub_ledger::RejectionSampling;

const FORBIDDEN: usize = 600;
const MALFORMED_BODIES: usize = 300;
const MALFORMED_IDS: usize = 150;

/// One refused delivery: (source address, body, the status and code it must get).
fn refused(i: usize) -> (String, String, StatusCode, &'static str) {
    if i < FORBIDDEN {
        let body = notification("payment.succeeded", "2f000000-000f-5000-8000-00000000cc01");
        let from = format!("203.0.113.{}:443", i % 250 + 1);
        (from, body.to_string(), StatusCode::FORBIDDEN, "forbidden")
    } else if i < FORBIDDEN + MALFORMED_BODIES {
        let body = ["[]", "{", r#"{"event": 1}"#, "not json"][i % 4];
        (
            YOOKASSA_ADDR.to_owned(),
            body.to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        )
    } else {
        let long = "a".repeat(65);
        let id = ["../refunds/x", "id with spaces", "", long.as_str()][i % 4];
        (
            YOOKASSA_ADDR.to_owned(),
            notification("payment.succeeded", id).to_string(),
            StatusCode::BAD_REQUEST,
            "malformed_object_id",
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_webhooks_is_counted_sampled_and_leaves_the_pool_to_the_mini_app() {
    let h = harness_with_pool("webhook_flood", Some(2)).await;
    let total = FORBIDDEN + MALFORMED_BODIES + MALFORMED_IDS;
    let flood = futures::future::join_all((0..total).map(|i| {
        let h = &h;
        async move {
            let (from, body, want, code) = refused(i);
            let request = Request::post("/api/v1/webhooks/yookassa")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap();
            let (status, bytes, _) = h.call(request, &from).await;
            let error: Value = serde_json::from_slice(&bytes).expect("a JSON error body");
            assert_eq!((status, error["code"].as_str()), (want, Some(code)), "{i}");
        }
    }));
    let mini_app = async {
        let mut slowest = Duration::ZERO;
        for round in 0..20 {
            let started = Instant::now();
            let (status, me) = h.user_call(1701, "GET", "/api/v1/me", None).await;
            slowest = slowest.max(started.elapsed());
            assert_eq!(status, StatusCode::OK, "round {round}: {me}");
            tokio::task::yield_now().await;
        }
        slowest
    };
    let (answered, slowest) = tokio::join!(flood, mini_app);
    assert_eq!(answered.len(), total);
    assert!(
        slowest < Duration::from_millis(500),
        "the Mini App waited {slowest:?} for the database during the flood"
    );

    // A burst faster than one insert leaves one sample; one more of each reason afterwards is
    // kept, as the quota is not used up by what was skipped.
    for i in [0, FORBIDDEN, FORBIDDEN + MALFORMED_BODIES] {
        let (from, body, want, _) = refused(i);
        let request = Request::post("/api/v1/webhooks/yookassa")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        assert_eq!(h.call(request, &from).await.0, want);
    }
    let audit = h.state.ledger.webhook_deliveries(10_000).await.unwrap();
    let per_reason = RejectionSampling::default().per_reason as usize;
    for reason in ["forbidden_address", "malformed_body", "malformed_object_id"] {
        let rows = audit.iter().filter(|(_, d)| d.reason == reason).count();
        assert!(
            (1..=per_reason).contains(&rows),
            "{reason}: {rows} audit rows, 1 to {per_reason} expected: {audit:?}"
        );
    }

    let (_, metrics, _) = h
        .call(
            Request::get("/metrics").body(Body::empty()).unwrap(),
            "127.0.0.1:1",
        )
        .await;
    let metrics = String::from_utf8(metrics).unwrap();
    for (reason, count) in [
        ("forbidden_address", FORBIDDEN + 1),
        ("malformed_body", MALFORMED_BODIES + 1),
        ("malformed_object_id", MALFORMED_IDS + 1),
    ] {
        let line = format!("wgsub_api_webhook_rejections_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    assert!(
        metrics.contains(&format!(
            "wgsub_api_webhook_deliveries_total{{status=\"rejected\"}} {}",
            total + 3
        )),
        "{metrics}"
    );
    assert_eq!(
        h.yookassa
            .received_requests()
            .await
            .unwrap_or_default()
            .len(),
        0,
        "YooKassa was never asked about a refused delivery"
    );
    h.assert_nothing_forbidden();
}

/// An object id that cannot be a YooKassa id is a 400 (YooKassa retries 5xx for a day and
/// would keep sending it), and YooKassa is not asked about it.
#[tokio::test]
async fn a_malformed_object_id_is_a_400_not_a_retry() {
    let h = harness("webhook_bad_id").await;
    for id in ["../payments", "a b", ""] {
        let body =
            json!({"type": "notification", "event": "refund.succeeded", "object": {"id": id}});
        let request = Request::post("/api/v1/webhooks/yookassa")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, bytes, _) = h.call(request, YOOKASSA_ADDR).await;
        let error: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (status, error["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("malformed_object_id")),
            "{id:?}"
        );
    }
    assert!(
        h.yookassa
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
    h.assert_nothing_forbidden();
}
