//! Promo codes and referrals through the HTTP API, with the state the binary builds
//! (`state_from_args`) on a real PostgreSQL and the real Kubernetes API server, YooKassa faked
//! with wiremock: `/api/v1/me/promo` once per user with a stable code per refusal, a discount
//! sent to YooKassa and re-checked when the webhook is verified (a tampered amount is not
//! credited), and `/api/v1/me/referrals` with the reward given by the referee's first payment
//! and taken back by its refund.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use http_body_util::BodyExt;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tower::ServiceExt;
use wgsub_api::config::{Cli, Command};
use wgsub_api::initdata;
use wgsub_api::state::{SharedState, state_from_args};
use wgsub_ledger::{NewPromoCode, PromoBenefit};
use wgsub_testkit::envtest::ControlPlane;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DAY: SignedDuration = SignedDuration::from_hours(24);
const YOOKASSA_ADDR: &str = "185.71.76.10:443";

struct Api {
    router: Router,
    state: SharedState,
    token: String,
    yookassa: MockServer,
    /// The amount YooKassa reports for each payment it created (the test may tamper with it).
    reported: Arc<Mutex<Vec<(String, Value)>>>,
    _plans: tempfile::NamedTempFile,
}

async fn api(label: &str) -> Api {
    let (_, url) = wgsub_ledger::testing::fresh_database(label).await;
    let plane = ControlPlane::with_crds();
    let namespace = plane.namespace(&format!("api-{label}")).await;
    let yookassa = MockServer::start().await;
    let reported: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = reported.clone();
    Mock::given(method("POST"))
        .and(path("/v3/payments"))
        .respond_with(move |request: &wiremock::Request| {
            let body: Value = request.body_json().unwrap();
            let id = uuid::Uuid::new_v4().to_string();
            let payment = json!({
                "id": id, "status": "pending", "paid": false, "amount": body["amount"],
                "metadata": body["metadata"],
                "confirmation": {"type": "redirect", "confirmation_url": "https://yoomoney.example/pay"}
            });
            seen.lock().unwrap().push((id, payment.clone()));
            ResponseTemplate::new(200).set_body_json(payment)
        })
        .mount(&yookassa)
        .await;
    let seen = reported.clone();
    Mock::given(method("GET"))
        .and(path_regex("^/v3/payments/[^/]+$"))
        .respond_with(move |request: &wiremock::Request| {
            let id = request.url.path().rsplit('/').next().unwrap().to_owned();
            let payments = seen.lock().unwrap();
            let Some((_, payment)) = payments.iter().find(|(known, _)| *known == id) else {
                return ResponseTemplate::new(404).set_body_json(json!({"type": "error"}));
            };
            let mut payment = payment.clone();
            payment["status"] = json!("succeeded");
            payment["paid"] = json!(true);
            payment["captured_at"] = json!(Timestamp::now().to_string());
            ResponseTemplate::new(200).set_body_json(payment)
        })
        .mount(&yookassa)
        .await;
    let plans = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        plans.path(),
        "plans:\n  - {id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 1}\n",
    )
    .unwrap();
    let token = format!("4242:{}", uuid::Uuid::new_v4().simple());
    let secret = format!("test_{}", uuid::Uuid::new_v4().simple());
    let yookassa_url = format!("{}/v3", yookassa.uri());
    let cli = Cli::try_parse_from([
        "wgsub-api",
        "serve",
        "--database-url",
        url.as_str(),
        "--namespace",
        namespace.as_str(),
        "--default-server",
        "main",
        "--plans-file",
        plans.path().to_str().unwrap(),
        "--bot-token",
        token.as_str(),
        "--yookassa-shop-id",
        "54321",
        "--yookassa-secret-key",
        secret.as_str(),
        "--yookassa-api-url",
        yookassa_url.as_str(),
        "--public-url",
        "https://vpn.example.com",
        "--referral-reward-days",
        "5",
        "--bot-username",
        "@wgsub_test_bot",
    ])
    .unwrap();
    let Command::Serve(args) = cli.command else {
        panic!("serve expected");
    };
    let state = state_from_args(&args, plane.admin_client()).await.unwrap();
    assert!(state.caches.synced(Duration::from_secs(10)).await);
    Api {
        router: wgsub_api::app(state.clone()),
        state,
        token,
        yookassa,
        reported,
        _plans: plans,
    }
}

