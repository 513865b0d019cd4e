//! The reconcile decision: from what a subscription's reconcile read (the subscription, its
//! server or the server's absence, the subscription's peers and their key Secrets, the clock and
//! the retention period) to what it must write — peers to apply, key Secrets to write, peers to
//! delete, the status, the Events and when to look again.
//!
//! Keys follow one protocol: a public key is published in a peer's spec only once its private
//! half is in the peer's key Secret ([`KeyStep`]). So a reconcile that stops half-way leaves
//! either a peer without a published key (completed by the next reconcile, silently) or a Secret
//! holding a key not yet published (published by the next reconcile). `KeyRegenerated` is
//! reported only when a key that was published lost its private half.
//!
//! Devices beyond `maxDevices` (after a downgrade or a refund) are kept off the interface by the
//! operator's own `wgsub.io/over-limit` label — never by the user's `enabled` switch — keeping
//! their keys and addresses, so they come back unchanged when the limit rises. Which devices
//! keep their places is [`devices_over_limit`].
//!
//! A subscription that used up its data quota for the period ([`crate::usage`]) has every
//! device kept off by the operator's `wgsub.io/over-quota` label, likewise beside the user's
//! switch, until the next period or a purchase; its status carries the folded usage and the
//! `QuotaExhausted` condition.
//!
//! An active subscription without devices gets its first one, unless its user deleted their
//! last device themselves ([`wants_first_device`]): a device the user deleted is not given back.
//!
//! Pure: no I/O, no clock, no randomness of its own (fresh keys come from the `new_key` closure
//! the caller passes). Addresses are claimed from the server's [`UsedAddresses`], which the
//! caller holds under the server's lock, so two decisions never hand out the same address.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use wgsub_crds::devices::wants_first_device;
use wgsub_crds::keys::{PrivateKey, PublicKey};
use wgsub_crds::liveness::subscription_phase;
use wgsub_crds::pool;
use wgsub_crds::resources::{
    CONDITION_DEVICES_OVER_LIMIT, CONDITION_QUOTA_EXHAUSTED, CONDITION_READY, LABEL_SERVER,
    LABEL_SUBSCRIPTION, REASON_QUOTA_EXHAUSTED, TrafficUsage, condition, is_over_limit,
    is_over_quota, new_condition, peer_name, set_condition,
};
use wgsub_crds::{
    SecretKeyRef, SubscriptionPhase, VpnSubscription, VpnSubscriptionSpec, VpnSubscriptionStatus,
    WgPeer, WgServer,
};

use crate::addresses::{UsedAddresses, is_client_v4, is_client_v6};
use crate::usage;

/// The data key of the private key in a key Secret the operator writes.
pub const PRIVATE_KEY_FIELD: &str = "privateKey";
/// The label naming the uid of the peer a key Secret belongs to. Key Secrets live in the peer
/// keys namespace, where no owner reference to the peer can point (owners must share the
/// dependent's namespace), so this label is what ties a key to one peer — not to an older peer
/// of the same name — and what the collection of orphaned keys goes by.
pub const LABEL_PEER_UID: &str = "wgsub.io/peer-uid";
/// The id of a key: a label on its Secret and an annotation on the peer that published it. A
/// Secret is written before a new peer exists (so the peer is written once, with its key), which
/// leaves no uid to tie them; the key id does, for the collection of orphaned keys.
pub const KEY_ID: &str = "wgsub.io/key-id";
/// The annotation on a key Secret telling when the operator last wrote it (RFC 3339): a key
/// whose peer is not written yet is kept for a grace period from then.
pub const ANNOTATION_WRITTEN_AT: &str = "wgsub.io/written-at";
/// The condition type telling that a device got a new key (its config must be downloaded again).
pub const CONDITION_KEY_REGENERATED: &str = "KeyRegenerated";
/// The most devices a subscription may have (the schema's bound on `maxDevices`).
pub const MAX_DEVICES: u32 = 10;

/// Condition reasons and Event reasons.
pub mod reasons {
    /// Every device has its key, address and expiry.
    pub const READY: &str = "Ready";
    /// The subscription was never paid.
    pub const NOT_PAID: &str = "NotPaid";
    /// The paid period is over.
    pub const EXPIRED: &str = "Expired";
    /// An administrator suspended the subscription.
    pub const SUSPENDED: &str = "Suspended";
    /// The subscription's `WgServer` does not exist.
    pub const SERVER_NOT_FOUND: &str = "ServerNotFound";
    /// The subscription's `WgServer` has a pool that does not parse or holds no client.
    pub const INVALID_SERVER: &str = "InvalidServer";
    /// No free address is left in the server's pool.
    pub const POOL_EXHAUSTED: &str = "PoolExhausted";
    /// A device's key Secret was lost, so it got a new key.
    pub const KEY_REGENERATED: &str = "KeyRegenerated";
    /// Event: a subscription became active.
    pub const ACTIVATED: &str = "Activated";
    /// Event: a subscription's paid period moved forward.
    pub const RENEWED: &str = "Renewed";
    /// Event: the retention period ended and the peers were deleted.
    pub const PEERS_DELETED: &str = "PeersDeleted";
    /// Event: devices moved to the subscription's new server (the user's location).
    pub const MOVED: &str = "Moved";
    /// Condition `DevicesOverLimit` (and Event): some devices exceed `maxDevices` and are off.
    pub const MAX_DEVICES_EXCEEDED: &str = "MaxDevicesExceeded";
    /// Condition `DevicesOverLimit` false (and Event): every device is within `maxDevices`
    /// again.
    pub const WITHIN_LIMIT: &str = "WithinLimit";
    /// Condition `QuotaExhausted` (and Event): the period's traffic reached the data quota;
    /// every device is off until the next period or a purchase.
    pub const QUOTA_EXHAUSTED: &str = wgsub_crds::resources::REASON_QUOTA_EXHAUSTED;
    /// Condition `QuotaExhausted` false (and Event): a new period or a purchase brought the
    /// devices back.
    pub const WITHIN_QUOTA: &str = "WithinQuota";
}

