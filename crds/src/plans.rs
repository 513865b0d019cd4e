//! The plan catalogue: what can be bought, for how long, for how much and for how many devices.
//! Read from YAML or JSON and validated with errors that name the bad field.

use std::collections::BTreeSet;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::resources::TrafficQuota;

/// A text in the two languages the product speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalizedText {
    pub ru: String,
    pub en: String,
}

impl LocalizedText {
    /// The text for a Telegram `language_code`: English for `en*`, Russian otherwise.
    pub fn for_language(&self, language_code: Option<&str>) -> &str {
        match language_code {
            Some(code) if code.to_ascii_lowercase().starts_with("en") => &self.en,
            _ => &self.ru,
        }
    }
}

/// One plan a user can buy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    /// Stable id used in payments and in `VpnSubscription.spec.plan`.
    pub id: String,
    pub title: LocalizedText,
    /// How many days one purchase adds.
    pub days: u32,
    /// Price in minor units (kopecks for RUB).
    pub price_minor: i64,
    /// ISO 4217 code, e.g. `RUB`.
    pub currency: String,
    /// How many devices the plan allows.
    pub devices: u8,
    /// Price in Telegram Stars (`XTR`, whole stars); absent when the plan is not sold for Stars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_stars: Option<u32>,
    /// Traffic (received plus sent, in GiB) one purchase allows per period of `days`; absent
    /// when the plan has no data quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_gib: Option<u32>,
}

impl Plan {
    /// The time one purchase adds.
    pub fn duration(&self) -> SignedDuration {
        SignedDuration::from_hours(24 * i64::from(self.days))
    }

    /// The data quota the plan gives a subscription: `trafficGib` GiB per period of `days`;
    /// `None` when the plan has no quota.
    pub fn traffic_quota(&self) -> Option<TrafficQuota> {
        self.traffic_gib.map(|gib| TrafficQuota {
            bytes: i64::from(gib) << 30,
            period_days: i32::try_from(self.days).unwrap_or(i32::MAX),
        })
    }

    /// The price as YooKassa wants it: a decimal string with two fraction digits.
    pub fn price_decimal(&self) -> String {
        format!("{}.{:02}", self.price_minor / 100, self.price_minor % 100)
    }
}

/// A plan catalogue field that failed validation, named by its path (`plans[1].priceMinor`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("plan catalogue does not parse: {0}")]
    Parse(String),
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
}

/// The validated list of plans, in the order they are offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCatalogue {
    plans: Vec<Plan>,
}

/// The most Telegram accepts for one payment in Stars.
pub const MAX_PRICE_STARS: u32 = 10_000;

/// The largest data quota a plan may give, in GiB per period (about a pebibyte).
pub const MAX_TRAFFIC_GIB: u32 = 1_000_000;

const ID_PATTERN_HELP: &str =
    "1–32 characters of a-z, 0-9 and '-', starting with a letter or digit";

