//! What a stranger, a group chat or a misbehaving client can make the bot do (issue 16): keys
//! and admin answers only in private chats, a device button that names no device of the user,
//! device names with hidden formatting, a referral attached after the first `/start`, a sender
//! id the bot cannot store, payments started in a loop, a user who blocked the bot, and a
//! button too old for Telegram to answer — each through `handler_tree()` against a real
//! PostgreSQL ledger and the real Kubernetes API server (the bot's client under the chart's
//! RBAC). The last two talk to a stand-in Bot API (wiremock) that refuses as Telegram does.

mod common;

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ADMIN, Options, harness, message, user};
use kube::api::{Api, PostParams};
use serde_json::json;
use teloxide::dptree;
use teloxide::types::{Me, Update};
use teloxide_tests::{MockBot, MockCallbackQuery, MockGroupChat, MockMessageText};
use wgsub_bot::handlers::{HandlerError, handler_tree};
use wgsub_bot::store;
use wgsub_bot::text::{self, Lang};
use wgsub_crds::WgPeer;
use wgsub_crds::resources::{LABEL_SUBSCRIPTION, subscription_name};

type Bot = MockBot<HandlerError, teloxide_tests::mock_bot::DistributionKey>;

fn texts(bot: &Bot) -> Vec<String> {
    bot.get_responses()
        .sent_messages
        .iter()
        .filter_map(|m| m.text().map(str::to_owned))
        .collect()
}

fn last_text(bot: &Bot) -> String {
    texts(bot).pop().expect("the bot answered")
}

fn in_group(from: u64, text: &str) -> MockMessageText {
    MockMessageText::new()
        .text(text)
        .from(user(from, "en"))
        .chat(MockGroupChat::new().id(-4242).build())
}

