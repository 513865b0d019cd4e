//! One pass of the agent over a served server, decided purely: from what the agent holds of the
//! server's interface between passes ([`Held`]) and what the pass found (its kind, the server's
//! checked settings, what changed in the index) to the steps the shell takes — make, replace or
//! re-parameterize the interface ([`interface_step`]), refuse a server it cannot serve
//! ([`check_settings`]), look at the firewall and rewrite the NAT rules ([`firewall_needed`],
//! [`nat_due`]), ready the interface while the `WgPeer` list arrives ([`start_plan`]), decide
//! every peer again or only the changed ones ([`rebuild_decision`]) and read the interface to
//! converge it or send only a diff ([`sync_plan`]) — and, from the results the shell feeds back,
//! what the agent holds next ([`Held`]'s methods).
//!
//! No I/O and no clock: `now` comes from the agent's injected clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use wgsub_crds::keys::{PrivateKey, PublicKey};

use crate::desired::Pools;
use crate::diff::PeerDiff;
use crate::interface::Driver;
use crate::nat::NatPlan;
use crate::snapshot::PeerConfig;
use crate::status::reason;

/// Peer configurations by public key.
pub type PeerConfigs = BTreeMap<PublicKey, PeerConfig>;

/// Why a server is not served as it should be: the reason and message of its `Ready` condition.
pub type Problem = (&'static str, String);

/// Which kind of pass over a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// During the initial `WgPeer` list: only additions that are safe on a partial view.
    Start,
    /// After an event or timer: the diff against what the agent last applied.
    Incremental,
    /// Healing: the diff against the interface as read.
    Full,
}

/// A server's NAT rules as the agent last left them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NatRules {
    /// Not known: never written, or the last write failed.
    #[default]
    Unknown,
    /// The server wants no NAT and its rules were removed.
    Removed,
    /// These rules are in place.
    Applied(NatPlan),
}

impl NatRules {
    /// The rules in place once `wanted` was written.
    fn written(wanted: Option<NatPlan>) -> Self {
        match wanted {
            Some(plan) => NatRules::Applied(plan),
            None => NatRules::Removed,
        }
    }

    fn are(&self, wanted: Option<&NatPlan>) -> bool {
        match (self, wanted) {
            (NatRules::Removed, None) => true,
            (NatRules::Applied(held), Some(wanted)) => held == wanted,
            _ => false,
        }
    }
}

/// What the agent holds of one server's interface between passes.
#[derive(Debug, Default)]
pub struct Held {
    /// What the agent last applied; `None` when unknown (start, after an error). Shared with
    /// the worker during a full comparison instead of copied.
    pub applied: Option<Arc<PeerConfigs>>,
    /// Set by a [`Pass::Start`]: `applied` is the interface as read when the list began plus
    /// everything applied since, and the decision is up to date but for the dirty peers, so
    /// the first full pass after the list compares with `applied` instead of reading the
    /// interface again (a hand change in those seconds waits for the next periodic pass).
    pub warm: bool,
    /// The key and port the interface was last given.
    pub public_key: Option<PublicKey>,
    pub listen_port: u16,
    pub nat: NatRules,
    pub problem: Option<Problem>,
    pub last_sync: Option<Timestamp>,
    pub generation: Option<i64>,
    /// The `now` the peer decision was last brought up to date at (its expiries up to then are
    /// applied); `None` while there is none or a pass stopped before updating it (a server
    /// problem), so the next pass decides again.
    pub decided_at: Option<Timestamp>,
}

impl Held {
    /// An update of the interface failed: what is on it is unknown until it is read again.
    pub fn apply_failed(&mut self, message: String) {
        self.applied = None;
        self.warm = false;
        self.problem = Some((reason::INTERFACE_ERROR, message));
    }

    /// The pass stopped at a problem of the server before its peers reached the decision.
    pub fn server_problem(&mut self, problem: Problem) {
        self.problem = Some(problem);
        self.decided_at = None;
    }

    /// The interface takes other AmneziaWG parameters: the next pass reads it and sends them
    /// with the key and port.
    pub fn new_parameters(&mut self) {
        self.applied = None;
        self.warm = false;
    }

