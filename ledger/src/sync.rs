//! Writing the ledger into Kubernetes: the `VpnSubscription` `tg-<id>` gets
//! `spec.telegramUserId / paidUntil / plan / maxDevices / trafficQuota / suspended` from the
//! user's row by
//! server-side apply with field manager [`FIELD_MANAGER`], forced (the ledger is the truth and
//! the derivation is idempotent, so writing it again is always safe). The apply creates the
//! subscription when it is absent.
//!
//! The user's location, `spec.server`, is not the ledger's: it is the user's pick, written by
//! [`SubscriptionSync::set_server`] with its own field manager [`LOCATION_FIELD_MANAGER`], so
//! the ledger's applies (which leave `server` out) and the drift loop never touch it.

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use wgsub_crds::VpnSubscription;
use wgsub_crds::resources::{GROUP, VERSION, subscription_name};

use crate::users::{TelegramUser, User};
use crate::{AdminGrant, Entitlement, Ledger, LedgerError};

/// The field manager of every ledger-derived field.
pub const FIELD_MANAGER: &str = "wgsub-ledger";

/// The field manager of `VpnSubscription.spec.server`, the user's location (the api's
/// `PUT /api/v1/me/location` and payments, the bot's `/location`).
pub const LOCATION_FIELD_MANAGER: &str = "wgsub-location";

/// The server-side-apply patch that puts a user on `server`.
pub fn server_patch(telegram_user_id: i64, server: &str) -> serde_json::Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "VpnSubscription",
        "metadata": {"name": subscription_name(telegram_user_id)},
        "spec": {"telegramUserId": telegram_user_id, "server": server},
    })
}

/// The server-side-apply patch that makes a user's `VpnSubscription` say what the ledger says.
/// `paidUntil`, `plan` and `trafficQuota` are left out when the ledger has none, which (under
/// server-side apply) removes them.
pub fn subscription_patch(user: &User) -> serde_json::Value {
    let mut spec = json!({
        "telegramUserId": user.telegram_id,
        "maxDevices": user.entitlement.max_devices,
        "suspended": user.suspended,
    });
    if let Some(until) = user.entitlement.paid_until {
        spec["paidUntil"] = json!(until.to_string());
    }
    if let Some(plan) = &user.entitlement.plan {
        spec["plan"] = json!(plan);
    }
    if let Some(quota) = &user.entitlement.traffic_quota {
        spec["trafficQuota"] = json!(quota);
    }
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "VpnSubscription",
        "metadata": {"name": subscription_name(user.telegram_id)},
        "spec": spec,
    })
}

/// A failed sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("writing the VpnSubscription failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the VpnSubscription still differs from the ledger after the write in {0:?}")]
    Unrepaired(Vec<&'static str>),
}

/// How a batch sync went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub applied: usize,
    pub failed: usize,
}

/// Writes ledger state into `VpnSubscription`s of one namespace.
#[derive(Clone)]
pub struct SubscriptionSync {
    api: Api<VpnSubscription>,
    namespace: String,
}

impl std::fmt::Debug for SubscriptionSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionSync").finish_non_exhaustive()
    }
}

impl SubscriptionSync {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    pub(crate) fn api(&self) -> &Api<VpnSubscription> {
        &self.api
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Applies the user's row as it is now and records the version written.
    pub async fn apply_user(
        &self,
        ledger: &Ledger,
        user: &User,
    ) -> Result<VpnSubscription, SyncError> {
        let name = subscription_name(user.telegram_id);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = self
            .api
            .patch(&name, &params, &Patch::Apply(subscription_patch(user)))
            .await?;
        ledger
            .mark_synced(user.telegram_id, user.ledger_version)
            .await?;
        Ok(applied)
    }

    /// Puts the user on `server` (their location): a forced apply of `spec.server` alone with
    /// [`LOCATION_FIELD_MANAGER`], creating the subscription when it is absent. The caller has
    /// checked that the server is offered and not full ([`wgsub_crds::locations`]); the
    /// operator moves the user's devices there.
    pub async fn set_server(
        &self,
        telegram_user_id: i64,
        server: &str,
    ) -> Result<VpnSubscription, kube::Error> {
        let params = PatchParams::apply(LOCATION_FIELD_MANAGER).force();
        self.api
            .patch(
                &subscription_name(telegram_user_id),
                &params,
                &Patch::Apply(server_patch(telegram_user_id, server)),
            )
            .await
    }

    /// Reads the user from the ledger and applies them.
    pub async fn sync_user(
        &self,
        ledger: &Ledger,
        user_id: i64,
    ) -> Result<VpnSubscription, SyncError> {
        let user = ledger
            .user(user_id)
            .await?
            .ok_or(LedgerError::UnknownUser(user_id))?;
        self.apply_user(ledger, &user).await
    }

