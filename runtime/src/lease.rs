//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! does the work only one may do: the operator's reconciling, the bot's long polling (Telegram
//! answers a second `getUpdates` caller of the same bot with 409 Conflict).
//!
//! [`decide_lease`] is the pure rule (create, renew, take over a released or expired lease, or
//! wait for the holder); [`LeaseLock`] carries it out with `get`, `create` and
//! resourceVersion-guarded `update` (`replace`) calls — the verbs the binaries' `api-calls.yaml`
//! list — so two replicas racing for the same lease cannot both win (the loser gets a 409).
//! [`run_elected`] keeps renewing while the leader's work runs and drops that work the moment
//! the lease is lost or cannot be renewed within the renew deadline — which is shorter than the
//! lease duration, so the old leader has stopped before anyone else may take over; on shutdown
//! it lets the work finish and gives the lease up, so another replica takes over at its next
//! retry. [`LeaderMetrics`] is what it reports: whether this replica leads, and how often it
//! started to.

use std::future::Future;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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

    /// This replica's name in the lease.
    pub fn identity(&self) -> &str {
        &self.identity
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

/// Whether this replica leads (`<prefix>_leader`, 1 or 0) and how many times it started to
/// (`<prefix>_leader_transitions_total`), registered in a binary's own registry.
#[derive(Debug, Clone, Default)]
pub struct LeaderMetrics {
    leader: Gauge,
    transitions: Counter,
}

impl LeaderMetrics {
    /// Fresh metrics, registered in `registry` (whose prefix names the binary).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            metrics.leader.clone(),
        );
        registry.register(
            "leader_transitions",
            "Times this replica took the leader lease and started leading",
            metrics.transitions.clone(),
        );
        metrics
    }

    /// Marks whether this replica leads; becoming the leader counts one transition.
    pub fn set_leader(&self, leading: bool) {
        let was = self.leader.set(i64::from(leading));
        if leading && was == 0 {
            self.transitions.inc();
        }
    }
}

/// Waits for the lease, runs `lead` while holding it, and starts over when it is lost. Returns
/// after `shutdown` once the leader's work has finished, giving the lease up. `clock` gives the
/// time each lease is read at.
///
/// `lead` gets a token cancelled on shutdown (so it can finish gracefully); when the lease is
/// lost its future is dropped at once instead, so none of its work outlives the lease.
pub async fn run_elected<C, F, Fut>(
    lock: LeaseLock,
    timing: ElectionTiming,
    clock: C,
    metrics: &LeaderMetrics,
    shutdown: CancellationToken,
    mut lead: F,
) where
    C: Fn() -> Timestamp,
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
        info!(identity = lock.identity(), "became the leader");
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
            warn!("lost the leader lease; stopped leading");
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
        for now in ["2026-01-01T00:00:05Z", "2026-01-01T01:00:00Z"] {
            assert_eq!(decide_lease(Some(&held), "a", t(now)), LeaseDecision::Renew);
        }
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
    fn a_lease_held_since_its_acquisition_counts_from_then() {
        let mut held = lease(Some("a"), "2026-01-01T00:00:00Z", 15);
        let spec = held.spec.as_mut().unwrap();
        spec.renew_time = None;
        spec.acquire_time = Some(MicroTime(t("2026-01-01T00:00:10Z")));
        assert!(matches!(
            decide_lease(Some(&held), "b", t("2026-01-01T00:00:20Z")),
            LeaseDecision::HeldBy { .. }
        ));
    }

    #[test]
    fn a_released_or_timeless_lease_is_taken_over() {
        let released = lease(None, "2026-01-01T00:00:00Z", 15);
        let empty = lease(Some(""), "2026-01-01T00:00:00Z", 15);
        let no_times = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some("a".into()),
                ..LeaseSpec::default()
            }),
        };
        for lease in [released, empty, no_times] {
            assert_eq!(
                decide_lease(Some(&lease), "b", t("2026-01-01T00:00:01Z")),
                LeaseDecision::TakeOver
            );
        }
    }

    #[test]
    fn a_leader_that_cannot_renew_stops_before_the_lease_expires() {
        for seconds in [3, 15, 300] {
            let timing = ElectionTiming::from_lease_duration(Duration::from_secs(seconds));
            assert!(timing.renew_deadline + timing.retry_period < timing.lease_duration);
            assert!(timing.retry_period > Duration::ZERO);
        }
    }

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn the_leader_gauge_follows_leadership_and_each_start_counts_one_transition() {
        let mut registry = Registry::with_prefix("wgsub_test");
        let metrics = LeaderMetrics::register(&mut registry);
        let text = encode(&registry);
        assert!(text.contains("wgsub_test_leader 0\n"), "{text}");
        assert!(
            text.contains("wgsub_test_leader_transitions_total 0\n"),
            "{text}"
        );

        for leading in [true, true, false, false, true] {
            metrics.set_leader(leading);
        }
        let text = encode(&registry);
        assert!(text.contains("wgsub_test_leader 1\n"), "{text}");
        assert!(
            text.contains("wgsub_test_leader_transitions_total 2\n"),
            "{text}"
        );
        metrics.set_leader(false);
        assert!(encode(&registry).contains("wgsub_test_leader 0\n"));
    }
}
