//! The chart's optional backups of the ledger (`backup.pgDump`, `backup.cloudnativePg`): the
//! CronJob into a PersistentVolumeClaim (made and kept, or one of the user's) or into an
//! S3-compatible bucket, with its retention; no ServiceAccount, Role or token of its own (its
//! pods talk to PostgreSQL and the bucket only); the CloudNativePG ScheduledBackup; values the
//! chart refuses with the field named; and the dump script the CronJob runs, run here for real
//! against PostgreSQL: a restorable custom-format dump per run, the newest `KEEP` kept, and a
//! failed run that leaves no file behind and deletes nothing; and the S3 upload script, run
//! against a stand-in aws CLI, keeping the newest `KEEP` dumps under the prefix.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::Value;

use crate::rules::violations;
use crate::support::{
    component, find, kind_of, name_of, of_kind, render, repo_root, try_render, typed,
};

fn pod_of(docs: &[Value]) -> PodSpec {
    let cron: CronJob = typed(find(docs, "CronJob", &component("backup")));
    cron.spec
        .and_then(|s| s.job_template.spec)
        .and_then(|s| s.template.spec)
        .expect("the CronJob's pod")
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn access_objects(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .filter(|d| {
            matches!(
                kind_of(d),
                "ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
            )
        })
        .map(|d| format!("{}/{}", kind_of(d), name_of(d)))
        .collect()
}

#[test]
fn the_pg_dump_cronjob_keeps_the_newest_dumps_on_a_claim_that_outlives_the_release() {
    let docs = render(&["backup.pgDump.enabled=true", "backup.pgDump.keep=7"]);
    let found = violations(&docs);
    assert!(found.is_empty(), "rule violations:\n{}", found.join("\n"));
    assert_eq!(
        access_objects(&docs),
        access_objects(&render(&[])),
        "the backup adds no ServiceAccount or RBAC"
    );
    let cron: CronJob = typed(find(&docs, "CronJob", &component("backup")));
    let spec = cron.spec.clone().unwrap();
    assert_eq!(spec.schedule, "17 3 * * *");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let pod = pod_of(&docs);
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(pod.service_account_name.is_none());
    assert!(pod.init_containers.is_none());
    let [dump] = pod.containers.as_slice() else {
        panic!("one container: {:?}", pod.containers)
    };
    assert_eq!(dump.image.as_deref(), Some("postgres:17"));
    assert_eq!(env(dump, "KEEP"), Some("7"));
    assert_eq!(env(dump, "BACKUP_DIR"), Some("/backup"));
    let url = dump
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "WGSUB_DATABASE_URL")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("the database URL from its Secret");
    assert_eq!(
        (url.name.as_str(), url.key.as_str()),
        ("wgsub-database", "url")
    );
    let claim = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "backup")
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .expect("the dumps on a claim");
    assert_eq!(claim.claim_name, component("backup"));
    let pvc = find(&docs, "PersistentVolumeClaim", &component("backup"));
    assert_eq!(
        pvc["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "5Gi");
    // The script the container runs is the one tested below.
    let config = find(&docs, "ConfigMap", &component("backup"));
    let script = std::fs::read_to_string(repo_root().join("charts/wgsub/files/backup/dump.sh"))
        .expect("dump.sh");
    assert_eq!(config["data"]["dump.sh"].as_str(), Some(script.as_str()));

    let own = render(&[
        "backup.pgDump.enabled=true",
        "backup.pgDump.pvc.existingClaim=ledger-dumps",
    ]);
    assert!(of_kind(&own, "PersistentVolumeClaim").is_empty());
    let claim = pod_of(&own)
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "backup")
        .and_then(|v| v.persistent_volume_claim)
        .unwrap();
    assert_eq!(claim.claim_name, "ledger-dumps");
    assert!(
        of_kind(&render(&[]), "CronJob").is_empty(),
        "off by default"
    );
}

