//! The api's HTTP test harness, shared by the test files: the router over real PostgreSQL (a
//! fresh database per test from `WGSUB_TEST_DATABASE_URL`), YooKassa faked by wiremock
//! (checking Basic auth and the Idempotence-Key), and the real Kubernetes API server of the
//! test process (a namespace per test, the chart's RBAC applied, the handlers authenticated as
//! the api's ServiceAccount) — or, for faults a real server cannot be made to show, an
//! in-memory Kubernetes. Each test binary uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use tower::ServiceExt;
use wgsub_api::metrics::Metrics;
use wgsub_api::qr::QrCache;
use wgsub_api::state::api_caches;
use wgsub_api::{AppState, KubeApis, Settings, app, clientip, initdata};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::plans::PlanCatalogue;
use wgsub_crds::{VpnSubscription, WgPeer, WgServer};
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::{DbConfig, Ledger, YooKassa, YooKassaConfig};
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, peer_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;
use wiremock::matchers::{header as has_header, header_exists, method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};
use zeroize::Zeroizing;

pub const YOOKASSA_ADDR: &str = "185.71.76.10:443";

pub struct Harness {
    pub router: Router,
    pub state: Arc<AppState>,
    /// The test's own view of Kubernetes (setup and checks): the admin on the real server.
    pub admin: kube::Client,
    pub namespace: String,
    /// Where the devices' key Secrets live (the api's `--keys-namespace`).
    pub keys_namespace: String,
    /// The real control plane; `None` for the in-memory one.
    pub plane: Option<&'static ControlPlane>,
    pub yookassa: MockServer,
    pub token: String,
    pub basic_auth: String,
}

pub fn plans() -> PlanCatalogue {
    PlanCatalogue::from_yaml_str(
        "plans:\n  - id: month\n    title: {ru: \"Месяц\", en: \"Month\"}\n    days: 30\n    priceMinor: 19900\n    currency: RUB\n    devices: 2\n    trafficGib: 50\n",
    )
    .unwrap()
}

/// The API on the real server: a fresh namespace with the chart's RBAC and the server `main`
/// (its public key published), the handlers' client authenticated as the api's ServiceAccount.
pub async fn harness(label: &str) -> Harness {
    harness_with_pool(label, None).await
}

/// [`harness`] whose ledger has a pool of `max_connections` (waiting at most a second for one)
/// instead of the test default.
pub async fn harness_with_pool(label: &str, max_connections: Option<u32>) -> Harness {
    let plane = ControlPlane::with_crds();
    let namespace = plane
        .namespace(&format!("api-{}", label.replace('_', "-")))
        .await;
    apply_chart_rbac(plane, &namespace, &[]).await;
    let admin = plane.admin_client();
    create_server(&admin, &namespace).await;
    let client = component_client(plane, &namespace, "api").await;
    let keys = peer_keys_namespace(&namespace);
    let mut h = harness_on(label, client, admin, (&namespace, &keys), max_connections).await;
    h.plane = Some(plane);
    assert!(
        h.state.caches.synced(Duration::from_secs(10)).await,
        "the caches sync"
    );
    h
}

/// The API on an in-memory Kubernetes whose first `VpnSubscription` patch fails with an
/// internal error: a fault the real server cannot be made to show on demand.
pub async fn harness_failing_first_subscription_patch(label: &str) -> Harness {
    let failures = Arc::new(AtomicUsize::new(1));
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<VpnSubscription>()
        .with_resource::<WgPeer>()
        .with_resource::<WgServer>()
        .with_interceptor_funcs(
            kube_fake_client::interceptor::Funcs::new().patch(move |ctx| {
                let kind = ctx.patch.get("kind").and_then(Value::as_str);
                if kind == Some("VpnSubscription")
                    && failures
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    return Err(kube_fake_client::Error::Internal("injected failure".into()));
                }
                Ok(None)
            }),
        )
        .build()
        .await
        .unwrap();
    harness_with(label, client.clone(), client, "wgsub").await
}

