//! `/admin`: parsing its arguments into an [`AdminCommand`], with errors that name what was
//! wrong so the reply can be a usage line pointing at the problem; carrying the command out is
//! [`run`]'s.

use jiff::Timestamp;
use wgsub_ledger::promo::{CodeSyntaxError, PromoBenefit, normalize_code};

pub mod run;

/// Longest text Telegram accepts in one message.
pub const MAX_MESSAGE_CHARS: usize = 4096;
/// Most days one grant may add (ten years, as the plan catalogue allows).
pub const MAX_GRANT_DAYS: u32 = 3660;

/// A user named in an admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// A Telegram user id.
    Id(i64),
    /// A Telegram username, without the `@`.
    Username(String),
}

impl std::fmt::Display for UserRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserRef::Id(id) => write!(f, "{id}"),
            UserRef::Username(name) => write!(f, "@{name}"),
        }
    }
}

/// Who a broadcast goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every registered user.
    All,
    /// Users whose subscription is paid now and not suspended.
    Active,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::All => "all",
            Audience::Active => "active",
        }
    }
}

/// The subcommands, for usage lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    Stats,
    Grant,
    Suspend,
    Unsuspend,
    Find,
    Broadcast,
    Promo,
    Refund,
}

impl Subcommand {
    pub const ALL: [Subcommand; 8] = [
        Subcommand::Stats,
        Subcommand::Grant,
        Subcommand::Suspend,
        Subcommand::Unsuspend,
        Subcommand::Find,
        Subcommand::Broadcast,
        Subcommand::Promo,
        Subcommand::Refund,
    ];

    /// The usage line of the subcommand (not translated: it is syntax).
    pub fn usage(self) -> &'static str {
        match self {
            Subcommand::Stats => "/admin stats",
            Subcommand::Grant => "/admin grant <user id | @username> <days> [reason]",
            Subcommand::Suspend => "/admin suspend <user id | @username> [reason]",
            Subcommand::Unsuspend => "/admin unsuspend <user id | @username> [reason]",
            Subcommand::Find => "/admin find <user id | @username>",
            Subcommand::Broadcast => "/admin broadcast <all | active> <text>",
            Subcommand::Promo => {
                "/admin promo create <code> <days>d|<percent>% <YYYY-MM-DD> <max uses> | list | disable <code>"
            }
            Subcommand::Refund => "/admin refund <telegram payment charge id> [reason]",
        }
    }

    /// The name used in metrics and the admin log.
    pub fn as_str(self) -> &'static str {
        match self {
            Subcommand::Stats => "stats",
            Subcommand::Grant => "grant",
            Subcommand::Suspend => "suspend",
            Subcommand::Unsuspend => "unsuspend",
            Subcommand::Find => "find",
            Subcommand::Broadcast => "broadcast",
            Subcommand::Promo => "promo",
            Subcommand::Refund => "refund",
        }
    }
}

/// A parsed `/admin` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// `/admin` alone: the list of subcommands.
    Help,
    Stats,
    Grant {
        user: UserRef,
        days: u32,
        reason: Option<String>,
    },
    Suspend {
        user: UserRef,
        reason: Option<String>,
    },
    Unsuspend {
        user: UserRef,
        reason: Option<String>,
    },
    Find {
        user: UserRef,
    },
    Broadcast {
        audience: Audience,
        text: String,
    },
    Promo(PromoCommand),
    /// Refund a Telegram Stars payment by its `telegram_payment_charge_id`.
    Refund {
        charge_id: String,
        reason: Option<String>,
    },
}

/// What was wrong with the arguments; the reply names it beside the subcommand's usage line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminParseError {
    UnknownSubcommand(String),
    MissingUser(Subcommand),
    BadUser(Subcommand, String),
    MissingDays,
    BadDays(String),
    MissingAudience,
    BadAudience(String),
    EmptyBroadcast,
    BroadcastTooLong(usize),
    UnexpectedArguments(Subcommand, String),
    Promo(PromoArgError),
    MissingChargeId,
    BadChargeId(String),
}

