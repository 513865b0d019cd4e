//! An in-memory Kubernetes API server served over HTTP on a loopback port, for tests that run
//! the operator's and the node-agent's real watches with a real `kube::Client`. It owns the
//! Kubernetes semantics the watches depend on, which kube-fake-client lacks:
//!
//! - one global `resourceVersion`, bumped by every change (a no-op write bumps nothing and
//!   sends no event, as a real server's);
//! - lists with `metadata.resourceVersion`, `limit` + `continue` paging over a snapshot taken by
//!   the first page;
//! - `?watch=true&resourceVersion=N`: every change after N, then the live ones, newline-delimited
//!   and kept open (until `timeoutSeconds`), with `BOOKMARK`s when `allowWatchBookmarks=true`;
//!   label selectors honoured (an object leaving the selection is `DELETED` for that watch);
//! - metadata-only lists and watches when the `Accept` header asks for
//!   `as=PartialObjectMetadataList` / `as=PartialObjectMetadata`;
//! - GET one, POST create (409 when it exists), DELETE (404 when missing), PATCH with
//!   server-side apply, JSON merge patch, and the `/status` subresource (a status write
//!   changes only the status; a main-resource write never changes the status);
//! - server-side apply with field ownership: `fieldManager` required; a missing object is
//!   created; each manager owns the fields it applied (per subresource), and a field it owned
//!   but leaves out of its next apply is removed unless another manager owns it too; applying a
//!   field another manager owns with a different value is a `409` conflict unless `force=true`,
//!   which takes the field over; a non-apply write that changes a field takes it from its
//!   appliers. Simplified: lists are atomic (one field each, where the real server keys
//!   `x-kubernetes-list-type: map` lists by their keys), and ownership is not shown in
//!   `metadata.managedFields`;
//! - no garbage collector: dependents of a deleted owner stay (as they do until the real
//!   collector gets to them);
//! - PUT (update) of an existing object, refused with `409 Conflict` when the body's
//!   `resourceVersion` is not the stored one (optimistic concurrency, as leader election needs);
//! - `/version`.
//!
//! It serves wgsub's three kinds, Secrets, Events, Leases (namespaced) and Nodes
//! (cluster-scoped).
//! Every request is recorded (method, path, query, `Accept`, `Content-Type`, response status,
//! and which client sent it: [`FakeApi::client_named`]), and [`ungranted`] checks the record
//! against a binary's RBAC contract (its `api-calls.yaml`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

/// The resources this server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    /// A custom resource with the status subresource enabled.
    status_subresource: bool,
    /// Namespaced (else cluster-scoped, stored under the namespace "").
    namespaced: bool,
}

impl Kind {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const KINDS: &[Kind] = &[
    Kind {
        group: "wgsub.io",
        version: "v1alpha1",
        plural: "vpnsubscriptions",
        kind: "VpnSubscription",
        status_subresource: true,
        namespaced: true,
    },
    Kind {
        group: "wgsub.io",
        version: "v1alpha1",
        plural: "wgpeers",
        kind: "WgPeer",
        status_subresource: true,
        namespaced: true,
    },
    Kind {
        group: "wgsub.io",
        version: "v1alpha1",
        plural: "wgservers",
        kind: "WgServer",
        status_subresource: true,
        namespaced: true,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        status_subresource: false,
        namespaced: true,
    },
    Kind {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        status_subresource: false,
        namespaced: true,
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        status_subresource: false,
        namespaced: true,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        status_subresource: false,
        namespaced: false,
    },
];

fn kind_of<K: Resource<DynamicType = ()>>() -> Kind {
    let plural = K::plural(&());
    *KINDS
        .iter()
        .find(|k| k.plural == plural)
        .unwrap_or_else(|| panic!("the fake API does not serve {plural}"))
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query parameters, percent-decoded.
    pub query: BTreeMap<String, String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub status: u16,
    /// The client's name, for clients made by [`FakeApi::client_named`].
    pub client: Option<String>,
}

impl Recorded {
    /// A watch request (`GET` with `watch=true`).
    pub fn is_watch(&self) -> bool {
        self.method == "GET" && self.query.get("watch").map(String::as_str) == Some("true")
    }

    /// Asks for metadata only (`PartialObjectMetadata` or its list).
    pub fn wants_metadata_only(&self) -> bool {
        self.accept
            .as_deref()
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
    }

