//! Tests of traffic accounting on hand-built usages and peers: the fold (counter restarts,
//! removed devices, several devices, periods rolled across gaps, purchases, the quota reached to
//! the byte, no quota), the write decision and the exhaustion that labels the peers.

use wgsub_crds::{VpnSubscriptionSpec, WgPeerStatus};

use super::*;

const DAY: SignedDuration = SignedDuration::from_hours(24);
const MINUTE: SignedDuration = SignedDuration::from_secs(60);
/// A write interval of a minute, for a subscription folded before in this term.
const SETTLED: (SignedDuration, bool) = (MINUTE, true);

fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn start() -> Timestamp {
    t("2026-06-01T00:00:00Z")
}

fn paid() -> Option<Timestamp> {
    Some(t("2026-07-01T00:00:00Z"))
}

fn quota(bytes: i64, days: i32) -> Option<TrafficQuota> {
    Some(TrafficQuota {
        bytes,
        period_days: days,
    })
}

/// A peer of server `wg` without a status.
fn bare(name: &str) -> WgPeer {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "wgsub.io/v1alpha1",
        "kind": "WgPeer",
        "metadata": {"name": name},
        "spec": {"server": "wg"},
    }))
    .unwrap()
}

fn c(peer: &str, rx: i64, tx: i64) -> Counters {
    Counters {
        peer: peer.into(),
        bytes: Some((rx, tx)),
    }
}

/// A peer read without its status.
fn unread(peer: &str) -> Counters {
    Counters {
        peer: peer.into(),
        bytes: None,
    }
}

/// Folds `counters` at `at` onto `base`, under a 30-day quota of `bytes` (none when `None`).
fn step(
    base: Option<&TrafficUsage>,
    bytes: Option<i64>,
    counters: &[Counters],
    at: Timestamp,
) -> TrafficUsage {
    fold(base, bytes.and_then(|b| quota(b, 30)), paid(), counters, at)
        .expect("a usage")
        .usage
}

fn period(usage: &TrafficUsage) -> (i64, i64) {
    (usage.period_rx_bytes, usage.period_tx_bytes)
}

fn total(usage: &TrafficUsage) -> (i64, i64) {
    (usage.total_rx_bytes, usage.total_tx_bytes)
}

#[test]
fn a_growing_counter_adds_its_difference_and_a_restarted_one_all_it_holds() {
    assert_eq!(counter_delta(100, 150), 50);
    assert_eq!(counter_delta(100, 100), 0);
    assert_eq!(counter_delta(100, 30), 30);
    assert_eq!(counter_delta(100, 0), 0);
    assert_eq!(counter_delta(0, 7), 7);
}

#[test]
fn the_first_fold_counts_what_the_counters_hold_and_starts_the_period() {
    let usage = step(None, None, &[c("tg-1-1", 100, 200)], start());
    assert_eq!(usage.period_start, start());
    assert_eq!(usage.period_end, None);
    assert_eq!(usage.paid_until_at_start, paid());
    assert_eq!(period(&usage), (100, 200));
    assert_eq!(total(&usage), (100, 200));
    assert_eq!(usage.period_bytes(), 300);
    let device = usage.device("tg-1-1").unwrap();
    assert_eq!((device.last_rx_bytes, device.last_tx_bytes), (100, 200));
    assert_eq!((device.total_rx_bytes, device.total_tx_bytes), (100, 200));
}

#[test]
fn nothing_to_account_gives_no_usage() {
    assert_eq!(fold(None, None, paid(), &[], start()), None);
    let with_quota = fold(None, quota(10, 30), paid(), &[], start()).unwrap();
    assert_eq!(with_quota.usage.period_end, Some(start() + DAY * 30));
    assert_eq!(with_quota.usage.period_bytes(), 0);
}