pub async fn harness_with(
    label: &str,
    client: kube::Client,
    admin: kube::Client,
    namespace: &str,
) -> Harness {
    let keys = peer_keys_namespace(namespace);
    harness_on(label, client, admin, (namespace, &keys), None).await
}

async fn harness_on(
    label: &str,
    client: kube::Client,
    admin: kube::Client,
    (namespace, keys_namespace): (&str, &str),
    max_connections: Option<u32>,
) -> Harness {
    let (mut pool, url) = fresh_database(label).await;
    if let Some(max_connections) = max_connections {
        pool.close().await;
        pool = wgsub_ledger::db::connect_lazy(&DbConfig {
            max_connections,
            acquire_timeout: Duration::from_secs(1),
            ..DbConfig::new(url)
        })
        .unwrap();
    }
    let ledger = Ledger::new(pool, false);
    let yookassa = MockServer::start().await;
    let shop = "54321".to_owned();
    let secret = format!("test_{}", uuid::Uuid::new_v4().simple());
    let basic_auth = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{shop}:{secret}"))
        )
    };
    let token = format!("{}:{}", 4242, uuid::Uuid::new_v4().simple());
    let state = Arc::new(AppState {
        ledger,
        yookassa: YooKassa::new(YooKassaConfig {
            api_base: format!("{}/v3", yookassa.uri()),
            shop_id: shop,
            secret_key: Zeroizing::new(secret),
            timeout: Duration::from_secs(2),
            max_attempts: 2,
            retry_backoff: Duration::from_millis(5),
        })
        .unwrap(),
        caches: api_caches(client.clone(), namespace, keys_namespace),
        kube: KubeApis::new(client, namespace),
        plans: plans(),
        settings: Settings {
            bot_token: Zeroizing::new(token.clone()),
            init_data_max_age: SignedDuration::from_hours(1),
            return_url: "https://vpn.example.com/miniapp/".into(),
            receipt: None,
            yookassa_allowed: clientip::yookassa_ranges(),
            trusted_proxies: vec![clientip::parse_net("10.0.0.0/8").unwrap()],
            default_server: "main".into(),
            max_body_bytes: 4096,
            telegram_api_url: "https://api.telegram.org".into(),
        },
        metrics: Metrics::new(),
        qr_cache: QrCache::new(QrCache::DEFAULT_CAPACITY),
    });
    Harness {
        router: app(state.clone()),
        state,
        admin,
        namespace: namespace.to_owned(),
        keys_namespace: keys_namespace.to_owned(),
        plane: None,
        yookassa,
        token,
        basic_auth,
    }
}

/// The WgServer `main` with its public key published (as the node-agent does, through the
/// status subresource).
pub async fn create_server(admin: &kube::Client, namespace: &str) {
    let servers: Api<WgServer> = Api::namespaced(admin.clone(), namespace);
    let mut server = fixtures::server("main", "10.8.0.0/24");
    server.spec.dns = vec!["1.1.1.1".into()];
    servers
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
    fixtures::publish_server_key(&servers, "main").await;
}

/// The AmneziaWG WgServer `name` (pool `10.9.0.0/24`) with a complete AWG 1.0 parameter set
/// and its public key published, as the operator and the node-agent leave it; the api's
/// caches hold it when this returns.
pub async fn create_amneziawg_server(h: &Harness, name: &str) {
    let servers: Api<WgServer> = Api::namespaced(h.admin.clone(), &h.namespace);
    let server = WgServer::new(
        name,
        serde_json::from_value(json!({
            "protocol": "amneziawg",
            "amneziawg": {
                "jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61,
                "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890",
            },
            "endpoint": "vpn.example.com:51821",
            "listenPort": 51821,
            "interfaceName": "awg0",
            "addressPool": "10.9.0.0/24",
            "dns": ["1.1.1.1"],
            "privateKeySecretRef": {"name": format!("{name}-key")}
        }))
        .unwrap(),
    );
    servers
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
    let server = fixtures::publish_server_key(&servers, name).await;
    h.visible(&server).await;
}