    /// A start pass readied the interface (read or created it, set key, port and link).
    pub fn prepared(&mut self, on_interface: PeerConfigs, public_key: PublicKey, port: u16) {
        self.applied = Some(Arc::new(on_interface));
        self.public_key = Some(public_key);
        self.listen_port = port;
    }

    /// A start pass queued its additions.
    pub fn started(&mut self, now: Timestamp) {
        self.problem = None;
        self.last_sync = Some(now);
        self.warm = true;
    }

    /// A pass brought the interface to the decision.
    pub fn synced(&mut self, result: Synced, public_key: PublicKey, port: u16, now: Timestamp) {
        match (result, self.applied.as_mut()) {
            (Synced::Converged(configs), _) => self.applied = Some(configs),
            (Synced::Sent(diff), Some(applied)) => diff.apply_to(Arc::make_mut(applied)),
            _ => {}
        }
        self.public_key = Some(public_key);
        self.listen_port = port;
        self.problem = None;
        self.last_sync = Some(now);
    }

    /// The firewall thread answered the NAT rules written for `planned` (the plan, or why
    /// there is none).
    pub fn nat_written(&mut self, planned: Result<Option<NatPlan>, String>, result: NatWrite) {
        match (result, planned) {
            (NatWrite::Done, Ok(wanted)) => self.nat = NatRules::written(wanted),
            (NatWrite::Done, Err(_)) => self.nat = NatRules::Unknown,
            (NatWrite::Failed(error), _) => {
                self.nat = NatRules::Unknown;
                self.problem = Some((reason::INTERFACE_ERROR, format!("NAT: {error}")));
            }
            (NatWrite::WorkerGone(message), _) => {
                self.problem = Some((reason::INTERFACE_ERROR, message));
            }
        }
    }
}

/// What a pass that brought the interface to the decision applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// The interface was read and made to hold exactly these peers.
    Converged(Arc<PeerConfigs>),
    /// This diff was sent on top of what was applied.
    Sent(Arc<PeerDiff>),
    /// Nothing was to change.
    Unchanged,
}

/// How writing the NAT rules ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatWrite {
    Done,
    /// The rules could not be written (or planned); they are unknown now.
    Failed(String),
    /// The firewall thread is gone; the rules are as they were.
    WorkerGone(String),
}

/// What happens to a server's interface before its peers are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceStep {
    /// The server is new to the agent: its interface is made (or adopted) with the driver.
    Create,
    /// Another name or another protocol is another interface: the old one is removed and the
    /// new one made.
    Replace,
    /// New AmneziaWG parameters (or the first ones): the interface takes them
    /// ([`Held::new_parameters`]); peers handshake again.
    NewParameters,
    Keep,
}

/// The step for a server served by `current` (its interface's name and driver; `None` when the
/// agent has none yet) that wants an interface `name` driven by `driver`. `usable`: the driver
/// is the one the server asks for — not the stand-in for an AmneziaWG server this node cannot
/// serve, whose interface is kept as it is.
pub fn interface_step(
    current: Option<(&str, &Driver)>,
    name: &str,
    driver: &Driver,
    usable: bool,
) -> InterfaceStep {
    match current {
        None => InterfaceStep::Create,
        Some((have, on)) if have != name || !on.same_protocol(driver) => InterfaceStep::Replace,
        Some((_, on)) if usable && on != driver => InterfaceStep::NewParameters,
        Some(_) => InterfaceStep::Keep,
    }
}

/// A server's settings as a pass checked them.
#[derive(Debug, Clone)]
pub struct Checked {
    pub key: PrivateKey,
    pub pools: Pools,
    pub port: u16,
}

/// The server's settings, or the first problem that keeps it from being served: no driver for
/// it on this node, then its key, then its pools, then its port.
pub fn check_settings(
    driver: Result<(), Problem>,
    key: Result<PrivateKey, Problem>,
    pools: Result<Pools, String>,
    listen_port: i32,
) -> Result<Checked, Problem> {
    driver?;
    let key = key?;
    let pools = pools.map_err(|error| (reason::INVALID_POOL, error))?;
    let port = u16::try_from(listen_port)
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| {
            (
                reason::INVALID_POOL,
                format!("listenPort {listen_port} is not a port"),
            )
        })?;
    Ok(Checked { key, pools, port })
}

