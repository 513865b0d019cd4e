//! The agent loop: reads the index, asks the pure decisions what a pass does (the steps of
//! [`crate::pass`]), runs those steps on the interfaces through the worker and feeds the results
//! back, and queues status: a peer's `Ready` as soon as the pass that put it on (or took it off)
//! the interface is done, the rest every status interval. While the first `WgPeer` list arrives
//! it already adds the peers that are safe to add on a partial view (start passes). It wakes on
//! an index change (incremental: the diff against what it last applied), at the next
//! `expiresAt` (its own timer), and every resync interval plus once at start (full: the diff
//! against the interface as read, which removes hand-added peers, restores a changed key or port
//! and recreates a deleted interface). Every `now` comes from its [`Clock`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use tokio_util::sync::CancellationToken;
use wgsub_crds::keys::{PrivateKey, PublicKey};
use wgsub_crds::pool::{parse_pool_v4, parse_pool_v6};
use wgsub_crds::{WgPeerStatus, WgServer, WgServerStatus};

use crate::amneziawg::driver_for;
use crate::awg_kernel::AwgImplementation;
use crate::desired::{DesiredState, PeerInput, PeerState, Pools, live_candidate};
use crate::diff::{EarlyAdditions, PeerDiff, count_differences, diff_keys, diff_peers};
use crate::expiry::{next_wake, sleep_until};
use crate::http::Health;
use crate::index::{Dirty, ServerKey, SharedIndex};
use crate::interface::{Backend, Driver, LinkSpec, WgInterface, Worker};
use crate::kube_shell::{KubeApi, Priority, StatusQueue, StatusWrite, Target};
use crate::metrics::{ApplyKind, ApplyLabels, Metrics};
use crate::nat::{self, Firewall, NatPlan};
use crate::pass::{
    Checked, Held, InterfaceStep, NatWrite, Pass, PeerConfigs, SyncMode, Synced, check_settings,
    firewall_needed, interface_step, nat_due, rebuild_decision, start_plan, sync_plan,
};
use crate::snapshot::InterfaceSnapshot;
use crate::status::{
    Due, RoutineBudget, applied_peer_status, applied_write_due, peer_ready, peer_status,
    peer_write_due, peers_to_judge, reason, routine_interval, server_ready, server_status,
    server_write_due,
};

/// The loop's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub backend: Backend,
    /// The AmneziaWG kernel module and/or amneziawg-go, for AmneziaWG servers; `None`: this
    /// node has no AmneziaWG implementation.
    pub amneziawg: Option<AwgImplementation>,
    pub resync_interval: Duration,
    pub status_interval: Duration,
    pub counters_interval: Duration,
    /// `None`: detect on first use.
    pub firewall: Option<Firewall>,
}

/// What a full comparison did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Converged {
    created: bool,
    /// Differences between what the agent believed was on the interface and what was there.
    drift: usize,
}

/// Makes the interface hold `key`, `port` (and its AmneziaWG parameters), exactly `desired`
/// and the link as `link`. Runs on the worker thread. `believed` is what the agent last applied
/// (for counting drift).
fn converge(
    interface: &WgInterface,
    key: &PrivateKey,
    port: u16,
    desired: &PeerConfigs,
    believed: Option<&PeerConfigs>,
    link: &LinkSpec,
) -> io::Result<Converged> {
    match observe_or_recreate(interface)? {
        None => {
            let diff = diff_peers(desired, &BTreeMap::new());
            interface.create(key, port, &diff)?;
            interface.ensure_link(link, None)?;
            Ok(Converged {
                created: true,
                drift: usize::from(believed.is_some()),
            })
        }
        Some((snapshot, link_state)) => {
            let mut corrections = 0;
            let settings = if interface.settings_match(&snapshot, key, port) {
                None
            } else {
                corrections += 1;
                Some((key, port))
            };
            let observed = snapshot.into_peer_configs();
            let diff = diff_peers(desired, &observed);
            if !diff.is_empty() || settings.is_some() {
                interface.apply(settings, &diff)?;
            }
            drop(diff);
            corrections += interface.ensure_link(link, Some(link_state))?.len();
            let peer_drift = believed.map_or(0, |believed| count_differences(believed, &observed));
            Ok(Converged {
                created: false,
                drift: corrections + peer_drift,
            })
        }
    }
}