impl AdminParseError {
    /// The subcommand whose usage line to show, if one was recognised.
    pub fn subcommand(&self) -> Option<Subcommand> {
        match self {
            AdminParseError::UnknownSubcommand(_) => None,
            AdminParseError::MissingUser(sub)
            | AdminParseError::BadUser(sub, _)
            | AdminParseError::UnexpectedArguments(sub, _) => Some(*sub),
            AdminParseError::MissingDays | AdminParseError::BadDays(_) => Some(Subcommand::Grant),
            AdminParseError::MissingAudience
            | AdminParseError::BadAudience(_)
            | AdminParseError::EmptyBroadcast
            | AdminParseError::BroadcastTooLong(_) => Some(Subcommand::Broadcast),
            AdminParseError::Promo(_) => Some(Subcommand::Promo),
            AdminParseError::MissingChargeId | AdminParseError::BadChargeId(_) => {
                Some(Subcommand::Refund)
            }
        }
    }
}

/// Splits off the first whitespace-separated word; the rest keeps its inner formatting.
fn next_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(at) => (&text[..at], text[at..].trim_start()),
        None => (text, ""),
    }
}

/// Parses a user id (positive integer) or a Telegram username (`@` and 5–32 of `[A-Za-z0-9_]`).
pub fn parse_user_ref(word: &str) -> Option<UserRef> {
    if let Some(name) = word.strip_prefix('@') {
        let ok = (5..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && name.as_bytes()[0].is_ascii_alphabetic();
        return ok.then(|| UserRef::Username(name.to_owned()));
    }
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .map(UserRef::Id)
}

/// Whether `word` can be a Telegram payment charge id: 1–128 of `[A-Za-z0-9_.:-]`.
pub fn is_charge_id(word: &str) -> bool {
    (1..=128).contains(&word.len())
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn user_arg(sub: Subcommand, word: &str) -> Result<UserRef, AdminParseError> {
    if word.is_empty() {
        return Err(AdminParseError::MissingUser(sub));
    }
    parse_user_ref(word).ok_or_else(|| AdminParseError::BadUser(sub, word.to_owned()))
}

fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Parses the text after `/admin`.
pub fn parse(args: &str) -> Result<AdminCommand, AdminParseError> {
    let (word, rest) = next_word(args);
    let sub = match word.to_ascii_lowercase().as_str() {
        "" => return Ok(AdminCommand::Help),
        "stats" => Subcommand::Stats,
        "grant" => Subcommand::Grant,
        "suspend" => Subcommand::Suspend,
        "unsuspend" => Subcommand::Unsuspend,
        "find" => Subcommand::Find,
        "broadcast" => Subcommand::Broadcast,
        "promo" => Subcommand::Promo,
        "refund" => Subcommand::Refund,
        _ => return Err(AdminParseError::UnknownSubcommand(word.to_owned())),
    };
    match sub {
        Subcommand::Stats => match optional(rest) {
            None => Ok(AdminCommand::Stats),
            Some(extra) => Err(AdminParseError::UnexpectedArguments(sub, extra)),
        },
        Subcommand::Grant => {
            let (user, rest) = next_word(rest);
            let user = user_arg(sub, user)?;
            let (days, rest) = next_word(rest);
            if days.is_empty() {
                return Err(AdminParseError::MissingDays);
            }
            let days = days
                .parse::<u32>()
                .ok()
                .filter(|d| (1..=MAX_GRANT_DAYS).contains(d))
                .ok_or_else(|| AdminParseError::BadDays(days.to_owned()))?;
            Ok(AdminCommand::Grant {
                user,
                days,
                reason: optional(rest),
            })
        }
        Subcommand::Suspend | Subcommand::Unsuspend => {
            let (user, rest) = next_word(rest);
            let user = user_arg(sub, user)?;
            let reason = optional(rest);
            Ok(if sub == Subcommand::Suspend {
                AdminCommand::Suspend { user, reason }
            } else {
                AdminCommand::Unsuspend { user, reason }
            })
        }
        Subcommand::Find => {
            let (user, rest) = next_word(rest);
            let user = user_arg(sub, user)?;
            match optional(rest) {
                None => Ok(AdminCommand::Find { user }),
                Some(extra) => Err(AdminParseError::UnexpectedArguments(sub, extra)),
            }
        }
        Subcommand::Promo => parse_promo(rest)
            .map(AdminCommand::Promo)
            .map_err(AdminParseError::Promo),
        Subcommand::Broadcast => {
            let (audience, text) = next_word(rest);
            let audience = match audience.to_ascii_lowercase().as_str() {
                "" => return Err(AdminParseError::MissingAudience),
                "all" => Audience::All,
                "active" => Audience::Active,
                _ => return Err(AdminParseError::BadAudience(audience.to_owned())),
            };
            let text = text.trim();
            if text.is_empty() {
                return Err(AdminParseError::EmptyBroadcast);
            }
            let chars = text.chars().count();
            if chars > MAX_MESSAGE_CHARS {
                return Err(AdminParseError::BroadcastTooLong(chars));
            }
            Ok(AdminCommand::Broadcast {
                audience,
                text: text.to_owned(),
            })
        }
        Subcommand::Refund => {
            let (charge_id, rest) = next_word(rest);
            if charge_id.is_empty() {
                return Err(AdminParseError::MissingChargeId);
            }
            if !is_charge_id(charge_id) {
                return Err(AdminParseError::BadChargeId(charge_id.to_owned()));
            }
            Ok(AdminCommand::Refund {
                charge_id: charge_id.to_owned(),
                reason: optional(rest),
            })
        }
    }
}

/// `/admin promo …`: create, list or disable promo codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromoCommand {
    /// `create <code> <N>d|<N>% <YYYY-MM-DD | RFC 3339 instant> <max uses>`; a bare date
    /// means the code works through the end of that day (UTC).
    Create {
        code: String,
        benefit: PromoBenefit,
        expires_at: Timestamp,
        max_uses: u32,
    },
    List,
    Disable {
        code: String,
    },
}

/// What was wrong with `/admin promo` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromoArgError {
    MissingAction,
    BadAction(String),
    MissingCode,
    BadCode(String, CodeSyntaxError),
    MissingBenefit,
    BadBenefit(String),
    MissingExpiry,
    BadExpiry(String),
    MissingUses,
    BadUses(String),
    Unexpected(String),
}

