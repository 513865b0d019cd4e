//! Tests of the reconcile decision on hand-built objects. `World` plays the API server: it
//! applies a plan's writes the way server-side apply would, so a sequence of decisions can be
//! followed through time.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};
use wgsub_crds::resources::{CONDITION_READY, condition};
use wgsub_crds::{
    SubscriptionPhase, VpnSubscription, VpnSubscriptionSpec, WgPeer, WgPeerSpec, WgServer,
    WgServerSpec,
};

use super::*;
use crate::addresses::UsedAddresses;
use crate::patches;

const DAY: SignedDuration = SignedDuration::from_hours(24);
/// Where the world's key Secrets are written (apart from the peers' namespace `vpn`).
const KEYS_NAMESPACE: &str = "vpn-keys";

fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn now() -> Timestamp {
    t("2026-06-01T12:00:00Z")
}

fn server(name: &str, pool: &str, pool6: Option<&str>) -> WgServer {
    let mut server = WgServer::new(
        name,
        WgServerSpec {
            endpoint: "vpn.example.com:51820".into(),
            listen_port: 51820,
            interface_name: "wg0".into(),
            address_pool: pool.into(),
            address_pool6: pool6.map(Into::into),
            dns: vec![],
            mtu: None,
            persistent_keepalive: None,
            client_allowed_ips: vec![],
            node_name: None,
            node_selector: None,
            private_key_secret_ref: SecretKeyRef::new("wg-key", "privateKey"),
            nat: None,
            protocol: Default::default(),
            amneziawg: None,
            location: None,
        },
    );
    server.metadata.namespace = Some("vpn".into());
    server
}

fn subscription(user: i64, paid_until: Option<Timestamp>) -> VpnSubscription {
    let mut spec = VpnSubscriptionSpec::for_user(user);
    spec.paid_until = paid_until;
    let mut sub = VpnSubscription::new(&format!("tg-{user}"), spec);
    sub.metadata.namespace = Some("vpn".into());
    sub.metadata.uid = Some(format!("uid-tg-{user}"));
    sub.metadata.generation = Some(1);
    sub
}

fn api_device(sub: &str, index: u32, server: &str) -> WgPeer {
    let mut peer = WgPeer::new(
        &peer_name(sub, index),
        WgPeerSpec {
            server: server.into(),
            public_key: None,
            private_key_secret_ref: None,
            preshared_key_secret_ref: None,
            address: None,
            address6: None,
            expires_at: None,
            enabled: false,
            device_name: Some("phone".into()),
        },
    );
    peer.metadata.namespace = Some("vpn".into());
    peer.metadata.uid = Some(format!("uid-{}", peer.name_any()));
    peer
}

/// Where a carried-out plan fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Nowhere,
    /// The write of a new key's Secret fails.
    SecretWrite,
    /// The Secret is written; the apply of its peer (with the key) fails.
    PeerWrite,
}

/// An in-memory stand-in for the API: peers and Secrets of every subscription and the address
/// bookkeeping of one server, updated by applying plans.
struct World {
    server: Option<WgServer>,
    peers: BTreeMap<String, WgPeer>,
    secrets: BTreeMap<String, Secret>,
    used: UsedAddresses,
    retention: SignedDuration,
    /// The latest traffic fold of each subscription, as the shell keeps it.
    usage: BTreeMap<String, wgsub_crds::resources::TrafficUsage>,
}

impl World {
    fn new(server: Option<WgServer>) -> Self {
        Self {
            server,
            peers: BTreeMap::new(),
            secrets: BTreeMap::new(),
            used: UsedAddresses::default(),
            retention: DAY * 30,
            usage: BTreeMap::new(),
        }
    }

    fn own_peers(&self, sub: &VpnSubscription) -> Vec<WgPeer> {
        let prefix = format!("{}-", sub.name_any());
        self.peers
            .values()
            .filter(|p| p.name_any().starts_with(&prefix))
            .cloned()
            .collect()
    }

    fn decide(&mut self, sub: &VpnSubscription, at: Timestamp) -> Plan {
        let own = self.own_peers(sub);
        let secrets: Vec<Secret> = self.secrets.values().cloned().collect();
        let observed = Observed {
            subscription: sub,
            default_server: "wg",
            server: self.server.as_ref(),
            own_peers: &own,
            secrets: &secrets,
            now: at,
            retention: self.retention,
            usage_base: self.usage.get(&sub.name_any()),
            usage_write_interval: crate::usage::DEFAULT_WRITE_INTERVAL,
        };
        let plan = decide(&observed, &mut self.used, &mut PrivateKey::generate);
        match &plan.usage.folded {
            Some(folded) => self.usage.insert(sub.name_any(), folded.clone()),
            None => self.usage.remove(&sub.name_any()),
        };
        plan
    }

    /// Server-side applies a peer's operator-owned fields, keeping the API's; returns the stored
    /// peer.
    fn apply_peer(&mut self, sub: &VpnSubscription, desired: &DesiredPeer) -> WgPeer {
        let body = patches::peer_apply(sub, desired).unwrap();
        let mut peer: WgPeer = serde_json::from_value(body).unwrap();
        if let Some(existing) = self.peers.get(&desired.name) {
            peer.spec.enabled = existing.spec.enabled;
            peer.spec.device_name = existing.spec.device_name.clone();
            peer.spec.preshared_key_secret_ref = existing.spec.preshared_key_secret_ref.clone();
            peer.metadata.uid = existing.metadata.uid.clone();
            peer.metadata.creation_timestamp = existing.metadata.creation_timestamp.clone();
            peer.status = existing.status.clone();
        } else {
            peer.metadata.uid = Some(format!("uid-{}", desired.name));
        }
        assert!(
            peer.spec.private_key_secret_ref.is_none() || peer.spec.public_key.is_some(),
            "the CRD refuses a Secret reference without a public key"
        );
        self.peers.insert(desired.name.clone(), peer.clone());
        peer
    }

    /// Carries the plan out the way the shell does (per peer: a new key's Secret, then the peer
    /// once, with its key; the deletes, the status), failing at `stop`: nothing after the
    /// failing call is written, the status included. Returns whether it completed.
    fn apply_until(&mut self, sub: &mut VpnSubscription, plan: &Plan, stop: Stop) -> bool {
        for write in &plan.writes {
            if let Some(key) = write.key_to_store() {
                if stop == Stop::SecretWrite {
                    return false;
                }
                let secret =
                    patches::key_secret(sub, &write.peer.name, key, KEYS_NAMESPACE, now()).unwrap();
                self.secrets.insert(key.reference.name.clone(), secret);
                if stop == Stop::PeerWrite {
                    return false;
                }
            }
            self.apply_peer(sub, &write.published());
        }
        for holding in &plan.deletes {
            let peer = self.peers.remove(&holding.peer).unwrap();
            let key_id = peer.annotations().get(KEY_ID);
            self.secrets.retain(|_, s| {
                s.labels().get(LABEL_PEER_UID) != peer.metadata.uid.as_ref()
                    && (key_id.is_none() || s.labels().get(KEY_ID) != key_id)
            });
            holding.release_from(&mut self.used);
        }
        if let Some(status) = &plan.status {
            sub.status = Some(status.clone());
        }
        true
    }

    fn apply(&mut self, sub: &mut VpnSubscription, plan: &Plan) {
        assert!(self.apply_until(sub, plan, Stop::Nowhere));
    }

    fn run(&mut self, sub: &mut VpnSubscription, at: Timestamp) -> Plan {
        let plan = self.decide(sub, at);
        self.apply(sub, &plan);
        plan
    }

    /// Every published key managed through a Secret has its private half there.
    fn assert_published_keys_are_stored(&self) {
        for peer in self.peers.values() {
            if let (Some(public), Some(_)) =
                (&peer.spec.public_key, &peer.spec.private_key_secret_ref)
            {
                assert_eq!(
                    &self
                        .private_key_of(&peer.name_any())
                        .public_key()
                        .to_base64(),
                    public,
                    "{} publishes a key its Secret does not hold",
                    peer.name_any()
                );
            }
        }
    }

    fn peer(&self, name: &str) -> &WgPeer {
        &self.peers[name]
    }

    fn private_key_of(&self, peer: &str) -> PrivateKey {
        let reference = self.peer(peer).spec.private_key_secret_ref.clone().unwrap();
        let bytes = &self.secrets[&reference.name].data.as_ref().unwrap()[&reference.key].0;
        PrivateKey::from_base64(std::str::from_utf8(bytes).unwrap()).unwrap()
    }

    fn private_key_of_secret(&self, name: &str) -> PrivateKey {
        let bytes = &self.secrets[name].data.as_ref().unwrap()[PRIVATE_KEY_FIELD].0;
        PrivateKey::from_base64(std::str::from_utf8(bytes).unwrap()).unwrap()
    }
}

fn reasons_of(plan: &Plan) -> Vec<&'static str> {
    plan.events.iter().map(|e| e.reason).collect()
}

fn ready(sub: &VpnSubscription) -> (String, String) {
    let c = condition(&sub.status.as_ref().unwrap().conditions, CONDITION_READY).unwrap();
    (c.status.clone(), c.reason.clone())
}

fn world() -> World {
    World::new(Some(server("wg", "10.8.0.0/24", None)))
}

#[test]
fn a_paid_subscription_gets_its_first_device_with_key_address_and_expiry() {
    let mut world = world();
    let paid_until = now() + DAY * 30;
    let mut sub = subscription(1, Some(paid_until));
    let plan = world.run(&mut sub, now());

    assert_eq!(plan.writes.len(), 1);
    assert!(plan.allocates());
    let peer = world.peer("tg-1-1");
    assert_eq!(peer.spec.address.as_deref(), Some("10.8.0.2/32"));
    assert_eq!(peer.spec.address6, None);
    assert_eq!(peer.spec.expires_at, Some(paid_until));
    assert_eq!(peer.spec.server, "wg");
    assert!(peer.spec.enabled);
    assert_eq!(
        peer.spec.private_key_secret_ref,
        Some(SecretKeyRef::new("tg-1-1-key", PRIVATE_KEY_FIELD))
    );
    assert_eq!(
        world.private_key_of("tg-1-1").public_key().to_base64(),
        peer.spec.public_key.clone().unwrap()
    );
    let status = sub.status.clone().unwrap();
    assert_eq!(status.phase, Some(SubscriptionPhase::Active));
    assert_eq!(status.expires_at, Some(paid_until));
    assert_eq!(status.peers, vec!["tg-1-1".to_owned()]);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(ready(&sub), ("True".into(), reasons::READY.into()));
    assert_eq!(reasons_of(&plan), vec![reasons::ACTIVATED]);
    assert_eq!(plan.requeue_at, Some(paid_until));
    assert_eq!(plan.problem, None);
}