/// Normal or Warning, as Kubernetes Events have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// One Event to publish about the subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub kind: EventKind,
    pub reason: &'static str,
    pub note: String,
}

/// The fields of a `WgPeer` the operator owns, as it wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    pub name: String,
    pub server: String,
    pub public_key: Option<String>,
    pub private_key_secret_ref: Option<SecretKeyRef>,
    pub address: Option<String>,
    pub address6: Option<String>,
    pub expires_at: Option<Timestamp>,
    /// Kept off the interface: the subscription's `maxDevices` has no room for it.
    pub over_limit: bool,
    /// Kept off the interface: the subscription used up its data quota for the period.
    pub over_quota: bool,
    /// The [`KEY_ID`] of the published key (none on peers keyed before key ids existed).
    pub key_id: Option<String>,
}

/// The id of a key (a label value): the hex of the first 16 bytes of its public half.
pub fn key_id(public: &PublicKey) -> String {
    public.as_bytes()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

impl DesiredPeer {
    fn from_existing(peer: &WgPeer) -> Self {
        Self {
            name: peer.name_any(),
            server: peer.spec.server.clone(),
            public_key: peer.spec.public_key.clone(),
            private_key_secret_ref: peer.spec.private_key_secret_ref.clone(),
            address: peer.spec.address.clone(),
            address6: peer.spec.address6.clone(),
            expires_at: peer.spec.expires_at,
            over_limit: is_over_limit(peer),
            over_quota: is_over_quota(peer),
            key_id: peer.annotations().get(KEY_ID).cloned(),
        }
    }

    fn fresh(name: String, server: &str) -> Self {
        Self {
            name,
            server: server.to_owned(),
            public_key: None,
            private_key_secret_ref: None,
            address: None,
            address6: None,
            expires_at: None,
            over_limit: false,
            over_quota: false,
            key_id: None,
        }
    }
}

/// A freshly generated key, to be stored in its Secret (labelled with its [`KEY_ID`]) before the
/// peer is written once, with the public half, the Secret reference and the key id.
#[derive(Debug)]
pub struct NewKey {
    /// Where the private half goes: the Secret's name and data key.
    pub reference: SecretKeyRef,
    pub private_key: PrivateKey,
    /// The uid of the peer, when it exists already (a key replaced or first given to it).
    pub peer_uid: Option<String>,
}

impl NewKey {
    /// The [`KEY_ID`] of this key.
    pub fn id(&self) -> String {
        key_id(&self.private_key.public_key())
    }
}

/// What a write does about a device's key. A public key is only ever published once its private
/// half is in the key Secret, so a failed Secret write leaves a peer without a published key
/// (which the next reconcile simply completes), never a published key without its Secret.
#[derive(Debug)]
pub enum KeyStep {
    /// Write the Secret, then apply the peer once with the key's public half, the Secret
    /// reference and the key id. If the peer write fails, the next pass finds a Secret that no
    /// existing peer owns and stores a new key under the same name.
    Store(NewKey),
    /// The Secret, owned by the peer, already holds a private key that is not published (a
    /// previous reconcile stopped between the Secret and the publication): publish it.
    Publish {
        public_key: String,
        reference: SecretKeyRef,
        /// The key id the Secret carries (or, for a Secret from before key ids, the key's own).
        key_id: String,
    },
}

/// The addresses a peer holds on a server, to free once the peer is gone from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub server: String,
    pub peer: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl Holding {
    fn of(peer: &WgPeer) -> Self {
        Self {
            server: peer.spec.server.clone(),
            peer: peer.name_any(),
            v4: peer.spec.address.as_deref().and_then(pool::parse_host_v4),
            v6: peer.spec.address6.as_deref().and_then(pool::parse_host_v6),
        }
    }

    /// Frees these addresses in the server's bookkeeping.
    pub fn release_from(&self, used: &mut UsedAddresses) {
        if let Some(v4) = self.v4 {
            used.release_v4(v4, &self.peer);
        }
        if let Some(v6) = self.v6 {
            used.release_v6(v6, &self.peer);
        }
    }
}

/// One peer to server-side apply.
#[derive(Debug)]
pub struct PeerWrite {
    /// The operator-owned fields of the peer, carrying the key that was published before this
    /// write (none for a new device).
    pub peer: DesiredPeer,
    /// What to do about the key, if anything.
    pub key: Option<KeyStep>,
    /// The write carries an address claimed by this decision.
    pub allocated: bool,
    /// The peer moved here from another server: free its addresses there after the write.
    pub moved_from: Option<Holding>,
}

impl PeerWrite {
    /// The fresh key to store in its Secret before the peer is written with it.
    pub fn key_to_store(&self) -> Option<&NewKey> {
        match &self.key {
            Some(KeyStep::Store(key)) => Some(key),
            _ => None,
        }
    }

    /// The peer with its key published: the end state of the write.
    pub fn published(&self) -> DesiredPeer {
        let mut peer = self.peer.clone();
        match &self.key {
            Some(KeyStep::Store(key)) => {
                peer.public_key = Some(key.private_key.public_key().to_base64());
                peer.private_key_secret_ref = Some(key.reference.clone());
                peer.key_id = Some(key.id());
            }
            Some(KeyStep::Publish {
                public_key,
                reference,
                key_id,
            }) => {
                peer.public_key = Some(public_key.clone());
                peer.private_key_secret_ref = Some(reference.clone());
                peer.key_id = Some(key_id.clone());
            }
            None => {}
        }
        peer
    }
}

/// Why the subscription cannot be served now; the reconcile is retried with backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    ServerNotFound { server: String },
    InvalidServer { server: String, message: String },
    PoolExhausted { server: String, peers: Vec<String> },
}

