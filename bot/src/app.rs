//! What every handler and background job is given (injected with `dptree::deps!`): the
//! ledger, the Kubernetes client (writes) and the watch-backed caches (reads), the YooKassa
//! client, the plans, the settings and the metrics.

use std::sync::Arc;

use wgsub_crds::plans::PlanCatalogue;
use wgsub_devices::Caches;
use wgsub_ledger::{Ledger, ReceiptSettings, SubscriptionSync, YooKassa};

use crate::broadcast::Pacing;
use crate::config::AdminIds;
use crate::metrics::Metrics;

/// Settings the handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    pub admin_ids: AdminIds,
    /// Days of the trial granted once on /start; 0 = none.
    pub trial_days: u32,
    pub miniapp_url: url::Url,
    /// Where YooKassa sends the buyer back.
    pub return_url: String,
    /// `Some` when 54-FZ receipts are on.
    pub receipts: Option<ReceiptSettings>,
    pub pacing: Pacing,
    /// Broadcast progress is reported every this many chats.
    pub progress_every: u32,
}

/// The bot's dependencies.
pub struct App {
    pub ledger: Ledger,
    pub sync: SubscriptionSync,
    pub kube: kube::Client,
    pub namespace: String,
    /// The namespace's peers, servers and peer key Secrets, kept by watches: `/status`,
    /// `/config` and `/readyz` read from here, never from the API server.
    pub caches: Caches,
    pub yookassa: YooKassa,
    pub plans: PlanCatalogue,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("namespace", &self.namespace)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl App {
    pub fn is_admin(&self, user_id: i64) -> bool {
        self.settings.admin_ids.contains(user_id)
    }
}