#[test]
fn reconciling_again_changes_nothing() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    let plan = world.decide(&sub, now() + SignedDuration::from_secs(5));
    assert!(plan.writes.is_empty());
    assert!(plan.deletes.is_empty());
    assert!(plan.status.is_none());
    assert!(plan.events.is_empty());
    assert!(!plan.allocates());
}

#[test]
fn renewal_keeps_key_and_address_and_only_moves_expiry() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    let before = world.peer("tg-1-1").clone();
    let key_before = world.private_key_of("tg-1-1");

    let renewed_until = now() + DAY * 31;
    sub.spec.paid_until = Some(renewed_until);
    sub.metadata.generation = Some(2);
    let plan = world.run(&mut sub, now() + SignedDuration::from_hours(1));

    assert_eq!(plan.writes.len(), 1);
    assert!(plan.writes[0].key.is_none());
    assert!(!plan.allocates());
    let after = world.peer("tg-1-1");
    assert_eq!(after.spec.public_key, before.spec.public_key);
    assert_eq!(after.spec.address, before.spec.address);
    assert_eq!(after.spec.expires_at, Some(renewed_until));
    assert_eq!(world.private_key_of("tg-1-1"), key_before);
    assert_eq!(reasons_of(&plan), vec![reasons::RENEWED]);
    assert_eq!(plan.requeue_at, Some(renewed_until));
}

#[test]
fn expired_peer_stays_until_retention_and_requeues_then() {
    let mut world = world();
    let paid_until = now() + DAY;
    let mut sub = subscription(1, Some(paid_until));
    world.run(&mut sub, now());

    let plan = world.run(&mut sub, paid_until);
    assert_eq!(
        sub.status.as_ref().unwrap().phase,
        Some(SubscriptionPhase::Expired)
    );
    assert!(plan.writes.is_empty(), "expiresAt already equals paidUntil");
    assert!(plan.deletes.is_empty());
    assert_eq!(reasons_of(&plan), vec![reasons::EXPIRED]);
    assert_eq!(plan.requeue_at, Some(paid_until + DAY * 30));
    assert_eq!(ready(&sub), ("False".into(), reasons::EXPIRED.into()));
    let peer = world.peer("tg-1-1");
    let liveness = wgsub_crds::liveness::PeerLiveness {
        enabled: peer.spec.enabled,
        over_limit: false,
        over_quota: false,
        subscription_suspended: false,
        expires_at: peer.spec.expires_at,
    };
    assert!(!liveness.is_live(paid_until));
    assert_eq!(
        sub.status.as_ref().unwrap().peers,
        vec!["tg-1-1".to_owned()]
    );
}

#[test]
fn renewal_within_retention_brings_back_the_same_config() {
    let mut world = world();
    let paid_until = now() + DAY;
    let mut sub = subscription(1, Some(paid_until));
    world.run(&mut sub, now());
    let before = world.peer("tg-1-1").clone();
    world.run(&mut sub, paid_until + DAY * 10);

    sub.spec.paid_until = Some(paid_until + DAY * 40);
    let plan = world.run(&mut sub, paid_until + DAY * 10);
    let after = world.peer("tg-1-1");
    assert_eq!(after.spec.public_key, before.spec.public_key);
    assert_eq!(after.spec.address, before.spec.address);
    assert_eq!(after.spec.expires_at, Some(paid_until + DAY * 40));
    assert_eq!(reasons_of(&plan), vec![reasons::RENEWED]);
    assert_eq!(
        sub.status.as_ref().unwrap().phase,
        Some(SubscriptionPhase::Active)
    );
}

#[test]
fn after_retention_the_peers_are_deleted_and_their_addresses_freed() {
    let mut world = world();
    let paid_until = now() + DAY;
    let mut sub = subscription(1, Some(paid_until));
    world.run(&mut sub, now());
    assert_eq!(world.used.len_v4(), 1);

    let at = paid_until + DAY * 30;
    let plan = world.run(&mut sub, at);
    assert_eq!(plan.deletes.len(), 1);
    assert_eq!(plan.deletes[0].peer, "tg-1-1");
    assert_eq!(plan.deletes[0].v4, Some("10.8.0.2".parse().unwrap()));
    assert!(world.peers.is_empty());
    assert!(world.secrets.is_empty());
    assert_eq!(world.used.len_v4(), 0);
    assert_eq!(
        reasons_of(&plan),
        vec![reasons::EXPIRED, reasons::PEERS_DELETED]
    );
    assert!(sub.status.as_ref().unwrap().peers.is_empty());
    assert_eq!(plan.requeue_at, None);

    let again = world.decide(&sub, at + DAY);
    assert!(again.deletes.is_empty() && again.writes.is_empty() && again.status.is_none());

    let mut other = subscription(2, Some(at + DAY));
    world.run(&mut other, at);
    assert_eq!(
        world.peer("tg-2-1").spec.address.as_deref(),
        Some("10.8.0.2/32")
    );
}

#[test]
fn a_last_device_the_user_deleted_is_not_given_back_until_they_add_one() {
    let mut world = world();
    let paid_until = now() + DAY * 30;
    let mut sub = subscription(1, Some(paid_until));
    world.run(&mut sub, now());
    // The api marks the subscription, then deletes the user's last device.
    sub.annotations_mut().insert(
        wgsub_crds::devices::ANNOTATION_DEVICES_REMOVED.into(),
        "true".into(),
    );
    world.peers.remove("tg-1-1");
    let plan = world.run(&mut sub, now() + SignedDuration::from_secs(1));
    assert!(plan.writes.is_empty() && plan.deletes.is_empty());
    assert!(world.peers.is_empty());
    assert!(sub.status.as_ref().unwrap().peers.is_empty());
    assert_eq!(ready(&sub), ("True".into(), reasons::READY.into()));
    // The user adds a device (the api creates tg-1-2 and removes the mark): it gets its key
    // and address, and no first device appears beside it.
    sub.annotations_mut()
        .remove(wgsub_crds::devices::ANNOTATION_DEVICES_REMOVED);
    let mut added = api_device("tg-1", 2, "wg");
    added.spec.enabled = true;
    world.peers.insert("tg-1-2".into(), added);
    world.run(&mut sub, now() + SignedDuration::from_secs(2));
    assert_eq!(world.peers.keys().collect::<Vec<_>>(), ["tg-1-2"]);
    assert!(world.peer("tg-1-2").spec.public_key.is_some());
}

#[test]
fn without_the_mark_a_subscription_without_devices_gets_its_first_back() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY * 30));
    world.run(&mut sub, now());
    world.peers.remove("tg-1-1");
    world.run(&mut sub, now() + SignedDuration::from_secs(1));
    assert_eq!(world.peers.keys().collect::<Vec<_>>(), ["tg-1-1"]);
}

#[test]
fn one_day_before_the_end_of_retention_nothing_is_deleted() {
    let mut world = world();
    let paid_until = now() + DAY;
    let mut sub = subscription(1, Some(paid_until));
    world.run(&mut sub, now());
    let plan = world.run(&mut sub, paid_until + DAY * 29);
    assert!(plan.deletes.is_empty());
    assert!(world.peers.contains_key("tg-1-1"));
}

#[test]
fn suspension_keeps_peers_and_lifting_it_restores_the_same_config() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY * 10));
    world.run(&mut sub, now());
    let before = world.peer("tg-1-1").clone();

    sub.spec.suspended = true;
    let plan = world.run(&mut sub, now() + DAY);
    assert_eq!(
        sub.status.as_ref().unwrap().phase,
        Some(SubscriptionPhase::Suspended)
    );
    assert!(plan.writes.is_empty());
    assert_eq!(reasons_of(&plan), vec![reasons::SUSPENDED]);
    assert_eq!(plan.events[0].kind, EventKind::Warning);
    assert_eq!(ready(&sub), ("False".into(), reasons::SUSPENDED.into()));
    assert_eq!(plan.requeue_at, Some(now() + DAY * 40));

    sub.spec.suspended = false;
    let plan = world.run(&mut sub, now() + DAY * 2);
    assert_eq!(
        sub.status.as_ref().unwrap().phase,
        Some(SubscriptionPhase::Active)
    );
    assert_eq!(reasons_of(&plan), vec![reasons::ACTIVATED]);
    assert!(plan.events[0].note.contains("suspension lifted"));
    assert_eq!(world.peer("tg-1-1").spec, before.spec);
}

#[test]
fn a_suspended_subscription_gets_no_new_peer() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    sub.spec.suspended = true;
    let plan = world.run(&mut sub, now());
    assert!(plan.writes.is_empty());
    assert!(world.peers.is_empty());
}

#[test]
fn a_never_paid_subscription_gets_nothing_and_is_pending() {
    let mut world = world();
    let mut sub = subscription(1, None);
    let plan = world.run(&mut sub, now());
    assert!(plan.writes.is_empty());
    assert!(plan.events.is_empty());
    assert_eq!(
        sub.status.as_ref().unwrap().phase,
        Some(SubscriptionPhase::Pending)
    );
    assert_eq!(ready(&sub), ("False".into(), reasons::NOT_PAID.into()));
    assert_eq!(plan.requeue_at, None);
}

#[test]
fn a_missing_server_gives_server_not_found_and_no_peers() {
    let mut world = World::new(None);
    let mut sub = subscription(1, Some(now() + DAY));
    let plan = world.run(&mut sub, now());
    assert!(plan.writes.is_empty());
    assert_eq!(
        plan.problem,
        Some(Problem::ServerNotFound {
            server: "wg".into()
        })
    );
    assert_eq!(
        ready(&sub),
        ("False".into(), reasons::SERVER_NOT_FOUND.into())
    );
    assert!(sub.status.as_ref().unwrap().peers.is_empty());
    assert_eq!(
        reasons_of(&plan),
        vec![reasons::ACTIVATED, reasons::SERVER_NOT_FOUND]
    );

    let again = world.run(&mut sub, now() + SignedDuration::from_secs(2));
    assert!(
        again.events.is_empty(),
        "the warning is given once, not on every retry"
    );
    assert!(again.problem.is_some());
}

#[test]
fn the_named_server_is_used_instead_of_the_default() {
    let mut world = World::new(Some(server("fast", "10.9.0.0/24", None)));
    let mut sub = subscription(1, Some(now() + DAY));
    sub.spec.server = Some("fast".into());
    world.run(&mut sub, now());
    assert_eq!(world.peer("tg-1-1").spec.server, "fast");
    assert_eq!(
        world.peer("tg-1-1").spec.address.as_deref(),
        Some("10.9.0.2/32")
    );
}

