//! The Mini App's Telegram Stars invoice over HTTP (tower `oneshot`): real PostgreSQL (a fresh
//! database per test), the real Kubernetes API server of the test process behind the state's
//! caches (the endpoint itself calls no Kubernetes API) and the Telegram Bot API faked by
//! wiremock. `POST /api/v1/stars/invoice` asks `createInvoiceLink` for an `XTR` invoice with
//! no provider token and a payload the bot verifies, refuses plans not sold for Stars and
//! suspended users without calling Telegram, and answers 502 without the token when Telegram
//! fails.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tower::ServiceExt;
use wgsub_api::metrics::Metrics;
use wgsub_api::qr::QrCache;
use wgsub_api::{AppState, KubeApis, Settings, app, clientip, initdata};
use wgsub_crds::plans::PlanCatalogue;
use wgsub_devices::{CacheOptions, Caches};
use wgsub_ledger::stars::{InvoiceKey, InvoicePayload};
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::{Ledger, YooKassa, YooKassaConfig};
use wgsub_testkit::chart::{apply_chart_rbac, component_client, peer_keys_namespace};
use wgsub_testkit::envtest::ControlPlane;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use zeroize::Zeroizing;

const PLANS: &str = "plans:
  - {id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 1, priceStars: 150}
  - {id: quarter, title: {ru: Квартал, en: Quarter}, days: 90, priceMinor: 54900, currency: RUB, devices: 3}
";

struct Harness {
    router: Router,
    state: Arc<AppState>,
    telegram: MockServer,
    token: String,
}

async fn harness(label: &str) -> Harness {
    let plane = ControlPlane::with_crds();
    let namespace = plane.namespace(&format!("api-{label}")).await;
    apply_chart_rbac(plane, &namespace, &[]).await;
    let client = component_client(plane, &namespace, "api").await;
    let (pool, _) = fresh_database(&label.replace('-', "_")).await;
    let telegram = MockServer::start().await;
    // YooKassa is not called here; its client still needs an address.
    let yookassa = MockServer::start().await;
    let token = format!("{}:{}", 4343, uuid::Uuid::new_v4().simple());
    let state = Arc::new(AppState {
        ledger: Ledger::new(pool, false),
        yookassa: YooKassa::new(YooKassaConfig {
            api_base: format!("{}/v3", yookassa.uri()),
            shop_id: "54321".into(),
            secret_key: Zeroizing::new(format!("test_{}", uuid::Uuid::new_v4().simple())),
            timeout: Duration::from_secs(2),
            max_attempts: 1,
            retry_backoff: Duration::from_millis(5),
        })
        .unwrap(),
        caches: Caches::spawn(
            client.clone(),
            &namespace,
            CacheOptions {
                subscriptions: true,
                keys_namespace: Some(peer_keys_namespace(&namespace)),
                ..CacheOptions::default()
            },
        ),
        kube: KubeApis::new(client, &namespace),
        plans: PlanCatalogue::from_yaml_str(PLANS).unwrap(),
        settings: Settings {
            bot_token: Zeroizing::new(token.clone()),
            init_data_max_age: SignedDuration::from_hours(1),
            return_url: "https://vpn.example.com/miniapp/".into(),
            receipt: None,
            yookassa_allowed: clientip::yookassa_ranges(),
            trusted_proxies: vec![],
            default_server: "main".into(),
            max_body_bytes: 4096,
            telegram_api_url: telegram.uri(),
        },
        metrics: Metrics::new(),
        qr_cache: QrCache::new(QrCache::DEFAULT_CAPACITY),
    });
    Harness {
        router: app(state.clone()),
        state,
        telegram,
        token,
    }
}

impl Harness {
    fn init_data(&self, user_id: i64, language: &str) -> String {
        let now = Timestamp::now().as_second().to_string();
        let user =
            json!({"id": user_id, "first_name": "Anna", "language_code": language}).to_string();
        initdata::sign(&[("auth_date", &now), ("user", &user)], &self.token)
    }

