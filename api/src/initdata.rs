//! Telegram Mini App authentication: validating `initData` exactly as Telegram documents it
//! ("Validating data received via the Mini App"). The secret is HMAC-SHA256 keyed with
//! `"WebAppData"` over the bot token; the hash is HMAC-SHA256 keyed with that secret over the
//! alphabetically sorted `key=value` lines of every field except `hash` (`signature` stays in);
//! the comparison is constant-time; and `auth_date` must be younger than a maximum age.

use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use wgsub_ledger::TelegramUser;

type HmacSha256 = Hmac<Sha256>;

/// Clock skew tolerated for an `auth_date` in the future.
const FUTURE_SKEW: SignedDuration = SignedDuration::from_secs(60);

/// Why initData was refused. The variants are stable and safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitDataError {
    #[error("initData has no hash")]
    MissingHash,
    #[error("initData is not a valid query string")]
    Malformed,
    #[error("initData has the field {0:?} twice")]
    DuplicateField(String),
    #[error("initData signature does not match")]
    BadSignature,
    #[error("initData has no valid auth_date")]
    BadAuthDate,
    #[error("initData is too old")]
    Expired,
    #[error("initData has no valid user")]
    NoUser,
}

/// Validated initData: who the user is and when Telegram signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitData {
    pub user: TelegramUser,
    pub auth_date: Timestamp,
}

fn secret_key(bot_token: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(b"WebAppData").expect("HMAC takes any key length");
    mac.update(bot_token.as_bytes());
    mac.finalize().into_bytes().into()
}

fn data_check_string(fields: &[(String, String)]) -> String {
    let mut lines: Vec<String> = fields
        .iter()
        .filter(|(key, _)| key != "hash")
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    lines.sort();
    lines.join("\n")
}

fn signature_of(fields: &[(String, String)], bot_token: &str) -> [u8; 32] {
    let mut mac =
        HmacSha256::new_from_slice(&secret_key(bot_token)).expect("HMAC takes any key length");
    mac.update(data_check_string(fields).as_bytes());
    mac.finalize().into_bytes().into()
}

/// Validates raw initData (the query string from `Telegram.WebApp.initData`) at `now`.
pub fn validate(
    raw: &str,
    bot_token: &str,
    max_age: SignedDuration,
    now: Timestamp,
) -> Result<InitData, InitDataError> {
    if raw.is_empty() || raw.len() > 8192 {
        return Err(InitDataError::Malformed);
    }
    let fields: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for (key, _) in &fields {
        if !seen.insert(key.as_str()) {
            return Err(InitDataError::DuplicateField(key.clone()));
        }
    }
    let get = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, v)| v.as_str())
    };
    let hash = get("hash")
        .filter(|h| !h.is_empty())
        .ok_or(InitDataError::MissingHash)?;
    let given = hex::decode(hash).map_err(|_| InitDataError::BadSignature)?;
    let expected = signature_of(&fields, bot_token);
    if given.len() != expected.len() || !bool::from(given.ct_eq(&expected)) {
        return Err(InitDataError::BadSignature);
    }
    let auth_date = get("auth_date")
        .and_then(|d| d.parse::<i64>().ok())
        .and_then(|d| Timestamp::from_second(d).ok())
        .ok_or(InitDataError::BadAuthDate)?;
    if auth_date > now + FUTURE_SKEW {
        return Err(InitDataError::BadAuthDate);
    }
    if now.duration_since(auth_date) > max_age {
        return Err(InitDataError::Expired);
    }
    let user: TelegramUser = get("user")
        .and_then(|u| serde_json::from_str(u).ok())
        .filter(|u: &TelegramUser| u.id > 0)
        .ok_or(InitDataError::NoUser)?;
    Ok(InitData { user, auth_date })
}