/// The WgServer `name` (pool `pool`, dialled at `<name>.example.com`) offered to users as
/// `location`, its public key published; the api's caches hold it when this returns.
pub async fn offered_server(h: &Harness, name: &str, pool: &str, location: Value) {
    let servers: Api<WgServer> = Api::namespaced(h.admin.clone(), &h.namespace);
    let mut server = fixtures::server(name, pool);
    server.spec.endpoint = format!("{name}.example.com:51820");
    server.spec.location = Some(serde_json::from_value(location).unwrap());
    servers
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
    let server = fixtures::publish_server_key(&servers, name).await;
    h.visible(&server).await;
}

impl Harness {
    /// Waits until the api's caches hold `written` (an object the test wrote as the admin).
    pub async fn visible<K: wgsub_devices::cache::Cached>(&self, written: &K) {
        assert!(
            self.state
                .caches
                .wait_for(written, Duration::from_secs(5))
                .await,
            "the api's caches show the test's write"
        );
    }

    /// Fails with the server's own 403s when the API made a call the chart does not grant.
    pub fn assert_nothing_forbidden(&self) {
        let plane = self.plane.expect("a test on the real API server");
        assert_nothing_forbidden(plane, &self.namespace, "api");
    }

    /// initData of `user_id` as Telegram signs it now.
    pub fn init_data(&self, user_id: i64) -> String {
        self.init_data_at(user_id, Timestamp::now())
    }

    /// initData of `user_id` as Telegram signed it at `auth_date`.
    pub fn init_data_at(&self, user_id: i64, auth_date: Timestamp) -> String {
        let auth_date = auth_date.as_second().to_string();
        let user =
            json!({"id": user_id, "first_name": format!("User{user_id}"), "language_code": "en"})
                .to_string();
        initdata::sign(&[("auth_date", &auth_date), ("user", &user)], &self.token)
    }

