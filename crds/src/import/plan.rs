//! The import plan: the old server's peers, the CSV and what already exists (the `WgServer`'s
//! pools, the `WgPeer`s, the ledger's users, the `VpnSubscription`s) → one [`ImportDevice`] per
//! CSV row saying what is still to write, or every conflict, each naming its line or object.
//!
//! An import is all or nothing: one conflict refuses the whole plan. A row already imported
//! (same user, date, key and address) plans no writes, so running the import twice changes
//! nothing the second time; a row imported half-way (a crash between writes) plans the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use jiff::{SignedDuration, Timestamp};

use super::mapping::{MappingRow, PeerRef};
use super::source::SourcePeer;
use crate::keys::{PrivateKey, PublicKey};
use crate::pool;
use crate::resources::{peer_name, subscription_name};

/// The most days one import entry may give (the ledger's bound on a grant).
pub const MAX_IMPORT_DAYS: i64 = 3660;

const DAY: SignedDuration = SignedDuration::from_hours(24);

/// The `WgServer` the peers move to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetServer {
    pub name: String,
    pub pool: Ipv4Net,
    pub pool6: Option<Ipv6Net>,
}

/// A `WgPeer` that exists now (of any server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingPeer {
    pub name: String,
    pub server: String,
    pub public_key: Option<String>,
    pub address: Option<String>,
}

/// A user the ledger holds now, and the `paidUntil` of their import entry when they have one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerUser {
    pub imported_until: Option<Timestamp>,
}

/// What exists before the import.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    pub server: &'a TargetServer,
    pub peers: &'a [ExistingPeer],
    pub users: &'a BTreeMap<i64, LedgerUser>,
    pub subscriptions: &'a BTreeSet<String>,
    pub now: Timestamp,
}

/// The ledger entry of kind `import`: `days` from `at`, where `at + days = paidUntil` exactly,
/// so the fold of a user with nothing else gives the imported `paidUntil`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportEntry {
    pub at: Timestamp,
    pub days: i32,
}

/// The entry for `paid_until` imported at `now`: whole days, the first one starting at or
/// before `now`.
pub fn import_entry(paid_until: Timestamp, now: Timestamp) -> ImportEntry {
    let left = paid_until.duration_since(now).as_secs();
    let day = DAY.as_secs();
    let days = ((left + day - 1) / day).max(1);
    ImportEntry {
        at: paid_until - DAY * days as i32,
        days: days as i32,
    }
}

/// One device to import and what of it is still to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportDevice {
    /// The CSV line.
    pub line: usize,
    /// The line of the peer in the server's configuration.
    pub source_line: usize,
    pub telegram_id: i64,
    pub subscription: String,
    pub peer: String,
    pub device_name: String,
    pub public_key: PublicKey,
    pub private_key: Option<PrivateKey>,
    pub address: Ipv4Addr,
    /// Carried only when the server has an IPv6 pool.
    pub address6: Option<Ipv6Addr>,
    pub paid_until: Timestamp,
    /// The `VpnSubscription` is still to create.
    pub create_subscription: bool,
    /// The `WgPeer` (and its key Secret, when the private key is known) is still to create.
    pub create_peer: bool,
    /// The user and their import entry are still to write.
    pub ledger_entry: Option<ImportEntry>,
}

impl ImportDevice {
    /// Nothing of this device is left to write.
    pub fn is_done(&self) -> bool {
        !self.create_subscription && !self.create_peer && self.ledger_entry.is_none()
    }
}

/// A plan that can be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub devices: Vec<ImportDevice>,
    /// Lines of server peers no CSV row maps (left out of the import).
    pub unmapped: Vec<usize>,
}

fn conflict(line: usize, message: impl std::fmt::Display) -> String {
    format!("CSV line {line}: {message}")
}

fn source_index(source: &[SourcePeer]) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut errors = Vec::new();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_address: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for (i, peer) in source.iter().enumerate() {
        if let Some(&first) = by_key.get(&peer.public_key.to_base64()) {
            errors.push(format!(
                "server line {}: public key {} repeats the peer of line {}",
                peer.line, peer.public_key, source[first].line
            ));
        } else {
            by_key.insert(peer.public_key.to_base64(), i);
        }
        if let Some(&first) = by_address.get(&peer.address) {
            errors.push(format!(
                "server line {}: address {} repeats the peer of line {}",
                peer.line, peer.address, source[first].line
            ));
        } else {
            by_address.insert(peer.address, i);
        }
    }
    (errors, by_key)
}

fn is_client_v4(pool: Ipv4Net, address: Ipv4Addr) -> bool {
    pool.contains(&address)
        && address != pool::server_address_v4(pool)
        && (pool.prefix_len() >= 31 || (address != pool.network() && address != pool.broadcast()))
}

fn is_client_v6(pool: Ipv6Net, address: Ipv6Addr) -> bool {
    pool.contains(&address) && address != pool.network() && address != pool::server_address_v6(pool)
}

