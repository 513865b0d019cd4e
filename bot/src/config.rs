//! The bot's settings: every one a flag and a `WGSUB_…` environment variable. Values are
//! checked when parsed, so a bad one stops the binary at start with the setting named; secrets
//! never appear in `Debug` output.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use wgsub_runtime::duration::{self, DurationParser};
use wgsub_runtime::logging::LogArgs;
use wgsub_runtime::settings;

/// A secret setting (token, password): `Debug` and `Display` print no part of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(s.to_owned()))
    }
}

/// How updates arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// `getUpdates` long polling (needs no inbound connectivity).
    Polling,
    /// Telegram POSTs updates to `--webhook-url`; each must carry the secret token.
    Webhook,
}

/// An `https://` URL.
pub fn parse_https_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!("must be an https:// URL, got {}://", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(url)
}

/// An `http://` or `https://` URL (API base URLs, which tests point at local fakes).
pub fn parse_http_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http(s):// URL, got {}://",
            url.scheme()
        ));
    }
    Ok(url)
}

/// Telegram's rule for a webhook secret token: 1–256 characters of `A-Za-z0-9_-`.
pub fn parse_webhook_secret(text: &str) -> Result<Secret, String> {
    let ok = (1..=256).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(Secret::new(text))
    } else {
        Err("must be 1–256 characters of A-Z, a-z, 0-9, _ and -".into())
    }
}

/// A comma-separated list of positive Telegram user ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminIds(pub Vec<i64>);

impl AdminIds {
    pub fn contains(&self, id: i64) -> bool {
        self.0.contains(&id)
    }
}

impl FromStr for AdminIds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut ids = vec![];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let id = part
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| format!("{part:?} is not a positive Telegram user id"))?;
            ids.push(id);
        }
        Ok(Self(ids))
    }
}

fn parse_trial_days(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|d| *d <= 365)
        .ok_or_else(|| format!("{text:?} is not a number of days 0–365"))
}

/// Intervals of the bot's jobs and its shutdown timeout: 1 second to 1 day.
const JOB_PERIOD: DurationParser =
    DurationParser::at_least(Duration::from_secs(1)).at_most(Duration::from_secs(86_400));

fn parse_rate(text: &str) -> Result<u32, String> {
    let rate: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    crate::broadcast::Pacing::new(rate, 0).map(|_| rate)
}

fn parse_vat_code(text: &str) -> Result<u8, String> {
    text.trim()
        .parse::<u8>()
        .ok()
        .filter(|c| (1..=12).contains(c))
        .ok_or_else(|| format!("{text:?} is not a YooKassa VAT code 1–12"))
}

/// wgsub-bot: the Telegram bot of wgsub (sign-up, buying, configs, reminders, admin).
#[derive(Debug, Clone, Parser)]
#[command(name = "wgsub-bot", version, after_help = duration::HELP)]
pub struct Config {
    /// Telegram bot token from @BotFather.
    #[arg(long, env = "WGSUB_BOT_TOKEN", hide_env_values = true)]
    pub bot_token: Secret,

    /// Base URL of the Telegram Bot API (a local Bot API server, or a fake in tests).
    #[arg(long, env = "WGSUB_TELEGRAM_API_URL", default_value = "https://api.telegram.org", value_parser = parse_http_url)]
    pub telegram_api_url: url::Url,

    /// PostgreSQL URL of the ledger.
    #[arg(long, env = "WGSUB_DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,

    /// Most connections to PostgreSQL.
    #[arg(long, env = "WGSUB_DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub database_max_connections: u32,

    /// The database is behind PgBouncer in transaction pooling: no persistent prepared statements.
    #[arg(long, env = "WGSUB_DATABASE_PGBOUNCER", default_value_t = false, action = clap::ArgAction::Set)]
    pub database_pgbouncer: bool,

    /// Run the migrations at start (off when a Helm hook Job runs them).
    #[arg(long, env = "WGSUB_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,

    /// Kubernetes namespace of the VpnSubscriptions, WgPeers and WgServers.
    #[arg(long, env = "WGSUB_NAMESPACE")]
    pub namespace: String,

