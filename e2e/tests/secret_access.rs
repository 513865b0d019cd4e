//! Which Secrets each component can read, proven on the real API server with the chart's RBAC
//! (`charts/wgsub`, rendered by the real helm and applied) and each component's own
//! ServiceAccount: the operator manages the devices' keys in the peer keys namespace, the api and
//! the bot only list and watch those keys, the node-agent only creates and reads the server keys
//! in the server keys namespace — and none of them can touch a Secret of the release's namespace
//! (the bot token, the YooKassa key, the database URL), a Secret of another namespace, or a key
//! it does not need. Each right is asked twice: as the server's authorizer answers a
//! SelfSubjectAccessReview for that ServiceAccount (can *and* cannot, verb by verb), and as real
//! reads whose refusals the server's audit log shows as 403.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use wgsub_testkit::chart::{
    apply_chart_rbac, component_client, peer_keys_namespace, server_keys_namespace, service_account,
};
use wgsub_testkit::envtest::ControlPlane;

const COMPONENTS: [&str; 4] = ["operator", "api", "bot", "node-agent"];
const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// Where a Secret lives, as the test names the three namespaces of one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    /// The release's namespace: the components' credentials.
    Release,
    /// The devices' private keys.
    PeerKeys,
    /// The servers' private keys.
    ServerKeys,
}

const PLACES: [Place; 3] = [Place::Release, Place::PeerKeys, Place::ServerKeys];

/// The Secret verbs `component` is meant to have in `place`: the whole design in one table.
fn intended(component: &str, place: Place) -> &'static [&'static str] {
    match (component, place) {
        ("operator", Place::PeerKeys) => &["get", "list", "watch", "create", "patch", "delete"],
        ("api" | "bot", Place::PeerKeys) => &["list", "watch"],
        ("node-agent", Place::ServerKeys) => &["get", "list", "watch", "create"],
        _ => &[],
    }
}

struct Release {
    plane: &'static ControlPlane,
    namespace: String,
}

impl Release {
    fn namespace_of(&self, place: Place) -> String {
        match place {
            Place::Release => self.namespace.clone(),
            Place::PeerKeys => peer_keys_namespace(&self.namespace),
            Place::ServerKeys => server_keys_namespace(&self.namespace),
        }
    }

    /// The release's namespace with the chart's RBAC and key namespaces, and in each namespace
    /// the Secrets that live there (with values made up here).
    async fn new() -> Release {
        let plane = ControlPlane::shared();
        let namespace = plane.namespace("secret-access").await;
        apply_chart_rbac(plane, &namespace, &[]).await;
        let release = Release { plane, namespace };
        let made_up = || format!("not-a-real-value-{}", uuid::Uuid::new_v4().simple());
        for (place, name, labels) in [
            (Place::Release, "wgsub-telegram", vec![]),
            (Place::Release, "wgsub-yookassa", vec![]),
            (Place::Release, "wgsub-database", vec![]),
            (
                Place::PeerKeys,
                "tg-1-1-key",
                vec![("wgsub.io/peer", "tg-1-1"), ("wgsub.io/peer-uid", "u-1")],
            ),
            (
                Place::ServerKeys,
                "main-key",
                vec![("wgsub.io/server", "main")],
            ),
        ] {
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    labels: Some(
                        labels
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                    ),
                    ..Default::default()
                },
                data: Some([("value".to_owned(), ByteString(made_up().into_bytes()))].into()),
                ..Secret::default()
            };
            Api::<Secret>::namespaced(release.plane.admin_client(), &release.namespace_of(place))
                .create(&PostParams::default(), &secret)
                .await
                .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        }
        release
    }

    /// What the server's authorizer answers `component` for `verb` on Secrets in `namespace`
    /// (`name`, when given; all namespaces when `namespace` is absent).
    async fn can(
        &self,
        client: &kube::Client,
        verb: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> bool {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(String::new()),
                    resource: Some("secrets".into()),
                    verb: Some(verb.into()),
                    namespace: namespace.map(str::to_owned),
                    name: name.map(str::to_owned),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answered = Api::<SelfSubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .expect("every authenticated user may ask what it can do");
        answered.status.expect("the server answers").allowed
    }
}

