//! The import CSV: one row per device, mapping a peer of the old server (by public key or
//! address) to a Telegram user, the instant they are paid until and a device name, optionally
//! with the device's private key.
//!
//! The first line names the columns: `peer`, `telegram_id`, `paid_until`, `device_name` are
//! required, `private_key` is optional, any other name is refused. Fields may be double-quoted
//! (a quote inside doubled). `paid_until` is an RFC 3339 instant or a date (`2027-01-31`, its
//! midnight UTC).

use std::net::Ipv4Addr;

use jiff::Timestamp;

use crate::keys::{PrivateKey, PublicKey};

/// The columns the CSV may have.
pub const COLUMNS: [&str; 5] = [
    "peer",
    "telegram_id",
    "paid_until",
    "device_name",
    "private_key",
];

/// How a row names its peer on the old server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRef {
    PublicKey(PublicKey),
    Address(Ipv4Addr),
}

impl std::fmt::Display for PeerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerRef::PublicKey(key) => write!(f, "{key}"),
            PeerRef::Address(address) => write!(f, "{address}"),
        }
    }
}

/// One row of the CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRow {
    /// 1-based line in the CSV.
    pub line: usize,
    pub peer: PeerRef,
    pub telegram_id: i64,
    pub paid_until: Timestamp,
    pub device_name: String,
    pub private_key: Option<PrivateKey>,
}

/// Why the CSV cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CSV line {line}: {message}")]
pub struct MappingError {
    pub line: usize,
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> MappingError {
    MappingError {
        line,
        message: message.into(),
    }
}

/// Splits one CSV line into fields (RFC 4180 quoting within the line).
fn split_fields(line: usize, text: &str) -> Result<Vec<String>, MappingError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() && !was_quoted => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, '"') => return Err(error(line, "a quote inside an unquoted field")),
            (false, c) if was_quoted && !c.is_whitespace() => {
                return Err(error(line, "text after a closing quote"));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(error(line, "a quoted field is not closed"));
    }
    fields.push(field);
    Ok(fields.into_iter().map(|f| f.trim().to_owned()).collect())
}

/// Parses `paid_until`: an RFC 3339 instant, or a date meaning its midnight UTC.
pub fn parse_paid_until(text: &str) -> Option<Timestamp> {
    if let Ok(instant) = text.parse::<Timestamp>() {
        return Some(instant);
    }
    let date: jiff::civil::Date = text.parse().ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|zoned| zoned.timestamp())
}

fn parse_peer(line: usize, text: &str) -> Result<PeerRef, MappingError> {
    if let Ok(key) = PublicKey::from_base64(text) {
        return Ok(PeerRef::PublicKey(key));
    }
    let address = text.strip_suffix("/32").unwrap_or(text);
    address.parse().map(PeerRef::Address).map_err(|_| {
        error(
            line,
            format!("peer {text:?} is neither a WireGuard public key nor an IPv4 address"),
        )
    })
}

/// Reads the CSV. Blank lines are skipped; every row is checked against the header.
pub fn parse_mapping(text: &str) -> Result<Vec<MappingRow>, MappingError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_start_matches('\u{feff}')))
        .filter(|(_, l)| !l.trim().is_empty());
    let (header_line, header) = lines.next().ok_or_else(|| error(1, "the CSV is empty"))?;
    let names = split_fields(header_line, header)?;
    let mut index = [None; COLUMNS.len()];
    for (position, name) in names.iter().enumerate() {
        let name = name.to_ascii_lowercase();
        let Some(column) = COLUMNS.iter().position(|c| *c == name) else {
            return Err(error(
                header_line,
                format!(
                    "unknown column {name:?} (the columns are {})",
                    COLUMNS.join(", ")
                ),
            ));
        };
        if index[column].replace(position).is_some() {
            return Err(error(header_line, format!("column {name:?} appears twice")));
        }
    }
    for (column, name) in COLUMNS.iter().enumerate().take(4) {
        if index[column].is_none() {
            return Err(error(header_line, format!("missing column {name:?}")));
        }
    }
    let mut rows = Vec::new();
    for (line, text) in lines {
        let fields = split_fields(line, text)?;
        if fields.len() != names.len() {
            return Err(error(
                line,
                format!("{} fields, the header has {}", fields.len(), names.len()),
            ));
        }
        let get = |column: usize| index[column].map(|i| fields[i].as_str());
        let peer = parse_peer(line, get(0).unwrap_or_default())?;
        let id_text = get(1).unwrap_or_default();
        let telegram_id = id_text
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                error(
                    line,
                    format!("telegram_id {id_text:?} is not a positive integer"),
                )
            })?;
        let until_text = get(2).unwrap_or_default();
        let paid_until = parse_paid_until(until_text).ok_or_else(|| {
            error(
                line,
                format!("paid_until {until_text:?} is neither an RFC 3339 instant nor a date"),
            )
        })?;
        let device_name = get(3).unwrap_or_default().to_owned();
        if device_name.is_empty() || device_name.chars().count() > 64 {
            return Err(error(line, "device_name must be 1–64 characters"));
        }
        let private_key = match get(4) {
            None | Some("") => None,
            Some(text) => Some(
                PrivateKey::from_base64(text)
                    .map_err(|_| error(line, "private_key is not a base64 WireGuard key"))?,
            ),
        };
        rows.push(MappingRow {
            line,
            peer,
            telegram_id,
            paid_until,
            device_name,
            private_key,
        });
    }
    Ok(rows)
}
