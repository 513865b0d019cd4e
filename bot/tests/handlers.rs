//! Every command through `handler_tree()` with `teloxide_tests`, against a real PostgreSQL
//! ledger, the real Kubernetes API server (the bot's client authenticated as its ServiceAccount
//! under the chart's RBAC; no call refused) and a fake YooKassa: sign-up with the trial once,
//! buying (payment link from the same payment code the API uses, receipt e-mail asked once),
//! status, configs, the admin gate and each admin command, and bad input.

mod common;

use common::{ADMIN, Options, harness, message};
use jiff::{SignedDuration, Timestamp};
use teloxide::dptree;
use teloxide::types::{InlineKeyboardButtonKind, ReplyMarkup};
use teloxide_tests::{MockBot, MockCallbackQuery};
use wgsub_bot::handlers::handler_tree;
use wgsub_bot::store;
use wgsub_bot::text::{self, Lang};

fn texts(
    bot: &MockBot<wgsub_bot::handlers::HandlerError, teloxide_tests::mock_bot::DistributionKey>,
) -> Vec<String> {
    bot.get_responses()
        .sent_messages
        .iter()
        .filter_map(|m| m.text().map(str::to_owned))
        .collect()
}

fn last_text(
    bot: &MockBot<wgsub_bot::handlers::HandlerError, teloxide_tests::mock_bot::DistributionKey>,
) -> String {
    texts(bot).pop().expect("the bot answered")
}

