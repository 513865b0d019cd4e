//! Unit tests of the import's parsing and plan.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::mapping::{PeerRef, parse_mapping, parse_paid_until};
use super::plan::{Current, ExistingPeer, LedgerUser, TargetServer, import_entry, plan};
use super::source::{parse_conf, parse_dump, parse_server};
use crate::keys::{PresharedKey, PrivateKey};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2026-12-07T12:00:00Z";

struct Keys {
    a: PrivateKey,
    b: PrivateKey,
}

fn keys() -> Keys {
    Keys {
        a: PrivateKey::from_bytes([1; 32]),
        b: PrivateKey::from_bytes([2; 32]),
    }
}

fn conf(keys: &Keys) -> String {
    format!(
        "[Interface]\nPrivateKey = {server}\nAddress = 10.8.0.1/24\nListenPort = 51820\n\n\
         # alice's phone\n[Peer]\nPublicKey = {a}\nAllowedIPs = 10.8.0.2/32\n\n\
         [Peer]\nPublicKey = {b}\nAllowedIPs = 10.8.0.3/32, fd00::3/128\nPersistentKeepalive = 25\n",
        server = PrivateKey::from_bytes([9; 32]).to_base64().as_str(),
        a = keys.a.public_key(),
        b = keys.b.public_key(),
    )
}

fn server() -> TargetServer {
    TargetServer {
        name: "wg".into(),
        pool: "10.8.0.0/24".parse().unwrap(),
        pool6: None,
    }
}

fn csv(keys: &Keys) -> String {
    format!(
        "peer,telegram_id,paid_until,device_name,private_key\n\
         {a},101,2027-01-31,alice phone,{a_private}\n\
         10.8.0.3,102,2027-02-01T10:00:00Z,\"bob, laptop\",\n",
        a = keys.a.public_key(),
        a_private = keys.a.to_base64().as_str(),
    )
}

fn run(
    source: &str,
    mapping: &str,
    peers: &[ExistingPeer],
    users: &BTreeMap<i64, LedgerUser>,
    subscriptions: &BTreeSet<String>,
) -> Result<super::plan::Plan, Vec<String>> {
    let source = parse_server(source).unwrap();
    let rows = parse_mapping(mapping).unwrap();
    plan(
        &source,
        &rows,
        Current {
            server: &server(),
            peers,
            users,
            subscriptions,
            now: t(NOW),
        },
    )
}

fn existing(name: &str, key: &str, address: &str) -> ExistingPeer {
    ExistingPeer {
        name: name.into(),
        server: "wg".into(),
        public_key: Some(key.into()),
        address: Some(address.into()),
    }
}

#[test]
fn a_conf_gives_every_peer_with_its_key_psk_and_host_addresses() {
    let keys = keys();
    let peers = parse_conf(&conf(&keys)).unwrap();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0].public_key, keys.a.public_key());
    assert_eq!(peers[0].line, 7);
    assert_eq!(
        peers[0].address,
        "10.8.0.2".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert_eq!(peers[0].address6, None);
    assert!(peers[0].preshared_key.is_none());
    assert_eq!(peers[1].address6, Some("fd00::3".parse().unwrap()));
}

#[test]
fn a_dump_gives_the_same_peers_as_the_conf() {
    let keys = keys();
    let dump = format!(
        "{server}\t{server_pub}\t51820\toff\n\
         {a}\t(none)\t198.51.100.7:4500\t10.8.0.2/32\t1765000000\t100\t200\toff\n\
         {b}\t(none)\t(none)\t10.8.0.3/32,fd00::3/128\t0\t0\t0\t25\n",
        server = PrivateKey::from_bytes([9; 32]).to_base64().as_str(),
        server_pub = PrivateKey::from_bytes([9; 32]).public_key(),
        a = keys.a.public_key(),
        b = keys.b.public_key(),
    );
    let peers = parse_server(&dump).unwrap();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0].line, 2);
    assert_eq!(peers[0].public_key, keys.a.public_key());
    assert_eq!(
        peers[1].address,
        "10.8.0.3".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert_eq!(parse_dump("").unwrap_err().line, 1);
    let short =
        parse_dump(&format!("a\tb\t1\toff\n{}\t(none)\n", keys.a.public_key())).unwrap_err();
    assert_eq!(short.line, 2);
}

