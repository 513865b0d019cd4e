//! The YooKassa API v3 client (create a payment, fetch a payment or a refund) and the pure
//! pieces around it: the request body, amounts in minor units, the retry rule and the check of
//! a fetched payment against our pending record.
//!
//! Retries follow YooKassa's rule: a request that timed out or got a 5xx (or 202 "processing",
//! or 429) is repeated with the *same* `Idempotence-Key`, so a payment is never created twice.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use wgsub_crds::plans::Plan;
use zeroize::Zeroizing;

/// Production API base.
pub const DEFAULT_API_BASE: &str = "https://api.yookassa.ru/v3";

/// How to reach YooKassa. The secret key never appears in `Debug` output.
#[derive(Clone)]
pub struct YooKassaConfig {
    /// API base URL without a trailing slash, e.g. [`DEFAULT_API_BASE`].
    pub api_base: String,
    pub shop_id: String,
    pub secret_key: Zeroizing<String>,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts per call (at least 1).
    pub max_attempts: u32,
    /// Pause before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
}

impl fmt::Debug for YooKassaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YooKassaConfig")
            .field("api_base", &self.api_base)
            .field("shop_id", &self.shop_id)
            .field("secret_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// An amount as YooKassa writes it (`"199.00"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub value: String,
    pub currency: String,
}

/// The payment confirmation YooKassa returns for `redirect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub confirmation_url: Option<String>,
}

/// A payment as YooKassa reports it (the fields wgsub reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    /// `pending`, `waiting_for_capture`, `succeeded` or `canceled`.
    pub status: String,
    pub amount: Amount,
    #[serde(default)]
    pub paid: bool,
    #[serde(default)]
    pub confirmation: Option<Confirmation>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub captured_at: Option<Timestamp>,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
}

/// A payment method as YooKassa reports it inside a payment (`payment_method`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    /// `bank_card`, `yoo_money`, `sbp`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    /// True when YooKassa saved it for charges without the user (`save_payment_method`).
    #[serde(default)]
    pub saved: bool,
    #[serde(default)]
    pub card: Option<Card>,
}

/// The card of a `bank_card` payment method (YooKassa never sends the full number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    #[serde(default)]
    pub last4: Option<String>,
    #[serde(default)]
    pub expiry_month: Option<String>,
    #[serde(default)]
    pub expiry_year: Option<String>,
    /// `Visa`, `MasterCard`, `Mir`, …
    #[serde(default)]
    pub card_type: Option<String>,
}

/// Why YooKassa canceled a payment (`cancellation_details`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationDetails {
    #[serde(default)]
    pub party: Option<String>,
    /// `insufficient_funds`, `card_expired`, `permission_revoked`, …
    pub reason: String,
}

/// A payment with what renewals read besides [`Payment`]: the payment method (saved or not)
/// and why it was canceled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDetails {
    #[serde(flatten)]
    pub payment: Payment,
    #[serde(default)]
    pub payment_method: Option<PaymentMethod>,
    #[serde(default)]
    pub cancellation_details: Option<CancellationDetails>,
}

/// A refund as YooKassa reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    /// `pending`, `succeeded` or `canceled`.
    pub status: String,
    pub amount: Amount,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
}

/// Metadata keys wgsub puts on every payment.
pub const METADATA_PAYMENT_ID: &str = "wgsub_payment_id";
pub const METADATA_USER_ID: &str = "wgsub_user_id";

/// Who a 54-FZ receipt is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptCustomer {
    Email(String),
    Phone(String),
}

impl ReceiptCustomer {
    /// Reads what a user typed as their receipt contact: an e-mail (`a@b.c`) or a phone number
    /// (10–15 digits, spaces, dashes, brackets and a leading `+` allowed; stored as digits).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.contains('@') {
            let (local, domain) = text.split_once('@').unwrap_or_default();
            let ok = !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && text.len() <= 254
                && !text.chars().any(|c| c.is_whitespace() || c.is_control());
            return if ok {
                Ok(ReceiptCustomer::Email(text.to_owned()))
            } else {
                Err("not an e-mail address".into())
            };
        }
        let body = text.strip_prefix('+').unwrap_or(text);
        if !body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')'))
        {
            return Err("not an e-mail address or a phone number".into());
        }
        let digits: String = body.chars().filter(char::is_ascii_digit).collect();
        if (10..=15).contains(&digits.len()) {
            Ok(ReceiptCustomer::Phone(digits))
        } else {
            Err("a phone number has 10–15 digits".into())
        }
    }
}

