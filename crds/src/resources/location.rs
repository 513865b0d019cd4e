//! `WgServer.spec.location`: how a server is offered to users as a location — its name in
//! Russian and English, its country and how many users it takes.

use kube::KubeSchema;
use kube::core::Rule;
use serde::{Deserialize, Serialize};

/// Regex of an ISO 3166-1 alpha-2 country code, upper case (`DE`, `NL`).
const COUNTRY_PATTERN: &str = "^[A-Z]{2}$";

/// The ISO 3166-1 alpha-2 codes assigned to countries and territories (249), upper case:
/// what `country` may be. The list is keshvar's (the ISO list, with CLDR's names for each).
/// The schema checks it with a CEL rule rather than an `enum`: a YAML 1.1 reader such as
/// kubectl's takes an unquoted `NO` (Norway) in a list for `false`.
pub fn assigned_countries() -> Vec<String> {
    keshvar::SUPPORTED_ALPHA2_LIST
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A server offered to users. A server without one is never listed and cannot be picked; it
/// still serves the users already on it (and the default server serves everyone who never
/// picked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocationSpec {
    /// The name users see, in Russian and English (e.g. `Франкфурт` / `Frankfurt`).
    pub display_name: DisplayName,
    /// The country, as an assigned ISO 3166-1 alpha-2 code in upper case (e.g. `DE`); users see
    /// its flag and its name in their language beside the display name.
    #[schemars(length(min = 2, max = 2), regex(pattern = COUNTRY_PATTERN))]
    #[x_kube(validation = assigned_country())]
    pub country: String,
    /// The most users the server takes. A user counts while any of their devices (`WgPeer`s)
    /// is on the server, including the devices of an expired subscription kept for its
    /// retention period (they come back on renewal). A full server is shown as full and cannot
    /// be picked; the users on it stay. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub capacity: Option<i32>,
    /// Not offered for now: not listed and cannot be picked; the users on it stay.
    #[serde(default)]
    pub hidden: bool,
}

/// A location's name in the two languages the product speaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct DisplayName {
    /// Russian.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("displayName.ru must not be blank"))]
    pub ru: String,
    /// English.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("displayName.en must not be blank"))]
    pub en: String,
}

/// `country` is an assigned code: `'|AD|AE|…|ZW|'.contains('|' + self + '|')` (a list literal
/// `self in ['AD', …]` says the same, but three times as long it leaves less room under the
/// server's limit on a rule's size).
fn assigned_country() -> Rule {
    Rule::new(format!(
        "'|{}|'.contains('|' + self + '|')",
        assigned_countries().join("|")
    ))
    .message("country must be an assigned ISO 3166-1 alpha-2 code in upper case (e.g. DE)")
}
