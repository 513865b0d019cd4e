//! The fake Telegram Bot API's payments (wiremock, mounted over [`super::fake_telegram`]):
//! `sendInvoice` answers with the invoice message, `answerPreCheckoutQuery` and
//! `refundStarPayment` with `true` (or, for charges listed as refunded before, Telegram's
//! `CHARGE_ALREADY_REFUNDED`); and the updates Telegram sends for a payment — a
//! `pre_checkout_query` and a message with a `successful_payment` — built as Telegram writes
//! them, parsed the way teloxide reads updates.

use serde_json::{Value, json};
use teloxide::types::Update;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// Mounts the payment methods on `server` (ahead of the catch-all of `fake_telegram`).
pub async fn mount_payments(server: &MockServer, refunded_before: &[&str]) {
    Mock::given(method("POST"))
        .and(path_regex("(?i)/sendinvoice$"))
        .respond_with(|request: &Request| {
            let body: Value = request.body_json().unwrap();
            ResponseTemplate::new(200).set_body_json(json!({
                "ok": true,
                "result": {
                    "message_id": 77,
                    "date": 1_700_000_000,
                    "chat": {"id": body["chat_id"], "type": "private", "first_name": "x"},
                    "invoice": {
                        "title": body["title"],
                        "description": body["description"],
                        "start_parameter": "",
                        "currency": body["currency"],
                        "total_amount": body["prices"][0]["amount"],
                    }
                }
            }))
        })
        .with_priority(1)
        .mount(server)
        .await;
    let refunded_before: Vec<String> = refunded_before.iter().map(|s| (*s).to_owned()).collect();
    Mock::given(method("POST"))
        .and(path_regex("(?i)/refundstarpayment$"))
        .respond_with(move |request: &Request| {
            let body: Value = request.body_json().unwrap();
            let charge = body["telegram_payment_charge_id"]
                .as_str()
                .unwrap_or_default();
            if refunded_before.iter().any(|c| c == charge) {
                return ResponseTemplate::new(400).set_body_json(json!({
                    "ok": false, "error_code": 400,
                    "description": "Bad Request: CHARGE_ALREADY_REFUNDED"
                }));
            }
            ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": true}))
        })
        .with_priority(1)
        .mount(server)
        .await;
}

/// The JSON bodies of the requests `server` received for `method_name` (case-insensitive).
pub async fn requests(server: &MockServer, method_name: &str) -> Vec<Value> {
    let suffix = format!("/{}", method_name.to_ascii_lowercase());
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().to_ascii_lowercase().ends_with(&suffix))
        .map(|r| r.body_json().unwrap())
        .collect()
}

fn parse(update: Value) -> Update {
    // teloxide reads updates from text (its `Update` does not read a `Value`).
    serde_json::from_str(&update.to_string()).expect("a valid update")
}

fn from(user: i64, language: &str) -> Value {
    json!({"id": user, "is_bot": false, "first_name": "Anna", "username": format!("user_{user}"), "language_code": language})
}

/// A `pre_checkout_query` from `user`.
pub fn pre_checkout(
    update_id: i32,
    user: i64,
    language: &str,
    currency: &str,
    total_amount: u32,
    payload: &str,
) -> Update {
    parse(json!({
        "update_id": update_id,
        "pre_checkout_query": {
            "id": format!("pcq-{update_id}"),
            "from": from(user, language),
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": payload,
        }
    }))
}

/// A message with a `successful_payment` in `user`'s private chat.
pub fn successful_payment(
    update_id: i32,
    user: i64,
    language: &str,
    total_amount: u32,
    payload: &str,
    charge_id: &str,
) -> Update {
    parse(json!({
        "update_id": update_id,
        "message": {
            "message_id": 1000 + update_id,
            "date": jiff::Timestamp::now().as_second(),
            "chat": {"id": user, "type": "private", "first_name": "Anna"},
            "from": from(user, language),
            "successful_payment": {
                "currency": "XTR",
                "total_amount": total_amount,
                "invoice_payload": payload,
                "telegram_payment_charge_id": charge_id,
                "provider_payment_charge_id": "",
            }
        }
    }))
}

/// A text message (a command) from `user` in their private chat.
pub fn text(update_id: i32, user: i64, language: &str, text: &str) -> Update {
    let command = text.split_whitespace().next().unwrap_or_default();
    parse(json!({
        "update_id": update_id,
        "message": {
            "message_id": 1000 + update_id,
            "date": jiff::Timestamp::now().as_second(),
            "chat": {"id": user, "type": "private", "first_name": "Anna"},
            "from": from(user, language),
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": command.chars().count()}]
        }
    }))
}

/// A press of an inline button with `data` by `user`.
pub fn button(update_id: i32, user: i64, language: &str, data: &str) -> Update {
    parse(json!({
        "update_id": update_id,
        "callback_query": {
            "id": format!("cbq-{update_id}"), "chat_instance": "-1",
            "from": from(user, language),
            "data": data
        }
    }))
}