/// Most uses one code may have.
pub const MAX_PROMO_USES: u32 = 1_000_000;

/// `7d` → 7 free days (1–3660), `20%` → 20 % off (1–99).
pub fn parse_benefit(word: &str) -> Option<PromoBenefit> {
    let number = |digits: &str| {
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u32>().ok())
            .flatten()
    };
    if let Some(days) = word.strip_suffix(['d', 'D']) {
        return number(days)
            .filter(|days| (1..=MAX_GRANT_DAYS).contains(days))
            .map(PromoBenefit::Days);
    }
    let percent = number(word.strip_suffix('%')?)?;
    u8::try_from(percent)
        .ok()
        .filter(|percent| (1..=99).contains(percent))
        .map(PromoBenefit::PercentOff)
}

/// `2026-12-31` → the end of that day in UTC; an RFC 3339 instant as it is.
pub fn parse_expiry(word: &str) -> Option<Timestamp> {
    if let Ok(at) = word.parse::<Timestamp>() {
        return Some(at);
    }
    let date = word.parse::<jiff::civil::Date>().ok()?;
    date.tomorrow()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|zoned| zoned.timestamp())
}

fn parse_promo(args: &str) -> Result<PromoCommand, PromoArgError> {
    let (action, rest) = next_word(args);
    let code_arg = |word: &str| -> Result<String, PromoArgError> {
        if word.is_empty() {
            return Err(PromoArgError::MissingCode);
        }
        normalize_code(word).map_err(|error| PromoArgError::BadCode(word.to_owned(), error))
    };
    let nothing_more = |rest: &str| match optional(rest) {
        None => Ok(()),
        Some(extra) => Err(PromoArgError::Unexpected(extra)),
    };
    match action.to_ascii_lowercase().as_str() {
        "" => Err(PromoArgError::MissingAction),
        "list" => nothing_more(rest).map(|()| PromoCommand::List),
        "disable" => {
            let (code, rest) = next_word(rest);
            let code = code_arg(code)?;
            nothing_more(rest)?;
            Ok(PromoCommand::Disable { code })
        }
        "create" => {
            let (code, rest) = next_word(rest);
            let code = code_arg(code)?;
            let (benefit, rest) = next_word(rest);
            if benefit.is_empty() {
                return Err(PromoArgError::MissingBenefit);
            }
            let benefit =
                parse_benefit(benefit).ok_or_else(|| PromoArgError::BadBenefit(benefit.into()))?;
            let (expiry, rest) = next_word(rest);
            if expiry.is_empty() {
                return Err(PromoArgError::MissingExpiry);
            }
            let expires_at =
                parse_expiry(expiry).ok_or_else(|| PromoArgError::BadExpiry(expiry.into()))?;
            let (uses, rest) = next_word(rest);
            if uses.is_empty() {
                return Err(PromoArgError::MissingUses);
            }
            let max_uses = uses
                .parse::<u32>()
                .ok()
                .filter(|uses| (1..=MAX_PROMO_USES).contains(uses))
                .ok_or_else(|| PromoArgError::BadUses(uses.into()))?;
            nothing_more(rest)?;
            Ok(PromoCommand::Create {
                code,
                benefit,
                expires_at,
                max_uses,
            })
        }
        _ => Err(PromoArgError::BadAction(action.to_owned())),
    }
}

