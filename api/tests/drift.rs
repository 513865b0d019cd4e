//! The API's drift loop as the binary runs it (`system::drift_loop`), on the real API server as
//! the chart's `wgsub-api` ServiceAccount with a real PostgreSQL: a subscription never written,
//! one edited with `kubectl edit` and one deleted are each repaired within the drift interval, a
//! user who never paid gets none, and the loop ends on its stop token. (The pass itself, and
//! that it writes nothing when nothing differs, is tested in the ledger crate.)

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;
use wgsub_api::metrics::Metrics;
use wgsub_api::qr::QrCache;
use wgsub_api::{AppState, KubeApis, Settings, clientip, system};
use wgsub_crds::VpnSubscription;
use wgsub_crds::plans::PlanCatalogue;
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::{AdminGrant, Ledger, TelegramUser, YooKassa, YooKassaConfig};
use wgsub_testkit::chart::{apply_chart_rbac, assert_nothing_forbidden, component_client};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::process::eventually;
use zeroize::Zeroizing;

const INTERVAL: Duration = Duration::from_millis(500);
/// The interval plus room for a watch event and a loaded machine.
const WITHIN: Duration = Duration::from_secs(15);

fn state(ledger: Ledger, client: kube::Client, namespace: &str) -> Arc<AppState> {
    Arc::new(AppState {
        ledger,
        // Never called by the drift loop.
        yookassa: YooKassa::new(YooKassaConfig {
            api_base: "http://127.0.0.1:9/v3".into(),
            shop_id: "1".into(),
            secret_key: Zeroizing::new("unused".into()),
            timeout: Duration::from_secs(1),
            max_attempts: 1,
            retry_backoff: Duration::from_millis(5),
        })
        .unwrap(),
        caches: wgsub_api::state::api_caches(
            client.clone(),
            namespace,
            &wgsub_testkit::chart::peer_keys_namespace(namespace),
        ),
        kube: KubeApis::new(client, namespace),
        plans: PlanCatalogue::from_yaml_str(
            "plans:\n  - id: month\n    title: {ru: \"Месяц\", en: \"Month\"}\n    days: 30\n    priceMinor: 19900\n    currency: RUB\n    devices: 2\n",
        )
        .unwrap(),
        settings: Settings {
            bot_token: Zeroizing::new("4242:unused".into()),
            init_data_max_age: SignedDuration::from_hours(24),
            return_url: "https://vpn.example.com/miniapp/".into(),
            receipt: None,
            yookassa_allowed: clientip::yookassa_ranges(),
            trusted_proxies: vec![],
            default_server: "main".into(),
            max_body_bytes: 4096,
            telegram_api_url: "https://api.telegram.org".into(),
        },
        metrics: Metrics::new(),
        qr_cache: QrCache::new(QrCache::DEFAULT_CAPACITY),
    })
}

fn tg(id: i64) -> TelegramUser {
    TelegramUser {
        id,
        username: None,
        first_name: "Anna".into(),
        last_name: None,
        language_code: None,
    }
}

#[tokio::test]
async fn the_drift_loop_repairs_a_missing_an_edited_and_a_deleted_subscription_within_its_interval()
{
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("api-drift").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let client = component_client(plane, &ns, "api").await;
    let (pool, _) = fresh_database("api_drift").await;
    let ledger = Ledger::new(pool, false);
    let now = Timestamp::now();
    // 5 paid, but its subscription write was missed; 6 only ever opened the Mini App.
    ledger.upsert_user(&tg(5), now).await.unwrap();
    let paid_until = ledger
        .admin_grant(
            &AdminGrant {
                user_id: 5,
                days: 30,
                admin_id: 1,
                reason: "test".into(),
            },
            now,
        )
        .await
        .unwrap()
        .paid_until;
    ledger.upsert_user(&tg(6), now).await.unwrap();
    let admin: Api<VpnSubscription> = Api::namespaced(plane.admin_client(), &ns);

    let state = state(ledger, client, &ns);
    let stop = CancellationToken::new();
    let drift = tokio::spawn(system::drift_loop(state.clone(), INTERVAL, stop.clone()));
    let paid = async || {
        admin
            .get_opt("tg-5")
            .await
            .unwrap()
            .filter(|s| s.spec.paid_until == paid_until)
    };

    let first = eventually("the missed write is made", WITHIN, paid).await;

    let mut edited = first.clone();
    edited.spec.paid_until = Some(now - SignedDuration::from_hours(1));
    let edit = PostParams {
        field_manager: Some("kubectl-edit".into()),
        ..PostParams::default()
    };
    admin.replace("tg-5", &edit, &edited).await.unwrap();
    eventually("the edit is repaired", WITHIN, paid).await;

    admin
        .delete("tg-5", &DeleteParams::default())
        .await
        .unwrap();
    let again = eventually("the deleted subscription is back", WITHIN, async || {
        paid()
            .await
            .filter(|s| s.metadata.uid != first.metadata.uid)
    })
    .await;
    assert_eq!(again.spec.max_devices, 1);

    assert!(
        admin.get_opt("tg-6").await.unwrap().is_none(),
        "a user who never paid gets no subscription from the loop"
    );
    // The pass counts its repairs when it ends, which may be after the last repair is visible.
    let count_repairs = || {
        let metrics = state.metrics.encode();
        let repairs = metrics
            .lines()
            .find(|l| l.starts_with("wgsub_api_subscription_syncs_total{status=\"ok\"}"))
            .unwrap_or_else(|| panic!("no sync metric in\n{metrics}"))
            .to_owned();
        let count: f64 = repairs.rsplit(' ').next().unwrap().parse().unwrap();
        (count, repairs)
    };
    let deadline = tokio::time::Instant::now() + WITHIN;
    while count_repairs().0 < 3.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (count, repairs) = count_repairs();
    assert!(count >= 3.0, "{repairs}");
    // Each turn also refreshes the ledger's business gauges: 5 active, 6 never paid.
    let metrics = state.metrics.encode();
    for expected in [
        "wgsub_api_ledger_users{state=\"active\"} 1",
        "wgsub_api_ledger_users{state=\"never_paid\"} 1",
        "wgsub_api_ledger_new_users_24h 2",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from\n{metrics}"
        );
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), drift)
        .await
        .expect("the loop ends on stop")
        .unwrap();
    assert_nothing_forbidden(plane, &ns, "api");
}
