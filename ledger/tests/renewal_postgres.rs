//! Automatic renewal in the ledger against a real PostgreSQL (a fresh database per test from
//! `WGSUB_TEST_DATABASE_URL`) and a stateful YooKassa fake with saved payment methods and
//! charges without confirmation: the card saved only with consent and shown masked, a period
//! charged once when two replicas race and after a restart mid-call, nothing charged after
//! renewal was switched off or for a plan no longer on sale, a declined charge adding no time
//! and telling the user once, a revoked card deleted; a charge whose answer was lost asked again
//! with the same key and the first body byte for byte, never once YooKassa may have forgotten
//! the key, and applied once by a late webhook even after it was given up.

#[path = "support/fake_yookassa.rs"]
mod fake_yookassa;

use std::time::Duration;

use fake_yookassa::{FakeYooKassa, MethodState};
use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;
use wgsub_crds::plans::{LocalizedText, Plan, PlanCatalogue};
use wgsub_ledger::renewal::{REASK_WINDOW, RENEWAL_GRACE, STALE_CLAIM};
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::yookassa::PaymentDetails;
use wgsub_ledger::{
    ApplyOutcome, Ledger, NewPromoCode, NotificationEvent, PaymentOrder, PromoBenefit,
    RenewalContext, RenewalReport, TelegramUser, YooKassa, YooKassaConfig,
};
use wiremock::MockServer;
use zeroize::Zeroizing;

const DAY: SignedDuration = SignedDuration::from_hours(24);

fn plan() -> Plan {
    Plan {
        id: "month".into(),
        title: LocalizedText {
            ru: "Месяц".into(),
            en: "Month".into(),
        },
        days: 30,
        price_minor: 19_900,
        currency: "RUB".into(),
        devices: 1,
        price_stars: None,
        traffic_gib: None,
    }
}

fn catalogue() -> PlanCatalogue {
    PlanCatalogue::new(vec![plan()]).unwrap()
}

struct World {
    ledger: Ledger,
    url: String,
    fake: FakeYooKassa,
    yookassa: YooKassa,
    _server: MockServer,
}

async fn world(label: &str) -> World {
    let (pool, url) = fresh_database(label).await;
    let server = MockServer::start().await;
    let fake = FakeYooKassa::mount(&server).await;
    let yookassa = YooKassa::new(YooKassaConfig {
        api_base: format!("{}/v3", server.uri()),
        shop_id: "123456".into(),
        secret_key: Zeroizing::new(format!("test_{}", Uuid::new_v4().simple())),
        timeout: Duration::from_secs(2),
        max_attempts: 1,
        retry_backoff: Duration::from_millis(5),
    })
    .unwrap();
    World {
        ledger: Ledger::new(pool, false),
        url,
        fake,
        yookassa,
        _server: server,
    }
}

impl World {
    /// Another replica: its own pool on the same database.
    fn replica(&self) -> Ledger {
        let pool =
            wgsub_ledger::db::connect_lazy(&wgsub_ledger::DbConfig::new(self.url.clone())).unwrap();
        Ledger::new(pool, false)
    }

    fn ctx<'a>(&'a self, plans: &'a PlanCatalogue) -> RenewalContext<'a> {
        RenewalContext {
            yookassa: &self.yookassa,
            plans,
            receipt: None,
        }
    }

    /// What the webhook does for a payment: re-fetch, apply once, settle renewal.
    async fn webhook(&self, yookassa_id: &str) -> Option<ApplyOutcome> {
        let details: PaymentDetails = self
            .yookassa
            .get_payment_details(yookassa_id)
            .await
            .unwrap();
        let record = self
            .ledger
            .payment_for(&details.payment)
            .await
            .unwrap()
            .unwrap();
        let now = Timestamp::now();
        let outcome = match details.payment.status.as_str() {
            "succeeded" => Some(
                self.ledger
                    .apply_payment(record.id, &details.payment, now)
                    .await
                    .unwrap(),
            ),
            "canceled" => {
                self.ledger.cancel_payment(record.id, now).await.unwrap();
                None
            }
            _ => None,
        };
        self.ledger
            .settle_renewal(&record, &details, now)
            .await
            .unwrap();
        outcome
    }