#[test]
fn a_server_whose_pool_does_not_parse_is_invalid() {
    for (pool, pool6) in [
        ("banana", None),
        ("10.8.0.1/24", None),
        ("10.8.0.0/32", None),
        ("10.8.0.0/24", Some("fd00::/127")),
        ("10.8.0.0/24", Some("nope")),
    ] {
        let mut world = World::new(Some(server("wg", pool, pool6)));
        let mut sub = subscription(1, Some(now() + DAY));
        let plan = world.run(&mut sub, now());
        assert!(plan.writes.is_empty(), "{pool} {pool6:?}");
        assert!(
            matches!(&plan.problem, Some(Problem::InvalidServer { server, .. }) if server == "wg"),
            "{pool} {pool6:?}: {:?}",
            plan.problem
        );
        assert_eq!(
            ready(&sub),
            ("False".into(), reasons::INVALID_SERVER.into())
        );
    }
}

#[test]
fn an_exhausted_pool_is_reported_once_and_leaves_other_subscriptions_alone() {
    // A /30 has exactly one client address.
    let mut world = World::new(Some(server("wg", "10.8.0.0/30", None)));
    let mut first = subscription(1, Some(now() + DAY));
    world.run(&mut first, now());
    assert_eq!(
        world.peer("tg-1-1").spec.address.as_deref(),
        Some("10.8.0.2/32")
    );

    let mut second = subscription(2, Some(now() + DAY));
    let plan = world.run(&mut second, now());
    assert!(plan.writes.is_empty());
    assert_eq!(
        plan.problem,
        Some(Problem::PoolExhausted {
            server: "wg".into(),
            peers: vec!["tg-2-1".into()]
        })
    );
    assert_eq!(
        ready(&second),
        ("False".into(), reasons::POOL_EXHAUSTED.into())
    );
    assert!(reasons_of(&plan).contains(&reasons::POOL_EXHAUSTED));
    assert!(second.status.as_ref().unwrap().peers.is_empty());
    let again = world.run(&mut second, now());
    assert!(!reasons_of(&again).contains(&reasons::POOL_EXHAUSTED));

    let untouched = world.decide(&first, now());
    assert!(untouched.writes.is_empty() && untouched.problem.is_none());
}

#[test]
fn extra_devices_made_by_the_api_get_key_and_address_without_touching_api_fields() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    sub.spec.max_devices = 3;
    world.run(&mut sub, now());
    world
        .peers
        .insert("tg-1-2".into(), api_device("tg-1", 2, "wg"));

    let plan = world.run(&mut sub, now());
    assert_eq!(plan.writes.len(), 1);
    let write = &plan.writes[0];
    assert_eq!(write.peer.name, "tg-1-2");
    assert!(write.key_to_store().is_some());
    let device = world.peer("tg-1-2");
    assert_eq!(device.spec.address.as_deref(), Some("10.8.0.3/32"));
    assert!(device.spec.public_key.is_some());
    assert!(
        !device.spec.enabled,
        "the API's switch is left as the API set it"
    );
    assert_eq!(device.spec.device_name.as_deref(), Some("phone"));
    assert!(!reasons_of(&plan).contains(&reasons::KEY_REGENERATED));
    assert_eq!(
        sub.status.as_ref().unwrap().peers,
        vec!["tg-1-1".to_owned(), "tg-1-2".to_owned()]
    );
}

#[test]
fn a_lost_key_secret_gives_a_new_key_and_says_so() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    let before = world.peer("tg-1-1").clone();
    world.secrets.clear();

    let plan = world.run(&mut sub, now());
    let after = world.peer("tg-1-1");
    assert_ne!(after.spec.public_key, before.spec.public_key);
    assert_eq!(after.spec.address, before.spec.address);
    assert_eq!(
        after.spec.private_key_secret_ref,
        before.spec.private_key_secret_ref
    );
    assert_eq!(
        world.private_key_of("tg-1-1").public_key().to_base64(),
        after.spec.public_key.clone().unwrap()
    );
    assert_eq!(reasons_of(&plan), vec![reasons::KEY_REGENERATED]);
    assert_eq!(plan.events[0].kind, EventKind::Warning);
    let status = sub.status.as_ref().unwrap();
    let regenerated = condition(&status.conditions, CONDITION_KEY_REGENERATED).unwrap();
    assert_eq!(regenerated.status, "True");
    assert!(regenerated.message.contains("tg-1-1"));
    assert_eq!(ready(&sub), ("True".into(), reasons::READY.into()));
}

#[test]
fn a_secret_holding_garbage_gets_a_new_key_and_says_so() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    let before = world.peer("tg-1-1").spec.public_key.clone();
    let secret = world.secrets.get_mut("tg-1-1-key").unwrap();
    secret.data = Some(BTreeMap::from([(
        PRIVATE_KEY_FIELD.to_owned(),
        ByteString(b"not a key".to_vec()),
    )]));
    let plan = world.run(&mut sub, now());
    assert!(plan.writes[0].key_to_store().is_some());
    assert_eq!(reasons_of(&plan), vec![reasons::KEY_REGENERATED]);
    assert_ne!(world.peer("tg-1-1").spec.public_key, before);
    world.assert_published_keys_are_stored();
}

#[test]
fn a_peer_secret_holding_another_key_gets_that_key_published_and_says_so() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    let replacement = PrivateKey::generate();
    let secret = world.secrets.get_mut("tg-1-1-key").unwrap();
    secret.data = Some(BTreeMap::from([(
        PRIVATE_KEY_FIELD.to_owned(),
        ByteString(replacement.to_base64().as_bytes().to_vec()),
    )]));
    let id = world.secrets["tg-1-1-key"].labels()[KEY_ID].clone();
    let plan = world.run(&mut sub, now());
    assert!(matches!(plan.writes[0].key, Some(KeyStep::Publish { .. })));
    assert_eq!(reasons_of(&plan), vec![reasons::KEY_REGENERATED]);
    let peer = world.peer("tg-1-1");
    assert_eq!(
        peer.spec.public_key,
        Some(replacement.public_key().to_base64())
    );
    assert_eq!(
        peer.annotations()[KEY_ID],
        id,
        "the peer keeps the key id its Secret is collected by"
    );
    world.assert_published_keys_are_stored();
}

#[test]
fn a_key_the_user_brought_is_kept_without_a_secret() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    let mut own = api_device("tg-1", 1, "wg");
    let public = PrivateKey::generate().public_key().to_base64();
    own.spec.public_key = Some(public.clone());
    world.peers.insert("tg-1-1".into(), own);
    let plan = world.run(&mut sub, now());
    assert!(plan.writes[0].key.is_none());
    assert_eq!(world.peer("tg-1-1").spec.public_key, Some(public));
    assert_eq!(world.peer("tg-1-1").spec.private_key_secret_ref, None);
    assert!(world.secrets.is_empty());
}

#[test]
fn two_subscriptions_allocating_on_one_server_never_share_an_address() {
    let mut world = world();
    let mut a = subscription(1, Some(now() + DAY));
    let mut b = subscription(2, Some(now() + DAY));
    // Both decide before either is applied, as two reconciles in flight would under one lock.
    let plan_a = world.decide(&a, now());
    let plan_b = world.decide(&b, now());
    world.apply(&mut a, &plan_a);
    world.apply(&mut b, &plan_b);
    assert_ne!(
        world.peer("tg-1-1").spec.address,
        world.peer("tg-2-1").spec.address
    );
}

#[test]
fn two_hundred_subscriptions_on_a_slash_24_get_two_hundred_distinct_addresses() {
    let mut world = world();
    for user in 1..=200 {
        let mut sub = subscription(user, Some(now() + DAY));
        world.run(&mut sub, now());
    }
    let addresses: BTreeSet<_> = world
        .peers
        .values()
        .map(|p| p.spec.address.clone().unwrap())
        .collect();
    assert_eq!(addresses.len(), 200);
    assert!(addresses.iter().all(|a| a.starts_with("10.8.0.")));
}

#[test]
fn after_a_restart_existing_peers_keep_their_addresses() {
    let mut world = world();
    let mut subs: Vec<_> = (1..=5)
        .map(|u| subscription(u, Some(now() + DAY)))
        .collect();
    for sub in &mut subs {
        world.run(sub, now());
    }
    // A new leader derives the bookkeeping from the peers that exist.
    let peers: Vec<WgPeer> = world.peers.values().cloned().collect();
    world.used = UsedAddresses::from_peers("wg", &peers);
    for sub in &subs {
        let plan = world.decide(sub, now());
        assert!(plan.writes.is_empty(), "{}", sub.name_any());
    }
    let mut newcomer = subscription(6, Some(now() + DAY));
    world.run(&mut newcomer, now());
    assert_eq!(
        world.peer("tg-6-1").spec.address.as_deref(),
        Some("10.8.0.7/32")
    );
}

#[test]
fn a_hand_made_duplicate_address_is_replaced_for_the_younger_peer() {
    let mut world = world();
    let mut a = subscription(1, Some(now() + DAY));
    world.run(&mut a, now());
    let mut b = subscription(2, Some(now() + DAY));
    world.run(&mut b, now());
    world.peers.get_mut("tg-2-1").unwrap().spec.address = Some("10.8.0.2/32".into());
    let peers: Vec<WgPeer> = world.peers.values().cloned().collect();
    world.used = UsedAddresses::from_peers("wg", &peers);

    world.run(&mut b, now());
    assert_eq!(
        world.peer("tg-1-1").spec.address.as_deref(),
        Some("10.8.0.2/32")
    );
    assert_eq!(
        world.peer("tg-2-1").spec.address.as_deref(),
        Some("10.8.0.3/32")
    );
}

#[test]
fn an_address_outside_a_changed_pool_is_replaced_but_the_key_kept() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    let key = world.peer("tg-1-1").spec.public_key.clone();
    world.server = Some(server("wg", "10.20.0.0/16", None));
    let plan = world.run(&mut sub, now());
    assert!(plan.allocates());
    assert_eq!(
        world.peer("tg-1-1").spec.address.as_deref(),
        Some("10.20.0.2/32")
    );
    assert_eq!(world.peer("tg-1-1").spec.public_key, key);
}

