//! The Grafana dashboard asks only for metrics the binaries register: every `wgsub_*` series in
//! its queries is `<prefix>_<name>` of a `Registry::with_prefix(prefix)` / `register(name, …)` in
//! a binary's source (with the `_total`, `_bucket`, `_count` or `_sum` a Prometheus exposition
//! adds).

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
fn registered_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for crate_dir in ["operator", "node-agent", "api", "bot"] {
        let mut files = Vec::new();
        rust_files(&repo_root().join(crate_dir).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let prefixes = literals_after(&text, "Registry::with_prefix(");
            for prefix in &prefixes {
                for name in literals_after(&text, ".register(") {
                    names.insert(format!("{prefix}_{name}"));
                }
            }
        }
    }
    names
}

/// The `wgsub_*` series names in a PromQL expression.
fn series_in(expr: &str) -> Vec<String> {
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
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| {
                        series
                            .strip_suffix(suffix)
                            .filter(|f| registered.contains(*f))
                    })
                    .unwrap_or(&series);
                assert!(
                    registered.contains(family),
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
