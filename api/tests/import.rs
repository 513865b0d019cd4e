//! `wgsub-api import` against a real API server (testkit control plane with the CRDs) and a
//! real PostgreSQL: a dry run writes nothing, `--apply` creates the users, their `import`
//! ledger entries, subscriptions with `paidUntil`, and peers carrying the keys and addresses
//! they had (and the key Secret when the private key is given); a second run changes nothing;
//! a conflict refuses the whole import naming the line, with nothing written.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use wgsub_api::import::{Report, Target, run};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::{VpnSubscription, WgPeer};

mod support;

use support::*;

fn now() -> Timestamp {
    Timestamp::now()
}

struct Old {
    alice: PrivateKey,
    bob: PrivateKey,
    conf: String,
    csv: String,
}

fn old_server() -> Old {
    let alice = PrivateKey::generate();
    let bob = PrivateKey::generate();
    let conf = format!(
        "[Interface]\nPrivateKey = {}\nAddress = 10.8.0.1/24\nListenPort = 51820\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.8.0.7/32\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.8.0.9/32\n",
        PrivateKey::generate().to_base64().as_str(),
        alice.public_key(),
        bob.public_key(),
    );
    let csv = format!(
        "peer,telegram_id,paid_until,device_name,private_key\n\
         {},5101,2030-01-31,alice phone,{}\n\
         10.8.0.9,5102,2030-02-01T10:00:00Z,bob laptop,\n",
        alice.public_key(),
        alice.to_base64().as_str(),
    );
    Old {
        alice,
        bob,
        conf,
        csv,
    }
}

fn target(h: &Harness) -> Target {
    Target {
        client: h.admin.clone(),
        namespace: h.namespace.clone(),
        keys_namespace: h.keys_namespace.clone(),
        server: "main".into(),
    }
}

async fn counts(h: &Harness) -> (usize, usize) {
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    let peers: Api<WgPeer> = Api::namespaced(h.admin.clone(), &h.namespace);
    (
        subs.list(&ListParams::default()).await.unwrap().items.len(),
        peers
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
    )
}

#[tokio::test]
async fn a_dry_run_then_apply_imports_users_peers_and_keys_and_a_rerun_changes_nothing() {
    let h = harness("import_apply").await;
    let old = old_server();
    let target = target(&h);
    let ledger = &h.state.ledger;

    let mut out = Vec::new();
    let dry = run(&target, ledger, &old.conf, &old.csv, false, now(), &mut out)
        .await
        .unwrap();
    assert_eq!(dry.devices, 2);
    assert_eq!(dry.peers_created, 2);
    assert!(
        out.last().unwrap().contains("dry run: nothing was written"),
        "{out:?}"
    );
    assert_eq!(counts(&h).await, (0, 0));
    assert!(ledger.user(5101).await.unwrap().is_none());

    let mut out = Vec::new();
    let applied = run(&target, ledger, &old.conf, &old.csv, true, now(), &mut out)
        .await
        .unwrap();
    assert_eq!(
        applied,
        Report {
            applied: true,
            devices: 2,
            subscriptions_created: 2,
            peers_created: 2,
            key_secrets_created: 1,
            ledger_users_created: 2,
            unchanged: 0,
            unmapped: vec![],
        }
    );
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    let alice_sub = subs.get("tg-5101").await.unwrap();
    assert_eq!(
        alice_sub.spec.paid_until,
        Some("2030-01-31T00:00:00Z".parse().unwrap())
    );
    let bob_sub = subs.get("tg-5102").await.unwrap();
    assert_eq!(
        bob_sub.spec.paid_until,
        Some("2030-02-01T10:00:00Z".parse().unwrap())
    );
    let peers: Api<WgPeer> = Api::namespaced(h.admin.clone(), &h.namespace);
    let alice = peers.get("tg-5101-1").await.unwrap();
    assert_eq!(
        alice.spec.public_key,
        Some(old.alice.public_key().to_base64())
    );
    assert_eq!(alice.spec.address.as_deref(), Some("10.8.0.7/32"));
    assert_eq!(alice.spec.device_name.as_deref(), Some("alice phone"));
    assert_eq!(
        alice.metadata.owner_references.as_ref().unwrap()[0].uid,
        alice_sub.metadata.uid.clone().unwrap()
    );
    let reference = alice.spec.private_key_secret_ref.clone().unwrap();
    let secrets: Api<Secret> = Api::namespaced(h.admin.clone(), &h.keys_namespace);
    let secret = secrets.get(&reference.name).await.unwrap();
    let stored = &secret.data.unwrap()[&reference.key].0;
    assert_eq!(stored.as_slice(), old.alice.to_base64().as_bytes());
    let bob = peers.get("tg-5102-1").await.unwrap();
    assert_eq!(bob.spec.public_key, Some(old.bob.public_key().to_base64()));
    assert_eq!(bob.spec.address.as_deref(), Some("10.8.0.9/32"));
    assert_eq!(bob.spec.private_key_secret_ref, None);
    let user = ledger.user(5102).await.unwrap().unwrap();
    assert_eq!(
        user.entitlement.paid_until,
        Some("2030-02-01T10:00:00Z".parse().unwrap())
    );
    assert_eq!(user.ledger_version, user.synced_version);

    let versions = (
        alice.metadata.resource_version.clone(),
        alice_sub.metadata.resource_version.clone(),
    );
    let mut out = Vec::new();
    let again = run(&target, ledger, &old.conf, &old.csv, true, now(), &mut out)
        .await
        .unwrap();
    assert_eq!(again.unchanged, 2);
    assert_eq!(
        (
            again.subscriptions_created,
            again.peers_created,
            again.ledger_users_created
        ),
        (0, 0, 0)
    );
    assert!(out[0].contains("already imported"), "{out:?}");
    let alice = peers.get("tg-5101-1").await.unwrap();
    let alice_sub = subs.get("tg-5101").await.unwrap();
    assert_eq!(
        (
            alice.metadata.resource_version,
            alice_sub.metadata.resource_version
        ),
        versions,
        "the second run writes nothing"
    );
    assert_eq!(counts(&h).await, (2, 2));
}

#[tokio::test]
async fn a_conflict_refuses_the_whole_import_naming_the_line_with_nothing_written() {
    let h = harness("import_conflict").await;
    let old = old_server();
    let target = target(&h);
    let ledger = &h.state.ledger;
    // The second row's date is in the past: the first row, fine on its own, is not written.
    let csv = old
        .csv
        .replace("2030-02-01T10:00:00Z", "2020-02-01T10:00:00Z");
    let mut out = Vec::new();
    let error = run(&target, ledger, &old.conf, &csv, true, now(), &mut out)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("nothing was written"), "{error}");
    assert!(
        error.contains("CSV line 3: paid_until 2020-02-01T10:00:00Z is in the past"),
        "{error}"
    );
    assert_eq!(counts(&h).await, (0, 0));
    assert!(ledger.user(5101).await.unwrap().is_none());

    let unknown = old.csv.replace("private_key", "colour");
    let error = run(&target, ledger, &old.conf, &unknown, true, now(), &mut out)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("CSV line 1: unknown column \"colour\""),
        "{error}"
    );
    let bad_key = old
        .conf
        .replace(&old.bob.public_key().to_base64(), "not-a-key");
    let error = run(&target, ledger, &bad_key, &old.csv, true, now(), &mut out)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("server configuration line 11: PublicKey is not a base64 WireGuard key"),
        "{error}"
    );
    assert_eq!(counts(&h).await, (0, 0));
}