impl Problem {
    /// The condition (and Event) reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::ServerNotFound { .. } => reasons::SERVER_NOT_FOUND,
            Problem::InvalidServer { .. } => reasons::INVALID_SERVER,
            Problem::PoolExhausted { .. } => reasons::POOL_EXHAUSTED,
        }
    }

    /// A sentence for the condition and the Event.
    pub fn message(&self) -> String {
        match self {
            Problem::ServerNotFound { server } => format!("WgServer {server} does not exist"),
            Problem::InvalidServer { server, message } => {
                format!("WgServer {server} cannot give addresses: {message}")
            }
            Problem::PoolExhausted { server, peers } => format!(
                "the address pool of WgServer {server} is exhausted; no address for {}",
                peers.join(", ")
            ),
        }
    }
}

/// What a reconcile must do.
#[derive(Debug)]
pub struct Plan {
    pub phase: SubscriptionPhase,
    pub writes: Vec<PeerWrite>,
    pub deletes: Vec<Holding>,
    /// The new status, when it differs from the current one.
    pub status: Option<VpnSubscriptionStatus>,
    pub events: Vec<PlannedEvent>,
    /// The next instant at which the subscription changes by the clock alone.
    pub requeue_at: Option<Timestamp>,
    pub problem: Option<Problem>,
    /// The traffic accounting of this reconcile: the latest fold for the operator to keep, the
    /// bytes accounted, the exhaustion.
    pub usage: usage::Accounting,
}

impl Plan {
    /// Some write carries a freshly claimed address.
    pub fn allocates(&self) -> bool {
        self.writes.iter().any(|w| w.allocated)
    }

    /// Some write gives a new device its first key: a peer with nothing published yet goes
    /// onto its server's interface.
    pub fn keys_new_devices(&self) -> bool {
        self.writes
            .iter()
            .any(|w| w.peer.public_key.is_none() && w.key.is_some())
    }
}

/// The longest a status waits behind new devices ([`status_after_new_devices`]).
pub const STATUS_FOLLOW_UP: SignedDuration = SignedDuration::from_secs(2);

/// Whether `event` reports a change the status records (so the next status write reports it
/// again), rather than a write this plan makes (a key regenerated, devices moved or deleted),
/// which no later plan would report.
fn reports_status(event: &PlannedEvent) -> bool {
    ![
        reasons::KEY_REGENERATED,
        reasons::MOVED,
        reasons::PEERS_DELETED,
    ]
    .contains(&event.reason)
}

/// Holds back the status of a plan that keys new devices, with the Events reporting its
/// changes, for the next reconcile to write: the node-agent's first status of the new peers
/// (their `Ready`, their counters) brings that reconcile within moments, and the requeue
/// [`STATUS_FOLLOW_UP`] after `now` at the latest. That reconcile writes a status anyway (the
/// counters fold into its usage), so a new device costs one status write rather than two, and
/// a burst of purchases gets the API server's time for its peers first. A plan with a problem
/// writes its status at once (its condition is what tells what is wrong).
pub fn status_after_new_devices(mut plan: Plan, now: Timestamp) -> Plan {
    if plan.status.is_none() || plan.problem.is_some() || !plan.keys_new_devices() {
        return plan;
    }
    plan.status = None;
    plan.events.retain(|event| !reports_status(event));
    let follow_up = now + STATUS_FOLLOW_UP;
    plan.requeue_at = Some(plan.requeue_at.map_or(follow_up, |at| at.min(follow_up)));
    plan
}

/// Everything one reconcile read.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub subscription: &'a VpnSubscription,
    /// The server used when the subscription names none.
    pub default_server: &'a str,
    /// The subscription's server, `None` when it does not exist.
    pub server: Option<&'a WgServer>,
    /// The subscription's existing peers.
    pub own_peers: &'a [WgPeer],
    /// The key Secrets those peers reference (missing ones are simply absent).
    pub secrets: &'a [Secret],
    pub now: Timestamp,
    /// How long peers outlive the end of the paid period.
    pub retention: SignedDuration,
    /// The operator's latest fold of the subscription's traffic, when it has one (the base of
    /// the next; see [`usage::account`]).
    pub usage_base: Option<&'a TrafficUsage>,
    /// The longest a folded usage waits to be written when nothing else forces a write.
    pub usage_write_interval: SignedDuration,
}

/// The server a subscription uses.
pub fn server_name<'a>(spec: &'a VpnSubscriptionSpec, default_server: &'a str) -> &'a str {
    spec.server.as_deref().unwrap_or(default_server)
}

