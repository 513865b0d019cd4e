//! A stateful YooKassa fake (wiremock) with saved payment methods and charges without
//! confirmation, shared by the ledger, api and bot renewal tests (`#[path]`-included):
//!
//! - `POST /v3/payments` honours the `Idempotence-Key` as YooKassa does (the same key answers
//!   the same payment); a redirect payment is created `pending` with a confirmation URL
//!   (remembering `save_payment_method`); a charge with `payment_method_id` is decided at once
//!   by the method's state — `succeeded`, or `canceled` with `cancellation_details` — or, for
//!   a method set to answer late, left `pending` until [`FakeYooKassa::decide`]; an unknown
//!   method is refused with HTTP 400, and so is a charge whose key was used before with a
//!   body not byte-identical to the first (YooKassa may refuse a key reused with other data).
//! - `GET /v3/payments/{id}` answers the stored payment (404 for others).
//! - [`FakeYooKassa::pay`] is the user paying a redirect payment: it succeeds and, when the
//!   payment asked for it, its card is saved (a new method, `Visa` ending `4242`, 12/2027).
//! - [`FakeYooKassa::fail_next_posts`] makes the next POSTs answer 500 (YooKassa unreachable);
//!   [`FakeYooKassa::lose_next_charge_answers`] makes the next charges go through but answer
//!   500 (the answer lost on the way back).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// How a saved method answers a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodState {
    /// Charged at once.
    Active,
    /// Canceled at once with this `cancellation_details.reason`.
    Declined(String),
    /// Left `pending`; [`FakeYooKassa::decide`] settles it.
    Late,
}

#[derive(Default)]
struct State {
    payments: HashMap<String, Value>,
    by_key: HashMap<String, String>,
    methods: HashMap<String, MethodState>,
    /// Every POST with a `payment_method_id`: (Idempotence-Key, body).
    charges: Vec<(String, Value)>,
    /// Every POST without one.
    purchases: Vec<Value>,
    fail_posts: usize,
    lose_charge_answers: usize,
    /// The raw body of the first charge processed under each Idempotence-Key.
    charge_bodies: HashMap<String, Vec<u8>>,
}

