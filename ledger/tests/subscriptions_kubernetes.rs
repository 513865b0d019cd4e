//! The ledger's writes into Kubernetes on the real API server (a namespace per test, the API's
//! client authenticated as the chart's `wgsub-api` ServiceAccount under the chart's RBAC) with a
//! real PostgreSQL (a database per test): the sync of a user's fold into their
//! `VpnSubscription`, and the drift repair — an edit by another field manager, a deleted
//! resource and a never-written one are repaired by one pass (the data quota too: an edited
//! quota is put back, one the ledger does not give removed), a pass over 1,000 users with
//! nothing to repair makes no write, and a user who never paid gets no resource from it.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use wgsub_crds::VpnSubscription;
use wgsub_crds::resources::{TrafficQuota, subscription_name};
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::{AdminGrant, DriftRepair, Ledger, StarPurchase, SubscriptionSync, TelegramUser};
use wgsub_testkit::chart::{apply_chart_rbac, assert_nothing_forbidden, component_client};
use wgsub_testkit::envtest::{AuditedRequest, ControlPlane};
use wgsub_testkit::process::eventually;

const DAY: SignedDuration = SignedDuration::from_hours(24);
const WITHIN: Duration = Duration::from_secs(30);

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn tg(id: i64) -> TelegramUser {
    TelegramUser {
        id,
        username: Some(format!("user{id}")),
        first_name: "Anna".into(),
        last_name: None,
        language_code: Some("en".into()),
    }
}

/// A test's world: the ledger, the API's sync and drift repair (its reflector running) as the
/// `wgsub-api` ServiceAccount, and an admin view of the namespace's subscriptions (standing in
/// for `kubectl`).
struct World {
    plane: &'static ControlPlane,
    ns: String,
    ledger: Ledger,
    sync: SubscriptionSync,
    drift: DriftRepair,
    admin: Api<VpnSubscription>,
    api_probe: Api<VpnSubscription>,
    reflector: tokio::task::JoinHandle<()>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.reflector.abort();
    }
}

impl World {
    async fn start(label: &str) -> Self {
        let plane = ControlPlane::with_crds();
        let ns = plane.namespace(label).await;
        apply_chart_rbac(plane, &ns, &[]).await;
        let client = component_client(plane, &ns, "api").await;
        let (pool, _) = fresh_database(label).await;
        let sync = SubscriptionSync::new(client.clone(), &ns);
        let (drift, reflector) = sync.drift_repair();
        let reflector = tokio::spawn(reflector);
        assert!(drift.ready().await, "the reflector lists the namespace");
        Self {
            plane,
            ledger: Ledger::new(pool, false),
            admin: Api::namespaced(plane.admin_client(), &ns),
            api_probe: Api::namespaced(client, &ns),
            ns,
            sync,
            drift,
            reflector,
        }
    }

    async fn subscription(&self, user_id: i64) -> Option<VpnSubscription> {
        self.admin
            .get_opt(&subscription_name(user_id))
            .await
            .expect("an admin read")
    }

    /// Waits until the drift repair's cache shows `check` of the user's resource.
    async fn cache_shows(
        &self,
        what: &str,
        user_id: i64,
        check: impl Fn(Option<&VpnSubscription>) -> bool,
    ) {
        eventually(what, WITHIN, async || {
            check(self.drift.cached(user_id).as_deref()).then_some(())
        })
        .await;
    }

    /// The API's write requests (create, patch, update) the server has answered, counted once
    /// a marker request made after them shows in the audit log.
    async fn api_writes(&self, marker: &str) -> usize {
        let selector = format!("wgsub.io/test-marker={marker}");
        self.api_probe
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("the marker list");
        let requests: Vec<AuditedRequest> =
            eventually("the marker is audited", WITHIN, async || {
                let requests = self.plane.requests_of(&self.ns, "wgsub-api");
                requests
                    .iter()
                    .any(|r| r.uri.contains(marker))
                    .then_some(requests)
            })
            .await;
        requests
            .iter()
            .filter(|r| ["create", "patch", "update"].contains(&r.verb.as_str()))
            .count()
    }

