//! Broadcast pacing and delivery: sending one text to many chats under Telegram's limits
//! (about 30 messages a second to different chats), honouring `retry_after` a bounded number of
//! times, and counting chats that blocked the bot as failed without retrying them.
//!
//! The decisions ([`Pacing::offset`], [`Pacing::next_step`], [`progress_due`]) are pure; [`run`]
//! drives them with the sending, sleeping and reporting functions it is given, so tests run it
//! with fakes and no clock.

use std::future::Future;
use std::time::Duration;

/// Telegram's documented ceiling for bulk messages to different chats.
pub const TELEGRAM_MESSAGES_PER_SECOND: u32 = 30;
/// The longest `retry_after` a broadcast waits for before counting the chat as failed.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How fast a broadcast goes and how often it retries a rate-limited chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    messages_per_second: u32,
    max_retries: u32,
}

/// What happened to one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// The user blocked the bot, deleted their account, or the chat is gone: final.
    Unreachable,
    /// Telegram asked to wait this long before the next request.
    RetryAfter(Duration),
    /// Any other error (network, server): counted as failed, not retried.
    Failed,
}

/// What to do after a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The chat is done: delivered or not.
    Done { delivered: bool },
    /// Wait this long, then send to the same chat again.
    RetryIn(Duration),
}

impl Pacing {
    /// A pacing of `messages_per_second` (1–30) with up to `max_retries` (0–5) retries of a
    /// rate-limited chat.
    pub fn new(messages_per_second: u32, max_retries: u32) -> Result<Self, String> {
        if !(1..=TELEGRAM_MESSAGES_PER_SECOND).contains(&messages_per_second) {
            return Err(format!(
                "must be 1–{TELEGRAM_MESSAGES_PER_SECOND} messages per second, got {messages_per_second}"
            ));
        }
        if max_retries > 5 {
            return Err(format!("must be 0–5 retries, got {max_retries}"));
        }
        Ok(Self {
            messages_per_second,
            max_retries,
        })
    }

    pub fn messages_per_second(&self) -> u32 {
        self.messages_per_second
    }

    /// The gap between two consecutive sends.
    pub fn interval(&self) -> Duration {
        // Rounded up, so that `rate` intervals never fit in less than a second.
        Duration::from_nanos(1_000_000_000u64.div_ceil(u64::from(self.messages_per_second)))
    }

    /// When (from the start) the `index`-th chat is sent to, ignoring retries: evenly spaced so
    /// that no one-second window holds more than `messages_per_second` sends.
    pub fn offset(&self, index: u32) -> Duration {
        self.interval() * index
    }

    /// What to do after the `attempt`-th (1-based) send to a chat ended in `delivery`.
    pub fn next_step(&self, delivery: Delivery, attempt: u32) -> Step {
        match delivery {
            Delivery::Delivered => Step::Done { delivered: true },
            Delivery::Unreachable | Delivery::Failed => Step::Done { delivered: false },
            Delivery::RetryAfter(wait)
                if attempt <= self.max_retries && wait <= MAX_RETRY_AFTER =>
            {
                Step::RetryIn(wait.max(self.interval()))
            }
            Delivery::RetryAfter(_) => Step::Done { delivered: false },
        }
    }
}

/// The running count of a broadcast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: u32,
    pub delivered: u32,
    pub failed: u32,
}

impl Tally {
    pub fn done(&self) -> u32 {
        self.delivered + self.failed
    }
}

/// Whether to report progress after `done` of `total` chats: every `every` chats, never at the
/// end (the final count is reported separately).
pub fn progress_due(done: u32, total: u32, every: u32) -> bool {
    every > 0 && done < total && done > 0 && done.is_multiple_of(every)
}

