//! The outbox's claims against a real PostgreSQL (a fresh database per test from
//! `WGSUB_TEST_DATABASE_URL`): drains claiming at the same time get disjoint rows and together
//! every row once, a claim left by a stopped replica is taken over only once stale, and a
//! released claim makes the row claimable again — but a superseded claim cannot release it.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use wgsub_ledger::outbox::OUTBOX_STALE_CLAIM;
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::{Ledger, NotificationEvent, TelegramUser};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A ledger with `count` users, one unsent notification each; their ids, oldest first.
async fn outbox_of(label: &str, count: i64) -> (Ledger, Vec<i64>) {
    let (pool, _) = fresh_database(label).await;
    let ledger = Ledger::new(pool, false);
    let now = t("2026-05-01T00:00:00Z");
    let mut ids = vec![];
    for user_id in 1..=count {
        let user = TelegramUser {
            id: user_id,
            username: None,
            first_name: "Anna".into(),
            last_name: None,
            language_code: Some("en".into()),
        };
        ledger.upsert_user(&user, now).await.unwrap();
        let event = NotificationEvent::ReferralRewarded {
            days: 7,
            paid_until: None,
        };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO notifications (user_id, kind, payload, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(user_id)
        .bind(event.kind())
        .bind(serde_json::to_value(&event).unwrap())
        .bind(jiff_sqlx::ToSqlx::to_sqlx(now))
        .fetch_one(ledger.pool())
        .await
        .unwrap();
        ids.push(id);
    }
    (ledger, ids)
}

#[tokio::test]
async fn drains_claiming_at_once_get_disjoint_rows_and_every_row_once() {
    let (ledger, ids) = outbox_of("outbox_claims_disjoint", 60).await;
    let now = t("2026-05-01T00:01:00Z");
    let claimers = (0..8).map(|_| {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let mut mine = vec![];
            loop {
                let batch = ledger.claim_notifications(now, 3).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|n| n.id));
            }
        })
    });
    let claimed: Vec<Vec<i64>> = futures::future::try_join_all(claimers).await.unwrap();
    let all: Vec<i64> = claimed.iter().flatten().copied().collect();
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), ids.len(), "a row was claimed twice: {claimed:?}");
    assert_eq!(distinct, ids.into_iter().collect());
    assert!(
        claimed.iter().filter(|mine| !mine.is_empty()).count() > 1,
        "one claimer took everything, the race was not exercised: {claimed:?}"
    );
    // Claimed rows are still unsent, and a later claim before they are stale gets nothing.
    assert_eq!(ledger.unsent_notifications(100).await.unwrap().len(), 60);
    let later = now + SignedDuration::from_mins(1);
    assert!(
        ledger
            .claim_notifications(later, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_stale_claim_is_taken_over_and_the_stopped_replica_cannot_release_it() {
    let (ledger, ids) = outbox_of("outbox_claims_stale", 2).await;
    let first = t("2026-05-01T00:01:00Z");
    let taken = ledger.claim_notifications(first, 1).await.unwrap();
    assert_eq!(taken.iter().map(|n| n.id).collect::<Vec<_>>(), [ids[0]]);

    let almost = first + OUTBOX_STALE_CLAIM - SignedDuration::from_secs(1);
    let fresh: Vec<i64> = ledger
        .claim_notifications(almost, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(
        fresh,
        [ids[1]],
        "a claim younger than the stale period holds"
    );

    let stale = first + OUTBOX_STALE_CLAIM + SignedDuration::from_secs(1);
    let over = ledger.claim_notifications(stale, 10).await.unwrap();
    assert_eq!(over.iter().map(|n| n.id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(over[0].user_id, 1);

    // The replica that stopped wakes up: its claim is gone, it cannot free the row.
    assert!(!ledger.release_notification(ids[0], first).await.unwrap());
    assert!(
        ledger
            .claim_notifications(stale + SignedDuration::from_secs(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The one holding it can; a sent row cannot be released or claimed.
    assert!(ledger.release_notification(ids[0], stale).await.unwrap());
    assert!(ledger.mark_notification_sent(ids[1], stale).await.unwrap());
    assert!(!ledger.release_notification(ids[1], almost).await.unwrap());
    let again = ledger
        .claim_notifications(stale + SignedDuration::from_secs(2), 10)
        .await
        .unwrap();
    assert_eq!(again.iter().map(|n| n.id).collect::<Vec<_>>(), [ids[0]]);
}
