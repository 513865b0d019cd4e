//! The ledger's notification outbox drained by several bot replicas at once, against real
//! PostgreSQL, the real Kubernetes API server (the bot's ServiceAccount under the chart's RBAC)
//! and a fake Telegram Bot API (wiremock): every notification is sent exactly once however the
//! drains interleave, a row claimed by a replica that stopped mid-send is sent once its claim is
//! stale, and a passing Telegram failure (or a request to wait) leaves the row for the next drain.

mod common;

use std::collections::BTreeMap;

use common::{Options, bot_for, fake_telegram, harness, sent_texts};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use wgsub_bot::jobs;
use wgsub_bot::text::{self, Lang};
use wgsub_ledger::outbox::OUTBOX_STALE_CLAIM;
use wgsub_ledger::{Ledger, NotificationEvent, TelegramUser};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Users `ids` (English), one outbox notification each, queued at `at`.
async fn queue(ledger: &Ledger, ids: &[i64], at: Timestamp) {
    for &id in ids {
        let user = TelegramUser {
            id,
            username: None,
            first_name: "Anna".into(),
            last_name: None,
            language_code: Some("en".into()),
        };
        ledger.upsert_user(&user, at).await.unwrap();
        let event = event();
        sqlx::query(
            "INSERT INTO notifications (user_id, kind, payload, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(event.kind())
        .bind(serde_json::to_value(&event).unwrap())
        .bind(jiff_sqlx::ToSqlx::to_sqlx(at))
        .execute(ledger.pool())
        .await
        .unwrap();
    }
}

fn event() -> NotificationEvent {
    NotificationEvent::ReferralRewarded {
        days: 7,
        paid_until: Some(t("2026-06-01T00:00:00Z")),
    }
}

fn per_chat(sent: &[(i64, String)]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for (chat, _) in sent {
        *counts.entry(*chat).or_default() += 1;
    }
    counts
}

/// A Telegram whose every `sendMessage` fails with `status` and `body`.
async fn failing_telegram(status: u16, body: serde_json::Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn two_replicas_draining_at_once_send_each_notification_exactly_once() {
    let h = harness("bot_outbox_replicas", Options::default()).await;
    let telegram = fake_telegram(&[]).await;
    let now = t("2026-05-01T00:00:00Z");
    let users: Vec<i64> = (4101..4125).collect();
    queue(&h.ledger, &users, now).await;

    // Each replica drains in small batches until nothing is left, so their claims interleave.
    let replica = |bot: teloxide::Bot| {
        let app = h.app.clone();
        async move {
            let mut sent = 0;
            loop {
                let report = jobs::drain_outbox(&app, &bot, now, 3).await.unwrap();
                assert_eq!(report.failed, 0);
                if report.sent == 0 {
                    return sent;
                }
                sent += report.sent;
            }
        }
    };
    let (first, second) = tokio::join!(replica(bot_for(&telegram)), replica(bot_for(&telegram)));
    assert_eq!(first + second, 24);
    assert!(
        first > 0 && second > 0,
        "both replicas sent: {first} + {second}"
    );
    let sent = sent_texts(&telegram).await;
    assert_eq!(
        per_chat(&sent),
        users.iter().map(|&id| (id, 1)).collect::<BTreeMap<_, _>>()
    );
    let expected = text::referral_rewarded(Lang::En, 7, Some(t("2026-06-01T00:00:00Z")));
    assert!(sent.iter().all(|(_, text)| *text == expected));
    assert!(h.ledger.unsent_notifications(100).await.unwrap().is_empty());
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_notification_claimed_by_a_stopped_replica_is_sent_once_its_claim_is_stale() {
    let h = harness("bot_outbox_stale", Options::default()).await;
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    let queued = t("2026-05-01T00:00:00Z");
    queue(&h.ledger, &[4201], queued).await;
    // A replica claims the row and stops before sending.
    let claimed = h.ledger.claim_notifications(queued, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);

    let soon = queued + SignedDuration::from_mins(1);
    let report = jobs::drain_outbox(&h.app, &bot, soon, 100).await.unwrap();
    assert_eq!((report.sent, report.failed), (0, 0));
    assert!(sent_texts(&telegram).await.is_empty());

    let stale = queued + OUTBOX_STALE_CLAIM + SignedDuration::from_secs(1);
    let report = jobs::drain_outbox(&h.app, &bot, stale, 100).await.unwrap();
    assert_eq!((report.sent, report.failed), (1, 0));
    let report = jobs::drain_outbox(&h.app, &bot, stale + OUTBOX_STALE_CLAIM * 2, 100)
        .await
        .unwrap();
    assert_eq!((report.sent, report.failed), (0, 0));
    assert_eq!(per_chat(&sent_texts(&telegram).await), [(4201, 1)].into());
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_passing_telegram_failure_leaves_the_notification_for_the_next_drain() {
    let h = harness("bot_outbox_transient", Options::default()).await;
    let queued = t("2026-05-01T00:00:00Z");
    queue(&h.ledger, &[4301], queued).await;
    let down = failing_telegram(
        500,
        json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}),
    )
    .await;

    let first = queued + SignedDuration::from_mins(1);
    let report = jobs::drain_outbox(&h.app, &bot_for(&down), first, 100)
        .await
        .unwrap();
    assert_eq!((report.sent, report.failed), (0, 1));
    assert_eq!(sent_texts(&down).await.len(), 1);

    // The next run, well before the claim would be stale, retries it.
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    let next = first + SignedDuration::from_mins(1);
    let report = jobs::drain_outbox(&h.app, &bot, next, 100).await.unwrap();
    assert_eq!((report.sent, report.failed), (1, 0));
    let report = jobs::drain_outbox(&h.app, &bot, next, 100).await.unwrap();
    assert_eq!((report.sent, report.failed), (0, 0));
    assert_eq!(per_chat(&sent_texts(&telegram).await), [(4301, 1)].into());
    assert!(h.ledger.unsent_notifications(100).await.unwrap().is_empty());
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn telegram_asking_to_wait_gives_back_the_rest_of_the_batch() {
    let h = harness("bot_outbox_retry_after", Options::default()).await;
    let queued = t("2026-05-01T00:00:00Z");
    queue(&h.ledger, &[4401, 4402, 4403], queued).await;
    let busy = failing_telegram(
        429,
        json!({"ok": false, "error_code": 429,
               "description": "Too Many Requests: retry after 3",
               "parameters": {"retry_after": 3}}),
    )
    .await;

    let first = queued + SignedDuration::from_mins(1);
    let report = jobs::drain_outbox(&h.app, &bot_for(&busy), first, 100)
        .await
        .unwrap();
    assert_eq!((report.sent, report.failed), (0, 1));
    assert_eq!(
        sent_texts(&busy).await.len(),
        1,
        "the run stopped at the 429"
    );

    let telegram = fake_telegram(&[]).await;
    let next = first + SignedDuration::from_secs(10);
    let report = jobs::drain_outbox(&h.app, &bot_for(&telegram), next, 100)
        .await
        .unwrap();
    assert_eq!((report.sent, report.failed), (3, 0));
    assert_eq!(
        per_chat(&sent_texts(&telegram).await),
        [(4401, 1), (4402, 1), (4403, 1)].into()
    );
    h.assert_nothing_forbidden();
}