fn handler_errors(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("wgsub_bot_handler_errors_total{"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn config_and_admin_in_a_group_point_to_the_private_chat_and_send_nothing_secret() {
    let h = harness(
        "bot_group",
        Options {
            trial_days: 3,
            ..Options::default()
        },
    )
    .await;
    let mut bot = MockBot::new(message(2001, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    h.ready_peer(2001, 1, "phone").await;

    for command in ["/config", "/config@test_bot"] {
        bot.update(in_group(2001, command));
        bot.dispatch().await;
        assert_eq!(
            last_text(&bot),
            text::private_chat_only(Lang::En),
            "{command}"
        );
        let responses = bot.get_responses();
        assert!(responses.sent_messages_document.is_empty(), "{command}");
        assert!(responses.sent_messages_photo.is_empty(), "{command}");
    }

    // An administrator's user lookup and statistics stay out of the group too.
    for command in ["/admin find 2001", "/admin stats"] {
        bot.update(in_group(ADMIN, command));
        bot.dispatch().await;
        assert_eq!(
            last_text(&bot),
            text::private_chat_only(Lang::En),
            "{command}"
        );
    }
    assert!(store::admin_log(&h.ledger).await.unwrap().is_empty());

    // In the private chat the same command hands the config out.
    bot.update(message(2001, "en", "/config"));
    bot.dispatch().await;
    assert_eq!(bot.get_responses().sent_messages_document.len(), 1);
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_button_naming_no_device_of_the_user_answers_no_such_device() {
    let h = harness(
        "bot_cfg_unknown",
        Options {
            trial_days: 3,
            ..Options::default()
        },
    )
    .await;
    let mut bot = MockBot::new(message(2002, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    h.ready_peer(2002, 1, "phone").await;
    // A peer that carries the user's label under a name that is not one of the user's device
    // names: the api does not count it as theirs, so neither does the bot.
    let peers: Api<WgPeer> = Api::namespaced(h.admin.clone(), &h.namespace);
    let mine = peers.get("tg-2002-1").await.unwrap();
    let mut stray = WgPeer::new("stray", mine.spec.clone());
    stray.metadata.labels = Some([(LABEL_SUBSCRIPTION.to_owned(), subscription_name(2002))].into());
    peers.create(&PostParams::default(), &stray).await.unwrap();

    for data in [
        "cfg:",
        "cfg:stray",
        "cfg:tg-2002-9",
        "cfg:tg-2003-1",
        "cfg:../x",
    ] {
        bot.update(MockCallbackQuery::new().data(data).from(user(2002, "en")));
        bot.dispatch().await;
        assert_eq!(last_text(&bot), text::unknown_device(Lang::En), "{data}");
        assert!(
            bot.get_responses().sent_messages_document.is_empty(),
            "{data}"
        );
    }
    // /config lists only the user's own device, so it goes out at once.
    bot.update(message(2002, "en", "/config"));
    bot.dispatch().await;
    let responses = bot.get_responses();
    assert_eq!(responses.sent_messages_document.len(), 1);
    assert_eq!(
        responses.sent_messages_document[0].bot_request.file_name,
        "wgsub-phone.conf"
    );
    let metrics = h.app.metrics.encode();
    assert!(handler_errors(&metrics).is_empty(), "{metrics}");
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn device_names_are_shown_without_bidi_controls_or_zero_width_characters() {
    let h = harness(
        "bot_device_name",
        Options {
            trial_days: 3,
            ..Options::default()
        },
    )
    .await;
    let mut bot = MockBot::new(message(2003, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    h.ready_peer(2003, 1, "\u{202E}pho\u{200B}ne\u{2066}").await;
    bot.update(message(2003, "en", "/status"));
    bot.dispatch().await;
    let status = last_text(&bot);
    assert!(status.contains("phone: never connected"), "{status:?}");
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_referral_counts_only_at_the_users_first_start() {
    let h = harness("bot_referral_late", Options::default()).await;
    let mut bot = MockBot::new(message(2004, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    bot.update(message(2004, "en", "/start ref_555"));
    bot.dispatch().await;
    assert_eq!(store::referral_of(&h.ledger, 2004).await.unwrap(), None);

    bot.update(message(2005, "en", "/start ref_555"));
    bot.dispatch().await;
    assert_eq!(
        store::referral_of(&h.ledger, 2005).await.unwrap(),
        Some(555)
    );
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sender_id_beyond_what_the_bot_stores_is_refused_politely_and_not_recorded() {
    let h = harness("bot_big_id", Options::default()).await;
    // Above i64, and above the 18 digits a subscription name holds.
    let (huge, nineteen_digits) = (u64::MAX, 1_000_000_000_000_000_000_u64);
    let mut bot = MockBot::new(message(huge, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::unsupported_account(Lang::En));

    bot.update(message(nineteen_digits, "ru", "/start ref_555"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::unsupported_account(Lang::Ru));
    let id = i64::try_from(nineteen_digits).unwrap();
    assert!(h.ledger.user(id).await.unwrap().is_none());
    assert!(h.subscription(id).await.is_none());

    bot.update(
        MockCallbackQuery::new()
            .data("buy:month")
            .from(user(huge, "en")),
    );
    bot.dispatch().await;
    let responses = bot.get_responses();
    assert!(responses.sent_messages.is_empty());
    assert_eq!(
        responses.answered_callback_queries[0].text.as_deref(),
        Some(text::unsupported_account(Lang::En))
    );
    let metrics = h.app.metrics.encode();
    assert!(handler_errors(&metrics).is_empty(), "{metrics}");
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn payments_started_in_a_loop_are_refused_in_the_users_language() {
    let h = harness("bot_payment_limit", Options::default()).await;
    // YooKassa makes a payment of its own id for each request.
    let made = Arc::new(AtomicU32::new(0));
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v3/payments"))
        .respond_with(move |request: &wiremock::Request| {
            let id = format!("yk-{}", made.fetch_add(1, Ordering::SeqCst));
            let body: serde_json::Value = request.body_json().unwrap();
            wiremock::ResponseTemplate::new(200).set_body_json(json!({
                "id": id, "status": "pending", "paid": false,
                "amount": body["amount"], "metadata": body["metadata"],
                "confirmation": {"type": "redirect", "confirmation_url": format!("https://yoomoney.example/checkout?orderId={id}")},
            }))
        })
        .mount(&h.yookassa)
        .await;
    let mut bot = MockBot::new(message(2006, "ru", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    let buy = || {
        MockCallbackQuery::new()
            .data("buy:month")
            .from(user(2006, "ru"))
    };
    // The default limit: three open payments.
    for _ in 0..3 {
        bot.update(buy());
        bot.dispatch().await;
        let link = last_text(&bot);
        assert!(link.contains("Месяц"), "{link}");
    }
    bot.update(buy());
    bot.dispatch().await;
    // The oldest open payment lapses in an hour: the user is told to come back then.
    assert_eq!(
        last_text(&bot),
        text::too_many_payments(Lang::Ru, Duration::from_secs(3600))
    );
    assert_eq!(h.payment_requests().await.len(), 3);
    h.assert_nothing_forbidden();
}

/// The bot as `getMe` describes it (what `filter_command` needs).
fn me() -> Me {
    serde_json::from_value(json!({
        "id": 1, "is_bot": true, "first_name": "wgsub", "username": "test_bot",
        "can_join_groups": false, "can_read_all_group_messages": false,
        "supports_inline_queries": false, "has_main_web_app": false
    }))
    .unwrap()
}

/// A button pressed long ago (say, before a restart): Telegram refuses to answer the query,
/// and the button still does what it says.
#[tokio::test(flavor = "multi_thread")]
async fn a_button_too_old_to_answer_still_gets_its_reply() {
    let h = harness("bot_stale_button", Options::default()).await;
    let telegram = common::fake_telegram(&[]).await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path_regex("(?i)/answercallbackquery$"))
        .respond_with(wiremock::ResponseTemplate::new(400).set_body_json(json!({
            "ok": false, "error_code": 400,
            "description": "Bad Request: query is too old and response timeout expired or query ID is invalid"
        })))
        .with_priority(1)
        .mount(&telegram)
        .await;
    let update: Update = serde_json::from_str(
        &json!({
            "update_id": 2,
            "callback_query": {
                "id": "4382bfdwdsb323b2d9", "chat_instance": "-1",
                "from": {"id": 2008, "is_bot": false, "first_name": "Anna", "language_code": "en"},
                "data": "cfg:"
            }
        })
        .to_string(),
    )
    .unwrap();
    let outcome = handler_tree()
        .dispatch(dptree::deps![
            common::bot_for(&telegram),
            h.app.clone(),
            update,
            me()
        ])
        .await;
    assert!(
        matches!(outcome, ControlFlow::Break(Ok(()))),
        "the update is handled, not failed: {outcome:?}"
    );
    assert_eq!(
        common::sent_texts(&telegram).await,
        [(2008, text::unknown_device(Lang::En).to_owned())]
    );
}

/// A `MakeWriter` that keeps what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs on the test's thread (current-thread runtime) so the captured logs are all the
/// handler's.
#[tokio::test]
async fn a_user_who_blocked_the_bot_is_counted_apart_and_logged_once_not_as_an_error() {
    let h = harness("bot_blocked", Options::default()).await;
    let blocked = 2007_i64;
    let telegram = common::fake_telegram(&[blocked]).await;
    let me = me();
    // Parsed from text, as teloxide reads updates (its `Update` does not read a `Value`).
    let update: Update = serde_json::from_str(
        &json!({
        "update_id": 1,
        "message": {
            "message_id": 1, "date": 1_700_000_000,
            "chat": {"id": blocked, "type": "private", "first_name": "Anna"},
            "from": {"id": blocked, "is_bot": false, "first_name": "Anna", "language_code": "en"},
            "text": "/status",
            "entities": [{"type": "bot_command", "offset": 0, "length": 7}]
        }
        })
        .to_string(),
    )
    .unwrap();
    assert!(
        matches!(update.kind, teloxide::types::UpdateKind::Message(_)),
        "{update:?}"
    );
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let outcome = {
        let _guard = tracing::subscriber::set_default(subscriber);
        handler_tree()
            .dispatch(dptree::deps![
                common::bot_for(&telegram),
                h.app.clone(),
                update,
                me
            ])
            .await
    };
    assert!(
        matches!(outcome, ControlFlow::Break(Ok(()))),
        "the update is handled, not failed: {outcome:?}"
    );
    // One answer tried (not a second "try again" after it), one log line, no error.
    assert_eq!(common::sent_texts(&telegram).await.len(), 1);
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains("INFO") && lines[0].contains("cannot be reached"),
        "{logs}"
    );
    let metrics = h.app.metrics.encode();
    assert!(handler_errors(&metrics).is_empty(), "{metrics}");
    assert!(
        metrics.contains(r#"wgsub_bot_unreachable_users_total{handler="status"} 1"#),
        "{metrics}"
    );
}
