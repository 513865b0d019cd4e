//! The restore procedure of docs/backup-restore.md, run as written: a ledger filled through the
//! product (users, trials, YooKassa payments, admin grants, a promo code) and key Secrets on the
//! real API server are dumped with the documented commands (`pg_dump --format=custom` from
//! Debian's postgresql-client; `wgsub-operator export-keys`), restored into an empty database
//! (`scripts/restore-ledger`) and an empty namespace (`kubectl create -n … -f …`), and every
//! user's `paidUntil` (stored, and folded again from the restored rows) and every key come back
//! unchanged, with the api's migrations having nothing left to do. Bad restores are refused and
//! write nothing: into a database that holds data (the script names what is there), from a
//! damaged dump, and Secrets onto Secrets that exist.
//!
//! Needs PostgreSQL (`WGSUB_TEST_DATABASE_URL`, with pg_dump, pg_restore and psql on PATH), the
//! control plane's binaries (`KUBEBUILDER_ASSETS`) and kubectl (`WGSUB_KUBECTL`), as scripts/test
//! provides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde_json::json;
use uuid::Uuid;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::plans::{LocalizedText, Plan};
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::yookassa::{self, Amount, METADATA_PAYMENT_ID, METADATA_USER_ID};
use wgsub_ledger::{
    AdminGrant, ApplyOutcome, DbConfig, Ledger, NewPromoCode, PaymentOrder, PromoBenefit,
    TelegramUser, User, YooKassa, YooKassaConfig, db,
};
use wgsub_operator::export_keys::{self, ExportConfig};
use wgsub_testkit::envtest::ControlPlane;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const DAY: SignedDuration = SignedDuration::from_hours(24);
const USERS: [i64; 5] = [101, 102, 103, 104, 105];

fn now() -> Timestamp {
    "2026-12-07T10:00:00Z".parse().unwrap()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn plan() -> Plan {
    Plan {
        id: "quarter".into(),
        title: LocalizedText {
            ru: "3 месяца".into(),
            en: "3 months".into(),
        },
        days: 90,
        price_minor: 54_900,
        currency: "RUB".into(),
        devices: 3,
        price_stars: None,
        traffic_gib: None,
    }
}

/// YooKassa at its HTTP boundary: a created payment answers pending, echoing amount and metadata.
async fn fake_yookassa() -> (MockServer, YooKassa) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/payments"))
        .respond_with(|request: &Request| {
            let body: serde_json::Value = request.body_json().unwrap();
            let id = Uuid::new_v4().to_string();
            ResponseTemplate::new(200).set_body_json(json!({
                "id": id, "status": "pending", "paid": false,
                "amount": body["amount"], "metadata": body["metadata"],
                "confirmation": {"type": "redirect", "confirmation_url": "https://yoomoney.example/checkout"},
            }))
        })
        .mount(&server)
        .await;
    let client = YooKassa::new(YooKassaConfig {
        api_base: format!("{}/v3", server.uri()),
        shop_id: "123456".into(),
        secret_key: format!("test_{}", Uuid::new_v4().simple()).into(),
        timeout: Duration::from_secs(2),
        max_attempts: 2,
        retry_backoff: Duration::from_millis(10),
    })
    .unwrap();
    (server, client)
}

async fn pay(ledger: &Ledger, yookassa: &YooKassa, user: i64, at: Timestamp) {
    let plan = plan();
    let order = PaymentOrder {
        user_id: user,
        plan: &plan,
        return_url: "https://t.me/wgsub_bot",
        receipt: None,
    };
    let created = ledger.create_payment(yookassa, order, at).await.unwrap();
    let record = ledger.payment(created.id).await.unwrap().unwrap();
    let paid = yookassa::Payment {
        id: record.yookassa_id.clone().unwrap(),
        status: "succeeded".into(),
        amount: Amount {
            value: "549.00".into(),
            currency: "RUB".into(),
        },
        paid: true,
        confirmation: None,
        metadata: [
            (METADATA_PAYMENT_ID.to_owned(), record.id.to_string()),
            (METADATA_USER_ID.to_owned(), user.to_string()),
        ]
        .into(),
        captured_at: Some(at),
        created_at: None,
    };
    let outcome = ledger.apply_payment(record.id, &paid, at).await.unwrap();
    assert!(
        matches!(outcome, ApplyOutcome::Applied { .. }),
        "{outcome:?}"
    );
}

async fn grant(ledger: &Ledger, user: i64, days: u32, at: Timestamp) -> User {
    let grant = AdminGrant {
        user_id: user,
        days,
        admin_id: 1,
        reason: "backup test".into(),
    };
    ledger.admin_grant(&grant, at).await.unwrap();
    ledger.user(user).await.unwrap().unwrap()
}