#[test]
fn the_s3_destination_dumps_first_then_uploads_and_prunes_with_the_buckets_secret() {
    let docs = render(&[
        "backup.pgDump.enabled=true",
        "backup.pgDump.destination=s3",
        "backup.pgDump.s3.endpoint=https://storage.example.test",
        "backup.pgDump.s3.bucket=ledger",
        "backup.pgDump.keep=30",
    ]);
    let found = violations(&docs);
    assert!(found.is_empty(), "rule violations:\n{}", found.join("\n"));
    assert!(of_kind(&docs, "PersistentVolumeClaim").is_empty());
    let pod = pod_of(&docs);
    let init = pod.init_containers.clone().expect("pg_dump runs first");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].image.as_deref(), Some("postgres:17"));
    assert_eq!(
        env(&init[0], "KEEP"),
        None,
        "the bucket's retention is the upload's"
    );
    let [upload] = pod.containers.as_slice() else {
        panic!("one container: {:?}", pod.containers)
    };
    assert!(
        upload
            .image
            .as_deref()
            .unwrap()
            .starts_with("amazon/aws-cli:")
    );
    assert_eq!(
        env(upload, "S3_ENDPOINT"),
        Some("https://storage.example.test")
    );
    assert_eq!(env(upload, "S3_BUCKET"), Some("ledger"));
    assert_eq!(env(upload, "S3_PREFIX"), Some("wgsub/ledger/"));
    assert_eq!(env(upload, "KEEP"), Some("30"));
    for (variable, key) in [
        ("AWS_ACCESS_KEY_ID", "access-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "secret-access-key"),
    ] {
        let reference = upload
            .env
            .iter()
            .flatten()
            .find(|e| e.name == variable)
            .and_then(|e| e.value_from.clone())
            .and_then(|v| v.secret_key_ref)
            .unwrap_or_else(|| panic!("{variable} from a Secret"));
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            ("wgsub-backup-s3", key)
        );
    }
    let scratch = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "backup")
        .unwrap();
    assert!(scratch.empty_dir.is_some(), "the dump waits in an emptyDir");

    let missing = try_render(&["backup.pgDump.enabled=true", "backup.pgDump.destination=s3"])
        .expect_err("s3 without a bucket");
    assert!(missing.contains("backup.pgDump.s3"), "{missing}");
    for (set, field) in [
        ("backup.pgDump.keep=0", "/backup/pgDump/keep"),
        (
            "backup.pgDump.destination=ftp",
            "/backup/pgDump/destination",
        ),
        ("backup.pgDump.schedule=daily", "/backup/pgDump/schedule"),
        (
            "backup.pgDump.s3.endpoint=s3.example.test",
            "/backup/pgDump/s3/endpoint",
        ),
    ] {
        let refused = try_render(&[set]).expect_err(set);
        assert!(refused.contains(field), "{set}: {refused}");
    }
}

#[test]
fn the_cloudnativepg_option_renders_a_scheduled_backup_of_the_named_cluster() {
    let docs = render(&[
        "backup.cloudnativePg.enabled=true",
        "backup.cloudnativePg.cluster=wgsub-db",
    ]);
    let scheduled = find(&docs, "ScheduledBackup", &component("ledger"));
    assert_eq!(scheduled["apiVersion"], "postgresql.cnpg.io/v1");
    assert_eq!(scheduled["spec"]["cluster"]["name"], "wgsub-db");
    assert_eq!(scheduled["spec"]["schedule"], "0 0 3 * * *");
    assert_eq!(scheduled["spec"]["method"], "barmanObjectStore");
    assert_eq!(scheduled["spec"]["immediate"], true);
    assert_eq!(scheduled["spec"]["backupOwnerReference"], "self");
    assert!(
        of_kind(&docs, "CronJob").is_empty(),
        "independent of pgDump"
    );

    let unnamed =
        try_render(&["backup.cloudnativePg.enabled=true"]).expect_err("a cluster is needed");
    assert!(
        unnamed.contains("backup.cloudnativePg.cluster"),
        "{unnamed}"
    );
    let five = try_render(&[
        "backup.cloudnativePg.enabled=true",
        "backup.cloudnativePg.cluster=wgsub-db",
        "backup.cloudnativePg.schedule=0 3 * * *",
    ])
    .expect_err("CloudNativePG's schedule has six fields");
    assert!(five.contains("/backup/cloudnativePg/schedule"), "{five}");
}