    /// User `id` buys the month, agreeing to save the card or not, and pays; the webhook
    /// arrives. Returns the saved method's id at the fake.
    async fn buy(&self, id: i64, save_card: bool) -> Option<String> {
        let now = Timestamp::now();
        self.ledger
            .upsert_user(
                &TelegramUser {
                    id,
                    username: None,
                    first_name: format!("user{id}"),
                    last_name: None,
                    language_code: Some("en".into()),
                },
                now,
            )
            .await
            .unwrap();
        let plan = plan();
        let created = self
            .ledger
            .create_payment_saving_card(
                &self.yookassa,
                PaymentOrder {
                    user_id: id,
                    plan: &plan,
                    return_url: "https://t.me/wgsub_bot",
                    receipt: None,
                },
                save_card,
                now,
            )
            .await
            .unwrap();
        let method = self.fake.pay(&created.yookassa_id);
        let applied = self.webhook(&created.yookassa_id).await;
        assert!(matches!(applied, Some(ApplyOutcome::Applied { .. })));
        method
    }

    async fn paid_until(&self, id: i64) -> Timestamp {
        self.ledger
            .user(id)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until
            .unwrap()
    }

    /// The status and reason of user `id`'s renewal charge, read from the table.
    async fn charge_state(&self, id: i64) -> (String, Option<String>) {
        let pool =
            wgsub_ledger::db::connect_lazy(&wgsub_ledger::DbConfig::new(self.url.clone())).unwrap();
        sqlx::query_as("SELECT status, reason FROM renewal_charges WHERE user_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    }

    /// The one payment charged at the fake: its YooKassa id.
    fn charged_id(&self) -> String {
        let charged = self.fake.charged_payments();
        assert_eq!(charged.len(), 1, "one payment charged at YooKassa");
        charged[0]["id"].as_str().unwrap().to_owned()
    }

    /// The renewal notices user `id` is to get: `failed:<reason>` or `unconfirmed`.
    async fn renewal_notices(&self, id: i64) -> Vec<String> {
        self.ledger
            .unsent_notifications(100)
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.user_id == id)
            .filter_map(|n| match n.event {
                NotificationEvent::RenewalFailed { reason, .. } => Some(format!("failed:{reason}")),
                NotificationEvent::RenewalUnconfirmed { .. } => Some("unconfirmed".to_owned()),
                _ => None,
            })
            .collect()
    }

    /// `first_purchase` of each payment notice of user `id`, oldest first.
    async fn payment_notices(&self, id: i64) -> Vec<bool> {
        self.ledger
            .unsent_notifications(100)
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.user_id == id)
            .filter_map(|n| match n.event {
                NotificationEvent::PaymentSucceeded { first_purchase, .. } => Some(first_purchase),
                _ => None,
            })
            .collect()
    }