/// Receipt settings: the VAT code of the items (YooKassa `vat_code`, 1 = no VAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptSettings {
    pub vat_code: u8,
}

/// The body of `POST /v3/payments` for one plan bought by one user.
pub fn create_payment_body(
    payment_id: Uuid,
    user_id: i64,
    plan: &Plan,
    description: &str,
    return_url: &str,
    receipt: Option<(&ReceiptCustomer, ReceiptSettings)>,
) -> serde_json::Value {
    let amount = json!({"value": plan.price_decimal(), "currency": plan.currency});
    let description: String = description.chars().take(128).collect();
    let mut body = json!({
        "amount": amount,
        "capture": true,
        "confirmation": {"type": "redirect", "return_url": return_url},
        "description": description,
        "metadata": {
            METADATA_PAYMENT_ID: payment_id.to_string(),
            METADATA_USER_ID: user_id.to_string(),
            "wgsub_plan": plan.id,
        },
    });
    if let Some((customer, settings)) = receipt {
        let customer = match customer {
            ReceiptCustomer::Email(email) => json!({"email": email}),
            ReceiptCustomer::Phone(phone) => json!({"phone": phone}),
        };
        body["receipt"] = json!({
            "customer": customer,
            "items": [{
                "description": description,
                "quantity": "1.00",
                "amount": amount,
                "vat_code": settings.vat_code,
                "payment_mode": "full_payment",
                "payment_subject": "service",
            }],
        });
    }
    body
}

/// `"199.00"` → 19900. `None` for anything that is not a non-negative decimal with at most two
/// fraction digits.
pub fn parse_amount_minor(value: &str) -> Option<i64> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if whole.is_empty()
        || fraction.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = match fraction.len() {
        0 => 0,
        1 => fraction.parse::<i64>().ok()? * 10,
        _ => fraction.parse().ok()?,
    };
    whole.checked_mul(100)?.checked_add(fraction)
}

/// Why a fetched payment does not match our record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentMismatch {
    #[error("YooKassa reports status {0:?}, not succeeded")]
    NotSucceeded(String),
    #[error("YooKassa payment id {got:?} is not the recorded {expected:?}")]
    Id { expected: String, got: String },
    #[error("amount {got} does not match the recorded {expected} (minor units)")]
    Amount { expected: i64, got: String },
    #[error("currency {got:?} does not match the recorded {expected:?}")]
    Currency { expected: String, got: String },
    #[error("metadata {key} is {got:?}, expected {expected:?}")]
    Metadata {
        key: &'static str,
        expected: String,
        got: Option<String>,
    },
}

impl PaymentMismatch {
    /// A short stable label (for metrics and the audit trail).
    pub fn label(&self) -> &'static str {
        match self {
            PaymentMismatch::NotSucceeded(_) => "not_succeeded",
            PaymentMismatch::Id { .. } => "id_mismatch",
            PaymentMismatch::Amount { .. } => "amount_mismatch",
            PaymentMismatch::Currency { .. } => "currency_mismatch",
            PaymentMismatch::Metadata { .. } => "metadata_mismatch",
        }
    }
}

/// What our pending record says a payment must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPayment<'a> {
    pub our_id: Uuid,
    pub yookassa_id: Option<&'a str>,
    pub user_id: i64,
    pub amount_minor: i64,
    pub currency: &'a str,
}

