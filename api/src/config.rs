//! The binary's settings: every one a flag and a `WGSUB_…` environment variable (clap). A bad
//! value stops the binary at start with the flag named. Secrets (database URL, bot token,
//! YooKassa secret key) are never printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use jiff::SignedDuration;
use wgsub_crds::plans::PlanCatalogue;
use wgsub_runtime::duration::{self, DurationParser};
use wgsub_runtime::logging::LogArgs;
use zeroize::Zeroizing;

use crate::clientip::{YOOKASSA_SOURCE_RANGES, parse_net};

/// `wgsub-api`: the HTTP API, YooKassa webhooks and the Telegram Mini App of wgsub.
#[derive(Debug, Parser)]
#[command(name = "wgsub-api", version, about, after_help = duration::HELP)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (runs pending migrations first).
    #[command(after_help = duration::HELP)]
    Serve(Box<ServeArgs>),
    /// Run the database migrations and exit (for a Helm hook Job).
    Migrate(DatabaseArgs),
    /// Import the customers of an existing WireGuard server (dry run unless --apply).
    Import(Box<ImportArgs>),
}

/// Settings of `import` (see [`crate::import`]).
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Namespace of the VpnSubscriptions, WgPeers and WgServers.
    #[arg(long, env = "WGSUB_NAMESPACE", value_parser = wgsub_runtime::settings::kubernetes_name)]
    pub namespace: String,
    /// Namespace of the devices' key Secrets (the operator's --keys-namespace); absent:
    /// --namespace.
    #[arg(long, env = "WGSUB_KEYS_NAMESPACE", value_parser = wgsub_runtime::settings::kubernetes_name)]
    pub keys_namespace: Option<String>,
    /// The WgServer the imported peers move to.
    #[arg(long, value_parser = wgsub_runtime::settings::kubernetes_name)]
    pub server: String,
    /// The old server's wg0.conf, or the output of `wg show <interface> dump`.
    #[arg(long)]
    pub wg_config: PathBuf,
    /// The CSV: `peer,telegram_id,paid_until,device_name[,private_key]`.
    #[arg(long)]
    pub csv: PathBuf,
    /// Write the plan (without it, only print what would be written).
    #[arg(long)]
    pub apply: bool,
}

/// PostgreSQL settings.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (postgres://user:password@host/db).
    #[arg(long, env = "WGSUB_DATABASE_URL", hide_env_values = true, value_parser = SecretParser(parse_database_url))]
    pub database_url: SecretString,

    /// Connections in the pool.
    #[arg(long, env = "WGSUB_DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub database_max_connections: u32,

    /// The database is reached through PgBouncer in transaction pooling: no statement cache and
    /// no persistent prepared statements.
    #[arg(long, env = "WGSUB_DATABASE_PGBOUNCER")]
    pub database_pgbouncer: bool,
}

impl DatabaseArgs {
    pub fn db_config(&self) -> wgsub_ledger::DbConfig {
        wgsub_ledger::DbConfig {
            max_connections: self.database_max_connections,
            pgbouncer: self.database_pgbouncer,
            ..wgsub_ledger::DbConfig::new(self.database_url.0.as_str())
        }
    }
}