/// Whether the pass looks at the firewall: never while the `WgPeer` list arrives (start passes
/// only add peers), on an incremental pass when NAT is wanted or its rules have to go, always
/// on a full pass.
pub fn firewall_needed(pass: Pass, nat_wanted: bool, held: &NatRules) -> bool {
    match pass {
        Pass::Start => false,
        Pass::Incremental => nat_wanted || matches!(held, NatRules::Applied(_)),
        Pass::Full => true,
    }
}

/// Whether the NAT rules are written this pass: when they differ from the rules in place, on
/// every full pass while NAT is on (healing rules removed by hand), and every pass while they
/// cannot be planned (so the problem is reported each time).
pub fn nat_due(planned: &Result<Option<NatPlan>, String>, held: &NatRules, pass: Pass) -> bool {
    match planned {
        Ok(wanted) => !held.are(wanted.as_ref()) || (pass == Pass::Full && wanted.is_some()),
        Err(_) => true,
    }
}

/// What a start pass does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartPlan {
    /// Read the interface (create it if missing) and give it key, port, parameters and link:
    /// what is on it is unknown, or its key or port changed.
    pub prepare: bool,
    /// Judge every peer listed so far instead of the ones listed since the last start pass: the
    /// interface was read afresh or something changed for every peer.
    pub from_scratch: bool,
}

pub fn start_plan(held: &Held, public_key: PublicKey, port: u16, all_dirty: bool) -> StartPlan {
    let prepare =
        held.applied.is_none() || held.public_key != Some(public_key) || held.listen_port != port;
    StartPlan {
        prepare,
        from_scratch: prepare || all_dirty,
    }
}

/// Whether an incremental or full pass decides every peer again instead of updating the kept
/// decision with the dirty peers: on a full pass, when the decision is not up to date (none
/// yet, or a pass stopped before updating it), when every peer is dirty, or when the server's
/// pools changed. `pools_unchanged`: the kept decision was made for this pass's pools.
pub fn rebuild_decision(pass: Pass, held: &Held, all_dirty: bool, pools_unchanged: bool) -> bool {
    pass == Pass::Full || held.decided_at.is_none() || all_dirty || !pools_unchanged
}

/// How a pass brings the interface to the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Read the interface and make it hold key, port, link and exactly the desired peers,
    /// creating it if it is gone; counts the drift from what was believed applied.
    Converge,
    /// Send the diff of every desired peer against what was applied.
    DiffAll,
    /// Send the diff of the peers the decision update touched against what was applied.
    DiffTouched,
}

/// What a pass does to the interface, and how the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPlan {
    pub sync: SyncMode,
    /// Counted as a resync (a full pass, or what was applied had to be read again).
    pub resync: bool,
}