#[test]
fn moving_to_another_server_gives_an_address_there_and_frees_the_old_one() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    let mut old_used = std::mem::take(&mut world.used);
    world.server = Some(server("other", "10.30.0.0/24", None));
    sub.spec.server = Some("other".into());

    let plan = world.run(&mut sub, now());
    let moved = plan.writes[0].moved_from.clone().unwrap();
    assert_eq!(moved.server, "wg");
    moved.release_from(&mut old_used);
    assert_eq!(old_used.len_v4(), 0);
    let peer = world.peer("tg-1-1");
    assert_eq!(peer.spec.server, "other");
    assert_eq!(peer.spec.address.as_deref(), Some("10.30.0.2/32"));
    assert_eq!(peer.labels()[wgsub_crds::resources::LABEL_SERVER], "other");
}

/// A subscription with `devices` ready devices on `wg` (10.8.0.0/24), the addresses of `wg`
/// taken out of the world as the old server's bookkeeping, and the world's server now `to`.
fn moving_world(devices: i32, to: Option<WgServer>) -> (World, VpnSubscription, UsedAddresses) {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    sub.spec.max_devices = devices;
    world.run(&mut sub, now());
    for index in 2..=devices as u32 {
        world
            .peers
            .insert(peer_name("tg-1", index), api_device("tg-1", index, "wg"));
    }
    world.run(&mut sub, now());
    let old_used = std::mem::take(&mut world.used);
    world.server = to;
    (world, sub, old_used)
}

fn keys_and_servers(world: &World) -> Vec<(String, Option<String>, String)> {
    world
        .peers
        .values()
        .map(|p| {
            (
                p.name_any(),
                p.spec.public_key.clone(),
                p.spec.server.clone(),
            )
        })
        .collect()
}

#[test]
fn a_move_takes_every_device_to_the_new_pool_with_its_key_and_frees_the_old_addresses() {
    let (mut world, mut sub, mut old_used) =
        moving_world(3, Some(server("de-1", "10.30.0.0/24", None)));
    assert_eq!(old_used.len_v4(), 3);
    let before = keys_and_servers(&world);
    sub.spec.server = Some("de-1".into());

    let plan = world.run(&mut sub, now() + SignedDuration::from_secs(1));
    assert_eq!(plan.writes.len(), 3);
    assert!(
        plan.deletes.is_empty(),
        "a move re-addresses the peers in place"
    );
    for write in &plan.writes {
        let from = write.moved_from.clone().expect("every device moved");
        assert_eq!(from.server, "wg");
        from.release_from(&mut old_used);
        assert!(write.key.is_none(), "the key stays");
    }
    assert_eq!(old_used.len_v4(), 0, "every old address is free");
    let after = keys_and_servers(&world);
    for ((name, key, _), (moved, kept, server)) in before.iter().zip(&after) {
        assert_eq!((name, key), (moved, kept));
        assert_eq!(server, "de-1");
    }
    let addresses: Vec<&str> = world
        .peers
        .values()
        .map(|p| p.spec.address.as_deref().unwrap())
        .collect();
    assert_eq!(addresses, ["10.30.0.2/32", "10.30.0.3/32", "10.30.0.4/32"]);
    assert_eq!(reasons_of(&plan), [reasons::MOVED]);
    assert!(plan.events[0].note.contains("tg-1-1, tg-1-2, tg-1-3"));
    assert_eq!(ready(&sub), ("True".into(), reasons::READY.into()));
    world.assert_published_keys_are_stored();

    let again = world.decide(&sub, now() + SignedDuration::from_secs(2));
    assert!(
        again.writes.is_empty() && again.events.is_empty(),
        "moved once"
    );
}

#[test]
fn a_move_to_a_pool_without_room_leaves_the_devices_it_cannot_place_where_they_work() {
    // 10.30.0.0/30 holds one client.
    let (mut world, mut sub, _) = moving_world(2, Some(server("de-1", "10.30.0.0/30", None)));
    sub.spec.server = Some("de-1".into());
    let plan = world.run(&mut sub, now() + SignedDuration::from_secs(1));
    assert_eq!(plan.writes.len(), 1);
    assert_eq!(world.peer("tg-1-1").spec.server, "de-1");
    let stays = world.peer("tg-1-2");
    assert_eq!(stays.spec.server, "wg");
    assert_eq!(stays.spec.address.as_deref(), Some("10.8.0.3/32"));
    assert!(matches!(
        plan.problem,
        Some(Problem::PoolExhausted { ref peers, .. }) if peers == &["tg-1-2".to_owned()]
    ));
    assert_eq!(ready(&sub).1, reasons::POOL_EXHAUSTED);
}

#[test]
fn a_move_to_a_server_that_does_not_exist_moves_nothing() {
    let (mut world, mut sub, _) = moving_world(2, None);
    let before = world.peers.clone();
    sub.spec.server = Some("gone".into());
    let plan = world.run(&mut sub, now() + SignedDuration::from_secs(1));
    assert!(plan.writes.iter().all(|w| w.moved_from.is_none()));
    assert_eq!(world.peers, before);
    assert_eq!(ready(&sub).1, reasons::SERVER_NOT_FOUND);
}

#[test]
fn an_expired_subscription_keeps_its_devices_in_place_and_moves_them_on_renewal() {
    let (mut world, mut sub, _) = moving_world(1, Some(server("de-1", "10.30.0.0/24", None)));
    sub.spec.server = Some("de-1".into());
    let expired = now() + DAY * 2;
    let plan = world.run(&mut sub, expired);
    assert!(plan.writes.iter().all(|w| w.moved_from.is_none()));
    assert_eq!(world.peer("tg-1-1").spec.server, "wg");

    sub.spec.paid_until = Some(expired + DAY * 30);
    let plan = world.run(&mut sub, expired + SignedDuration::from_secs(1));
    assert!(plan.writes[0].moved_from.is_some());
    assert_eq!(world.peer("tg-1-1").spec.server, "de-1");
    assert!(reasons_of(&plan).contains(&reasons::MOVED));
}

#[test]
fn an_ipv6_pool_gives_every_device_a_slash_128_too() {
    let mut world = World::new(Some(server("wg", "10.8.0.0/24", Some("fd00:8::/64"))));
    let mut a = subscription(1, Some(now() + DAY));
    let mut b = subscription(2, Some(now() + DAY));
    world.run(&mut a, now());
    world.run(&mut b, now());
    assert_eq!(
        world.peer("tg-1-1").spec.address6.as_deref(),
        Some("fd00:8::2/128")
    );
    assert_eq!(
        world.peer("tg-2-1").spec.address6.as_deref(),
        Some("fd00:8::3/128")
    );
    assert!(world.decide(&a, now()).writes.is_empty());
}

#[test]
fn an_exhausted_ipv6_pool_does_not_leak_the_ipv4_claim() {
    let mut world = World::new(Some(server("wg", "10.8.0.0/24", Some("fd00:8::/126"))));
    let mut a = subscription(1, Some(now() + DAY));
    world.run(&mut a, now());
    let mut b = subscription(2, Some(now() + DAY));
    world.run(&mut b, now());
    let mut c = subscription(3, Some(now() + DAY));
    let plan = world.run(&mut c, now());
    assert!(matches!(plan.problem, Some(Problem::PoolExhausted { .. })));
    assert_eq!(world.used.len_v4(), 2);
}

#[test]
fn odd_resource_content_never_panics() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    sub.spec.max_devices = -4;
    let mut weird = api_device("tg-1", 1, "wg");
    weird.spec.address = Some("999.1.1.1/32".into());
    weird.spec.address6 = Some("zz".into());
    weird.spec.public_key = Some("short".into());
    weird.spec.private_key_secret_ref = Some(SecretKeyRef::new("missing", "x"));
    world.peers.insert("tg-1-1".into(), weird);
    let plan = world.run(&mut sub, now());
    assert!(plan.problem.is_none());
    let peer = world.peer("tg-1-1");
    assert_eq!(peer.spec.address.as_deref(), Some("10.8.0.2/32"));
    assert!(PublicKey::from_base64(peer.spec.public_key.as_deref().unwrap()).is_ok());
    assert_eq!(
        world.private_key_of("tg-1-1").public_key().to_base64(),
        peer.spec.public_key.clone().unwrap()
    );

    let far = subscription(2, Some(Timestamp::MAX));
    let expired_forever = world.decide(&far, now());
    assert_eq!(expired_forever.phase, SubscriptionPhase::Active);
    let mut ancient = subscription(3, Some(Timestamp::MIN));
    world.retention = SignedDuration::MIN;
    let plan = world.run(&mut ancient, now());
    assert_eq!(plan.phase, SubscriptionPhase::Expired);
}

#[test]
fn candidate_names_cover_every_device_slot_a_rotation_and_listed_peers_only() {
    let mut sub = subscription(1, Some(now()));
    sub.spec.max_devices = 1;
    sub.status = Some(VpnSubscriptionStatus {
        peers: vec![
            "tg-1-5".into(),
            "tg-1-40".into(),
            "tg-10-1".into(),
            "elsewhere".into(),
            "tg-1-01".into(),
        ],
        ..VpnSubscriptionStatus::default()
    });
    let every_slot: Vec<String> = (1..=MAX_DEVICES + 1).map(|i| format!("tg-1-{i}")).collect();
    let mut expected = every_slot.clone();
    expected.push("tg-1-40".into());
    assert_eq!(candidate_peer_names(&sub), expected);
    // A one-device user's rotated device (tg-1-2, made before tg-1-1 goes) is seen.
    assert!(candidate_peer_names(&sub).contains(&"tg-1-2".to_owned()));
    sub.spec.max_devices = 1000;
    sub.status = None;
    assert_eq!(candidate_peer_names(&sub), every_slot);
}

#[test]
fn a_rotated_devices_replacement_gets_a_key_and_takes_the_only_place_once_the_old_one_goes() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY * 30));
    world.run(&mut sub, now());
    // The api creates the replacement tg-1-2, then deletes tg-1-1.
    let mut replacement = api_device("tg-1", 2, "wg");
    replacement.spec.enabled = true;
    world.peers.insert("tg-1-2".into(), replacement);
    world.run(&mut sub, now() + SignedDuration::from_secs(1));
    assert!(world.peer("tg-1-2").spec.public_key.is_some());
    let old = world.peers.remove("tg-1-1").unwrap();
    Holding::of(&old).release_from(&mut world.used);
    world.run(&mut sub, now() + SignedDuration::from_secs(2));
    assert_eq!(world.peers.keys().collect::<Vec<_>>(), ["tg-1-2"]);
    let peer = world.peer("tg-1-2");
    assert!(!is_over_limit(peer), "the replacement holds the only place");
    assert!(peer.spec.address.is_some());
    assert_eq!(sub.status.as_ref().unwrap().peers, ["tg-1-2"]);
    assert!(sub.status.as_ref().unwrap().devices_over_limit.is_empty());
}