/// The names under which a subscription's peers may exist: devices 1..=[`MAX_DEVICES`] + 1,
/// whatever `maxDevices` is now, and every peer the status lists. The api and the bot name a
/// device by the smallest free number, and a user never has more than [`MAX_DEVICES`] devices
/// — plus, for a moment, the replacement of a device whose key is rotated, created before the
/// old peer is deleted — so every device they make has one of these names, even beyond a
/// lowered `maxDevices` (the device limit then keeps it off).
pub fn candidate_peer_names(subscription: &VpnSubscription) -> Vec<String> {
    let name = subscription.name_any();
    let mut names: BTreeSet<String> = (1..=MAX_DEVICES + 1).map(|i| peer_name(&name, i)).collect();
    let prefix = format!("{name}-");
    if let Some(status) = &subscription.status {
        names.extend(
            status
                .peers
                .iter()
                .filter(|p| device_index(&prefix, p).is_some())
                .cloned(),
        );
    }
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort_by_key(|n| device_index(&prefix, n));
    names
}

/// The number of devices a subscription may have live: `maxDevices`, within the schema's bounds.
pub fn device_limit(spec: &VpnSubscriptionSpec) -> usize {
    let max = u32::try_from(spec.max_devices)
        .unwrap_or(1)
        .clamp(1, MAX_DEVICES);
    max as usize
}

/// One device as the device limit sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitedDevice<'a> {
    pub name: &'a str,
    pub created: Option<Timestamp>,
    /// The user's switch.
    pub enabled: bool,
    /// Kept off by the limit now (before this decision).
    pub over_limit: bool,
}

impl<'a> LimitedDevice<'a> {
    /// The device limit's view of a peer.
    pub fn of(peer: &'a WgPeer) -> Self {
        Self {
            name: peer.metadata.name.as_deref().unwrap_or_default(),
            created: peer.metadata.creation_timestamp.as_ref().map(|t| t.0),
            enabled: peer.spec.enabled,
            over_limit: is_over_limit(peer),
        }
    }
}

/// The devices of subscription `subscription` that exceed `limit` places.
///
/// The places go, in this order of preference:
/// 1. to devices the user has switched on: a device switched off does not hold a place that a
///    device in use needs (so a user can choose which devices stay, by switching others off);
/// 2. to devices that hold a place now: switching on a device that is over the limit does not
///    push out one in use — the user frees a place by switching another device off first;
/// 3. to the older device (creation time; a device without one counts as newest), then the
///    lower device number, then the name.
///
/// Devices switched off are marked too when they have no place, so that switching one on never
/// puts it on the interface before the operator has looked. Every device keeps its key and
/// address either way. The result is a fixed point: deciding again on its own output gives the
/// same set, so the limit never flips devices back and forth.
pub fn devices_over_limit(
    subscription: &str,
    devices: &[LimitedDevice<'_>],
    limit: usize,
) -> BTreeSet<String> {
    let prefix = format!("{subscription}-");
    let mut ranked: Vec<&LimitedDevice<'_>> = devices.iter().collect();
    ranked.sort_by_key(|d| {
        (
            !d.enabled,
            d.over_limit,
            d.created.is_none(),
            d.created,
            device_index(&prefix, d.name).unwrap_or(u32::MAX),
            d.name,
        )
    });
    ranked
        .into_iter()
        .skip(limit)
        .map(|d| d.name.to_owned())
        .collect()
}

/// The name of the Secret holding a peer's private key.
pub fn key_secret_name(peer: &str) -> String {
    format!("{peer}-key")
}

fn device_index(prefix: &str, peer: &str) -> Option<u32> {
    let digits = peer.strip_prefix(prefix)?;
    if digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The pools of a server, or why it cannot give addresses.
fn server_pools(
    server: Option<&WgServer>,
    name: &str,
) -> Result<(Ipv4Net, Option<Ipv6Net>), Problem> {
    let server = server.ok_or_else(|| Problem::ServerNotFound {
        server: name.to_owned(),
    })?;
    let invalid = |message: String| Problem::InvalidServer {
        server: name.to_owned(),
        message,
    };
    let v4 = pool::parse_pool_v4(&server.spec.address_pool).map_err(|e| invalid(e.to_string()))?;
    if pool::client_capacity_v4(v4) == 0 {
        return Err(invalid(format!(
            "address pool {v4} has no room for a client"
        )));
    }
    let v6 = match &server.spec.address_pool6 {
        Some(text) => {
            let v6 = pool::parse_pool_v6(text).map_err(|e| invalid(e.to_string()))?;
            if v6.prefix_len() >= 127 {
                return Err(invalid(format!(
                    "address pool {v6} has no room for a client"
                )));
            }
            Some(v6)
        }
        None => None,
    };
    Ok((v4, v6))
}

/// What a device's key needs, and whether a key that was published is being replaced.
#[derive(Debug)]
enum KeyNeed {
    /// The Secret holds the private half of `publicKey`, or the user brought the key (a public
    /// key and no Secret reference).
    Keep,
    /// A new key must be generated and stored.
    Store {
        reference: SecretKeyRef,
        replaces_published: bool,
    },
    /// The peer's own Secret holds a private key that is not the published one: publish it.
    Publish {
        public_key: PublicKey,
        reference: SecretKeyRef,
        key_id: String,
        replaces_published: bool,
    },
}

/// The private key stored in the referenced Secret, and whether that Secret belongs to the
/// peer with uid `owner` (by its [`LABEL_PEER_UID`] label, an owner reference when the keys
/// share the peer's namespace, or the [`KEY_ID`] the peer carries, `owner_key_id`).
fn stored_key(
    secrets: &[Secret],
    reference: &SecretKeyRef,
    owner: Option<&str>,
    owner_key_id: Option<&str>,
) -> (Option<PrivateKey>, bool, Option<String>) {
    let Some(secret) = secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(reference.name.as_str()))
    else {
        return (None, false, None);
    };
    let owned = owner.is_some_and(|uid| {
        secret.labels().get(LABEL_PEER_UID).map(String::as_str) == Some(uid)
            || secret.owner_references().iter().any(|o| o.uid == uid)
    }) || owner_key_id
        .is_some_and(|id| secret.labels().get(KEY_ID).map(String::as_str) == Some(id));
    let key = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .and_then(|bytes| std::str::from_utf8(&bytes.0).ok())
        .and_then(|text| PrivateKey::from_base64(text).ok());
    (key, owned, secret.labels().get(KEY_ID).cloned())
}

/// Where `desired`'s key stands, given the Secrets read. A key stored in a Secret that the peer
/// (uid `owner`) does not own is never published: it may be a leftover of an older peer.
fn key_need(desired: &DesiredPeer, owner: Option<&str>, secrets: &[Secret]) -> KeyNeed {
    let published = desired
        .public_key
        .as_deref()
        .and_then(|text| PublicKey::from_base64(text).ok());
    if published.is_some() && desired.private_key_secret_ref.is_none() {
        return KeyNeed::Keep;
    }
    let reference = desired
        .private_key_secret_ref
        .clone()
        .unwrap_or_else(|| SecretKeyRef::new(key_secret_name(&desired.name), PRIVATE_KEY_FIELD));
    let (stored, owned, stored_id) =
        stored_key(secrets, &reference, owner, desired.key_id.as_deref());
    let replaces_published = published.is_some();
    match (published, stored) {
        (Some(public), Some(private)) if private.public_key() == public => KeyNeed::Keep,
        (_, Some(private)) if owned => KeyNeed::Publish {
            key_id: stored_id.unwrap_or_else(|| key_id(&private.public_key())),
            public_key: private.public_key(),
            reference,
            replaces_published,
        },
        _ => KeyNeed::Store {
            reference,
            replaces_published,
        },
    }
}

/// The names of the key Secrets a reconcile must read for `peers`: the referenced ones, and
/// for a peer without a published key the Secret its key is stored in before publication.
/// Peers whose user brought the key need none.
pub fn key_secret_names(peers: &[WgPeer]) -> BTreeSet<String> {
    peers
        .iter()
        .filter_map(|peer| match &peer.spec.private_key_secret_ref {
            Some(reference) => Some(reference.name.clone()),
            None if peer.spec.public_key.is_none() => Some(key_secret_name(&peer.name_any())),
            None => None,
        })
        .collect()
}

/// Whether `existing` already carries everything in `desired` (spec, labels, controller owner).
pub fn peer_is_current(
    existing: &WgPeer,
    desired: &DesiredPeer,
    subscription: &VpnSubscription,
) -> bool {
    let labels = existing.labels();
    let owned = existing
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == subscription.metadata.uid.as_ref());
    DesiredPeer::from_existing(existing) == *desired
        && labels.get(LABEL_SUBSCRIPTION) == Some(&subscription.name_any())
        && labels.get(LABEL_SERVER) == Some(&desired.server)
        && owned
}