    async fn invoice(&self, user_id: i64, language: &str, plan: &str) -> (StatusCode, Value) {
        let request = Request::post("/api/v1/stars/invoice")
            .header(
                header::AUTHORIZATION,
                format!("tma {}", self.init_data(user_id, language)),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"plan": plan}).to_string()))
            .unwrap();
        self.send(request).await
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let mut request = request;
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                40000,
            ))));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }

    /// Telegram makes invoice links.
    async fn telegram_makes_links(&self) {
        Mock::given(method("POST"))
            .and(path(format!("/bot{}/createInvoiceLink", self.token)))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"ok": true, "result": "https://t.me/$AbCdEfInvoice"})),
            )
            .mount(&self.telegram)
            .await;
    }

    async fn link_requests(&self) -> Vec<Value> {
        self.telegram
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| r.body_json().unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mini_app_gets_a_stars_invoice_link_for_a_stars_plan() {
    let h = harness("stars-link").await;
    h.telegram_makes_links().await;
    let (status, body) = h.invoice(7001, "en", "month").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"invoiceLink": "https://t.me/$AbCdEfInvoice", "stars": 150})
    );
    let sent = h.link_requests().await;
    assert_eq!(sent.len(), 1);
    let request = &sent[0];
    assert_eq!(request["currency"], "XTR");
    assert_eq!(request["title"], "VPN: Month");
    assert_eq!(
        request["prices"],
        json!([{"label": "VPN: Month", "amount": 150}])
    );
    assert!(request.get("provider_token").is_none(), "{request}");
    // The payload is the one the bot verifies: this user, this plan, this price.
    let key = InvoiceKey::from_bot_token(&h.token);
    assert_eq!(
        InvoicePayload::decode(request["payload"].as_str().unwrap(), &key),
        Ok(InvoicePayload {
            user_id: 7001,
            plan: "month".into(),
            stars: 150
        })
    );
    // The user was recorded in the ledger (the pre-checkout needs them).
    assert!(h.state.ledger.user(7001).await.unwrap().is_some());
    // The plan list tells the Mini App which plans are sold for Stars.
    let (status, plans) = h
        .send(Request::get("/api/v1/plans").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(plans[0]["priceStars"], 150);
    assert!(plans[1].get("priceStars").is_none(), "{plans}");
    // Russian titles for a Russian user.
    let (status, _) = h.invoice(7002, "ru", "month").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.link_requests().await[1]["title"], "VPN: Месяц");
}

#[tokio::test(flavor = "multi_thread")]
async fn plans_not_sold_for_stars_and_suspended_users_get_no_invoice_and_telegram_is_not_called() {
    let h = harness("stars-refused").await;
    h.telegram_makes_links().await;
    let (status, body) = h.invoice(7003, "en", "quarter").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "stars_not_offered");
    let (status, body) = h.invoice(7003, "en", "lifetime").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "unknown_plan");
    h.state
        .ledger
        .set_suspended(7003, true, 900, "test", Timestamp::now())
        .await
        .unwrap();
    let (status, body) = h.invoice(7003, "en", "month").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "suspended");
    let unauthenticated = Request::post("/api/v1/stars/invoice")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"plan":"month"}"#))
        .unwrap();
    let (status, body) = h.send(unauthenticated).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthorized");
    assert!(h.link_requests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_telegram_failure_is_a_502_that_does_not_reveal_the_token() {
    let h = harness("stars-telegram-down").await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "ok": false, "error_code": 400, "description": "Bad Request: currency XTR is unavailable"
        })))
        .mount(&h.telegram)
        .await;
    let (status, body) = h.invoice(7004, "en", "month").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["code"], "telegram_unavailable");
    let secret = h.token.split(':').nth(1).unwrap();
    assert!(!body.to_string().contains(secret), "{body}");
    // And when what answers is not the Bot API.
    h.telegram.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>gateway</html>"))
        .mount(&h.telegram)
        .await;
    let (status, body) = h.invoice(7004, "en", "month").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(!body.to_string().contains(secret), "{body}");
}