#[test]
fn a_counter_restart_adds_the_new_value_instead_of_going_negative() {
    let first = step(None, None, &[c("tg-1-1", 1000, 2000)], start());
    let second = step(
        Some(&first),
        None,
        &[c("tg-1-1", 1500, 2500)],
        start() + MINUTE,
    );
    assert_eq!(total(&second), (1500, 2500));
    // The agent restarted: the counters begin again at zero and have moved to 40/60 since.
    let restarted = step(
        Some(&second),
        None,
        &[c("tg-1-1", 40, 60)],
        start() + MINUTE * 2,
    );
    assert_eq!(total(&restarted), (1540, 2560));
    assert_eq!(period(&restarted), (1540, 2560));
    let device = restarted.device("tg-1-1").unwrap();
    assert_eq!((device.last_rx_bytes, device.last_tx_bytes), (40, 60));
    // Unchanged counters add nothing.
    let again = step(
        Some(&restarted),
        None,
        &[c("tg-1-1", 40, 60)],
        start() + MINUTE * 3,
    );
    assert_eq!(total(&again), total(&restarted));
}

#[test]
fn the_directions_are_counted_apart_and_a_restart_of_one_does_not_touch_the_other() {
    let first = step(None, None, &[c("a", 1000, 10)], start());
    let next = step(Some(&first), None, &[c("a", 5, 20)], start() + MINUTE);
    assert_eq!(total(&next), (1005, 20));
}

#[test]
fn several_devices_add_up_and_each_keeps_its_own_counts() {
    let first = step(
        None,
        None,
        &[c("tg-1-1", 10, 20), c("tg-1-2", 1, 2)],
        start(),
    );
    let next = step(
        Some(&first),
        None,
        &[c("tg-1-2", 5, 5), c("tg-1-1", 15, 40)],
        start() + MINUTE,
    );
    assert_eq!(total(&next), (20, 45));
    let names: Vec<&str> = next.devices.iter().map(|d| d.peer.as_str()).collect();
    assert_eq!(names, ["tg-1-1", "tg-1-2"]);
    let one = next.device("tg-1-1").unwrap();
    assert_eq!((one.total_rx_bytes, one.total_tx_bytes), (15, 40));
    let two = next.device("tg-1-2").unwrap();
    assert_eq!((two.period_rx_bytes, two.period_tx_bytes), (5, 5));
}

#[test]
fn a_deleted_device_leaves_the_list_but_keeps_its_bytes_in_the_totals() {
    let first = step(
        None,
        Some(10_000),
        &[c("a", 100, 100), c("b", 300, 300)],
        start(),
    );
    let gone = step(
        Some(&first),
        Some(10_000),
        &[c("a", 150, 100)],
        start() + MINUTE,
    );
    assert_eq!(gone.devices.len(), 1);
    assert!(gone.device("b").is_none());
    assert_eq!(total(&gone), (450, 400));
    assert_eq!(period(&gone), (450, 400));
    // A device of the same name that comes back starts from nothing.
    let back = step(
        Some(&gone),
        Some(10_000),
        &[c("a", 150, 100), c("b", 7, 3)],
        start() + MINUTE * 2,
    );
    assert_eq!(total(&back), (457, 403));
    assert_eq!(back.device("b").unwrap().total_rx_bytes, 7);
}

#[test]
fn a_peer_read_without_its_status_keeps_its_counts_and_is_not_counted_again() {
    let first = step(None, None, &[c("a", 100, 50), c("b", 10, 10)], start());
    let unread_a = step(
        Some(&first),
        None,
        &[unread("a"), c("b", 20, 10)],
        start() + MINUTE,
    );
    assert_eq!(unread_a.devices, {
        let mut devices = first.devices.clone();
        devices[1] = unread_a.device("b").unwrap().clone();
        devices
    });
    assert_eq!(total(&unread_a), (120, 60));
    let read_again = step(
        Some(&unread_a),
        None,
        &[c("a", 100, 50), c("b", 20, 10)],
        start() + MINUTE * 2,
    );
    assert_eq!(total(&read_again), (120, 60));
    // A new peer without a status has no entry yet; with nothing else, there is no usage.
    let fresh = step(Some(&first), None, &[unread("c")], start() + MINUTE);
    assert!(fresh.device("c").is_none());
    assert_eq!(fold(None, None, paid(), &[unread("c")], start()), None);
}