/// `serve` settings.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address the HTTP server listens on.
    #[arg(long, env = "WGSUB_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Namespace of the VpnSubscriptions, WgPeers and WgServers.
    #[arg(long, env = "WGSUB_NAMESPACE", value_parser = wgsub_runtime::settings::kubernetes_name)]
    pub namespace: String,

    /// Namespace of the devices' key Secrets (the operator's --keys-namespace); absent:
    /// --namespace. The chart keeps them apart, so the api reads no other Secret.
    #[arg(long, env = "WGSUB_KEYS_NAMESPACE", value_parser = wgsub_runtime::settings::kubernetes_name)]
    pub keys_namespace: Option<String>,

    /// The WgServer of subscriptions that name none (as the operator's --default-server).
    #[arg(long, env = "WGSUB_DEFAULT_SERVER", default_value = "default", value_parser = wgsub_runtime::settings::kubernetes_name)]
    pub default_server: String,

    /// The plan catalogue (YAML `plans: [...]`).
    #[arg(long, env = "WGSUB_PLANS_FILE", value_parser = parse_plans_file)]
    pub plans_file: Plans,

    /// The Telegram bot token (validates Mini App initData).
    #[arg(long, env = "WGSUB_BOT_TOKEN", hide_env_values = true, value_parser = SecretParser(parse_bot_token))]
    pub bot_token: SecretString,

    /// Maximum age of Mini App initData (e.g. 1h, 30m): older initData is refused with
    /// `init_data_expired` and the Mini App asks the user to reopen it for fresh initData.
    #[arg(long, env = "WGSUB_INIT_DATA_MAX_AGE", default_value = "1h", value_name = "DURATION",
          value_parser = DurationParser::positive())]
    pub init_data_max_age: Duration,

    /// Public https URL of the API; the Mini App is at `<url>/miniapp/`.
    #[arg(long, env = "WGSUB_PUBLIC_URL", value_parser = parse_url)]
    pub public_url: Option<String>,

    /// YooKassa shop id.
    #[arg(long, env = "WGSUB_YOOKASSA_SHOP_ID", value_parser = parse_nonempty)]
    pub yookassa_shop_id: String,

    /// YooKassa secret key.
    #[arg(long, env = "WGSUB_YOOKASSA_SECRET_KEY", hide_env_values = true, value_parser = SecretParser(parse_secret))]
    pub yookassa_secret_key: SecretString,

    /// YooKassa API base URL.
    #[arg(long, env = "WGSUB_YOOKASSA_API_URL", default_value = wgsub_ledger::yookassa::DEFAULT_API_BASE, value_parser = parse_url)]
    pub yookassa_api_url: String,

    /// Telegram Bot API base URL (the Mini App's Stars invoices are made there).
    #[arg(long, env = "WGSUB_TELEGRAM_API_URL", default_value = "https://api.telegram.org", value_parser = parse_url)]
    pub telegram_api_url: String,

    /// Where YooKassa sends users after paying; default `<public-url>/miniapp/`.
    #[arg(long, env = "WGSUB_YOOKASSA_RETURN_URL", value_parser = parse_url)]
    pub yookassa_return_url: Option<String>,

    /// Send 54-FZ receipts (the user's e-mail or phone is then required to pay).
    #[arg(long, env = "WGSUB_YOOKASSA_RECEIPTS")]
    pub yookassa_receipts: bool,

    /// VAT code of receipt items (YooKassa vat_code 1–12; 1 = no VAT).
    #[arg(long, env = "WGSUB_YOOKASSA_VAT_CODE", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=12))]
    pub yookassa_vat_code: u8,

    /// Addresses webhooks are accepted from (comma-separated CIDRs); YooKassa's published ranges
    /// by default.
    #[arg(long, env = "WGSUB_YOOKASSA_ALLOWED_IPS", value_delimiter = ',', default_values = YOOKASSA_SOURCE_RANGES, value_parser = parse_net)]
    pub yookassa_allowed_ips: Vec<IpNet>,

    /// Reverse proxies whose X-Forwarded-For is trusted (comma-separated CIDRs).
    #[arg(long, env = "WGSUB_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,

    /// How often ledger → VpnSubscription drift is repaired (e.g. 60s).
    #[arg(long, env = "WGSUB_DRIFT_INTERVAL", default_value = "60s", value_name = "DURATION",
          value_parser = DurationParser::positive())]
    pub drift_interval: Duration,

    /// Largest accepted request body in bytes.
    #[arg(long, env = "WGSUB_MAX_BODY_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1024..=10_485_760))]
    pub max_body_bytes: u32,

    /// Days a referrer gets when a user they brought pays for the first time (0: no rewards).
    #[arg(long, env = "WGSUB_REFERRAL_REWARD_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=365))]
    pub referral_reward_days: u32,

    /// Hours before a paid period ends its automatic renewal is charged (the bot's value):
    /// `GET /api/v1/me/renewal` shows that moment as the next charge.
    #[arg(long, env = "WGSUB_RENEWAL_LEAD_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=720))]
    pub renewal_lead_hours: u32,

    /// The bot's username (without @), for users' `t.me/<bot>?start=ref_<id>` links in the
    /// Mini App; without it the Mini App shows no link.
    #[arg(long, env = "WGSUB_BOT_USERNAME", value_parser = parse_bot_username)]
    pub bot_username: Option<String>,
}

