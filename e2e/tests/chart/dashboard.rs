//! The Grafana dashboard asks only for metrics the binaries register: every `wgsub_*` series in
//! its queries is `<prefix>_<name>` of a `wgsub_runtime::metrics::registry(prefix)` (or
//! `Registry::with_prefix(prefix)`) / `register(name, …)` in a binary's source, or of what
//! `wgsub_runtime` registers in such a registry (`build_info` always, the leader gauges where the
//! binary calls `LeaderMetrics::register`), with the `_total`, `_bucket`, `_count` or `_sum` a
//! Prometheus exposition adds; every query parses as PromQL (promtool), and the business panels
//! are there.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::support::{chart_dir, repo_root};

/// The string literals that follow `marker` in `text`.
fn literals_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    text.match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = text[at + marker.len()..].trim_start();
            let rest = rest.strip_prefix('"')?;
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every metric family the binaries register, with its prefix.
pub fn registered_metrics() -> BTreeSet<String> {
    let runtime =
        |file: &str| std::fs::read_to_string(repo_root().join("runtime/src").join(file)).unwrap();
    let (every_registry, leader) = (runtime("metrics.rs"), runtime("lease.rs"));
    let mut names = BTreeSet::new();
    for crate_dir in ["operator", "node-agent", "api", "bot"] {
        let mut files = Vec::new();
        rust_files(&repo_root().join(crate_dir).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let mut prefixes = literals_after(&text, "Registry::with_prefix(");
            prefixes.extend(literals_after(&text, "metrics::registry("));
            for prefix in &prefixes {
                let mut registered = literals_after(&text, ".register(");
                registered.extend(literals_after(&every_registry, ".register("));
                if text.contains("LeaderMetrics::register(") {
                    registered.extend(literals_after(&leader, ".register("));
                }
                for name in registered {
                    names.insert(format!("{prefix}_{name}"));
                }
            }
        }
    }
    names
}

/// The `wgsub_*` series names in a PromQL expression.
pub fn series_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in expr.match_indices("wgsub_") {
        if at > 0 && expr.as_bytes()[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let name: String = expr[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

/// The registered family `series` belongs to: the series itself, or the series less the
/// `_total`, `_bucket`, `_count` or `_sum` the exposition adds; `None` when no binary has it.
pub fn family_of<'a>(series: &'a str, registered: &BTreeSet<String>) -> Option<&'a str> {
    std::iter::once(series)
        .chain(
            ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .filter_map(|suffix| series.strip_suffix(suffix)),
        )
        .find(|family| registered.contains(*family))
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(chart_dir().join("files/dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("files/dashboard.json is JSON")
}

#[test]
fn the_dashboard_queries_only_metrics_the_binaries_register() {
    let registered = registered_metrics();
    assert!(
        registered.contains("wgsub_operator_reconciles"),
        "the metric scan finds the operator's metrics: {registered:?}"
    );
    let dashboard = dashboard();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            for series in series_in(expr) {
                queried += 1;
                assert!(
                    family_of(&series, &registered).is_some(),
                    "panel {:?} queries {series}, which no binary registers",
                    panel["title"]
                );
            }
        }
    }
    assert!(
        queried >= 10,
        "the dashboard shows the product's metrics ({queried} series)"
    );
}

#[test]
fn every_panel_has_a_unique_id_and_a_place() {
    let dashboard = dashboard();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_i64().expect("an id")),
            "duplicate id {}",
            panel["id"]
        );
        for field in ["x", "y", "w", "h"] {
            assert!(
                panel["gridPos"][field].is_i64(),
                "panel {} lacks gridPos.{field}",
                panel["id"]
            );
        }
    }
    assert_eq!(dashboard["uid"], "wgsub");
}

#[test]
fn the_series_scan_finds_names_and_skips_lookalikes() {
    assert_eq!(
        series_in("sum(rate(wgsub_a_total{x=\"y\"}[5m])) / max(xwgsub_b) + wgsub_c"),
        ["wgsub_a_total", "wgsub_c"]
    );
}

/// Every panel query of the dashboard, `$namespace` filled in.
fn queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$namespace", "wgsub"),
            ));
        }
    }
    out
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let rules: Vec<Value> = queries()
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("wgsub:panel_query_{i}"), "expr": expr}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("queries.yaml"),
        serde_yaml::to_string(&file).unwrap(),
    )
    .unwrap();
    let checked = crate::alerts::run_promtool(&["check", "rules", "queries.yaml"], dir.path());
    assert!(checked.contains("SUCCESS"), "{checked}");
}

#[test]
fn the_business_panels_read_the_ledger_and_the_operator() {
    let queries = queries();
    for (topic, series) in [
        ("Active subscriptions", "wgsub_api_ledger_users"),
        ("New users", "wgsub_api_ledger_new_users_24h"),
        ("Revenue per day", "wgsub_api_ledger_revenue_24h_minor"),
        ("renewals", "wgsub_api_ledger_payments_24h"),
        ("Peers per server", "wgsub_operator_pool_addresses_used"),
        ("Build", "wgsub_api_build_info"),
    ] {
        assert!(
            queries
                .iter()
                .any(|(title, expr)| title.contains(topic) && expr.contains(series)),
            "no panel {topic:?} reading {series}"
        );
    }
}
