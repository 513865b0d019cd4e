//! `scripts/install-vps`, the one-command install on a fresh VPS, in its `--dry-run`: every step
//! in order at its pinned version, only re-runnable commands (`helm upgrade --install`, `kubectl
//! apply`), no secret in the output, the printed values rendered by the real `helm template`,
//! and a clear error naming a missing required flag in `--non-interactive` mode.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{NAMESPACE, RELEASE, chart_dir, find, parse_documents, repo_root, run_helm};

/// Made-up credentials, written to files the script reads.
struct Inputs {
    dir: tempfile::TempDir,
    token: String,
    key: String,
    database_url: String,
}

impl Inputs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pid = std::process::id();
        let inputs = Self {
            token: format!("{pid}:madeUpBotToken_{pid}"),
            key: format!("test_madeUpSecretKey{pid}"),
            database_url: format!("postgres://wgsub:madeUpPassword{pid}@db.example.test/wgsub"),
            dir,
        };
        for (name, value) in [
            ("token", &inputs.token),
            ("key", &inputs.key),
            ("db", &inputs.database_url),
        ] {
            std::fs::write(inputs.path(name), format!("{value}\n")).unwrap();
        }
        inputs
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The flags of a complete non-interactive dry run.
    fn flags(&self) -> Vec<String> {
        [
            "--dry-run",
            "--non-interactive",
            "--host",
            "vpn.example.test",
            "--email",
            "ops@example.test",
            "--admin-id",
            "1001",
            "--yookassa-shop-id",
            "54321",
            "--bot-token-file",
            &self.path("token"),
            "--yookassa-secret-key-file",
            &self.path("key"),
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

fn install_vps(args: &[String]) -> Output {
    Command::new(repo_root().join("scripts/install-vps"))
        .args(args)
        // Nothing from the caller's environment stands in for a flag.
        .env_remove("WGSUB_BOT_TOKEN")
        .env_remove("WGSUB_YOOKASSA_SECRET_KEY")
        .env_remove("WGSUB_DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("scripts/install-vps runs")
}

fn dry_run(args: &[String], inputs: &Inputs) -> String {
    let output = install_vps(args);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for secret in [&inputs.token, &inputs.key, &inputs.database_url] {
        assert!(
            !stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()),
            "a secret was printed:\n{stdout}\n{stderr}"
        );
    }
    stdout
}

/// The printed commands (`+ …` lines).
fn commands(out: &str) -> Vec<&str> {
    out.lines().filter_map(|l| l.strip_prefix("+ ")).collect()
}

/// The values the dry run prints between its markers.
fn printed_values(out: &str) -> String {
    let start = out.find("--- values: ").expect("values printed");
    let body = &out[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("--- end of values").expect("end marker")].to_owned()
}

/// `helm template` of the chart with the values file at `path`.
fn render_with_values(path: &Path) -> Vec<Value> {
    let chart = chart_dir();
    let output = run_helm(&[
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
        "--values",
        path.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "helm template with the printed values failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_documents(&String::from_utf8(output.stdout).unwrap())
}

fn env_of(docs: &[Value], deployment: &str) -> Vec<Value> {
    let doc = find(docs, "Deployment", deployment);
    doc["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn the_dry_run_prints_every_step_in_order_at_pinned_versions_and_no_secret() {
    let inputs = Inputs::new();
    let out = dry_run(&inputs.flags(), &inputs);
    let commands = commands(&out);
    let expected = [
        "curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION='v1.",
        "kubectl wait --for=condition=Ready node --all",
        "curl -fsSL https://get.helm.sh/helm-v3.",
        "kubectl apply -f -", // Traefik keeps client addresses
        "helm upgrade --install cert-manager cert-manager --repo https://charts.jetstack.io --version v1.",
        "kubectl apply -f -", // the ClusterIssuer
        "kubectl create namespace 'wgsub' --dry-run=client -o yaml | kubectl apply -f -",
        "helm upgrade --install cnpg cloudnative-pg --repo https://cloudnative-pg.github.io/charts --version 0.",
        "kubectl apply -f -", // the PostgreSQL cluster
        "kubectl -n wgsub wait cluster/wgsub-db --for=condition=Ready",
        "kubectl -n wgsub create secret generic wgsub-telegram --from-file=bot-token=<bot_token> --dry-run=client",
        "kubectl -n wgsub create secret generic wgsub-yookassa --from-file=shop-id=<shop_id> --from-file=secret-key=<secret_key> --dry-run=client",
        "kubectl apply --server-side --force-conflicts -f ",
        "helm upgrade --install wgsub ",
    ];
    let mut at = 0;
    for step in expected {
        let found = commands[at..]
            .iter()
            .position(|c| c.starts_with(step))
            .unwrap_or_else(|| panic!("{step:?} not printed after command {at}:\n{out}"));
        at += found + 1;
    }
    let install = commands.last().unwrap();
    for flag in [
        "--namespace wgsub",
        "--skip-crds",
        "--values /etc/wgsub/values.yaml",
        "--wait",
    ] {
        assert!(install.contains(flag), "{install} lacks {flag}");
    }
    assert!(out.contains("email: ops@example.test"), "{out}");
    assert!(out.contains("name: wgsub-db\n"), "{out}");
    // Re-runnable: Helm only upgrades-or-installs, kubectl only applies.
    for command in &commands {
        if command.starts_with("helm ") && !command.starts_with("helm pull") {
            assert!(command.starts_with("helm upgrade --install "), "{command}");
        }
        if command.contains("kubectl") && command.contains(" create ") {
            assert!(
                command.contains("--dry-run=client -o yaml | kubectl apply -f -"),
                "{command}"
            );
        }
    }
    // The steps left, with this VPS's URLs.
    assert!(out.contains("@BotFather"));
    assert!(out.contains("https://vpn.example.test/miniapp/"));
    assert!(out.contains("https://vpn.example.test/api/v1/webhooks/yookassa"));
    assert!(out.contains("payment.succeeded"));
}

#[test]
fn the_printed_values_render_with_helm_into_the_ingress_server_and_database_secret() {
    let inputs = Inputs::new();
    let mut flags = inputs.flags();
    flags.extend(
        [
            "--userspace",
            "--image-repository",
            "registry.example.test/wgsub",
            "--image-tag",
            "0.9.1",
        ]
        .map(str::to_owned),
    );
    let out = dry_run(&flags, &inputs);
    let values = inputs.dir.path().join("values.yaml");
    std::fs::write(&values, printed_values(&out)).unwrap();
    let docs = render_with_values(&values);

    let ingress = find(&docs, "Ingress", "wgsub-api");
    assert_eq!(ingress["spec"]["rules"][0]["host"], "vpn.example.test");
    assert_eq!(ingress["spec"]["tls"][0]["hosts"][0], "vpn.example.test");
    assert_eq!(
        ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"],
        "letsencrypt"
    );
    let server = find(&docs, "WgServer", "main");
    assert_eq!(server["spec"]["endpoint"], "vpn.example.test:51820");
    let database = env_of(&docs, "wgsub-api")
        .into_iter()
        .find(|e| e["valueFrom"]["secretKeyRef"]["name"] == "wgsub-db-app")
        .expect("the api reads CloudNativePG's Secret");
    assert_eq!(database["valueFrom"]["secretKeyRef"]["key"], "uri");
    let bot = serde_json::to_string(&env_of(&docs, "wgsub-bot")).unwrap();
    assert!(bot.contains("1001"), "the admin id reaches the bot: {bot}");
    let api = find(&docs, "Deployment", "wgsub-api");
    assert_eq!(
        api["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.test/wgsub:0.9.1"
    );
    let agent = find(&docs, "DaemonSet", "wgsub-node-agent");
    assert_eq!(
        agent["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/wgsub/wgsub-node-agent:0.9.1"
    );
    let agent_env = serde_json::to_string(&agent["spec"]["template"]["spec"]).unwrap();
    assert!(agent_env.contains("userspace"), "{agent_env}");
    // No secret went into the values.
    let text = std::fs::read_to_string(&values).unwrap();
    assert!(!text.contains(&inputs.token) && !text.contains(&inputs.key));
}

#[test]
fn with_a_database_url_no_cloudnativepg_is_installed_and_the_url_goes_to_a_secret() {
    let inputs = Inputs::new();
    let mut flags = inputs.flags();
    flags.extend(["--database-url-file".to_owned(), inputs.path("db")]);
    let out = dry_run(&flags, &inputs);
    assert!(!out.contains("cloudnative-pg"), "{out}");
    assert!(!out.contains("wgsub-db-app"), "{out}");
    assert!(
        commands(&out).iter().any(|c| c.starts_with(
            "kubectl -n wgsub create secret generic wgsub-database --from-file=url=<database_url>"
        )),
        "{out}"
    );
    let values = inputs.dir.path().join("values.yaml");
    std::fs::write(&values, printed_values(&out)).unwrap();
    let docs = render_with_values(&values);
    let database = env_of(&docs, "wgsub-api")
        .into_iter()
        .find(|e| e["valueFrom"]["secretKeyRef"]["name"] == "wgsub-database")
        .expect("the api reads the wgsub-database Secret");
    assert_eq!(database["valueFrom"]["secretKeyRef"]["key"], "url");
}

#[test]
fn without_prompts_a_missing_or_bad_required_value_is_an_error_naming_it() {
    let inputs = Inputs::new();
    let full = inputs.flags();
    let without = |flag: &str| -> Vec<String> {
        let at = full.iter().position(|f| f == flag).unwrap();
        full.iter()
            .enumerate()
            .filter(|(i, _)| *i != at && *i != at + 1)
            .map(|(_, f)| f.clone())
            .collect()
    };
    let with = |flag: &str, value: &str| -> Vec<String> {
        let mut args = without(flag);
        args.extend([flag.to_owned(), value.to_owned()]);
        args
    };
    let cases = [
        (without("--host"), "missing --host"),
        (without("--email"), "missing --email"),
        (without("--admin-id"), "missing --admin-id"),
        (without("--yookassa-shop-id"), "missing --yookassa-shop-id"),
        (without("--bot-token-file"), "--bot-token-file"),
        (
            without("--yookassa-secret-key-file"),
            "--yookassa-secret-key-file",
        ),
        (with("--host", "not a host"), "--host"),
        (with("--admin-id", "-5"), "--admin-id"),
        (
            with("--bot-token-file", &inputs.path("missing")),
            "--bot-token-file: cannot read",
        ),
        (
            vec!["--dry-run".to_owned(), "--frobnicate".to_owned()],
            "unknown option --frobnicate",
        ),
    ];
    for (args, named) in cases {
        let output = install_vps(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?}: the error names {named:?}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("+ "),
            "{args:?}: nothing ran before the error"
        );
    }
}
