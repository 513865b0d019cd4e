//! Automatic renewal over HTTP (tower `oneshot`) against real PostgreSQL, the real Kubernetes
//! API server (the api's ServiceAccount under the chart's RBAC) and the YooKassa fake with saved
//! cards: `saveCard` asks YooKassa to save the card, the webhook stores it and
//! `GET /api/v1/me/renewal` shows it masked, a renewal charge's webhook delivered twice is
//! applied once (and written to `paidUntil`), `DELETE /api/v1/me/renewal` switches renewal off
//! (204, twice) so nothing is charged, and the contract is in `/openapi.json`.

#[path = "../../ledger/tests/support/fake_yookassa.rs"]
mod fake_yookassa;
mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fake_yookassa::{FakeYooKassa, MethodState};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use support::*;
use wgsub_ledger::RenewalContext;

const DAY: SignedDuration = SignedDuration::from_hours(24);

/// `user` buys the month through the API (`saveCard` as given) and pays; YooKassa notifies.
/// Returns the saved method's id.
async fn buy(h: &Harness, fake: &FakeYooKassa, user: i64, save_card: bool) -> Option<String> {
    let (status, created) = h
        .user_call(
            user,
            "POST",
            "/api/v1/payments",
            Some(json!({"plan": "month", "saveCard": save_card})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let ours = created["paymentId"].as_str().unwrap().parse().unwrap();
    let record = h.state.ledger.payment(ours).await.unwrap().unwrap();
    let yookassa_id = record.yookassa_id.unwrap();
    let method = fake.pay(&yookassa_id);
    let notification = notification("payment.succeeded", &yookassa_id);
    assert_eq!(
        h.webhook(notification, YOOKASSA_ADDR, None).await,
        StatusCode::OK
    );
    method
}

async fn paid_until(h: &Harness, user: i64) -> Timestamp {
    h.state
        .ledger
        .user(user)
        .await
        .unwrap()
        .unwrap()
        .entitlement
        .paid_until
        .unwrap()
}

fn ctx(h: &Harness) -> RenewalContext<'_> {
    RenewalContext {
        yookassa: &h.state.yookassa,
        plans: &h.state.plans,
        receipt: None,
    }
}

#[tokio::test]
async fn the_saved_card_is_shown_masked_and_a_renewal_webhook_is_applied_once() {
    let h = harness("renewal_http").await;
    let fake = FakeYooKassa::mount(&h.yookassa).await;

    // Without consent nothing is saved.
    assert_eq!(buy(&h, &fake, 501, false).await, None);
    assert_eq!(fake.purchases()[0].get("save_payment_method"), None);
    let (status, view) = h.user_call(501, "GET", "/api/v1/me/renewal", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view,
        json!({"enabled": false, "card": null, "nextChargeAt": null, "plan": null, "lastFailure": null})
    );

    let method = buy(&h, &fake, 502, true).await.unwrap();
    assert_eq!(fake.purchases()[1]["save_payment_method"], json!(true));
    let until = paid_until(&h, 502).await;
    let (status, view) = h.user_call(502, "GET", "/api/v1/me/renewal", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view,
        json!({"enabled": true, "card": {"title": "Visa •••• 4242", "expires": "12/27"},
               "nextChargeAt": (until - DAY).to_string(), "plan": "month", "lastFailure": null})
    );
    assert!(
        !view.to_string().contains(&method),
        "the method id is never shown"
    );

    // The renewal is charged; YooKassa decides later and notifies twice.
    fake.set_method(&method, MethodState::Late);
    let report = h
        .state
        .ledger
        .run_renewals(ctx(&h), until - SignedDuration::from_hours(6), 50)
        .await
        .unwrap();
    assert_eq!(report.pending, 1, "{report:?}");
    let charge = fake.charged_payments()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.decide(&charge, None);
    for _ in 0..2 {
        assert_eq!(
            h.webhook(
                notification("payment.succeeded", &charge),
                YOOKASSA_ADDR,
                None
            )
            .await,
            StatusCode::OK
        );
    }
    assert_eq!(paid_until(&h, 502).await, until + DAY * 30);
    let written = h.subscription(502).await.expect("the subscription exists");
    assert_eq!(written.spec.paid_until, Some(until + DAY * 30));
    let outcomes: Vec<String> = h
        .state
        .ledger
        .webhook_deliveries(50)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, delivery)| delivery)
        .filter(|d| d.object_id.as_deref() == Some(charge.as_str()))
        .map(|d| d.reason)
        .collect();
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes.contains(&"payment_applied".to_owned()),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&"already_applied".to_owned()),
        "{outcomes:?}"
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn switching_renewal_off_deletes_the_card_and_nothing_is_charged() {
    let h = harness("renewal_http_off").await;
    let fake = FakeYooKassa::mount(&h.yookassa).await;
    buy(&h, &fake, 503, true).await.unwrap();
    let until = paid_until(&h, 503).await;
    for _ in 0..2 {
        let (status, body) = h.user_call(503, "DELETE", "/api/v1/me/renewal", None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (_, view) = h.user_call(503, "GET", "/api/v1/me/renewal", None).await;
    assert_eq!(view["enabled"], json!(false));
    assert_eq!(view["card"], Value::Null);
    for hours in [20, 1] {
        let report = h
            .state
            .ledger
            .run_renewals(ctx(&h), until - SignedDuration::from_hours(hours), 50)
            .await
            .unwrap();
        assert_eq!(report, Default::default());
    }
    assert!(fake.charges().is_empty());
    assert_eq!(paid_until(&h, 503).await, until);
    // Without initData: 401 JSON, as everywhere.
    let (status, body, _) = h
        .call(
            Request::delete("/api/v1/me/renewal")
                .body(Body::empty())
                .unwrap(),
            "127.0.0.1:5000",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], json!("unauthorized"));
}

#[tokio::test]
async fn the_renewal_contract_is_in_the_openapi_document() {
    let h = harness("renewal_openapi").await;
    let (status, body, _) = h
        .call(
            Request::get("/openapi.json").body(Body::empty()).unwrap(),
            "127.0.0.1:5000",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let renewal = &doc["paths"]["/api/v1/me/renewal"];
    assert!(
        renewal["get"].is_object() && renewal["delete"].is_object(),
        "{renewal}"
    );
    assert!(renewal["delete"]["responses"]["204"].is_object());
    let schemas = &doc["components"]["schemas"];
    for field in ["enabled", "card", "nextChargeAt", "plan", "lastFailure"] {
        assert!(
            schemas["RenewalView"]["properties"][field].is_object(),
            "RenewalView.{field}"
        );
    }
    assert!(schemas["CreatePaymentRequest"]["properties"]["saveCard"].is_object());
}
