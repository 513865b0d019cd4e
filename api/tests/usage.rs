//! Traffic in the api, over HTTP on the real API server (a namespace per test, the chart's
//! RBAC) with real PostgreSQL: `/api/v1/plans` tells each plan's data quota, `/api/v1/me`
//! the period's use against it, what remains, when the period ends, the totals and whether the
//! quota is used up, and each device its own period and total counts (by peer name) — all from
//! the api's caches, which follow the operator's `status.usage` and `QuotaExhausted` without an
//! API-server call on the read.

use axum::http::StatusCode;
use jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use wgsub_crds::VpnSubscription;

mod support;

use support::*;

const GIB: i64 = 1 << 30;
const MIB: i64 = 1 << 20;

/// Writes `status` as the operator would (through the status subresource) and waits until the
/// api's caches show it.
async fn operator_status(h: &Harness, user: i64, status: Value) {
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    let written = subs
        .patch_status(
            &format!("tg-{user}"),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    h.visible(&written).await;
}

/// Gives the user's subscription the plan's 50 GiB quota, as the ledger's sync writes it.
async fn with_quota(h: &Harness, user: i64) {
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    let written = subs
        .patch(
            &format!("tg-{user}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"trafficQuota": {"bytes": 50 * GIB, "periodDays": 30}}})),
        )
        .await
        .unwrap();
    h.visible(&written).await;
}

fn usage_status(period_end: Timestamp, exhausted: bool) -> Value {
    json!({
        "usage": {
            "periodStart": (period_end - SignedDuration::from_hours(24 * 30)).to_string(),
            "periodEnd": period_end.to_string(),
            "periodRxBytes": 10 * GIB,
            "periodTxBytes": 30 * GIB + 512 * MIB,
            "totalRxBytes": 25 * GIB,
            "totalTxBytes": 90 * GIB,
            "devices": [{
                "peer": "tg-801-1",
                "lastRxBytes": 4096,
                "lastTxBytes": 8192,
                "periodRxBytes": 10 * GIB,
                "periodTxBytes": 30 * GIB + 512 * MIB,
                "totalRxBytes": 25 * GIB,
                "totalTxBytes": 90 * GIB,
            }],
        },
        "conditions": [{
            "type": "QuotaExhausted",
            "status": if exhausted { "True" } else { "False" },
            "reason": if exhausted { "QuotaExhausted" } else { "WithinQuota" },
            "message": "",
            "lastTransitionTime": Timestamp::now().to_string(),
        }],
    })
}

#[tokio::test]
async fn plans_tell_their_traffic_quota() {
    let h = harness("usage_plans").await;
    let (status, plans) = h.user_call(800, "GET", "/api/v1/plans", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(plans[0]["id"], "month");
    assert_eq!(plans[0]["trafficGib"], 50);
    assert_eq!(plans[0]["trafficBytes"], 50 * GIB);
    assert_eq!(plans[0]["trafficPeriodDays"], 30);
}

#[tokio::test]
async fn me_shows_the_periods_use_against_the_quota_and_each_devices_share() {
    let h = harness("usage_me").await;
    h.active_user(801).await;
    h.ready_device(801, 2, "main", "10.8.0.99/32", "Laptop")
        .await;

    // Nothing counted yet, no quota: zeros, and neither quota nor remaining.
    let (status, me) = h.user_call(801, "GET", "/api/v1/me", None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let usage = &me["subscription"]["usage"];
    assert_eq!(usage["usedBytes"], 0);
    assert_eq!(usage["quotaBytes"], Value::Null);
    assert_eq!(usage["remainingBytes"], Value::Null);
    assert_eq!(usage["exhausted"], false);
    assert_eq!(me["devices"][0]["totalRxBytes"], 0);

    with_quota(&h, 801).await;
    let period_end: Timestamp = "2027-01-06T00:00:00Z".parse().unwrap();
    operator_status(&h, 801, usage_status(period_end, false)).await;
    let (_, me) = h.user_call(801, "GET", "/api/v1/me", None).await;
    let usage = &me["subscription"]["usage"];
    assert_eq!(usage["quotaBytes"], 50 * GIB);
    assert_eq!(usage["usedBytes"], 40 * GIB + 512 * MIB);
    assert_eq!(usage["remainingBytes"], 9 * GIB + 512 * MIB);
    assert_eq!(usage["periodRxBytes"], 10 * GIB);
    assert_eq!(usage["periodTxBytes"], 30 * GIB + 512 * MIB);
    assert_eq!(usage["periodEnd"], "2027-01-06T00:00:00Z");
    assert_eq!(usage["totalRxBytes"], 25 * GIB);
    assert_eq!(usage["totalTxBytes"], 90 * GIB);
    assert_eq!(usage["exhausted"], false);
    // Each device its own counts, beside its handshake and connection state.
    let devices = me["devices"].as_array().unwrap();
    assert_eq!(devices[0]["name"], "tg-801-1");
    assert_eq!(devices[0]["periodTxBytes"], 30 * GIB + 512 * MIB);
    assert_eq!(devices[0]["totalRxBytes"], 25 * GIB);
    assert!(devices[0].get("lastHandshake").is_some());
    assert!(devices[0].get("connected").is_some());
    assert_eq!(devices[1]["name"], "tg-801-2");
    assert_eq!(
        (
            devices[1]["periodRxBytes"].clone(),
            devices[1]["totalTxBytes"].clone()
        ),
        (json!(0), json!(0)),
        "a device the operator has not counted yet"
    );
    let (_, peers) = h.user_call(801, "GET", "/api/v1/me/peers", None).await;
    assert_eq!(peers[0]["periodRxBytes"], 10 * GIB);

    // Used up: the operator says so, and the user sees it.
    operator_status(&h, 801, usage_status(period_end, true)).await;
    let (_, me) = h.user_call(801, "GET", "/api/v1/me", None).await;
    assert_eq!(me["subscription"]["usage"]["exhausted"], true);
    h.assert_nothing_forbidden();
}