    pub async fn call(
        &self,
        request: Request<Body>,
        from: &str,
    ) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let addr: SocketAddr = from.parse().unwrap();
        let response = self
            .router
            .clone()
            .layer(MockConnectInfo(addr))
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, body, headers)
    }

    pub async fn user_call(
        &self,
        user: i64,
        method_: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method_).uri(uri).header(
            header::AUTHORIZATION,
            format!("tma {}", self.init_data(user)),
        );
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let (status, bytes, _) = self
            .call(request.body(body).unwrap(), "127.0.0.1:5000")
            .await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn webhook(&self, body: Value, from: &str, forwarded: Option<&str>) -> StatusCode {
        let mut request = Request::post("/api/v1/webhooks/yookassa")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(forwarded) = forwarded {
            request = request.header("x-forwarded-for", forwarded);
        }
        self.call(request.body(Body::from(body.to_string())).unwrap(), from)
            .await
            .0
    }

    /// YooKassa accepts payment creation (checking Basic auth and an Idempotence-Key) and
    /// reports the payment with `status` on GET.
    pub async fn fake_yookassa(&self, yookassa_id: &str, status: &str) {
        let id = yookassa_id.to_owned();
        let created = Arc::new(std::sync::Mutex::new(None::<Value>));
        let seen = created.clone();
        let calls = Arc::new(AtomicUsize::new(0));
        Mock::given(method("POST"))
            .and(path("/v3/payments"))
            .and(has_header("authorization", self.basic_auth.as_str()))
            .and(header_exists("idempotence-key"))
            .respond_with(move |request: &wiremock::Request| {
                let body: Value = request.body_json().unwrap();
                // The first payment gets the given id, later ones fresh ids.
                let id = if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    *seen.lock().unwrap() = Some(body.clone());
                    id.clone()
                } else {
                    uuid::Uuid::new_v4().to_string()
                };
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": id, "status": "pending", "paid": false, "amount": body["amount"],
                    "metadata": body["metadata"],
                    "confirmation": {"type": "redirect", "confirmation_url": "https://yoomoney.example/pay"}
                }))
            })
            .mount(&self.yookassa)
            .await;
        let id = yookassa_id.to_owned();
        let status = status.to_owned();
        Mock::given(method("GET"))
            .and(path(format!("/v3/payments/{yookassa_id}")))
            .and(has_header("authorization", self.basic_auth.as_str()))
            .respond_with(move |_: &wiremock::Request| {
                let body = created
                    .lock()
                    .unwrap()
                    .clone()
                    .expect("payment created first");
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": id, "status": status, "paid": status == "succeeded",
                    "amount": body["amount"], "metadata": body["metadata"],
                }))
            })
            .mount(&self.yookassa)
            .await;
        Mock::given(method("GET"))
            .and(path_regex("^/v3/payments/.*"))
            .respond_with(ResponseTemplate::new(404).set_body_json(
                json!({"type": "error", "code": "not_found", "description": "no such payment"}),
            ))
            .with_priority(10)
            .mount(&self.yookassa)
            .await;
    }

    pub async fn subscription(&self, user: i64) -> Option<VpnSubscription> {
        Api::<VpnSubscription>::namespaced(self.admin.clone(), &self.namespace)
            .get_opt(&format!("tg-{user}"))
            .await
            .unwrap()
    }

    /// An active subscription with one ready device `tg-<id>-1` (as the operator would make it).
    pub async fn active_user(&self, user: i64) {
        let subs: Api<VpnSubscription> = Api::namespaced(self.admin.clone(), &self.namespace);
        let mut sub = fixtures::paid_subscription(
            user,
            Timestamp::now() + SignedDuration::from_hours(24 * 30),
        );
        sub.spec.max_devices = 2;
        sub.metadata.namespace = Some(self.namespace.clone());
        let sub = subs.create(&Default::default(), &sub).await.unwrap();
        self.visible(&sub).await;
        self.ready_device(
            user,
            1,
            "main",
            &format!("10.8.0.{}/32", user % 200 + 2),
            "Phone",
        )
        .await;
    }

    /// A ready device `tg-<user>-<index>` named `device_name` on `server` (key Secret, public
    /// key and `address` assigned, as the operator would make it), expiring with the user's
    /// subscription.
    pub async fn ready_device(
        &self,
        user: i64,
        index: u32,
        server: &str,
        address: &str,
        device_name: &str,
    ) {
        let sub = self
            .subscription(user)
            .await
            .expect("the user's subscription exists");
        let name = format!("tg-{user}-{index}");
        let key = PrivateKey::generate();
        let secrets: Api<Secret> = Api::namespaced(self.admin.clone(), &self.keys_namespace);
        let mut secret = fixtures::key_secret(&name, &key);
        secret.metadata.namespace = Some(self.keys_namespace.clone());
        let secret = secrets.create(&Default::default(), &secret).await.unwrap();
        self.visible(&secret).await;
        let mut peer = fixtures::peer(&name, &format!("tg-{user}"), server, &key, address);
        peer.spec.expires_at = sub.spec.paid_until;
        peer.spec.device_name = Some(device_name.into());
        peer.metadata.namespace = Some(self.namespace.clone());
        let peer = Api::<WgPeer>::namespaced(self.admin.clone(), &self.namespace)
            .create(&Default::default(), &peer)
            .await
            .unwrap();
        self.visible(&peer).await;
    }
}

/// The fields `manager` owns by server-side apply (`fieldsV1`), `Null` when it owns none.
pub fn applied_by(meta: &kube::api::ObjectMeta, manager: &str) -> Value {
    meta.managed_fields
        .iter()
        .flatten()
        .find(|entry| {
            entry.manager.as_deref() == Some(manager) && entry.operation.as_deref() == Some("Apply")
        })
        .and_then(|entry| entry.fields_v1.as_ref())
        .map_or(Value::Null, |fields| fields.0.clone())
}

pub fn notification(event: &str, id: &str) -> Value {
    json!({"type": "notification", "event": event, "object": {"id": id, "status": "succeeded"}})
}
