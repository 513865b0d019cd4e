//! Drift repair: keeping every `VpnSubscription` equal to what the ledger says, whoever else
//! wrote it (`kubectl edit`, an apply by another field manager, a deletion).
//!
//! The decision is pure: [`repair`] takes what the ledger says a user's ledger-owned spec
//! fields are ([`OwnedFields::of_user`]) and what the resource has ([`Observed`]) and returns
//! the write to make, if any; [`plan_repairs`] does that for a page of users against a
//! snapshot of the namespace. The rules:
//!
//! - nothing is written when the ledger-owned fields already say what the ledger says (so a
//!   pass over users with nothing to repair makes no write at all);
//! - a missing resource is created only for a user the ledger gives a `paidUntil` (trial,
//!   grant or payment): a user who never paid gets no resource from the loop alone (the bot
//!   creates it at `/start`, and without one every reader — the operator, `/api/v1/me` —
//!   sees the same "never paid" as with one that has no `paidUntil`);
//! - a resource being deleted is left alone (the next pass re-creates it once it is gone);
//! - resources of users the ledger does not know, and fields the ledger does not own
//!   (`server`, labels, status), are never touched;
//! - a field the ledger says is absent (`paidUntil`, `plan`, `trafficQuota`) but the resource has is cleared
//!   explicitly ([`Repair::Update::clear`]): a server-side apply that leaves a field out only
//!   removes it when no other manager owns it, and a `kubectl edit` makes its editor an owner.
//!
//! [`DriftRepair`] is the I/O shell: a watch-backed reflector of the namespace's
//! `VpnSubscription`s (so a pass makes no API call when nothing differs) and
//! [`DriftRepair::pass`], which reads the ledger page by page, plans, and carries out each
//! repair with the user's row read again just before the write (so a payment committed during
//! the pass is never overwritten by the older row the pass started from).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use wgsub_crds::VpnSubscription;
use wgsub_crds::VpnSubscriptionSpec;
use wgsub_crds::resources::TrafficQuota;
use wgsub_crds::resources::{subscription_name, telegram_user_id_from_name};

use crate::sync::{FIELD_MANAGER, SubscriptionSync, SyncError};
use crate::users::User;
use crate::{Ledger, LedgerError};

/// A `VpnSubscription` spec field the ledger owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    TelegramUserId,
    PaidUntil,
    Plan,
    MaxDevices,
    TrafficQuota,
    Suspended,
}

impl Field {
    /// The field's name in the resource's spec.
    pub fn spec_name(self) -> &'static str {
        match self {
            Field::TelegramUserId => "telegramUserId",
            Field::PaidUntil => "paidUntil",
            Field::Plan => "plan",
            Field::MaxDevices => "maxDevices",
            Field::TrafficQuota => "trafficQuota",
            Field::Suspended => "suspended",
        }
    }
}

/// The ledger-owned part of a subscription's spec: as the ledger says it, or as a resource has
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFields {
    pub telegram_user_id: i64,
    pub paid_until: Option<Timestamp>,
    pub plan: Option<String>,
    pub max_devices: i32,
    pub traffic_quota: Option<TrafficQuota>,
    pub suspended: bool,
}

impl OwnedFields {
    /// What the ledger says the user's subscription must hold.
    pub fn of_user(user: &User) -> Self {
        Self {
            telegram_user_id: user.telegram_id,
            paid_until: user.entitlement.paid_until,
            plan: user.entitlement.plan.clone(),
            max_devices: user.entitlement.max_devices,
            traffic_quota: user.entitlement.traffic_quota,
            suspended: user.suspended,
        }
    }

    /// What a resource holds.
    pub fn of_spec(spec: &VpnSubscriptionSpec) -> Self {
        Self {
            telegram_user_id: spec.telegram_user_id,
            paid_until: spec.paid_until,
            plan: spec.plan.clone(),
            max_devices: spec.max_devices,
            traffic_quota: spec.traffic_quota,
            suspended: spec.suspended,
        }
    }