/// Plans the import of `rows` (the CSV) of the peers `source` (the old server) into `current`.
/// `Err` lists every conflict found, each naming the CSV or server line and the object.
pub fn plan(
    source: &[SourcePeer],
    rows: &[MappingRow],
    current: Current<'_>,
) -> Result<Plan, Vec<String>> {
    let (mut errors, by_key) = source_index(source);
    let server = current.server;
    let mut mapped: BTreeMap<usize, usize> = BTreeMap::new();
    let mut users: BTreeMap<i64, usize> = BTreeMap::new();
    let mut devices = Vec::new();
    for row in rows {
        let found = match &row.peer {
            PeerRef::PublicKey(key) => by_key.get(&key.to_base64()).copied(),
            PeerRef::Address(address) => source.iter().position(|p| p.address == *address),
        };
        let Some(index) = found else {
            errors.push(conflict(
                row.line,
                format_args!("peer {} is not a peer of the server", row.peer),
            ));
            continue;
        };
        let peer = &source[index];
        if let Some(first) = mapped.insert(index, row.line) {
            errors.push(conflict(
                row.line,
                format_args!("peer {} is already mapped on line {first}", row.peer),
            ));
            continue;
        }
        if let Some(first) = users.insert(row.telegram_id, row.line) {
            errors.push(conflict(
                row.line,
                format_args!(
                    "user {} is already imported on line {first} (one device per user)",
                    row.telegram_id
                ),
            ));
            continue;
        }
        let subscription = subscription_name(row.telegram_id);
        let name = peer_name(&subscription, 1);
        let key_text = peer.public_key.to_base64();
        let mut row_errors = Vec::new();

        let ledger_entry = match current.users.get(&row.telegram_id) {
            None => {
                if row.paid_until <= current.now {
                    row_errors.push(format!("paid_until {} is in the past", row.paid_until));
                } else if row.paid_until.duration_since(current.now) > DAY * MAX_IMPORT_DAYS as i32
                {
                    row_errors.push(format!(
                        "paid_until {} is more than {MAX_IMPORT_DAYS} days away",
                        row.paid_until
                    ));
                }
                if current.subscriptions.contains(&subscription) {
                    row_errors.push(format!("VpnSubscription {subscription} already exists for a user the ledger does not hold"));
                }
                Some(import_entry(row.paid_until, current.now))
            }
            Some(LedgerUser {
                imported_until: None,
            }) => {
                row_errors.push(format!("user {} is already in the ledger", row.telegram_id));
                None
            }
            Some(LedgerUser {
                imported_until: Some(until),
            }) if *until != row.paid_until => {
                row_errors.push(format!(
                    "user {} was imported before with paid_until {until}",
                    row.telegram_id
                ));
                None
            }
            Some(_) => None,
        };
        if let Some(private) = &row.private_key
            && private.public_key() != peer.public_key
        {
            row_errors.push(format!(
                "private_key is not the private half of {}",
                peer.public_key
            ));
        }
        if peer.preshared_key.is_some() {
            row_errors.push(format!(
                "the peer of server line {} uses a PresharedKey, which the import does not carry yet",
                peer.line
            ));
        }
        if !is_client_v4(server.pool, peer.address) {
            row_errors.push(format!(
                "address {} is outside the client addresses of pool {} of WgServer {}",
                peer.address, server.pool, server.name
            ));
        }
        let address6 = match (server.pool6, peer.address6) {
            (Some(pool6), Some(address6)) if !is_client_v6(pool6, address6) => {
                row_errors.push(format!(
                    "address {address6} is outside the client addresses of pool {pool6} of WgServer {}",
                    server.name
                ));
                None
            }
            (Some(_), address6) => address6,
            (None, _) => None,
        };
        let mut create_peer = true;
        for existing in current.peers {
            let same_key = existing.public_key.as_deref() == Some(key_text.as_str());
            let holds_address = existing.server == server.name
                && existing.address.as_deref().and_then(pool::parse_host_v4) == Some(peer.address);
            if existing.name == name {
                if same_key && holds_address {
                    create_peer = false;
                } else {
                    row_errors.push(format!(
                        "WgPeer {name} already exists with another key or address"
                    ));
                }
            } else if same_key {
                row_errors.push(format!(
                    "public key {} is already used by WgPeer {}",
                    peer.public_key, existing.name
                ));
            } else if holds_address {
                row_errors.push(format!(
                    "address {} is taken by WgPeer {}",
                    peer.address, existing.name
                ));
            }
        }
        if !row_errors.is_empty() {
            errors.extend(row_errors.into_iter().map(|e| conflict(row.line, e)));
            continue;
        }
        devices.push(ImportDevice {
            line: row.line,
            source_line: peer.line,
            telegram_id: row.telegram_id,
            create_subscription: !current.subscriptions.contains(&subscription),
            subscription,
            peer: name,
            device_name: row.device_name.clone(),
            public_key: peer.public_key,
            private_key: row.private_key.clone(),
            address: peer.address,
            address6,
            paid_until: row.paid_until,
            create_peer,
            ledger_entry,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let unmapped = source
        .iter()
        .enumerate()
        .filter(|(i, _)| !mapped.contains_key(i))
        .map(|(_, p)| p.line)
        .collect();
    Ok(Plan { devices, unmapped })
}