#[test]
fn a_peer_without_a_status_is_not_counted() {
    let mut reported = bare("tg-1-1");
    reported.status = Some(WgPeerStatus {
        rx_bytes: 5,
        tx_bytes: 6,
        ..WgPeerStatus::default()
    });
    let silent = bare("tg-1-2");
    assert_eq!(
        observed_counters(&[reported, silent]),
        vec![c("tg-1-1", 5, 6), unread("tg-1-2")]
    );
}

#[test]
fn a_period_ends_after_period_days_and_the_next_starts_at_its_end() {
    let first = step(None, Some(1000), &[c("a", 100, 100)], start());
    assert_eq!(first.period_end, Some(start() + DAY * 30));
    let late = step(
        Some(&first),
        Some(1000),
        &[c("a", 150, 100)],
        start() + DAY * 30,
    );
    assert_eq!(late.period_start, start() + DAY * 30);
    assert_eq!(late.period_end, Some(start() + DAY * 60));
    assert_eq!(period(&late), (0, 0));
    assert_eq!(late.device("a").unwrap().period_rx_bytes, 0);
    assert_eq!(total(&late), (150, 100));
    // Traffic after the roll counts in the new period.
    let after = step(
        Some(&late),
        Some(1000),
        &[c("a", 160, 100)],
        start() + DAY * 31,
    );
    assert_eq!(period(&after), (10, 0));
}

#[test]
fn periods_missed_while_the_operator_was_away_are_skipped_whole() {
    let first = step(None, Some(1000), &[c("a", 1, 1)], start());
    let much_later = start() + DAY * 95 + MINUTE;
    let usage = step(Some(&first), Some(1000), &[c("a", 1, 1)], much_later);
    assert_eq!(usage.period_start, start() + DAY * 90);
    assert_eq!(usage.period_end, Some(start() + DAY * 120));
    assert_eq!(period(&usage), (0, 0));
    assert_eq!(total(&usage), (1, 1));
    // Just before the end, nothing rolls.
    let before = step(
        Some(&first),
        Some(1000),
        &[c("a", 1, 1)],
        start() + DAY * 30 - SignedDuration::from_nanos(1),
    );
    assert_eq!(before.period_start, start());
}

#[test]
fn a_purchase_starts_a_new_period_at_once() {
    let first = step(None, Some(1000), &[c("a", 600, 500)], start());
    assert!(is_exhausted(quota(1000, 30), Some(&first)));
    let bought_at = start() + DAY * 3;
    let later = Some(t("2026-08-01T00:00:00Z"));
    let topped = fold(
        Some(&first),
        quota(1000, 30),
        later,
        &[c("a", 610, 500)],
        bought_at,
    )
    .unwrap()
    .usage;
    assert_eq!(topped.period_start, bought_at);
    assert_eq!(topped.period_end, Some(bought_at + DAY * 30));
    assert_eq!(topped.paid_until_at_start, later);
    assert_eq!(period(&topped), (0, 0));
    assert_eq!(total(&topped), (610, 500));
    assert!(!is_exhausted(quota(1000, 30), Some(&topped)));
    // The same paidUntil again is no purchase.
    let same = fold(
        Some(&topped),
        quota(1000, 30),
        later,
        &[c("a", 620, 500)],
        bought_at + MINUTE,
    )
    .unwrap()
    .usage;
    assert_eq!(same.period_start, bought_at);
    assert_eq!(period(&same), (10, 0));
}

#[test]
fn the_first_payment_of_a_subscription_counted_before_it_is_a_purchase() {
    let unpaid = fold(None, quota(1000, 30), None, &[c("a", 10, 10)], start())
        .unwrap()
        .usage;
    let paid_at = start() + DAY;
    let bought = fold(
        Some(&unpaid),
        quota(1000, 30),
        paid(),
        &[c("a", 10, 10)],
        paid_at,
    )
    .unwrap()
    .usage;
    assert_eq!(bought.period_start, paid_at);
    assert_eq!(bought.paid_until_at_start, paid());
}