    /// The fields in which `self` and `other` differ, in spec order.
    pub fn differences(&self, other: &OwnedFields) -> Vec<Field> {
        [
            (
                Field::TelegramUserId,
                self.telegram_user_id != other.telegram_user_id,
            ),
            (Field::PaidUntil, self.paid_until != other.paid_until),
            (Field::Plan, self.plan != other.plan),
            (Field::MaxDevices, self.max_devices != other.max_devices),
            (
                Field::TrafficQuota,
                self.traffic_quota != other.traffic_quota,
            ),
            (Field::Suspended, self.suspended != other.suspended),
        ]
        .into_iter()
        .filter_map(|(field, differs)| differs.then_some(field))
        .collect()
    }

    /// Whether the ledger leaves `field` out of the spec (only `paidUntil`, `plan` and
    /// `trafficQuota` can be).
    fn leaves_out(&self, field: Field) -> bool {
        match field {
            Field::PaidUntil => self.paid_until.is_none(),
            Field::Plan => self.plan.is_none(),
            Field::TrafficQuota => self.traffic_quota.is_none(),
            Field::TelegramUserId | Field::MaxDevices | Field::Suspended => false,
        }
    }
}

/// A user's resource as the loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// There is none.
    Absent,
    /// It is being deleted (it has a deletion timestamp).
    Terminating,
    /// It exists, holding these ledger-owned fields.
    Present(OwnedFields),
}

impl Observed {
    /// How the loop sees `subscription`.
    pub fn of(subscription: &VpnSubscription) -> Self {
        if subscription.meta().deletion_timestamp.is_some() {
            Observed::Terminating
        } else {
            Observed::Present(OwnedFields::of_spec(&subscription.spec))
        }
    }
}

/// The write that makes a user's resource say what the ledger says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Create it (a server-side apply of the ledger's fields).
    Create,
    /// Apply the ledger's fields (forced) over a resource that differs in `differing`, then
    /// remove the fields in `clear` (the ledger leaves them out; another manager may own them).
    Update {
        differing: Vec<Field>,
        clear: Vec<Field>,
    },
}

/// The write, if any, that repairs a user's resource; see the module documentation for the
/// rules.
pub fn repair(ledger: &OwnedFields, observed: &Observed) -> Option<Repair> {
    match observed {
        Observed::Terminating => None,
        Observed::Absent => ledger.paid_until.is_some().then_some(Repair::Create),
        Observed::Present(have) => {
            let differing = ledger.differences(have);
            if differing.is_empty() {
                return None;
            }
            let clear = differing
                .iter()
                .copied()
                .filter(|field| ledger.leaves_out(*field))
                .collect();
            Some(Repair::Update { differing, clear })
        }
    }
}

/// The repairs for `users` against `observed` (keyed by Telegram user id; a user without an
/// entry has no resource), in the order of `users`.
pub fn plan_repairs(
    users: &[OwnedFields],
    observed: &HashMap<i64, Observed>,
) -> Vec<(i64, Repair)> {
    users
        .iter()
        .filter_map(|user| {
            let have = observed
                .get(&user.telegram_user_id)
                .unwrap_or(&Observed::Absent);
            repair(user, have).map(|repair| (user.telegram_user_id, repair))
        })
        .collect()
}

/// How a drift pass went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriftReport {
    /// Users of the ledger compared.
    pub users: usize,
    /// Resources created.
    pub created: usize,
    /// Resources written over.
    pub updated: usize,
    /// Repairs that failed (retried by the next pass).
    pub failed: usize,
    /// How long the pass took.
    pub elapsed: Duration,
}

/// Users read from the ledger at a time.
const PAGE: i64 = 1000;

/// The drift repair of one namespace: a reflector of its `VpnSubscription`s and the pass that
/// compares them with the ledger. Made by [`SubscriptionSync::drift_repair`].
#[derive(Clone)]
pub struct DriftRepair {
    sync: SubscriptionSync,
    store: Store<VpnSubscription>,
}

impl std::fmt::Debug for DriftRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftRepair")
            .field("cached", &self.store.len())
            .finish_non_exhaustive()
    }
}

impl SubscriptionSync {
    /// The drift repair of this sync's namespace, and the reflector that feeds its cache
    /// (a list, then a watch, of the namespace's `VpnSubscription`s, re-listed with backoff
    /// after errors). Run the reflector for as long as passes are made.
    pub fn drift_repair(&self) -> (DriftRepair, impl Future<Output = ()> + Send + 'static) {
        let (store, writer) = reflector::store::<VpnSubscription>();
        let reflector = watcher(self.api().clone(), watcher::Config::default())
            .default_backoff()
            .modify(|subscription| subscription.meta_mut().managed_fields = None)
            .reflect(writer)
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, "VpnSubscription watch failed; retrying");
                }
            });
        (self.drift_repair_on(store), reflector)
    }

    /// The drift repair of this sync's namespace over a cache of its `VpnSubscription`s that
    /// someone else keeps (the api shares the store its readers use: one watch, not two).
    pub fn drift_repair_on(&self, store: Store<VpnSubscription>) -> DriftRepair {
        DriftRepair {
            sync: self.clone(),
            store,
        }
    }
}