/// A key generator that must not be called.
fn no_new_key() -> PrivateKey {
    panic!("no new key may be generated here")
}

#[test]
fn a_failed_secret_write_writes_no_peer_and_the_retry_says_nothing_about_keys() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    let plan = world.decide(&sub, now());
    assert!(!world.apply_until(&mut sub, &plan, Stop::SecretWrite));
    assert!(
        world.peers.is_empty(),
        "a new peer is written only with its key"
    );
    assert!(world.secrets.is_empty());

    let plan = world.run(&mut sub, now());
    assert!(plan.writes[0].key_to_store().is_some());
    assert_eq!(reasons_of(&plan), vec![reasons::ACTIVATED]);
    let status = sub.status.as_ref().unwrap();
    assert!(condition(&status.conditions, CONDITION_KEY_REGENERATED).is_none());
    assert_eq!(ready(&sub), ("True".into(), reasons::READY.into()));
    world.assert_published_keys_are_stored();
    assert!(world.peer("tg-1-1").spec.public_key.is_some());
}

#[test]
fn a_new_peer_is_written_once_with_its_key_its_address_and_the_key_id_of_its_secret() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    let plan = world.decide(&sub, now());
    assert_eq!(plan.writes.len(), 1);
    let key = plan.writes[0].key_to_store().expect("a new key");
    assert_eq!(key.peer_uid, None, "the peer does not exist yet");
    let published = plan.writes[0].published();
    assert_eq!(published.key_id, Some(key.id()));
    assert!(published.address.is_some());
    world.apply(&mut sub, &plan);
    let peer = world.peer("tg-1-1");
    assert_eq!(peer.annotations()[KEY_ID], key.id());
    assert_eq!(world.secrets["tg-1-1-key"].labels()[KEY_ID], key.id());
    world.assert_published_keys_are_stored();
}

#[test]
fn an_expiry_only_write_keeps_the_key_id() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    let id = world.peer("tg-1-1").annotations()[KEY_ID].clone();
    let mut sub = subscription(1, Some(now() + DAY * 30));
    let plan = world.run(&mut sub, now());
    assert!(plan.writes.iter().all(|w| w.key.is_none()));
    assert_eq!(plan.writes[0].published().key_id, Some(id.clone()));
    assert_eq!(world.peer("tg-1-1").annotations()[KEY_ID], id);
    assert!(world.run(&mut sub, now()).writes.is_empty());
}

#[test]
fn a_failed_peer_write_after_its_secret_makes_a_new_key_under_the_same_name() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    let plan = world.decide(&sub, now());
    assert!(!world.apply_until(&mut sub, &plan, Stop::PeerWrite));
    assert!(world.peers.is_empty());
    let first = world.secrets["tg-1-1-key"].labels()[KEY_ID].clone();

    let plan = world.run(&mut sub, now());
    let key = plan.writes[0]
        .key_to_store()
        .expect("a Secret no peer owns is never published");
    assert_ne!(key.id(), first);
    assert_eq!(key.reference.name, "tg-1-1-key");
    assert_eq!(reasons_of(&plan), vec![reasons::ACTIVATED]);
    assert_eq!(world.secrets.len(), 1);
    assert_eq!(world.secrets["tg-1-1-key"].labels()[KEY_ID], key.id());
    world.assert_published_keys_are_stored();
}

#[test]
fn a_key_stored_for_an_existing_peer_whose_write_failed_is_published_without_a_new_one() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    world.secrets.clear();
    let plan = world.decide(&sub, now());
    let key = plan.writes[0]
        .key_to_store()
        .expect("the lost key is replaced");
    assert_eq!(key.peer_uid.as_deref(), Some("uid-tg-1-1"));
    assert!(!world.apply_until(&mut sub, &plan, Stop::PeerWrite));
    assert_eq!(
        world.secrets["tg-1-1-key"].labels()[LABEL_PEER_UID],
        "uid-tg-1-1"
    );
    let stored = world.private_key_of_secret("tg-1-1-key");

    let own = world.own_peers(&sub);
    let secrets: Vec<Secret> = world.secrets.values().cloned().collect();
    let observed = Observed {
        subscription: &sub,
        default_server: "wg",
        server: world.server.as_ref(),
        own_peers: &own,
        secrets: &secrets,
        now: now(),
        retention: world.retention,
        usage_base: None,
        usage_write_interval: crate::usage::DEFAULT_WRITE_INTERVAL,
    };
    let plan = decide(&observed, &mut world.used, &mut no_new_key);
    assert!(matches!(plan.writes[0].key, Some(KeyStep::Publish { .. })));
    assert_eq!(
        plan.writes[0].published().key_id,
        Some(key_id(&stored.public_key()))
    );
    world.apply(&mut sub, &plan);
    assert_eq!(
        world.peer("tg-1-1").spec.public_key,
        Some(stored.public_key().to_base64())
    );
    world.assert_published_keys_are_stored();
}

#[test]
fn a_lost_key_is_reported_once_by_the_reconcile_that_publishes_its_replacement() {
    for stop in [Stop::SecretWrite, Stop::PeerWrite] {
        let mut world = world();
        let mut sub = subscription(1, Some(now() + DAY));
        world.run(&mut sub, now());
        let lost = world.peer("tg-1-1").spec.public_key.clone();
        world.secrets.clear();

        let plan = world.decide(&sub, now());
        assert!(
            plan.events
                .iter()
                .any(|e| e.reason == reasons::KEY_REGENERATED)
        );
        assert!(!world.apply_until(&mut sub, &plan, stop), "{stop:?}");
        assert_eq!(
            world.peer("tg-1-1").spec.public_key,
            lost,
            "{stop:?}: the lost key stays published until its replacement is stored"
        );
        let status = sub.status.as_ref().unwrap();
        assert!(
            condition(&status.conditions, CONDITION_KEY_REGENERATED).is_none(),
            "{stop:?}: a failed reconcile tells nobody"
        );

        let plan = world.run(&mut sub, now());
        assert_eq!(
            reasons_of(&plan),
            vec![reasons::KEY_REGENERATED],
            "{stop:?}"
        );
        assert_ne!(world.peer("tg-1-1").spec.public_key, lost, "{stop:?}");
        world.assert_published_keys_are_stored();
        let again = world.run(&mut sub, now());
        assert!(
            again.events.is_empty() && again.writes.is_empty(),
            "{stop:?}"
        );
    }
}

/// What the key Secret a peer's reference (or default name) points at holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Absent,
    ThePublishedKey,
    AnotherKey,
    Garbage,
}

/// Who owns that Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretOwner {
    /// Labelled with the peer's uid (the key Secret of the peer keys namespace).
    ThePeer,
    /// Owned by the peer through an owner reference (a key kept in the peer's namespace).
    ThePeerByOwnerReference,
    AnOlderPeer,
    Nobody,
}

#[test]
fn every_key_situation_publishes_only_stored_keys_and_reports_only_lost_published_ones() {
    for published in [None, Some("valid"), Some("garbage")] {
        for referenced in [false, true] {
            for stored in [
                Stored::Absent,
                Stored::ThePublishedKey,
                Stored::AnotherKey,
                Stored::Garbage,
            ] {
                for owner in [
                    SecretOwner::ThePeer,
                    SecretOwner::ThePeerByOwnerReference,
                    SecretOwner::AnOlderPeer,
                    SecretOwner::Nobody,
                ] {
                    let case = format!("{published:?} ref={referenced} {stored:?} {owner:?}");
                    let published_key = PrivateKey::generate();
                    let other_key = PrivateKey::generate();
                    let mut world = world();
                    let mut sub = subscription(1, Some(now() + DAY));
                    let mut peer = api_device("tg-1", 1, "wg");
                    peer.spec.address = Some("10.8.0.2/32".into());
                    peer.spec.public_key = match published {
                        Some("valid") => Some(published_key.public_key().to_base64()),
                        Some(_) => Some("not-a-key".into()),
                        None => None,
                    };
                    peer.spec.private_key_secret_ref = referenced
                        .then(|| SecretKeyRef::new(key_secret_name("tg-1-1"), PRIVATE_KEY_FIELD));
                    let bytes = match stored {
                        Stored::Absent => None,
                        Stored::ThePublishedKey => {
                            Some(published_key.to_base64().as_bytes().to_vec())
                        }
                        Stored::AnotherKey => Some(other_key.to_base64().as_bytes().to_vec()),
                        Stored::Garbage => Some(b"garbage".to_vec()),
                    };
                    if let Some(bytes) = bytes {
                        let mut secret = Secret::default();
                        secret.metadata.name = Some(key_secret_name("tg-1-1"));
                        match owner {
                            SecretOwner::Nobody => {}
                            SecretOwner::ThePeer => {
                                secret
                                    .labels_mut()
                                    .insert(LABEL_PEER_UID.into(), peer.uid().unwrap());
                            }
                            SecretOwner::ThePeerByOwnerReference => {
                                secret.metadata.owner_references =
                                    Some(vec![peer.controller_owner_ref(&()).unwrap()]);
                            }
                            SecretOwner::AnOlderPeer => {
                                secret
                                    .labels_mut()
                                    .insert(LABEL_PEER_UID.into(), "uid-of-an-older-tg-1-1".into());
                            }
                        }
                        secret.data = Some(BTreeMap::from([(
                            PRIVATE_KEY_FIELD.to_owned(),
                            ByteString(bytes),
                        )]));
                        world.secrets.insert(key_secret_name("tg-1-1"), secret);
                    }
                    world.peers.insert("tg-1-1".into(), peer);

                    let user_owned = published == Some("valid") && !referenced;
                    let valid = published == Some("valid") && stored == Stored::ThePublishedKey;
                    let was_published = published == Some("valid") && referenced;
                    let owned = matches!(
                        owner,
                        SecretOwner::ThePeer | SecretOwner::ThePeerByOwnerReference
                    );
                    let reusable = stored == Stored::AnotherKey && owned
                        || stored == Stored::ThePublishedKey && owned && !was_published;

                    let plan = world.decide(&sub, now());
                    let step = plan.writes.first().and_then(|w| w.key.as_ref());
                    match step {
                        None => assert!(user_owned || valid, "{case}: the key was kept"),
                        Some(KeyStep::Publish { .. }) => {
                            assert!(reusable, "{case}: publishes a key it did not store")
                        }
                        Some(KeyStep::Store(_)) => {
                            assert!(!user_owned && !valid && !reusable, "{case}: a needless key")
                        }
                    }
                    let regenerated = reasons_of(&plan).contains(&reasons::KEY_REGENERATED);
                    assert_eq!(regenerated, was_published && !valid, "{case}");

                    world.apply(&mut sub, &plan);
                    world.assert_published_keys_are_stored();
                    let again = world.decide(&sub, now());
                    assert!(
                        again.writes.is_empty() && again.events.is_empty(),
                        "{case}: settles in one reconcile"
                    );
                }
            }
        }
    }
}