/// Signs fields as Telegram does, returning the query string with `hash` appended (for tests
/// and local tooling that play the Telegram client).
pub fn sign(fields: &[(&str, &str)], bot_token: &str) -> String {
    let owned: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let hash = hex::encode(signature_of(&owned, bot_token));
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in fields {
        query.append_pair(key, value);
    }
    query.append_pair("hash", &hash);
    query.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Telegram's published sample initData for bot id 7342037359 (the Mini Apps
    /// documentation's validation example, also used by @telegram-apps/init-data-node and
    /// init-data-golang), signed at auth_date 1733509682 and carrying a `signature` field.
    const SAMPLE: &str = concat!(
        "user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%20%2B%20-%20%3F%20%5C%2F%22",
        "%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code",
        "%22%3A%22ru%22%2C%22is_premium%22%3Atrue%2C%22allows_write_to_pm%22%3Atrue%2C%22photo_url",
        "%22%3A%22https%3A%5C%2F%5C%2Ft.me%5C%2Fi%5C%2Fuserpic%5C%2F320%5C%2F4FPEE4tmP3ATHa57u6MqTDih",
        "13LTOiMoKoLDRG4PnSA.svg%22%7D&chat_instance=8134722200314281151&chat_type=private",
        "&auth_date=1733509682&signature=TYJxVcisqbWjtodPepiJ6ghziUL94-KNpG8Pau-X7oNNLNBM72APCpi_",
        "RKiUlBvcqo5L-LAxIc3dnTzcZX_PDg&hash=a433d8f9847bd6addcc563bff7cc82c89e97ea0d90c11fe5729cae6796a36d73"
    );

    /// The sample's bot token as published with it. Assembled from its two halves so that the
    /// repository holds no bot-token-shaped literal (it is public documentation, not a secret).
    fn sample_token() -> String {
        ["7342037359", "AAHI25ES9xCOMPokpYoz-p8XVrZUdygo2J4"].join(":")
    }

    fn signed_at() -> Timestamp {
        Timestamp::from_second(1_733_509_682).unwrap()
    }

    const DAY: SignedDuration = SignedDuration::from_hours(24);

    #[test]
    fn telegrams_published_sample_validates_with_its_token() {
        let data = validate(SAMPLE, &sample_token(), DAY, signed_at() + DAY / 2).unwrap();
        assert_eq!(data.user.id, 279_058_397);
        assert_eq!(data.user.first_name, "Vladislav + - ? /");
        assert_eq!(data.user.username.as_deref(), Some("vdkfrost"));
        assert_eq!(data.user.language_code.as_deref(), Some("ru"));
        assert_eq!(data.auth_date, signed_at());
    }

    #[test]
    fn a_changed_field_fails() {
        let changed = SAMPLE.replace("279058397", "279058398");
        assert_eq!(
            validate(&changed, &sample_token(), DAY, signed_at()),
            Err(InitDataError::BadSignature)
        );
        let no_signature = SAMPLE.replace("signature=", "signaturX=");
        assert_eq!(
            validate(&no_signature, &sample_token(), DAY, signed_at()),
            Err(InitDataError::BadSignature)
        );
    }

    #[test]
    fn another_token_fails() {
        let other = ["7342037359", "AAHI25ES9xCOMPokpYoz-p8XVrZUdygo2J5"].join(":");
        assert_eq!(
            validate(SAMPLE, &other, DAY, signed_at()),
            Err(InitDataError::BadSignature)
        );
    }

    #[test]
    fn a_stale_auth_date_fails() {
        assert_eq!(
            validate(
                SAMPLE,
                &sample_token(),
                DAY,
                signed_at() + DAY + SignedDuration::from_secs(1)
            ),
            Err(InitDataError::Expired)
        );
        assert!(validate(SAMPLE, &sample_token(), DAY, signed_at() + DAY).is_ok());
    }

    #[test]
    fn an_auth_date_in_the_future_fails() {
        assert_eq!(
            validate(
                SAMPLE,
                &sample_token(),
                DAY,
                signed_at() - SignedDuration::from_secs(120)
            ),
            Err(InitDataError::BadAuthDate)
        );
    }

    #[test]
    fn a_missing_or_empty_hash_fails() {
        let without = SAMPLE.split("&hash=").next().unwrap();
        assert_eq!(
            validate(without, &sample_token(), DAY, signed_at()),
            Err(InitDataError::MissingHash)
        );
        assert_eq!(
            validate(
                &format!("{without}&hash="),
                &sample_token(),
                DAY,
                signed_at()
            ),
            Err(InitDataError::MissingHash)
        );
        assert_eq!(
            validate(
                &format!("{without}&hash=zz"),
                &sample_token(),
                DAY,
                signed_at()
            ),
            Err(InitDataError::BadSignature)
        );
    }

    #[test]
    fn duplicate_fields_and_garbage_fail() {
        assert_eq!(
            validate(
                &format!("{SAMPLE}&auth_date=1"),
                &sample_token(),
                DAY,
                signed_at()
            ),
            Err(InitDataError::DuplicateField("auth_date".into()))
        );
        assert_eq!(
            validate("", &sample_token(), DAY, signed_at()),
            Err(InitDataError::Malformed)
        );
    }

    #[test]
    fn signing_and_validating_round_trip_and_a_user_is_required() {
        let token = format!("{}:{}", 12345, uuid::Uuid::new_v4().simple());
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let auth = now.as_second().to_string();
        let raw = sign(
            &[
                ("auth_date", &auth),
                (
                    "user",
                    r#"{"id":42,"first_name":"Ann","language_code":"en"}"#,
                ),
                ("query_id", "Q"),
            ],
            &token,
        );
        let data = validate(&raw, &token, DAY, now).unwrap();
        assert_eq!(data.user.id, 42);
        let no_user = sign(&[("auth_date", &auth)], &token);
        assert_eq!(
            validate(&no_user, &token, DAY, now),
            Err(InitDataError::NoUser)
        );
        let bad_user = sign(&[("auth_date", &auth), ("user", r#"{"id":0}"#)], &token);
        assert_eq!(
            validate(&bad_user, &token, DAY, now),
            Err(InitDataError::NoUser)
        );
    }
}