    /// The request's target: API group, resource (with `/subresource`), and whether it names
    /// one object. `None` for paths outside the resource API.
    pub fn target(&self) -> Option<(String, String, bool)> {
        let route = parse_path(&self.path)?;
        let resource = match &route.subresource {
            Some(sub) => format!("{}/{sub}", route.kind.plural),
            None => route.kind.plural.to_owned(),
        };
        Some((route.kind.group.to_owned(), resource, route.name.is_some()))
    }

    /// The RBAC verbs the request needs (an apply that creates needs `create` too).
    pub fn verbs(&self) -> Vec<&'static str> {
        let one = self.target().is_some_and(|(_, _, one)| one);
        match self.method.as_str() {
            "GET" if self.is_watch() => vec!["watch"],
            "GET" if one => vec!["get"],
            "GET" => vec!["list"],
            "POST" => vec!["create"],
            "PUT" => vec!["update"],
            "PATCH" if self.status == 201 => vec!["patch", "create"],
            "PATCH" => vec!["patch"],
            "DELETE" if one => vec!["delete"],
            "DELETE" => vec!["deletecollection"],
            _ => vec!["unknown"],
        }
    }
}

/// A change of one object, as watches deliver it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    plural: &'static str,
    namespace: String,
    before: Option<Value>,
    after: Option<Value>,
    /// The object as sent: `after`, or `before` with the deletion's resourceVersion.
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    uids: u64,
    /// By (plural, namespace, name).
    objects: BTreeMap<(&'static str, String, String), Value>,
    history: Vec<Change>,
    /// The rest of a paged list: the snapshot's resourceVersion and the items not yet sent.
    pages: HashMap<String, (u64, VecDeque<Value>)>,
    tokens: u64,
    requests: Vec<Recorded>,
    /// Server-side apply ownership, by object, then by (manager, subresource).
    appliers: HashMap<ObjectKey, Owners>,
}

/// An object's key in the store: (plural, namespace, name).
type ObjectKey = (&'static str, String, String);
/// One field: the map keys down to it.
type FieldPath = Vec<String>;
/// The fields each applier owns: by (field manager, subresource or "").
type Owners = BTreeMap<(String, String), BTreeSet<FieldPath>>;

struct Inner {
    store: Mutex<Store>,
    changes: broadcast::Sender<Change>,
    open_watches: AtomicUsize,
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running server; it stops when dropped.
pub struct FakeApi {
    inner: Arc<Inner>,
    url: String,
    serving: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApi")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

impl FakeApi {
    /// Starts serving an empty cluster on a loopback port. Also names this process's TLS crypto
    /// provider (ring, as the binaries do): test builds compile in two, and kube's client
    /// refuses to pick.
    pub async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (changes, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            store: Mutex::default(),
            changes,
            open_watches: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let state = inner.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let inner = state.clone();
            async move { handle(&inner, request).await }
        });
        let serving = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serving");
        });
        Self {
            inner,
            url,
            serving,
        }
    }

    /// A client of this server, as the binary's client of a real one.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    /// A kubeconfig for this server, as a binary reads one from `KUBECONFIG`; its requests are
    /// recorded under `name` like those of [`FakeApi::client_named`] (the name is the bearer
    /// token, which this server takes for the client's identity).
    pub fn kubeconfig(&self, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: {name}\n  user:\n    token: {name}\ncontexts:\n- name: {name}\n  context:\n    \
             cluster: fake\n    user: {name}\ncurrent-context: {name}\n",
            url = self.url
        )
    }

    /// A client whose requests are recorded with `name`, to tell apart components sharing the
    /// server.
    pub fn client_named(&self, name: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("url"));
        config.headers.push((
            header::HeaderName::from_static(CLIENT_HEADER),
            header::HeaderValue::from_str(name).expect("a header-safe name"),
        ));
        kube::Client::try_from(config).expect("client")
    }

    /// Creates an object as another client would (not recorded).
    pub fn create<K: Resource<DynamicType = ()> + Serialize>(&self, object: &K) {
        let kind = kind_of::<K>();
        let body = serde_json::to_value(object).expect("serializable");
        let namespace = match body["metadata"]["namespace"].as_str() {
            Some(namespace) if kind.namespaced => namespace.to_owned(),
            None if !kind.namespaced => String::new(),
            _ => panic!(
                "{} objects are {}namespaced",
                kind.kind,
                if kind.namespaced { "" } else { "not " }
            ),
        };
        let mut store = self.inner.store();
        create(&mut store, &self.inner.changes, kind, &namespace, body).expect("created");
    }

    /// The stored object, if any.
    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<K> {
        let kind = kind_of::<K>();
        let store = self.inner.store();
        store
            .objects
            .get(&(kind.plural, namespace.to_owned(), name.to_owned()))
            .map(|o| serde_json::from_value(o.clone()).expect("a stored object parses"))
    }

    /// Changes an object as another client would (not recorded).
    pub fn modify<K: Resource<DynamicType = ()>>(
        &self,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) {
        let kind = kind_of::<K>();
        let mut store = self.inner.store();
        let key = (kind.plural, namespace.to_owned(), name.to_owned());
        let before = store.objects.get(&key).cloned().expect("the object exists");
        let mut after = before.clone();
        change(&mut after);
        commit(
            &mut store,
            &self.inner.changes,
            kind,
            namespace,
            name,
            Some(after),
        );
    }

    /// Deletes an object as another client would (not recorded); its dependents stay.
    pub fn delete<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) {
        let kind = kind_of::<K>();
        let mut store = self.inner.store();
        assert!(
            store
                .objects
                .contains_key(&(kind.plural, namespace.to_owned(), name.to_owned())),
            "{} {namespace}/{name} exists",
            kind.kind
        );
        commit(&mut store, &self.inner.changes, kind, namespace, name, None);
    }

    /// Every request so far, in order of completion.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.store().requests.clone()
    }

    /// The requests so far of the client named `client`.
    pub fn requests_from(&self, client: &str) -> Vec<Recorded> {
        self.inner
            .store()
            .requests
            .iter()
            .filter(|r| r.client.as_deref() == Some(client))
            .cloned()
            .collect()
    }

    /// How many watch responses are still streaming.
    pub fn open_watches(&self) -> usize {
        self.inner.open_watches.load(Ordering::SeqCst)
    }
}