/// Reads the interface; one whose AmneziaWG parameters cannot be brought to the wanted ones by
/// an update is deleted and reads as absent (so it is made again).
fn observe_or_recreate(
    interface: &WgInterface,
) -> io::Result<Option<(InterfaceSnapshot, crate::interface::LinkState)>> {
    match interface.observe()? {
        Some((snapshot, _)) if interface.needs_recreate(&snapshot) => {
            tracing::info!(
                interface = interface.name(),
                "AmneziaWG parameters changed beyond an update; making the interface again"
            );
            interface.delete()?;
            Ok(None)
        }
        observed => Ok(observed),
    }
}

/// Readies the interface while the `WgPeer` list is still arriving: reads it once, creates it
/// if missing, restores key, port and parameters and sets the link. Adds and removes no peer
/// (the start passes queue the additions that are safe behind it). Returns the peers the
/// interface holds and whether it was created. Runs on the worker.
fn prepare(
    interface: &WgInterface,
    key: &PrivateKey,
    port: u16,
    link: &LinkSpec,
) -> io::Result<(PeerConfigs, bool)> {
    let nothing = PeerDiff::default();
    match observe_or_recreate(interface)? {
        None => {
            interface.create(key, port, &nothing)?;
            interface.ensure_link(link, None)?;
            Ok((PeerConfigs::new(), true))
        }
        Some((snapshot, link_state)) => {
            if !interface.settings_match(&snapshot, key, port) {
                interface.apply(Some((key, port)), &nothing)?;
            }
            interface.ensure_link(link, Some(link_state))?;
            Ok((snapshot.into_peer_configs(), false))
        }
    }
}

/// A start pass's additions, queued on the worker: the result and the time the apply took.
type QueuedApply = tokio::sync::oneshot::Receiver<(io::Result<()>, Duration)>;

/// Collects the applies start passes queued: with `wait`, all of them; otherwise those done.
/// A failed one leaves what is on the interface unknown (read again by the next pass).
async fn collect_queued(metrics: &Metrics, runtime: &mut ServerRuntime, wait: bool) {
    let labels = ApplyLabels {
        interface: runtime.interface.name().to_owned(),
        kind: ApplyKind::Start,
    };
    for mut reply in std::mem::take(&mut runtime.queued) {
        let result = if wait {
            reply.await.map_err(drop)
        } else {
            match reply.try_recv() {
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                    runtime.queued.push(reply);
                    continue;
                }
                other => other.map_err(drop),
            }
        };
        match result {
            Ok((Ok(()), took)) => {
                metrics.applies.get_or_create(&labels).inc();
                metrics
                    .apply_duration
                    .get_or_create(&labels)
                    .observe(took.as_secs_f64());
            }
            Ok((Err(error), _)) => apply_failed(metrics, runtime, error.to_string()),
            Err(()) => apply_failed(metrics, runtime, crate::interface::WorkerGone.to_string()),
        }
    }
}

/// An update of the interface failed: what is on it is unknown until it is read again.
fn apply_failed(metrics: &Metrics, runtime: &mut ServerRuntime, message: String) {
    tracing::warn!(
        interface = runtime.interface.name(),
        error = message,
        "applying to the interface failed"
    );
    metrics
        .apply_errors
        .get_or_create(&Metrics::interface(runtime.interface.name()))
        .inc();
    runtime.held.apply_failed(message);
}

/// What the agent keeps per served server.
#[derive(Debug)]
struct ServerRuntime {
    interface: WgInterface,
    /// What the agent holds of the interface between passes: what the pass decisions read and
    /// the results of the passes update.
    held: Held,
    /// The private key last seen and its public half: deriving it is a scalar multiplication,
    /// not worth repeating on every event.
    key_pair: Option<(PrivateKey, PublicKey)>,
    /// The peer decision, kept up to date peer by peer.
    decision: Option<DesiredState>,
    /// Applies of start passes queued on the worker and not awaited, so wireguard-go always
    /// has the next page's peers waiting while the agent decodes and decides the one after.
    /// Any other pass waits for them first.
    queued: Vec<QueuedApply>,
    /// What the start passes know while the `WgPeer` list arrives.
    early: Option<EarlyAdditions>,
}

impl ServerRuntime {
    fn new(interface: WgInterface) -> Self {
        Self {
            interface,
            held: Held::default(),
            key_pair: None,
            decision: None,
            queued: Vec::new(),
            early: None,
        }
    }
}

/// The agent's clock: the system's, unless another is given ([`Agent::with_clock`]).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    pub fn new(now: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Clock(Arc::new(now))
    }

    fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new(Timestamp::now)
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Bookkeeping of status already written, so unchanged status is not written again.
#[derive(Debug, Default)]
struct Written {
    peers: BTreeMap<String, (WgPeerStatus, Option<Timestamp>)>,
    servers: BTreeMap<String, (WgServerStatus, Timestamp)>,
}