impl Api {
    async fn call(&self, request: Request<Body>, from: &str) -> (StatusCode, Value) {
        let addr: SocketAddr = from.parse().unwrap();
        let response = self
            .router
            .clone()
            .layer(MockConnectInfo(addr))
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn user(
        &self,
        user: i64,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let now = Timestamp::now().as_second().to_string();
        let who = json!({"id": user, "first_name": format!("User{user}"), "language_code": "en"})
            .to_string();
        let init = initdata::sign(&[("auth_date", &now), ("user", &who)], &self.token);
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("tma {init}"));
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.call(request.body(body).unwrap(), "127.0.0.1:5000")
            .await
    }

    async fn webhook(&self, event: &str, id: &str) -> StatusCode {
        let body = json!({"type": "notification", "event": event, "object": {"id": id}});
        let request = Request::post("/api/v1/webhooks/yookassa")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.call(request, YOOKASSA_ADDR).await.0
    }

    /// The user buys the month plan through the API; returns the YooKassa id.
    async fn buy(&self, user: i64) -> String {
        let (status, body) = self
            .user(
                user,
                "POST",
                "/api/v1/payments",
                Some(json!({"plan": "month"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.reported.lock().unwrap().last().unwrap().0.clone()
    }

    /// What YooKassa will report as the amount of `yookassa_id`.
    fn report_amount(&self, yookassa_id: &str, value: &str) {
        let mut payments = self.reported.lock().unwrap();
        let (_, payment) = payments
            .iter_mut()
            .find(|(id, _)| id == yookassa_id)
            .unwrap();
        payment["amount"]["value"] = json!(value);
    }

    async fn paid_until(&self, user: i64) -> Option<Timestamp> {
        self.state
            .ledger
            .user(user)
            .await
            .unwrap()
            .and_then(|user| user.entitlement.paid_until)
    }

    async fn code(&self, code: &str, benefit: PromoBenefit, max_uses: u32) {
        self.state
            .ledger
            .create_promo_code(
                &NewPromoCode {
                    code: code.into(),
                    benefit,
                    expires_at: Timestamp::now() + DAY * 30,
                    max_uses,
                    admin_id: 1,
                },
                Timestamp::now(),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_code_is_redeemed_once_and_every_refusal_has_a_stable_code() {
    let api = api("promo-http").await;
    api.code("WEEK", PromoBenefit::Days(7), 10).await;
    api.code("SALE", PromoBenefit::PercentOff(20), 10).await;
    api.code("GONE", PromoBenefit::Days(7), 10).await;
    api.state
        .ledger
        .disable_promo_code("GONE", 1, Timestamp::now())
        .await
        .unwrap();
    let promo = |code: &str| json!({"code": code});

    let (status, body) = api
        .user(61, "POST", "/api/v1/me/promo", Some(promo("week")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["kind"].as_str(), body["days"].as_u64()),
        (Some("days"), Some(7))
    );
    let until = api.paid_until(61).await.expect("seven days");
    assert_eq!(body["paidUntil"], json!(until.to_string()));
    for (code, status, error) in [
        ("WEEK", StatusCode::CONFLICT, "promo_already_redeemed"),
        ("50% off!", StatusCode::BAD_REQUEST, "promo_malformed"),
        ("NOSUCH", StatusCode::NOT_FOUND, "promo_unknown"),
        ("GONE", StatusCode::GONE, "promo_disabled"),
    ] {
        let (got, body) = api
            .user(61, "POST", "/api/v1/me/promo", Some(promo(code)))
            .await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(error)),
            "{code}: {body}"
        );
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    let (status, _) = api
        .user(61, "POST", "/api/v1/me/promo", Some(json!({"code": 5})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.paid_until(61).await, Some(until));
    assert_eq!(
        api.state
            .ledger
            .promo_code("WEEK")
            .await
            .unwrap()
            .unwrap()
            .uses,
        1
    );

    let (status, body) = api.user(61, "GET", "/api/v1/me/promo", None).await;
    assert_eq!((status, body), (StatusCode::OK, Value::Null));
    let (status, body) = api
        .user(61, "POST", "/api/v1/me/promo", Some(promo("sale")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["percentOff"], 20);
    let (_, body) = api.user(61, "GET", "/api/v1/me/promo", None).await;
    assert_eq!(body, json!({"code": "SALE", "percentOff": 20}));
}

#[tokio::test]
async fn a_discount_goes_to_yookassa_and_a_tampered_amount_is_not_credited() {
    let api = api("promo-webhook").await;
    api.code("SALE", PromoBenefit::PercentOff(20), 10).await;
    let (status, _) = api
        .user(
            62,
            "POST",
            "/api/v1/me/promo",
            Some(json!({"code": "SALE"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let yookassa_id = api.buy(62).await;
    let requested: Vec<Value> = api
        .yookassa
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| r.body_json().unwrap())
        .collect();
    assert_eq!(requested[0]["amount"]["value"], "159.20");

    // YooKassa reports the full price: the amount is not the discounted one, nothing credited.
    api.report_amount(&yookassa_id, "199.00");
    assert_eq!(
        api.webhook("payment.succeeded", &yookassa_id).await,
        StatusCode::OK
    );
    assert_eq!(api.paid_until(62).await, None);
    let deliveries = api.state.ledger.webhook_deliveries(10).await.unwrap();
    assert_eq!(deliveries[0].1.reason, "amount_mismatch");
    assert!(
        api.state
            .ledger
            .waiting_discount(62)
            .await
            .unwrap()
            .is_some()
    );

    // The discounted amount: applied once, the discount consumed.
    api.report_amount(&yookassa_id, "159.20");
    for _ in 0..2 {
        assert_eq!(
            api.webhook("payment.succeeded", &yookassa_id).await,
            StatusCode::OK
        );
    }
    let until = api.paid_until(62).await.expect("paid");
    assert!(until > Timestamp::now() + DAY * 29);
    assert_eq!(api.state.ledger.waiting_discount(62).await.unwrap(), None);
    let (_, body) = api.user(62, "GET", "/api/v1/me/promo", None).await;
    assert_eq!(body, Value::Null);
    // The next payment is at the full price.
    api.buy(62).await;
    let last = api.reported.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(last["amount"]["value"], "199.00");
}

#[tokio::test]
async fn the_referrer_sees_the_link_and_a_reward_that_a_refund_takes_back() {
    let api = api("referrals-http").await;
    let (status, body) = api.user(70, "GET", "/api/v1/me/referrals", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"link": "https://t.me/wgsub_test_bot?start=ref_70", "payload": "ref_70",
               "joined": 0, "rewarded": 0, "daysEarned": 0, "rewardDays": 5})
    );
    // User 71 came through the link (the bot records it at their first /start).
    for user in [70, 71] {
        assert_eq!(
            api.user(user, "GET", "/api/v1/me", None).await.0,
            StatusCode::OK
        );
    }
    sqlx::query(
        "INSERT INTO bot_referrals (user_id, payload, referrer_id, recorded_at) \
         VALUES (71, 'ref_70', 70, now())",
    )
    .execute(api.state.ledger.pool())
    .await
    .unwrap();
    let yookassa_id = api.buy(71).await;
    assert_eq!(
        api.webhook("payment.succeeded", &yookassa_id).await,
        StatusCode::OK
    );
    let rewarded = api.paid_until(70).await.expect("the reward");
    assert!(rewarded > Timestamp::now() + DAY * 4 && rewarded <= Timestamp::now() + DAY * 5);
    let (_, body) = api.user(70, "GET", "/api/v1/me/referrals", None).await;
    assert_eq!(
        (&body["joined"], &body["rewarded"], &body["daysEarned"]),
        (&json!(1), &json!(1), &json!(5))
    );

    // The first payment is refunded in full: the reward goes with it.
    let refund_id = "2f000000-0015-5000-9000-0000000000aa";
    Mock::given(method("GET"))
        .and(path(format!("/v3/refunds/{refund_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": refund_id, "payment_id": yookassa_id, "status": "succeeded",
            "amount": {"value": "199.00", "currency": "RUB"},
            "created_at": Timestamp::now().to_string(),
        })))
        .mount(&api.yookassa)
        .await;
    assert_eq!(
        api.webhook("refund.succeeded", refund_id).await,
        StatusCode::OK
    );
    assert_eq!(api.paid_until(71).await, None);
    assert_eq!(api.paid_until(70).await, None);
    let (_, body) = api.user(70, "GET", "/api/v1/me/referrals", None).await;
    assert_eq!(
        (&body["joined"], &body["rewarded"], &body["daysEarned"]),
        (&json!(1), &json!(0), &json!(0))
    );
    // A later payment of the same referee is not a first payment: no reward.
    let again = api.buy(71).await;
    assert_eq!(
        api.webhook("payment.succeeded", &again).await,
        StatusCode::OK
    );
    assert!(api.paid_until(71).await.is_some());
    assert_eq!(api.paid_until(70).await, None);
}