    /// Namespace of the devices' key Secrets (the operator's --keys-namespace); absent:
    /// --namespace. The chart keeps them apart, so the bot reads no other Secret.
    #[arg(long, env = "WGSUB_KEYS_NAMESPACE")]
    pub keys_namespace: Option<String>,

    /// The plan catalogue (YAML, `plans:`), the same file the API reads.
    #[arg(long, env = "WGSUB_PLANS_FILE")]
    pub plans_file: PathBuf,

    /// Telegram user ids allowed to use /admin, comma-separated.
    #[arg(long, env = "WGSUB_BOT_ADMIN_IDS", default_value = "")]
    pub admin_ids: AdminIds,

    /// Days of the free trial granted once on /start; 0 = no trial.
    #[arg(long, env = "WGSUB_TRIAL_DAYS", default_value = "3", value_parser = parse_trial_days)]
    pub trial_days: u32,

    /// Days a referrer gets when a user they brought pays for the first time (0: no rewards);
    /// the same value as the api's, since either may apply that first payment (Stars in the
    /// bot, YooKassa in the api).
    #[arg(long, env = "WGSUB_REFERRAL_REWARD_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=365))]
    pub referral_reward_days: u32,

    /// URL of the Mini App (the API's /miniapp/), opened by the WebApp buttons.
    #[arg(long, env = "WGSUB_MINIAPP_URL", value_parser = parse_https_url)]
    pub miniapp_url: url::Url,

    /// Long polling (default) or webhook.
    #[arg(long, env = "WGSUB_BOT_MODE", value_enum, default_value = "polling")]
    pub mode: Mode,

    /// Name of the coordination.k8s.io Lease (in --namespace) that elects the one replica that
    /// polls (polling mode); webhook mode takes none.
    #[arg(long, env = "WGSUB_LEASE_NAME", default_value = "wgsub-bot", value_parser = settings::kubernetes_name)]
    pub lease_name: String,