#[test]
fn a_conf_with_a_bad_peer_is_refused_naming_the_line() {
    let keys = keys();
    let cases = [
        (
            "[Peer]\nPublicKey = nope\nAllowedIPs = 10.8.0.2/32\n",
            2,
            "PublicKey",
        ),
        ("[Peer]\nAllowedIPs = 10.8.0.2/32\n", 1, "no PublicKey"),
        (
            &format!("[Peer]\nPublicKey = {}\n", keys.a.public_key()) as &str,
            1,
            "no AllowedIPs",
        ),
        (
            &format!(
                "[Peer]\nPublicKey = {}\nAllowedIPs = 10.9.0.0/24\n",
                keys.a.public_key()
            ),
            3,
            "routes a network",
        ),
        (
            &format!(
                "[Peer]\nPublicKey = {}\nAllowedIPs = fd00::2/128\n",
                keys.a.public_key()
            ),
            3,
            "no IPv4",
        ),
        (
            &format!(
                "[Peer]\nPublicKey = {}\nAllowedIPs = 10.8.0.2/32, 10.8.0.5/32\n",
                keys.a.public_key()
            ),
            3,
            "more than one",
        ),
        (
            &format!(
                "[Peer]\nPublicKey = {}\nAllowedIPs = 10.8.0.2/32\nColour = red\n",
                keys.a.public_key()
            ),
            4,
            "unknown [Peer] key",
        ),
        ("[Peers]\n", 1, "unknown section"),
        ("[Peer]\njunk\n", 2, "Key = Value"),
    ];
    for (text, line, words) in cases {
        let error = parse_conf(text).unwrap_err();
        assert_eq!(error.line, line, "{text}");
        assert!(error.message.contains(words), "{text}: {}", error.message);
    }
}

#[test]
fn a_csv_row_reads_key_or_address_dates_and_quoted_names() {
    let keys = keys();
    let rows = parse_mapping(&csv(&keys)).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].line, 2);
    assert_eq!(rows[0].peer, PeerRef::PublicKey(keys.a.public_key()));
    assert_eq!(rows[0].paid_until, t("2027-01-31T00:00:00Z"));
    assert_eq!(rows[0].private_key, Some(keys.a.clone()));
    assert_eq!(rows[1].peer, PeerRef::Address("10.8.0.3".parse().unwrap()));
    assert_eq!(rows[1].device_name, "bob, laptop");
    assert_eq!(rows[1].private_key, None);
    assert_eq!(
        parse_paid_until("2027-02-01T10:00:00+03:00"),
        Some(t("2027-02-01T07:00:00Z"))
    );
    // The private_key column is optional; columns may come in any order.
    let rows =
        parse_mapping("telegram_id,peer,device_name,paid_until\n5,10.8.0.2/32,x,2027-01-01\n")
            .unwrap();
    assert_eq!(rows[0].telegram_id, 5);
}

#[test]
fn a_bad_csv_is_refused_naming_the_line_and_field() {
    let header = "peer,telegram_id,paid_until,device_name,private_key\n";
    let cases = [
        (
            "peer,telegram_id,paid_until,device_name,colour\n".to_owned(),
            1,
            "unknown column \"colour\"",
        ),
        (
            "peer,telegram_id,paid_until\n".to_owned(),
            1,
            "missing column \"device_name\"",
        ),
        (
            "peer,peer,telegram_id,paid_until,device_name\n".to_owned(),
            1,
            "twice",
        ),
        (
            format!("{header}10.8.0.2,101,2027-01-01,phone,notakey\n"),
            2,
            "private_key",
        ),
        (
            format!("{header}10.8.0.2,101,soon,phone,\n"),
            2,
            "paid_until \"soon\"",
        ),
        (
            format!("{header}10.8.0.2,-4,2027-01-01,phone,\n"),
            2,
            "telegram_id",
        ),
        (
            format!("{header}\n10.8.0.x,1,2027-01-01,phone,\n"),
            3,
            "neither a WireGuard public key",
        ),
        (
            format!("{header}10.8.0.2,1,2027-01-01,,\n"),
            2,
            "device_name",
        ),
        (
            format!("{header}10.8.0.2,1,2027-01-01,phone\n"),
            2,
            "4 fields",
        ),
        (
            format!("{header}10.8.0.2,1,2027-01-01,\"phone,\n"),
            2,
            "not closed",
        ),
        (String::new(), 1, "empty"),
    ];
    for (text, line, words) in cases {
        let error = parse_mapping(&text).unwrap_err();
        assert_eq!(error.line, line, "{text}");
        assert!(error.message.contains(words), "{text}: {}", error.message);
    }
}