#[test]
fn key_secrets_are_read_for_references_and_for_peers_awaiting_their_key() {
    let mut awaiting = api_device("tg-1", 1, "wg");
    awaiting.spec.public_key = None;
    let mut referenced = api_device("tg-1", 2, "wg");
    referenced.spec.public_key = Some(PrivateKey::generate().public_key().to_base64());
    referenced.spec.private_key_secret_ref = Some(SecretKeyRef::new("custom", "k"));
    let mut brought = api_device("tg-1", 3, "wg");
    brought.spec.public_key = Some(PrivateKey::generate().public_key().to_base64());
    let names = key_secret_names(&[awaiting, referenced, brought]);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["custom".to_owned(), "tg-1-1-key".to_owned()]
    );
}

// The device limit.

/// A device the API added, switched on, created at `created`.
fn device_created(sub: &str, index: u32, created: Timestamp) -> WgPeer {
    let mut peer = api_device(sub, index, "wg");
    peer.spec.enabled = true;
    peer.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        created,
    ));
    peer
}

/// A paid subscription allowed `devices` devices, all of them made (device 1 by the operator,
/// the others by the API, each a minute after the one before) and given keys and addresses.
fn subscription_with_devices(world: &mut World, devices: u32) -> VpnSubscription {
    let mut sub = subscription(1, Some(now() + DAY * 30));
    sub.spec.max_devices = i32::try_from(devices).unwrap();
    let first = now() - DAY;
    world
        .peers
        .insert("tg-1-1".into(), device_created("tg-1", 1, first));
    for index in 2..=devices {
        let created = first + SignedDuration::from_mins(i64::from(index));
        world.peers.insert(
            peer_name("tg-1", index),
            device_created("tg-1", index, created),
        );
    }
    world.run(&mut sub, now());
    assert!(sub.status.as_ref().unwrap().devices_over_limit.is_empty());
    sub
}

/// Each device's key and addresses, to compare before and after.
fn configs(world: &World) -> BTreeMap<String, (Option<String>, Option<String>, PrivateKey)> {
    world
        .peers
        .keys()
        .map(|name| {
            let peer = world.peer(name);
            (
                name.clone(),
                (
                    peer.spec.public_key.clone(),
                    peer.spec.address.clone(),
                    world.private_key_of(name),
                ),
            )
        })
        .collect()
}

/// The devices that would go on an interface at `at`, by the shared liveness rule.
fn live_devices(world: &World, suspended: bool, at: Timestamp) -> Vec<String> {
    world
        .peers
        .values()
        .filter(|peer| {
            wgsub_crds::liveness::PeerLiveness {
                enabled: peer.spec.enabled,
                over_limit: wgsub_crds::resources::is_over_limit(peer),
                over_quota: wgsub_crds::resources::is_over_quota(peer),
                subscription_suspended: suspended,
                expires_at: peer.spec.expires_at,
            }
            .is_live(at)
        })
        .map(|peer| peer.name_any())
        .collect()
}

fn over_limit_condition(sub: &VpnSubscription) -> Option<(String, String, String)> {
    condition(
        &sub.status.as_ref().unwrap().conditions,
        wgsub_crds::resources::CONDITION_DEVICES_OVER_LIMIT,
    )
    .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_downgrade_from_five_devices_to_one_stops_the_four_newest_and_says_which() {
    let mut world = world();
    let mut sub = subscription_with_devices(&mut world, 5);
    assert_eq!(live_devices(&world, false, now()).len(), 5);
    let before = configs(&world);

    sub.spec.max_devices = 1;
    let plan = world.run(&mut sub, now());

    let stopped = names(&["tg-1-2", "tg-1-3", "tg-1-4", "tg-1-5"]);
    let written: Vec<&str> = plan.writes.iter().map(|w| w.peer.name.as_str()).collect();
    assert_eq!(written, ["tg-1-2", "tg-1-3", "tg-1-4", "tg-1-5"]);
    assert!(plan.writes.iter().all(|w| w.key.is_none() && !w.allocated));
    assert_eq!(live_devices(&world, false, now()), names(&["tg-1-1"]));
    for name in &stopped {
        assert!(
            world.peer(name).spec.enabled,
            "the user's switch of {name} is untouched"
        );
    }
    assert_eq!(configs(&world), before, "keys and addresses are kept");
    let status = sub.status.clone().unwrap();
    assert_eq!(status.devices_over_limit, stopped);
    assert_eq!(
        status.peers.len(),
        5,
        "the stopped devices are still listed"
    );
    let (state, reason, message) = over_limit_condition(&sub).unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("True", reasons::MAX_DEVICES_EXCEEDED)
    );
    assert!(message.contains("maxDevices 1"), "{message}");
    assert!(
        message.contains("tg-1-2, tg-1-3, tg-1-4, tg-1-5"),
        "{message}"
    );
    assert_eq!(ready(&sub), ("True".into(), reasons::READY.into()));
    assert_eq!(reasons_of(&plan), vec![reasons::MAX_DEVICES_EXCEEDED]);
    assert_eq!(plan.events[0].kind, EventKind::Warning);
    assert_eq!(plan.problem, None);

    let again = world.decide(&sub, now() + SignedDuration::from_secs(5));
    assert!(again.writes.is_empty() && again.status.is_none() && again.events.is_empty());
}

#[test]
fn raising_the_limit_again_brings_back_the_same_devices_with_the_same_keys_and_addresses() {
    let mut world = world();
    let mut sub = subscription_with_devices(&mut world, 5);
    let before = configs(&world);
    sub.spec.max_devices = 1;
    world.run(&mut sub, now());

    sub.spec.max_devices = 5;
    let plan = world.run(&mut sub, now());

    assert_eq!(plan.writes.len(), 4);
    assert!(plan.writes.iter().all(|w| w.key.is_none() && !w.allocated));
    assert_eq!(live_devices(&world, false, now()).len(), 5);
    assert_eq!(configs(&world), before);
    assert!(world.peers.values().all(|p| {
        !p.labels()
            .contains_key(wgsub_crds::resources::LABEL_OVER_LIMIT)
    }));
    assert!(sub.status.as_ref().unwrap().devices_over_limit.is_empty());
    let (state, reason, _) = over_limit_condition(&sub).unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("False", reasons::WITHIN_LIMIT)
    );
    assert_eq!(reasons_of(&plan), vec![reasons::WITHIN_LIMIT]);
    assert!(
        plan.events[0]
            .note
            .contains("tg-1-2, tg-1-3, tg-1-4, tg-1-5")
    );
}

#[test]
fn a_downgrade_from_three_devices_to_two_stops_the_newest_and_a_rise_to_three_restores_it() {
    let mut world = world();
    let mut sub = subscription_with_devices(&mut world, 3);
    sub.spec.max_devices = 2;
    world.run(&mut sub, now());
    assert_eq!(
        live_devices(&world, false, now()),
        names(&["tg-1-1", "tg-1-2"])
    );
    assert_eq!(
        sub.status.as_ref().unwrap().devices_over_limit,
        names(&["tg-1-3"])
    );

    sub.spec.max_devices = 3;
    world.run(&mut sub, now());
    assert_eq!(live_devices(&world, false, now()).len(), 3);
}

#[test]
fn a_subscription_that_never_exceeded_its_limit_carries_no_over_limit_condition() {
    let mut world = world();
    let sub = subscription_with_devices(&mut world, 3);
    assert_eq!(over_limit_condition(&sub), None);
}

#[test]
fn devices_the_user_switched_off_give_way_to_devices_in_use() {
    let mut world = world();
    let mut sub = subscription_with_devices(&mut world, 3);
    world.peers.get_mut("tg-1-1").unwrap().spec.enabled = false;
    sub.spec.max_devices = 2;
    world.run(&mut sub, now());
    assert_eq!(
        live_devices(&world, false, now()),
        names(&["tg-1-2", "tg-1-3"])
    );
    assert_eq!(
        sub.status.as_ref().unwrap().devices_over_limit,
        names(&["tg-1-1"]),
        "the switched-off device is marked, so switching it on cannot exceed the limit"
    );

    // Switching it on again does not push out a device in use.
    world.peers.get_mut("tg-1-1").unwrap().spec.enabled = true;
    assert_eq!(live_devices(&world, false, now()).len(), 2);
    let plan = world.run(&mut sub, now());
    assert!(plan.writes.is_empty());
    assert_eq!(
        live_devices(&world, false, now()),
        names(&["tg-1-2", "tg-1-3"])
    );

    // Switching another one off frees its place; the place is taken in one plan that stops
    // before it starts.
    world.peers.get_mut("tg-1-3").unwrap().spec.enabled = false;
    let plan = world.run(&mut sub, now());
    let written: Vec<(&str, bool)> = plan
        .writes
        .iter()
        .map(|w| (w.peer.name.as_str(), w.peer.over_limit))
        .collect();
    assert_eq!(written, [("tg-1-3", true), ("tg-1-1", false)]);
    assert_eq!(
        live_devices(&world, false, now()),
        names(&["tg-1-1", "tg-1-2"])
    );
    assert_eq!(
        sub.status.as_ref().unwrap().devices_over_limit,
        names(&["tg-1-3"])
    );
}

#[test]
fn a_renewal_with_a_smaller_plan_after_expiry_never_brings_back_the_extra_devices() {
    let mut world = world();
    let mut sub = subscription_with_devices(&mut world, 3);
    let expired = now() + DAY * 31;
    world.run(&mut sub, expired);
    assert!(live_devices(&world, false, expired).is_empty());

    sub.spec.paid_until = Some(expired + DAY * 30);
    sub.spec.max_devices = 1;
    let plan = world.run(&mut sub, expired);
    for write in &plan.writes {
        assert_eq!(write.peer.expires_at, sub.spec.paid_until);
    }
    assert_eq!(live_devices(&world, false, expired), names(&["tg-1-1"]));
}