/// The header that names a client made by [`FakeApi::client_named`].
const CLIENT_HEADER: &str = "x-fake-api-client";

/// Where a request goes.
#[derive(Debug, Clone)]
struct Route {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, plural, tail) = match rest {
        ["namespaces", namespace, plural, tail @ ..] => (Some(*namespace), *plural, tail),
        [plural, tail @ ..] => (None, *plural, tail),
        _ => return None,
    };
    let kind = *KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)?;
    if namespace.is_some() && !kind.namespaced {
        return None;
    }
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, "status"] if kind.status_subresource => (Some(*name), Some("status")),
        _ => return None,
    };
    Some(Route {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

fn status_response(code: StatusCode, reason: &str, message: String) -> Response {
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": reason, "message": message, "code": code.as_u16(),
        }),
    )
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("a response")
}

fn not_found(kind: Kind, name: &str) -> Response {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{}.{} \"{name}\" not found", kind.plural, kind.group),
    )
}

fn method_not_allowed(method: &str, kind: Kind) -> Response {
    status_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not supported on {}", kind.plural),
    )
}

fn bad_request(message: String) -> Response {
    status_response(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(inner: &Arc<Inner>, request: Request) -> Response {
    let query: BTreeMap<String, String> = Query::try_from_uri(request.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let accept = header_text(request.headers(), header::ACCEPT);
    let content_type = header_text(request.headers(), header::CONTENT_TYPE);
    let client = header_text(
        request.headers(),
        header::HeaderName::from_static(CLIENT_HEADER),
    )
    .or_else(|| {
        header_text(request.headers(), header::AUTHORIZATION)?
            .strip_prefix("Bearer ")
            .map(str::to_owned)
    });
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let metadata_only = accept
        .as_deref()
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));

    let response = match parse_path(&path) {
        None if method == "GET" && path == "/version" => json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-wgsub-fake-api", "platform": "linux/amd64"}),
        ),
        None => status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        ),
        Some(route) => respond(
            inner,
            &route,
            &method,
            &query,
            content_type.as_deref(),
            metadata_only,
            &body,
        ),
    };
    inner.store().requests.push(Recorded {
        method,
        path,
        query,
        accept,
        content_type,
        status: response.status().as_u16(),
        client,
    });
    response
}