    /// How long the lease stays held without renewal (3s–5m); a replica that loses it stops
    /// polling within two thirds of it.
    #[arg(long, env = "WGSUB_LEASE_DURATION", default_value = "15s", value_name = "DURATION",
          value_parser = DurationParser::at_least(Duration::from_secs(3)).at_most(Duration::from_secs(300)))]
    pub lease_duration: Duration,

    /// This replica's name in the lease (the pod name); defaults to the host name.
    #[arg(long, env = "WGSUB_IDENTITY", value_parser = settings::identity)]
    pub identity: Option<String>,

    /// Public https URL Telegram posts updates to (webhook mode).
    #[arg(long, env = "WGSUB_BOT_WEBHOOK_URL", value_parser = parse_https_url)]
    pub webhook_url: Option<url::Url>,

    /// Secret token Telegram sends with every webhook update (webhook mode).
    #[arg(long, env = "WGSUB_BOT_WEBHOOK_SECRET", hide_env_values = true, value_parser = parse_webhook_secret)]
    pub webhook_secret: Option<Secret>,

    /// Address the webhook server listens on (webhook mode).
    #[arg(long, env = "WGSUB_BOT_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub webhook_listen: SocketAddr,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "WGSUB_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,

    /// YooKassa API base URL.
    #[arg(long, env = "WGSUB_YOOKASSA_API_URL", default_value = "https://api.yookassa.ru/v3", value_parser = parse_http_url)]
    pub yookassa_api_url: url::Url,

    /// YooKassa shop id.
    #[arg(long, env = "WGSUB_YOOKASSA_SHOP_ID")]
    pub yookassa_shop_id: String,

    /// YooKassa secret key.
    #[arg(long, env = "WGSUB_YOOKASSA_SECRET_KEY", hide_env_values = true)]
    pub yookassa_secret_key: Secret,

    /// Where YooKassa sends the user after paying.
    #[arg(long, env = "WGSUB_YOOKASSA_RETURN_URL", value_parser = parse_https_url)]
    pub yookassa_return_url: url::Url,

    /// Send 54-FZ receipts (asks each buyer for an e-mail once).
    #[arg(long, env = "WGSUB_YOOKASSA_RECEIPTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub receipts: bool,

    /// VAT code of receipt items (YooKassa `vat_code`).
    #[arg(long, env = "WGSUB_YOOKASSA_VAT_CODE", default_value = "1", value_parser = parse_vat_code)]
    pub receipt_vat_code: u8,

    /// Time between reminder checks (1s–1d).
    #[arg(long, env = "WGSUB_BOT_REMINDER_INTERVAL", default_value = "5m", value_name = "DURATION",
          value_parser = JOB_PERIOD)]
    pub reminder_interval: Duration,

    /// Hours before a paid period ends its automatic renewal is charged (give the api the
    /// same value: it shows users when the next charge is).
    #[arg(long, env = "WGSUB_RENEWAL_LEAD_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=720))]
    pub renewal_lead_hours: u32,

    /// Time between automatic renewal runs (1s–1d; safe on every replica: each period is
    /// claimed in the database).
    #[arg(long, env = "WGSUB_BOT_RENEWAL_INTERVAL", default_value = "5m", value_name = "DURATION",
          value_parser = JOB_PERIOD)]
    pub renewal_interval: Duration,

    /// Time between drains of the notification outbox (1s–1d).
    #[arg(long, env = "WGSUB_BOT_OUTBOX_INTERVAL", default_value = "5s", value_name = "DURATION",
          value_parser = JOB_PERIOD)]
    pub outbox_interval: Duration,

    /// How long the bot may take to stop after SIGTERM (the Bot API may not answer the final
    /// `getUpdates`); keep it well inside the pod's termination grace period.
    #[arg(long, env = "WGSUB_BOT_SHUTDOWN_TIMEOUT", default_value = "10s", value_name = "DURATION",
          value_parser = JOB_PERIOD)]
    pub shutdown_timeout: Duration,

    /// Broadcast messages per second (at most Telegram's 30).
    #[arg(long, env = "WGSUB_BOT_BROADCAST_RATE", default_value = "25", value_parser = parse_rate)]
    pub broadcast_rate: u32,

    #[command(flatten)]
    pub log: LogArgs,
}

/// A setting that is wrong together with others, named by its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    pub field: &'static str,
    pub problem: String,
}