impl ServeArgs {
    /// The return URL: the flag, or the Mini App under the public URL.
    pub fn return_url(&self) -> Result<String, String> {
        match (&self.yookassa_return_url, &self.public_url) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(public)) => Ok(format!("{}/miniapp/", public.trim_end_matches('/'))),
            (None, None) => Err(
                "--yookassa-return-url (WGSUB_YOOKASSA_RETURN_URL) or --public-url (WGSUB_PUBLIC_URL) is required".into(),
            ),
        }
    }

    pub fn init_data_max_age(&self) -> SignedDuration {
        SignedDuration::try_from(self.init_data_max_age).unwrap_or(SignedDuration::MAX)
    }
}

/// A secret setting: zeroized on drop and never printed.
#[derive(Clone)]
pub struct SecretString(pub Zeroizing<String>);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The plan catalogue read from --plans-file.
#[derive(Debug, Clone)]
pub struct Plans(pub PlanCatalogue);

/// A value parser for secrets: its errors name the flag but never repeat the value (clap's
/// own errors would).
#[derive(Clone, Copy)]
struct SecretParser(fn(&str) -> Result<SecretString, String>);

impl clap::builder::TypedValueParser for SecretParser {
    type Value = SecretString;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let flag = arg.map_or_else(|| "a secret".to_owned(), |a| format!("--{}", a.get_id()));
        let flag = flag.replace('_', "-");
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidUtf8,
                format!("{flag}: not UTF-8\n"),
            )
        })?;
        (self.0)(text).map_err(|problem| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for {flag}: {problem}\n"),
            )
        })
    }
}

fn parse_database_url(text: &str) -> Result<SecretString, String> {
    let config = wgsub_ledger::DbConfig::new(text);
    config
        .connect_options()
        .map_err(|_| "not a PostgreSQL URL (postgres://user:password@host/db)".to_owned())?;
    Ok(SecretString(Zeroizing::new(text.to_owned())))
}

fn parse_bot_token(text: &str) -> Result<SecretString, String> {
    let valid = text.split_once(':').is_some_and(|(id, rest)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if valid {
        Ok(SecretString(Zeroizing::new(text.to_owned())))
    } else {
        Err("not a Telegram bot token (<bot id>:<secret>)".into())
    }
}

fn parse_secret(text: &str) -> Result<SecretString, String> {
    if text.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(SecretString(Zeroizing::new(text.to_owned())))
    }
}

fn parse_nonempty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(text.trim().to_owned())
    }
}

/// A Telegram bot username: 5–32 of `[A-Za-z0-9_]`, starting with a letter, ending in `bot`.
fn parse_bot_username(text: &str) -> Result<String, String> {
    let name = text.trim().trim_start_matches('@');
    let ok = (5..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.to_ascii_lowercase().ends_with("bot");
    if ok {
        Ok(name.to_owned())
    } else {
        Err(format!("{text:?} is not a Telegram bot username"))
    }
}

fn parse_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not an http(s) URL"))
    }
}

