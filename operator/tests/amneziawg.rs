//! The operator choosing AmneziaWG parameters (`wgsub_operator::amnezia::run`, what the leader
//! runs beside the Controller) against the real API server, as the chart's `wgsub-operator`
//! ServiceAccount under the Roles the chart renders: an AmneziaWG server created without
//! (complete) parameters gets a valid set written into its spec — the values it was given
//! kept, AWG 1.0 unless it opts into 1.5 — and then never another: a GitOps re-apply of the
//! manifest without them keeps them, later events write nothing, a write from a stale read is
//! refused by the server, and a value the user changes on purpose stays theirs. A WireGuard
//! server is never written. Nothing the operator calls is refused by the chart's RBAC.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wgsub_crds::WgServer;
use wgsub_crds::amnezia::{AmneziaParams, validate};
use wgsub_crds::resources::AmneziaVersion;
use wgsub_operator::amnezia::{EnsureError, Outcome, ensure, run};
use wgsub_operator::patches::FIELD_MANAGER;
use wgsub_testkit::chart::{apply_chart_rbac, assert_nothing_forbidden, component_client};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::process::eventually;

const WITHIN: Duration = Duration::from_secs(20);
/// The field manager of the GitOps tool that applies the servers' manifests.
const GITOPS: &str = "gitops";

fn manifest(name: &str, spec: Value) -> Value {
    let mut full = json!({
        "endpoint": "vpn.example.com:51821",
        "addressPool": "10.9.0.0/24",
        "privateKeySecretRef": {"name": format!("{name}-key")},
    });
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    json!({
        "apiVersion": "wgsub.io/v1alpha1",
        "kind": "WgServer",
        "metadata": {"name": name},
        "spec": full,
    })
}

async fn apply(api: &Api<WgServer>, manager: &str, object: &Value, force: bool) -> WgServer {
    let params = PatchParams::apply(manager);
    let params = if force { params.force() } else { params };
    let name = object["metadata"]["name"].as_str().unwrap();
    api.patch(name, &params, &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("{manager} applying {name}: {e}"))
}

/// The server's complete, valid parameters once the operator has chosen them.
async fn chosen(api: &Api<WgServer>, name: &str) -> AmneziaParams {
    eventually(&format!("{name} gets its parameters"), WITHIN, async || {
        api.get(name).await.ok()?.spec.amneziawg_params()
    })
    .await
}

/// Which managers own `spec.amneziawg.<field>` of `server`.
fn owners(server: &WgServer, field: &str) -> Vec<String> {
    let key = format!("f:{field}");
    server
        .managed_fields()
        .iter()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0["f:spec"]["f:amneziawg"].get(&key).is_some())
        })
        .filter_map(|entry| entry.manager.clone())
        .collect()
}

#[tokio::test]
async fn an_amneziawg_server_gets_its_parameters_once_and_keeps_them() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("operator-amneziawg").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let admin: Api<WgServer> = Api::namespaced(plane.admin_client(), &ns);
    let operator: Client = component_client(plane, &ns, "operator").await;

    // The GitOps tool applies three servers: AmneziaWG with only the junk count given, an
    // AWG 1.5 one with nothing given, and a WireGuard one.
    let awg = manifest(
        "awg",
        json!({"protocol": "amneziawg", "amneziawg": {"jc": 5}}),
    );
    let awg15 = manifest(
        "awg15",
        json!({"protocol": "amneziawg", "amneziawg": {"version": "1.5"}, "mtu": 1380}),
    );
    let plain = manifest("plain", json!({}));
    let before = apply(&admin, GITOPS, &awg, false).await;
    apply(&admin, GITOPS, &awg15, false).await;
    apply(&admin, GITOPS, &plain, false).await;

    let term = CancellationToken::new();
    let task = tokio::spawn(run(operator.clone(), Some(ns.clone()), {
        let term = term.clone();
        async move { term.cancelled().await }
    }));

    let first = chosen(&admin, "awg").await;
    assert_eq!(first.version, AmneziaVersion::V1_0);
    assert_eq!(first.jc, 5, "a given value is kept");
    assert_eq!((first.s3, first.s4), (0, 0));
    let stored = admin.get("awg").await.unwrap();
    assert_eq!(validate(&stored.spec), vec![]);
    let block = stored.spec.amneziawg.clone().unwrap();
    assert!(block.s3.is_none() && block.s4.is_none() && block.i1.is_none());
    assert_eq!(owners(&stored, "h1"), [FIELD_MANAGER]);
    assert_eq!(owners(&stored, "jc"), [GITOPS, FIELD_MANAGER]);

    let v15 = chosen(&admin, "awg15").await;
    assert_eq!(v15.version, AmneziaVersion::V1_5);
    assert!(v15.s3 > 0);
    assert_eq!(v15.s4, 0);

    // The GitOps tool re-applies its manifests, unchanged: the parameters stay (its apply
    // touches only its own fields), and the events that follow write nothing.
    apply(&admin, GITOPS, &awg, false).await;
    apply(&admin, GITOPS, &with_dns(&awg), false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = admin.get("awg").await.unwrap();
    assert_eq!(again.spec.amneziawg_params(), Some(first.clone()));
    assert_eq!(again.spec.dns, ["1.1.1.1"]);
    assert_eq!(
        ensure(&operator, &again).await.unwrap(),
        Outcome::Complete,
        "a complete server is not written"
    );

    // A write from a read older than the parameters is refused by the server.
    match ensure(&operator, &before).await {
        Err(EnsureError::Kube(kube::Error::Api(status))) => {
            assert_eq!(status.code, 409, "{}", status.message)
        }
        other => panic!("a stale write: {other:?}"),
    }
    assert_eq!(
        admin.get("awg").await.unwrap().spec.amneziawg_params(),
        Some(first.clone())
    );

    // The user changes h1 on purpose (taking it over from the operator): it stays.
    let mut deliberate = awg.clone();
    deliberate["spec"]["amneziawg"]["h1"] = json!((first.h1.start ^ 1).to_string());
    let changed = apply(&admin, GITOPS, &deliberate, true).await;
    assert_eq!(owners(&changed, "h1"), [GITOPS]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = admin
        .get("awg")
        .await
        .unwrap()
        .spec
        .amneziawg_params()
        .unwrap();
    assert_eq!(kept.h1.start, first.h1.start ^ 1);
    assert_eq!(kept.h2, first.h2);

    let plain = admin.get("plain").await.unwrap();
    assert!(plain.spec.amneziawg.is_none());
    assert!(
        plain
            .managed_fields()
            .iter()
            .all(|entry| entry.manager.as_deref() != Some(FIELD_MANAGER)),
        "a WireGuard server is never written"
    );

    term.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
    assert_nothing_forbidden(plane, &ns, "operator");
}

fn with_dns(manifest: &Value) -> Value {
    let mut changed = manifest.clone();
    changed["spec"]["dns"] = json!(["1.1.1.1"]);
    changed
}