fn run_dump(dir: &Path, database_url: &str, keep: &str) -> std::process::Output {
    Command::new("sh")
        .arg(repo_root().join("charts/wgsub/files/backup/dump.sh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BACKUP_DIR", dir)
        .env("KEEP", keep)
        .env("WGSUB_DATABASE_URL", database_url)
        .output()
        .expect("sh runs the dump script")
}

fn dumps(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Needs PostgreSQL (`WGSUB_TEST_DATABASE_URL`) and Debian's postgresql-client (pg_dump,
/// pg_restore), as scripts/test provides.
#[tokio::test]
async fn the_dump_script_writes_restorable_dumps_keeps_the_newest_and_fails_without_a_trace() {
    let (_, database_url) = wgsub_ledger::testing::fresh_database("backup_script").await;
    let dir = tempfile::tempdir().unwrap();
    let mut made = Vec::new();
    for _ in 0..3 {
        let output = run_dump(dir.path(), &database_url, "2");
        assert!(
            output.status.success(),
            "dump.sh: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        made.push(dumps(dir.path()).last().cloned().unwrap());
        // Dumps are named by the second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(dumps(dir.path()), made[1..], "the newest two are kept");
    for name in &made[1..] {
        let listed = Command::new("pg_restore")
            .arg("--list")
            .arg(dir.path().join(name))
            .output()
            .expect("pg_restore runs");
        let listing = String::from_utf8_lossy(&listed.stdout);
        assert!(
            listed.status.success() && listing.contains("TABLE public users"),
            "{listing}"
        );
    }

    let unreachable = format!("{}_missing", database_url);
    let failed = run_dump(dir.path(), &unreachable, "1");
    assert!(
        !failed.status.success(),
        "a dump of a missing database fails"
    );
    assert_eq!(
        dumps(dir.path()),
        made[1..],
        "a failed run leaves no partial file and deletes no dump"
    );
}

/// A stand-in for the aws CLI, with a folder as the bucket: exactly the three calls the upload
/// script makes (`s3 cp`, `s3api list-objects-v2 … --query 'Contents[].Key' --output text`,
/// `s3 rm`), each checked against the endpoint the script was given.
const FAKE_AWS: &str = r#"#!/bin/sh
set -eu
[ "$1" = --endpoint-url ] && [ "$2" = "$EXPECTED_ENDPOINT" ] || { echo "endpoint $2" >&2; exit 2; }
shift 2
case "$1 $2" in
  "s3 cp")
    key="${5#s3://}"
    mkdir -p "$FAKE_S3/$(dirname "$key")"
    cp "$4" "$FAKE_S3/$key" ;;
  "s3api list-objects-v2")
    bucket="$4"; prefix="$6"
    keys=""
    for object in "$FAKE_S3/$bucket/$prefix"*; do
      [ -e "$object" ] && keys="$keys${keys:+	}${object#"$FAKE_S3/$bucket/"}"
    done
    echo "${keys:-None}" ;;
  "s3 rm")
    rm "$FAKE_S3/${4#s3://}" ;;
  *) echo "unexpected aws $*" >&2; exit 2 ;;
esac
"#;

#[test]
fn the_s3_upload_keeps_the_newest_dumps_under_the_prefix_and_nothing_else_is_touched() {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    let bucket = root.path().join("s3");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(bucket.join("ledger/wgsub/ledger")).unwrap();
    let aws = bin.join("aws");
    std::fs::write(&aws, FAKE_AWS).unwrap();
    let mut mode = std::fs::metadata(&aws).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&aws, mode).unwrap();
    // Older dumps already in the bucket, and an object that is not a dump.
    for old in [
        "wgsub-ledger-20261201T031700Z.dump",
        "wgsub-ledger-20261202T031700Z.dump",
        "wgsub-ledger-20261203T031700Z.dump",
        "notes.txt",
    ] {
        std::fs::write(bucket.join("ledger/wgsub/ledger").join(old), old).unwrap();
    }
    let upload = |dump: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(dump), dump).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("sh")
            .arg(repo_root().join("charts/wgsub/files/backup/upload-s3.sh"))
            .env_clear()
            .env("PATH", path)
            .env("FAKE_S3", &bucket)
            .env("EXPECTED_ENDPOINT", "https://storage.example.test")
            .env("S3_ENDPOINT", "https://storage.example.test")
            .env("S3_BUCKET", "ledger")
            .env("S3_PREFIX", "wgsub/ledger/")
            .env("BACKUP_DIR", dir.path())
            .env("KEEP", "2")
            .output()
            .expect("sh runs the upload script")
    };
    let output = upload("wgsub-ledger-20261204T031700Z.dump");
    assert!(
        output.status.success(),
        "upload-s3.sh: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        dumps(&bucket.join("ledger/wgsub/ledger")),
        [
            "notes.txt",
            "wgsub-ledger-20261203T031700Z.dump",
            "wgsub-ledger-20261204T031700Z.dump"
        ],
        "the newest two dumps are kept, the uploaded one among them"
    );
    let uploaded = std::fs::read_to_string(
        bucket.join("ledger/wgsub/ledger/wgsub-ledger-20261204T031700Z.dump"),
    )
    .unwrap();
    assert_eq!(uploaded, "wgsub-ledger-20261204T031700Z.dump");

    // No dump to upload (pg_dump wrote none): a failure, and nothing deleted.
    let empty = tempfile::tempdir().unwrap();
    let failed = Command::new("sh")
        .arg(repo_root().join("charts/wgsub/files/backup/upload-s3.sh"))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("FAKE_S3", &bucket)
        .env("EXPECTED_ENDPOINT", "https://storage.example.test")
        .env("S3_ENDPOINT", "https://storage.example.test")
        .env("S3_BUCKET", "ledger")
        .env("S3_PREFIX", "wgsub/ledger/")
        .env("BACKUP_DIR", empty.path())
        .env("KEEP", "1")
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert_eq!(dumps(&bucket.join("ledger/wgsub/ledger")).len(), 3);
}
