//! Promo codes and referrals through `handler_tree()` with `teloxide_tests`, against a real
//! PostgreSQL ledger, the real Kubernetes API server (as the bot's ServiceAccount) and a fake
//! YooKassa; the referrer's message through the outbox and a fake Bot API (wiremock):
//! `/admin promo` create/list/disable with usage errors, `/promo` once per user with clear
//! refusals (malformed, unknown, expired, disabled), a discount priced into the YooKassa
//! payment, and `/invite` with the personal link and what it brought.

mod common;

use common::{ADMIN, Options, bot_for, fake_telegram, harness, message, sent_texts};
use jiff::{SignedDuration, Timestamp};
use teloxide::dptree;
use teloxide_tests::{MockBot, MockCallbackQuery};
use wgsub_bot::handlers::handler_tree;
use wgsub_bot::jobs;
use wgsub_bot::text::{self, Lang};
use wgsub_ledger::yookassa::{self, Amount, METADATA_PAYMENT_ID, METADATA_USER_ID};
use wgsub_ledger::{PaymentOrder, RedeemRefusal, ReferralSummary};

const DAY: SignedDuration = SignedDuration::from_hours(24);

type Bot = MockBot<wgsub_bot::handlers::HandlerError, teloxide_tests::mock_bot::DistributionKey>;

fn last_text(bot: &Bot) -> String {
    bot.get_responses()
        .sent_messages
        .iter()
        .filter_map(|m| m.text().map(str::to_owned))
        .next_back()
        .expect("the bot answered")
}