#[test]
fn the_import_entry_folds_to_exactly_the_imported_paid_until() {
    use crate::ledger::{LedgerEvent, LedgerEventKind, fold_paid_until};
    for until in [
        "2027-01-31T00:00:00Z",
        "2026-12-07T12:00:01Z",
        "2027-06-01T17:23:45Z",
    ] {
        let entry = import_entry(t(until), t(NOW));
        assert!(entry.at <= t(NOW), "{until}");
        assert!(entry.days >= 1);
        let event = LedgerEvent::new(
            "grant:1",
            entry.at,
            jiff::SignedDuration::from_hours(24 * i64::from(entry.days)),
            LedgerEventKind::Grant,
        );
        assert_eq!(fold_paid_until(&[event]), Some(t(until)));
    }
}

#[test]
fn a_fresh_import_plans_users_subscriptions_and_peers_with_their_addresses() {
    let keys = keys();
    let plan = run(
        &conf(&keys),
        &csv(&keys),
        &[],
        &BTreeMap::new(),
        &BTreeSet::new(),
    )
    .unwrap();
    assert_eq!(plan.unmapped, Vec::<usize>::new());
    let [alice, bob] = &plan.devices[..] else {
        panic!()
    };
    assert_eq!(alice.subscription, "tg-101");
    assert_eq!(alice.peer, "tg-101-1");
    assert_eq!(alice.address.to_string(), "10.8.0.2");
    assert_eq!(alice.private_key, Some(keys.a.clone()));
    assert!(alice.create_subscription && alice.create_peer);
    assert_eq!(
        alice.ledger_entry,
        Some(import_entry(t("2027-01-31T00:00:00Z"), t(NOW)))
    );
    assert_eq!(bob.public_key, keys.b.public_key());
    // The server has no IPv6 pool: the peer keeps its IPv4 address only.
    assert_eq!(bob.address6, None);
    assert_eq!(bob.device_name, "bob, laptop");
}

#[test]
fn an_ipv6_pool_keeps_the_peers_ipv6_address_and_refuses_one_outside() {
    let keys = keys();
    let source = parse_server(&conf(&keys)).unwrap();
    let rows = parse_mapping(&csv(&keys)).unwrap();
    let (users, subs) = (BTreeMap::new(), BTreeSet::new());
    let mut target = server();
    target.pool6 = Some("fd00::/64".parse().unwrap());
    let current = Current {
        server: &target,
        peers: &[],
        users: &users,
        subscriptions: &subs,
        now: t(NOW),
    };
    let planned = plan(&source, &rows, current).unwrap();
    assert_eq!(
        planned.devices[1].address6,
        Some("fd00::3".parse().unwrap())
    );
    let mut other = server();
    other.pool6 = Some("fd01::/64".parse().unwrap());
    let current = Current {
        server: &other,
        ..current
    };
    let errors = plan(&source, &rows, current).unwrap_err();
    assert_eq!(errors, vec!["CSV line 3: address fd00::3 is outside the client addresses of pool fd01::/64 of WgServer wg".to_owned()]);
}

#[test]
fn peers_the_csv_does_not_name_are_reported_unmapped() {
    let keys = keys();
    let mapping = format!(
        "peer,telegram_id,paid_until,device_name\n{},101,2027-01-31,phone\n",
        keys.b.public_key()
    );
    let plan = run(
        &conf(&keys),
        &mapping,
        &[],
        &BTreeMap::new(),
        &BTreeSet::new(),
    )
    .unwrap();
    assert_eq!(plan.devices.len(), 1);
    assert_eq!(plan.unmapped, vec![7]);
}

