//! The chart's optional PrometheusRule (`prometheusRule.enabled`): rendered only when asked,
//! every expression reads only series a wgsub binary registers (or Prometheus' own `up`), the
//! real `promtool` (path in `WGSUB_PROMTOOL`, default `promtool`) accepts the rules, and its
//! rule unit tests prove the alerts fire on the series the binaries export — and stay quiet
//! when things are fine.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::dashboard::{family_of, registered_metrics, series_in};
use crate::support::{find, of_kind, render};

/// PromQL functions, aggregations and keywords the rules use; any other bare word outside
/// `{…}`, `[…]` and `by (…)` would be a metric name.
const PROMQL_WORDS: &[&str] = &[
    "sum", "max", "min", "increase", "rate", "time", "vector", "by", "and", "or", "unless",
];

fn alerts_rule(sets: &[&str]) -> Value {
    let mut all = vec!["prometheusRule.enabled=true"];
    all.extend_from_slice(sets);
    let docs = render(&all);
    find(&docs, "PrometheusRule", "wgsub-alerts").clone()
}

fn rules_of(rule: &Value) -> Vec<&Value> {
    rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules"))
        .collect()
}

fn alert_names(rule: &Value) -> BTreeSet<String> {
    rules_of(rule)
        .iter()
        .map(|r| r["alert"].as_str().expect("an alert name").to_owned())
        .collect()
}

/// `expr` without label matchers, ranges and grouping lists.
fn bare(expr: &str) -> String {
    let mut out = String::new();
    let mut skip_until: Option<char> = None;
    let mut rest = expr;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        if let Some(end) = skip_until {
            if c == end {
                skip_until = None;
            }
            continue;
        }
        match c {
            '{' => skip_until = Some('}'),
            '[' => skip_until = Some(']'),
            _ => out.push(c),
        }
    }
    // `by (a, b)` lists label names.
    while let Some(at) = out.find("by (") {
        let end = out[at..].find(')').map_or(out.len(), |e| at + e + 1);
        out.replace_range(at..end, " ");
    }
    out
}

/// The metric names an expression reads: bare words that are not PromQL's own.
fn metric_names(expr: &str) -> BTreeSet<String> {
    bare(expr)
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty() && !w.starts_with(|c: char| c.is_ascii_digit()))
        .filter(|w| !PROMQL_WORDS.contains(w))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_rule_renders_only_when_enabled_and_no_payments_can_be_turned_off() {
    assert!(
        of_kind(&render(&[]), "PrometheusRule").is_empty(),
        "no PrometheusRule with default values"
    );
    let rule = alerts_rule(&["prometheusRule.labels.release=kube-prometheus-stack"]);
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let names = alert_names(&rule);
    for expected in [
        "WgsubWebhookFailing",
        "WgsubWebhookRejectionsRising",
        "WgsubYooKassaErrors",
        "WgsubNoPayments",
        "WgsubLedgerDriftNotRepaired",
        "WgsubOperatorReconcileErrors",
        "WgsubOperatorNoLeader",
        "WgsubNodeAgentNotReady",
        "WgsubPeersNotApplied",
        "WgsubTargetDown",
    ] {
        assert!(names.contains(expected), "{expected} missing: {names:?}");
    }
    let without = alert_names(&alerts_rule(&["prometheusRule.noPaymentsHours=0"]));
    assert!(!without.contains("WgsubNoPayments"), "{without:?}");
    assert_eq!(without.len(), names.len() - 1);
}