impl Written {
    /// The status last written for the peer `peer_name` and when its counters last changed;
    /// before any write, `current` (its status as read) and no time.
    fn last_peer<'a>(
        &'a self,
        peer_name: &str,
        current: Option<&'a WgPeerStatus>,
    ) -> (Option<&'a WgPeerStatus>, Option<Timestamp>) {
        match self.peers.get(peer_name) {
            Some((written, at)) => (Some(written), *at),
            None => (current, None),
        }
    }
}

/// The agent.
#[derive(Debug)]
pub struct Agent {
    settings: Settings,
    index: Arc<SharedIndex>,
    api: KubeApi,
    worker: Worker,
    /// Firewall rules (NAT), so they never wait behind an update of the interface.
    firewall_worker: Worker,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    status: Arc<StatusQueue>,
    node_labels: BTreeMap<String, String>,
    servers: BTreeMap<String, ServerRuntime>,
    written: Written,
    /// Routine status writes (counters, renewed handshakes) still allowed.
    routine_budget: RoutineBudget,
    firewall: Option<Firewall>,
    /// Every `now` the agent decides with.
    clock: Clock,
}

impl Agent {
    pub fn new(
        settings: Settings,
        index: Arc<SharedIndex>,
        api: KubeApi,
        worker: Worker,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        status: Arc<StatusQueue>,
    ) -> Self {
        let firewall = settings.firewall;
        let routine_budget = RoutineBudget::new(settings.status_interval);
        let firewall_worker = worker.sibling("wg-firewall").unwrap_or_else(|error| {
            tracing::warn!(%error, "no separate firewall thread; firewall rules share the interface thread");
            worker.clone()
        });
        Self {
            settings,
            index,
            api,
            worker,
            firewall_worker,
            metrics,
            health,
            status,
            node_labels: BTreeMap::new(),
            servers: BTreeMap::new(),
            written: Written::default(),
            routine_budget,
            firewall,
            clock: Clock::default(),
        }
    }