/// Sends to every recipient in order, paced, and returns the final tally. `send` delivers to
/// one chat, `sleep` waits, `progress` is told the tally every `progress_every` chats.
pub async fn run<S, SF, Z, ZF, P, PF>(
    pacing: Pacing,
    recipients: &[i64],
    progress_every: u32,
    mut send: S,
    mut sleep: Z,
    mut progress: P,
) -> Tally
where
    S: FnMut(i64) -> SF,
    SF: Future<Output = Delivery>,
    Z: FnMut(Duration) -> ZF,
    ZF: Future<Output = ()>,
    P: FnMut(Tally) -> PF,
    PF: Future<Output = ()>,
{
    let mut tally = Tally {
        total: u32::try_from(recipients.len()).unwrap_or(u32::MAX),
        ..Tally::default()
    };
    for (index, &chat) in recipients.iter().enumerate() {
        if index > 0 {
            sleep(pacing.interval()).await;
        }
        let mut attempt = 1;
        loop {
            match pacing.next_step(send(chat).await, attempt) {
                Step::Done { delivered: true } => {
                    tally.delivered += 1;
                    break;
                }
                Step::Done { delivered: false } => {
                    tally.failed += 1;
                    break;
                }
                Step::RetryIn(wait) => {
                    sleep(wait).await;
                    attempt += 1;
                }
            }
        }
        if progress_due(tally.done(), tally.total, progress_every) {
            progress(tally).await;
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[test]
    fn pacing_stays_under_telegrams_limit() {
        assert!(Pacing::new(0, 1).is_err());
        assert!(Pacing::new(31, 1).is_err());
        assert!(Pacing::new(25, 6).is_err());
        for rate in 1..=TELEGRAM_MESSAGES_PER_SECOND {
            let pacing = Pacing::new(rate, 1).unwrap();
            // Any window of one second starting at a send holds at most `rate` sends.
            for first in 0..100u32 {
                let start = pacing.offset(first);
                let in_window = (first..first + 200)
                    .filter(|i| pacing.offset(*i) < start + Duration::from_secs(1))
                    .count();
                assert!(
                    in_window <= rate as usize,
                    "rate {rate}: {in_window} in a second"
                );
            }
        }
        assert_eq!(
            Pacing::new(25, 1).unwrap().interval(),
            Duration::from_millis(40)
        );
    }

    #[test]
    fn blocked_and_failed_chats_are_final_and_rate_limits_retry_a_bounded_number_of_times() {
        let pacing = Pacing::new(20, 2).unwrap();
        assert_eq!(
            pacing.next_step(Delivery::Delivered, 1),
            Step::Done { delivered: true }
        );
        assert_eq!(
            pacing.next_step(Delivery::Unreachable, 1),
            Step::Done { delivered: false }
        );
        assert_eq!(
            pacing.next_step(Delivery::Failed, 1),
            Step::Done { delivered: false }
        );
        let wait = Delivery::RetryAfter(Duration::from_secs(3));
        assert_eq!(
            pacing.next_step(wait, 1),
            Step::RetryIn(Duration::from_secs(3))
        );
        assert_eq!(
            pacing.next_step(wait, 2),
            Step::RetryIn(Duration::from_secs(3))
        );
        assert_eq!(pacing.next_step(wait, 3), Step::Done { delivered: false });
        // A zero retry_after still waits one interval; an absurd one is not waited for.
        assert_eq!(
            pacing.next_step(Delivery::RetryAfter(Duration::ZERO), 1),
            Step::RetryIn(pacing.interval())
        );
        assert_eq!(
            pacing.next_step(
                Delivery::RetryAfter(MAX_RETRY_AFTER + Duration::from_secs(1)),
                1
            ),
            Step::Done { delivered: false }
        );
    }

    #[test]
    fn progress_is_reported_every_n_chats_but_not_at_the_end() {
        let due: Vec<u32> = (0..=10).filter(|d| progress_due(*d, 10, 3)).collect();
        assert_eq!(due, vec![3, 6, 9]);
        assert!(!progress_due(10, 10, 5));
        assert!(!progress_due(4, 10, 0));
    }

    #[tokio::test]
    async fn run_counts_delivered_and_failed_and_never_storms_a_blocked_chat() {
        let pacing = Pacing::new(25, 1).unwrap();
        let calls: RefCell<BTreeMap<i64, u32>> = RefCell::default();
        let slept: RefCell<Vec<Duration>> = RefCell::default();
        let reports: RefCell<Vec<Tally>> = RefCell::default();
        let recipients = [1, 2, 3, 4, 5];
        let tally = run(
            pacing,
            &recipients,
            2,
            |chat| {
                let n = {
                    let mut calls = calls.borrow_mut();
                    let n = calls.entry(chat).or_default();
                    *n += 1;
                    *n
                };
                async move {
                    match (chat, n) {
                        (2, _) => Delivery::Unreachable,
                        (3, 1) => Delivery::RetryAfter(Duration::from_secs(2)),
                        (4, _) => Delivery::RetryAfter(Duration::from_secs(2)),
                        _ => Delivery::Delivered,
                    }
                }
            },
            |d| {
                slept.borrow_mut().push(d);
                async {}
            },
            |t| {
                reports.borrow_mut().push(t);
                async {}
            },
        )
        .await;
        assert_eq!(
            tally,
            Tally {
                total: 5,
                delivered: 3,
                failed: 2
            }
        );
        let calls = calls.into_inner();
        assert_eq!(calls[&2], 1, "a blocked chat is tried once");
        assert_eq!(calls[&3], 2, "a rate-limited chat is retried");
        assert_eq!(calls[&4], 2, "retries are bounded");
        let slept = slept.into_inner();
        let retries = slept
            .iter()
            .filter(|d| **d == Duration::from_secs(2))
            .count();
        assert_eq!(retries, 2);
        assert_eq!(
            slept.len(),
            4 + 2,
            "one gap between consecutive chats plus the retries"
        );
        assert_eq!(
            reports.into_inner(),
            vec![
                Tally {
                    total: 5,
                    delivered: 1,
                    failed: 1
                },
                Tally {
                    total: 5,
                    delivered: 2,
                    failed: 2
                }
            ]
        );
    }
}