#[test]
fn a_second_run_on_its_own_result_plans_no_writes() {
    let keys = keys();
    let peers = [
        existing("tg-101-1", &keys.a.public_key().to_base64(), "10.8.0.2/32"),
        existing("tg-102-1", &keys.b.public_key().to_base64(), "10.8.0.3/32"),
    ];
    let users = BTreeMap::from([
        (
            101,
            LedgerUser {
                imported_until: Some(t("2027-01-31T00:00:00Z")),
            },
        ),
        (
            102,
            LedgerUser {
                imported_until: Some(t("2027-02-01T10:00:00Z")),
            },
        ),
    ]);
    let subs = BTreeSet::from(["tg-101".to_owned(), "tg-102".to_owned()]);
    let plan = run(&conf(&keys), &csv(&keys), &peers, &users, &subs).unwrap();
    assert!(plan.devices.iter().all(|d| d.is_done()), "{plan:?}");
}

#[test]
fn a_half_applied_import_plans_only_what_is_missing() {
    let keys = keys();
    let peers = [existing(
        "tg-101-1",
        &keys.a.public_key().to_base64(),
        "10.8.0.2/32",
    )];
    let subs = BTreeSet::from(["tg-101".to_owned()]);
    let plan = run(&conf(&keys), &csv(&keys), &peers, &BTreeMap::new(), &subs);
    // A subscription without a ledger user is only ours when the ledger holds the import.
    assert!(plan.unwrap_err()[0].contains("VpnSubscription tg-101 already exists"));
    let users = BTreeMap::from([(
        101,
        LedgerUser {
            imported_until: Some(t("2027-01-31T00:00:00Z")),
        },
    )]);
    let plan = run(&conf(&keys), &csv(&keys), &[], &users, &subs).unwrap();
    let alice = &plan.devices[0];
    assert!(!alice.create_subscription && alice.create_peer && alice.ledger_entry.is_none());
}

fn errors_of(
    mapping_rows: &str,
    peers: &[ExistingPeer],
    users: &BTreeMap<i64, LedgerUser>,
) -> Vec<String> {
    let keys = keys();
    let mapping = format!("peer,telegram_id,paid_until,device_name,private_key\n{mapping_rows}");
    run(&conf(&keys), &mapping, peers, users, &BTreeSet::new()).unwrap_err()
}

#[test]
fn conflicts_are_refused_naming_the_line_and_object() {
    let keys = keys();
    let a = keys.a.public_key();
    let none = BTreeMap::new();
    assert_eq!(
        errors_of("10.8.0.9,1,2027-01-01,x,\n", &[], &none),
        ["CSV line 2: peer 10.8.0.9 is not a peer of the server"]
    );
    assert_eq!(
        errors_of(
            &format!("{a},1,2027-01-01,x,\n10.8.0.2,2,2027-01-01,y,\n"),
            &[],
            &none
        ),
        ["CSV line 3: peer 10.8.0.2 is already mapped on line 2"]
    );
    assert_eq!(
        errors_of(
            "10.8.0.2,1,2027-01-01,x,\n10.8.0.3,1,2027-01-01,y,\n",
            &[],
            &none
        ),
        ["CSV line 3: user 1 is already imported on line 2 (one device per user)"]
    );
    assert_eq!(
        errors_of("10.8.0.2,1,2026-12-01,x,\n", &[], &none),
        ["CSV line 2: paid_until 2026-12-01T00:00:00Z is in the past"]
    );
    assert!(errors_of("10.8.0.2,1,2040-01-01,x,\n", &[], &none)[0].contains("more than 3660 days"));
    let wrong = format!("10.8.0.2,1,2027-01-01,x,{}\n", keys.b.to_base64().as_str());
    assert_eq!(
        errors_of(&wrong, &[], &none),
        [format!(
            "CSV line 2: private_key is not the private half of {a}"
        )]
    );
    let taken = [existing(
        "tg-5-1",
        &keys.b.public_key().to_base64(),
        "10.8.0.2/32",
    )];
    assert_eq!(
        errors_of("10.8.0.2,1,2027-01-01,x,\n", &taken, &none),
        ["CSV line 2: address 10.8.0.2 is taken by WgPeer tg-5-1"]
    );
    let same_key = [existing("tg-5-1", &a.to_base64(), "10.8.0.40/32")];
    assert_eq!(
        errors_of("10.8.0.2,1,2027-01-01,x,\n", &same_key, &none),
        [format!(
            "CSV line 2: public key {a} is already used by WgPeer tg-5-1"
        )]
    );
    let other = [existing(
        "tg-1-1",
        &keys.b.public_key().to_base64(),
        "10.8.0.40/32",
    )];
    assert_eq!(
        errors_of("10.8.0.2,1,2027-01-01,x,\n", &other, &none),
        ["CSV line 2: WgPeer tg-1-1 already exists with another key or address"]
    );
    let known = BTreeMap::from([(
        1,
        LedgerUser {
            imported_until: None,
        },
    )]);
    assert_eq!(
        errors_of("10.8.0.2,1,2027-01-01,x,\n", &[], &known),
        ["CSV line 2: user 1 is already in the ledger"]
    );
    let imported = BTreeMap::from([(
        1,
        LedgerUser {
            imported_until: Some(t("2027-03-01T00:00:00Z")),
        },
    )]);
    assert_eq!(
        errors_of("10.8.0.2,1,2027-01-01,x,\n", &[], &imported),
        ["CSV line 2: user 1 was imported before with paid_until 2027-03-01T00:00:00Z"]
    );
}