#[test]
fn every_alert_reads_only_metrics_the_binaries_register_in_the_release_namespace() {
    let registered = registered_metrics();
    let rule = alerts_rule(&["prometheusRule.alertLabels.team=vpn"]);
    let mut wgsub_series = 0;
    for rule in rules_of(&rule) {
        let alert = rule["alert"].as_str().unwrap();
        let expr = rule["expr"].as_str().expect("an expression");
        for name in metric_names(expr) {
            if name == "up" {
                continue;
            }
            assert!(
                family_of(&name, &registered).is_some(),
                "{alert} reads {name}, which no binary registers"
            );
        }
        for series in series_in(expr) {
            wgsub_series += 1;
            assert!(
                family_of(&series, &registered).is_some(),
                "{alert} reads {series}, which no binary registers"
            );
        }
        // Every selector is scoped to the release's namespace.
        let selectors = expr.matches('{').count();
        assert!(selectors > 0, "{alert}: {expr}");
        assert_eq!(
            expr.matches("namespace=\"wgsub\"").count(),
            selectors,
            "{alert} reads a series outside the release's namespace: {expr}"
        );
        assert!(
            ["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap()),
            "{alert}"
        );
        assert_eq!(rule["labels"]["team"], "vpn", "{alert}");
        assert!(rule["annotations"]["summary"].is_string(), "{alert}");
    }
    assert!(wgsub_series >= 10, "{wgsub_series} wgsub series");
}

#[test]
fn the_metric_name_scan_skips_promql_words_matchers_and_groupings() {
    assert_eq!(
        metric_names(
            "sum by (reason, pod) (increase(wgsub_a_total{x=\"y\"}[5m])) or vector(0) > 0 \
             and time() - max(up{job=~\"a-.*\"}) > 3600"
        ),
        BTreeSet::from(["wgsub_a_total".to_owned(), "up".to_owned()])
    );
}

fn promtool() -> PathBuf {
    std::env::var_os("WGSUB_PROMTOOL").map_or_else(|| PathBuf::from("promtool"), PathBuf::from)
}

/// Runs promtool with `args` in `dir`; fails the test with promtool's output when it fails.
pub fn run_promtool(args: &[&str], dir: &std::path::Path) -> String {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool ({}) does not run: {e}; scripts/install-test-deps installs it \
                 (Debian package prometheus)",
                promtool().display()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// promtool's rule unit tests: series as the binaries export them (with the `namespace` and
/// `pod` labels a ServiceMonitor adds), and the alerts expected at each moment.
const UNIT_TESTS: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  # The latest payment is 1 s after the epoch: quiet before 24 h, firing after.
  - interval: 1m
    input_series:
      - series: 'wgsub_api_ledger_last_payment_timestamp_seconds{namespace="wgsub",pod="api-a"}'
        values: '1x1800'
      - series: 'wgsub_api_ledger_last_payment_timestamp_seconds{namespace="wgsub",pod="api-b"}'
        values: '1x1800'
    alert_rule_test:
      - eval_time: 23h
        alertname: WgsubNoPayments
        exp_alerts: []
      - eval_time: 25h
        alertname: WgsubNoPayments
        exp_alerts:
          - exp_labels: {severity: warning}
  # A fresh install that never had a payment does not page.
  - interval: 1m
    input_series:
      - series: 'wgsub_api_ledger_last_payment_timestamp_seconds{namespace="wgsub",pod="api-a"}'
        values: '0x1900'
    alert_rule_test:
      - eval_time: 30h
        alertname: WgsubNoPayments
        exp_alerts: []
  # One agent never becomes ready, the other does.
  - interval: 1m
    input_series:
      - series: 'wgsub_node_agent_ready{namespace="wgsub",pod="agent-a"}'
        values: '0x30'
      - series: 'wgsub_node_agent_ready{namespace="wgsub",pod="agent-b"}'
        values: '0 0 1x28'
    alert_rule_test:
      - eval_time: 5m
        alertname: WgsubNodeAgentNotReady
        exp_alerts: []
      - eval_time: 20m
        alertname: WgsubNodeAgentNotReady
        exp_alerts:
          - exp_labels: {severity: critical, pod: agent-a}
  # Webhooks answered 503 every minute; another namespace's errors do not count.
  - interval: 1m
    input_series:
      - series: 'wgsub_api_http_requests_total{namespace="wgsub",pod="api-a",route="/api/v1/webhooks/yookassa",method="POST",status="503"}'
        values: '0+1x40'
      - series: 'wgsub_api_http_requests_total{namespace="wgsub",pod="api-a",route="/api/v1/webhooks/yookassa",method="POST",status="200"}'
        values: '0+5x40'
      - series: 'wgsub_api_payments_total{namespace="other",pod="api-x",status="provider_error"}'
        values: '0+1x40'
    alert_rule_test:
      - eval_time: 30m
        alertname: WgsubWebhookFailing
        exp_alerts:
          - exp_labels: {severity: critical}
      - eval_time: 30m
        alertname: WgsubYooKassaErrors
        exp_alerts: []
  # YooKassa errors seen only when creating payments (no webhook rejection series at all).
  - interval: 1m
    input_series:
      - series: 'wgsub_api_payments_total{namespace="wgsub",pod="api-a",status="provider_error"}'
        values: '0+1x40'
    alert_rule_test:
      - eval_time: 30m
        alertname: WgsubYooKassaErrors
        exp_alerts:
          - exp_labels: {severity: warning}
  # Leaders: one, then none.
  - interval: 1m
    input_series:
      - series: 'wgsub_operator_leader{namespace="wgsub",pod="operator-a"}'
        values: '1x10 0x20'
      - series: 'wgsub_operator_leader{namespace="wgsub",pod="operator-b"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 9m
        alertname: WgsubOperatorNoLeader
        exp_alerts: []
      - eval_time: 20m
        alertname: WgsubOperatorNoLeader
        exp_alerts:
          - exp_labels: {severity: critical}
  # Reconcile errors by reason, apply errors, failed ledger writes, rejections, a target down.
  - interval: 1m
    input_series:
      - series: 'wgsub_operator_reconcile_errors_total{namespace="wgsub",pod="operator-a",reason="PoolExhausted"}'
        values: '0+1x40'
      - series: 'wgsub_node_agent_apply_errors_total{namespace="wgsub",pod="agent-a",interface="wg0"}'
        values: '0+1x40'
      - series: 'wgsub_api_subscription_syncs_total{namespace="wgsub",pod="api-a",status="failed"}'
        values: '0+1x40'
      - series: 'wgsub_api_webhook_rejections_total{namespace="wgsub",pod="api-a",reason="forbidden_address"}'
        values: '0+2x40'
      - series: 'up{namespace="wgsub",pod="bot-a",job="wgsub-bot-metrics"}'
        values: '0x40'
      - series: 'up{namespace="wgsub",pod="api-a",job="wgsub-api"}'
        values: '1x40'
    alert_rule_test:
      - eval_time: 35m
        alertname: WgsubOperatorReconcileErrors
        exp_alerts:
          - exp_labels: {severity: warning, reason: PoolExhausted}
      - eval_time: 35m
        alertname: WgsubPeersNotApplied
        exp_alerts:
          - exp_labels: {severity: critical, pod: agent-a, interface: wg0}
      - eval_time: 35m
        alertname: WgsubLedgerDriftNotRepaired
        exp_alerts:
          - exp_labels: {severity: warning}
      - eval_time: 35m
        alertname: WgsubWebhookRejectionsRising
        exp_alerts:
          - exp_labels: {severity: warning}
      - eval_time: 35m
        alertname: WgsubTargetDown
        exp_alerts:
          - exp_labels: {severity: warning, namespace: wgsub, pod: bot-a, job: wgsub-bot-metrics}
"#;

#[test]
fn promtool_accepts_the_rules_and_the_alerts_fire_on_the_binaries_series() {
    let rule = alerts_rule(&[]);
    let dir = tempfile::tempdir().unwrap();
    let groups = &rule["spec"]["groups"];
    let full = serde_yaml::to_string(&serde_json::json!({ "groups": groups })).unwrap();
    std::fs::write(dir.path().join("full.yaml"), full).unwrap();
    let checked = run_promtool(&["check", "rules", "full.yaml"], dir.path());
    assert!(checked.contains("SUCCESS"), "{checked}");

    // The unit tests compare labels only: annotations (prose) are left out of their copy.
    let mut bare_groups = groups.clone();
    for group in bare_groups.as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            rule.as_object_mut().unwrap().remove("annotations");
        }
    }
    let rules = serde_yaml::to_string(&serde_json::json!({ "groups": bare_groups })).unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    std::fs::write(dir.path().join("tests.yaml"), UNIT_TESTS).unwrap();
    let tested = run_promtool(&["test", "rules", "tests.yaml"], dir.path());
    assert!(tested.contains("SUCCESS"), "{tested}");
}