#[test]
fn a_refund_lowers_the_reference_so_the_next_purchase_still_counts() {
    let first = step(None, Some(1000), &[], start());
    let refunded_to = Some(t("2026-06-15T00:00:00Z"));
    let refunded = fold(
        Some(&first),
        quota(1000, 30),
        refunded_to,
        &[],
        start() + DAY,
    )
    .unwrap()
    .usage;
    assert_eq!(refunded.period_start, start());
    assert_eq!(refunded.paid_until_at_start, refunded_to);
    let bought = fold(
        Some(&refunded),
        quota(1000, 30),
        paid(),
        &[],
        start() + DAY * 2,
    )
    .unwrap()
    .usage;
    assert_eq!(bought.period_start, start() + DAY * 2);
}

#[test]
fn a_quota_that_appears_starts_a_period_and_one_that_goes_keeps_counting_without_an_end() {
    let free = step(None, None, &[c("a", 100, 100)], start());
    assert_eq!(free.period_end, None);
    let limited_at = start() + DAY * 2;
    let limited = step(Some(&free), Some(1000), &[c("a", 110, 100)], limited_at);
    assert_eq!(limited.period_start, limited_at);
    assert_eq!(limited.period_end, Some(limited_at + DAY * 30));
    assert_eq!(period(&limited), (0, 0));
    assert_eq!(total(&limited), (110, 100));
    let freed = step(Some(&limited), None, &[c("a", 130, 100)], limited_at + DAY);
    assert_eq!(freed.period_start, limited_at);
    assert_eq!(freed.period_end, None);
    assert_eq!(period(&freed), (20, 0));
    assert_eq!(total(&freed), (130, 100));
}

#[test]
fn a_shorter_period_moves_the_end_of_the_running_one() {
    let first = step(None, Some(1000), &[], start());
    let shorter = fold(Some(&first), quota(1000, 7), paid(), &[], start() + DAY)
        .unwrap()
        .usage;
    assert_eq!(shorter.period_end, Some(start() + DAY * 7));
    let rolled = fold(
        Some(&shorter),
        quota(1000, 7),
        paid(),
        &[],
        start() + DAY * 8,
    )
    .unwrap()
    .usage;
    assert_eq!(rolled.period_start, start() + DAY * 7);
}

#[test]
fn the_quota_is_exhausted_from_the_byte_it_is_reached() {
    let q = quota(1000, 30);
    let below = step(None, Some(1000), &[c("a", 600, 399)], start());
    assert_eq!(below.period_bytes(), 999);
    assert!(!is_exhausted(q, Some(&below)));
    let at = step(
        Some(&below),
        Some(1000),
        &[c("a", 601, 399)],
        start() + MINUTE,
    );
    assert_eq!(at.period_bytes(), 1000);
    assert!(is_exhausted(q, Some(&at)));
    let over = step(
        Some(&at),
        Some(1000),
        &[c("a", 601, 500)],
        start() + MINUTE * 2,
    );
    assert!(is_exhausted(q, Some(&over)));
    assert!(!is_exhausted(None, Some(&over)));
    assert!(!is_exhausted(q, None));
}

#[test]
fn the_fold_reports_the_bytes_it_accounted() {
    let first = fold(None, None, paid(), &[c("a", 10, 20)], start()).unwrap();
    assert_eq!((first.rx_bytes, first.tx_bytes), (10, 20));
    let next = fold(Some(&first.usage), None, paid(), &[c("a", 15, 20)], start()).unwrap();
    assert_eq!((next.rx_bytes, next.tx_bytes), (5, 0));
}

#[test]
fn huge_counters_saturate_instead_of_overflowing() {
    let first = step(None, None, &[c("a", i64::MAX, i64::MAX)], start());
    let next = step(Some(&first), None, &[c("a", 5, 5)], start() + MINUTE);
    assert_eq!(total(&next), (i64::MAX, i64::MAX));
    assert_eq!(next.period_bytes(), i64::MAX);
}