/// Checks a payment fetched from YooKassa against our record: it must have succeeded, and
/// id, amount, currency and metadata must all match.
pub fn check_succeeded_payment(
    expected: &ExpectedPayment<'_>,
    fetched: &Payment,
) -> Result<(), PaymentMismatch> {
    if let Some(id) = expected.yookassa_id
        && id != fetched.id
    {
        return Err(PaymentMismatch::Id {
            expected: id.to_owned(),
            got: fetched.id.clone(),
        });
    }
    if fetched.status != "succeeded" {
        return Err(PaymentMismatch::NotSucceeded(fetched.status.clone()));
    }
    if parse_amount_minor(&fetched.amount.value) != Some(expected.amount_minor) {
        return Err(PaymentMismatch::Amount {
            expected: expected.amount_minor,
            got: fetched.amount.value.clone(),
        });
    }
    if fetched.amount.currency != expected.currency {
        return Err(PaymentMismatch::Currency {
            expected: expected.currency.to_owned(),
            got: fetched.amount.currency.clone(),
        });
    }
    for (key, want) in [
        (METADATA_PAYMENT_ID, expected.our_id.to_string()),
        (METADATA_USER_ID, expected.user_id.to_string()),
    ] {
        let got = fetched.metadata.get(key);
        if got != Some(&want) {
            return Err(PaymentMismatch::Metadata {
                key,
                expected: want,
                got: got.cloned(),
            });
        }
    }
    Ok(())
}

/// What a failed call looked like, for the retry rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// No answer in time, or the connection failed.
    Transport,
    /// An HTTP status that is not a success.
    Status(u16),
}

/// YooKassa's retry rule: repeat (with the same idempotence key) after timeouts, connection
/// failures, 202 "processing", 429 and 5xx; never after other 4xx.
pub fn should_retry(failure: AttemptFailure, attempt: u32, max_attempts: u32) -> bool {
    if attempt >= max_attempts {
        return false;
    }
    match failure {
        AttemptFailure::Transport => true,
        AttemptFailure::Status(status) => status == 202 || status == 429 || status >= 500,
    }
}

/// A failed YooKassa call. Never contains the credentials.
#[derive(Debug, thiserror::Error)]
pub enum YooKassaError {
    #[error("YooKassa did not answer after {attempts} attempts: {message}")]
    Unreachable { attempts: u32, message: String },
    #[error("YooKassa answered HTTP {status} ({code}): {description}")]
    Rejected {
        status: u16,
        code: String,
        description: String,
    },
    #[error("YooKassa's answer does not parse: {0}")]
    BadResponse(String),
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// The YooKassa HTTP client.
#[derive(Debug, Clone)]
pub struct YooKassa {
    http: reqwest::Client,
    config: YooKassaConfig,
}

impl YooKassa {
    pub fn new(config: YooKassaConfig) -> Result<Self, YooKassaError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| YooKassaError::BadResponse(format!("HTTP client: {e}")))?;
        Ok(Self { http, config })
    }

    /// `POST /payments` with `idempotence_key`, repeated with the same key as
    /// [`should_retry`] allows, read as a [`Payment`] or as [`PaymentDetails`] (with the
    /// payment method and the cancellation details: a charge with a saved method is decided in
    /// this answer).
    pub async fn create_payment<T: serde::de::DeserializeOwned>(
        &self,
        body: &serde_json::Value,
        idempotence_key: &str,
    ) -> Result<T, YooKassaError> {
        self.call(
            reqwest::Method::POST,
            "/payments",
            Some(body),
            Some(idempotence_key),
        )
        .await
    }

    /// `GET /payments/{id}` with the payment method and the cancellation details.
    pub async fn get_payment_details(&self, id: &str) -> Result<PaymentDetails, YooKassaError> {
        let path = format!("/payments/{}", path_segment(id)?);
        self.call(reqwest::Method::GET, &path, None, None).await
    }

    /// `GET /refunds/{id}`.
    pub async fn get_refund(&self, id: &str) -> Result<Refund, YooKassaError> {
        let path = format!("/refunds/{}", path_segment(id)?);
        self.call(reqwest::Method::GET, &path, None, None).await
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotence_key: Option<&str>,
    ) -> Result<T, YooKassaError> {
        let url = format!("{}{path}", self.config.api_base.trim_end_matches('/'));
        let max_attempts = self.config.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .basic_auth(&self.config.shop_id, Some(self.config.secret_key.as_str()));
            if let Some(key) = idempotence_key {
                request = request.header("Idempotence-Key", key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let (failure, message) = match request.send().await {
                Ok(response) if response.status() == reqwest::StatusCode::OK => {
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|e| YooKassaError::BadResponse(e.to_string()))?;
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| YooKassaError::BadResponse(e.to_string()));
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let error: Option<ErrorBody> = response.json().await.ok();
                    let failure = AttemptFailure::Status(status);
                    if !should_retry(failure, 1, 2) {
                        let error = error.unwrap_or(ErrorBody {
                            code: None,
                            description: None,
                        });
                        return Err(YooKassaError::Rejected {
                            status,
                            code: error.code.unwrap_or_else(|| "unknown".into()),
                            description: error.description.unwrap_or_default(),
                        });
                    }
                    (failure, format!("HTTP {status}"))
                }
                Err(e) => (AttemptFailure::Transport, transport_message(&e)),
            };
            if !should_retry(failure, attempt, max_attempts) {
                return Err(YooKassaError::Unreachable {
                    attempts: attempt,
                    message,
                });
            }
            tracing::warn!(attempt, %message, path, "YooKassa call failed; retrying with the same idempotence key");
            let backoff = self.config.retry_backoff * 2u32.saturating_pow(attempt - 1);
            tokio::time::sleep(backoff).await;
        }
    }
}