    /// The agent with another clock than the system's: expiries, `lastSync` and status
    /// timestamps follow it.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Runs until `shutdown`: waits for the watches, then syncs on changes, expiry timers and the
    /// resync interval, and queues status every status interval.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if !self.start(&shutdown).await {
            return;
        }
        let mut resync = tokio::time::interval(self.settings.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status = tokio::time::interval(self.settings.status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.health.beat();
            let now = self.clock.now();
            let decisions = self
                .servers
                .values()
                .filter_map(|server| Some((server.decision.as_ref()?, server.held.decided_at)));
            let wake = next_wake(decisions, now);
            let sleep = sleep_until(wake, now, self.settings.resync_interval);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = resync.tick() => {
                    self.sync(true).await;
                    self.health.set_ready();
                    self.queue_status().await;
                }
                () = tokio::time::sleep(sleep), if wake.is_some() => self.sync(false).await,
                () = self.index.changed() => self.sync(false).await,
                _ = status.tick() => self.queue_status().await,
            }
        }
    }

    /// Until every watch has listed its kind once: whenever the index changes after the servers,
    /// Secrets and subscriptions are listed, a [`Pass::Start`] judges the peers listed since the
    /// last one ([`EarlyAdditions`]) and queues the ones that are safe to add on the worker
    /// without waiting for it. So wireguard-go works on the first pages of the `WgPeer` list
    /// while the next ones are decoded. Returns `false` on shutdown. The first full pass after
    /// it decides every peer in bulk, waits for the queued applies, compares with what was
    /// applied and sends what is left.
    pub async fn start(&mut self, shutdown: &CancellationToken) -> bool {
        let mut labels_read = false;
        loop {
            if self.index.is_synced() {
                return true;
            }
            if self.index.is_synced_except(crate::index::Kind::WgPeer) {
                if !labels_read {
                    self.read_node_labels().await;
                    labels_read = true;
                }
                self.pass(Pass::Start).await;
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = self.index.wait_synced() => return true,
                () = self.index.changed() => {}
            }
        }
    }

    async fn read_node_labels(&mut self) {
        match self.api.node_labels(&self.settings.node_name).await {
            Ok(labels) => self.node_labels = labels,
            Err(error) => tracing::warn!(%error, "reading this node's labels failed"),
        }
    }

    /// One pass over every served server. `full` compares with the interface as read.
    pub async fn sync(&mut self, full: bool) {
        if full {
            self.read_node_labels().await;
        }
        self.pass(if full { Pass::Full } else { Pass::Incremental })
            .await;
    }

    async fn pass(&mut self, pass: Pass) {
        let selected: Vec<WgServer> = self.index.read(|index| {
            index
                .servers_for_node(&self.settings.node_name, &self.node_labels)
                .into_iter()
                .cloned()
                .collect()
        });
        let gone: Vec<String> = self
            .servers
            .keys()
            .filter(|name| !selected.iter().any(|s| s.name_any() == **name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(runtime) = self.servers.remove(&name) {
                self.teardown(runtime).await;
            }
        }
        let dirty = self.index.take_dirty();
        for server in selected {
            self.sync_server(&server, pass, &dirty).await;
        }
    }

    async fn teardown(&mut self, runtime: ServerRuntime) {
        let interface = runtime.interface.clone();
        let firewall = self.firewall;
        let removed = self
            .worker
            .run(move || {
                if let Some(firewall) = firewall {
                    nat::remove(firewall, interface.name())?;
                }
                interface.delete()
            })
            .await;
        tracing::info!(
            interface = runtime.interface.name(),
            ?removed,
            "server no longer served; interface removed"
        );
    }

    async fn resolve_firewall(&mut self) -> Firewall {
        if let Some(firewall) = self.firewall {
            return firewall;
        }
        let detected = self
            .firewall_worker
            .run(nat::detect_firewall)
            .await
            .unwrap_or(Firewall::Iptables);
        tracing::info!(?detected, "firewall for NAT");
        self.firewall = Some(detected);
        detected
    }

    /// The server's private key, creating it (and its Secret) when the Secret does not exist.
    async fn server_key(
        &mut self,
        server: &WgServer,
    ) -> Result<PrivateKey, (&'static str, String)> {
        let reference = &server.spec.private_key_secret_ref;
        match self.index.read(|index| index.server_key(&server.spec)) {
            ServerKey::Found(key) => Ok(key),
            ServerKey::Invalid(error) => Err((
                reason::INVALID_KEY,
                format!("Secret {} key {}: {error}", reference.name, reference.key),
            )),
            ServerKey::KeyMissing => Err((
                reason::INVALID_KEY,
                format!("Secret {} has no key {}", reference.name, reference.key),
            )),
            ServerKey::SecretMissing => {
                let key = PrivateKey::generate();
                let created = self
                    .api
                    .create_server_secret(&server.name_any(), reference, &key)
                    .await
                    .map_err(|e| {
                        (
                            reason::INTERFACE_ERROR,
                            format!("creating Secret {}: {e}", reference.name),
                        )
                    })?;
                tracing::info!(secret = reference.name, "created the server key Secret");
                self.index.update(|index| index.apply_secret(&created));
                match self.index.read(|index| index.server_key(&server.spec)) {
                    ServerKey::Found(key) => Ok(key),
                    _ => Err((
                        reason::INVALID_KEY,
                        format!("Secret {} holds no usable key", reference.name),
                    )),
                }
            }
        }
    }

    async fn sync_server(&mut self, server: &WgServer, pass: Pass, dirty: &Dirty) {
        let name = server.name_any();
        let spec = &server.spec;
        let (driver, driver_problem) = match driver_for(
            spec,
            self.settings.backend,
            self.settings.amneziawg.as_ref(),
        ) {
            Ok(driver) => (driver, None),
            Err(problem) => (Driver::AmneziaWgUnavailable, Some(problem)),
        };
        let current = self
            .servers
            .get(&name)
            .map(|runtime| (runtime.interface.name(), runtime.interface.driver()));
        let step = interface_step(
            current,
            &spec.interface_name,
            &driver,
            driver_problem.is_none(),
        );
        match step {
            InterfaceStep::Keep => {}
            InterfaceStep::NewParameters => {
                if let Some(runtime) = self.servers.get_mut(&name) {
                    // The next pass reads the interface and sends them with the key and port;
                    // peers handshake again.
                    tracing::info!(
                        interface = runtime.interface.name(),
                        "AmneziaWG parameters changed"
                    );
                    runtime.interface.set_driver(driver);
                    runtime.held.new_parameters();
                }
            }
            InterfaceStep::Create | InterfaceStep::Replace => {
                if step == InterfaceStep::Replace
                    && let Some(old) = self.servers.remove(&name)
                {
                    self.teardown(old).await;
                }
                match WgInterface::with_driver(&spec.interface_name, driver) {
                    Ok(interface) => {
                        self.servers
                            .insert(name.clone(), ServerRuntime::new(interface));
                    }
                    Err(error) => {
                        tracing::warn!(server = name, %error, "cannot serve");
                        return;
                    }
                }
            }
        }
        let key = self.server_key(server).await;
        let now = self.clock.now();
        let pools = parse_pool_v4(&spec.address_pool)
            .and_then(|v4| {
                let v6 = spec
                    .address_pool6
                    .as_deref()
                    .map(parse_pool_v6)
                    .transpose()?;
                Ok(Pools { v4, v6 })
            })
            .map_err(|error| error.to_string());
        let nat_wanted = spec.nat.as_ref().is_some_and(|nat| nat.enabled);
        let look_at_firewall = self
            .servers
            .get(&name)
            .is_some_and(|runtime| firewall_needed(pass, nat_wanted, &runtime.held.nat));
        let firewall = if look_at_firewall {
            Some(self.resolve_firewall().await)
        } else {
            None
        };
        let Some(runtime) = self.servers.get_mut(&name) else {
            return;
        };
        runtime.held.generation = server.metadata.generation;
        // Nothing is brought up for an AmneziaWG server this node cannot serve yet.
        let driver = driver_problem.map_or(Ok(()), Err);
        let checked = match check_settings(driver, key, pools, spec.listen_port) {
            Ok(checked) => checked,
            Err(problem) => {
                // The dirty peers of this pass did not reach the decision.
                runtime.held.server_problem(problem);
                return;
            }
        };
        // NAT runs on its own thread, beside the queued applies and this pass's update.
        // A plan that cannot be made leaves the rules in place and reports why, every pass.
        let nat_job = firewall.and_then(|firewall| {
            let planned = NatPlan::for_server(runtime.interface.name(), checked.pools, spec);
            nat_due(&planned, &runtime.held.nat, pass).then(|| {
                let interface = runtime.interface.name().to_owned();
                let plan = planned.clone();
                let job = self.firewall_worker.submit(move || match plan {
                    Ok(Some(mut plan)) => {
                        if plan.egress.is_empty() {
                            plan.egress = nat::default_route_interface()?;
                        }
                        nat::apply(firewall, &plan)
                    }
                    Ok(None) => nat::remove(firewall, &interface),
                    Err(problem) => Err(std::io::Error::other(problem)),
                });
                (planned, job)
            })
        });
        let was_warm = std::mem::take(&mut runtime.held.warm);
        let link = LinkSpec {
            addresses: checked.pools.interface_addresses(),
            mtu: spec.mtu.and_then(|mtu| u32::try_from(mtu).ok()),
        };
        let public = match &runtime.key_pair {
            Some((private, public)) if *private == checked.key => *public,
            _ => {
                let public = checked.key.public_key();
                runtime.key_pair = Some((checked.key.clone(), public));
                public
            }
        };
        if pass == Pass::Start {
            return self
                .start_pass(&name, &checked, public, link, now, dirty)
                .await;
        }
        let interface_labels = Metrics::interface(runtime.interface.name());
        runtime.early = None;
        // A full pass decides in bulk (after start passes there is no decision to update).
        let pools_unchanged = runtime
            .decision
            .as_ref()
            .is_some_and(|decision| decision.pools() == &checked.pools);
        let rebuild = rebuild_decision(pass, &runtime.held, dirty.all, pools_unchanged);
        let touched = if rebuild {
            // Drop the old decision first: at 10k peers two at once double the memory.
            runtime.decision = None;
            let inputs = self.index.read(|index| index.peer_inputs(&name));
            runtime.decision = Some(DesiredState::new(checked.pools, inputs, now));
            None
        } else {
            let changes: Vec<(String, Option<PeerInput>)> = self.index.read(|index| {
                dirty
                    .peers
                    .iter()
                    .map(|peer| (peer.clone(), index.peer_input(&name, peer)))
                    .collect()
            });
            runtime
                .decision
                .as_mut()
                .map(|decision| decision.update(changes, now))
        };
        runtime.held.decided_at = Some(now);
        // Decided while wireguard-go still works on the start passes' additions.
        collect_queued(&self.metrics, runtime, true).await;
        let Some(decision) = runtime.decision.as_ref() else {
            return;
        };
        let desired_count = decision.desired.peers.len();
        let judge = peers_to_judge(&dirty.peers, touched.as_ref(), &decision.desired);
        let port = checked.port;
        let plan = sync_plan(
            pass,
            &runtime.held,
            was_warm,
            dirty.all,
            rebuild,
            public,
            port,
        );
        let started = Instant::now();
        let outcome: Result<(Synced, Option<usize>), String> = match plan.sync {
            SyncMode::Converge => {
                let configs = Arc::new(decision.desired.configs());
                let interface = runtime.interface.clone();
                let believed = runtime.held.applied.clone();
                let desired = Arc::clone(&configs);
                let key = checked.key.clone();
                match self
                    .worker
                    .run(move || {
                        converge(&interface, &key, port, &desired, believed.as_deref(), &link)
                    })
                    .await
                {
                    Ok(Ok(converged)) => {
                        if converged.created {
                            tracing::info!(
                                interface = runtime.interface.name(),
                                peers = desired_count,
                                "created the interface"
                            );
                        }
                        Ok((Synced::Converged(configs), Some(converged.drift)))
                    }
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(gone) => Err(gone.to_string()),
                }
            }
            SyncMode::DiffAll | SyncMode::DiffTouched => {
                let empty = PeerConfigs::new();
                let applied = runtime.held.applied.as_deref().unwrap_or(&empty);
                let desired =
                    |key: &PublicKey| decision.desired.peers.get(key).map(|peer| &peer.config);
                let diff = match (plan.sync, touched) {
                    (SyncMode::DiffTouched, Some(keys)) => diff_keys(desired, applied, keys),
                    _ => diff_peers(decision.desired.configs_iter(), applied),
                };
                if diff.is_empty() {
                    Ok((Synced::Unchanged, None))
                } else {
                    let interface = runtime.interface.clone();
                    tracing::debug!(
                        interface = interface.name(),
                        add = diff.add.len(),
                        update = diff.update.len(),
                        remove = diff.remove.len(),
                        "applying peer changes"
                    );
                    let diff = Arc::new(diff);
                    let update = Arc::clone(&diff);
                    match self
                        .worker
                        .run(move || interface.apply(None, &update))
                        .await
                    {
                        Ok(Ok(())) => Ok((Synced::Sent(diff), Some(0))),
                        Ok(Err(error)) => Err(error.to_string()),
                        Err(gone) => Err(gone.to_string()),
                    }
                }
            }
        };
        let kind = if plan.resync {
            ApplyKind::Resync
        } else {
            ApplyKind::Incremental
        };
        let labels = ApplyLabels {
            interface: runtime.interface.name().to_owned(),
            kind,
        };
        match outcome {
            Ok((synced, applied)) => {
                if let Some(drift) = applied {
                    self.metrics.applies.get_or_create(&labels).inc();
                    self.metrics
                        .apply_duration
                        .get_or_create(&labels)
                        .observe(started.elapsed().as_secs_f64());
                    if drift > 0 {
                        tracing::info!(
                            interface = runtime.interface.name(),
                            drift,
                            "corrected drift"
                        );
                        self.metrics
                            .drift_corrections
                            .get_or_create(&interface_labels)
                            .inc_by(drift as u64);
                    }
                }
                self.metrics
                    .peers
                    .get_or_create(&interface_labels)
                    .set(desired_count as i64);
                runtime.held.synced(synced, public, port, self.clock.now());
            }
            Err(message) => return apply_failed(&self.metrics, runtime, message),
        }
        if let Some((planned, job)) = nat_job {
            let result = match job {
                Ok(reply) => reply.await.map_err(|_| crate::interface::WorkerGone),
                Err(gone) => Err(gone),
            };
            let written = match result {
                Ok(Ok(())) => NatWrite::Done,
                Ok(Err(error)) => {
                    tracing::warn!(interface = runtime.interface.name(), %error, "NAT rules failed");
                    NatWrite::Failed(error.to_string())
                }
                Err(gone) => NatWrite::WorkerGone(gone.to_string()),
            };
            runtime.held.nat_written(planned, written);
        }
        self.queue_applied_status(&name, judge.as_ref());
    }

    /// The status and `metadata.generation` of the `WgPeer` `peer_name` as the index holds
    /// them; `None` once it is gone.
    fn indexed_status(&self, peer_name: &str) -> Option<(Option<WgPeerStatus>, Option<i64>)> {
        self.index.read(|index| {
            index
                .peer(peer_name)
                .map(|peer| (peer.status.clone(), peer.generation))
        })
    }

    /// Queues, right after a sync pass applied them, the status writes that matter of the
    /// peers it judged (`None`: every peer of the server) — a first `Ready`, a cut at expiry or
    /// a disable — instead of leaving them to the next status batch. Whether a peer is on the
    /// interface is what the pass applied; counters wait for the batch.
    fn queue_applied_status(&mut self, server_name: &str, judge: Option<&BTreeSet<String>>) {
        let Some(runtime) = self.servers.get(server_name) else {
            return;
        };
        let (Some(decision), Some(applied)) = (&runtime.decision, &runtime.held.applied) else {
            return;
        };
        let states = &decision.desired.states;
        let judged: Vec<(&String, &PeerState)> = match judge {
            Some(names) => names
                .iter()
                .filter_map(|name| states.get_key_value(name))
                .collect(),
            None => states.iter().collect(),
        };
        let now = self.clock.now();
        for (peer_name, state) in judged {
            let on_interface = matches!(state, PeerState::Live(key) if applied.contains_key(key));
            let Some((current, generation)) = self.indexed_status(peer_name) else {
                continue;
            };
            let (last, counters_at) = self.written.last_peer(peer_name, current.as_ref());
            let ready = peer_ready(
                state,
                on_interface,
                runtime.interface.name(),
                generation,
                now,
            );
            let new = applied_peer_status(last, ready, on_interface, generation);
            if applied_write_due(&new, last) {
                self.status.push(
                    Target::Peer(peer_name.clone()),
                    StatusWrite::Peer(new.clone()),
                    Priority::Urgent,
                );
                self.written
                    .peers
                    .insert(peer_name.clone(), (new, counters_at));
            }
        }
    }

    /// One start pass over a server while the `WgPeer` list arrives: collects the applies
    /// already done, readies the interface when what is on it is unknown (or the key or port
    /// changed), then queues the additions [`EarlyAdditions`] allows among the peers listed
    /// since the last pass. Keeps no decision: the first full pass decides in bulk.
    async fn start_pass(
        &mut self,
        name: &str,
        checked: &Checked,
        public: PublicKey,
        link: LinkSpec,
        now: Timestamp,
        dirty: &Dirty,
    ) {
        let Some(runtime) = self.servers.get_mut(name) else {
            return;
        };
        // A failed one leaves nothing applied: this pass reads the interface again.
        collect_queued(&self.metrics, runtime, false).await;
        runtime.decision = None;
        runtime.held.decided_at = None;
        let plan = start_plan(&runtime.held, public, checked.port, dirty.all);
        if plan.prepare {
            let interface = runtime.interface.clone();
            let key = checked.key.clone();
            let port = checked.port;
            let prepared = match self
                .worker
                .run(move || prepare(&interface, &key, port, &link))
                .await
            {
                Ok(result) => result.map_err(|error| error.to_string()),
                Err(gone) => Err(gone.to_string()),
            };
            match prepared {
                Ok((on_interface, created)) => {
                    if created {
                        tracing::info!(
                            interface = runtime.interface.name(),
                            "created the interface"
                        );
                    }
                    runtime.held.prepared(on_interface, public, checked.port);
                }
                Err(message) => return apply_failed(&self.metrics, runtime, message),
            }
        }
        // A fresh read of the interface (or a changed server) starts the view over, from every
        // peer listed so far.
        let from_scratch = plan.from_scratch;
        if from_scratch {
            runtime.early = None;
        }
        let inputs: Vec<PeerInput> = self.index.read(|index| {
            if from_scratch {
                index.peer_inputs(name)
            } else {
                dirty
                    .peers
                    .iter()
                    .filter_map(|peer| index.peer_input(name, peer))
                    .collect()
            }
        });
        let Some(applied) = runtime.held.applied.as_mut().map(Arc::make_mut) else {
            return;
        };
        let early = runtime
            .early
            .get_or_insert_with(|| EarlyAdditions::new(applied));
        let listed = inputs.into_iter().filter_map(|input| {
            let (key, config) = live_candidate(&input, &checked.pools, now)?;
            Some((input.name, key, config))
        });
        let diff = early.next(listed, applied);
        if !diff.is_empty() {
            let interface = runtime.interface.clone();
            tracing::debug!(
                interface = interface.name(),
                add = diff.add.len(),
                "adding peers while the list arrives"
            );
            let diff = Arc::new(diff);
            let update = Arc::clone(&diff);
            let queued = self.worker.submit(move || {
                let started = Instant::now();
                (interface.apply(None, &update), started.elapsed())
            });
            match queued {
                Ok(reply) => runtime.queued.push(reply),
                Err(gone) => return apply_failed(&self.metrics, runtime, gone.to_string()),
            }
            diff.apply_to(applied);
        }
        self.metrics
            .peers
            .get_or_create(&Metrics::interface(runtime.interface.name()))
            .set(applied.len() as i64);
        runtime.held.started(self.clock.now());
    }

    /// Reads each interface's statistics and queues the status writes that are due.
    pub async fn queue_status(&mut self) {
        let now = self.clock.now();
        let interval = self.settings.counters_interval;
        let peers = self.servers.values().filter_map(|r| r.decision.as_ref());
        let routine = routine_interval(interval, peers.map(|d| d.desired.states.len()).sum());
        self.routine_budget.refill(now);
        for (server_name, runtime) in &self.servers {
            let interface = runtime.interface.clone();
            let snapshot: InterfaceSnapshot = match self
                .worker
                .run(move || interface.observe())
                .await
            {
                Ok(Ok(Some((snapshot, _link)))) => snapshot,
                Ok(Ok(None)) => InterfaceSnapshot::default(),
                Ok(Err(error)) => {
                    tracing::warn!(interface = runtime.interface.name(), %error, "reading statistics failed");
                    InterfaceSnapshot::default()
                }
                Err(_) => return,
            };
            self.record_handshakes(runtime.interface.name(), &snapshot, now);
            let mut active = 0usize;
            let states = runtime.decision.as_ref().map(|d| &d.desired.states);
            for (peer_name, state) in states.into_iter().flatten() {
                let stats = match state {
                    PeerState::Live(key) => snapshot.peers.get(key).map(|p| p.stats),
                    _ => None,
                };
                active += usize::from(stats.is_some());
                let Some((current, generation)) = self.indexed_status(peer_name) else {
                    continue;
                };
                let ready = peer_ready(
                    state,
                    stats.is_some(),
                    runtime.interface.name(),
                    generation,
                    now,
                );
                let new = peer_status(current.as_ref(), ready, stats.as_ref(), generation);
                let (last, counters_at) = self.written.last_peer(peer_name, current.as_ref());
                let write = match peer_write_due(&new, last, counters_at, now, routine) {
                    Some(Due::Now) => Some(Priority::Urgent),
                    Some(Due::Routine) => self.routine_budget.take().then_some(Priority::Routine),
                    None => None,
                };
                if let Some(priority) = write {
                    let counters_changed = last.is_none_or(|last| {
                        last.rx_bytes != new.rx_bytes
                            || last.tx_bytes != new.tx_bytes
                            || last.last_handshake != new.last_handshake
                    });
                    let at = if counters_changed {
                        Some(now)
                    } else {
                        counters_at
                    };
                    self.status.push(
                        Target::Peer(peer_name.clone()),
                        StatusWrite::Peer(new.clone()),
                        priority,
                    );
                    self.written.peers.insert(peer_name.clone(), (new, at));
                }
            }
            let current = self
                .index
                .read(|index| index.server(server_name).and_then(|s| s.status.clone()));
            let problem = runtime
                .held
                .problem
                .as_ref()
                .map(|(why, message)| (*why, message.clone()));
            let ready = server_ready(
                problem,
                active,
                runtime.interface.name(),
                runtime.held.generation,
                now,
            );
            let new = server_status(
                current.as_ref(),
                runtime.held.public_key.map(|k| k.to_base64()),
                runtime.held.problem.is_none().then_some(active),
                runtime.held.last_sync,
                ready,
                runtime.held.generation,
            );
            let (last, at) = match self.written.servers.get(server_name) {
                Some((written, at)) => (Some(written), Some(*at)),
                None => (current.as_ref(), None),
            };
            if server_write_due(&new, last, at, now, interval) {
                self.status.push(
                    Target::Server(server_name.clone()),
                    StatusWrite::Server(new.clone()),
                    Priority::Urgent,
                );
                self.written.servers.insert(server_name.clone(), (new, now));
            }
        }
        let peers_known: Vec<String> = self.written.peers.keys().cloned().collect();
        for name in peers_known {
            if self.index.read(|index| index.peer(&name).is_none()) {
                self.written.peers.remove(&name);
            }
        }
    }

    fn record_handshakes(&self, interface: &str, snapshot: &InterfaceSnapshot, now: Timestamp) {
        let ages: Vec<f64> = snapshot
            .peers
            .values()
            .filter_map(|peer| peer.stats.last_handshake)
            .map(|at| now.duration_since(at).as_secs_f64().max(0.0))
            .collect();
        let labels = Metrics::interface(interface);
        self.metrics
            .max_handshake_age
            .get_or_create(&labels)
            .set(ages.iter().copied().fold(0.0, f64::max));
        self.metrics
            .recent_handshakes
            .get_or_create(&labels)
            .set(ages.iter().filter(|age| **age < 180.0).count() as i64);
    }
}