/// The sync of an incremental or full pass, once the start passes' applies are collected.
/// `was_warm`: a start pass left the state before this pass ([`Held::warm`]); `rebuilt`: the
/// decision was made again (so no touched keys are known). What is on the interface is read
/// when a full pass asks for it, when what was applied is unknown, or when the key or port
/// changed — except on the first full pass after the start passes, which compares with what
/// they applied (the interface as read when the list began).
pub fn sync_plan(
    pass: Pass,
    held: &Held,
    was_warm: bool,
    all_dirty: bool,
    rebuilt: bool,
    public_key: PublicKey,
    port: u16,
) -> SyncPlan {
    let key_changed = held.public_key != Some(public_key) || held.listen_port != port;
    let prepare_needed = held.applied.is_none() || key_changed;
    let compare_applied = pass == Pass::Full && was_warm && !prepare_needed && !all_dirty;
    let resync = pass == Pass::Full || prepare_needed;
    let sync = if resync && !compare_applied {
        SyncMode::Converge
    } else if rebuilt || compare_applied {
        SyncMode::DiffAll
    } else {
        SyncMode::DiffTouched
    };
    SyncPlan { sync, resync }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::amneziawg::{AwgParams, Userspace};
    use crate::desired::fixtures::{NOW, pools_v4 as pools, t};
    use crate::interface::Backend;

    fn awg(jc: u32) -> Driver {
        Driver::AmneziaWg {
            userspace: Userspace {
                binary: PathBuf::from("/usr/bin/amneziawg-go"),
            },
            params: Box::new(AwgParams {
                jc,
                ..AwgParams::default()
            }),
        }
    }

    fn wireguard() -> Driver {
        Driver::WireGuard(Backend::Userspace)
    }

    fn nat(interface: &str) -> NatPlan {
        NatPlan {
            interface: interface.into(),
            pool4: pools().v4,
            pool6: None,
            egress: String::new(),
            client_to_client: false,
            blocked: Vec::new(),
            dns: false,
        }
    }

    /// What the agent holds after a pass that converged an empty interface with `public` on
    /// `port`.
    fn synced_with(public: PublicKey, port: u16) -> Held {
        let mut held = Held::default();
        held.synced(
            Synced::Converged(Arc::new(PeerConfigs::new())),
            public,
            port,
            t(NOW),
        );
        held.decided_at = Some(t(NOW));
        held
    }

    fn config(address: &str) -> PeerConfig {
        PeerConfig::new([address.parse().unwrap()], None)
    }

    #[test]
    fn a_new_server_gets_an_interface() {
        assert_eq!(
            interface_step(None, "wg0", &wireguard(), true),
            InterfaceStep::Create
        );
        // Even one this node cannot serve: the runtime carries its problem.
        assert_eq!(
            interface_step(None, "awg0", &Driver::AmneziaWgUnavailable, false),
            InterfaceStep::Create
        );
    }

    #[test]
    fn another_name_or_protocol_replaces_the_interface() {
        let driver = wireguard();
        assert_eq!(
            interface_step(Some(("wg0", &driver)), "wg1", &driver, true),
            InterfaceStep::Replace
        );
        assert_eq!(
            interface_step(Some(("wg0", &driver)), "wg0", &awg(4), true),
            InterfaceStep::Replace
        );
        assert_eq!(
            interface_step(Some(("wg0", &awg(4))), "wg0", &driver, true),
            InterfaceStep::Replace
        );
    }

    #[test]
    fn new_amneziawg_parameters_are_taken_by_the_same_interface() {
        assert_eq!(
            interface_step(Some(("awg0", &awg(4))), "awg0", &awg(5), true),
            InterfaceStep::NewParameters
        );
        // The first parameters of a server that had none chosen yet.
        assert_eq!(
            interface_step(
                Some(("awg0", &Driver::AmneziaWgUnavailable)),
                "awg0",
                &awg(4),
                true
            ),
            InterfaceStep::NewParameters
        );
    }

    #[test]
    fn an_interface_the_node_can_no_longer_drive_is_kept_as_it_is() {
        assert_eq!(
            interface_step(
                Some(("awg0", &awg(4))),
                "awg0",
                &Driver::AmneziaWgUnavailable,
                false
            ),
            InterfaceStep::Keep
        );
        assert_eq!(
            interface_step(Some(("awg0", &awg(4))), "awg0", &awg(4), true),
            InterfaceStep::Keep
        );
    }

    #[test]
    fn the_first_problem_of_a_server_is_named_in_order_driver_key_pools_port() {
        let key = || Ok(PrivateKey::generate());
        let no_driver = || Err((reason::AMNEZIAWG_UNAVAILABLE, "none".to_string()));
        let bad_key = || Err((reason::INVALID_KEY, "no key".to_string()));
        let bad_pools = || Err("not a pool".to_string());
        let problem = |r: Result<Checked, Problem>| r.err().map(|(why, _)| why);
        assert_eq!(
            problem(check_settings(no_driver(), bad_key(), bad_pools(), 0)),
            Some(reason::AMNEZIAWG_UNAVAILABLE)
        );
        assert_eq!(
            problem(check_settings(Ok(()), bad_key(), bad_pools(), 0)),
            Some(reason::INVALID_KEY)
        );
        assert_eq!(
            check_settings(Ok(()), key(), bad_pools(), 0).err(),
            Some((reason::INVALID_POOL, "not a pool".to_string()))
        );
        for port in [0, -1, 65_536] {
            assert_eq!(
                check_settings(Ok(()), key(), Ok(pools()), port).err(),
                Some((
                    reason::INVALID_POOL,
                    format!("listenPort {port} is not a port")
                ))
            );
        }
        let checked = check_settings(Ok(()), key(), Ok(pools()), 51820).unwrap();
        assert_eq!((checked.pools, checked.port), (pools(), 51820));
    }

    #[test]
    fn the_firewall_is_looked_at_when_nat_is_wanted_held_or_healed_never_at_start() {
        let held_on = NatRules::Applied(nat("wg0"));
        for held in [NatRules::Unknown, NatRules::Removed, held_on.clone()] {
            for wanted in [false, true] {
                assert!(!firewall_needed(Pass::Start, wanted, &held));
                assert!(firewall_needed(Pass::Full, wanted, &held));
                assert_eq!(
                    firewall_needed(Pass::Incremental, wanted, &held),
                    wanted || held == held_on,
                    "{held:?} wanted {wanted}"
                );
            }
        }
    }

    #[test]
    fn nat_rules_are_written_when_they_differ_from_the_rules_in_place() {
        let on = Ok(Some(nat("wg0")));
        let off = Ok(None);
        for pass in [Pass::Incremental, Pass::Full] {
            assert!(nat_due(&on, &NatRules::Unknown, pass));
            assert!(nat_due(&on, &NatRules::Removed, pass));
            assert!(nat_due(&on, &NatRules::Applied(nat("wg1")), pass));
            assert!(nat_due(&off, &NatRules::Unknown, pass));
            assert!(nat_due(&off, &NatRules::Applied(nat("wg0")), pass));
            assert!(!nat_due(&off, &NatRules::Removed, pass));
        }
        assert!(!nat_due(
            &on,
            &NatRules::Applied(nat("wg0")),
            Pass::Incremental
        ));
    }

    #[test]
    fn a_full_pass_writes_nat_rules_again_while_nat_is_on() {
        assert!(nat_due(
            &Ok(Some(nat("wg0"))),
            &NatRules::Applied(nat("wg0")),
            Pass::Full
        ));
    }

    #[test]
    fn nat_that_cannot_be_planned_is_tried_and_reported_every_pass() {
        let broken = Err("blockedDestinations: x is not a CIDR".to_string());
        for held in [
            NatRules::Unknown,
            NatRules::Removed,
            NatRules::Applied(nat("wg0")),
        ] {
            assert!(nat_due(&broken, &held, Pass::Incremental));
        }
    }

    #[test]
    fn written_nat_rules_are_held_and_failed_ones_are_unknown() {
        let mut held = Held::default();
        held.nat_written(Ok(Some(nat("wg0"))), NatWrite::Done);
        assert_eq!(held.nat, NatRules::Applied(nat("wg0")));
        held.nat_written(Ok(None), NatWrite::Done);
        assert_eq!(held.nat, NatRules::Removed);
        held.nat_written(Ok(Some(nat("wg0"))), NatWrite::Failed("iptables: 1".into()));
        assert_eq!(held.nat, NatRules::Unknown);
        assert_eq!(
            held.problem,
            Some((reason::INTERFACE_ERROR, "NAT: iptables: 1".into()))
        );
        // A plan that could not be made is never in place.
        held.nat_written(Ok(None), NatWrite::Done);
        held.nat_written(Err("x is not a CIDR".into()), NatWrite::Done);
        assert_eq!(held.nat, NatRules::Unknown);
    }

    #[test]
    fn a_gone_firewall_thread_is_reported_and_leaves_the_rules_as_they_were() {
        let mut held = Held::default();
        held.nat_written(Ok(Some(nat("wg0"))), NatWrite::Done);
        held.nat_written(Ok(None), NatWrite::WorkerGone("the worker is gone".into()));
        assert_eq!(held.nat, NatRules::Applied(nat("wg0")));
        assert_eq!(
            held.problem,
            Some((reason::INTERFACE_ERROR, "the worker is gone".into()))
        );
    }

    #[test]
    fn a_start_pass_readies_the_interface_when_what_is_on_it_is_unknown_or_key_or_port_changed() {
        let public = PrivateKey::generate().public_key();
        let other = PrivateKey::generate().public_key();
        let plan = |held: &Held, public, port, all| start_plan(held, public, port, all);
        let fresh = Held::default();
        assert_eq!(
            plan(&fresh, public, 51820, false),
            StartPlan {
                prepare: true,
                from_scratch: true
            }
        );
        let held = synced_with(public, 51820);
        assert_eq!(
            plan(&held, public, 51820, false),
            StartPlan {
                prepare: false,
                from_scratch: false
            }
        );
        assert!(plan(&held, other, 51820, false).prepare);
        assert!(plan(&held, public, 51821, false).prepare);
        assert_eq!(
            plan(&held, public, 51820, true),
            StartPlan {
                prepare: false,
                from_scratch: true
            }
        );
    }

    #[test]
    fn the_decision_is_made_again_on_full_passes_problems_changed_servers_and_pools() {
        let held = synced_with(PrivateKey::generate().public_key(), 51820);
        assert!(!rebuild_decision(Pass::Incremental, &held, false, true));
        assert!(rebuild_decision(Pass::Full, &held, false, true));
        assert!(rebuild_decision(Pass::Incremental, &held, true, true));
        assert!(rebuild_decision(Pass::Incremental, &held, false, false));
        let mut stopped = synced_with(PrivateKey::generate().public_key(), 51820);
        stopped.server_problem((reason::INVALID_POOL, "bad".into()));
        assert!(rebuild_decision(Pass::Incremental, &stopped, false, true));
        assert!(rebuild_decision(
            Pass::Incremental,
            &Held::default(),
            false,
            true
        ));
    }

    #[test]
    fn an_incremental_pass_sends_only_the_touched_peers() {
        let public = PrivateKey::generate().public_key();
        let held = synced_with(public, 51820);
        let plan = sync_plan(Pass::Incremental, &held, false, false, false, public, 51820);
        assert_eq!(
            plan,
            SyncPlan {
                sync: SyncMode::DiffTouched,
                resync: false
            }
        );
        // A rebuilt decision knows no touched keys: every desired peer is compared.
        let plan = sync_plan(Pass::Incremental, &held, false, false, true, public, 51820);
        assert_eq!(
            plan,
            SyncPlan {
                sync: SyncMode::DiffAll,
                resync: false
            }
        );
    }

    #[test]
    fn a_full_pass_reads_the_interface_and_converges_it() {
        let public = PrivateKey::generate().public_key();
        let held = synced_with(public, 51820);
        for rebuilt in [false, true] {
            assert_eq!(
                sync_plan(Pass::Full, &held, false, false, rebuilt, public, 51820),
                SyncPlan {
                    sync: SyncMode::Converge,
                    resync: true
                }
            );
        }
    }

    #[test]
    fn unknown_applied_peers_or_a_new_key_or_port_make_any_pass_converge() {
        let public = PrivateKey::generate().public_key();
        let other = PrivateKey::generate().public_key();
        let converge = SyncPlan {
            sync: SyncMode::Converge,
            resync: true,
        };
        let mut failed = synced_with(public, 51820);
        failed.apply_failed("wireguard-go is gone".into());
        for warm in [false, true] {
            for pass in [Pass::Incremental, Pass::Full] {
                let plan = |held: &Held, public, port| {
                    sync_plan(pass, held, warm, false, false, public, port)
                };
                assert_eq!(plan(&failed, public, 51820), converge);
                assert_eq!(plan(&Held::default(), public, 51820), converge);
                let held = synced_with(public, 51820);
                assert_eq!(plan(&held, other, 51820), converge);
                assert_eq!(plan(&held, public, 51821), converge);
            }
        }
    }

    #[test]
    fn the_first_full_pass_after_start_passes_compares_with_what_they_applied() {
        let public = PrivateKey::generate().public_key();
        let mut held = Held::default();
        held.prepared(PeerConfigs::new(), public, 51820);
        held.started(t(NOW));
        assert!(held.warm);
        assert_eq!(
            sync_plan(Pass::Full, &held, true, false, true, public, 51820),
            SyncPlan {
                sync: SyncMode::DiffAll,
                resync: true
            }
        );
        // Unless everything changed meanwhile: then the interface is read again.
        assert_eq!(
            sync_plan(Pass::Full, &held, true, true, true, public, 51820).sync,
            SyncMode::Converge
        );
    }

    /// Every combination: the interface is read exactly when it has to be, and the touched
    /// keys are used only when the decision was updated, not rebuilt.
    #[test]
    fn every_combination_reads_the_interface_exactly_when_needed() {
        let public = PrivateKey::generate().public_key();
        let other = PrivateKey::generate().public_key();
        for pass in [Pass::Incremental, Pass::Full] {
            for known in [false, true] {
                for same_key in [false, true] {
                    for warm in [false, true] {
                        for all_dirty in [false, true] {
                            for rebuilt in [false, true] {
                                let mut held = synced_with(public, 51820);
                                if !known {
                                    held.apply_failed("x".into());
                                }
                                let key = if same_key { public } else { other };
                                let plan =
                                    sync_plan(pass, &held, warm, all_dirty, rebuilt, key, 51820);
                                let unknown = !known || !same_key;
                                let first_after_start =
                                    pass == Pass::Full && warm && !unknown && !all_dirty;
                                let reads = unknown || (pass == Pass::Full && !first_after_start);
                                let case = format!(
                                    "{pass:?} known {known} same key {same_key} warm {warm} \
                                     all dirty {all_dirty} rebuilt {rebuilt}"
                                );
                                assert_eq!(plan.sync == SyncMode::Converge, reads, "{case}");
                                assert_eq!(plan.resync, pass == Pass::Full || unknown, "{case}");
                                if plan.sync == SyncMode::DiffTouched {
                                    assert!(!rebuilt && !first_after_start, "{case}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_failed_update_forgets_what_was_applied_and_the_start_passes_warmth() {
        let public = PrivateKey::generate().public_key();
        let mut held = Held::default();
        held.prepared(PeerConfigs::new(), public, 51820);
        held.started(t(NOW));
        held.apply_failed("set=1 failed".into());
        assert!(held.applied.is_none());
        assert!(!held.warm);
        assert_eq!(
            held.problem,
            Some((reason::INTERFACE_ERROR, "set=1 failed".into()))
        );
    }

    #[test]
    fn new_parameters_make_the_next_pass_read_the_interface() {
        let public = PrivateKey::generate().public_key();
        let mut held = synced_with(public, 51820);
        held.warm = true;
        held.new_parameters();
        assert!(held.applied.is_none() && !held.warm);
        assert!(held.problem.is_none());
        assert_eq!(
            sync_plan(Pass::Incremental, &held, false, false, false, public, 51820).sync,
            SyncMode::Converge
        );
    }

    #[test]
    fn a_synced_pass_holds_what_it_applied_and_clears_the_problem() {
        let public = PrivateKey::generate().public_key();
        let (a, b) = (
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
        );
        let mut held = Held::default();
        held.apply_failed("earlier".into());
        let converged: PeerConfigs = [(a, config("10.8.0.2/32"))].into();
        held.synced(
            Synced::Converged(Arc::new(converged.clone())),
            public,
            51820,
            t(NOW),
        );
        assert_eq!(held.applied.as_deref(), Some(&converged));
        assert_eq!((held.public_key, held.listen_port), (Some(public), 51820));
        assert_eq!((held.problem.clone(), held.last_sync), (None, Some(t(NOW))));

        let diff = PeerDiff {
            add: [(b, config("10.8.0.3/32"))].into(),
            update: BTreeMap::new(),
            remove: vec![a],
        };
        let later = t("2026-06-01T12:00:05Z");
        held.synced(Synced::Sent(Arc::new(diff)), public, 51820, later);
        let expected: PeerConfigs = [(b, config("10.8.0.3/32"))].into();
        assert_eq!(held.applied.as_deref(), Some(&expected));
        assert_eq!(held.last_sync, Some(later));

        held.synced(Synced::Unchanged, public, 51820, later);
        assert_eq!(held.applied.as_deref(), Some(&expected));
    }

    #[test]
    fn a_server_problem_leaves_the_interface_and_decides_again_next_time() {
        let public = PrivateKey::generate().public_key();
        let mut held = synced_with(public, 51820);
        let applied = held.applied.clone();
        held.server_problem((reason::INVALID_KEY, "Secret k has no key".into()));
        assert_eq!(held.decided_at, None);
        assert_eq!(held.applied, applied);
        assert_eq!(
            held.problem,
            Some((reason::INVALID_KEY, "Secret k has no key".into()))
        );
    }
}