#[tokio::test]
async fn each_component_can_use_exactly_the_secrets_it_needs_and_no_credentials() {
    let release = Release::new().await;
    let mut wrong = Vec::new();
    for component in COMPONENTS {
        let client = component_client(release.plane, &release.namespace, component).await;
        for place in PLACES {
            let namespace = release.namespace_of(place);
            let mut granted = BTreeSet::new();
            for verb in VERBS {
                if release.can(&client, verb, Some(&namespace), None).await {
                    granted.insert(verb);
                }
            }
            let intended: BTreeSet<&str> = intended(component, place).iter().copied().collect();
            if granted != intended {
                wrong.push(format!(
                    "{component} on Secrets of {place:?} ({namespace}): can {granted:?}, \
                     should {intended:?}"
                ));
            }
        }
        // By name, the credentials of the release: no component may read or change one.
        for credential in ["wgsub-telegram", "wgsub-yookassa", "wgsub-database"] {
            for verb in ["get", "update", "patch", "delete"] {
                if release
                    .can(&client, verb, Some(&release.namespace), Some(credential))
                    .await
                {
                    wrong.push(format!(
                        "{component} can {verb} the credential {credential}"
                    ));
                }
            }
        }
        // Nor any Secret of any namespace at once.
        for verb in ["list", "watch"] {
            if release.can(&client, verb, None, None).await {
                wrong.push(format!(
                    "{component} can {verb} the Secrets of every namespace"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the chart's RBAC differs from the intended Secret access:\n{}",
        wrong.join("\n")
    );
}

/// One read and whether the server must allow it.
struct Read {
    place: Place,
    /// `Some(name)`: a get of that Secret; `None`: a list.
    name: Option<&'static str>,
    allowed: bool,
}

/// The reads each component tries: every credential, a list of each namespace, and each kind of
/// key by name.
fn reads(component: &str) -> Vec<Read> {
    let mut reads = Vec::new();
    for credential in ["wgsub-telegram", "wgsub-yookassa", "wgsub-database"] {
        reads.push(Read {
            place: Place::Release,
            name: Some(credential),
            allowed: false,
        });
    }
    for place in PLACES {
        reads.push(Read {
            place,
            name: None,
            allowed: intended(component, place).contains(&"list"),
        });
    }
    reads.push(Read {
        place: Place::PeerKeys,
        name: Some("tg-1-1-key"),
        allowed: intended(component, Place::PeerKeys).contains(&"get"),
    });
    reads.push(Read {
        place: Place::ServerKeys,
        name: Some("main-key"),
        allowed: intended(component, Place::ServerKeys).contains(&"get"),
    });
    reads
}

#[tokio::test]
async fn reads_outside_a_components_keys_are_refused_by_the_server_and_audited() {
    let release = Release::new().await;
    for component in COMPONENTS {
        let client = component_client(release.plane, &release.namespace, component).await;
        let mut expected_refusals = Vec::new();
        for read in reads(component) {
            let namespace = release.namespace_of(read.place);
            let api = Api::<Secret>::namespaced(client.clone(), &namespace);
            let (what, outcome) = match read.name {
                Some(name) => (
                    format!("get {namespace}/{name}"),
                    api.get(name).await.map(|secret| {
                        assert!(secret.data.is_some(), "a granted get returns the Secret");
                    }),
                ),
                None => (
                    format!("list {namespace}"),
                    api.list(&ListParams::default()).await.map(|list| {
                        assert!(!list.items.is_empty(), "a granted list returns the Secrets");
                    }),
                ),
            };
            match (read.allowed, outcome) {
                (true, Ok(())) => {}
                (false, Err(kube::Error::Api(status))) if status.code == 403 => {
                    let uri = match read.name {
                        Some(name) => format!("/api/v1/namespaces/{namespace}/secrets/{name}"),
                        None => format!("/api/v1/namespaces/{namespace}/secrets"),
                    };
                    expected_refusals.push(uri);
                }
                (allowed, outcome) => panic!(
                    "{component}: {what} should be {}, got {outcome:?}",
                    if allowed {
                        "allowed"
                    } else {
                        "refused with 403"
                    }
                ),
            }
        }
        let everywhere = Api::<Secret>::all(client.clone())
            .list(&ListParams::default())
            .await;
        assert!(
            matches!(&everywhere, Err(kube::Error::Api(s)) if s.code == 403),
            "{component}: a list of every namespace's Secrets: {everywhere:?}"
        );
        expected_refusals.push("/api/v1/secrets".to_owned());

        // The server's own record of the refusals (the audit log trails the answers a little).
        let account = service_account(component);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let forbidden = release.plane.forbidden(&release.namespace, &account);
            let refused_uris: Vec<&str> = forbidden
                .iter()
                .filter_map(|line| line.split(": ").nth(1))
                .map(|uri| uri.split('?').next().unwrap_or(uri))
                .collect();
            let missing: Vec<&String> = expected_refusals
                .iter()
                .filter(|uri| !refused_uris.contains(&uri.as_str()))
                .collect();
            if missing.is_empty() {
                assert_eq!(
                    forbidden.len(),
                    expected_refusals.len(),
                    "{component}: the server refused exactly the reads outside its keys:\n{}",
                    forbidden.join("\n")
                );
                assert!(
                    forbidden.iter().all(|line| line.contains("secrets -> 403")),
                    "{forbidden:#?}"
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{component}: the audit log shows no 403 for {missing:?}; it has:\n{}",
                forbidden.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