    /// What a bot's `/start` needs: the user in the ledger (names refreshed), the trial granted
    /// if they never had it (`trial_days` 0 = no trial), and their `VpnSubscription` written.
    pub async fn ensure_subscription(
        &self,
        ledger: &Ledger,
        telegram_user: &TelegramUser,
        trial_days: u32,
        now: Timestamp,
    ) -> Result<(User, VpnSubscription), SyncError> {
        ledger.upsert_user(telegram_user, now).await?;
        ledger
            .grant_trial(telegram_user.id, trial_days, now)
            .await?;
        let user = ledger
            .user(telegram_user.id)
            .await?
            .ok_or(LedgerError::UnknownUser(telegram_user.id))?;
        let subscription = self.apply_user(ledger, &user).await?;
        Ok((user, subscription))
    }

    /// Suspends or unsuspends in the ledger (audited) and writes the subscription.
    pub async fn set_suspended(
        &self,
        ledger: &Ledger,
        user_id: i64,
        suspended: bool,
        admin_id: i64,
        reason: &str,
        now: Timestamp,
    ) -> Result<VpnSubscription, SyncError> {
        ledger
            .set_suspended(user_id, suspended, admin_id, reason, now)
            .await?;
        self.sync_user(ledger, user_id).await
    }

    /// Adds an administrator's grant (audited) and writes the subscription.
    pub async fn admin_grant(
        &self,
        ledger: &Ledger,
        grant: &AdminGrant,
        now: Timestamp,
    ) -> Result<Entitlement, SyncError> {
        let entitlement = ledger.admin_grant(grant, now).await?;
        self.sync_user(ledger, grant.user_id).await?;
        Ok(entitlement)
    }

    /// Applies up to `limit` users whose ledger changed since their last write. A user that
    /// fails stays unsynced and is retried next time. (The drift loop compares resources
    /// instead: [`SubscriptionSync::drift_repair`].)
    pub async fn sync_unsynced(
        &self,
        ledger: &Ledger,
        limit: i64,
    ) -> Result<SyncReport, LedgerError> {
        let mut report = SyncReport::default();
        for user in ledger.unsynced_users(limit).await? {
            self.apply_counted(ledger, &user, &mut report).await;
        }
        Ok(report)
    }

    async fn apply_counted(&self, ledger: &Ledger, user: &User, report: &mut SyncReport) {
        match self.apply_user(ledger, user).await {
            Ok(_) => report.applied += 1,
            Err(error) => {
                report.failed += 1;
                tracing::warn!(user = user.telegram_id, %error, "VpnSubscription sync failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_crds::resources::TrafficQuota;

    fn user(paid_until: Option<&str>, plan: Option<&str>) -> User {
        user_with_quota(paid_until, plan, None)
    }

    fn user_with_quota(
        paid_until: Option<&str>,
        plan: Option<&str>,
        traffic_quota: Option<TrafficQuota>,
    ) -> User {
        let t = "2026-01-01T00:00:00Z".parse().unwrap();
        User {
            telegram_id: 42,
            username: None,
            first_name: "A".into(),
            last_name: None,
            language_code: None,
            email: None,
            phone: None,
            suspended: false,
            created_at: t,
            last_seen_at: t,
            entitlement: Entitlement {
                paid_until: paid_until.map(|s| s.parse().unwrap()),
                plan: plan.map(Into::into),
                max_devices: 3,
                traffic_quota,
            },
            ledger_version: 2,
            synced_version: 1,
        }
    }

    #[test]
    fn the_patch_names_the_users_subscription_and_owns_the_ledger_fields() {
        let patch = subscription_patch(&user(Some("2026-02-01T00:00:00Z"), Some("quarter")));
        assert_eq!(
            patch,
            json!({
                "apiVersion": "wgsub.io/v1alpha1",
                "kind": "VpnSubscription",
                "metadata": {"name": "tg-42"},
                "spec": {
                    "telegramUserId": 42,
                    "paidUntil": "2026-02-01T00:00:00Z",
                    "plan": "quarter",
                    "maxDevices": 3,
                    "suspended": false,
                },
            })
        );
        // It parses as the resource type.
        let parsed: VpnSubscription = serde_json::from_value(patch).unwrap();
        assert_eq!(parsed.spec.max_devices, 3);
    }

    #[test]
    fn a_never_paid_user_has_no_paid_until_plan_or_quota_in_the_patch() {
        let patch = subscription_patch(&user(None, None));
        assert!(patch["spec"].get("paidUntil").is_none());
        assert!(patch["spec"].get("plan").is_none());
        assert!(patch["spec"].get("trafficQuota").is_none());
    }

    #[test]
    fn a_plan_with_a_quota_puts_it_in_the_patch() {
        let quota = TrafficQuota {
            bytes: 50 << 30,
            period_days: 30,
        };
        let patch = subscription_patch(&user_with_quota(
            Some("2026-02-01T00:00:00Z"),
            Some("month"),
            Some(quota),
        ));
        assert_eq!(
            patch["spec"]["trafficQuota"],
            json!({"bytes": 53_687_091_200_i64, "periodDays": 30})
        );
        let parsed: VpnSubscription = serde_json::from_value(patch).unwrap();
        assert_eq!(parsed.spec.traffic_quota, Some(quota));
    }
}
