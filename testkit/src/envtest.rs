//! A real Kubernetes control plane for tests, the way controller-runtime's envtest runs one:
//! etcd, kube-apiserver and kube-controller-manager (garbage collection and namespace deletion)
//! started on loopback once per test process, lazily, by the first test that asks
//! ([`ControlPlane::shared`]), and killed when the process ends. Each test works in a namespace
//! of its own ([`ControlPlane::namespace`]).
//!
//! The binaries come from the folder `KUBEBUILDER_ASSETS` names (`kube-apiserver`,
//! `kube-controller-manager`; `etcd` there or on `PATH`); the test command unpacks them. Clients:
//! an admin (`system:masters`) and, for any ServiceAccount, one authenticated by a token from
//! the TokenRequest API — exactly how a pod authenticates, so RBAC is the server's own. The
//! server keeps an audit log of every ServiceAccount's requests, so a test can ask which of a
//! component's calls were refused ([`ControlPlane::forbidden`]) or how many it made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

/// How long the API server may take to answer `/readyz` with `ok`.
const START_WITHIN: Duration = Duration::from_secs(60);
/// The field manager of what the test support itself applies (CRDs, namespaces, RBAC).
pub const TEST_FIELD_MANAGER: &str = "wgsub-envtest";

/// The running control plane of this test process.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    ca_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    audit_log: PathBuf,
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
static CRDS: OnceLock<Result<(), String>> = OnceLock::new();
static NAMESPACES: AtomicU32 = AtomicU32::new(0);