#[cfg(test)]
mod promo_tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn promo_create_takes_code_benefit_expiry_and_uses() {
        assert_eq!(
            parse("promo create spring 7d 2026-12-31 100"),
            Ok(AdminCommand::Promo(PromoCommand::Create {
                code: "SPRING".into(),
                benefit: PromoBenefit::Days(7),
                expires_at: t("2027-01-01T00:00:00Z"),
                max_uses: 100
            }))
        );
        assert_eq!(
            parse("PROMO CREATE sale-20 20% 2026-12-10T12:00:00Z 1"),
            Ok(AdminCommand::Promo(PromoCommand::Create {
                code: "SALE-20".into(),
                benefit: PromoBenefit::PercentOff(20),
                expires_at: t("2026-12-10T12:00:00Z"),
                max_uses: 1
            }))
        );
        assert_eq!(
            parse("promo list"),
            Ok(AdminCommand::Promo(PromoCommand::List))
        );
        assert_eq!(
            parse("promo disable spring"),
            Ok(AdminCommand::Promo(PromoCommand::Disable {
                code: "SPRING".into()
            }))
        );
    }

    #[test]
    fn promo_errors_name_the_bad_argument() {
        let err = |args: &str| match parse(args) {
            Err(AdminParseError::Promo(problem)) => problem,
            other => panic!("{args}: {other:?}"),
        };
        assert_eq!(err("promo"), PromoArgError::MissingAction);
        assert_eq!(
            err("promo delete X"),
            PromoArgError::BadAction("delete".into())
        );
        assert_eq!(err("promo create"), PromoArgError::MissingCode);
        assert_eq!(
            err("promo create a!b 7d 2026-12-31 1"),
            PromoArgError::BadCode("a!b".into(), CodeSyntaxError::Characters)
        );
        assert_eq!(err("promo create ABC"), PromoArgError::MissingBenefit);
        for bad in [
            "0d", "3661d", "100%", "0%", "7", "d", "%", "-5d", "7days", "1.5%",
        ] {
            assert_eq!(
                err(&format!("promo create ABC {bad} 2026-12-31 1")),
                PromoArgError::BadBenefit(bad.into()),
                "{bad}"
            );
        }
        assert_eq!(err("promo create ABC 7d"), PromoArgError::MissingExpiry);
        for bad in ["2026-13-01", "tomorrow", "31.12.2026"] {
            assert_eq!(
                err(&format!("promo create ABC 7d {bad} 1")),
                PromoArgError::BadExpiry(bad.into())
            );
        }
        assert_eq!(
            err("promo create ABC 7d 2026-12-31"),
            PromoArgError::MissingUses
        );
        for bad in ["0", "-1", "x", "1000001"] {
            assert_eq!(
                err(&format!("promo create ABC 7d 2026-12-31 {bad}")),
                PromoArgError::BadUses(bad.into())
            );
        }
        assert_eq!(
            err("promo create ABC 7d 2026-12-31 5 extra"),
            PromoArgError::Unexpected("extra".into())
        );
        assert_eq!(
            err("promo list all"),
            PromoArgError::Unexpected("all".into())
        );
        assert_eq!(err("promo disable"), PromoArgError::MissingCode);
        assert_eq!(
            AdminParseError::Promo(PromoArgError::MissingAction).subcommand(),
            Some(Subcommand::Promo)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_arguments_ask_for_help() {
        assert_eq!(parse(""), Ok(AdminCommand::Help));
        assert_eq!(parse("   "), Ok(AdminCommand::Help));
    }

    #[test]
    fn grant_takes_user_days_and_an_optional_reason() {
        assert_eq!(
            parse("grant 42 30 apology for the outage"),
            Ok(AdminCommand::Grant {
                user: UserRef::Id(42),
                days: 30,
                reason: Some("apology for the outage".into())
            })
        );
        assert_eq!(
            parse("GRANT @some_user 7"),
            Ok(AdminCommand::Grant {
                user: UserRef::Username("some_user".into()),
                days: 7,
                reason: None
            })
        );
    }

    #[test]
    fn grant_errors_name_the_bad_argument() {
        assert_eq!(
            parse("grant"),
            Err(AdminParseError::MissingUser(Subcommand::Grant))
        );
        assert_eq!(parse("grant 42"), Err(AdminParseError::MissingDays));
        assert_eq!(
            parse("grant 42 abc"),
            Err(AdminParseError::BadDays("abc".into()))
        );
        assert_eq!(
            parse("grant 42 0"),
            Err(AdminParseError::BadDays("0".into()))
        );
        assert_eq!(
            parse("grant 42 -3"),
            Err(AdminParseError::BadDays("-3".into()))
        );
        assert_eq!(
            parse("grant 42 3661"),
            Err(AdminParseError::BadDays("3661".into()))
        );
        assert_eq!(
            parse("grant bob 3"),
            Err(AdminParseError::BadUser(Subcommand::Grant, "bob".into()))
        );
        assert_eq!(
            parse("grant 0 3"),
            Err(AdminParseError::BadUser(Subcommand::Grant, "0".into()))
        );
    }

    #[test]
    fn user_references_are_ids_or_usernames() {
        assert_eq!(parse_user_ref("123"), Some(UserRef::Id(123)));
        assert_eq!(
            parse_user_ref("@abcde"),
            Some(UserRef::Username("abcde".into()))
        );
        for bad in [
            "",
            "@",
            "@abc",
            "@1abcd",
            "@bad-name",
            "-5",
            "+5",
            "1e3",
            "99999999999999999999",
            "@x",
        ] {
            assert_eq!(parse_user_ref(bad), None, "{bad}");
        }
        assert_eq!(UserRef::Username("abcde".into()).to_string(), "@abcde");
        assert_eq!(UserRef::Id(7).to_string(), "7");
    }

    #[test]
    fn suspend_unsuspend_and_find() {
        assert_eq!(
            parse("suspend 5 abuse"),
            Ok(AdminCommand::Suspend {
                user: UserRef::Id(5),
                reason: Some("abuse".into())
            })
        );
        assert_eq!(
            parse("unsuspend @someone"),
            Ok(AdminCommand::Unsuspend {
                user: UserRef::Username("someone".into()),
                reason: None
            })
        );
        assert_eq!(
            parse("suspend"),
            Err(AdminParseError::MissingUser(Subcommand::Suspend))
        );
        assert_eq!(
            parse("find 77"),
            Ok(AdminCommand::Find {
                user: UserRef::Id(77)
            })
        );
        assert_eq!(
            parse("find 77 88"),
            Err(AdminParseError::UnexpectedArguments(
                Subcommand::Find,
                "88".into()
            ))
        );
        assert_eq!(parse("stats"), Ok(AdminCommand::Stats));
        assert_eq!(
            parse("stats now"),
            Err(AdminParseError::UnexpectedArguments(
                Subcommand::Stats,
                "now".into()
            ))
        );
    }

    #[test]
    fn broadcast_needs_an_audience_and_text() {
        assert_eq!(
            parse("broadcast all  Hello,\nworld! "),
            Ok(AdminCommand::Broadcast {
                audience: Audience::All,
                text: "Hello,\nworld!".into()
            })
        );
        assert_eq!(
            parse("broadcast active news"),
            Ok(AdminCommand::Broadcast {
                audience: Audience::Active,
                text: "news".into()
            })
        );
        assert_eq!(parse("broadcast"), Err(AdminParseError::MissingAudience));
        assert_eq!(parse("broadcast all"), Err(AdminParseError::EmptyBroadcast));
        assert_eq!(
            parse("broadcast active   \n "),
            Err(AdminParseError::EmptyBroadcast)
        );
        assert_eq!(
            parse("broadcast everyone hi"),
            Err(AdminParseError::BadAudience("everyone".into()))
        );
        let long = "я".repeat(MAX_MESSAGE_CHARS + 1);
        assert_eq!(
            parse(&format!("broadcast all {long}")),
            Err(AdminParseError::BroadcastTooLong(MAX_MESSAGE_CHARS + 1))
        );
    }

    #[test]
    fn refund_takes_a_charge_id_and_an_optional_reason() {
        assert_eq!(
            parse("refund stxAbC-1_2 asked by e-mail"),
            Ok(AdminCommand::Refund {
                charge_id: "stxAbC-1_2".into(),
                reason: Some("asked by e-mail".into())
            })
        );
        assert_eq!(
            parse("REFUND stx9"),
            Ok(AdminCommand::Refund {
                charge_id: "stx9".into(),
                reason: None
            })
        );
        assert_eq!(parse("refund"), Err(AdminParseError::MissingChargeId));
        assert_eq!(
            parse("refund stx<1>"),
            Err(AdminParseError::BadChargeId("stx<1>".into()))
        );
        let long = "x".repeat(129);
        assert_eq!(
            parse(&format!("refund {long}")),
            Err(AdminParseError::BadChargeId(long))
        );
        assert_eq!(
            AdminParseError::MissingChargeId.subcommand(),
            Some(Subcommand::Refund)
        );
    }

    #[test]
    fn unknown_subcommands_are_named() {
        assert_eq!(
            parse("delete 5"),
            Err(AdminParseError::UnknownSubcommand("delete".into()))
        );
        assert_eq!(
            AdminParseError::UnknownSubcommand("x".into()).subcommand(),
            None
        );
        assert_eq!(
            AdminParseError::BadDays("x".into()).subcommand(),
            Some(Subcommand::Grant)
        );
        assert_eq!(
            AdminParseError::EmptyBroadcast.subcommand(),
            Some(Subcommand::Broadcast)
        );
    }
}