impl PlanCatalogue {
    /// Validates a list of plans.
    pub fn new(plans: Vec<Plan>) -> Result<Self, PlanError> {
        let invalid = |index: usize, field: &str, problem: String| PlanError::Invalid {
            field: format!("plans[{index}].{field}"),
            problem,
        };
        if plans.is_empty() {
            return Err(PlanError::Invalid {
                field: "plans".into(),
                problem: "at least one plan is needed".into(),
            });
        }
        let mut ids = BTreeSet::new();
        for (index, plan) in plans.iter().enumerate() {
            // The same rule as `VpnSubscription.spec.plan`'s schema pattern.
            let id_ok = (1..=32).contains(&plan.id.len())
                && !plan.id.starts_with('-')
                && plan
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !id_ok {
                return Err(invalid(
                    index,
                    "id",
                    format!("{:?} is not {ID_PATTERN_HELP}", plan.id),
                ));
            }
            if !ids.insert(plan.id.as_str()) {
                return Err(invalid(
                    index,
                    "id",
                    format!("{:?} is used by an earlier plan", plan.id),
                ));
            }
            if plan.title.ru.trim().is_empty() {
                return Err(invalid(index, "title.ru", "must not be empty".into()));
            }
            if plan.title.en.trim().is_empty() {
                return Err(invalid(index, "title.en", "must not be empty".into()));
            }
            if plan.days == 0 || plan.days > 3660 {
                return Err(invalid(
                    index,
                    "days",
                    format!("must be 1–3660, got {}", plan.days),
                ));
            }
            if plan.price_minor <= 0 {
                return Err(invalid(
                    index,
                    "priceMinor",
                    format!("must be positive, got {}", plan.price_minor),
                ));
            }
            if plan.currency.len() != 3 || !plan.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(invalid(
                    index,
                    "currency",
                    format!("{:?} is not an ISO 4217 code such as RUB", plan.currency),
                ));
            }
            if !(1..=10).contains(&plan.devices) {
                return Err(invalid(
                    index,
                    "devices",
                    format!("must be 1–10, got {}", plan.devices),
                ));
            }
            if let Some(stars) = plan.price_stars
                && !(1..=MAX_PRICE_STARS).contains(&stars)
            {
                return Err(invalid(
                    index,
                    "priceStars",
                    format!("must be 1–{MAX_PRICE_STARS} stars, got {stars}"),
                ));
            }
            if let Some(gib) = plan.traffic_gib
                && !(1..=MAX_TRAFFIC_GIB).contains(&gib)
            {
                return Err(invalid(
                    index,
                    "trafficGib",
                    format!("must be 1–{MAX_TRAFFIC_GIB} GiB, got {gib}"),
                ));
            }
        }
        Ok(Self { plans })
    }

    /// Reads `plans:` from YAML.
    pub fn from_yaml_str(text: &str) -> Result<Self, PlanError> {
        let raw: PlanCatalogue =
            serde_yaml::from_str(text).map_err(|e| PlanError::Parse(e.to_string()))?;
        Self::new(raw.plans)
    }

    /// Reads `{"plans": [...]}` from JSON.
    pub fn from_json_str(text: &str) -> Result<Self, PlanError> {
        let raw: PlanCatalogue =
            serde_json::from_str(text).map_err(|e| PlanError::Parse(e.to_string()))?;
        Self::new(raw.plans)
    }

    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    pub fn get(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|plan| plan.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/plans.yaml");

    fn field_of(result: Result<PlanCatalogue, PlanError>) -> String {
        match result {
            Err(PlanError::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    fn with(edit: impl FnOnce(&mut Plan)) -> Result<PlanCatalogue, PlanError> {
        let mut plans = PlanCatalogue::from_yaml_str(EXAMPLE).unwrap().plans;
        edit(&mut plans[1]);
        PlanCatalogue::new(plans)
    }

    #[test]
    fn the_example_catalogue_is_valid() {
        let catalogue = PlanCatalogue::from_yaml_str(EXAMPLE).unwrap();
        assert!(catalogue.plans().len() >= 2);
        let first = &catalogue.plans()[0];
        assert_eq!(catalogue.get(&first.id), Some(first));
        assert_eq!(catalogue.get("no-such-plan"), None);
    }

    #[test]
    fn json_and_yaml_read_the_same_catalogue() {
        let yaml = PlanCatalogue::from_yaml_str(EXAMPLE).unwrap();
        let json = serde_json::to_string(&yaml).unwrap();
        assert_eq!(PlanCatalogue::from_json_str(&json).unwrap(), yaml);
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(field_of(with(|p| p.price_minor = 0)), "plans[1].priceMinor");
        assert_eq!(
            field_of(with(|p| p.price_minor = -5)),
            "plans[1].priceMinor"
        );
        assert_eq!(field_of(with(|p| p.days = 0)), "plans[1].days");
        assert_eq!(field_of(with(|p| p.devices = 0)), "plans[1].devices");
        assert_eq!(field_of(with(|p| p.devices = 11)), "plans[1].devices");
        assert_eq!(
            field_of(with(|p| p.currency = "rub".into())),
            "plans[1].currency"
        );
        assert_eq!(field_of(with(|p| p.id = "Bad Id".into())), "plans[1].id");
        assert_eq!(field_of(with(|p| p.id = "-month".into())), "plans[1].id");
        assert_eq!(field_of(with(|p| p.id = "a_b".into())), "plans[1].id");
        assert_eq!(field_of(with(|p| p.id = "x".repeat(33))), "plans[1].id");
        assert_eq!(
            field_of(with(|p| p.title.en = " ".into())),
            "plans[1].title.en"
        );
        assert_eq!(field_of(PlanCatalogue::new(vec![])), "plans");
        assert_eq!(
            field_of(with(|p| p.price_stars = Some(0))),
            "plans[1].priceStars"
        );
        assert_eq!(
            field_of(with(|p| p.price_stars = Some(MAX_PRICE_STARS + 1))),
            "plans[1].priceStars"
        );
    }

    #[test]
    fn a_stars_price_is_optional_and_read_from_price_stars() {
        let catalogue = PlanCatalogue::from_yaml_str(EXAMPLE).unwrap();
        assert!(catalogue.plans().iter().any(|p| p.price_stars.is_some()));
        assert!(catalogue.plans().iter().any(|p| p.price_stars.is_none()));
        let yaml = "plans: [{id: m, title: {ru: М, en: M}, days: 30, priceMinor: 100, \
                    currency: RUB, devices: 1, priceStars: 150}]";
        let plans = PlanCatalogue::from_yaml_str(yaml).unwrap();
        assert_eq!(plans.plans()[0].price_stars, Some(150));
        assert!(with(|p| p.price_stars = Some(MAX_PRICE_STARS)).is_ok());
        assert!(with(|p| p.price_stars = None).is_ok());
    }

    #[test]
    fn a_traffic_quota_is_optional_and_bounded() {
        assert_eq!(
            field_of(with(|p| p.traffic_gib = Some(0))),
            "plans[1].trafficGib"
        );
        assert_eq!(
            field_of(with(|p| p.traffic_gib = Some(MAX_TRAFFIC_GIB + 1))),
            "plans[1].trafficGib"
        );
        assert!(with(|p| p.traffic_gib = Some(MAX_TRAFFIC_GIB)).is_ok());
        assert!(with(|p| p.traffic_gib = None).is_ok());
        let yaml = "plans: [{id: m, title: {ru: М, en: M}, days: 30, priceMinor: 100, \
                    currency: RUB, devices: 1, trafficGib: 50}]";
        let plans = PlanCatalogue::from_yaml_str(yaml).unwrap();
        assert_eq!(plans.plans()[0].traffic_gib, Some(50));
    }

    #[test]
    fn the_traffic_quota_is_gib_in_bytes_per_period_of_the_plan_days() {
        let mut plan = with(|_| {}).unwrap().plans()[1].clone();
        plan.days = 30;
        plan.traffic_gib = None;
        assert_eq!(plan.traffic_quota(), None);
        plan.traffic_gib = Some(50);
        assert_eq!(
            plan.traffic_quota(),
            Some(TrafficQuota {
                bytes: 50 * 1024 * 1024 * 1024,
                period_days: 30
            })
        );
        plan.traffic_gib = Some(MAX_TRAFFIC_GIB);
        assert_eq!(
            plan.traffic_quota().map(|q| q.bytes),
            Some(1_000_000 * (1_i64 << 30))
        );
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let mut plans = PlanCatalogue::from_yaml_str(EXAMPLE).unwrap().plans;
        plans[1].id = plans[0].id.clone();
        let err = PlanCatalogue::new(plans).unwrap_err();
        assert!(err.to_string().starts_with("plans[1].id:"), "{err}");
    }

    #[test]
    fn unknown_fields_and_bad_syntax_are_parse_errors() {
        assert!(matches!(
            PlanCatalogue::from_yaml_str("plans: [{id: x, colour: red}]"),
            Err(PlanError::Parse(_))
        ));
        assert!(matches!(
            PlanCatalogue::from_json_str("{"),
            Err(PlanError::Parse(_))
        ));
    }

    #[test]
    fn price_and_duration_helpers() {
        let plan = with(|_| {}).unwrap().plans()[1].clone();
        let mut p = plan.clone();
        p.price_minor = 19_905;
        assert_eq!(p.price_decimal(), "199.05");
        p.price_minor = 7;
        assert_eq!(p.price_decimal(), "0.07");
        p.days = 30;
        assert_eq!(p.duration(), SignedDuration::from_hours(720));
    }

    #[test]
    fn titles_follow_the_language_code() {
        let text = LocalizedText {
            ru: "Месяц".into(),
            en: "Month".into(),
        };
        assert_eq!(text.for_language(Some("en-US")), "Month");
        assert_eq!(text.for_language(Some("ru")), "Месяц");
        assert_eq!(text.for_language(Some("de")), "Месяц");
        assert_eq!(text.for_language(None), "Месяц");
    }
}