fn respond(
    inner: &Arc<Inner>,
    route: &Route,
    method: &str,
    query: &BTreeMap<String, String>,
    content_type: Option<&str>,
    metadata_only: bool,
    body: &Bytes,
) -> Response {
    let kind = route.kind;
    if method == "GET" && route.name.is_none() {
        return if query.get("watch").map(String::as_str) == Some("true") {
            watch(inner, route, query, metadata_only)
        } else {
            list(inner, route, query, metadata_only)
        };
    }
    // The namespace an object is stored under: the request's, or "" for cluster-scoped kinds.
    let namespace = match (&route.namespace, kind.namespaced) {
        (_, false) => String::new(),
        (Some(namespace), true) => namespace.clone(),
        (None, true) => {
            return match (method, &route.name) {
                ("GET", Some(name)) => not_found(kind, name),
                ("POST", None) | ("PATCH" | "PUT" | "DELETE", Some(_)) => {
                    bad_request(format!("{} are namespaced", kind.plural))
                }
                _ => method_not_allowed(method, kind),
            };
        }
    };
    match (method, &route.name) {
        ("GET", Some(name)) => {
            let store = inner.store();
            match store.objects.get(&(kind.plural, namespace, name.clone())) {
                Some(object) => json_response(StatusCode::OK, &render(kind, object, metadata_only)),
                None => not_found(kind, name),
            }
        }
        ("POST", None) => {
            let Ok(object) = serde_json::from_slice::<Value>(body) else {
                return bad_request("the body is not JSON".into());
            };
            let mut store = inner.store();
            match create(&mut store, &inner.changes, kind, &namespace, object) {
                Ok(created) => json_response(StatusCode::CREATED, &created),
                Err(response) => *response,
            }
        }
        ("PATCH", Some(name)) => patch(inner, route, &namespace, name, query, content_type, body),
        ("PUT", Some(name)) if route.subresource.is_none() => {
            let Ok(object) = serde_json::from_slice::<Value>(body) else {
                return bad_request("the body is not JSON".into());
            };
            let mut store = inner.store();
            match replace(&mut store, &inner.changes, kind, &namespace, name, object) {
                Ok(replaced) => json_response(StatusCode::OK, &replaced),
                Err(response) => *response,
            }
        }
        ("DELETE", Some(name)) => {
            let mut store = inner.store();
            let key = (kind.plural, namespace.clone(), name.clone());
            if !store.objects.contains_key(&key) {
                return not_found(kind, name);
            }
            let deleted = commit(&mut store, &inner.changes, kind, &namespace, name, None);
            json_response(StatusCode::OK, &deleted)
        }
        _ => method_not_allowed(method, kind),
    }
}

/// The object as the client asked for it: whole, or its metadata alone.
fn render(kind: Kind, object: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": object["metadata"],
        })
    } else {
        let mut object = object.clone();
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        object
    }
}

/// A label selector: `key`, `!key`, `key=value`, `key==value`, `key!=value`, comma-separated.
fn selects(selector: Option<&str>, object: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let labels = &object["metadata"]["labels"];
    let label = |key: &str| labels.get(key.trim()).and_then(Value::as_str);
    selector.split(',').all(|term| {
        if let Some((key, value)) = term.split_once("!=") {
            label(key) != Some(value.trim())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            label(key) == Some(value.trim())
        } else if let Some(key) = term.trim().strip_prefix('!') {
            label(key).is_none()
        } else {
            label(term).is_some()
        }
    })
}

fn in_scope(route: &Route, namespace: &str) -> bool {
    route.namespace.as_deref().is_none_or(|n| n == namespace)
}

fn list(
    inner: &Arc<Inner>,
    route: &Route,
    query: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Response {
    let kind = route.kind;
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut store = inner.store();
    let (rv, mut items) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match store.pages.remove(token) {
            Some(page) => page,
            None => {
                return status_response(
                    StatusCode::GONE,
                    "Expired",
                    "the provided continue parameter is too old".into(),
                );
            }
        },
        None => {
            let selector = query.get("labelSelector").map(String::as_str);
            let items: VecDeque<Value> = store
                .objects
                .iter()
                .filter(|((plural, namespace, _), object)| {
                    *plural == kind.plural
                        && in_scope(route, namespace)
                        && selects(selector, object)
                })
                .map(|(_, object)| object.clone())
                .collect();
            (store.rv, items)
        }
    };
    let page: Vec<Value> = match limit {
        Some(limit) if limit < items.len() => items.drain(..limit).collect(),
        _ => items.drain(..).collect(),
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if !items.is_empty() {
        store.tokens += 1;
        let token = format!("page-{}", store.tokens);
        store.pages.insert(token.clone(), (rv, items));
        metadata["continue"] = json!(token);
    }
    let (api_version, list_kind) = if metadata_only {
        (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadataList".to_owned(),
        )
    } else {
        (kind.api_version(), format!("{}List", kind.kind))
    };
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": api_version,
            "kind": list_kind,
            "metadata": metadata,
            "items": page.iter().map(|o| render(kind, o, metadata_only)).collect::<Vec<_>>(),
        }),
    )
}