#[tokio::test(flavor = "multi_thread")]
async fn start_registers_grants_the_trial_once_creates_the_subscription_and_records_the_referral() {
    let h = harness(
        "bot_start",
        Options {
            trial_days: 3,
            ..Options::default()
        },
    )
    .await;
    let mut bot = MockBot::new(message(1001, "en", "/start ref_555"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;

    let responses = bot.get_responses();
    let greeting = responses.sent_messages_text.last().expect("a greeting");
    let text = greeting.message.text().unwrap();
    assert!(
        text.starts_with("Hello, Anna!") && text.contains("free trial is on: 3 days"),
        "{text}"
    );
    match &greeting.bot_request.reply_markup {
        Some(ReplyMarkup::InlineKeyboard(keyboard)) => match &keyboard.inline_keyboard[0][0].kind {
            InlineKeyboardButtonKind::WebApp(info) => {
                assert_eq!(info.url.as_str(), "https://vpn.example.com/miniapp/")
            }
            other => panic!("expected a WebApp button, got {other:?}"),
        },
        other => panic!("expected an inline keyboard, got {other:?}"),
    }

    let user = h.ledger.user(1001).await.unwrap().expect("registered");
    let until = user.entitlement.paid_until.expect("trial granted");
    let expected = Timestamp::now() + SignedDuration::from_hours(72);
    assert!(
        expected.duration_since(until).abs() < SignedDuration::from_mins(1),
        "{until}"
    );
    let subscription = h.subscription(1001).await.expect("VpnSubscription created");
    assert_eq!(subscription.spec.telegram_user_id, 1001);
    assert_eq!(subscription.spec.paid_until, Some(until));
    assert_eq!(
        store::referral_of(&h.ledger, 1001).await.unwrap(),
        Some(555)
    );

    // A second /start greets without a new trial and keeps the first referral.
    bot.update(message(1001, "en", "/start ref_777"));
    bot.dispatch().await;
    assert!(!last_text(&bot).contains("trial"));
    let again = h.ledger.user(1001).await.unwrap().unwrap();
    assert_eq!(again.entitlement.paid_until, Some(until));
    assert_eq!(
        store::referral_of(&h.ledger, 1001).await.unwrap(),
        Some(555)
    );
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn start_in_russian_without_a_trial_when_trial_days_is_zero() {
    let h = harness("bot_start_ru", Options::default()).await;
    let mut bot = MockBot::new(message(1002, "ru", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    let text = last_text(&bot);
    assert!(
        text.starts_with("Здравствуйте, Anna!") && !text.contains("пробный"),
        "{text}"
    );
    assert_eq!(
        h.ledger
            .user(1002)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until,
        None
    );
    assert!(h.subscription(1002).await.is_some());
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn help_app_and_anything_unknown_get_an_answer() {
    let h = harness("bot_help", Options::default()).await;
    let mut bot = MockBot::new(message(1003, "en", "/help"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::help(Lang::En));

    bot.update(message(1003, "en", "/app"));
    bot.dispatch().await;
    let responses = bot.get_responses();
    let app = responses.sent_messages_text.last().unwrap();
    assert_eq!(app.message.text(), Some(text::app(Lang::En)));
    assert!(matches!(
        app.bot_request.reply_markup,
        Some(ReplyMarkup::InlineKeyboard(_))
    ));

    for unknown in ["/frobnicate", "hello there", "12345"] {
        bot.update(message(1003, "ru", unknown));
        bot.dispatch().await;
        assert_eq!(last_text(&bot), text::unknown(Lang::Ru), "{unknown}");
    }
    let metrics = h.app.metrics.encode();
    assert!(
        metrics.contains(r#"wgsub_bot_updates_handled_total{kind="unknown"} 3"#),
        "{metrics}"
    );
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_phase_paid_until_and_devices() {
    let h = harness(
        "bot_status",
        Options {
            trial_days: 5,
            ..Options::default()
        },
    )
    .await;
    let mut bot = MockBot::new(message(1004, "en", "/status"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::not_registered(Lang::En));

    bot.update(message(1004, "en", "/start"));
    bot.dispatch().await;
    h.ready_peer(1004, 1, "phone").await;
    bot.update(message(1004, "en", "/status"));
    bot.dispatch().await;
    let status = last_text(&bot);
    assert!(status.contains("Subscription: active"), "{status}");
    assert!(
        status.contains("Paid until:") && status.contains("Devices: 1 / 1"),
        "{status}"
    );
    assert!(status.contains("phone: never connected"), "{status}");
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn buy_offers_the_plans_and_a_plan_button_gives_a_yookassa_payment_link() {
    let h = harness("bot_buy", Options::default()).await;
    h.accept_payments().await;
    let mut bot = MockBot::new(message(1005, "en", "/buy"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    let responses = bot.get_responses();
    let offer = responses.sent_messages_text.last().unwrap();
    assert_eq!(offer.message.text(), Some(text::choose_plan(Lang::En)));
    let Some(ReplyMarkup::InlineKeyboard(keyboard)) = &offer.bot_request.reply_markup else {
        panic!("plans keyboard expected");
    };
    let labels: Vec<_> = keyboard
        .inline_keyboard
        .iter()
        .map(|row| row[0].text.clone())
        .collect();
    assert_eq!(
        labels,
        [
            "Month — 199.00 RUB (1 device)",
            "Quarter — 549.00 RUB (3 devices)"
        ]
    );

    bot.update(
        MockCallbackQuery::new()
            .data("buy:quarter")
            .from(common::user(1005, "en")),
    );
    bot.dispatch().await;
    let responses = bot.get_responses();
    assert_eq!(responses.answered_callback_queries.len(), 1);
    let link = responses.sent_messages_text.last().expect("a payment link");
    assert!(
        link.message.text().unwrap().contains("Quarter")
            && link.message.text().unwrap().contains("549.00 RUB")
    );
    let Some(ReplyMarkup::InlineKeyboard(keyboard)) = &link.bot_request.reply_markup else {
        panic!("pay button expected");
    };
    match &keyboard.inline_keyboard[0][0].kind {
        InlineKeyboardButtonKind::Url(url) => {
            assert_eq!(
                url.as_str(),
                "https://yoomoney.example/checkout?orderId=yk-1"
            )
        }
        other => panic!("expected a URL button, got {other:?}"),
    }
    let requests = h.payment_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["amount"]["value"], "549.00");
    assert!(requests[0].get("receipt").is_none());

    // A plan that no longer exists.
    bot.update(
        MockCallbackQuery::new()
            .data("buy:lifetime")
            .from(common::user(1005, "en")),
    );
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::unknown_plan(Lang::En));
    assert_eq!(h.payment_requests().await.len(), 1);
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn yookassa_failing_gives_a_clear_answer_not_silence() {
    let h = harness("bot_buy_down", Options::default()).await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(500))
        .mount(&h.yookassa)
        .await;
    let mut bot = MockBot::new(
        MockCallbackQuery::new()
            .data("buy:month")
            .from(common::user(1006, "ru")),
        handler_tree(),
    );
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::payment_unavailable(Lang::Ru));
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_receipts_on_the_bot_asks_for_an_email_once_then_sells_with_a_receipt() {
    let h = harness(
        "bot_receipts",
        Options {
            receipts: true,
            ..Options::default()
        },
    )
    .await;
    h.accept_payments().await;
    let mut bot = MockBot::new(message(1007, "en", "/buy"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::ask_receipt_contact(Lang::En));

    bot.update(message(1007, "en", "not an address@"));
    bot.dispatch().await;
    assert!(last_text(&bot).starts_with("That does not look like an e-mail"));

    bot.update(message(1007, "en", "anna@example.com"));
    bot.dispatch().await;
    let answers = texts(&bot);
    assert_eq!(
        answers,
        [
            text::receipt_contact_saved(Lang::En),
            text::choose_plan(Lang::En)
        ]
    );
    assert_eq!(
        h.ledger.user(1007).await.unwrap().unwrap().email.as_deref(),
        Some("anna@example.com")
    );

    // Asked once: /buy now goes straight to the plans, and the payment carries the receipt.
    bot.update(message(1007, "en", "/buy"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::choose_plan(Lang::En));
    bot.update(
        MockCallbackQuery::new()
            .data("buy:month")
            .from(common::user(1007, "en")),
    );
    bot.dispatch().await;
    let requests = h.payment_requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0]["receipt"]["customer"]["email"],
        "anna@example.com"
    );
    // Ordinary text is no longer taken for an address.
    bot.update(message(1007, "en", "thanks"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::unknown(Lang::En));
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn config_sends_the_conf_and_its_qr_and_asks_which_device_when_there_are_several() {
    let h = harness(
        "bot_config",
        Options {
            trial_days: 3,
            ..Options::default()
        },
    )
    .await;
    let mut bot = MockBot::new(message(1008, "en", "/config"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::not_registered(Lang::En));

    bot.update(message(1008, "en", "/start"));
    bot.dispatch().await;
    bot.update(message(1008, "en", "/config"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::no_devices_yet(Lang::En));

    h.ready_peer(1008, 1, "phone").await;
    bot.update(message(1008, "en", "/config"));
    bot.dispatch().await;
    let responses = bot.get_responses();
    assert_eq!(responses.sent_messages_document.len(), 1);
    let document = &responses.sent_messages_document[0].bot_request;
    assert_eq!(document.file_name, "wgsub-phone.conf");
    assert!(
        document.file_data.contains("[Interface]")
            && document.file_data.contains("Address = 10.8.0.2/32")
    );
    assert!(
        document
            .file_data
            .contains("Endpoint = vpn.example.com:51820")
    );
    assert_eq!(responses.sent_messages_photo.len(), 1);

    h.ready_peer(1008, 2, "laptop").await;
    bot.update(message(1008, "en", "/config"));
    bot.dispatch().await;
    let responses = bot.get_responses();
    let choice = responses.sent_messages_text.last().unwrap();
    assert_eq!(choice.message.text(), Some(text::choose_device(Lang::En)));
    let Some(ReplyMarkup::InlineKeyboard(keyboard)) = &choice.bot_request.reply_markup else {
        panic!("device keyboard expected");
    };
    assert_eq!(keyboard.inline_keyboard.len(), 2);

    bot.update(
        MockCallbackQuery::new()
            .data("cfg:tg-1008-2")
            .from(common::user(1008, "en")),
    );
    bot.dispatch().await;
    let responses = bot.get_responses();
    assert_eq!(
        responses.sent_messages_document[0].bot_request.file_name,
        "wgsub-laptop.conf"
    );

    // Someone else's device is not handed out.
    bot.update(message(1009, "en", "/start"));
    bot.dispatch().await;
    bot.update(
        MockCallbackQuery::new()
            .data("cfg:tg-1008-2")
            .from(common::user(1009, "en")),
    );
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::unknown_device(Lang::En));
    assert!(bot.get_responses().sent_messages_document.is_empty());
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn config_without_an_active_subscription_says_so() {
    let h = harness("bot_config_inactive", Options::default()).await;
    let mut bot = MockBot::new(message(1010, "ru", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    h.ready_peer(1010, 1, "phone").await;
    bot.update(message(1010, "ru", "/config"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::subscription_inactive(Lang::Ru));
    assert!(bot.get_responses().sent_messages_document.is_empty());
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_is_only_for_admins_everyone_else_gets_the_unknown_command_answer() {
    let h = harness("bot_admin_gate", Options::default()).await;
    let mut bot = MockBot::new(message(1011, "en", "/admin stats"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::unknown(Lang::En));
    bot.update(message(1011, "en", "/admin grant 1011 30 myself"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::unknown(Lang::En));
    assert!(h.ledger.user(1011).await.unwrap().is_none());
    assert!(store::admin_log(&h.ledger).await.unwrap().is_empty());

    bot.update(message(ADMIN, "en", "/admin"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::admin_help(Lang::En));
    bot.update(message(ADMIN, "en", "/admin stats"));
    bot.dispatch().await;
    let stats = last_text(&bot);
    assert!(
        stats.starts_with("Users: 0\nActive subscriptions: 0")
            && stats.contains("Revenue today: 0"),
        "{stats}"
    );
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_grant_suspend_find_write_through_the_ledger_and_are_audited() {
    let h = harness("bot_admin", Options::default()).await;
    let mut bot = MockBot::new(message(1012, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;

    // Malformed arguments: a usage line naming the problem, nothing written.
    bot.update(message(ADMIN, "en", "/admin grant 1012 lots"));
    bot.dispatch().await;
    let usage = last_text(&bot);
    assert!(
        usage.contains("days: “lots” is not a whole number")
            && usage.contains("Usage: /admin grant"),
        "{usage}"
    );
    // An unknown user: said so, nothing written.
    bot.update(message(ADMIN, "en", "/admin grant 4040 30 gift"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), "User 4040 not found. Nothing was changed.");
    assert!(h.ledger.user(4040).await.unwrap().is_none());
    assert!(h.ledger.admin_actions(1012).await.unwrap().is_empty());

    bot.update(message(
        ADMIN,
        "en",
        "/admin grant @user_1012 30 outage apology",
    ));
    bot.dispatch().await;
    let granted = last_text(&bot);
    assert!(
        granted.starts_with("Granted 30 days to user 1012. Paid until"),
        "{granted}"
    );
    let user = h.ledger.user(1012).await.unwrap().unwrap();
    let until = user.entitlement.paid_until.expect("paid after the grant");
    assert_eq!(
        h.subscription(1012).await.unwrap().spec.paid_until,
        Some(until)
    );
    let actions = h.ledger.admin_actions(1012).await.unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (
            actions[0].admin_id,
            actions[0].action.as_str(),
            actions[0].reason.as_str()
        ),
        (ADMIN as i64, "grant", "outage apology")
    );

    bot.update(message(ADMIN, "en", "/admin suspend 1012 abuse"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), "User 1012 is suspended.");
    assert!(h.subscription(1012).await.unwrap().spec.suspended);
    bot.update(message(ADMIN, "en", "/admin suspend 1012"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), "User 1012 was already suspended.");
    bot.update(message(ADMIN, "en", "/admin unsuspend 1012"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), "User 1012 is no longer suspended.");
    assert!(!h.subscription(1012).await.unwrap().spec.suspended);

    bot.update(message(ADMIN, "en", "/admin find @user_1012"));
    bot.dispatch().await;
    let found = last_text(&bot);
    assert!(
        found.starts_with("id 1012 @user_1012 (Anna)") && found.contains("Suspended: no"),
        "{found}"
    );

    let log = store::admin_log(&h.ledger).await.unwrap();
    let commands: Vec<_> = log
        .iter()
        .map(|e| (e.command.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        commands,
        [
            ("grant", "unknown user"),
            ("grant", "granted 30 days to 1012"),
            ("suspend", "changed: 1012"),
            ("suspend", "unchanged: 1012"),
            ("unsuspend", "changed: 1012"),
            ("find", "found 1012"),
        ]
    );
    assert!(log.iter().all(|e| e.admin_id == ADMIN as i64));
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn broadcast_refuses_empty_text_and_reports_delivered_and_failed() {
    let h = harness(
        "bot_broadcast",
        Options {
            trial_days: 2,
            ..Options::default()
        },
    )
    .await;
    let mut bot = MockBot::new(
        message(ADMIN, "en", "/admin broadcast all   "),
        handler_tree(),
    );
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    let refused = last_text(&bot);
    assert!(
        refused.contains("the broadcast text is empty")
            && refused.contains("/admin broadcast <all | active> <text>"),
        "{refused}"
    );
    assert!(store::broadcasts(&h.ledger).await.unwrap().is_empty());

    bot.update(message(ADMIN, "en", "/admin broadcast active hello"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::broadcast_no_recipients(Lang::En));

    for user in [2001, 2002, 2003] {
        bot.update(message(user, "en", "/start"));
        bot.dispatch().await;
    }
    bot.update(message(
        ADMIN,
        "en",
        "/admin broadcast all Maintenance tonight",
    ));
    bot.dispatch().await;
    let responses = bot.get_responses();
    let delivered: Vec<i64> = responses
        .sent_messages
        .iter()
        .filter(|m| m.text() == Some("Maintenance tonight"))
        .map(|m| m.chat.id.0)
        .collect();
    assert_eq!(delivered, [2001, 2002, 2003]);
    assert_eq!(
        last_text(&bot),
        "Broadcast finished: 3 delivered, 0 failed."
    );
    assert_eq!(
        responses.edited_messages_text.len(),
        1,
        "progress every 2 chats"
    );
    let recorded = store::broadcasts(&h.ledger).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (
            recorded[0].recipients,
            recorded[0].delivered,
            recorded[0].failed,
            recorded[0].finished
        ),
        (3, 3, 0, true)
    );
    let log = store::admin_log(&h.ledger).await.unwrap();
    assert_eq!(log.last().unwrap().outcome, "all: 3 delivered, 0 failed");
    h.assert_nothing_forbidden();
}