impl ControlPlane {
    /// The control plane of this process, started by the first caller (a few seconds). Fails
    /// the test with what to install when the binaries are missing or the server does not come
    /// up. Also names this process's TLS crypto provider (ring, as the binaries do).
    pub fn shared() -> &'static ControlPlane {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let started = SHARED.get_or_init(|| {
            // The processes are children of a thread that lives as long as the process: a
            // child's parent-death signal fires when the thread that started it ends.
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("envtest".into())
                .spawn(move || match start() {
                    Ok((plane, children)) => {
                        let _ = sender.send(Ok(plane));
                        let _keep = children;
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        let _ = sender.send(Err(e));
                    }
                })
                .expect("a thread for the control plane");
            receiver
                .recv()
                .unwrap_or_else(|_| Err("the control plane thread died".into()))
        });
        match started {
            Ok(plane) => plane,
            Err(e) => panic!("no Kubernetes control plane for this test: {e}"),
        }
    }

    /// [`ControlPlane::shared`] with wgsub's CRDs (the committed `crds/*.yaml`) applied and
    /// established. Fails the test with the server's own message when it refuses one.
    pub fn with_crds() -> &'static ControlPlane {
        let plane = Self::shared();
        let installed = CRDS.get_or_init(|| {
            let plane_ref: &'static ControlPlane = plane;
            std::thread::spawn(move || {
                runtime().block_on(async move {
                    let client = plane_ref.admin_client();
                    for path in wgsub_crd_files() {
                        apply_crd_file(&client, &path).await?;
                    }
                    Ok(())
                })
            })
            .join()
            .unwrap_or_else(|_| Err("installing the CRDs panicked".into()))
        });
        if let Err(e) = installed {
            panic!("the API server refuses wgsub's CRDs: {e}");
        }
        plane
    }

    /// The server's URL (`https://127.0.0.1:<port>`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A client with every right (`system:masters`), for a test's own setup and checks.
    pub fn admin_client(&self) -> kube::Client {
        let mut config = self.config();
        config.auth_info.client_certificate_data = Some(b64(&self.admin_cert_pem));
        config.auth_info.client_key_data = Some(b64(&self.admin_key_pem).into());
        kube::Client::try_from(config).expect("an admin client")
    }

    /// A kubeconfig (YAML) with the admin's certificate, for `kubectl` and `helm`.
    pub fn admin_kubeconfig(&self) -> String {
        self.kubeconfig_with(
            "admin",
            &format!(
                "client-certificate-data: {}\n    client-key-data: {}",
                b64(&self.admin_cert_pem),
                b64(&self.admin_key_pem)
            ),
        )
    }

    /// The admin kubeconfig written to a file in the control plane's folder (for `KUBECONFIG`).
    pub fn admin_kubeconfig_path(&self) -> PathBuf {
        let path = self.dir.join("admin.kubeconfig");
        if !path.exists() {
            std::fs::write(&path, self.admin_kubeconfig()).expect("the admin kubeconfig");
        }
        path
    }

    /// A new namespace for one test, named `<prefix>-<n>` (unique in this process).
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, Ordering::SeqCst)
        );
        let namespaces: Api<Namespace> = Api::all(self.admin_client());
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))
        .expect("a namespace");
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
        name
    }

    /// Creates the ServiceAccount `name` in `namespace` (when missing) and gives a token for it
    /// from the TokenRequest API, valid for a day.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin_client(), namespace);
        let account: ServiceAccount = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace}
        }))
        .expect("a service account");
        accounts
            .patch(
                name,
                &PatchParams::apply(TEST_FIELD_MANAGER),
                &Patch::Apply(&account),
            )
            .await
            .unwrap_or_else(|e| panic!("service account {namespace}/{name}: {e}"));
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(24 * 3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let granted = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("a token for {namespace}/{name}: {e}"));
        granted.status.expect("a granted token").token
    }

    /// A client authenticated as the ServiceAccount `namespace/name` (created when missing),
    /// as a pod running under it is.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> kube::Client {
        let token = self.service_account_token(namespace, name).await;
        let mut config = self.config();
        config.default_namespace = namespace.to_owned();
        config.auth_info.token = Some(token.into());
        kube::Client::try_from(config).expect("a service account client")
    }

    /// A kubeconfig (YAML) authenticated as the ServiceAccount `namespace/name`, for a binary
    /// run as a process (`KUBECONFIG`).
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> String {
        let token = self.service_account_token(namespace, name).await;
        self.kubeconfig_with(name, &format!("token: {token}"))
    }

    /// The requests of the ServiceAccount `namespace/name` the server refused with 403, one line
    /// each (verb, resource, namespace, URI), from the server's audit log.
    pub fn forbidden(&self, namespace: &str, name: &str) -> Vec<String> {
        self.requests_of(namespace, name)
            .into_iter()
            .filter(|event| event.code == Some(403))
            .map(|event| event.to_string())
            .collect()
    }

    /// Every request of the ServiceAccount `namespace/name` the server has answered so far, in
    /// order, from its audit log (a long-running watch appears once it has started).
    pub fn requests_of(&self, namespace: &str, name: &str) -> Vec<AuditedRequest> {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let log = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<AuditEvent>(line).ok())
            .filter(|event| event.user.username == user)
            .filter(|event| event.stage == "ResponseComplete" || event.stage == "ResponseStarted")
            .map(|event| AuditedRequest {
                verb: event.verb,
                uri: event.request_uri,
                code: event.response_status.and_then(|status| status.code),
                resource: event.object_ref.as_ref().map(|o| match &o.subresource {
                    Some(sub) => format!("{}/{sub}", o.resource.clone().unwrap_or_default()),
                    None => o.resource.clone().unwrap_or_default(),
                }),
                stage: event.stage,
            })
            .collect()
    }

    /// Every write (not `get`, `list` or `watch`) any ServiceAccount made so far whose URI
    /// contains `fragment`, in the order the server finished them, one line each: when it
    /// arrived, who made it, and the request — for a failing test to say who wrote an object.
    pub fn writes_naming(&self, fragment: &str) -> Vec<String> {
        let log = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<AuditEvent>(line).ok())
            .filter(|event| event.stage == "ResponseComplete")
            .filter(|event| !matches!(event.verb.as_str(), "get" | "list" | "watch"))
            .filter(|event| event.request_uri.contains(fragment))
            .map(|event| {
                let who = event.user.username.rsplit(':').next().unwrap_or_default();
                let code = event.response_status.and_then(|status| status.code);
                format!(
                    "{} {who} {} -> {}: {}",
                    event.request_received_timestamp,
                    event.verb,
                    code.map_or("-".into(), |c| c.to_string()),
                    event.request_uri
                )
            })
            .collect()
    }

    fn config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.server.parse().expect("the server URL"));
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("the CA");
        config.root_cert = Some(vec![ca.to_vec()]);
        config.read_timeout = None;
        config
    }

    fn kubeconfig_with(&self, user: &str, credentials: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    \
             server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  \
             user:\n    {credentials}\ncontexts:\n- name: {user}\n  context:\n    cluster: envtest\n    \
             user: {user}\ncurrent-context: {user}\n",
            server = self.server,
            ca = b64(&self.ca_pem),
        )
    }
}