impl Config {
    /// Checks what single-value parsing cannot: settings that depend on each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.namespace.trim().is_empty() {
            return Err(ConfigError {
                field: "--namespace",
                problem: "must not be empty".into(),
            });
        }
        if self
            .keys_namespace
            .as_ref()
            .is_some_and(|ns| ns.trim().is_empty())
        {
            return Err(ConfigError {
                field: "--keys-namespace",
                problem: "must not be empty".into(),
            });
        }
        if self.yookassa_shop_id.trim().is_empty() {
            return Err(ConfigError {
                field: "--yookassa-shop-id",
                problem: "must not be empty".into(),
            });
        }
        if self.mode == Mode::Webhook {
            if self.webhook_url.is_none() {
                return Err(ConfigError {
                    field: "--webhook-url",
                    problem: "is required in webhook mode".into(),
                });
            }
            if self.webhook_secret.is_none() {
                return Err(ConfigError {
                    field: "--webhook-secret",
                    problem: "is required in webhook mode".into(),
                });
            }
        }
        Ok(())
    }

    /// The path the webhook is served at: the path of `--webhook-url`.
    pub fn webhook_path(&self) -> String {
        self.webhook_url
            .as_ref()
            .map(|url| url.path().to_owned())
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    /// This replica's identity in the lease: `--identity`, else the host name (the pod name).
    pub fn identity(&self) -> String {
        settings::replica_identity(self.identity.as_deref(), "wgsub-bot")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<String> {
        [
            "wgsub-bot",
            "--bot-token",
            "test-token-value",
            "--database-url",
            "postgres://localhost/x",
            "--namespace",
            "wgsub",
            "--plans-file",
            "plans.yaml",
            "--miniapp-url",
            "https://vpn.example.com/miniapp/",
            "--yookassa-shop-id",
            "1234",
            "--yookassa-secret-key",
            "test-key-value",
            "--yookassa-return-url",
            "https://t.me/example_bot",
        ]
        .map(String::from)
        .to_vec()
    }

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let mut args = base();
        args.extend(extra.iter().map(|s| s.to_string()));
        Config::try_parse_from(args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_polling_with_a_three_day_trial() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.mode, Mode::Polling);
        assert_eq!(config.trial_days, 3);
        assert_eq!(config.broadcast_rate, 25);
        assert_eq!(config.referral_reward_days, 7);
        assert_eq!(
            (config.lease_name.as_str(), config.lease_duration),
            ("wgsub-bot", Duration::from_secs(15))
        );
        assert!(config.admin_ids.0.is_empty());
        config.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (args, flag) in [
            (
                &["--miniapp-url", "http://vpn.example.com/"][..],
                "--miniapp-url",
            ),
            (&["--trial-days=-1"], "--trial-days"),
            (&["--trial-days", "400"], "--trial-days"),
            (&["--admin-ids", "12,abc"], "--admin-ids"),
            (&["--broadcast-rate", "31"], "--broadcast-rate"),
            (&["--referral-reward-days", "366"], "--referral-reward-days"),
            (&["--lease-duration", "2"], "--lease-duration"),
            (&["--lease-name", "Not_A_Name"], "--lease-name"),
            (&["--identity", ""], "--identity"),
            (&["--webhook-secret", "has space"], "--webhook-secret"),
            (&["--reminder-interval", "0"], "--reminder-interval"),
            (&["--shutdown-timeout", "2d"], "--shutdown-timeout"),
            (&["--log", "info,=[=="], "--log"),
            (&["--mode", "carrier-pigeon"], "--mode"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn durations_take_the_one_syntax_and_bare_seconds_as_before() {
        let config = parse(&[
            "--lease-duration",
            "6",
            "--reminder-interval",
            "1h30m",
            "--outbox-interval",
            "2s",
            "--shutdown-timeout",
            "1m",
        ])
        .unwrap();
        assert_eq!(config.lease_duration, Duration::from_secs(6));
        assert_eq!(config.reminder_interval, Duration::from_secs(5400));
        assert_eq!(config.outbox_interval, Duration::from_secs(2));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(60));
        let defaults = parse(&[]).unwrap();
        assert_eq!(
            (
                defaults.renewal_interval,
                defaults.reminder_interval,
                defaults.outbox_interval,
                defaults.shutdown_timeout
            ),
            (
                Duration::from_secs(300),
                Duration::from_secs(300),
                Duration::from_secs(5),
                Duration::from_secs(10)
            )
        );
    }

    #[test]
    fn webhook_mode_needs_url_and_secret() {
        let config = parse(&["--mode", "webhook"]).unwrap();
        assert_eq!(config.validate().unwrap_err().field, "--webhook-url");
        let config = parse(&[
            "--mode",
            "webhook",
            "--webhook-url",
            "https://bot.example.com/tg/hook",
        ])
        .unwrap();
        assert_eq!(config.validate().unwrap_err().field, "--webhook-secret");
        let config = parse(&[
            "--mode",
            "webhook",
            "--webhook-url",
            "https://bot.example.com/tg/hook",
            "--webhook-secret",
            "abc_DEF-123",
        ])
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.webhook_path(), "/tg/hook");
    }

    #[test]
    fn admin_ids_parse_from_a_comma_list() {
        let config = parse(&["--admin-ids", " 11, 22 ,"]).unwrap();
        assert_eq!(config.admin_ids, AdminIds(vec![11, 22]));
        assert!(config.admin_ids.contains(22) && !config.admin_ids.contains(33));
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let config = parse(&["--webhook-secret", "hook-secret-value"]).unwrap();
        let debug = format!("{config:?}");
        for secret in [
            "test-token-value",
            "test-key-value",
            "hook-secret-value",
            "postgres://",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }
}