/// The write for a peer of an active subscription on a server with usable pools: keep its key
/// and address when they are good, give it what it lacks. `Err` when the pool has no room.
#[allow(clippy::too_many_arguments)]
fn ensure_device(
    existing: Option<&WgPeer>,
    name: &str,
    server: &str,
    pools: (Ipv4Net, Option<Ipv6Net>),
    paid_until: Timestamp,
    (over_limit, over_quota): (bool, bool),
    subscription: &VpnSubscription,
    secrets: &[Secret],
    used: &mut UsedAddresses,
    new_key: &mut dyn FnMut() -> PrivateKey,
    regenerated: &mut Vec<String>,
) -> Result<Option<PeerWrite>, ()> {
    let mut desired = match existing {
        Some(peer) => DesiredPeer::from_existing(peer),
        None => DesiredPeer::fresh(name.to_owned(), server),
    };
    let moved_from = existing
        .filter(|peer| peer.spec.server != server)
        .map(Holding::of);
    if moved_from.is_some() {
        desired.server = server.to_owned();
        desired.address = None;
        desired.address6 = None;
    }
    let (pool4, pool6) = pools;
    let mut allocated = false;

    let current_v4 = desired.address.as_deref().and_then(pool::parse_host_v4);
    let keep_v4 = current_v4.filter(|a| is_client_v4(pool4, *a) && used.claim_v4(*a, name));
    let new_v4 = if keep_v4.is_none() {
        if let Some(old) = current_v4 {
            used.release_v4(old, name);
        }
        let address = used.allocate_v4(pool4, name).map_err(|_| ())?;
        desired.address = Some(pool::host_cidr_v4(address));
        allocated = true;
        Some(address)
    } else {
        None
    };

    match pool6 {
        Some(pool6) => {
            let current_v6 = desired.address6.as_deref().and_then(pool::parse_host_v6);
            let keep_v6 = current_v6.filter(|a| is_client_v6(pool6, *a) && used.claim_v6(*a, name));
            if keep_v6.is_none() {
                if let Some(old) = current_v6 {
                    used.release_v6(old, name);
                }
                match used.allocate_v6(pool6, name) {
                    Ok(address) => {
                        desired.address6 = Some(pool::host_cidr_v6(address));
                        allocated = true;
                    }
                    Err(_) => {
                        if let Some(address) = new_v4 {
                            used.release_v4(address, name);
                        }
                        return Err(());
                    }
                }
            }
        }
        None => desired.address6 = None,
    }

    let owner = existing.and_then(|peer| peer.metadata.uid.as_deref());
    let key = match key_need(&desired, owner, secrets) {
        KeyNeed::Keep => None,
        KeyNeed::Store {
            reference,
            replaces_published,
        } => {
            if replaces_published {
                regenerated.push(name.to_owned());
            }
            Some(KeyStep::Store(NewKey {
                reference,
                private_key: new_key(),
                peer_uid: owner.map(str::to_owned),
            }))
        }
        KeyNeed::Publish {
            public_key,
            reference,
            key_id,
            replaces_published,
        } => {
            if replaces_published {
                regenerated.push(name.to_owned());
            }
            Some(KeyStep::Publish {
                public_key: public_key.to_base64(),
                reference,
                key_id,
            })
        }
    };
    let published = desired
        .public_key
        .as_deref()
        .is_some_and(|text| PublicKey::from_base64(text).is_ok());
    if key.is_some() && !published {
        // Until the new key is stored, the peer carries no key at all (the CRD refuses a
        // Secret reference without a public key).
        desired.public_key = None;
        desired.private_key_secret_ref = None;
        desired.key_id = None;
    }
    desired.expires_at = Some(paid_until);
    desired.over_limit = over_limit;
    desired.over_quota = over_quota;

    let current = existing.is_some_and(|peer| peer_is_current(peer, &desired, subscription));
    if current && key.is_none() {
        return Ok(None);
    }
    Ok(Some(PeerWrite {
        peer: desired,
        key,
        allocated,
        moved_from,
    }))
}