async fn say(bot: &mut Bot, from: u64, text: &str) -> String {
    bot.update(message(from, "en", text));
    bot.dispatch().await;
    last_text(bot)
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_create_list_and_disable_codes_and_bad_arguments_get_a_usage_line() {
    let h = harness("bot_promo_admin", Options::default()).await;
    let mut bot = MockBot::new(message(2001, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;

    let usage = say(&mut bot, ADMIN, "/admin promo create WEEK 7x 2099-01-01 10").await;
    assert!(
        usage.contains("“7x” must be days") && usage.contains("Usage: /admin promo create"),
        "{usage}"
    );
    assert!(h.ledger.promo_codes(10).await.unwrap().is_empty());

    let created = say(&mut bot, ADMIN, "/admin promo create week 7d 2099-01-01 10").await;
    assert_eq!(
        created,
        "Promo code WEEK created: +7 days, until 2099-01-02 00:00 UTC, at most 10 uses."
    );
    let again = say(&mut bot, ADMIN, "/admin promo create WEEK 3d 2099-01-01 1").await;
    assert_eq!(again, "Promo code WEEK already exists.");
    let past = say(&mut bot, ADMIN, "/admin promo create OLD 3d 2000-01-01 1").await;
    assert!(past.starts_with("Promo code not created: "), "{past}");
    say(&mut bot, ADMIN, "/admin promo create SALE 20% 2099-01-01 5").await;
    let list = say(&mut bot, ADMIN, "/admin promo list").await;
    assert!(
        list.contains("WEEK — +7 days, 0/10") && list.contains("SALE — 20% off, 0/5"),
        "{list}"
    );
    let disabled = say(&mut bot, ADMIN, "/admin promo disable sale").await;
    assert_eq!(disabled, "Promo code SALE disabled.");
    let list = say(&mut bot, ADMIN, "/admin promo list").await;
    assert!(
        list.contains("SALE — 20% off, 0/5, until 2099-01-02 00:00 UTC, disabled"),
        "{list}"
    );

    // Not an administrator: the command is unknown to them, and nothing is created.
    let refused = say(&mut bot, 2001, "/admin promo create MINE 30d 2099-01-01 1").await;
    assert_eq!(refused, text::unknown(Lang::En));
    assert!(h.ledger.promo_code("MINE").await.unwrap().is_none());

    // Every admin command is in the bot's admin log.
    let logged: Vec<(String, String)> = sqlx::query_as(
        "SELECT command, outcome FROM bot_admin_log WHERE command = 'promo' ORDER BY id",
    )
    .fetch_all(h.ledger.pool())
    .await
    .unwrap();
    assert_eq!(
        logged.iter().map(|(_, o)| o.as_str()).collect::<Vec<_>>(),
        [
            "created WEEK",
            "exists WEEK",
            "refused: the expiry must be in the future",
            "created SALE",
            "listed 2",
            "disabled SALE",
            "listed 2"
        ]
    );
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_redeems_a_code_once_and_refusals_say_why_and_credit_nothing() {
    let h = harness("bot_promo_user", Options::default()).await;
    let mut bot = MockBot::new(message(2002, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    for command in [
        "/admin promo create WEEK 7d 2099-01-01 10",
        "/admin promo create GONE 7d 2099-01-01 10",
        "/admin promo create LATE 7d 2099-01-01 10",
        "/admin promo disable GONE",
    ] {
        say(&mut bot, ADMIN, command).await;
    }
    sqlx::query(
        "UPDATE promo_codes SET expires_at = now() - interval '1 hour' WHERE code = 'LATE'",
    )
    .execute(h.ledger.pool())
    .await
    .unwrap();

    assert_eq!(
        say(&mut bot, 2002, "/promo").await,
        text::promo_usage(Lang::En)
    );
    assert_eq!(
        say(&mut bot, 2002, "/promo 50%-off!").await,
        text::promo_malformed(Lang::En)
    );
    for (code, refusal) in [
        ("NOSUCH", RedeemRefusal::Unknown),
        ("gone", RedeemRefusal::Disabled),
        ("LATE", RedeemRefusal::Expired),
    ] {
        assert_eq!(
            say(&mut bot, 2002, &format!("/promo {code}")).await,
            text::promo_refused(Lang::En, refusal)
        );
    }
    assert_eq!(
        h.ledger
            .user(2002)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until,
        None
    );

    let before = Timestamp::now();
    let accepted = say(&mut bot, 2002, "/promo week").await;
    assert!(
        accepted.starts_with("Promo code accepted: +7 days."),
        "{accepted}"
    );
    let until = h
        .ledger
        .user(2002)
        .await
        .unwrap()
        .unwrap()
        .entitlement
        .paid_until
        .unwrap();
    assert!(until >= before + DAY * 7 && until <= Timestamp::now() + DAY * 7);
    // The subscription follows the ledger.
    let subscription = h.subscription(2002).await.expect("the subscription");
    assert_eq!(subscription.spec.paid_until, Some(until));
    // Twice: refused, counted once.
    assert_eq!(
        say(&mut bot, 2002, "/promo WEEK").await,
        text::promo_refused(Lang::En, RedeemRefusal::AlreadyRedeemed)
    );
    let code = h.ledger.promo_code("WEEK").await.unwrap().unwrap();
    assert_eq!(code.uses, 1);
    assert_eq!(
        h.ledger
            .user(2002)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until,
        Some(until)
    );
    // In Russian too.
    bot.update(message(2002, "ru", "/promo WEEK"));
    bot.dispatch().await;
    assert_eq!(
        last_text(&bot),
        text::promo_refused(Lang::Ru, RedeemRefusal::AlreadyRedeemed)
    );
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_discount_code_prices_the_next_yookassa_payment() {
    let h = harness("bot_promo_discount", Options::default()).await;
    h.accept_payments().await;
    let mut bot = MockBot::new(message(2003, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    say(&mut bot, ADMIN, "/admin promo create SALE 20% 2099-01-01 5").await;
    assert_eq!(
        say(&mut bot, 2003, "/promo sale").await,
        text::promo_discount(Lang::En, 20)
    );
    bot.update(
        MockCallbackQuery::new()
            .data("buy:month")
            .from(common::user(2003, "en")),
    );
    bot.dispatch().await;
    let link = last_text(&bot);
    assert!(link.contains("159.20 RUB"), "{link}");
    let requests = h.payment_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["amount"]["value"], "159.20");
}

#[tokio::test(flavor = "multi_thread")]
async fn invite_shows_the_personal_link_and_the_referrer_is_told_of_the_reward() {
    let h = harness("bot_invite", Options::default()).await;
    h.accept_payments().await;
    let mut bot = MockBot::new(message(2004, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    let empty = say(&mut bot, 2004, "/invite").await;
    assert_eq!(
        empty,
        text::invite(
            Lang::En,
            "https://t.me/test_bot?start=ref_2004",
            ReferralSummary::default()
        )
    );
    // A friend starts the bot through the link; a self-referral is not recorded.
    say(&mut bot, 2005, "/start ref_2004").await;
    say(&mut bot, 2006, "/start ref_2006").await;
    // The friend's first payment is applied (as the API's webhook does).
    let ledger = h.ledger.clone().with_referral_days(5);
    let plans = wgsub_crds::plans::PlanCatalogue::from_yaml_str(common::PLANS).unwrap();
    let created = ledger
        .create_payment(
            &h.app.yookassa,
            PaymentOrder {
                user_id: 2005,
                plan: plans.get("month").unwrap(),
                return_url: "https://t.me/example_bot",
                receipt: None,
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    let record = ledger.payment(created.id).await.unwrap().unwrap();
    let fetched = yookassa::Payment {
        id: record.yookassa_id.clone().unwrap(),
        status: "succeeded".into(),
        amount: Amount {
            value: "199.00".into(),
            currency: "RUB".into(),
        },
        paid: true,
        confirmation: None,
        metadata: [
            (METADATA_PAYMENT_ID.to_owned(), record.id.to_string()),
            (METADATA_USER_ID.to_owned(), "2005".to_owned()),
        ]
        .into(),
        captured_at: Some(Timestamp::now()),
        created_at: None,
    };
    ledger
        .apply_payment(record.id, &fetched, Timestamp::now())
        .await
        .unwrap();
    let summary = say(&mut bot, 2004, "/invite").await;
    assert!(
        summary.contains("Joined through your link: 1. Paid: 1. Bonus days earned: 5."),
        "{summary}"
    );
    // The outbox tells the referrer (and the payer) through the Bot API.
    let telegram = fake_telegram(&[]).await;
    let report = jobs::drain_outbox(&h.app, &bot_for(&telegram), Timestamp::now(), 10)
        .await
        .unwrap();
    assert_eq!(report.sent, 2);
    let sent = sent_texts(&telegram).await;
    let paid_until = h
        .ledger
        .user(2004)
        .await
        .unwrap()
        .unwrap()
        .entitlement
        .paid_until;
    assert!(
        sent.contains(&(2004, text::referral_rewarded(Lang::En, 5, paid_until))),
        "{sent:?}"
    );
    h.assert_nothing_forbidden();
}