impl DriftRepair {
    /// Waits until the reflector has listed the namespace once (a pass before that would see
    /// every resource missing). False when the reflector was dropped first.
    pub async fn ready(&self) -> bool {
        self.store.wait_until_ready().await.is_ok()
    }

    /// The user's resource as the cache has it now (it follows the server within a watch
    /// event's delay).
    pub fn cached(&self, user_id: i64) -> Option<Arc<VpnSubscription>> {
        self.store
            .get(&ObjectRef::new(&subscription_name(user_id)).within(self.sync.namespace()))
    }

    /// Compares every user of the ledger with the cached resources and repairs what differs.
    /// Call it after [`DriftRepair::ready`]. A failed repair is counted and retried by the next
    /// pass; an error reading the ledger ends the pass.
    pub async fn pass(&self, ledger: &Ledger) -> Result<DriftReport, LedgerError> {
        let started = Instant::now();
        // The snapshot is taken before the ledger is read: a resource written after it is
        // compared with a ledger at least as new as what was written.
        let observed: HashMap<i64, Observed> = self
            .store
            .state()
            .iter()
            .filter_map(|subscription| {
                telegram_user_id_from_name(&subscription.name_any())
                    .map(|id| (id, Observed::of(subscription)))
            })
            .collect();
        let mut report = DriftReport::default();
        let mut after = 0;
        loop {
            let page = ledger.users_after(after, PAGE).await?;
            report.users += page.len();
            let owned: Vec<OwnedFields> = page.iter().map(OwnedFields::of_user).collect();
            for (user_id, _) in plan_repairs(&owned, &observed) {
                let have = observed.get(&user_id).unwrap_or(&Observed::Absent);
                match self.repair_user(ledger, user_id, have).await {
                    Ok(Some(Repair::Create)) => report.created += 1,
                    Ok(Some(Repair::Update { .. })) => report.updated += 1,
                    Ok(None) => {}
                    Err(error) => {
                        report.failed += 1;
                        tracing::warn!(user = user_id, %error, "VpnSubscription repair failed");
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after = last.telegram_id,
                _ => break,
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Reads the user again and, if their resource still needs it, repairs it; returns the
    /// repair made.
    async fn repair_user(
        &self,
        ledger: &Ledger,
        user_id: i64,
        have: &Observed,
    ) -> Result<Option<Repair>, SyncError> {
        let Some(user) = ledger.user(user_id).await? else {
            return Ok(None);
        };
        let want = OwnedFields::of_user(&user);
        let Some(made) = repair(&want, have) else {
            return Ok(None);
        };
        let applied = self.sync.apply_user(ledger, &user).await?;
        let mut now = OwnedFields::of_spec(&applied.spec);
        // What a forced apply cannot do: remove a field another manager also owns.
        if let Some(Repair::Update { clear, .. }) = repair(&want, &Observed::Present(now.clone()))
            && !clear.is_empty()
        {
            now = OwnedFields::of_spec(&self.clear(&applied, &clear).await?.spec);
        }
        let left = want.differences(&now);
        if !left.is_empty() {
            return Err(SyncError::Unrepaired(
                left.iter().map(|field| field.spec_name()).collect(),
            ));
        }
        tracing::info!(user = user_id, repair = ?made, "VpnSubscription repaired");
        Ok(Some(made))
    }

    /// Removes `fields` from the resource's spec (a merge patch: whoever owns them).
    async fn clear(
        &self,
        subscription: &VpnSubscription,
        fields: &[Field],
    ) -> Result<VpnSubscription, SyncError> {
        let spec: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|field| (field.spec_name().to_owned(), serde_json::Value::Null))
            .collect();
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        Ok(self
            .sync
            .api()
            .patch(
                &subscription.name_any(),
                &params,
                &Patch::Merge(json!({"spec": spec})),
            )
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Ledger states worth telling apart: never paid, on trial, paying, suspended while
    /// paying, suspended never having paid, refunded back to no time.
    fn ledger_states() -> Vec<OwnedFields> {
        let never = OwnedFields {
            telegram_user_id: 42,
            paid_until: None,
            plan: None,
            max_devices: 1,
            traffic_quota: None,
            suspended: false,
        };
        let trial = OwnedFields {
            paid_until: Some(t("2026-01-04T00:00:00Z")),
            ..never.clone()
        };
        let paying = OwnedFields {
            paid_until: Some(t("2026-04-01T00:00:00Z")),
            plan: Some("quarter".into()),
            max_devices: 3,
            traffic_quota: Some(TrafficQuota {
                bytes: 100 << 30,
                period_days: 90,
            }),
            ..never.clone()
        };
        let suspended = OwnedFields {
            suspended: true,
            ..paying.clone()
        };
        let suspended_never = OwnedFields {
            suspended: true,
            ..never.clone()
        };
        vec![never, trial, paying, suspended, suspended_never]
    }

    /// What a resource can hold: every ledger state, and each ledger state with each field
    /// edited away from it (set, changed or removed), and all edited at once.
    fn resource_states() -> Vec<OwnedFields> {
        let mut states = ledger_states();
        for base in ledger_states() {
            let mut all = base.clone();
            for edit in edits() {
                let mut edited = base.clone();
                edit(&mut edited);
                edit(&mut all);
                states.push(edited);
            }
            states.push(all);
        }
        states
    }

    fn edits() -> [fn(&mut OwnedFields); 7] {
        [
            |f| f.telegram_user_id += 1,
            |f| {
                f.paid_until = match f.paid_until {
                    Some(_) => None,
                    None => Some(t("2030-01-01T00:00:00Z")),
                }
            },
            |f| {
                f.plan = match f.plan {
                    Some(_) => None,
                    None => Some("year".into()),
                }
            },
            |f| f.max_devices = f.max_devices % 10 + 1,
            |f| {
                f.traffic_quota = match f.traffic_quota {
                    Some(_) => None,
                    None => Some(TrafficQuota {
                        bytes: 1 << 30,
                        period_days: 30,
                    }),
                }
            },
            |f| {
                if let Some(quota) = &mut f.traffic_quota {
                    quota.bytes *= 2;
                } else {
                    f.traffic_quota = Some(TrafficQuota {
                        bytes: 5,
                        period_days: 1,
                    });
                }
            },
            |f| f.suspended = !f.suspended,
        ]
    }

    /// What a resource holds after `repair` under the least helpful server-side apply: fields
    /// the ledger sets are set, fields it leaves out stay (another manager owns them) unless
    /// cleared.
    fn after(ledger: &OwnedFields, have: Option<&OwnedFields>, repair: &Repair) -> OwnedFields {
        let mut next = have.cloned().unwrap_or_else(|| OwnedFields {
            paid_until: None,
            plan: None,
            traffic_quota: None,
            ..ledger.clone()
        });
        next.telegram_user_id = ledger.telegram_user_id;
        next.max_devices = ledger.max_devices;
        next.suspended = ledger.suspended;
        if ledger.paid_until.is_some() {
            next.paid_until = ledger.paid_until;
        }
        if ledger.plan.is_some() {
            next.plan.clone_from(&ledger.plan);
        }
        if ledger.traffic_quota.is_some() {
            next.traffic_quota = ledger.traffic_quota;
        }
        if let Repair::Update { clear, .. } = repair {
            for field in clear {
                match field {
                    Field::PaidUntil => next.paid_until = None,
                    Field::Plan => next.plan = None,
                    Field::TrafficQuota => next.traffic_quota = None,
                    _ => panic!("only fields the ledger can leave out are cleared: {field:?}"),
                }
            }
        }
        next
    }

    #[test]
    fn a_resource_that_says_what_the_ledger_says_is_not_written() {
        for ledger in ledger_states() {
            let have = Observed::Present(ledger.clone());
            assert_eq!(repair(&ledger, &have), None, "{ledger:?}");
        }
    }

    #[test]
    fn every_divergent_resource_is_repaired_in_one_write_and_then_left_alone() {
        for ledger in ledger_states() {
            for have in resource_states() {
                let differing = ledger.differences(&have);
                let got = repair(&ledger, &Observed::Present(have.clone()));
                if differing.is_empty() {
                    assert_eq!(got, None, "{ledger:?} / {have:?}");
                    continue;
                }
                let made = got.unwrap_or_else(|| panic!("no repair: {ledger:?} / {have:?}"));
                let Repair::Update {
                    differing: named,
                    clear,
                } = &made
                else {
                    panic!("an existing resource is updated: {made:?}");
                };
                assert_eq!(named, &differing, "{ledger:?} / {have:?}");
                for field in clear {
                    assert!(differing.contains(field) && ledger.leaves_out(*field));
                }
                let next = after(&ledger, Some(&have), &made);
                assert_eq!(next, ledger, "one repair converges: {have:?}");
                assert_eq!(repair(&ledger, &Observed::Present(next)), None);
            }
        }
    }

    #[test]
    fn a_missing_resource_is_created_exactly_when_the_ledger_gives_a_paid_until() {
        for ledger in ledger_states() {
            let got = repair(&ledger, &Observed::Absent);
            if ledger.paid_until.is_some() {
                assert_eq!(got, Some(Repair::Create), "{ledger:?}");
                let next = after(&ledger, None, &Repair::Create);
                assert_eq!(next, ledger);
                assert_eq!(repair(&ledger, &Observed::Present(next)), None);
            } else {
                assert_eq!(got, None, "a never-paid user gets no resource: {ledger:?}");
            }
        }
    }

    #[test]
    fn a_resource_being_deleted_is_left_alone() {
        for ledger in ledger_states() {
            assert_eq!(repair(&ledger, &Observed::Terminating), None);
        }
    }

    #[test]
    fn only_paid_until_plan_and_quota_the_ledger_leaves_out_are_cleared() {
        let ledger = &ledger_states()[0];
        let mut have = ledger.clone();
        have.paid_until = Some(t("2030-01-01T00:00:00Z"));
        have.plan = Some("year".into());
        have.max_devices = 5;
        have.traffic_quota = Some(TrafficQuota {
            bytes: 1 << 30,
            period_days: 30,
        });
        assert_eq!(
            repair(ledger, &Observed::Present(have)),
            Some(Repair::Update {
                differing: vec![
                    Field::PaidUntil,
                    Field::Plan,
                    Field::MaxDevices,
                    Field::TrafficQuota
                ],
                clear: vec![Field::PaidUntil, Field::Plan, Field::TrafficQuota],
            })
        );
    }

    #[test]
    fn a_plan_covers_each_user_once_and_ignores_resources_of_unknown_users() {
        let states = ledger_states();
        let (never, paying) = (&states[0], &states[2]);
        let user = |id: i64, fields: &OwnedFields| OwnedFields {
            telegram_user_id: id,
            ..fields.clone()
        };
        let users = vec![
            user(1, paying), // resource equal: nothing
            user(2, paying), // resource edited: update
            user(3, paying), // resource missing: create
            user(4, never),  // never paid, no resource: nothing
            user(5, never),  // never paid, resource from the bot: nothing
            user(6, paying), // being deleted: nothing yet
        ];
        let mut edited = user(2, paying);
        edited.paid_until = Some(t("2020-01-01T00:00:00Z"));
        let observed: HashMap<i64, Observed> = [
            (1, Observed::Present(user(1, paying))),
            (2, Observed::Present(edited)),
            (5, Observed::Present(user(5, never))),
            (6, Observed::Terminating),
            (99, Observed::Present(user(99, paying))),
        ]
        .into();
        assert_eq!(
            plan_repairs(&users, &observed),
            vec![
                (
                    2,
                    Repair::Update {
                        differing: vec![Field::PaidUntil],
                        clear: vec![],
                    }
                ),
                (3, Repair::Create),
            ]
        );
    }

    #[test]
    fn a_subscription_with_a_deletion_timestamp_is_observed_terminating() {
        let mut subscription = VpnSubscription::new("tg-42", VpnSubscriptionSpec::for_user(42));
        assert_eq!(
            Observed::of(&subscription),
            Observed::Present(OwnedFields::of_spec(&VpnSubscriptionSpec::for_user(42)))
        );
        subscription.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t("2026-01-01T00:00:00Z")),
        );
        assert_eq!(Observed::of(&subscription), Observed::Terminating);
    }
}