/// The write that keeps a peer's `expiresAt` equal to the subscription's `paidUntil`, its
/// place within the device limit and its quota label, touching nothing else.
fn mirror_expiry(
    peer: &WgPeer,
    expires_at: Timestamp,
    (over, over_quota): (&BTreeSet<String>, bool),
    subscription: &VpnSubscription,
) -> Option<PeerWrite> {
    let mut desired = DesiredPeer::from_existing(peer);
    desired.expires_at = Some(expires_at);
    desired.over_limit = over.contains(&desired.name);
    desired.over_quota = over_quota;
    (!peer_is_current(peer, &desired, subscription)).then_some(PeerWrite {
        peer: desired,
        key: None,
        allocated: false,
        moved_from: None,
    })
}

/// Decides what one reconcile of `observed.subscription` must write.
///
/// `used` is the bookkeeping of the addresses of the subscription's server
/// ([`server_name`]); addresses given to the subscription's peers are claimed in it.
pub fn decide(
    observed: &Observed<'_>,
    used: &mut UsedAddresses,
    new_key: &mut dyn FnMut() -> PrivateKey,
) -> Plan {
    let subscription = observed.subscription;
    let spec = &subscription.spec;
    let name = subscription.name_any();
    let now = observed.now;
    let phase = subscription_phase(spec, now);
    let server = server_name(spec, observed.default_server);
    let prefix = format!("{name}-");

    let mut peers: Vec<&WgPeer> = observed.own_peers.iter().collect();
    peers.sort_by_key(|p| {
        (
            device_index(&prefix, &p.name_any()).unwrap_or(u32::MAX),
            p.name_any(),
        )
    });

    let mut writes = Vec::new();
    let mut deletes = Vec::new();
    let mut regenerated = Vec::new();
    let mut problem = None;
    let mut requeue_at = None;
    let mut remaining: BTreeSet<String> = peers.iter().map(|p| p.name_any()).collect();
    let limited: Vec<LimitedDevice<'_>> = peers.iter().map(|p| LimitedDevice::of(p)).collect();
    let over = devices_over_limit(&name, &limited, device_limit(spec));
    let old = subscription.status.clone().unwrap_or_default();
    let was_exhausted =
        condition(&old.conditions, CONDITION_QUOTA_EXHAUSTED).is_some_and(|c| c.status == "True");
    let accounting = usage::account(
        spec,
        old.usage.as_ref(),
        was_exhausted,
        observed.usage_base,
        observed.own_peers,
        now,
        observed.usage_write_interval,
    );
    let over_quota = accounting.exhausted;

    let ready: (bool, &'static str, String) = match (phase, spec.paid_until) {
        (SubscriptionPhase::Active, Some(paid_until)) => {
            requeue_at = Some(paid_until);
            match server_pools(observed.server, server) {
                Err(found) => {
                    writes.extend(peers.iter().filter_map(|p| {
                        mirror_expiry(p, paid_until, (&over, over_quota), subscription)
                    }));
                    let ready = (false, found.reason(), found.message());
                    problem = Some(found);
                    ready
                }
                Ok(pools) => {
                    let mut devices: Vec<(Option<&WgPeer>, String)> =
                        peers.iter().map(|p| (Some(*p), p.name_any())).collect();
                    if devices.is_empty() && wants_first_device(subscription) {
                        devices.push((None, peer_name(&name, 1)));
                    }
                    let mut exhausted = Vec::new();
                    for (existing, device) in devices {
                        match ensure_device(
                            existing,
                            &device,
                            server,
                            pools,
                            paid_until,
                            (over.contains(&device), over_quota),
                            subscription,
                            observed.secrets,
                            used,
                            new_key,
                            &mut regenerated,
                        ) {
                            Ok(write) => {
                                remaining.insert(device);
                                writes.extend(write);
                            }
                            Err(()) => exhausted.push(device),
                        }
                    }
                    if exhausted.is_empty() {
                        (
                            true,
                            reasons::READY,
                            format!(
                                "{} device(s) on WgServer {server}, live until {paid_until}",
                                remaining.len()
                            ),
                        )
                    } else {
                        let found = Problem::PoolExhausted {
                            server: server.to_owned(),
                            peers: exhausted,
                        };
                        let ready = (false, found.reason(), found.message());
                        problem = Some(found);
                        ready
                    }
                }
            }
        }
        (SubscriptionPhase::Expired | SubscriptionPhase::Suspended, Some(paid_until)) => {
            let delete_at = paid_until.checked_add(observed.retention).ok();
            if delete_at.is_some_and(|at| now >= at) {
                deletes.extend(peers.iter().map(|p| Holding::of(p)));
                remaining.clear();
            } else {
                writes.extend(peers.iter().filter_map(|p| {
                    mirror_expiry(p, paid_until, (&over, over_quota), subscription)
                }));
                if !peers.is_empty() {
                    requeue_at = delete_at;
                }
            }
            if phase == SubscriptionPhase::Suspended {
                (
                    false,
                    reasons::SUSPENDED,
                    "suspended by an administrator".to_owned(),
                )
            } else {
                (
                    false,
                    reasons::EXPIRED,
                    format!("the paid period ended at {paid_until}"),
                )
            }
        }
        _ => (false, reasons::NOT_PAID, "never paid".to_owned()),
    };

    // Devices leaving the interface are written before those joining it, so that the limit
    // holds at every instant in between.
    writes.sort_by_key(|write| !(write.peer.over_limit || write.peer.over_quota));
    if deletes.is_empty() {
        // The end of the quota's period, or when a held-back usage is due.
        requeue_at = [requeue_at, accounting.requeue_at]
            .into_iter()
            .flatten()
            .min();
    }

    let generation = subscription.metadata.generation;
    let mut status = old.clone();
    status.phase = Some(phase);
    status.expires_at = spec.paid_until;
    status.peers = remaining.iter().cloned().collect();
    status
        .peers
        .sort_by_key(|p| (device_index(&prefix, p).unwrap_or(u32::MAX), p.clone()));
    status.observed_generation = generation;
    let (ready_status, ready_reason, ready_message) = ready;
    set_condition(
        &mut status.conditions,
        new_condition(
            CONDITION_READY,
            ready_status,
            ready_reason,
            ready_message,
            generation,
            now,
        ),
    );
    let limit = device_limit(spec);
    status.devices_over_limit = remaining
        .iter()
        .filter(|peer| over.contains(*peer))
        .cloned()
        .collect();
    status
        .devices_over_limit
        .sort_by_key(|p| (device_index(&prefix, p).unwrap_or(u32::MAX), p.clone()));
    let over_limit_note = format!(
        "{} device(s) exceed maxDevices {limit} and are kept off, keeping their keys and addresses until the limit rises: {}",
        status.devices_over_limit.len(),
        status.devices_over_limit.join(", ")
    );
    if !status.devices_over_limit.is_empty() {
        set_condition(
            &mut status.conditions,
            new_condition(
                CONDITION_DEVICES_OVER_LIMIT,
                true,
                reasons::MAX_DEVICES_EXCEEDED,
                over_limit_note.clone(),
                generation,
                now,
            ),
        );
    } else if condition(&status.conditions, CONDITION_DEVICES_OVER_LIMIT).is_some() {
        set_condition(
            &mut status.conditions,
            new_condition(
                CONDITION_DEVICES_OVER_LIMIT,
                false,
                reasons::WITHIN_LIMIT,
                format!("every device is within maxDevices {limit}"),
                generation,
                now,
            ),
        );
    }
    if !regenerated.is_empty() {
        set_condition(
            &mut status.conditions,
            new_condition(
                CONDITION_KEY_REGENERATED,
                true,
                reasons::KEY_REGENERATED,
                format!(
                    "new key for {} at {now}: the published key's private half was lost from its Secret; download the config again",
                    regenerated.join(", ")
                ),
                generation,
                now,
            ),
        );
    }

    // A status written for another reason carries the latest fold too.
    status.usage = if status != old {
        accounting.folded.as_ref().map(|folded| TrafficUsage {
            updated_at: Some(now),
            ..folded.clone()
        })
    } else {
        accounting.status_usage.clone()
    };
    let quota_note = quota_note(spec, status.usage.as_ref());
    if over_quota {
        set_condition(
            &mut status.conditions,
            new_condition(
                CONDITION_QUOTA_EXHAUSTED,
                true,
                REASON_QUOTA_EXHAUSTED,
                quota_note.clone(),
                generation,
                now,
            ),
        );
    } else if condition(&status.conditions, CONDITION_QUOTA_EXHAUSTED).is_some() {
        set_condition(
            &mut status.conditions,
            new_condition(
                CONDITION_QUOTA_EXHAUSTED,
                false,
                reasons::WITHIN_QUOTA,
                quota_note.clone(),
                generation,
                now,
            ),
        );
    }

    let mut events = transition_events(&old, phase, spec.paid_until);
    if let Some(found) = &problem {
        let previous = condition(&old.conditions, CONDITION_READY).map(|c| c.reason.as_str());
        if previous != Some(found.reason()) {
            events.push(PlannedEvent {
                kind: EventKind::Warning,
                reason: found.reason(),
                note: found.message(),
            });
        }
    }
    events.extend(regenerated.iter().map(|peer| PlannedEvent {
        kind: EventKind::Warning,
        reason: reasons::KEY_REGENERATED,
        note: format!(
            "the key Secret of {peer} lost its published key, so it got a new key; its config must be downloaded again"
        ),
    }));
    let back: Vec<&str> = old
        .devices_over_limit
        .iter()
        .filter(|peer| remaining.contains(*peer) && !over.contains(*peer))
        .map(String::as_str)
        .collect();
    if status.devices_over_limit != old.devices_over_limit {
        if !status.devices_over_limit.is_empty() {
            events.push(PlannedEvent {
                kind: EventKind::Warning,
                reason: reasons::MAX_DEVICES_EXCEEDED,
                note: over_limit_note,
            });
        } else if !back.is_empty() {
            events.push(PlannedEvent {
                kind: EventKind::Normal,
                reason: reasons::WITHIN_LIMIT,
                note: format!(
                    "every device is within maxDevices {limit}; {} may connect again",
                    back.join(", ")
                ),
            });
        }
    }
    if over_quota && !was_exhausted {
        events.push(PlannedEvent {
            kind: EventKind::Warning,
            reason: reasons::QUOTA_EXHAUSTED,
            note: quota_note,
        });
    } else if was_exhausted && !over_quota {
        events.push(PlannedEvent {
            kind: EventKind::Normal,
            reason: reasons::WITHIN_QUOTA,
            note: quota_note,
        });
    }
    let moved: Vec<&str> = writes
        .iter()
        .filter(|write| write.moved_from.is_some())
        .map(|write| write.peer.name.as_str())
        .collect();
    if !moved.is_empty() {
        events.push(PlannedEvent {
            kind: EventKind::Normal,
            reason: reasons::MOVED,
            note: format!(
                "moved {} to WgServer {server}: new addresses from its pool, the same keys; their configs must be downloaded again",
                moved.join(", ")
            ),
        });
    }
    if !deletes.is_empty() {
        let names: Vec<&str> = deletes.iter().map(|d| d.peer.as_str()).collect();
        events.push(PlannedEvent {
            kind: EventKind::Normal,
            reason: reasons::PEERS_DELETED,
            note: format!(
                "retention ended: deleted {} and their keys; their addresses are free again",
                names.join(", ")
            ),
        });
    }

    Plan {
        phase,
        writes,
        deletes,
        status: (status != old).then_some(status),
        events,
        requeue_at,
        problem,
        usage: accounting,
    }
}