/// One watch event line.
fn event_line(kind: Kind, type_: &str, object: &Value, metadata_only: bool) -> Bytes {
    let mut line = serde_json::to_vec(&json!({
        "type": type_,
        "object": render(kind, object, metadata_only),
    }))
    .expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark_line(kind: Kind, rv: u64, metadata_only: bool) -> Bytes {
    let object = json!({"metadata": {"resourceVersion": rv.to_string()}});
    let mut rendered = render(kind, &object, metadata_only);
    rendered["metadata"] = object["metadata"].clone();
    let mut line =
        serde_json::to_vec(&json!({"type": "BOOKMARK", "object": rendered})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

/// What a change is for one watch: nothing, or one event (an object leaving the selection is
/// deleted for it, one entering it added).
fn translate(
    route: &Route,
    selector: Option<&str>,
    metadata_only: bool,
    change: &Change,
) -> Option<Bytes> {
    if change.plural != route.kind.plural || !in_scope(route, &change.namespace) {
        return None;
    }
    let was = change.before.as_ref().is_some_and(|o| selects(selector, o));
    let is = change.after.as_ref().is_some_and(|o| selects(selector, o));
    let type_ = match (was, is) {
        (false, true) => "ADDED",
        (true, true) => "MODIFIED",
        (true, false) => "DELETED",
        (false, false) => return None,
    };
    Some(event_line(route.kind, type_, &change.object, metadata_only))
}

/// Decrements the open-watch count when the watch's task ends.
struct OpenWatch(Arc<Inner>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

fn watch(
    inner: &Arc<Inner>,
    route: &Route,
    query: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Response {
    let selector = query.get("labelSelector").cloned();
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let since = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => return bad_request(format!("invalid resourceVersion {rv}")),
        },
    };
    let (initial, mut changes, mut last_rv) = {
        let store = inner.store();
        let initial: Vec<Bytes> = match since {
            // "Any" start: the current state as ADDED, then the changes.
            None => store
                .objects
                .iter()
                .filter(|((plural, namespace, _), object)| {
                    *plural == route.kind.plural
                        && in_scope(route, namespace)
                        && selects(selector.as_deref(), object)
                })
                .map(|(_, object)| event_line(route.kind, "ADDED", object, metadata_only))
                .collect(),
            Some(since) => store
                .history
                .iter()
                .filter(|c| c.rv > since)
                .filter_map(|c| translate(route, selector.as_deref(), metadata_only, c))
                .collect(),
        };
        // Subscribed under the lock: no change falls between the history and the live ones.
        (initial, inner.changes.subscribe(), store.rv)
    };
    inner.open_watches.fetch_add(1, Ordering::SeqCst);
    let open = OpenWatch(inner.clone());
    let (lines, receiver) = mpsc::channel::<Bytes>(64);
    let route = route.clone();
    tokio::spawn(async move {
        let _open = open;
        for line in initial {
            if lines.send(line).await.is_err() {
                return;
            }
        }
        let ends = tokio::time::sleep(timeout);
        tokio::pin!(ends);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let line = tokio::select! {
                () = lines.closed() => return,
                () = &mut ends => return,
                change = changes.recv() => match change {
                    Ok(change) => {
                        last_rv = change.rv;
                        match translate(&route, selector.as_deref(), metadata_only, &change) {
                            Some(line) => line,
                            None => continue,
                        }
                    }
                    // Too far behind: the stream ends and the client lists again.
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => bookmark_line(route.kind, last_rv, metadata_only),
            };
            if lines.send(line).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|line| (Ok::<_, Infallible>(line), receiver))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json;stream=watch")
        .body(Body::from_stream(stream))
        .expect("a response")
}

/// Stores `after` (or deletes the object when `None`) as one change: a new resourceVersion, a
/// watch event. A write that changes nothing keeps the object as it is. Returns the object as
/// stored (or as deleted).
fn commit(
    store: &mut Store,
    changes: &broadcast::Sender<Change>,
    kind: Kind,
    namespace: &str,
    name: &str,
    after: Option<Value>,
) -> Value {
    let key = (kind.plural, namespace.to_owned(), name.to_owned());
    let before = store.objects.get(&key).cloned();
    if let (Some(before), Some(after)) = (&before, &after) {
        let without_version = |o: &Value| {
            let mut o = o.clone();
            o["metadata"]["resourceVersion"] = Value::Null;
            o
        };
        if without_version(before) == without_version(after) {
            return before.clone();
        }
    }
    store.rv += 1;
    let rv = store.rv;
    let object = match &after {
        Some(after) => {
            let mut after = after.clone();
            if let Some(before) = &before {
                let content = |o: &Value| {
                    let mut o = o.clone();
                    if let Some(map) = o.as_object_mut() {
                        map.remove("metadata");
                        map.remove("status");
                    }
                    o
                };
                if kind.status_subresource && content(before) != content(&after) {
                    let generation = before["metadata"]["generation"].as_i64().unwrap_or(1);
                    after["metadata"]["generation"] = json!(generation + 1);
                }
            }
            after["metadata"]["resourceVersion"] = json!(rv.to_string());
            store.objects.insert(key.clone(), after.clone());
            after
        }
        None => {
            let mut gone = store.objects.remove(&key).expect("deleting an object");
            gone["metadata"]["resourceVersion"] = json!(rv.to_string());
            gone
        }
    };
    let change = Change {
        rv,
        plural: kind.plural,
        namespace: namespace.to_owned(),
        before,
        after: after.map(|_| object.clone()),
        object: object.clone(),
    };
    match &change.after {
        None => {
            store.appliers.remove(&key);
        }
        Some(after) => {
            if let (Some(before), Some(owners)) = (&change.before, store.appliers.get_mut(&key)) {
                let changed = changed_fields(before, after);
                for fields in owners.values_mut() {
                    fields.retain(|field| !changed.contains(field));
                }
            }
        }
    }
    store.history.push(change.clone());
    // No watch open is not an error.
    let _ = changes.send(change);
    object
}

/// Checks the body's type and name against the request, fills what the server owns, stores.
fn create(
    store: &mut Store,
    changes: &broadcast::Sender<Change>,
    kind: Kind,
    namespace: &str,
    mut object: Value,
) -> Result<Value, Box<Response>> {
    check_type(kind, &object)?;
    let name = match object["metadata"]["name"].as_str() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => {
            return Err(Box::new(bad_request(
                "metadata.name: Required value".into(),
            )));
        }
    };
    if object["metadata"]["namespace"]
        .as_str()
        .is_some_and(|n| n != namespace)
    {
        return Err(bad_request(
            "the namespace of the object does not match the namespace of the request".into(),
        )
        .into());
    }
    if store
        .objects
        .contains_key(&(kind.plural, namespace.to_owned(), name.clone()))
    {
        return Err(status_response(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{}.{} \"{name}\" already exists", kind.plural, kind.group),
        )
        .into());
    }
    if kind.status_subresource
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    store.uids += 1;
    let metadata = &mut object["metadata"];
    if kind.namespaced {
        metadata["namespace"] = json!(namespace);
    }
    metadata["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", store.uids));
    metadata["creationTimestamp"] = json!(
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .expect("rounds")
            .to_string()
    );
    if kind.status_subresource {
        metadata["generation"] = json!(1);
    }
    Ok(commit(store, changes, kind, namespace, &name, Some(object)))
}

fn check_type(kind: Kind, object: &Value) -> Result<(), Box<Response>> {
    if object["apiVersion"] != json!(kind.api_version()) || object["kind"] != json!(kind.kind) {
        return Err(bad_request(format!(
            "expected apiVersion {} kind {}, got {} {}",
            kind.api_version(),
            kind.kind,
            object["apiVersion"],
            object["kind"],
        ))
        .into());
    }
    Ok(())
}

/// The fields of `value` under `prefix`, as server-side apply counts them: every map key down
/// to a value that is not a non-empty map (lists and empty maps are one field each).
fn fields_of(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, inner) in map {
                prefix.push(key.clone());
                fields_of(inner, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The fields an apply body sets within its scope (the status alone for the status
/// subresource; all but the status otherwise, when the kind has the subresource), leaving out
/// the type and what only the server sets.
fn applied_fields(body: &Value, scope: Scope) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Some(map) = body.as_object() else {
        return out;
    };
    for (key, value) in map {
        if key == "apiVersion" || key == "kind" || !scope.covers(key) {
            continue;
        }
        if key == "metadata" {
            for (field, inner) in value.as_object().into_iter().flatten() {
                if !SERVER_METADATA.contains(&field.as_str()) {
                    fields_of(inner, &mut vec![key.clone(), field.clone()], &mut out);
                }
            }
        } else {
            fields_of(value, &mut vec![key.clone()], &mut out);
        }
    }
    out
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The `/status` subresource.
    Status,
    /// The main resource of a kind with the status subresource: everything but the status.
    AllButStatus,
    /// The main resource of a kind without it.
    All,
}

impl Scope {
    fn of(kind: Kind, route: &Route) -> Scope {
        match (&route.subresource, kind.status_subresource) {
            (Some(_), _) => Scope::Status,
            (None, true) => Scope::AllButStatus,
            (None, false) => Scope::All,
        }
    }

    fn covers(self, top_level_field: &str) -> bool {
        match self {
            Scope::Status => top_level_field == "status",
            Scope::AllButStatus => top_level_field != "status",
            Scope::All => true,
        }
    }

    fn subresource(self) -> &'static str {
        if self == Scope::Status { "status" } else { "" }
    }
}

fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |inner, key| inner.as_object()?.get(key))
}

/// Removes the field at `path` — unless it is a map that has fields in it (someone else's).
fn remove_field(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut inner = value;
    for key in parents {
        match inner.as_object_mut().and_then(|map| map.get_mut(key)) {
            Some(next) => inner = next,
            None => return,
        }
    }
    if let Some(map) = inner.as_object_mut()
        && map
            .get(last)
            .is_some_and(|v| v.as_object().is_none_or(serde_json::Map::is_empty))
    {
        map.remove(last);
    }
}

/// The fields whose values differ between two versions of an object.
fn changed_fields(before: &Value, after: &Value) -> BTreeSet<FieldPath> {
    let mut all = BTreeSet::new();
    fields_of(before, &mut Vec::new(), &mut all);
    fields_of(after, &mut Vec::new(), &mut all);
    all.retain(|field| value_at(before, field) != value_at(after, field));
    all
}

/// Merges `patch` into `target`: objects field by field, anything else replaced; with
/// `null_deletes` (JSON merge patch) a null removes the field.
fn merge(target: &mut Value, patch: &Value, null_deletes: bool) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if null_deletes && value.is_null() {
                    target.remove(key);
                } else {
                    merge(
                        target.entry(key.clone()).or_insert(Value::Null),
                        value,
                        null_deletes,
                    );
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// The fields of the metadata only the server sets.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "resourceVersion",
    "generation",
];

fn patch(
    inner: &Arc<Inner>,
    route: &Route,
    namespace: &str,
    name: &str,
    query: &BTreeMap<String, String>,
    content_type: Option<&str>,
    body: &Bytes,
) -> Response {
    let kind = route.kind;
    let apply = match content_type {
        Some("application/apply-patch+yaml") => true,
        Some("application/merge-patch+json" | "application/strategic-merge-patch+json") => false,
        other => {
            return status_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {other:?}"),
            );
        }
    };
    // YAML is what an apply body is; JSON is YAML.
    let Ok(mut body) = serde_yaml::from_slice::<Value>(body) else {
        return bad_request("error decoding the patch body".into());
    };
    if apply {
        if query.get("fieldManager").is_none_or(String::is_empty) {
            return bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            );
        }
        if let Err(response) = check_type(kind, &body) {
            return *response;
        }
        if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return bad_request("the name of the object does not match the request's".into());
        }
    }
    // An apply's manager (per subresource) and the fields it sets.
    let ownership = apply.then(|| {
        let scope = Scope::of(kind, route);
        (
            (
                query.get("fieldManager").cloned().unwrap_or_default(),
                scope.subresource().to_owned(),
            ),
            applied_fields(&body, scope),
        )
    });
    let mut store = inner.store();
    let key = (kind.plural, namespace.to_owned(), name.to_owned());
    let (stored, code) = match store.objects.get(&key).cloned() {
        None if apply && route.subresource.is_none() => {
            body["metadata"]["name"] = json!(name);
            match create(&mut store, &inner.changes, kind, namespace, body) {
                Ok(created) => (created, StatusCode::CREATED),
                Err(response) => return *response,
            }
        }
        None => return not_found(kind, name),
        Some(before) => match updated(&store, route, &key, before, body, ownership.as_ref(), query)
        {
            Ok(after) => (
                commit(
                    &mut store,
                    &inner.changes,
                    kind,
                    namespace,
                    name,
                    Some(after),
                ),
                StatusCode::OK,
            ),
            Err(response) => return *response,
        },
    };
    if let Some((applier, applied)) = ownership {
        store
            .appliers
            .entry(key)
            .or_default()
            .insert(applier, applied);
    }
    json_response(code, &stored)
}

