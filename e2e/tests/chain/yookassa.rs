//! A fake YooKassa at its HTTP boundary (wiremock): `POST /v3/payments` (Basic auth and an
//! `Idempotence-Key` required) records a pending payment echoing the request's amount and
//! metadata; `GET /v3/payments/{id}` answers what is recorded. [`FakeYooKassa::pay`] plays the
//! buyer completing the checkout. Credentials are made per run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use jiff::Timestamp;
use serde_json::{Value, json};
use wiremock::matchers::{header, header_exists, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

type Payments = Arc<Mutex<BTreeMap<String, Value>>>;

/// The fake and the payments it holds.
#[derive(Debug)]
pub struct FakeYooKassa {
    server: MockServer,
    shop_id: String,
    secret_key: String,
    payments: Payments,
}

fn lock(payments: &Payments) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
    payments.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeYooKassa {
    pub async fn start() -> Self {
        let fake = Self {
            server: MockServer::start().await,
            shop_id: format!("{}", 100_000 + std::process::id() % 800_000),
            secret_key: format!("test_{}", uuid::Uuid::new_v4().simple()),
            payments: Payments::default(),
        };
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", fake.shop_id, fake.secret_key))
        );

        let store = fake.payments.clone();
        Mock::given(method("POST"))
            .and(path("/v3/payments"))
            .and(header("authorization", basic.as_str()))
            .and(header_exists("idempotence-key"))
            .respond_with(move |request: &Request| {
                let Ok(body) = request.body_json::<Value>() else {
                    return ResponseTemplate::new(400).set_body_json(json!({
                        "type": "error", "code": "invalid_request", "description": "not JSON",
                    }));
                };
                let id = format!("2f{}", uuid::Uuid::new_v4().simple());
                let payment = json!({
                    "id": id,
                    "status": "pending",
                    "paid": false,
                    "amount": body["amount"],
                    "metadata": body["metadata"],
                    "confirmation": {
                        "type": "redirect",
                        "confirmation_url": format!("https://yoomoney.example/checkout?orderId={id}"),
                    },
                    "created_at": Timestamp::now().to_string(),
                });
                lock(&store).insert(id, payment.clone());
                ResponseTemplate::new(200).set_body_json(payment)
            })
            .mount(&fake.server)
            .await;

        let store = fake.payments.clone();
        Mock::given(method("GET"))
            .and(path_regex(r"^/v3/payments/[A-Za-z0-9_-]+$"))
            .and(header("authorization", basic.as_str()))
            .respond_with(move |request: &Request| {
                let id = request.url.path().rsplit('/').next().unwrap_or_default();
                match lock(&store).get(id) {
                    Some(payment) => ResponseTemplate::new(200).set_body_json(payment),
                    None => ResponseTemplate::new(404).set_body_json(json!({
                        "type": "error", "code": "not_found", "description": "payment not found",
                    })),
                }
            })
            .mount(&fake.server)
            .await;
        fake
    }

    /// The `wgsub-api serve` flags that point the API at this fake.
    pub fn api_flags(&self) -> Vec<String> {
        vec![
            "--yookassa-api-url".to_owned(),
            format!("{}/v3", self.server.uri()),
            "--yookassa-shop-id".to_owned(),
            self.shop_id.clone(),
            "--yookassa-secret-key".to_owned(),
            self.secret_key.clone(),
        ]
    }

    /// The only payment created so far.
    pub fn single_payment_id(&self) -> String {
        let payments = lock(&self.payments);
        assert_eq!(
            payments.len(),
            1,
            "expected exactly one payment at YooKassa"
        );
        payments.keys().next().cloned().unwrap_or_default()
    }

    /// The buyer completes the checkout: YooKassa captures the payment at `captured_at`.
    /// Returns the payment as YooKassa now reports it.
    pub fn pay(&self, id: &str, captured_at: Timestamp) -> Value {
        let mut payments = lock(&self.payments);
        let payment = payments
            .get_mut(id)
            .unwrap_or_else(|| panic!("YooKassa has no payment {id}"));
        payment["status"] = json!("succeeded");
        payment["paid"] = json!(true);
        payment["captured_at"] = json!(captured_at.to_string());
        payment.clone()
    }
}