fn written_at(usage: &TrafficUsage, at: Timestamp) -> TrafficUsage {
    TrafficUsage {
        updated_at: Some(at),
        ..usage.clone()
    }
}

#[test]
fn a_first_usage_is_written_and_an_unchanged_one_never() {
    let usage = step(None, None, &[c("a", 1, 1)], start());
    assert!(should_write(None, &usage, false, start(), SETTLED));
    let written = written_at(&usage, start());
    let much_later = start() + DAY;
    assert!(!should_write(
        Some(&written),
        &usage,
        false,
        much_later,
        SETTLED
    ));
    assert_eq!(
        next_write(Some(&written), &usage, much_later, SETTLED),
        None
    );
}

#[test]
fn more_bytes_are_written_at_most_once_per_interval() {
    let usage = step(None, None, &[c("a", 1, 1)], start());
    let written = written_at(&usage, start());
    let more = step(Some(&usage), None, &[c("a", 50, 1)], start() + MINUTE / 2);
    assert!(!should_write(
        Some(&written),
        &more,
        false,
        start() + MINUTE / 2,
        SETTLED
    ));
    assert_eq!(
        next_write(Some(&written), &more, start() + MINUTE / 2, SETTLED),
        Some(start() + MINUTE)
    );
    assert!(should_write(
        Some(&written),
        &more,
        false,
        start() + MINUTE,
        SETTLED
    ));
    // A usage written without a time is written again.
    let untimed = TrafficUsage {
        updated_at: None,
        ..usage.clone()
    };
    assert!(should_write(Some(&untimed), &more, false, start(), SETTLED));
}

#[test]
fn a_first_fold_of_the_term_waits_an_interval_from_now_for_bytes_alone() {
    let unsettled = (MINUTE, false);
    let usage = step(None, None, &[c("a", 1, 1)], start());
    let written = written_at(&usage, start());
    let much_later = start() + DAY;
    let more = step(Some(&usage), None, &[c("a", 50, 1)], much_later);
    assert!(!should_write(
        Some(&written),
        &more,
        false,
        much_later,
        unsettled
    ));
    assert_eq!(
        next_write(Some(&written), &more, much_later, unsettled),
        Some(much_later + MINUTE)
    );
    assert!(should_write(
        Some(&written),
        &more,
        true,
        much_later,
        unsettled
    ));
    assert!(should_write(None, &more, false, much_later, unsettled));
}

#[test]
fn exhaustion_a_new_period_or_other_devices_are_written_at_once() {
    let usage = step(None, Some(1000), &[c("a", 1, 1)], start());
    let written = written_at(&usage, start());
    let soon = start() + SignedDuration::from_secs(1);
    let more = step(Some(&usage), Some(1000), &[c("a", 2, 1)], soon);
    assert!(should_write(Some(&written), &more, true, soon, SETTLED));
    let rolled = step(
        Some(&usage),
        Some(1000),
        &[c("a", 1, 1)],
        start() + DAY * 30,
    );
    assert!(should_write(
        Some(&written),
        &rolled,
        false,
        start() + DAY * 30,
        SETTLED
    ));
    let second_device = step(
        Some(&usage),
        Some(1000),
        &[c("a", 1, 1), c("b", 0, 0)],
        soon,
    );
    assert!(should_write(
        Some(&written),
        &second_device,
        false,
        soon,
        SETTLED
    ));
    let removed = step(Some(&usage), Some(1000), &[], soon);
    assert!(should_write(Some(&written), &removed, false, soon, SETTLED));
}

fn spec(bytes: Option<i64>) -> VpnSubscriptionSpec {
    let mut spec = VpnSubscriptionSpec::for_user(1);
    spec.paid_until = paid();
    spec.traffic_quota = bytes.and_then(|b| quota(b, 30));
    spec
}

fn reported(name: &str, rx: i64, tx: i64) -> WgPeer {
    let mut peer = bare(name);
    peer.status = Some(WgPeerStatus {
        rx_bytes: rx,
        tx_bytes: tx,
        ..WgPeerStatus::default()
    });
    peer
}