/// The object after a patch of `before` with `body`: an apply (`ownership`: its manager and
/// fields) first drops the fields its manager no longer sets and is refused on conflicts.
fn updated(
    store: &Store,
    route: &Route,
    key: &ObjectKey,
    before: Value,
    mut body: Value,
    ownership: Option<&((String, String), BTreeSet<FieldPath>)>,
    query: &BTreeMap<String, String>,
) -> Result<Value, Box<Response>> {
    let kind = route.kind;
    let apply = ownership.is_some();
    let mut after = before.clone();
    if let Some((applier, applied)) = ownership {
        let no_owners = Owners::new();
        let owners = store.appliers.get(key).unwrap_or(&no_owners);
        let force = query.get("force").map(String::as_str) == Some("true");
        let conflicts: Vec<String> = owners
            .iter()
            .filter(|(other, _)| other.0 != applier.0)
            .flat_map(|((other, _), fields)| {
                fields
                    .intersection(applied)
                    .filter(|field| value_at(&before, field) != value_at(&body, field))
                    .map(move |field| format!("conflict with \"{other}\": .{}", field.join(".")))
            })
            .collect();
        if !force && !conflicts.is_empty() {
            return Err(Box::new(status_response(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Apply failed with {} conflict(s): {}",
                    conflicts.len(),
                    conflicts.join(", ")
                ),
            )));
        }
        // What this manager applied before and leaves out now goes, unless someone else owns
        // it too.
        for field in owners.get(applier).into_iter().flatten() {
            let shared = owners
                .iter()
                .any(|(other, fields)| other != applier && fields.contains(field));
            if !applied.contains(field) && !shared {
                remove_field(&mut after, field);
            }
        }
    }
    if route.subresource.is_some() {
        // The status subresource writes the status alone.
        if let Some(status) = body.get("status") {
            merge(&mut after["status"], status, !apply);
        }
    } else {
        if let Some(map) = body.as_object_mut() {
            if kind.status_subresource {
                map.remove("status");
            }
            if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                for field in SERVER_METADATA {
                    metadata.remove(*field);
                }
            }
        }
        merge(&mut after, &body, !apply);
    }
    Ok(after)
}