/// One request as the API server's audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedRequest {
    /// The authorization verb (`get`, `list`, `watch`, `create`, `patch`, …).
    pub verb: String,
    /// `resource` or `resource/subresource`, when the request names one.
    pub resource: Option<String>,
    pub uri: String,
    /// The response code (absent for a watch still streaming).
    pub code: Option<u16>,
    /// `ResponseStarted` (a watch) or `ResponseComplete`.
    pub stage: String,
}

impl std::fmt::Display for AuditedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {}: {}",
            self.verb,
            self.resource.as_deref().unwrap_or("-"),
            self.code.map_or("-".into(), |c| c.to_string()),
            self.uri
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    stage: String,
    verb: String,
    #[serde(default)]
    request_received_timestamp: String,
    #[serde(rename = "requestURI")]
    request_uri: String,
    user: AuditUser,
    object_ref: Option<AuditObjectRef>,
    response_status: Option<AuditStatus>,
}

#[derive(Debug, Deserialize)]
struct AuditUser {
    #[serde(default)]
    username: String,
}

#[derive(Debug, Deserialize)]
struct AuditObjectRef {
    resource: Option<String>,
    subresource: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AuditStatus {
    code: Option<u16>,
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The committed CRD files of the workspace.
pub fn wgsub_crd_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// Applies one CRD file (server-side, forced) and waits until the server serves its kind.
pub async fn apply_crd_file(client: &kube::Client, path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    apply_crd(client, &crd).await
}

/// Applies a CRD (server-side, forced) and waits until it is `Established`.
pub async fn apply_crd(
    client: &kube::Client,
    crd: &CustomResourceDefinition,
) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply(TEST_FIELD_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await
    .map_err(|e| format!("{name}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current = crds.get(&name).await.map_err(|e| format!("{name}: {e}"))?;
        let established = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{name} is not established within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The processes of a started control plane; killed when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where the binaries are: `KUBEBUILDER_ASSETS`, and `etcd` there or on `PATH`.
fn binaries() -> Result<BTreeMap<&'static str, PathBuf>, String> {
    const HOW: &str = "set KUBEBUILDER_ASSETS to a folder holding kube-apiserver and \
         kube-controller-manager (any Kubernetes release's server binaries; scripts/test unpacks \
         them from shared/envtest) and install etcd (apt-get install etcd-server)";
    let assets = std::env::var_os("KUBEBUILDER_ASSETS")
        .map(PathBuf::from)
        .ok_or_else(|| format!("KUBEBUILDER_ASSETS is not set: {HOW}"))?;
    let mut found = BTreeMap::new();
    for name in ["kube-apiserver", "kube-controller-manager"] {
        let path = assets.join(name);
        if !path.is_file() {
            return Err(format!("{} is missing: {HOW}", path.display()));
        }
        found.insert(name, path);
    }
    let etcd = std::iter::once(assets.join("etcd"))
        .chain(
            std::env::var_os("PATH")
                .map(|paths| {
                    std::env::split_paths(&paths)
                        .map(|dir| dir.join("etcd"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|path| path.is_file())
        .ok_or_else(|| format!("etcd is not in KUBEBUILDER_ASSETS nor on PATH: {HOW}"))?;
    found.insert("etcd", etcd);
    Ok(found)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Removes the folders of control planes whose test process has ended.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("wgsub-envtest-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| format!("openssl does not run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A CA, the serving certificate, the admin's client certificate (X.509 v3: rustls refuses v1)
/// and the ServiceAccount signing key.
fn certificates(dir: &Path) -> Result<(), String> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "3"]);
    ca.extend(["-subj", "/CN=wgsub-envtest-ca"]);
    openssl(dir, &ca)?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("client.ext"),
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         basicConstraints=CA:FALSE\n",
    )
    .map_err(|e| e.to_string())?;
    for (name, subject, ext) in [
        ("server", "/CN=kube-apiserver", "server.ext"),
        ("admin", "/O=system:masters/CN=envtest-admin", "client.ext"),
    ] {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let mut req = vec!["req", "-new"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
        openssl(dir, &req)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "3",
                "-extfile",
                ext,
            ],
        )?;
    }
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sa.key",
        ],
    )?;
    openssl(dir, &["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(())
}

/// A child whose parent-death signal is SIGKILL (through `setpriv`), logging to `<dir>/<name>.log`.
fn spawn(dir: &Path, name: &str, binary: &Path, args: &[String]) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    Command::new("setpriv")
        .arg("--pdeathsig")
        .arg("KILL")
        .arg("--")
        .arg(binary)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{} does not start: {e}", binary.display()))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n\
rules:\n- level: Metadata\n  userGroups: [\"system:serviceaccounts\"]\n- level: None\n";

/// How many times the control plane is started afresh when a port picked free was taken by
/// another process before the server bound it.
const PORT_ATTEMPTS: u32 = 3;

fn start() -> Result<(ControlPlane, Children), String> {
    let mut attempt = 1;
    loop {
        match start_once() {
            Err(e) if attempt < PORT_ATTEMPTS && e.contains("address already in use") => {
                attempt += 1;
            }
            started => return started,
        }
    }
}

fn start_once() -> Result<(ControlPlane, Children), String> {
    let bins = binaries()?;
    // Memory-backed when possible: etcd's fsyncs are most of a write's cost.
    let parent = ["/dev/shm", "/tmp"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    sweep_stale(&parent);
    let dir = parent.join(format!(
        "wgsub-envtest-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    certificates(&dir)?;
    std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY).map_err(|e| e.to_string())?;

    let mut children = Children(Vec::new());
    let (etcd_port, etcd_peer, api_port) = (free_port(), free_port(), free_port());
    children.0.push(spawn(
        &dir,
        "etcd",
        &bins["etcd"],
        &[
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
            "--log-level=warn".into(),
        ],
    )?);
    let audit_log = dir.join("audit.log");
    let path = |name: &str| dir.join(name).display().to_string();
    children.0.push(spawn(
        &dir,
        "kube-apiserver",
        &bins["kube-apiserver"],
        &[
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", path("server.crt")),
            format!("--tls-private-key-file={}", path("server.key")),
            format!("--client-ca-file={}", path("ca.crt")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", path("sa.pub")),
            format!("--service-account-signing-key-file={}", path("sa.key")),
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--allow-privileged=true".into(),
            format!("--audit-policy-file={}", path("audit-policy.yaml")),
            format!("--audit-log-path={}", audit_log.display()),
            "--audit-log-mode=blocking".into(),
            format!("--cert-dir={}", path("apiserver-certs")),
        ],
    )?);
    let server = format!("https://127.0.0.1:{api_port}");
    let plane = ControlPlane {
        dir: dir.clone(),
        server,
        ca_pem: read(&dir, "ca.crt")?,
        admin_cert_pem: read(&dir, "admin.crt")?,
        admin_key_pem: read(&dir, "admin.key")?,
        audit_log,
    };
    wait_ready(&plane, &mut children, &dir)?;

    let kubeconfig = plane.admin_kubeconfig_path().display().to_string();
    children.0.push(spawn(
        &dir,
        "kube-controller-manager",
        &bins["kube-controller-manager"],
        &[
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            format!("--service-account-private-key-file={}", path("sa.key")),
            format!("--root-ca-file={}", path("ca.crt")),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()),
            format!("--cert-dir={}", path("controller-manager-certs")),
            "--leader-elect=false".into(),
            "--controllers=garbage-collector-controller,namespace-controller".into(),
        ],
    )?);
    Ok((plane, children))
}

fn read(dir: &Path, name: &str) -> Result<String, String> {
    std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
}

/// Waits until `/readyz` says `ok`; fails with the tail of the logs when a process exits or
/// time runs out.
fn wait_ready(plane: &ControlPlane, children: &mut Children, dir: &Path) -> Result<(), String> {
    // rustls by name: a test crate whose dependencies also turn on reqwest's native-tls (the
    // bot's teloxide_tests) would otherwise refuse the PEM identity ("builder error").
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(plane.ca_pem.as_bytes()).map_err(|e| e.to_string())?,
        )
        .identity(
            reqwest::Identity::from_pem(
                format!("{}\n{}", plane.admin_cert_pem, plane.admin_key_pem).as_bytes(),
            )
            .map_err(|e| e.to_string())?,
        )
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/readyz", plane.server);
    let deadline = Instant::now() + START_WITHIN;
    runtime().block_on(async {
        loop {
            for (child, name) in children.0.iter_mut().zip(["etcd", "kube-apiserver"]) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{name} exited ({status}):\n{}",
                        tail(&dir.join(format!("{name}.log")))
                    ));
                }
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver is not ready within {START_WITHIN:?}:\n{}",
                    tail(&dir.join("kube-apiserver.log"))
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