#[test]
fn accounting_without_traffic_or_quota_writes_nothing() {
    let silent = bare("tg-1-1");
    let accounting = account(&spec(None), None, false, None, &[silent], start(), MINUTE);
    assert_eq!(accounting.folded, None);
    assert_eq!(accounting.status_usage, None);
    assert!(!accounting.exhausted);
    assert_eq!(accounting.requeue_at, None);
}

#[test]
fn accounting_crossing_the_quota_writes_at_once_and_labels_the_peers() {
    let peers = [reported("tg-1-1", 400, 300)];
    let first = account(
        &spec(Some(1000)),
        None,
        false,
        None,
        &peers,
        start(),
        MINUTE,
    );
    assert!(!first.exhausted);
    let written = first.status_usage.clone().unwrap();
    assert_eq!(written.updated_at, Some(start()));
    // Period end, as nothing is held back.
    assert_eq!(first.requeue_at, Some(start() + DAY * 30));

    let soon = start() + SignedDuration::from_secs(5);
    let more = [reported("tg-1-1", 450, 300)];
    let held = account(
        &spec(Some(1000)),
        Some(&written),
        false,
        first.folded.as_ref(),
        &more,
        soon,
        MINUTE,
    );
    assert!(!held.exhausted);
    assert_eq!(held.status_usage.as_ref(), Some(&written));
    assert_eq!(held.requeue_at, Some(start() + MINUTE));
    assert_eq!(held.accounted, (50, 0));

    let over = [reported("tg-1-1", 700, 300)];
    let crossed = account(
        &spec(Some(1000)),
        Some(&written),
        false,
        held.folded.as_ref(),
        &over,
        soon,
        MINUTE,
    );
    assert!(crossed.exhausted);
    assert!(crossed.became_exhausted);
    assert!(!held.became_exhausted);
    let usage = crossed.status_usage.unwrap();
    assert_eq!(usage.period_bytes(), 1000);
    assert_eq!(usage.updated_at, Some(soon));
    assert_eq!(crossed.accounted, (250, 0));
}

#[test]
fn the_kept_fold_is_the_base_unless_the_written_usage_is_ahead_of_it() {
    let peers = [reported("a", 100, 0)];
    let kept = step(None, None, &[c("a", 100, 0)], start());
    let written = written_at(&step(None, None, &[c("a", 40, 0)], start()), start());
    // The kept fold has seen 100 bytes; the counters hold 100: nothing new.
    let accounting = account(
        &spec(None),
        Some(&written),
        false,
        Some(&kept),
        &peers,
        start() + MINUTE,
        MINUTE,
    );
    assert_eq!(accounting.accounted, (0, 0));
    // A kept fold behind the written usage is ignored.
    let behind = step(None, None, &[c("a", 10, 0)], start());
    let accounting = account(
        &spec(None),
        Some(&written),
        false,
        Some(&behind),
        &peers,
        start() + MINUTE,
        MINUTE,
    );
    assert_eq!(accounting.accounted, (60, 0));
}

#[test]
fn a_purchase_lifts_the_exhaustion_and_is_written_at_once() {
    let peers = [reported("tg-1-1", 700, 400)];
    let first = account(
        &spec(Some(1000)),
        None,
        false,
        None,
        &peers,
        start(),
        MINUTE,
    );
    assert!(first.exhausted);
    let written = first.status_usage.unwrap();
    let mut renewed = spec(Some(1000));
    renewed.paid_until = Some(t("2026-08-01T00:00:00Z"));
    let soon = start() + SignedDuration::from_secs(5);
    let topped = account(
        &renewed,
        Some(&written),
        true,
        first.folded.as_ref(),
        &peers,
        soon,
        MINUTE,
    );
    assert!(!topped.exhausted);
    assert!(!topped.became_exhausted);
    let usage = topped.status_usage.unwrap();
    assert_eq!(usage.period_start, soon);
    assert_eq!(usage.period_bytes(), 0);
    assert_eq!(usage.total_bytes(), 1100);
}
