//! What every handler shares: the ledger, the YooKassa client, the Kubernetes APIs of the
//! namespace (writes) and its watch-backed caches (reads), the plan catalogue, settings and
//! metrics.

use std::sync::Arc;

use ipnet::IpNet;
use jiff::SignedDuration;
use kube::Api;
use wgsub_crds::WgPeer;
use wgsub_crds::plans::PlanCatalogue;
use wgsub_devices::{CacheOptions, Caches};
use wgsub_ledger::{Ledger, ReceiptSettings, SubscriptionSync, YooKassa};
use zeroize::Zeroizing;

use crate::metrics::Metrics;
use crate::qr::QrCache;

/// The field manager of everything the API itself writes to `WgPeer`s.
pub const FIELD_MANAGER: &str = "wgsub-api";

/// Settings the handlers read.
pub struct Settings {
    pub bot_token: Zeroizing<String>,
    pub init_data_max_age: SignedDuration,
    pub return_url: String,
    /// `Some` when 54-FZ receipts are sent.
    pub receipt: Option<ReceiptSettings>,
    pub yookassa_allowed: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    pub default_server: String,
    pub max_body_bytes: usize,
    /// The Telegram Bot API base (`https://api.telegram.org`), for `createInvoiceLink`.
    pub telegram_api_url: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("bot_token", &"<redacted>")
            .field("init_data_max_age", &self.init_data_max_age)
            .field("return_url", &self.return_url)
            .field("receipt", &self.receipt)
            .field("yookassa_allowed", &self.yookassa_allowed)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("default_server", &self.default_server)
            .field("telegram_api_url", &self.telegram_api_url)
            .finish()
    }
}

/// The Kubernetes APIs the API writes through, all in one namespace (reads go to the
/// [`Caches`]).
#[derive(Clone)]
pub struct KubeApis {
    pub peers: Api<WgPeer>,
    /// The ledger's writes of `VpnSubscription`s.
    pub sync: SubscriptionSync,
}

impl std::fmt::Debug for KubeApis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApis").finish_non_exhaustive()
    }
}

impl KubeApis {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            peers: Api::namespaced(client.clone(), namespace),
            sync: SubscriptionSync::new(client, namespace),
        }
    }
}

/// The shared state.
#[derive(Debug)]
pub struct AppState {
    pub ledger: Ledger,
    pub yookassa: YooKassa,
    pub kube: KubeApis,
    /// The namespace's subscriptions, peers, servers and peer key Secrets, kept by watches:
    /// every read path answers from here.
    pub caches: Caches,
    pub plans: PlanCatalogue,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Rendered QR codes of device configs.
    pub qr_cache: QrCache,
}

pub type SharedState = Arc<AppState>;

/// The state `wgsub-api serve` runs with, wired from its settings: the ledger on a migrated
/// database, the YooKassa client, the Kubernetes APIs of `client` and the caches (their watches
/// started; reads answer 503 until they have synced). The binary and the
/// end-to-end test both build their state here, so the test runs what production runs.
pub async fn state_from_args(
    args: &crate::config::ServeArgs,
    client: kube::Client,
) -> anyhow::Result<SharedState> {
    use anyhow::Context as _;
    let return_url = args.return_url().map_err(anyhow::Error::msg)?;
    let pool =
        wgsub_ledger::db::connect_lazy(&args.database.db_config()).context("--database-url")?;
    wgsub_ledger::db::migrate_with(&pool, args.database.database_pgbouncer)
        .await
        .context("running migrations")?;
    let yookassa = YooKassa::new(wgsub_ledger::YooKassaConfig {
        api_base: args.yookassa_api_url.clone(),
        shop_id: args.yookassa_shop_id.clone(),
        secret_key: args.yookassa_secret_key.0.clone(),
        timeout: std::time::Duration::from_secs(10),
        max_attempts: 4,
        retry_backoff: std::time::Duration::from_millis(500),
    })?;
    Ok(Arc::new(AppState {
        ledger: Ledger::new(pool, args.database.database_pgbouncer)
            .with_referral_days(args.referral_reward_days)
            .with_renewal_lead(SignedDuration::from_hours(i64::from(
                args.renewal_lead_hours,
            )))
            .with_referral_bot(args.bot_username.clone()),
        yookassa,
        caches: api_caches(
            client.clone(),
            &args.namespace,
            args.keys_namespace.as_deref().unwrap_or(&args.namespace),
        ),
        kube: KubeApis::new(client, &args.namespace),
        plans: args.plans_file.0.clone(),
        settings: Settings {
            bot_token: args.bot_token.0.clone(),
            init_data_max_age: args.init_data_max_age(),
            return_url,
            receipt: args.yookassa_receipts.then_some(ReceiptSettings {
                vat_code: args.yookassa_vat_code,
            }),
            yookassa_allowed: args.yookassa_allowed_ips.clone(),
            trusted_proxies: args.trusted_proxies.clone(),
            default_server: args.default_server.clone(),
            max_body_bytes: args.max_body_bytes as usize,
            telegram_api_url: args.telegram_api_url.clone(),
        },
        metrics: Metrics::new(),
        qr_cache: QrCache::new(QrCache::DEFAULT_CAPACITY),
    }))
}

/// The caches the api reads from: peers, servers and subscriptions of `namespace` and the peer
/// key Secrets of `keys_namespace`, their watches started on the current runtime.
pub fn api_caches(client: kube::Client, namespace: &str, keys_namespace: &str) -> Caches {
    Caches::spawn(
        client,
        namespace,
        CacheOptions {
            subscriptions: true,
            keys_namespace: Some(keys_namespace.to_owned()),
            ..CacheOptions::default()
        },
    )
}