#[derive(Clone)]
pub struct FakeYooKassa {
    state: Arc<Mutex<State>>,
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

impl FakeYooKassa {
    /// Mounts the fake on `server`.
    pub async fn mount(server: &MockServer) -> Self {
        let fake = Self {
            state: Arc::default(),
        };
        let state = fake.state.clone();
        Mock::given(method("POST"))
            .and(path("/v3/payments"))
            .respond_with(move |request: &Request| {
                let mut state = state.lock().unwrap();
                let key = request
                    .headers
                    .get("idempotence-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body: Value = request.body_json().unwrap();
                if body.get("payment_method_id").is_some() {
                    state.charges.push((key.clone(), body.clone()));
                }
                if state.fail_posts > 0 {
                    state.fail_posts -= 1;
                    return ResponseTemplate::new(500)
                        .set_body_json(json!({"type": "error", "code": "internal_server_error"}));
                }
                if let Some(method_id) = body["payment_method_id"].as_str() {
                    let lost = |state: &mut State| {
                        let lost = state.lose_charge_answers > 0;
                        state.lose_charge_answers = state.lose_charge_answers.saturating_sub(1);
                        lost
                    };
                    if let Some(id) = state.by_key.get(&key).cloned() {
                        if state.charge_bodies.get(&key) != Some(&request.body) {
                            return ResponseTemplate::new(400).set_body_json(json!({
                                "type": "error", "code": "invalid_request",
                                "description": "Idempotence-Key reused with a different body"
                            }));
                        }
                        if lost(&mut state) {
                            return ResponseTemplate::new(500).set_body_json(
                                json!({"type": "error", "code": "internal_server_error"}),
                            );
                        }
                        return ResponseTemplate::new(200).set_body_json(&state.payments[&id]);
                    }
                    let Some(method_state) = state.methods.get(method_id).cloned() else {
                        return ResponseTemplate::new(400).set_body_json(json!({
                            "type": "error", "code": "invalid_request",
                            "description": "payment_method_id is not a saved method"
                        }));
                    };
                    let id = uuid::Uuid::new_v4().to_string();
                    let mut payment = json!({
                        "id": id, "status": "pending", "paid": false,
                        "amount": body["amount"], "metadata": body["metadata"],
                        "created_at": now(),
                        "payment_method": saved_card(method_id),
                    });
                    match method_state {
                        MethodState::Active => succeed(&mut payment),
                        MethodState::Declined(reason) => cancel(&mut payment, &reason),
                        MethodState::Late => {}
                    }
                    state.charge_bodies.insert(key.clone(), request.body.clone());
                    state.by_key.insert(key, id.clone());
                    state.payments.insert(id, payment.clone());
                    if lost(&mut state) {
                        return ResponseTemplate::new(500).set_body_json(
                            json!({"type": "error", "code": "internal_server_error"}),
                        );
                    }
                    return ResponseTemplate::new(200).set_body_json(payment);
                }
                state.purchases.push(body.clone());
                if let Some(id) = state.by_key.get(&key) {
                    return ResponseTemplate::new(200).set_body_json(&state.payments[id]);
                }
                let id = uuid::Uuid::new_v4().to_string();
                let payment = json!({
                    "id": id, "status": "pending", "paid": false,
                    "amount": body["amount"], "metadata": body["metadata"],
                    "created_at": now(),
                    "confirmation": {"type": "redirect", "confirmation_url": format!("https://yoomoney.example/checkout?orderId={id}")},
                    "wants_saving": body["save_payment_method"] == json!(true),
                });
                state.by_key.insert(key, id.clone());
                state.payments.insert(id, payment.clone());
                ResponseTemplate::new(200).set_body_json(payment)
            })
            .mount(server)
            .await;
        let state = fake.state.clone();
        Mock::given(method("GET"))
            .and(path_regex("^/v3/payments/[^/]+$"))
            .respond_with(move |request: &Request| {
                let id = request.url.path().rsplit('/').next().unwrap_or_default();
                match state.lock().unwrap().payments.get(id) {
                    Some(payment) => ResponseTemplate::new(200).set_body_json(payment),
                    None => ResponseTemplate::new(404).set_body_json(
                        json!({"type": "error", "code": "not_found", "description": "no such payment"}),
                    ),
                }
            })
            .mount(server)
            .await;
        fake
    }

    /// The user pays the redirect payment `id`; its card is saved when the payment asked for
    /// it. Returns the saved method's id.
    pub fn pay(&self, id: &str) -> Option<String> {
        let mut state = self.state.lock().unwrap();
        let payment = state
            .payments
            .get_mut(id)
            .expect("a payment the fake created");
        succeed(payment);
        let wants = payment["wants_saving"] == json!(true);
        let method_id = format!("pm-{}", uuid::Uuid::new_v4().simple());
        payment["payment_method"] = if wants {
            saved_card(&method_id)
        } else {
            let mut card = saved_card(&method_id);
            card["saved"] = json!(false);
            card
        };
        if wants {
            state.methods.insert(method_id.clone(), MethodState::Active);
            Some(method_id)
        } else {
            None
        }
    }

    /// How the saved method `id` answers charges from now on.
    pub fn set_method(&self, id: &str, method_state: MethodState) {
        self.state
            .lock()
            .unwrap()
            .methods
            .insert(id.to_owned(), method_state);
    }

    /// Settles the late charge `id`: succeeded, or canceled for `reason`.
    pub fn decide(&self, id: &str, declined: Option<&str>) {
        let mut state = self.state.lock().unwrap();
        let payment = state
            .payments
            .get_mut(id)
            .expect("a payment the fake created");
        match declined {
            None => succeed(payment),
            Some(reason) => cancel(payment, reason),
        }
    }

    /// The next `count` POSTs answer HTTP 500.
    pub fn fail_next_posts(&self, count: usize) {
        self.state.lock().unwrap().fail_posts = count;
    }

    /// The next `count` charges with a saved method are made, but answer HTTP 500.
    pub fn lose_next_charge_answers(&self, count: usize) {
        self.state.lock().unwrap().lose_charge_answers = count;
    }

    /// Every charge request with a saved method, answered or not: (Idempotence-Key, body).
    pub fn charges(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().charges.clone()
    }

    /// The distinct payments charged with saved methods.
    pub fn charged_payments(&self) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        state
            .payments
            .values()
            .filter(|p| p.get("confirmation").is_none())
            .cloned()
            .collect()
    }

    /// Every redirect payment request (the user buying).
    pub fn purchases(&self) -> Vec<Value> {
        self.state.lock().unwrap().purchases.clone()
    }
}

fn saved_card(method_id: &str) -> Value {
    json!({
        "type": "bank_card", "id": method_id, "saved": true, "title": "Bank card *4242",
        "card": {"first6": "424242", "last4": "4242", "expiry_month": "12", "expiry_year": "2027",
                 "card_type": "Visa", "issuer_country": "RU"}
    })
}

fn succeed(payment: &mut Value) {
    payment["status"] = json!("succeeded");
    payment["paid"] = json!(true);
    payment["captured_at"] = json!(now());
}

fn cancel(payment: &mut Value, reason: &str) {
    payment["status"] = json!("canceled");
    payment["paid"] = json!(false);
    payment["cancellation_details"] = json!({"party": "payment_network", "reason": reason});
}
