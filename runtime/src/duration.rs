//! The one duration syntax of every flag, environment variable and chart value: one or more
//! `<number><unit>` parts, largest unit first, units `d` (24 hours), `h`, `m`, `s` and `ms`, a
//! number with an optional fraction (`30s`, `5m`, `1h30m`, `2d`, `1.5s`, `250ms`). A bare number
//! is seconds, as the bot's and the node-agent's settings were once given. [`DurationParser`] is
//! the clap value parser; its errors name the flag and its environment variable.

use std::ffi::OsStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// What `--help` says about every duration setting (`after_help` of each binary).
pub const HELP: &str = "DURATION: one or more <number><unit> parts, largest first, units d, h, m, \
                        s and ms, e.g. 30s, 5m, 1h30m, 2d, 1.5s or 250ms; a bare number is seconds.";

/// The units, largest first, with their length in nanoseconds.
const UNITS: [(&str, u128); 5] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Parses a duration in the one syntax (see the module comment).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty; a duration is e.g. 30s, 5m, 1h30m or 2d".to_owned());
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return number_nanos(text, NANOS_PER_SECOND)
            .and_then(from_nanos)
            .ok_or_else(|| format!("{text:?} is not a number of seconds"));
    }
    let mut rest = text;
    let mut total: u128 = 0;
    // Index into UNITS of the next unit allowed: each part's unit is smaller than the last.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if number.is_empty() {
            return Err(format!(
                "{text:?} is not a duration such as 30s, 5m, 1h30m or 2d"
            ));
        }
        let Some(position) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!(
                "{text:?}: {unit:?} is not a unit (d, h, m, s, ms)",
                unit = if unit.is_empty() { after } else { unit }
            ));
        };
        if position < next_unit {
            return Err(format!(
                "{text:?}: the units must go from largest to smallest"
            ));
        }
        next_unit = position + 1;
        let nanos = number_nanos(number, UNITS[position].1)
            .ok_or_else(|| format!("{text:?}: {number:?} is not a number"))?;
        total = total
            .checked_add(nanos)
            .ok_or_else(|| format!("{text:?} is too long"))?;
        rest = after;
    }
    from_nanos(total).ok_or_else(|| format!("{text:?} is too long"))
}

/// `number` (digits with an optional fraction of at most nine digits) times `unit` nanoseconds.
fn number_nanos(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 9
        || number.ends_with('.')
    {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    whole
        .checked_mul(unit)?
        .checked_add(fraction.checked_mul(unit)? / scale)
}

fn from_nanos(nanos: u128) -> Option<Duration> {
    let seconds = u64::try_from(nanos / NANOS_PER_SECOND).ok()?;
    let rest = u32::try_from(nanos % NANOS_PER_SECOND).ok()?;
    Some(Duration::new(seconds, rest))
}

/// A duration written in the one syntax, largest units first (`1h30m`, `2d`, `250ms`, `0s`);
/// what [`parse`] reads back to the same value when it is a whole number of milliseconds.
pub fn format(duration: Duration) -> String {
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}s", duration.as_secs_f64());
    }
    let mut nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (name, unit) in UNITS {
        let count = nanos / unit;
        if count > 0 {
            out.push_str(&format!("{count}{name}"));
            nanos %= unit;
        }
    }
    out
}

/// The clap value parser of every duration setting: [`parse`], then the bounds. A bad value
/// stops the binary naming the flag and its variable, e.g. `invalid value "2s" for
/// --lease-duration (WGSUB_LEASE_DURATION): shorter than 3s`.
#[derive(Debug, Clone, Copy)]
pub struct DurationParser {
    min: Duration,
    max: Option<Duration>,
}

impl DurationParser {
    /// Any duration, zero included.
    pub const fn any() -> Self {
        Self {
            min: Duration::ZERO,
            max: None,
        }
    }

    /// A duration longer than zero.
    pub const fn positive() -> Self {
        Self {
            min: Duration::from_nanos(1),
            max: None,
        }
    }

    /// A duration of at least `min`.
    pub const fn at_least(min: Duration) -> Self {
        Self { min, max: None }
    }

    /// And of at most `max`.
    pub const fn at_most(self, max: Duration) -> Self {
        Self {
            min: self.min,
            max: Some(max),
        }
    }

    /// [`parse`] and the bounds; the error says what is wrong without the flag.
    pub fn check(&self, text: &str) -> Result<Duration, String> {
        let duration = parse(text)?;
        if duration < self.min {
            return Err(if self.min == Duration::from_nanos(1) {
                "must be more than zero".to_owned()
            } else {
                format!("shorter than {}", format(self.min))
            });
        }
        if let Some(max) = self.max
            && duration > max
        {
            return Err(format!("longer than {}", format(max)));
        }
        Ok(duration)
    }
}