/// A reqwest error without the URL's credentials (reqwest never puts Basic auth in URLs, but
/// keep the text short and predictable).
fn transport_message(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

/// Whether `id` can be a YooKassa object id (they are UUID-like): 1–64 ASCII letters, digits,
/// `-` and `_`, so nothing that could change a request path.
pub fn is_object_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Refuses anything that is not an object id ([`is_object_id`]) as a path segment.
fn path_segment(id: &str) -> Result<&str, YooKassaError> {
    if is_object_id(id) {
        Ok(id)
    } else {
        Err(YooKassaError::BadResponse(format!(
            "{id:?} is not a YooKassa object id"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_crds::plans::LocalizedText;

    fn plan() -> Plan {
        Plan {
            id: "month".into(),
            title: LocalizedText {
                ru: "Месяц".into(),
                en: "Month".into(),
            },
            days: 30,
            price_minor: 19_900,
            currency: "RUB".into(),
            devices: 1,
            price_stars: None,
            traffic_gib: None,
        }
    }

    fn fetched(status: &str) -> Payment {
        Payment {
            id: "2d0e5c2f-000f-5000-9000-1b2c3d4e5f60".into(),
            status: status.into(),
            amount: Amount {
                value: "199.00".into(),
                currency: "RUB".into(),
            },
            paid: status == "succeeded",
            confirmation: None,
            metadata: BTreeMap::from([
                (METADATA_PAYMENT_ID.into(), Uuid::from_u128(7).to_string()),
                (METADATA_USER_ID.into(), "42".into()),
            ]),
            captured_at: None,
            created_at: None,
        }
    }

    fn expected() -> ExpectedPayment<'static> {
        ExpectedPayment {
            our_id: Uuid::from_u128(7),
            yookassa_id: Some("2d0e5c2f-000f-5000-9000-1b2c3d4e5f60"),
            user_id: 42,
            amount_minor: 19_900,
            currency: "RUB",
        }
    }

    #[test]
    fn amounts_parse_to_minor_units() {
        assert_eq!(parse_amount_minor("199.00"), Some(19_900));
        assert_eq!(parse_amount_minor("199.5"), Some(19_950));
        assert_eq!(parse_amount_minor("0.07"), Some(7));
        assert_eq!(parse_amount_minor("12"), Some(1_200));
        for bad in ["", ".5", "1.234", "-1.00", "1,00", "1e3", "abc", " 1.00"] {
            assert_eq!(parse_amount_minor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_matching_succeeded_payment_passes() {
        assert_eq!(
            check_succeeded_payment(&expected(), &fetched("succeeded")),
            Ok(())
        );
    }

    #[test]
    fn every_kind_of_mismatch_is_refused_with_its_label() {
        let labels = |edit: &dyn Fn(&mut Payment)| {
            let mut payment = fetched("succeeded");
            edit(&mut payment);
            check_succeeded_payment(&expected(), &payment)
                .unwrap_err()
                .label()
        };
        assert_eq!(labels(&|p| p.status = "pending".into()), "not_succeeded");
        assert_eq!(labels(&|p| p.status = "canceled".into()), "not_succeeded");
        assert_eq!(labels(&|p| p.id = "other".into()), "id_mismatch");
        assert_eq!(
            labels(&|p| p.amount.value = "1.99".into()),
            "amount_mismatch"
        );
        assert_eq!(
            labels(&|p| p.amount.currency = "USD".into()),
            "currency_mismatch"
        );
        assert_eq!(
            labels(&|p| {
                p.metadata.insert(METADATA_USER_ID.into(), "43".into());
            }),
            "metadata_mismatch"
        );
        assert_eq!(
            labels(&|p| {
                p.metadata.remove(METADATA_PAYMENT_ID);
            }),
            "metadata_mismatch"
        );
    }

    #[test]
    fn retries_follow_yookassas_rule() {
        for status in [202, 429, 500, 502, 503] {
            assert!(
                should_retry(AttemptFailure::Status(status), 1, 3),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(
                !should_retry(AttemptFailure::Status(status), 1, 3),
                "{status}"
            );
        }
        assert!(should_retry(AttemptFailure::Transport, 2, 3));
        assert!(!should_retry(AttemptFailure::Transport, 3, 3));
    }

    #[test]
    fn the_payment_body_redirects_captures_and_carries_our_metadata() {
        let body = create_payment_body(
            Uuid::from_u128(7),
            42,
            &plan(),
            "wgsub: Month",
            "https://t.me/bot",
            None,
        );
        assert_eq!(
            body["amount"],
            json!({"value": "199.00", "currency": "RUB"})
        );
        assert_eq!(body["capture"], json!(true));
        assert_eq!(
            body["confirmation"],
            json!({"type": "redirect", "return_url": "https://t.me/bot"})
        );
        assert_eq!(
            body["metadata"][METADATA_PAYMENT_ID],
            json!(Uuid::from_u128(7).to_string())
        );
        assert_eq!(body["metadata"][METADATA_USER_ID], json!("42"));
        assert!(body.get("receipt").is_none());
    }

    #[test]
    fn the_receipt_names_the_customer_and_one_full_payment_item() {
        let customer = ReceiptCustomer::Email("user@example.com".into());
        let body = create_payment_body(
            Uuid::from_u128(7),
            42,
            &plan(),
            "wgsub: Month",
            "https://t.me/bot",
            Some((&customer, ReceiptSettings { vat_code: 1 })),
        );
        assert_eq!(
            body["receipt"]["customer"],
            json!({"email": "user@example.com"})
        );
        let item = &body["receipt"]["items"][0];
        assert_eq!(item["amount"]["value"], json!("199.00"));
        assert_eq!(item["vat_code"], json!(1));
        assert_eq!(item["payment_mode"], json!("full_payment"));
        let phone = ReceiptCustomer::Phone("79001234567".into());
        let body = create_payment_body(
            Uuid::from_u128(7),
            42,
            &plan(),
            "d",
            "https://t.me/bot",
            Some((&phone, ReceiptSettings { vat_code: 1 })),
        );
        assert_eq!(body["receipt"]["customer"], json!({"phone": "79001234567"}));
    }

    #[test]
    fn receipt_contacts_parse_as_email_or_phone_digits() {
        assert_eq!(
            ReceiptCustomer::parse(" user@example.com "),
            Ok(ReceiptCustomer::Email("user@example.com".into()))
        );
        assert_eq!(
            ReceiptCustomer::parse("+7 (900) 123-45-67"),
            Ok(ReceiptCustomer::Phone("79001234567".into()))
        );
        for bad in [
            "",
            "@example.com",
            "user@",
            "user@example",
            "a b@c.d",
            "12345",
            "+7 abc",
            "x@y@z.c",
        ] {
            assert!(ReceiptCustomer::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_that_could_change_the_path_are_refused() {
        assert!(path_segment("2d0e5c2f-000f-5000-9000-1b2c3d4e5f60").is_ok());
        for bad in ["", "../x", "a/b", "a?b", "a b"] {
            assert!(path_segment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_of_the_config_hides_the_secret_key() {
        let config = YooKassaConfig {
            api_base: DEFAULT_API_BASE.into(),
            shop_id: "1".into(),
            secret_key: Zeroizing::new(format!("test_{}", Uuid::new_v4())),
            timeout: Duration::from_secs(1),
            max_attempts: 1,
            retry_backoff: Duration::from_millis(1),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains(config.secret_key.as_str()));
    }
}