#[test]
fn a_limit_lowered_while_expired_marks_the_devices_before_any_renewal() {
    let mut world = world();
    let mut sub = subscription_with_devices(&mut world, 2);
    let expired = now() + DAY * 31;
    world.run(&mut sub, expired);
    sub.spec.max_devices = 1;
    let plan = world.run(&mut sub, expired);
    assert_eq!(plan.writes.len(), 1);
    assert!(wgsub_crds::resources::is_over_limit(world.peer("tg-1-2")));
    assert_eq!(
        sub.status.as_ref().unwrap().devices_over_limit,
        names(&["tg-1-2"])
    );
}

#[test]
fn devices_deleted_after_retention_are_not_announced_as_coming_back() {
    let mut world = world();
    let mut sub = subscription_with_devices(&mut world, 2);
    sub.spec.max_devices = 1;
    world.run(&mut sub, now());
    let gone = now() + DAY * 61;
    let plan = world.run(&mut sub, gone);
    assert_eq!(plan.deletes.len(), 2);
    assert!(!reasons_of(&plan).contains(&reasons::WITHIN_LIMIT));
    assert!(sub.status.as_ref().unwrap().devices_over_limit.is_empty());
}

fn limited(name: &str, created: Option<i64>, enabled: bool, over_limit: bool) -> LimitedDevice<'_> {
    LimitedDevice {
        name,
        created: created.map(|s| Timestamp::from_second(s).unwrap()),
        enabled,
        over_limit,
    }
}

#[test]
fn the_oldest_devices_keep_their_places_ties_broken_by_device_number() {
    let devices = [
        limited("tg-1-10", Some(100), true, false),
        limited("tg-1-2", Some(100), true, false),
        limited("tg-1-3", Some(50), true, false),
        limited("tg-1-1", None, true, false),
    ];
    let over = |limit| devices_over_limit("tg-1", &devices, limit);
    assert_eq!(
        over(1),
        ["tg-1-1", "tg-1-10", "tg-1-2"].map(String::from).into()
    );
    assert_eq!(over(2), ["tg-1-1", "tg-1-10"].map(String::from).into());
    assert_eq!(over(3), ["tg-1-1"].map(String::from).into());
    assert!(over(4).is_empty());
    assert!(over(10).is_empty());
}

/// Every set of up to four devices (each enabled or not, over the limit or not, created at one
/// of two instants or unknown) under every limit from 1 to 5, in every input order.
#[test]
fn the_device_limit_rule_holds_for_every_small_case() {
    const NAMES: [&str; 4] = ["tg-1-1", "tg-1-2", "tg-1-3", "tg-1-4"];
    let choices: Vec<(Option<i64>, bool, bool)> = [None, Some(1), Some(2)]
        .into_iter()
        .flat_map(|c| [false, true].into_iter().map(move |e| (c, e)))
        .flat_map(|(c, e)| [false, true].into_iter().map(move |o| (c, e, o)))
        .collect();
    let mut cases = 0;
    for n in 0..=NAMES.len() {
        let mut pick = vec![0usize; n];
        loop {
            let devices: Vec<LimitedDevice<'_>> = pick
                .iter()
                .zip(NAMES)
                .map(|(&i, name)| {
                    let (created, enabled, over) = choices[i];
                    limited(name, created, enabled, over)
                })
                .collect();
            for limit in 1..=5 {
                cases += 1;
                let over = devices_over_limit("tg-1", &devices, limit);
                // Exactly the devices beyond the limit are marked.
                assert_eq!(over.len(), n.saturating_sub(limit), "{devices:?} {limit}");
                let within = |d: &LimitedDevice<'_>| !over.contains(d.name);
                for a in &devices {
                    for b in &devices {
                        if within(a) || !within(b) {
                            continue;
                        }
                        // `a` is over the limit while `b` keeps a place: `b` must rank first.
                        let rank = |d: &LimitedDevice<'_>| {
                            (!d.enabled, d.over_limit, d.created.is_none(), d.created)
                        };
                        assert!(
                            rank(b) <= rank(a),
                            "{b:?} kept a place over {a:?} (limit {limit})"
                        );
                        assert!(
                            b.enabled || !a.enabled,
                            "a switched-off device displaced one in use"
                        );
                    }
                }
                // A fixed point: deciding on its own output changes nothing.
                let after: Vec<LimitedDevice<'_>> = devices
                    .iter()
                    .map(|d| LimitedDevice {
                        over_limit: over.contains(d.name),
                        ..*d
                    })
                    .collect();
                assert_eq!(devices_over_limit("tg-1", &after, limit), over);
                // The input order does not matter.
                let mut reversed = devices.clone();
                reversed.reverse();
                assert_eq!(devices_over_limit("tg-1", &reversed, limit), over);
            }
            // The next combination.
            let mut i = 0;
            while i < n && pick[i] + 1 == choices.len() {
                pick[i] = 0;
                i += 1;
            }
            if i == n {
                break;
            }
            pick[i] += 1;
        }
    }
    assert_eq!(cases, 5 * (1 + 12 + 144 + 1728 + 20736));
}

/// A peer as `wgsub-api import` writes it: the key and address it had on the old server, and
/// (when the CSV gave the private key) a key Secret labelled with the peer's uid.
fn imported_device(private: &PrivateKey, address: &str) -> (WgPeer, Secret) {
    let mut peer = api_device("tg-1", 1, "wg");
    peer.spec.enabled = true;
    peer.spec.public_key = Some(private.public_key().to_base64());
    peer.spec.address = Some(address.into());
    peer.spec.private_key_secret_ref = Some(SecretKeyRef::new("tg-1-1-key", PRIVATE_KEY_FIELD));
    let mut secret = Secret::default();
    secret.metadata.name = Some("tg-1-1-key".into());
    secret.metadata.namespace = Some(KEYS_NAMESPACE.into());
    secret.metadata.labels = Some(BTreeMap::from([(
        LABEL_PEER_UID.to_owned(),
        "uid-tg-1-1".to_owned(),
    )]));
    secret.data = Some(BTreeMap::from([(
        PRIVATE_KEY_FIELD.to_owned(),
        ByteString(private.to_base64().as_bytes().to_vec()),
    )]));
    (peer, secret)
}

#[test]
fn an_imported_peer_keeps_its_key_and_address_once_paid() {
    let mut world = world();
    let private = PrivateKey::generate();
    let (peer, secret) = imported_device(&private, "10.8.0.77/32");
    world.peers.insert("tg-1-1".into(), peer);
    world.secrets.insert("tg-1-1-key".into(), secret);
    // Never paid while the import writes: the operator leaves the peer alone.
    let mut sub = subscription(1, None);
    assert!(world.run(&mut sub, now()).writes.is_empty());
    // The import's ledger sync writes paidUntil: the peer gets its expiry, nothing else moves.
    let mut sub = subscription(1, Some(now() + DAY * 40));
    let plan = world.run(&mut sub, now());
    assert!(plan.writes.iter().all(|w| w.key.is_none() && !w.allocated));
    assert!(
        reasons_of(&plan)
            .iter()
            .all(|r| *r != reasons::KEY_REGENERATED)
    );
    let peer = world.peer("tg-1-1");
    assert_eq!(peer.spec.public_key, Some(private.public_key().to_base64()));
    assert_eq!(peer.spec.address.as_deref(), Some("10.8.0.77/32"));
    assert_eq!(peer.spec.expires_at, Some(now() + DAY * 40));
    assert_eq!(world.private_key_of("tg-1-1"), private);
    assert!(world.run(&mut sub, now()).writes.is_empty());
}

#[test]
fn an_imported_peer_without_its_private_key_keeps_the_key_the_user_holds() {
    let mut world = world();
    let private = PrivateKey::generate();
    let (mut peer, _) = imported_device(&private, "10.8.0.78/32");
    peer.spec.private_key_secret_ref = None;
    world.peers.insert("tg-1-1".into(), peer);
    let mut sub = subscription(1, Some(now() + DAY));
    let plan = world.run(&mut sub, now());
    assert!(plan.writes.iter().all(|w| w.key.is_none() && !w.allocated));
    let peer = world.peer("tg-1-1");
    assert_eq!(peer.spec.public_key, Some(private.public_key().to_base64()));
    assert_eq!(peer.spec.address.as_deref(), Some("10.8.0.78/32"));
    assert!(world.secrets.is_empty());
}

/// The node-agent reports a peer's counters.
fn report(world: &mut World, peer: &str, rx: i64, tx: i64) {
    let status = world
        .peers
        .get_mut(peer)
        .unwrap()
        .status
        .get_or_insert_default();
    status.rx_bytes = rx;
    status.tx_bytes = tx;
}

fn quota_condition(sub: &VpnSubscription) -> Option<(String, String)> {
    let status = sub.status.as_ref()?;
    condition(
        &status.conditions,
        wgsub_crds::resources::CONDITION_QUOTA_EXHAUSTED,
    )
    .map(|c| (c.status.clone(), c.reason.clone()))
}

fn with_quota(bytes: i64, paid_until: Timestamp) -> VpnSubscription {
    let mut sub = subscription(1, Some(paid_until));
    sub.spec.max_devices = 2;
    sub.spec.traffic_quota = Some(wgsub_crds::resources::TrafficQuota {
        bytes,
        period_days: 30,
    });
    sub
}

