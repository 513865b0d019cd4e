//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! reconciles at a time.
//!
//! [`decide_lease`] is the pure rule (create, renew, take over an expired lease, or wait for the
//! holder); [`LeaseLock`] carries it out with `create` and resourceVersion-guarded `replace`
//! calls, so two replicas racing for the same lease cannot both win (the loser gets a 409).
//! [`run_elected`] keeps renewing while the leader's work runs and stops that work the moment
//! the lease is lost or cannot be renewed within the renew deadline — which is shorter than the
//! lease duration, so the old leader has stopped before anyone else may take over.

use std::future::Future;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::controller::Clock;
use crate::metrics::Metrics;

/// What a replica should do with the lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No lease exists: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    TakeOver,
    /// Someone else holds it until `until`.
    HeldBy { holder: String, until: Timestamp },
}

/// The rule of leader election on a lease read at `now`.
pub fn decide_lease(lease: Option<&Lease>, identity: &str, now: Timestamp) -> LeaseDecision {
    let Some(lease) = lease else {
        return LeaseDecision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder.is_empty() {
        return LeaseDecision::TakeOver;
    }
    if holder == identity {
        return LeaseDecision::Renew;
    }
    let renewed = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match renewed.and_then(|at| at.checked_add(duration).ok()) {
        Some(until) if now < until => LeaseDecision::HeldBy { holder, until },
        _ => LeaseDecision::TakeOver,
    }
}

/// One replica's handle on the lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .field("duration", &self.duration)
            .finish()
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl LeaseLock {
    /// The lease `name` in the namespace of `api`, held under `identity` for `duration`.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Acquires or renews the lease at `now`; `Ok(true)` when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide_lease(current.as_ref(), &self.identity, now);
        let result = match (decision, current) {
            (LeaseDecision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.duration_seconds()),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (LeaseDecision::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(self.duration_seconds());
                self.replace(&lease).await
            }
            (LeaseDecision::TakeOver, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(self.duration_seconds());
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                self.replace(&lease).await
            }
            (LeaseDecision::HeldBy { .. }, _) | (_, None) => return Ok(false),
        };
        match result {
            Ok(()) => Ok(true),
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn replace(&self, lease: &Lease) -> Result<(), kube::Error> {
        self.api
            .replace(&self.name, &PostParams::default(), lease)
            .await
            .map(|_| ())
    }

    /// Gives the lease up (if this replica holds it) so another replica takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self.replace(&lease).await {
            Err(error) if !is_conflict(&error) => Err(error),
            _ => Ok(()),
        }
    }
}

/// How long a stopping leader tries to give the lease up; a lease it could not give up in time
/// expires by itself, so shutdown does not wait on an API server that does not answer.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often and how patiently the lease is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTiming {
    /// How long a lease stays held without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps working while renewals fail.
    pub renew_deadline: Duration,
    /// The pause between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl ElectionTiming {
    /// Timings derived from the lease duration: give up leading after half of it without a
    /// renewal, try every sixth of it. A leader that cannot renew stops at the latest after
    /// `renew_deadline + retry_period` (two thirds of the duration), before the lease expires.
    pub fn from_lease_duration(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            renew_deadline: lease_duration / 2,
            retry_period: lease_duration / 6,
        }
    }
}

/// Waits for the lease, runs `lead` while holding it, and starts over when it is lost. Returns
/// after `shutdown` once the leader's work has finished, giving the lease up.
///
/// `lead` gets a token cancelled on shutdown (so it can finish gracefully); when the lease is
/// lost its future is dropped at once instead.
pub async fn run_elected<F, Fut>(
    lock: LeaseLock,
    timing: ElectionTiming,
    clock: Clock,
    metrics: &Metrics,
    shutdown: CancellationToken,
    mut lead: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        loop {
            match lock.try_acquire_or_renew(clock()).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => warn!("could not read or write the leader lease: {error}"),
            }
            tokio::select! {
                () = tokio::time::sleep(timing.retry_period) => {}
                () = shutdown.cancelled() => return,
            }
        }
        info!("became the leader; reconciling");
        metrics.set_leader(true);
        let term = shutdown.child_token();
        let leading = lead(term.clone());
        tokio::pin!(leading);
        let mut renewed_at = Instant::now();
        let lost = loop {
            tokio::select! {
                () = &mut leading => break false,
                () = tokio::time::sleep(timing.retry_period) => {
                    match lock.try_acquire_or_renew(clock()).await {
                        Ok(true) => renewed_at = Instant::now(),
                        Ok(false) => break true,
                        Err(error) => {
                            warn!("could not renew the leader lease: {error}");
                            if renewed_at.elapsed() >= timing.renew_deadline {
                                break true;
                            }
                        }
                    }
                }
            }
        };
        metrics.set_leader(false);
        term.cancel();
        if lost {
            warn!("lost the leader lease; stopped reconciling");
            continue;
        }
        match tokio::time::timeout(RELEASE_TIMEOUT, lock.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!("could not give the leader lease up: {error}"),
            Err(_) => warn!("could not give the leader lease up in time; it will expire"),
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: &str, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(seconds),
                renew_time: Some(MicroTime(renewed.parse().unwrap())),
                ..LeaseSpec::default()
            }),
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_missing_lease_is_created() {
        assert_eq!(
            decide_lease(None, "a", t("2026-01-01T00:00:00Z")),
            LeaseDecision::Create
        );
    }

    #[test]
    fn the_holder_renews_even_after_expiry() {
        let held = lease(Some("a"), "2026-01-01T00:00:00Z", 15);
        assert_eq!(
            decide_lease(Some(&held), "a", t("2026-01-01T00:00:05Z")),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide_lease(Some(&held), "a", t("2026-01-01T01:00:00Z")),
            LeaseDecision::Renew
        );
    }

    #[test]
    fn another_holder_is_respected_until_expiry_then_taken_over() {
        let held = lease(Some("a"), "2026-01-01T00:00:00Z", 15);
        assert_eq!(
            decide_lease(Some(&held), "b", t("2026-01-01T00:00:14.999Z")),
            LeaseDecision::HeldBy {
                holder: "a".into(),
                until: t("2026-01-01T00:00:15Z")
            }
        );
        assert_eq!(
            decide_lease(Some(&held), "b", t("2026-01-01T00:00:15Z")),
            LeaseDecision::TakeOver
        );
    }

    #[test]
    fn a_released_or_timeless_lease_is_taken_over() {
        let released = lease(None, "2026-01-01T00:00:00Z", 15);
        assert_eq!(
            decide_lease(Some(&released), "b", t("2026-01-01T00:00:01Z")),
            LeaseDecision::TakeOver
        );
        let empty = lease(Some(""), "2026-01-01T00:00:00Z", 15);
        assert_eq!(
            decide_lease(Some(&empty), "b", t("2026-01-01T00:00:01Z")),
            LeaseDecision::TakeOver
        );
        let no_times = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some("a".into()),
                ..LeaseSpec::default()
            }),
        };
        assert_eq!(
            decide_lease(Some(&no_times), "b", t("2026-01-01T00:00:01Z")),
            LeaseDecision::TakeOver
        );
    }

    #[test]
    fn a_leader_that_cannot_renew_stops_before_the_lease_expires() {
        let timing = ElectionTiming::from_lease_duration(Duration::from_secs(15));
        assert!(timing.renew_deadline + timing.retry_period < timing.lease_duration);
        assert!(timing.retry_period > Duration::ZERO);
    }
}