/// An update (PUT) of a stored object: the body replaces it but for what the server owns (uid,
/// creation time; the status of a kind with the status subresource); a body carrying another
/// `resourceVersion` than the stored one is a conflict.
fn replace(
    store: &mut Store,
    changes: &broadcast::Sender<Change>,
    kind: Kind,
    namespace: &str,
    name: &str,
    mut object: Value,
) -> Result<Value, Box<Response>> {
    if object["metadata"]["name"].as_str() != Some(name) {
        return Err(Box::new(bad_request(format!(
            "the name of the object does not match the name on the URL ({name})"
        ))));
    }
    let key = (kind.plural, namespace.to_owned(), name.to_owned());
    let Some(stored) = store.objects.get(&key).cloned() else {
        return Err(Box::new(not_found(kind, name)));
    };
    if let Some(version) = object["metadata"]["resourceVersion"].as_str()
        && Some(version) != stored["metadata"]["resourceVersion"].as_str()
    {
        return Err(Box::new(status_response(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.plural, kind.group
            ),
        )));
    }
    for owned in ["uid", "creationTimestamp", "generation"] {
        object["metadata"][owned] = stored["metadata"][owned].clone();
    }
    if kind.namespaced {
        object["metadata"]["namespace"] = json!(namespace);
    }
    if kind.status_subresource {
        object["status"] = stored["status"].clone();
    }
    Ok(commit(store, changes, kind, namespace, name, Some(object)))
}