#[test]
fn an_address_on_another_server_is_not_taken_here() {
    let keys = keys();
    let mut elsewhere = existing("tg-5-1", &keys.b.public_key().to_base64(), "10.8.0.2/32");
    elsewhere.server = "other".into();
    let plan = run(
        &conf(&keys),
        "peer,telegram_id,paid_until,device_name\n10.8.0.2,1,2027-01-01,x\n",
        &[elsewhere],
        &BTreeMap::new(),
        &BTreeSet::new(),
    )
    .unwrap();
    assert_eq!(plan.devices.len(), 1);
}

#[test]
fn addresses_outside_the_pool_or_reserved_are_refused() {
    let keys = keys();
    for address in ["10.9.0.2", "10.8.0.1", "10.8.0.0", "10.8.0.255"] {
        let text = format!(
            "[Peer]\nPublicKey = {}\nAllowedIPs = {address}/32\n",
            keys.a.public_key()
        );
        let errors = run(
            &text,
            &format!("peer,telegram_id,paid_until,device_name\n{address},1,2027-01-01,x\n"),
            &[],
            &BTreeMap::new(),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [format!(
                "CSV line 2: address {address} is outside the client addresses of pool 10.8.0.0/24 of WgServer wg"
            )]
        );
    }
}

#[test]
fn a_server_config_repeating_a_key_or_address_is_refused() {
    let keys = keys();
    let a = keys.a.public_key();
    let text = format!(
        "[Peer]\nPublicKey = {a}\nAllowedIPs = 10.8.0.2/32\n[Peer]\nPublicKey = {a}\nAllowedIPs = 10.8.0.2/32\n"
    );
    let errors = run(
        &text,
        "peer,telegram_id,paid_until,device_name\n",
        &[],
        &BTreeMap::new(),
        &BTreeSet::new(),
    )
    .unwrap_err();
    assert_eq!(
        errors,
        [
            format!("server line 4: public key {a} repeats the peer of line 1"),
            "server line 4: address 10.8.0.2 repeats the peer of line 1".to_owned(),
        ]
    );
}

#[test]
fn a_peer_with_a_preshared_key_is_refused_until_the_import_carries_it() {
    let keys = keys();
    let psk = PresharedKey::from_base64(&PrivateKey::from_bytes([7; 32]).to_base64()).unwrap();
    let text = format!(
        "[Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.8.0.2/32\n",
        keys.a.public_key(),
        psk.to_base64().as_str()
    );
    let peers = parse_conf(&text).unwrap();
    assert_eq!(peers[0].preshared_key, Some(psk));
    let errors = run(
        &text,
        "peer,telegram_id,paid_until,device_name\n10.8.0.2,1,2027-01-01,x\n",
        &[],
        &BTreeMap::new(),
        &BTreeSet::new(),
    )
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "CSV line 2: the peer of server line 1 uses a PresharedKey, which the import does not carry yet"
        ]
    );
}