impl TypedValueParser for DurationParser {
    type Value = Duration;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        let setting = arg.map_or_else(|| "a duration".to_owned(), setting_name);
        let text = value.to_string_lossy();
        self.check(&text).map_err(|problem| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value {text:?} for {setting}: {problem}\n"),
            )
            .with_cmd(cmd)
        })
    }
}

/// `--flag (WGSUB_VARIABLE)`, or what of it the argument has.
fn setting_name(arg: &clap::Arg) -> String {
    let flag = arg.get_long().map_or_else(
        || arg.get_id().as_str().replace('_', "-"),
        |long| format!("--{long}"),
    );
    match arg.get_env().and_then(|e| e.to_str()) {
        Some(env) => format!("{flag} ({env})"),
        None => flag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn parts_add_up_largest_unit_first() {
        for (text, expected) in [
            ("30s", secs(30)),
            ("5m", secs(300)),
            ("1h30m", secs(5400)),
            ("2d", secs(172_800)),
            ("30d", secs(30 * 86_400)),
            ("720h", secs(720 * 3600)),
            ("1d2h3m4s", secs(86_400 + 7200 + 180 + 4)),
            ("1m30s", secs(90)),
            ("250ms", Duration::from_millis(250)),
            ("1s500ms", Duration::from_millis(1500)),
            ("0s", Duration::ZERO),
            (" 15s ", secs(15)),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn fractions_are_read_to_the_nanosecond() {
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0.25h"), Ok(secs(900)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0.000000001s"), Ok(Duration::from_nanos(1)));
    }

    #[test]
    fn a_bare_number_is_seconds_as_older_settings_gave_it() {
        assert_eq!(parse("300"), Ok(secs(300)));
        assert_eq!(parse("15"), Ok(secs(15)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn what_is_not_the_syntax_is_refused_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("soon", "not a duration"),
            ("h", "not a duration"),
            ("5w", "not a unit"),
            ("5 m", "not a unit"),
            ("-1h", "not a duration"),
            ("30s1h", "largest to smallest"),
            ("1h1h", "largest to smallest"),
            ("1.s", "not a number"),
            ("1.2.3s", "not a number"),
            ("1.0000000001s", "not a number"),
            ("1..", "not a number of seconds"),
            ("P30D", "not a duration"),
            ("9999999999999999999999999999999999999999d", "not a number"),
            ("300000000000000d", "too long"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn format_writes_what_parse_reads() {
        for text in [
            "0s", "30s", "5m", "1h30m", "2d", "1d2h3m4s", "250ms", "1s500ms",
        ] {
            let duration = parse(text).unwrap();
            assert_eq!(format(duration), text);
            assert_eq!(parse(&format(duration)), Ok(duration));
        }
        assert_eq!(format(secs(3600)), "1h");
        assert_eq!(format(Duration::from_nanos(1_500)), "0.0000015s");
    }

    #[derive(Debug, Parser)]
    struct Settings {
        #[arg(long, env = "WGSUB_TEST_LEASE", default_value = "15s",
              value_parser = DurationParser::at_least(secs(3)).at_most(secs(300)))]
        lease: Duration,
        #[arg(long, default_value = "60s", value_parser = DurationParser::positive())]
        interval: Duration,
        #[arg(long, default_value = "30d", value_parser = DurationParser::any())]
        retention: Duration,
    }

    fn settings(args: &[&str]) -> Result<Settings, String> {
        Settings::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_value_parser_applies_the_bounds() {
        let defaults = settings(&[]).unwrap();
        assert_eq!(
            (defaults.lease, defaults.interval, defaults.retention),
            (secs(15), secs(60), secs(30 * 86_400))
        );
        let given = settings(&["--lease", "1m", "--interval", "1.5", "--retention", "0s"]).unwrap();
        assert_eq!(
            (given.lease, given.interval, given.retention),
            (secs(60), Duration::from_millis(1500), Duration::ZERO)
        );
        let error = settings(&["--lease", "2s"]).unwrap_err();
        assert!(error.contains("shorter than 3s"), "{error}");
        let error = settings(&["--lease", "5m1s"]).unwrap_err();
        assert!(error.contains("longer than 5m"), "{error}");
        let error = settings(&["--interval", "0s"]).unwrap_err();
        assert!(error.contains("more than zero"), "{error}");
    }

    #[test]
    fn errors_name_the_flag_and_its_variable() {
        let error = settings(&["--lease", "soon"]).unwrap_err();
        assert!(
            error.contains("--lease (WGSUB_TEST_LEASE)") && error.contains("\"soon\""),
            "{error}"
        );
        let error = settings(&["--interval", "5w"]).unwrap_err();
        assert!(error.contains("for --interval:"), "{error}");
    }
}