    async fn renewal_failures(&self, id: i64) -> Vec<String> {
        self.ledger
            .unsent_notifications(100)
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.user_id == id)
            .filter_map(|n| match n.event {
                NotificationEvent::RenewalFailed { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test]
async fn the_card_is_saved_only_with_consent_and_shown_masked() {
    let w = world("renewal_card").await;
    assert!(w.buy(1, false).await.is_none());
    let status = w.ledger.renewal_status(1).await.unwrap();
    assert!(!status.enabled);
    assert_eq!(status.card, None);
    assert_eq!(status.next_charge_at, None);

    w.buy(2, true).await.expect("the fake saved the card");
    // The request asked YooKassa to save the method; the first did not.
    let purchases = w.fake.purchases();
    assert_eq!(purchases[0].get("save_payment_method"), None);
    assert_eq!(purchases[1]["save_payment_method"], serde_json::json!(true));
    let status = w.ledger.renewal_status(2).await.unwrap();
    let paid_until = w.paid_until(2).await;
    assert!(status.enabled);
    let card = status.card.unwrap();
    assert_eq!(card.title, "Visa •••• 4242");
    assert_eq!(card.expires().as_deref(), Some("12/27"));
    assert_eq!(status.plan.as_deref(), Some("month"));
    assert_eq!(status.next_charge_at, Some(paid_until - DAY));
    assert_eq!(status.last_failure, None);
}

#[tokio::test]
async fn a_period_is_charged_once_when_two_replicas_race() {
    let w = world("renewal_race").await;
    w.buy(7, true).await.unwrap();
    let before = w.paid_until(7).await;
    let at = before - SignedDuration::from_hours(12);
    let plans = catalogue();
    let (one, two) = (w.replica(), w.replica());
    let (a, b, c) = tokio::join!(
        one.run_renewals(w.ctx(&plans), at, 50),
        two.run_renewals(w.ctx(&plans), at, 50),
        w.ledger.run_renewals(w.ctx(&plans), at, 50),
    );
    let total =
        [a.unwrap(), b.unwrap(), c.unwrap()]
            .iter()
            .fold(RenewalReport::default(), |sum, r| RenewalReport {
                attempted: sum.attempted + r.attempted,
                succeeded: sum.succeeded + r.succeeded,
                failed: sum.failed + r.failed,
                refused: sum.refused + r.refused,
                pending: sum.pending + r.pending,
                unknown: sum.unknown + r.unknown,
                given_up: sum.given_up + r.given_up,
            });
    assert_eq!(total.succeeded, 1, "{total:?}");
    assert_eq!(total.attempted, 1, "one replica asked YooKassa: {total:?}");
    assert_eq!(
        w.fake.charges().len(),
        1,
        "one charge request reached YooKassa"
    );
    assert_eq!(w.fake.charged_payments().len(), 1);
    assert_eq!(w.paid_until(7).await, before + DAY * 30);
    // The webhook of the charge arrives (twice): nothing more is applied.
    let id = w.fake.charged_payments()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        assert!(matches!(
            w.webhook(&id).await,
            Some(ApplyOutcome::AlreadyApplied { .. })
        ));
    }
    assert_eq!(w.paid_until(7).await, before + DAY * 30);
    // A later run at the same instant finds the new period not yet due.
    let again = w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
    assert_eq!(again, RenewalReport::default());
    assert_eq!(w.fake.charges().len(), 1);
    // The charge sent the saved method, no confirmation, our payment's deterministic key.
    let (key, body) = &w.fake.charges()[0];
    assert_eq!(
        key,
        &wgsub_ledger::renewal::idempotence_key(7, before).to_string()
    );
    assert!(body.get("confirmation").is_none());
    assert!(
        body["payment_method_id"]
            .as_str()
            .unwrap()
            .starts_with("pm-")
    );
}

#[tokio::test]
async fn a_charge_whose_answer_was_lost_is_asked_again_with_the_same_key_and_applied_once() {
    let w = world("renewal_restart").await;
    w.buy(8, true).await.unwrap();
    let before = w.paid_until(8).await;
    let at = before - SignedDuration::from_hours(20);
    let plans = catalogue();
    w.fake.fail_next_posts(1);
    let first = w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
    assert_eq!(first.pending, 1);
    assert_eq!(w.paid_until(8).await, before);
    // A restarted replica soon after does not race the call that may still be running...
    let soon = w
        .replica()
        .run_renewals(w.ctx(&plans), at + SignedDuration::from_mins(1), 50)
        .await
        .unwrap();
    assert_eq!(soon, RenewalReport::default());
    // ...and once the claim is stale asks again with the same key.
    let later = w
        .replica()
        .run_renewals(
            w.ctx(&plans),
            at + STALE_CLAIM + SignedDuration::from_secs(1),
            50,
        )
        .await
        .unwrap();
    assert_eq!(later.succeeded, 1, "{later:?}");
    let keys: Vec<String> = w.fake.charges().into_iter().map(|(key, _)| key).collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
    assert_eq!(w.fake.charged_payments().len(), 1);
    assert_eq!(w.paid_until(8).await, before + DAY * 30);
}

#[tokio::test]
async fn nothing_is_charged_after_renewal_was_switched_off() {
    let w = world("renewal_off").await;
    w.buy(9, true).await.unwrap();
    let before = w.paid_until(9).await;
    assert!(w.ledger.disable_renewal(9, Timestamp::now()).await.unwrap());
    assert!(!w.ledger.disable_renewal(9, Timestamp::now()).await.unwrap());
    let status = w.ledger.renewal_status(9).await.unwrap();
    assert!(!status.enabled);
    assert_eq!(status.card, None);
    let plans = catalogue();
    for hours in [20, 1] {
        let at = before - SignedDuration::from_hours(hours);
        let report = w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
        assert_eq!(report, RenewalReport::default());
    }
    assert!(w.fake.charges().is_empty());
    assert_eq!(w.paid_until(9).await, before);
}

#[tokio::test]
async fn a_late_repeat_of_the_saving_webhook_does_not_bring_the_card_back() {
    let w = world("renewal_replay").await;
    let now = Timestamp::now();
    w.ledger
        .upsert_user(
            &TelegramUser {
                id: 10,
                username: None,
                first_name: "u".into(),
                last_name: None,
                language_code: None,
            },
            now,
        )
        .await
        .unwrap();
    let plan = plan();
    let created = w
        .ledger
        .create_payment_saving_card(
            &w.yookassa,
            PaymentOrder {
                user_id: 10,
                plan: &plan,
                return_url: "https://t.me/wgsub_bot",
                receipt: None,
            },
            true,
            now,
        )
        .await
        .unwrap();
    w.fake.pay(&created.yookassa_id).unwrap();
    w.webhook(&created.yookassa_id).await;
    assert!(w.ledger.renewal_status(10).await.unwrap().enabled);
    w.ledger.disable_renewal(10, now).await.unwrap();
    assert!(matches!(
        w.webhook(&created.yookassa_id).await,
        Some(ApplyOutcome::AlreadyApplied { .. })
    ));
    assert!(!w.ledger.renewal_status(10).await.unwrap().enabled);
}

#[tokio::test]
async fn a_declined_renewal_adds_no_time_tells_the_user_once_and_is_not_retried() {
    let w = world("renewal_declined").await;
    let method = w.buy(11, true).await.unwrap();
    w.fake
        .set_method(&method, MethodState::Declined("insufficient_funds".into()));
    let before = w.paid_until(11).await;
    let plans = catalogue();
    let at = before - SignedDuration::from_hours(10);
    let report = w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(w.paid_until(11).await, before);
    assert_eq!(w.renewal_failures(11).await, ["insufficient_funds"]);
    // The charge's webhook (canceled) repeats nothing.
    let id = w.fake.charged_payments()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.webhook(&id).await;
    assert_eq!(w.renewal_failures(11).await, ["insufficient_funds"]);
    // Once per period: later runs do not charge again; the card stays (not revoked).
    for hours in [5, 1] {
        let at = before - SignedDuration::from_hours(hours);
        w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
    }
    assert_eq!(w.fake.charges().len(), 1);
    let status = w.ledger.renewal_status(11).await.unwrap();
    assert!(status.enabled);
    assert_eq!(status.last_failure.as_deref(), Some("insufficient_funds"));
    assert_eq!(w.paid_until(11).await, before);
}

#[tokio::test]
async fn a_revoked_card_is_deleted_when_its_renewal_fails() {
    let w = world("renewal_revoked").await;
    let method = w.buy(12, true).await.unwrap();
    w.fake
        .set_method(&method, MethodState::Declined("permission_revoked".into()));
    let before = w.paid_until(12).await;
    let plans = catalogue();
    let report = w
        .ledger
        .run_renewals(w.ctx(&plans), before - SignedDuration::from_hours(3), 50)
        .await
        .unwrap();
    assert_eq!(report.failed, 1);
    assert_eq!(w.renewal_failures(12).await, ["permission_revoked"]);
    let status = w.ledger.renewal_status(12).await.unwrap();
    assert!(!status.enabled);
    assert_eq!(status.last_failure.as_deref(), Some("permission_revoked"));
    assert_eq!(w.paid_until(12).await, before);
}

#[tokio::test]
async fn a_renewal_of_a_plan_no_longer_on_sale_is_refused_and_nothing_charged() {
    let w = world("renewal_plan_gone").await;
    w.buy(13, true).await.unwrap();
    let before = w.paid_until(13).await;
    let other = PlanCatalogue::new(vec![Plan {
        id: "year".into(),
        days: 365,
        ..plan()
    }])
    .unwrap();
    let at = before - SignedDuration::from_hours(6);
    let report = w.ledger.run_renewals(w.ctx(&other), at, 50).await.unwrap();
    assert_eq!(report.refused, 1, "{report:?}");
    assert!(w.fake.charges().is_empty());
    assert_eq!(w.paid_until(13).await, before);
    assert_eq!(w.renewal_failures(13).await, ["plan_unavailable"]);
    // Refused once: the user is not told again, and nothing is charged later either.
    w.ledger
        .run_renewals(w.ctx(&other), at + SignedDuration::from_hours(1), 50)
        .await
        .unwrap();
    assert_eq!(w.renewal_failures(13).await, ["plan_unavailable"]);
    assert!(w.fake.charges().is_empty());
}

#[tokio::test]
async fn a_pending_charge_is_applied_once_by_the_poll_or_the_webhook() {
    let w = world("renewal_late").await;
    let method = w.buy(14, true).await.unwrap();
    w.fake.set_method(&method, MethodState::Late);
    let before = w.paid_until(14).await;
    let plans = catalogue();
    let at = before - SignedDuration::from_hours(12);
    let report = w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
    assert_eq!(report.pending, 1);
    assert_eq!(w.paid_until(14).await, before);
    let id = w.fake.charged_payments()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.fake.decide(&id, None);
    // The webhook and the next run's poll both see it succeeded; it is applied once.
    let replica = w.replica();
    let (hook, poll) = tokio::join!(
        w.webhook(&id),
        replica.run_renewals(w.ctx(&plans), at + SignedDuration::from_mins(1), 50)
    );
    assert!(hook.is_some());
    poll.unwrap();
    assert_eq!(w.paid_until(14).await, before + DAY * 30);
    assert_eq!(w.fake.charges().len(), 1);
    assert_eq!(
        w.ledger.renewal_status(14).await.unwrap().last_failure,
        None
    );
}

#[tokio::test]
async fn a_charge_asked_again_sends_the_first_body_byte_for_byte_after_the_user_changed_language() {
    let w = world("renewal_same_body").await;
    w.buy(11, true).await.unwrap();
    let before = w.paid_until(11).await;
    let at = before - SignedDuration::from_hours(20);
    let plans = catalogue();
    w.fake.lose_next_charge_answers(1);
    let first = w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
    assert_eq!(first.pending, 1, "{first:?}");
    // The user switches the bot to Russian before the charge is asked again.
    w.ledger
        .upsert_user(
            &TelegramUser {
                id: 11,
                username: None,
                first_name: "user11".into(),
                last_name: None,
                language_code: Some("ru".into()),
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    let later = w
        .ledger
        .run_renewals(
            w.ctx(&plans),
            at + STALE_CLAIM + SignedDuration::from_secs(1),
            50,
        )
        .await
        .unwrap();
    assert_eq!(later.succeeded, 1, "{later:?}");
    let charges = w.fake.charges();
    assert_eq!(charges.len(), 2);
    assert_eq!(charges[0], charges[1], "same key, same body");
    assert_eq!(charges[1].1["description"], serde_json::json!("VPN: Month"));
    w.charged_id();
    assert_eq!(w.paid_until(11).await, before + DAY * 30);
    assert_eq!(w.charge_state(11).await, ("succeeded".to_owned(), None));
}

#[tokio::test]
async fn a_lost_charge_is_never_asked_again_once_yookassa_may_forget_its_key_and_its_webhook_applies_it_once()
 {
    let w = world("renewal_reask_window").await;
    w.buy(10, true).await.unwrap();
    let before = w.paid_until(10).await;
    let at = before - SignedDuration::from_hours(20);
    let plans = catalogue();
    // YooKassa charges the card; its answer is lost, and so is every answer within the window.
    w.fake.lose_next_charge_answers(1_000);
    let first = w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
    assert_eq!(first.pending, 1, "{first:?}");
    let inside = at + REASK_WINDOW - SignedDuration::from_mins(1);
    let asked = w
        .ledger
        .run_renewals(w.ctx(&plans), inside, 50)
        .await
        .unwrap();
    assert_eq!(
        asked.pending, 1,
        "still asked again inside the window: {asked:?}"
    );
    assert_eq!(w.fake.charges().len(), 2);
    w.fake.lose_next_charge_answers(0);
    // Past the window nothing is sent any more: the charge is left for review, unknown.
    let past = at + REASK_WINDOW + SignedDuration::from_secs(1);
    let report = w
        .ledger
        .run_renewals(w.ctx(&plans), past, 50)
        .await
        .unwrap();
    assert_eq!(
        report,
        RenewalReport {
            unknown: 1,
            ..RenewalReport::default()
        }
    );
    for hours in [1, 10] {
        let later = past + SignedDuration::from_hours(hours);
        let report = w
            .ledger
            .run_renewals(w.ctx(&plans), later, 50)
            .await
            .unwrap();
        assert_eq!(report, RenewalReport::default());
    }
    assert_eq!(w.fake.charges().len(), 2, "never sent again");
    assert_eq!(
        w.charge_state(10).await,
        ("unknown".to_owned(), Some("no_answer".to_owned()))
    );
    assert_eq!(w.paid_until(10).await, before);
    assert!(
        w.renewal_failures(10).await.is_empty(),
        "the user is not told it failed"
    );
    assert_eq!(
        w.ledger.renewal_status(10).await.unwrap().last_failure,
        None
    );
    // The webhook of the original payment, found by its metadata, applies it once.
    let id = w.charged_id();
    assert!(matches!(
        w.webhook(&id).await,
        Some(ApplyOutcome::Applied { .. })
    ));
    assert!(matches!(
        w.webhook(&id).await,
        Some(ApplyOutcome::AlreadyApplied { .. })
    ));
    assert_eq!(w.paid_until(10).await, before + DAY * 30);
    assert_eq!(w.charge_state(10).await, ("succeeded".to_owned(), None));
    assert_eq!(w.fake.charges().len(), 2);
}

#[tokio::test]
async fn a_charge_given_up_unanswered_is_unknown_and_applied_once_when_its_webhook_arrives_later() {
    let w = world("renewal_late_success").await;
    w.buy(12, true).await.unwrap();
    let before = w.paid_until(12).await;
    let at = before - SignedDuration::from_hours(20);
    let plans = catalogue();
    w.fake.lose_next_charge_answers(1);
    let first = w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
    assert_eq!(first.pending, 1, "{first:?}");
    // The user switches renewal off before the unanswered charge is asked again: given up.
    assert!(
        w.ledger
            .disable_renewal(12, Timestamp::now())
            .await
            .unwrap()
    );
    let gave_up = w
        .ledger
        .run_renewals(
            w.ctx(&plans),
            at + STALE_CLAIM + SignedDuration::from_secs(1),
            50,
        )
        .await
        .unwrap();
    assert_eq!(gave_up.given_up, 1, "{gave_up:?}");
    assert_eq!(gave_up.failed, 0, "{gave_up:?}");
    assert_eq!(w.fake.charges().len(), 1, "not sent again");
    // The first ask may have charged: the user hears it is being checked, never that it failed.
    assert_eq!(w.renewal_notices(12).await, ["unconfirmed"]);
    assert_eq!(
        w.charge_state(12).await,
        ("unknown".to_owned(), Some("renewal_off".to_owned()))
    );
    assert_eq!(
        w.ledger.renewal_status(12).await.unwrap().last_failure,
        None,
        "an unknown outcome is no failure to show"
    );
    assert_eq!(w.paid_until(12).await, before);
    // YooKassa had charged it after all: its webhook applies it, once.
    let id = w.charged_id();
    assert!(matches!(
        w.webhook(&id).await,
        Some(ApplyOutcome::Applied { .. })
    ));
    assert!(matches!(
        w.webhook(&id).await,
        Some(ApplyOutcome::AlreadyApplied { .. })
    ));
    assert_eq!(w.paid_until(12).await, before + DAY * 30);
    assert_eq!(w.charge_state(12).await, ("succeeded".to_owned(), None));
    assert_eq!(
        w.ledger.renewal_status(12).await.unwrap().last_failure,
        None
    );
    let again = w
        .ledger
        .run_renewals(w.ctx(&plans), at + SignedDuration::from_hours(2), 50)
        .await
        .unwrap();
    assert_eq!(again, RenewalReport::default());
    assert_eq!(w.fake.charges().len(), 1);
}

#[tokio::test]
async fn a_renewal_charge_keeps_the_traffic_quota_its_plan_has_when_it_is_charged() {
    let w = world("renewal_quota").await;
    w.buy(11, true).await.unwrap();
    assert_eq!(
        w.ledger
            .user(11)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .traffic_quota,
        None,
        "the month was bought without a quota"
    );
    let before = w.paid_until(11).await;
    // The catalogue now gives the month 20 GiB per period; the renewal buys that.
    let with_quota = Plan {
        traffic_gib: Some(20),
        ..plan()
    };
    let plans = PlanCatalogue::new(vec![with_quota.clone()]).unwrap();
    let at = before - SignedDuration::from_hours(12);
    let report = w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
    assert_eq!(report.succeeded, 1, "{report:?}");
    let user = w.ledger.user(11).await.unwrap().unwrap();
    assert_eq!(user.entitlement.paid_until, Some(before + DAY * 30));
    assert_eq!(user.entitlement.traffic_quota, with_quota.traffic_quota());
    let stored: Vec<(Option<i64>, Option<i32>)> = sqlx::query_as(
        "SELECT traffic_bytes, traffic_period_days FROM payments WHERE user_id = $1 \
         ORDER BY created_at",
    )
    .bind(11_i64)
    .fetch_all(w.ledger.pool())
    .await
    .unwrap();
    assert_eq!(stored, [(None, None), (Some(20 << 30), Some(30))]);
}

#[tokio::test]
async fn a_given_up_charge_whose_late_webhook_says_canceled_fails_and_tells_the_user_then() {
    let w = world("renewal_late_cancel").await;
    let method = w.buy(14, true).await.unwrap();
    let before = w.paid_until(14).await;
    // Charged late, within the grace after the period's end; YooKassa's answer is lost.
    let at = before + SignedDuration::from_hours(2);
    let plans = catalogue();
    w.fake.set_method(&method, MethodState::Late);
    w.fake.lose_next_charge_answers(1);
    let first = w.ledger.run_renewals(w.ctx(&plans), at, 50).await.unwrap();
    assert_eq!((first.attempted, first.pending), (1, 1), "{first:?}");
    // Past the grace, the unanswered charge is not asked again: given up, outcome unknown.
    let late = before + RENEWAL_GRACE + SignedDuration::from_mins(30);
    let gave_up = w
        .ledger
        .run_renewals(w.ctx(&plans), late, 50)
        .await
        .unwrap();
    assert_eq!(gave_up.given_up, 1, "{gave_up:?}");
    assert_eq!(
        w.charge_state(14).await,
        (
            "unknown".to_owned(),
            Some("provider_unavailable".to_owned())
        )
    );
    assert_eq!(w.renewal_notices(14).await, ["unconfirmed"]);
    // YooKassa's answer arrives after all: declined. Now it failed, and the user hears so once.
    let id = w.charged_id();
    w.fake.decide(&id, Some("insufficient_funds"));
    assert_eq!(w.webhook(&id).await, None);
    assert_eq!(w.webhook(&id).await, None);
    assert_eq!(
        w.charge_state(14).await,
        ("failed".to_owned(), Some("insufficient_funds".to_owned()))
    );
    assert_eq!(
        w.renewal_notices(14).await,
        ["unconfirmed", "failed:insufficient_funds"]
    );
    assert_eq!(w.paid_until(14).await, before);
}

#[tokio::test]
async fn a_redeemed_percentage_is_taken_off_the_next_renewal_once_and_its_notice_has_no_guide() {
    let w = world("renewal_promo").await;
    w.buy(15, true).await.unwrap();
    let before = w.paid_until(15).await;
    let now = Timestamp::now();
    w.ledger
        .create_promo_code(
            &NewPromoCode {
                code: "QUARTER".into(),
                benefit: PromoBenefit::PercentOff(25),
                expires_at: now + DAY * 30,
                max_uses: 10,
                admin_id: 1,
            },
            now,
        )
        .await
        .unwrap();
    w.ledger
        .redeem_promo_code(15, "quarter", now)
        .await
        .unwrap();
    let plans = catalogue();
    let first = w
        .ledger
        .run_renewals(w.ctx(&plans), before - SignedDuration::from_hours(20), 50)
        .await
        .unwrap();
    assert_eq!((first.attempted, first.succeeded), (1, 1), "{first:?}");
    let charges = w.fake.charges();
    assert_eq!(charges[0].1["amount"]["value"], "149.25", "25 % off 199.00");
    let renewed = w.paid_until(15).await;
    assert_eq!(renewed, before + DAY * 30);
    // The discount is used up: the renewal after that is charged in full.
    let second = w
        .ledger
        .run_renewals(w.ctx(&plans), renewed - SignedDuration::from_hours(20), 50)
        .await
        .unwrap();
    assert_eq!((second.attempted, second.succeeded), (1, 1), "{second:?}");
    let charges = w.fake.charges();
    assert_eq!(charges.len(), 2);
    assert_eq!(charges[1].1["amount"]["value"], "199.00");
    assert_eq!(w.paid_until(15).await, renewed + DAY * 30);
    // Only the first purchase's notice leads to the connection guide, not the renewals'.
    assert_eq!(w.payment_notices(15).await, [true, false, false]);
}