/// The sentence of the `QuotaExhausted` condition and its Events: the period's traffic against
/// the quota, and when the period ends.
fn quota_note(spec: &VpnSubscriptionSpec, usage: Option<&TrafficUsage>) -> String {
    let used = usage.map_or(0, TrafficUsage::period_bytes);
    let end = usage
        .and_then(|u| u.period_end)
        .map(|end| format!("; the period ends at {end}"))
        .unwrap_or_default();
    match spec.traffic_quota {
        Some(quota) if used >= quota.bytes => format!(
            "{used} of {} bytes used this period: every device is off until the next period or a purchase{end}",
            quota.bytes
        ),
        Some(quota) => format!("{used} of {} bytes used this period{end}", quota.bytes),
        None => "no data quota".to_owned(),
    }
}

fn transition_events(
    old: &VpnSubscriptionStatus,
    phase: SubscriptionPhase,
    paid_until: Option<Timestamp>,
) -> Vec<PlannedEvent> {
    let until = paid_until.map(|t| t.to_string()).unwrap_or_default();
    let event = |kind, reason, note: String| vec![PlannedEvent { kind, reason, note }];
    match (old.phase, phase) {
        (Some(SubscriptionPhase::Active), SubscriptionPhase::Active) => {
            if paid_until > old.expires_at && old.expires_at.is_some() {
                event(
                    EventKind::Normal,
                    reasons::RENEWED,
                    format!("paid until {until}"),
                )
            } else {
                vec![]
            }
        }
        (Some(SubscriptionPhase::Expired), SubscriptionPhase::Active) => event(
            EventKind::Normal,
            reasons::RENEWED,
            format!("renewed after expiry, paid until {until}"),
        ),
        (Some(SubscriptionPhase::Suspended), SubscriptionPhase::Active) => event(
            EventKind::Normal,
            reasons::ACTIVATED,
            format!("suspension lifted, paid until {until}"),
        ),
        (_, SubscriptionPhase::Active) => event(
            EventKind::Normal,
            reasons::ACTIVATED,
            format!("paid until {until}"),
        ),
        (previous, SubscriptionPhase::Expired) if previous != Some(SubscriptionPhase::Expired) => {
            event(
                EventKind::Normal,
                reasons::EXPIRED,
                format!("the paid period ended at {until}"),
            )
        }
        (previous, SubscriptionPhase::Suspended)
            if previous != Some(SubscriptionPhase::Suspended) =>
        {
            event(
                EventKind::Warning,
                reasons::SUSPENDED,
                "suspended by an administrator".to_owned(),
            )
        }
        _ => vec![],
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