/// The requests that `api_calls` (a binary's `api-calls.yaml`: a list of `apiGroup`,
/// `resource`, `verbs`) does not grant, one line each; also the requests a real server would
/// have refused (any error but a `404` on a `GET` of one object, which callers expect).
pub fn ungranted<'a>(
    api_calls: &str,
    requests: impl IntoIterator<Item = &'a Recorded>,
) -> Vec<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Rule {
        api_group: String,
        resource: String,
        verbs: Vec<String>,
    }
    let rules: Vec<Rule> = serde_yaml::from_str(api_calls).expect("api-calls.yaml parses");
    let mut refused = Vec::new();
    for request in requests {
        // Every authenticated client may read the version (system:public-info-viewer).
        if request.method == "GET" && request.path == "/version" {
            continue;
        }
        let Some((group, resource, _)) = request.target() else {
            refused.push(format!("not a resource request: {request:?}"));
            continue;
        };
        for verb in request.verbs() {
            let granted = rules.iter().any(|rule| {
                rule.api_group == group
                    && rule.resource == resource
                    && rule.verbs.iter().any(|v| v == verb)
            });
            if !granted {
                refused.push(format!(
                    "{verb} on {group:?} {resource} is not granted: {request:?}"
                ));
            }
        }
        let expected_miss = request.method == "GET" && !request.is_watch() && request.status == 404;
        if request.status >= 300 && !expected_miss {
            refused.push(format!("the API refused {request:?}"));
        }
    }
    refused
}
