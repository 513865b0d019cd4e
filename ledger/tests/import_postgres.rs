//! Imported customers in the ledger against a real PostgreSQL (a fresh database per test from
//! `WGSUB_TEST_DATABASE_URL`): the `import` entry folds to exactly the paid-until they had, a
//! batch with one user already in the ledger writes nothing, an imported user gets no trial, and what earlier imports left is
//! read back for the next run's plan.

use jiff::Timestamp;
use wgsub_crds::import::plan::{LedgerUser, import_entry};
use wgsub_ledger::import::ImportedUser;
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::{Ledger, TelegramUser};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2026-12-07T10:00:00Z";

fn imported(id: i64, until: &str) -> ImportedUser {
    ImportedUser {
        telegram_id: id,
        entry: import_entry(t(until), t(NOW)),
    }
}

#[tokio::test]
async fn imported_users_fold_to_exactly_their_paid_until() {
    let (pool, _) = fresh_database("import_fold").await;
    let ledger = Ledger::new(pool, false);
    let folded = ledger
        .import_users(
            &[
                imported(101, "2027-01-31T00:00:00Z"),
                imported(102, "2027-02-01T17:23:45Z"),
            ],
            t(NOW),
        )
        .await
        .unwrap();
    assert_eq!(folded[0].1.paid_until, Some(t("2027-01-31T00:00:00Z")));
    assert_eq!(folded[1].1.paid_until, Some(t("2027-02-01T17:23:45Z")));
    let user = ledger.user(102).await.unwrap().unwrap();
    assert_eq!(user.entitlement.paid_until, Some(t("2027-02-01T17:23:45Z")));
    assert_eq!(user.entitlement.max_devices, 1);
    assert_ne!(
        user.ledger_version, user.synced_version,
        "the sync is still to do"
    );

    let states = ledger.import_states(&[101, 102, 103]).await.unwrap();
    assert_eq!(states.len(), 2);
    assert_eq!(
        states[&102],
        LedgerUser {
            imported_until: Some(t("2027-02-01T17:23:45Z"))
        }
    );
}

#[tokio::test]
async fn a_batch_with_a_user_already_in_the_ledger_writes_nothing() {
    let (pool, _) = fresh_database("import_conflict").await;
    let ledger = Ledger::new(pool, false);
    let known = TelegramUser {
        id: 7,
        username: None,
        first_name: "Known".into(),
        last_name: None,
        language_code: None,
    };
    ledger.upsert_user(&known, t(NOW)).await.unwrap();
    let error = ledger
        .import_users(
            &[
                imported(6, "2027-01-31T00:00:00Z"),
                imported(7, "2027-01-31T00:00:00Z"),
            ],
            t(NOW),
        )
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "user 7 is already in the ledger");
    assert!(ledger.user(6).await.unwrap().is_none());
    let states = ledger.import_states(&[6, 7]).await.unwrap();
    assert_eq!(
        states.into_iter().collect::<Vec<_>>(),
        [(
            7,
            LedgerUser {
                imported_until: None
            }
        )]
    );
    // An imported customer is not new: no trial on their first /start.
    ledger
        .import_users(&[imported(6, "2027-01-31T00:00:00Z")], t(NOW))
        .await
        .unwrap();
    assert_eq!(ledger.grant_trial(6, 3, t(NOW)).await.unwrap(), None);
    assert_eq!(
        ledger
            .user(6)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until,
        Some(t("2027-01-31T00:00:00Z"))
    );
}