fn parse_plans_file(text: &str) -> Result<Plans, String> {
    let path = PathBuf::from(text);
    let content = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {text}: {e}"))?;
    PlanCatalogue::from_yaml_str(&content)
        .map(Plans)
        .map_err(|e| format!("{text}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans_file() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            "plans:\n  - id: month\n    title: {ru: \"Месяц\", en: \"Month\"}\n    days: 30\n    priceMinor: 19900\n    currency: RUB\n    devices: 1\n",
        )
        .unwrap();
        file
    }

    fn args(extra: &[&str], plans: &str) -> Vec<String> {
        let token = format!("{}:{}", 123, uuid::Uuid::new_v4().simple());
        let mut all: Vec<String> = [
            "wgsub-api",
            "serve",
            "--database-url",
            "postgres://u@localhost/db",
            "--namespace",
            "wgsub",
            "--plans-file",
            plans,
            "--yookassa-shop-id",
            "1",
            "--yookassa-secret-key",
            "s",
            "--public-url",
            "https://vpn.example.com",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        all.push("--bot-token".into());
        all.push(token);
        all.extend(extra.iter().map(|s| (*s).to_owned()));
        all
    }

    fn serve(cli: Cli) -> ServeArgs {
        match cli.command {
            Command::Serve(args) => *args,
            Command::Migrate(_) | Command::Import(_) => panic!("not serve"),
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let file = plans_file();
        let cli = Cli::try_parse_from(args(&[], file.path().to_str().unwrap())).unwrap();
        let serve = serve(cli);
        assert_eq!(serve.init_data_max_age, Duration::from_secs(3600));
        assert_eq!(
            serve.yookassa_allowed_ips.len(),
            YOOKASSA_SOURCE_RANGES.len()
        );
        assert_eq!(
            serve.return_url().unwrap(),
            "https://vpn.example.com/miniapp/"
        );
        assert!(!serve.database.database_pgbouncer);
        assert_eq!(serve.plans_file.0.plans()[0].id, "month");
    }

    #[test]
    fn bad_values_name_their_flag() {
        let file = plans_file();
        let path = file.path().to_str().unwrap();
        for (extra, flag) in [
            (
                &["--init-data-max-age", "forever"][..],
                "--init-data-max-age",
            ),
            (
                &["--trusted-proxies", "10.0.0.0/8,nope"][..],
                "--trusted-proxies",
            ),
            (&["--namespace", "Bad_NS"][..], "--namespace"),
            (&["--yookassa-vat-code", "13"][..], "--yookassa-vat-code"),
            (&["--public-url", "ftp://x"][..], "--public-url"),
        ] {
            let error = Cli::try_parse_from(args(extra, path))
                .unwrap_err()
                .to_string();
            assert!(error.contains(flag), "{flag}: {error}");
        }
        let error = Cli::try_parse_from(args(&[], "/nonexistent/plans.yaml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--plans-file"), "{error}");
        let mut bad_token = args(&[], path);
        let at = bad_token.iter().position(|a| a == "--bot-token").unwrap();
        bad_token[at + 1] = "not-a-token".into();
        let error = Cli::try_parse_from(bad_token).unwrap_err().to_string();
        assert!(
            error.contains("--bot-token") && !error.contains("not-a-token"),
            "{error}"
        );
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let file = plans_file();
        let cli = Cli::try_parse_from(args(&[], file.path().to_str().unwrap())).unwrap();
        let serve = serve(cli);
        let printed = format!("{serve:?}");
        assert!(!printed.contains(serve.bot_token.0.as_str()));
        assert!(!printed.contains("postgres://u@localhost"));
    }

    #[test]
    fn durations_take_the_one_syntax_and_must_be_more_than_zero() {
        let file = plans_file();
        let path = file.path().to_str().unwrap();
        let given = serve(
            Cli::try_parse_from(args(
                &["--drift-interval", "1m30s", "--init-data-max-age", "7d"],
                path,
            ))
            .unwrap(),
        );
        assert_eq!(given.drift_interval, Duration::from_secs(90));
        assert_eq!(given.init_data_max_age, Duration::from_secs(604_800));
        for bad in ["", "h", "0s", "5w", "-1h"] {
            let flag = format!("--drift-interval={bad}");
            let error = Cli::try_parse_from(args(&[&flag], path))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("--drift-interval (WGSUB_DRIFT_INTERVAL)"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn migrate_needs_only_the_database() {
        let cli =
            Cli::try_parse_from(["wgsub-api", "migrate", "--database-url", "postgres://u@h/d"])
                .unwrap();
        assert!(matches!(cli.command, Command::Migrate(_)));
    }

    #[test]
    fn import_is_a_dry_run_unless_told_to_apply_and_names_a_bad_field() {
        let base = [
            "wgsub-api",
            "import",
            "--database-url",
            "postgres://u@h/d",
            "--namespace",
            "wgsub",
            "--server",
            "main",
            "--wg-config",
            "wg0.conf",
            "--csv",
            "customers.csv",
        ];
        let Command::Import(args) = Cli::try_parse_from(base).unwrap().command else {
            panic!("not import");
        };
        assert!(!args.apply);
        assert_eq!(args.keys_namespace, None);
        let applied = Cli::try_parse_from(base.iter().chain(&["--apply"])).unwrap();
        assert!(matches!(applied.command, Command::Import(args) if args.apply));
        let mut bad = base;
        bad[7] = "Main_Server";
        let error = Cli::try_parse_from(bad).unwrap_err().to_string();
        assert!(error.contains("--server"), "{error}");
    }
}