    /// A user the ledger gives `days` of admin-granted time from `now`.
    async fn paying_user(&self, id: i64, days: u32, now: Timestamp) {
        self.ledger.upsert_user(&tg(id), now).await.unwrap();
        self.ledger
            .admin_grant(
                &AdminGrant {
                    user_id: id,
                    days,
                    admin_id: 1,
                    reason: "test".into(),
                },
                now,
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn sync_writes_the_fold_into_the_subscription_and_a_pass_catches_up_a_missed_write() {
    let w = World::start("ledger-sync").await;
    let now = t("2026-01-01T00:00:00Z");
    let (user, subscription) = w
        .sync
        .ensure_subscription(&w.ledger, &tg(42), 3, now)
        .await
        .unwrap();
    assert_eq!(subscription.spec.telegram_user_id, 42);
    assert_eq!(subscription.spec.paid_until, Some(now + DAY * 3));
    assert_eq!(
        w.ledger.user(42).await.unwrap().unwrap().synced_version,
        user.ledger_version
    );
    // A ledger change whose write is missed is applied by the next drift pass.
    w.ledger
        .admin_grant(
            &AdminGrant {
                user_id: 42,
                days: 7,
                admin_id: 1,
                reason: "gift".into(),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(w.ledger.unsynced_users(10).await.unwrap().len(), 1);
    w.cache_shows("the trial is cached", 42, |s| s.is_some())
        .await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    assert_eq!((report.updated, report.created, report.failed), (1, 0, 0));
    let stored = w.subscription(42).await.unwrap();
    assert_eq!(stored.spec.paid_until, Some(now + DAY * 10));
    assert!(w.ledger.unsynced_users(10).await.unwrap().is_empty());
    let suspended = w
        .sync
        .set_suspended(&w.ledger, 42, true, 1, "abuse", now)
        .await
        .unwrap();
    assert!(suspended.spec.suspended);
    w.cache_shows("the suspension is cached", 42, |s| {
        s.is_some_and(|s| s.spec.suspended)
    })
    .await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    assert_eq!(
        (report.users, report.updated, report.created, report.failed),
        (1, 0, 0, 0),
        "nothing left to repair"
    );
    assert_nothing_forbidden(w.plane, &w.ns, "api");
}

#[tokio::test]
async fn paid_until_edited_by_another_field_manager_is_repaired_by_one_pass() {
    let w = World::start("drift-edit").await;
    let now = Timestamp::now();
    w.paying_user(7, 30, now).await;
    w.sync.sync_user(&w.ledger, 7).await.unwrap();
    let paid_until = w
        .ledger
        .user(7)
        .await
        .unwrap()
        .unwrap()
        .entitlement
        .paid_until;
    assert!(paid_until.is_some());
    let expired = t("2020-01-01T00:00:00Z");

    // As `kubectl edit` does it: a read, then an update (PUT) of the whole object.
    let mut edited = w.subscription(7).await.unwrap();
    edited.spec.paid_until = Some(expired);
    edited.spec.max_devices = 5;
    w.admin
        .replace(
            "tg-7",
            &PostParams {
                field_manager: Some("kubectl-edit".into()),
                ..PostParams::default()
            },
            &edited,
        )
        .await
        .unwrap();
    w.cache_shows("the edit is cached", 7, |s| {
        s.is_some_and(|s| s.spec.paid_until == Some(expired))
    })
    .await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    assert_eq!((report.updated, report.failed), (1, 0));
    let repaired = w.subscription(7).await.unwrap();
    assert_eq!(repaired.spec.paid_until, paid_until);
    assert_eq!(repaired.spec.max_devices, 1);

    // As `kubectl apply --server-side --force-conflicts` does it: an apply by manager kubectl.
    w.admin
        .patch(
            "tg-7",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(json!({
                "apiVersion": "wgsub.io/v1alpha1",
                "kind": "VpnSubscription",
                "metadata": {"name": "tg-7"},
                "spec": {"telegramUserId": 7, "paidUntil": expired.to_string(), "suspended": true},
            })),
        )
        .await
        .unwrap();
    w.cache_shows("the apply is cached", 7, |s| {
        s.is_some_and(|s| s.spec.paid_until == Some(expired))
    })
    .await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    assert_eq!((report.updated, report.failed), (1, 0));
    let repaired = w.subscription(7).await.unwrap();
    assert_eq!(repaired.spec.paid_until, paid_until);
    assert!(!repaired.spec.suspended);
    assert_nothing_forbidden(w.plane, &w.ns, "api");
}

#[tokio::test]
async fn a_paid_until_or_plan_the_ledger_does_not_give_is_removed_whoever_set_it() {
    let w = World::start("drift-clear").await;
    let now = Timestamp::now();
    // Never paid; the bot made the resource at /start (no trial).
    w.sync
        .ensure_subscription(&w.ledger, &tg(8), 0, now)
        .await
        .unwrap();
    let mut edited = w.subscription(8).await.unwrap();
    assert_eq!(edited.spec.paid_until, None);
    edited.spec.paid_until = Some(now + DAY * 3650);
    edited.spec.plan = Some("year".into());
    w.admin
        .replace(
            "tg-8",
            &PostParams {
                field_manager: Some("kubectl-edit".into()),
                ..PostParams::default()
            },
            &edited,
        )
        .await
        .unwrap();
    w.cache_shows("the free ride is cached", 8, |s| {
        s.is_some_and(|s| s.spec.paid_until.is_some())
    })
    .await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    assert_eq!((report.updated, report.failed), (1, 0));
    let repaired = w.subscription(8).await.unwrap();
    assert_eq!(repaired.spec.paid_until, None);
    assert_eq!(repaired.spec.plan, None);
    w.cache_shows("the repair is cached", 8, |s| {
        s.is_some_and(|s| s.spec.paid_until.is_none())
    })
    .await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    assert_eq!((report.updated, report.created), (0, 0), "converged");
    assert_nothing_forbidden(w.plane, &w.ns, "api");
}

#[tokio::test]
async fn a_deleted_subscription_of_a_paying_user_is_created_again_by_one_pass() {
    let w = World::start("drift-delete").await;
    let now = Timestamp::now();
    w.paying_user(9, 30, now).await;
    let written = w.sync.sync_user(&w.ledger, 9).await.unwrap();
    w.admin
        .delete("tg-9", &DeleteParams::default())
        .await
        .unwrap();
    w.cache_shows("the deletion is cached", 9, |s| s.is_none())
        .await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    assert_eq!((report.created, report.updated, report.failed), (1, 0, 0));
    let again = w.subscription(9).await.expect("created again");
    assert_ne!(again.metadata.uid, written.metadata.uid);
    assert_eq!(again.spec, written.spec);
    assert_nothing_forbidden(w.plane, &w.ns, "api");
}

#[tokio::test]
async fn a_user_who_never_paid_gets_no_resource_from_the_loop_and_keeps_the_bots() {
    let w = World::start("drift-never").await;
    let now = Timestamp::now();
    // 10 visited the Mini App only; 11 pressed /start (the bot wrote a resource, no trial).
    w.ledger.upsert_user(&tg(10), now).await.unwrap();
    let (_, bots) = w
        .sync
        .ensure_subscription(&w.ledger, &tg(11), 0, now)
        .await
        .unwrap();
    w.cache_shows("the bot's resource is cached", 11, |s| s.is_some())
        .await;
    let before = w.api_writes("never-before").await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    assert_eq!(
        (report.users, report.created, report.updated, report.failed),
        (2, 0, 0, 0)
    );
    assert_eq!(w.api_writes("never-after").await, before, "no write");
    assert!(w.subscription(10).await.is_none(), "no resource for 10");
    let kept = w.subscription(11).await.expect("the bot's resource stays");
    assert_eq!(
        kept.metadata.resource_version,
        bots.metadata.resource_version
    );
    assert_nothing_forbidden(w.plane, &w.ns, "api");
}

/// Ids of the bulk test's users.
const FIRST: i64 = 1_000_001;
const USERS: i64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_over_a_thousand_users_with_nothing_to_repair_makes_no_write() {
    let w = World::start("drift-bulk").await;
    // A mix: every tenth never paid (half of them with a resource from the bot), every
    // seventh suspended, every third on a three-device plan.
    sqlx::query(
        "INSERT INTO users (telegram_id, first_name, created_at, last_seen_at, paid_until, plan, \
                            max_devices, suspended, ledger_version) \
         SELECT g, 'U', now(), now(), \
                CASE WHEN g % 10 = 0 THEN NULL ELSE now() + (g % 400) * interval '1 day' END, \
                CASE WHEN g % 10 <> 0 AND g % 3 = 0 THEN 'quarter' END, \
                CASE WHEN g % 10 <> 0 AND g % 3 = 0 THEN 3 ELSE 1 END, \
                g % 7 = 0, 1 \
         FROM generate_series($1::bigint, $2::bigint) g",
    )
    .bind(FIRST)
    .bind(FIRST + USERS - 1)
    .execute(w.ledger.pool())
    .await
    .unwrap();
    let with_resource: Vec<i64> = (FIRST..FIRST + USERS)
        .filter(|id| id % 10 != 0 || id % 20 == 0)
        .collect();
    let started = std::time::Instant::now();
    let written: Vec<_> = futures::stream::iter(with_resource.iter().copied())
        .map(|id| {
            let (sync, ledger) = (w.sync.clone(), w.ledger.clone());
            async move { sync.sync_user(&ledger, id).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(written.iter().all(Result::is_ok), "{written:?}");
    println!(
        "{} resources written in {:?}",
        with_resource.len(),
        started.elapsed()
    );
    let expected: HashSet<i64> = with_resource.iter().copied().collect();
    eventually("the cache holds every resource", WITHIN, async || {
        (FIRST..FIRST + USERS)
            .all(|id| w.drift.cached(id).is_some() == expected.contains(&id))
            .then_some(())
    })
    .await;

    let before = w.api_writes("bulk-before").await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    println!(
        "drift pass over {} users, nothing to repair: {:?}",
        report.users, report.elapsed
    );
    assert_eq!(
        (report.users, report.created, report.updated, report.failed),
        (USERS as usize, 0, 0, 0)
    );
    assert_eq!(w.api_writes("bulk-after").await, before, "no write");

    // The same pass with one edited resource makes exactly one write.
    let edited_id = FIRST + 1;
    w.admin
        .patch(
            &subscription_name(edited_id),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paidUntil": "2020-01-01T00:00:00Z"}})),
        )
        .await
        .unwrap();
    w.cache_shows("the edit is cached", edited_id, |s| {
        s.is_some_and(|s| s.spec.paid_until == Some(t("2020-01-01T00:00:00Z")))
    })
    .await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    println!(
        "drift pass over {} users, one repair: {:?}",
        report.users, report.elapsed
    );
    assert_eq!((report.updated, report.created, report.failed), (1, 0, 0));
    assert_eq!(w.api_writes("bulk-one").await, before + 1, "one write");
    assert_nothing_forbidden(w.plane, &w.ns, "api");
}

/// Edits the user's resource as `kubectl edit` does (a read, then a PUT by another manager).
async fn kubectl_edit(w: &World, user_id: i64, edit: impl FnOnce(&mut VpnSubscription)) {
    let mut edited = w.subscription(user_id).await.unwrap();
    edit(&mut edited);
    w.admin
        .replace(
            &subscription_name(user_id),
            &PostParams {
                field_manager: Some("kubectl-edit".into()),
                ..PostParams::default()
            },
            &edited,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_traffic_quota_is_synced_and_an_edited_or_added_one_is_repaired_by_one_pass() {
    let w = World::start("drift-quota").await;
    let now = Timestamp::now();
    let quota = TrafficQuota {
        bytes: 10 << 30,
        period_days: 30,
    };
    // User 51 bought a plan with a quota (in Stars); user 52 has time without one.
    w.ledger.upsert_user(&tg(51), now).await.unwrap();
    w.ledger
        .apply_star_payment(
            &StarPurchase {
                telegram_payment_charge_id: "charge-51".into(),
                user_id: 51,
                plan: "month".into(),
                days: 30,
                devices: 1,
                traffic_quota: Some(quota),
                stars: 150,
                invoice_payload: "payload".into(),
                paid_at: now,
            },
            now,
        )
        .await
        .unwrap();
    w.paying_user(52, 30, now).await;
    let synced = w.sync.sync_user(&w.ledger, 51).await.unwrap();
    assert_eq!(synced.spec.traffic_quota, Some(quota));
    let synced = w.sync.sync_user(&w.ledger, 52).await.unwrap();
    assert_eq!(synced.spec.traffic_quota, None);

    kubectl_edit(&w, 51, |s| {
        s.spec.traffic_quota = Some(TrafficQuota {
            bytes: 1 << 40,
            period_days: 30,
        })
    })
    .await;
    kubectl_edit(&w, 52, |s| s.spec.traffic_quota = Some(quota)).await;
    w.cache_shows("the raised quota is cached", 51, |s| {
        s.is_some_and(|s| s.spec.traffic_quota != Some(quota))
    })
    .await;
    w.cache_shows("the added quota is cached", 52, |s| {
        s.is_some_and(|s| s.spec.traffic_quota.is_some())
    })
    .await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    assert_eq!((report.updated, report.failed), (2, 0));
    assert_eq!(
        w.subscription(51).await.unwrap().spec.traffic_quota,
        Some(quota)
    );
    assert_eq!(
        w.subscription(52).await.unwrap().spec.traffic_quota,
        None,
        "a quota the ledger does not give is removed though kubectl-edit owns it"
    );
    w.cache_shows("the repairs are cached", 52, |s| {
        s.is_some_and(|s| s.spec.traffic_quota.is_none())
    })
    .await;
    w.cache_shows("the repairs are cached", 51, |s| {
        s.is_some_and(|s| s.spec.traffic_quota == Some(quota))
    })
    .await;
    let report = w.drift.pass(&w.ledger).await.unwrap();
    assert_eq!((report.updated, report.created), (0, 0), "converged");
    assert_nothing_forbidden(w.plane, &w.ns, "api");
}