#[test]
fn crossing_the_quota_labels_every_device_and_sets_the_condition_leaving_enabled_alone() {
    let mut world = world();
    let paid_until = now() + DAY * 60;
    let mut sub = with_quota(1000, paid_until);
    world.run(&mut sub, now());
    world
        .peers
        .insert("tg-1-2".into(), api_device("tg-1", 2, "wg"));
    world.run(&mut sub, now());
    let usage = sub.status.as_ref().unwrap().usage.clone().unwrap();
    assert_eq!(usage.period_end, Some(now() + DAY * 30));
    assert_eq!(quota_condition(&sub), None);

    report(&mut world, "tg-1-1", 600, 300);
    report(&mut world, "tg-1-2", 50, 40);
    let reported_at = now() + SignedDuration::from_secs(1);
    let first = world.run(&mut sub, reported_at);
    assert!(
        first.status.is_some(),
        "the devices' first counts are written"
    );
    report(&mut world, "tg-1-2", 50, 49);
    let below = world.run(&mut sub, now() + SignedDuration::from_secs(2));
    assert!(below.writes.is_empty(), "999 bytes are within the quota");
    assert!(!below.usage.exhausted);
    assert_eq!(quota_condition(&sub), None);
    assert!(
        below.status.is_none(),
        "more bytes alone wait for the write interval"
    );
    assert_eq!(
        below.requeue_at,
        Some(reported_at + crate::usage::DEFAULT_WRITE_INTERVAL)
    );

    report(&mut world, "tg-1-2", 50, 50);
    let at = now() + SignedDuration::from_secs(3);
    let crossed = world.run(&mut sub, at);
    assert!(crossed.usage.exhausted);
    assert_eq!(crossed.writes.len(), 2);
    for peer in ["tg-1-1", "tg-1-2"] {
        assert!(
            wgsub_crds::resources::is_over_quota(world.peer(peer)),
            "{peer}"
        );
    }
    assert!(world.peer("tg-1-1").spec.enabled);
    assert!(
        !world.peer("tg-1-2").spec.enabled,
        "the user's switch stays"
    );
    assert_eq!(
        quota_condition(&sub),
        Some(("True".into(), reasons::QUOTA_EXHAUSTED.into()))
    );
    let usage = sub.status.as_ref().unwrap().usage.clone().unwrap();
    assert_eq!(usage.period_bytes(), 1000);
    assert_eq!(usage.updated_at, Some(at));
    assert_eq!(reasons_of(&crossed), vec![reasons::QUOTA_EXHAUSTED]);
    assert_eq!(crossed.requeue_at, Some(now() + DAY * 30));
    assert_eq!(
        crossed.events[0].kind,
        EventKind::Warning,
        "{}",
        crossed.events[0].note
    );

    // Reconciling again changes nothing.
    let again = world.decide(&sub, at + SignedDuration::from_secs(1));
    assert!(again.writes.is_empty());
    assert!(again.status.is_none());
    assert!(again.events.is_empty());
}

#[test]
fn a_purchase_lifts_the_quota_and_takes_the_labels_off() {
    let mut world = world();
    let mut sub = with_quota(1000, now() + DAY * 60);
    world.run(&mut sub, now());
    report(&mut world, "tg-1-1", 700, 400);
    world.run(&mut sub, now() + SignedDuration::from_secs(1));
    assert!(wgsub_crds::resources::is_over_quota(world.peer("tg-1-1")));

    let renewed = now() + DAY * 90;
    sub.spec.paid_until = Some(renewed);
    sub.metadata.generation = Some(2);
    let at = now() + SignedDuration::from_hours(1);
    let plan = world.run(&mut sub, at);
    assert!(!plan.usage.exhausted);
    assert!(!wgsub_crds::resources::is_over_quota(world.peer("tg-1-1")));
    assert_eq!(world.peer("tg-1-1").spec.expires_at, Some(renewed));
    assert_eq!(
        quota_condition(&sub),
        Some(("False".into(), reasons::WITHIN_QUOTA.into()))
    );
    let usage = sub.status.as_ref().unwrap().usage.clone().unwrap();
    assert_eq!(usage.period_start, at);
    assert_eq!(usage.period_bytes(), 0);
    assert_eq!(usage.total_bytes(), 1100);
    assert!(reasons_of(&plan).contains(&reasons::WITHIN_QUOTA));
    assert!(reasons_of(&plan).contains(&reasons::RENEWED));
}

#[test]
fn the_next_period_brings_the_devices_back_at_its_start() {
    let mut world = world();
    let mut sub = with_quota(1000, now() + DAY * 60);
    world.run(&mut sub, now());
    report(&mut world, "tg-1-1", 2000, 0);
    let exhausted = world.run(&mut sub, now() + SignedDuration::from_secs(1));
    let end = now() + DAY * 30;
    assert_eq!(exhausted.requeue_at, Some(end));
    assert!(
        world
            .decide(&sub, end - SignedDuration::from_secs(1))
            .usage
            .exhausted
    );
    let plan = world.run(&mut sub, end);
    assert!(!plan.usage.exhausted);
    assert!(!wgsub_crds::resources::is_over_quota(world.peer("tg-1-1")));
    let usage = sub.status.as_ref().unwrap().usage.clone().unwrap();
    assert_eq!(usage.period_start, end);
    assert_eq!(plan.requeue_at, Some(now() + DAY * 60));
}

#[test]
fn an_expired_subscription_over_its_quota_keeps_the_label_on_its_kept_devices() {
    let mut world = world();
    let paid_until = now() + DAY;
    let mut sub = with_quota(1000, paid_until);
    world.run(&mut sub, now());
    report(&mut world, "tg-1-1", 2000, 0);
    world.run(&mut sub, paid_until + SignedDuration::from_secs(1));
    assert_eq!(
        sub.status.as_ref().unwrap().phase,
        Some(SubscriptionPhase::Expired)
    );
    assert!(wgsub_crds::resources::is_over_quota(world.peer("tg-1-1")));
}

#[test]
fn a_subscription_without_quota_or_reported_traffic_carries_no_usage() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    let status = sub.status.clone().unwrap();
    assert_eq!(status.usage, None);
    assert_eq!(quota_condition(&sub), None);
    report(&mut world, "tg-1-1", 5, 6);
    let plan = world.run(&mut sub, now() + SignedDuration::from_secs(1));
    assert!(plan.writes.is_empty());
    let usage = sub.status.clone().unwrap().usage.unwrap();
    assert_eq!((usage.total_rx_bytes, usage.total_tx_bytes), (5, 6));
    assert_eq!(usage.period_end, None);
    assert_eq!(quota_condition(&sub), None);
}

#[test]
fn a_status_written_for_another_reason_carries_the_bytes_held_back() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    report(&mut world, "tg-1-1", 5, 6);
    world.run(&mut sub, now() + SignedDuration::from_secs(1));
    report(&mut world, "tg-1-1", 50, 6);
    let held = world.run(&mut sub, now() + SignedDuration::from_secs(2));
    assert!(held.status.is_none());
    let usage = sub.status.clone().unwrap().usage.unwrap();
    assert_eq!(usage.total_rx_bytes, 5);

    sub.spec.suspended = true;
    sub.metadata.generation = Some(2);
    let at = now() + SignedDuration::from_secs(3);
    let plan = world.run(&mut sub, at);
    assert!(plan.status.is_some());
    let usage = sub.status.clone().unwrap().usage.unwrap();
    assert_eq!(usage.total_rx_bytes, 50);
    assert_eq!(usage.updated_at, Some(at));
}

#[test]
fn a_new_devices_status_and_events_wait_for_the_next_reconcile_which_writes_them() {
    let mut world = world();
    let paid_until = now() + DAY * 30;
    let mut sub = subscription(1, Some(paid_until));
    let decided = world.decide(&sub, now());
    let whole_status = decided.status.clone().unwrap();
    assert!(decided.keys_new_devices());

    let plan = status_after_new_devices(decided, now());
    assert_eq!(plan.writes.len(), 1, "the device is written at once");
    assert_eq!(plan.status, None);
    assert!(plan.events.is_empty(), "{:?}", plan.events);
    assert_eq!(plan.requeue_at, Some(now() + STATUS_FOLLOW_UP));
    world.apply(&mut sub, &plan);
    assert_eq!(sub.status, None);

    let later = now() + SignedDuration::from_secs(1);
    let next = status_after_new_devices(world.decide(&sub, later), later);
    assert!(next.writes.is_empty());
    assert!(!next.keys_new_devices());
    let mut status = next.status.clone().unwrap();
    let became_ready = condition(&status.conditions, CONDITION_READY).unwrap();
    assert_eq!(
        became_ready.last_transition_time.0, later,
        "when it is written"
    );
    status.conditions = whole_status.conditions.clone();
    assert_eq!(status, whole_status, "the status the first plan had");
    assert_eq!(reasons_of(&next), vec![reasons::ACTIVATED]);
    assert_eq!(next.requeue_at, Some(paid_until));
}

#[test]
fn a_status_waits_for_new_devices_no_longer_than_the_follow_up_nor_past_an_earlier_change() {
    let mut world = world();
    let soon = now() + SignedDuration::from_secs(1);
    let sub = subscription(1, Some(soon));
    let plan = status_after_new_devices(world.decide(&sub, now()), now());
    assert_eq!(plan.status, None);
    assert_eq!(plan.requeue_at, Some(soon), "the expiry comes first");
}

#[test]
fn a_plan_that_keys_no_new_device_writes_its_status_at_once() {
    let mut world = world();
    let mut sub = subscription(1, Some(now() + DAY));
    world.run(&mut sub, now());
    sub.spec.paid_until = Some(now() + DAY * 31);
    sub.metadata.generation = Some(2);
    let later = now() + SignedDuration::from_hours(1);
    let decided = world.decide(&sub, later);
    let (status, events) = (decided.status.clone(), decided.events.clone());
    assert!(status.is_some() && !decided.writes.is_empty());

    let plan = status_after_new_devices(decided, later);
    assert_eq!(
        plan.status, status,
        "a renewal's status is written with its peer"
    );
    assert_eq!(plan.events, events);
    assert_eq!(reasons_of(&plan), vec![reasons::RENEWED]);
}

#[test]
fn a_plan_with_a_problem_writes_its_status_at_once_even_beside_a_new_device() {
    // 10.8.0.0/30 holds one client: the first device gets it, the second finds no room.
    let mut world = World::new(Some(server("wg", "10.8.0.0/30", None)));
    let mut sub = subscription(1, Some(now() + DAY));
    sub.spec.max_devices = 2;
    for index in [1, 2] {
        world
            .peers
            .insert(peer_name("tg-1", index), api_device("tg-1", index, "wg"));
    }
    let decided = world.decide(&sub, now());
    assert!(decided.keys_new_devices());
    assert!(matches!(
        decided.problem,
        Some(Problem::PoolExhausted { .. })
    ));
    let status = decided.status.clone();

    let plan = status_after_new_devices(decided, now());
    assert_eq!(plan.status, status);
    assert!(reasons_of(&plan).contains(&reasons::POOL_EXHAUSTED));
}

#[test]
fn only_events_of_status_changes_wait_with_the_status() {
    let event = |reason| PlannedEvent {
        kind: EventKind::Normal,
        reason,
        note: String::new(),
    };
    for reason in [
        reasons::KEY_REGENERATED,
        reasons::MOVED,
        reasons::PEERS_DELETED,
    ] {
        assert!(!reports_status(&event(reason)), "{reason}");
    }
    for reason in [
        reasons::ACTIVATED,
        reasons::RENEWED,
        reasons::EXPIRED,
        reasons::SUSPENDED,
        reasons::POOL_EXHAUSTED,
        reasons::MAX_DEVICES_EXCEEDED,
        reasons::WITHIN_LIMIT,
        reasons::QUOTA_EXHAUSTED,
        reasons::WITHIN_QUOTA,
    ] {
        assert!(reports_status(&event(reason)), "{reason}");
    }
}