/// A ledger as the product leaves it: trials, payments, grants and a promo code, so that each
/// user's `paidUntil` is a fold of several entries.
async fn filled_ledger() -> (Ledger, String) {
    let (pool, url) = fresh_database("backup_source").await;
    let ledger = Ledger::new(pool, false);
    let (_server, yookassa) = fake_yookassa().await;
    for id in USERS {
        let user = TelegramUser {
            id,
            username: Some(format!("user{id}")),
            first_name: format!("User {id}"),
            last_name: None,
            language_code: Some("ru".into()),
        };
        ledger.upsert_user(&user, now()).await.unwrap();
    }
    ledger
        .create_promo_code(
            &NewPromoCode {
                code: "WEEK".into(),
                benefit: PromoBenefit::Days(7),
                expires_at: now() + DAY * 30,
                max_uses: 10,
                admin_id: 1,
            },
            now(),
        )
        .await
        .unwrap();
    // 101: trial, then a payment during it, then a grant.
    ledger.grant_trial(101, 3, now()).await.unwrap();
    pay(&ledger, &yookassa, 101, now() + DAY).await;
    grant(&ledger, 101, 10, now() + DAY * 2).await;
    // 102: a promo code, then two payments.
    ledger.redeem_promo_code(102, "week", now()).await.unwrap();
    pay(&ledger, &yookassa, 102, now()).await;
    pay(&ledger, &yookassa, 102, now() + DAY * 5).await;
    // 103: a trial that ran out, then a payment after it.
    ledger.grant_trial(103, 3, now()).await.unwrap();
    pay(&ledger, &yookassa, 103, now() + DAY * 10).await;
    // 104: a grant only; 105: nothing (no paidUntil).
    grant(&ledger, 104, 30, now()).await;
    (ledger, url)
}

async fn users(ledger: &Ledger) -> BTreeMap<i64, User> {
    let mut found = BTreeMap::new();
    for id in USERS {
        found.insert(id, ledger.user(id).await.unwrap().expect("the user"));
    }
    found
}

/// `url` with its database replaced by `name`.
fn database_url(url: &str, name: &str) -> String {
    format!("{}/{name}", &url[..url.rfind('/').unwrap()])
}

fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args(["--no-psqlrc", "--quiet", "--tuples-only", "--no-align"])
        .args([
            "--set",
            "ON_ERROR_STOP=1",
            "--dbname",
            url,
            "--command",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A new, empty database (as `createdb` makes it), named `<label>_<random>`.
fn empty_database(base: &str, label: &str) -> String {
    let name = format!("wgsub_{label}_{}", Uuid::new_v4().simple());
    psql(base, &format!("CREATE DATABASE {name}"));
    database_url(base, &name)
}

fn restore_ledger(dump: &Path, url: &str) -> Output {
    Command::new(repo_root().join("scripts/restore-ledger"))
        .arg(dump)
        .env("WGSUB_DATABASE_URL", url)
        .output()
        .expect("scripts/restore-ledger runs")
}

fn has_users_table(url: &str) -> bool {
    psql(url, "SELECT to_regclass('public.users') IS NOT NULL") == "t"
}

fn kubectl(plane: &ControlPlane, args: &[&str]) -> Output {
    let kubectl = std::env::var_os("WGSUB_KUBECTL").expect("WGSUB_KUBECTL names kubectl");
    Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", plane.admin_kubeconfig_path())
        .output()
        .expect("kubectl runs")
}

fn key_secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            "privateKey".to_owned(),
            ByteString(PrivateKey::generate().to_base64().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// Name → (labels, data) of every Secret in `namespace`.
async fn keys_in(
    plane: &ControlPlane,
    namespace: &str,
) -> BTreeMap<String, (BTreeMap<String, String>, BTreeMap<String, ByteString>)> {
    let api: Api<Secret> = Api::namespaced(plane.admin_client(), namespace);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.unwrap(),
                (
                    s.metadata.labels.unwrap_or_default(),
                    s.data.unwrap_or_default(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dumped_ledger_and_exported_keys_restore_into_empty_ones_unchanged() {
    let (source, source_url) = filled_ledger().await;
    let before = users(&source).await;
    assert!(
        before
            .values()
            .filter(|u| u.entitlement.paid_until.is_some())
            .count()
            == 4
            && before[&105].entitlement.paid_until.is_none(),
        "four users paid or were granted time, one never: {before:?}"
    );

    // Key Secrets as the operator and the node-agent keep them, on the real API server.
    let plane = ControlPlane::shared();
    let keys_ns = plane.namespace("backup-keys").await;
    let secrets: Api<Secret> = Api::namespaced(plane.admin_client(), &keys_ns);
    for device in ["tg-101-1", "tg-101-2", "tg-102-1", "tg-104-1"] {
        let uid = Uuid::new_v4().to_string();
        let secret = key_secret(
            &format!("{device}-key"),
            &[
                ("wgsub.io/peer-uid", &uid),
                ("wgsub.io/subscription", &device[..6]),
            ],
        );
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    secrets
        .create(
            &PostParams::default(),
            &key_secret("wgsub-main-server-key", &[]),
        )
        .await
        .unwrap();
    let exported_keys = keys_in(plane, &keys_ns).await;

    // The backup, with the documented commands.
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("wgsub-ledger.dump");
    let dumped = Command::new("pg_dump")
        .arg("--format=custom")
        .arg(format!("--file={}", dump.display()))
        .arg(format!("--dbname={source_url}"))
        .output()
        .expect("pg_dump runs");
    assert!(
        dumped.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    let keys_file = dir.path().join("keys.json");
    let export = ExportConfig {
        namespace: keys_ns.clone(),
        out: keys_file.clone(),
    };
    export_keys::export(plane.admin_client(), &export)
        .await
        .expect("export-keys");
    let again = export_keys::export(plane.admin_client(), &export).await;
    assert!(
        again.unwrap_err().to_string().contains("--out"),
        "an existing export is never overwritten"
    );
    let text = std::fs::read_to_string(&keys_file).unwrap();
    for server_field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        assert!(
            !text.contains(&format!("\"{server_field}\"")),
            "{server_field} in the export"
        );
    }

    // The restore: an empty database, an empty namespace.
    let target_url = empty_database(&source_url, "backup_target");
    let restored = restore_ledger(&dump, &target_url);
    assert!(
        restored.status.success(),
        "restore-ledger: {}{}",
        String::from_utf8_lossy(&restored.stdout),
        String::from_utf8_lossy(&restored.stderr)
    );
    let pool = db::connect_lazy(&DbConfig::new(target_url.clone())).unwrap();
    db::migrate(&pool)
        .await
        .expect("the api's migrations find the restored schema current");
    let target = Ledger::new(pool, false);
    let after = users(&target).await;
    assert_eq!(after, before, "every user, paidUntil included, comes back");
    // The restored entries fold to the same entitlement: one more grant on each side agrees.
    for id in USERS {
        let later = now() + DAY * 40;
        assert_eq!(
            grant(&target, id, 1, later).await.entitlement,
            grant(&source, id, 1, later).await.entitlement,
            "user {id}: the restored ledger folds as the original"
        );
    }

    let restored_ns = plane.namespace("restored-keys").await;
    let file = keys_file.display().to_string();
    let created = kubectl(plane, &["create", "-n", &restored_ns, "-f", &file]);
    assert!(
        created.status.success(),
        "kubectl create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert_eq!(
        keys_in(plane, &restored_ns).await,
        exported_keys,
        "every key comes back with its labels"
    );
    // Restoring again onto the restored Secrets is refused, each named; none is changed.
    let twice = kubectl(plane, &["create", "-n", &restored_ns, "-f", &file]);
    let refused = String::from_utf8_lossy(&twice.stderr);
    assert!(!twice.status.success());
    assert!(
        refused.contains("AlreadyExists") && refused.contains("tg-101-1-key"),
        "{refused}"
    );
    assert_eq!(keys_in(plane, &restored_ns).await, exported_keys);
}

#[tokio::test]
async fn a_restore_into_a_database_with_data_or_from_a_damaged_dump_writes_nothing() {
    let (source, source_url) = filled_ledger().await;
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("wgsub-ledger.dump");
    let dumped = Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(format!("--dbname={source_url}"))
        .status()
        .expect("pg_dump runs");
    assert!(dumped.success());

    // Into the very database it came from: refused, naming what is there.
    let before = users(&source).await;
    let refused = restore_ledger(&dump, &source_url);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(
        message.contains("refused") && message.contains("already holds data"),
        "{message}"
    );
    assert!(
        message.contains("public."),
        "the tables are named: {message}"
    );
    assert_eq!(users(&source).await, before, "nothing was written");

    // Into a database holding one unrelated table: refused too, and the ledger is not half there.
    let other = empty_database(&source_url, "backup_other");
    psql(&other, "CREATE TABLE notes (id int PRIMARY KEY)");
    let refused = restore_ledger(&dump, &other);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(message.contains("public.notes"), "{message}");
    assert!(!has_users_table(&other));

    // A damaged (cut) dump into an empty database: refused or rolled back, the database empty.
    let bytes = std::fs::read(&dump).unwrap();
    let cut = dir.path().join("cut.dump");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let empty = empty_database(&source_url, "backup_cut");
    let failed = restore_ledger(&cut, &empty);
    assert!(
        !failed.status.success(),
        "a cut dump does not restore: {}",
        String::from_utf8_lossy(&failed.stdout)
    );
    assert!(!has_users_table(&empty), "nothing half-written");
    assert_eq!(
        psql(
            &empty,
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );

    // Without a target named, the script says so.
    let unnamed = Command::new(repo_root().join("scripts/restore-ledger"))
        .arg(&dump)
        .env_remove("WGSUB_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(unnamed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unnamed.stderr).contains("WGSUB_DATABASE_URL"));
}
