//! `helm lint`, and what the chart renders: the components and their wiring, with default values
//! and with every option on; which paths the Ingress makes public; the default WgServer.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, PodSpec};
use serde_json::Value;

use crate::support::{
    NAMESPACE, chart_dir, component, find, kind_of, name_of, of_kind, render,
    render_every_option_on, run_helm, try_render, typed,
};

#[test]
fn helm_lint_passes_with_default_values_and_every_option_on() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let output = run_helm(&["lint", "--strict", chart]);
    assert!(
        output.status.success(),
        "helm lint failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut args = vec!["lint".to_owned(), "--strict".to_owned(), chart.to_owned()];
    for set in crate::support::every_option_on() {
        args.push("--set".into());
        args.push(set);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_helm(&args);
    assert!(
        output.status.success(),
        "helm lint with every option on failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| format!("{} {}", kind_of(d), name_of(d)))
        .collect()
}

#[test]
fn default_values_render_the_four_components_and_nothing_optional() {
    let docs = render(&[]);
    let names = kinds(&docs);
    for expected in [
        format!("Deployment {}", component("operator")),
        format!("Deployment {}", component("api")),
        format!("Deployment {}", component("bot")),
        format!("DaemonSet {}", component("node-agent")),
        format!("Job {}", component("migrate")),
        format!("Service {}", component("api")),
        format!("ConfigMap {}", component("plans")),
    ] {
        assert!(
            names.contains(&expected),
            "missing {expected} in {names:#?}"
        );
    }
    for optional in [
        "Ingress",
        "ServiceMonitor",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "WgServer",
        "Secret",
    ] {
        assert!(
            of_kind(&docs, optional).is_empty(),
            "{optional} rendered with default values"
        );
    }
    let key_namespaces = [
        format!("{NAMESPACE}-keys"),
        format!("{NAMESPACE}-server-keys"),
    ];
    for doc in &docs {
        let namespaced = !kind_of(doc).starts_with("Cluster") && kind_of(doc) != "Namespace";
        if !namespaced {
            continue;
        }
        let namespace = doc["metadata"]["namespace"].as_str().unwrap_or_default();
        let keys_rbac = matches!(kind_of(doc), "Role" | "RoleBinding")
            && key_namespaces.iter().any(|k| k == namespace);
        assert!(
            namespace == NAMESPACE || keys_rbac,
            "{} {} in {namespace}",
            kind_of(doc),
            name_of(doc)
        );
    }
    // The key namespaces are made with the release and kept when it goes (with the keys).
    let made: Vec<&str> = of_kind(&docs, "Namespace")
        .into_iter()
        .map(name_of)
        .collect();
    assert_eq!(
        made,
        key_namespaces
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    for namespace in of_kind(&docs, "Namespace") {
        assert_eq!(
            namespace["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
}

#[test]
fn key_namespaces_can_be_named_made_beforehand_and_never_be_the_releases() {
    let docs = render(&[
        "keyNamespaces.peers=device-keys",
        "keyNamespaces.servers=vpn-node-keys",
        "keyNamespaces.create=false",
    ]);
    assert!(of_kind(&docs, "Namespace").is_empty());
    let namespaces: std::collections::BTreeSet<&str> = of_kind(&docs, "RoleBinding")
        .into_iter()
        .filter_map(|b| b["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(
        namespaces,
        [NAMESPACE, "device-keys", "vpn-node-keys"].into()
    );
    for same in [
        format!("keyNamespaces.peers={NAMESPACE}"),
        format!("keyNamespaces.servers={NAMESPACE}"),
        "keyNamespaces.servers=wgsub-keys".to_owned(),
    ] {
        let error = try_render(&[same.as_str()]).expect_err("refused");
        assert!(error.contains("keyNamespaces"), "{same}: {error}");
    }
}

#[test]
fn every_option_on_renders_ingress_tls_monitoring_policies_budgets_and_the_default_server() {
    let docs = render_every_option_on();
    let ingress = find(&docs, "Ingress", &component("api"));
    assert_eq!(ingress["spec"]["tls"][0]["hosts"][0], "vpn.example.test");
    assert_eq!(
        ingress["spec"]["tls"][0]["secretName"],
        format!("{}-tls", component("api"))
    );
    assert_eq!(ingress["spec"]["ingressClassName"], "traefik");
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        component("api")
    );
    assert_eq!(of_kind(&docs, "ServiceMonitor").len(), 4);
    assert_eq!(
        of_kind(&docs, "PodDisruptionBudget").len(),
        2,
        "operator and api"
    );
    assert!(of_kind(&docs, "NetworkPolicy").len() >= 4);
    let dashboard = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("dashboard ConfigMap");
    let json = dashboard["data"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    let parsed: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let server = find(&docs, "WgServer", "main");
    assert_eq!(server["spec"]["endpoint"], "vpn.example.test:51820");
    assert_eq!(server["spec"]["nat"]["egressInterface"], "eth0");
    assert_eq!(server["spec"]["nat"]["clientToClient"], true);
    assert_eq!(
        server["spec"]["nat"]["blockedDestinations"],
        serde_json::json!(["198.51.100.0/24", "2001:db8:100::/48"])
    );
    // The three Secrets, only because createFromValues was asked for; hooks so the
    // migrations Job finds the database URL.
    let secrets = of_kind(&docs, "Secret");
    assert_eq!(secrets.len(), 3);
    for secret in secrets {
        assert_eq!(
            secret["metadata"]["annotations"]["helm.sh/hook"],
            "pre-install,pre-upgrade"
        );
    }
}

fn pod_spec(docs: &[Value], name: &str) -> PodSpec {
    typed::<Deployment>(find(docs, "Deployment", name))
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
}

fn env(spec: &PodSpec) -> Vec<EnvVar> {
    spec.containers[0].env.clone().unwrap_or_default()
}

/// The (Secret, key) pairs a container's environment reads.
fn secret_refs(env: &[EnvVar]) -> BTreeSet<(String, String)> {
    env.iter()
        .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|r| (r.name.clone(), r.key.clone()))
        .collect()
}

#[test]
fn secrets_are_read_by_reference_from_the_configured_names() {
    let docs = render(&[
        "secrets.telegram.existingSecret=tg",
        "secrets.telegram.botTokenKey=token",
        "secrets.database.existingSecret=pg-app",
        "secrets.database.urlKey=uri",
    ]);
    assert!(
        of_kind(&docs, "Secret").is_empty(),
        "no Secret is rendered unless asked"
    );
    let all_three: BTreeSet<(String, String)> = [
        ("tg", "token"),
        ("pg-app", "uri"),
        ("wgsub-yookassa", "shop-id"),
        ("wgsub-yookassa", "secret-key"),
    ]
    .map(|(n, k)| (n.to_owned(), k.to_owned()))
    .into();
    for workload in ["api", "bot"] {
        let refs = secret_refs(&env(&pod_spec(&docs, &component(workload))));
        assert_eq!(
            refs, all_three,
            "{workload} reads the bot token, the database URL and the YooKassa credentials"
        );
    }
    assert!(
        secret_refs(&env(&pod_spec(&docs, &component("operator")))).is_empty(),
        "the operator reads no credentials"
    );
    for doc in &docs {
        let text = serde_json::to_string(doc).unwrap();
        assert!(
            !text.contains("\"value\":\"postgres"),
            "a database URL is rendered in plain text"
        );
    }
}

#[test]
fn the_bot_and_the_operator_run_their_replicas_with_leader_election() {
    let docs = render(&["operator.replicas=3", "bot.replicas=2"]);
    let bot = typed::<Deployment>(find(&docs, "Deployment", &component("bot")));
    let spec = bot.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    // A rolling update: the new pod polls once the old one gave the Lease up on SIGTERM.
    assert_eq!(spec.strategy.and_then(|s| s.type_), None);
    let bot_env = env(&spec.template.spec.unwrap());
    assert!(
        bot_env.iter().any(|e| e.name == "WGSUB_LEASE_NAME"
            && e.value.as_deref() == Some(component("bot").as_str()))
    );
    let identity = bot_env
        .iter()
        .find(|e| e.name == "WGSUB_IDENTITY")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .expect("the bot's identity is its pod name");
    assert_eq!(identity.field_path, "metadata.name");
    let default_bot = typed::<Deployment>(find(&render(&[]), "Deployment", &component("bot")));
    assert_eq!(default_bot.spec.unwrap().replicas, Some(1));
    let operator = typed::<Deployment>(find(&docs, "Deployment", &component("operator")));
    assert_eq!(operator.spec.as_ref().unwrap().replicas, Some(3));
    let default_operator =
        typed::<Deployment>(find(&render(&[]), "Deployment", &component("operator")));
    assert_eq!(default_operator.spec.unwrap().replicas, Some(2));
    let env = env(&operator.spec.unwrap().template.spec.unwrap());
    assert!(env.iter().any(|e| e.name == "WGSUB_LEASE_NAME"
        && e.value.as_deref() == Some(component("operator").as_str())));
}

#[test]
fn the_migrations_job_is_a_pre_install_and_pre_upgrade_hook_running_migrate() {
    let docs = render(&[]);
    let job = find(&docs, "Job", &component("migrate"));
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["command"],
        serde_json::json!(["/usr/local/bin/wgsub-api", "migrate"])
    );
    let off = render(&["api.migrations.enabled=false"]);
    assert!(
        of_kind(&off, "Job")
            .iter()
            .all(|j| name_of(j) != component("migrate"))
    );
}

#[test]
fn the_key_migration_is_a_pre_upgrade_hook_with_its_own_narrow_roles() {
    let docs = render(&[]);
    let name = component("migrate-keys");
    let job = find(&docs, "Job", &name);
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-upgrade"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], name.as_str());
    assert_eq!(
        pod["containers"][0]["command"],
        serde_json::json!(["/usr/local/bin/wgsub-operator", "migrate-keys"])
    );
    let rules: BTreeSet<(String, String)> = of_kind(&docs, "Role")
        .into_iter()
        .filter(|r| name_of(r) == name)
        .map(|r| {
            let namespace = r["metadata"]["namespace"].as_str().unwrap().to_owned();
            (namespace, r["rules"].to_string())
        })
        .collect();
    let secrets =
        |verbs: &str| format!(r#"[{{"apiGroups":[""],"resources":["secrets"],"verbs":{verbs}}}]"#);
    assert_eq!(
        rules,
        [
            (
                NAMESPACE.to_owned(),
                r#"[{"apiGroups":[""],"resources":["secrets"],"verbs":["get","list"]},{"apiGroups":["wgsub.io"],"resources":["wgpeers","wgservers"],"verbs":["list"]}]"#
                    .to_owned()
            ),
            (format!("{NAMESPACE}-keys"), secrets(r#"["create","get"]"#)),
            (format!("{NAMESPACE}-server-keys"), secrets(r#"["create","get"]"#)),
        ]
        .into()
    );
    let off = render(&["keyNamespaces.migrateOnUpgrade=false"]);
    assert!(off.iter().all(|d| name_of(d) != name));
}

#[test]
fn every_service_account_a_pod_uses_is_rendered_and_one_per_component() {
    let docs = render_every_option_on();
    let accounts: BTreeSet<&str> = of_kind(&docs, "ServiceAccount")
        .into_iter()
        .map(name_of)
        .collect();
    let expected: BTreeSet<String> = ["operator", "api", "bot", "node-agent", "migrate-keys"]
        .map(component)
        .into();
    assert_eq!(accounts, expected.iter().map(String::as_str).collect());
    for doc in &docs {
        if let Some(name) = doc["spec"]["template"]["spec"]["serviceAccountName"].as_str() {
            assert!(
                accounts.contains(name),
                "{} uses missing ServiceAccount {name}",
                name_of(doc)
            );
        }
    }
}

#[test]
fn services_and_monitors_select_the_pods_they_mean() {
    let docs = render_every_option_on();
    for service in of_kind(&docs, "Service") {
        let selector = service["spec"]["selector"].as_object().unwrap();
        let matched: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                d["spec"]["template"]["metadata"]["labels"]
                    .as_object()
                    .is_some_and(|labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
            })
            .collect();
        assert_eq!(
            matched.len(),
            1,
            "Service {} selects {} workloads",
            name_of(service),
            matched.len()
        );
        let ports = &matched[0]["spec"]["template"]["spec"]["containers"][0]["ports"];
        for port in service["spec"]["ports"].as_array().unwrap() {
            assert!(
                ports
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == port["targetPort"]),
                "Service {} targets a port its pods do not have",
                name_of(service)
            );
        }
    }
    for monitor in of_kind(&docs, "ServiceMonitor") {
        let selector = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap();
        let services: Vec<&Value> = of_kind(&docs, "Service")
            .into_iter()
            .filter(|s| {
                selector
                    .iter()
                    .all(|(k, v)| s["metadata"]["labels"].get(k) == Some(v))
            })
            .collect();
        assert_eq!(
            services.len(),
            1,
            "ServiceMonitor {} selects {} Services",
            name_of(monitor),
            services.len()
        );
        let port = &monitor["spec"]["endpoints"][0]["port"];
        assert!(
            services[0]["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| &p["name"] == port)
        );
    }
}

/// The plain value of `name` in a container's environment, if it is set to one.
fn value_of(env: &[EnvVar], name: &str) -> Option<String> {
    env.iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn one_value_each_turns_receipts_and_pgbouncer_on_in_the_api_and_the_bot() {
    for (receipts, vat, pgbouncer) in [("false", "1", "false"), ("true", "6", "true")] {
        let docs = render(&[
            &format!("yookassa.receipts.enabled={receipts}"),
            &format!("yookassa.receipts.vatCode={vat}"),
            &format!("database.pgbouncer={pgbouncer}"),
        ]);
        let api = env(&pod_spec(&docs, &component("api")));
        let bot = env(&pod_spec(&docs, &component("bot")));
        for (workload, env) in [("api", &api), ("bot", &bot)] {
            assert_eq!(
                value_of(env, "WGSUB_YOOKASSA_RECEIPTS").as_deref(),
                Some(receipts),
                "{workload}"
            );
            assert_eq!(
                value_of(env, "WGSUB_YOOKASSA_VAT_CODE").as_deref(),
                Some(vat),
                "{workload}"
            );
            assert_eq!(
                value_of(env, "WGSUB_DATABASE_PGBOUNCER").as_deref(),
                Some(pgbouncer),
                "{workload}"
            );
        }
        let migrate = find(&docs, "Job", &component("migrate"));
        let migrate_env: Vec<EnvVar> = serde_json::from_value(
            migrate["spec"]["template"]["spec"]["containers"][0]["env"].clone(),
        )
        .unwrap();
        assert_eq!(
            value_of(&migrate_env, "WGSUB_DATABASE_PGBOUNCER").as_deref(),
            Some(pgbouncer),
            "the migrations reach the database the way the api does"
        );
    }
}

/// The paths of the api's Ingress: (path, pathType, Service, port name) each.
fn ingress_paths(docs: &[Value]) -> Vec<(String, String, String, String)> {
    let ingress = find(docs, "Ingress", &component("api"));
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let backend = &p["backend"]["service"];
            (
                text(&p["path"]),
                text(&p["pathType"]),
                text(&backend["name"]),
                text(&backend["port"]["name"]),
            )
        })
        .collect()
}

/// The api's public paths: the JSON API (the YooKassa webhook included) and the Mini App.
fn public_api_paths() -> Vec<(String, String, String, String)> {
    ["/api/", "/miniapp/"]
        .map(|path| {
            (
                path.to_owned(),
                "Prefix".to_owned(),
                component("api"),
                "http".to_owned(),
            )
        })
        .to_vec()
}

/// The Service an Ingress with `paths` sends a request for `request` to, by the Ingress API's
/// matching rules: an `Exact` path equals the request's path; a `Prefix` path matches element
/// by element (`/api/` matches `/api/v1` and `/api`, never `/apiv1`); the longest match wins.
fn routed_to(paths: &[(String, String, String, String)], request: &str) -> Option<String> {
    let elements = |path: &str| -> Vec<String> {
        path.split('/')
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    };
    paths
        .iter()
        .filter(|(path, kind, _, _)| match kind.as_str() {
            "Exact" => path == request,
            "Prefix" => elements(request).starts_with(&elements(path)),
            other => panic!("pathType {other} is not portable across ingress controllers"),
        })
        .max_by_key(|(path, _, _, _)| path.len())
        .map(|(_, _, service, _)| service.clone())
}

/// The paths the Mini App asks the browser to load: the files `index.html` names relative to
/// `/miniapp/`, and the absolute paths `app.js` fetches.
fn paths_the_mini_app_loads() -> Vec<String> {
    let dir = crate::support::repo_root().join("api").join("miniapp");
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).expect("a Mini App file");
    let quoted_after = |text: &str, marker: &str| -> Vec<String> {
        text.match_indices(marker)
            .filter_map(|(at, _)| {
                let rest = &text[at + marker.len()..];
                rest.find('"').map(|end| rest[..end].to_owned())
            })
            .collect()
    };
    let page = read("index.html");
    let mut paths: Vec<String> = ["href=\"", "src=\""]
        .iter()
        .flat_map(|marker| quoted_after(&page, marker))
        .filter(|target| !target.contains("://"))
        .map(|file| format!("/miniapp/{file}"))
        .collect();
    let script = read("app.js");
    paths.extend(
        ["fetch(\"", "api(\""]
            .iter()
            .flat_map(|marker| quoted_after(&script, marker)),
    );
    assert!(
        paths.len() >= 4,
        "the Mini App's files name their stylesheet, script and API calls: {paths:?}"
    );
    paths
}

#[test]
fn the_ingress_routes_only_the_api_and_the_mini_app_and_keeps_operational_endpoints_in_cluster() {
    let docs = render(&INGRESS_ON);
    let paths = ingress_paths(&docs);
    assert_eq!(paths, public_api_paths());
    let api = Some(component("api"));
    let mut public = vec![
        "/miniapp/".to_owned(),
        "/api/v1/webhooks/yookassa".to_owned(),
    ];
    public.extend(paths_the_mini_app_loads());
    for request in &public {
        assert_eq!(routed_to(&paths, request), api, "{request} is public");
    }
    for request in [
        "/",
        "/metrics",
        "/readyz",
        "/healthz",
        "/openapi.json",
        "/apiv1",
        "/miniappx/app.js",
    ] {
        assert_eq!(
            routed_to(&paths, request),
            None,
            "{request} stays in-cluster"
        );
    }
}

const INGRESS_ON: [&str; 2] = [
    "api.ingress.enabled=true",
    "api.ingress.host=vpn.example.test",
];

#[test]
fn polling_mode_renders_no_webhook_service_port_path_or_settings() {
    let docs = render(&[&INGRESS_ON[..], &["networkPolicy.enabled=true"]].concat());
    assert!(
        of_kind(&docs, "Service")
            .iter()
            .all(|s| name_of(s) != format!("{}-webhook", component("bot"))),
        "no webhook Service in polling mode"
    );
    let spec = pod_spec(&docs, &component("bot"));
    let ports: Vec<String> = spec.containers[0]
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    assert_eq!(ports, ["metrics"]);
    let bot_env = env(&spec);
    assert_eq!(
        value_of(&bot_env, "WGSUB_BOT_MODE").as_deref(),
        Some("polling")
    );
    assert!(
        bot_env
            .iter()
            .all(|e| !e.name.starts_with("WGSUB_BOT_WEBHOOK_")),
        "no webhook settings in polling mode"
    );
    assert_eq!(ingress_paths(&docs), public_api_paths());
    let policy = find(&docs, "NetworkPolicy", &component("bot"));
    assert_eq!(policy["spec"]["ingress"].as_array().unwrap().len(), 1);
}

#[test]
fn webhook_mode_renders_the_bots_service_ingress_path_policy_and_settings() {
    let webhook_service = format!("{}-webhook", component("bot"));
    for (url, path) in [
        (None, "/telegram/webhook"),
        (Some("https://vpn.example.test/tg/updates"), "/tg/updates"),
    ] {
        let url_set = url.map(|u| format!("bot.webhook.url={u}"));
        let mut sets = vec![
            "bot.mode=webhook",
            "bot.webhook.existingSecret=tg-hook",
            "bot.webhook.secretKey=token",
            "networkPolicy.enabled=true",
            "networkPolicy.apiFrom[0].ipBlock.cidr=10.42.0.0/16",
        ];
        sets.extend(INGRESS_ON);
        sets.extend(url_set.as_deref());
        let docs = render(&sets);

        let spec = pod_spec(&docs, &component("bot"));
        let bot_env = env(&spec);
        assert_eq!(
            value_of(&bot_env, "WGSUB_BOT_MODE").as_deref(),
            Some("webhook")
        );
        assert_eq!(
            value_of(&bot_env, "WGSUB_BOT_WEBHOOK_URL"),
            Some(format!("https://vpn.example.test{path}"))
        );
        assert_eq!(
            value_of(&bot_env, "WGSUB_BOT_WEBHOOK_LISTEN").as_deref(),
            Some("0.0.0.0:8443")
        );
        let secret = bot_env
            .iter()
            .find(|e| e.name == "WGSUB_BOT_WEBHOOK_SECRET")
            .expect("the bot gets its webhook secret");
        assert!(
            secret.value.is_none(),
            "the webhook secret is never a value"
        );
        let reference = secret
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("the webhook secret comes from a Secret");
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            ("tg-hook", "token")
        );
        assert!(
            spec.containers[0]
                .ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref() == Some("webhook") && p.container_port == 8443)
        );

        let service = find(&docs, "Service", &webhook_service);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
        assert_eq!(service["spec"]["ports"][0]["port"], 8443);
        assert_eq!(
            service["spec"]["selector"]["app.kubernetes.io/component"],
            "bot"
        );

        assert!(ingress_paths(&docs).contains(&(
            path.to_owned(),
            "Exact".to_owned(),
            webhook_service.clone(),
            "webhook".to_owned()
        )));

        let policy = find(&docs, "NetworkPolicy", &component("bot"));
        let webhook_rule = policy["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["ports"][0]["port"] == "webhook")
            .expect("the bot's policy lets the webhook port in");
        assert_eq!(
            webhook_rule["from"][0]["ipBlock"]["cidr"], "10.42.0.0/16",
            "from where the api may be reached"
        );
    }
}

#[test]
fn webhook_mode_without_the_ingress_renders_no_ingress_path() {
    let docs = render(&[
        "bot.mode=webhook",
        "bot.webhook.url=https://bot.example.test/hook",
    ]);
    assert!(of_kind(&docs, "Ingress").is_empty());
    find(&docs, "Service", &format!("{}-webhook", component("bot")));
}

#[test]
fn the_default_server_keeps_clients_apart_and_blocks_nothing_extra_unless_asked() {
    let server_on = [
        "defaultServer.create=true",
        "defaultServer.endpoint=vpn.example.test:51820",
    ];
    let docs = render(&server_on);
    let nat = &find(&docs, "WgServer", "main")["spec"]["nat"];
    assert_eq!(nat["enabled"], true);
    assert_eq!(nat["clientToClient"], false, "isolation is the default");
    assert!(
        nat.get("blockedDestinations").is_none(),
        "no list beyond the ranges the node-agent always refuses: {nat}"
    );
    // Values of a release made before the options (helm upgrade --reuse-values) lack them.
    let docs = render(
        &[
            &server_on[..],
            &[
                "defaultServer.nat.clientToClient=null",
                "defaultServer.nat.blockedDestinations=null",
            ],
        ]
        .concat(),
    );
    let nat = &find(&docs, "WgServer", "main")["spec"]["nat"];
    assert_eq!(nat["clientToClient"], false);
    assert!(nat.get("blockedDestinations").is_none());

    let docs = render(
        &[
            &server_on[..],
            &[
                "defaultServer.nat.clientToClient=true",
                "defaultServer.nat.blockedDestinations={203.0.113.0/24,2001:db8::/32}",
            ],
        ]
        .concat(),
    );
    let nat = &find(&docs, "WgServer", "main")["spec"]["nat"];
    assert_eq!(nat["clientToClient"], true);
    assert_eq!(
        nat["blockedDestinations"],
        serde_json::json!(["203.0.113.0/24", "2001:db8::/32"])
    );
}

#[test]
fn the_default_server_can_speak_amneziawg_with_chosen_or_given_parameters() {
    let server_on = [
        "defaultServer.create=true",
        "defaultServer.endpoint=vpn.example.test:51820",
    ];
    let spec = |sets: &[&str]| {
        find(
            &render(&[&server_on[..], sets].concat()),
            "WgServer",
            "main",
        )["spec"]
            .clone()
    };
    let plain = spec(&[]);
    assert_eq!(plain["protocol"], "wireguard");
    assert!(plain.get("amneziawg").is_none(), "{plain}");

    // No parameters: the operator chooses them.
    let chosen = spec(&["defaultServer.protocol=amneziawg"]);
    assert_eq!(chosen["protocol"], "amneziawg");
    assert!(chosen.get("amneziawg").is_none(), "{chosen}");

    // Given ones go into the resource as its schema types them: numbers, and headers as strings
    // whether written as a number or a range.
    let given = spec(&[
        "defaultServer.protocol=amneziawg",
        "defaultServer.amneziawg.jc=4",
        "defaultServer.amneziawg.jmax=70",
        "defaultServer.amneziawg.h1=1234567",
        "defaultServer.amneziawg.h2=100-200",
        "defaultServer.amneziawg.version=1.5",
    ]);
    assert_eq!(
        given["amneziawg"],
        serde_json::json!({"version": "1.5", "jc": 4, "jmax": 70, "h1": "1234567", "h2": "100-200"})
    );

    let typed: wgsub_crds::WgServerSpec =
        serde_json::from_value(given.clone()).expect("the rendered spec is a WgServerSpec");
    assert_eq!(wgsub_crds::amnezia::validate(&typed), Vec::new());

    let refused = try_render(&[&server_on[..], &["defaultServer.amneziawg.jc=4"]].concat())
        .expect_err("parameters on a WireGuard server");
    assert!(
        refused.contains("defaultServer.protocol=amneziawg"),
        "{refused}"
    );
    let refused = try_render(&[&server_on[..], &["defaultServer.protocol=openvpn"]].concat())
        .expect_err("an unknown protocol");
    assert!(refused.contains("protocol"), "{refused}");

    // amneziawg-go's UAPI socket directory is writable under the read-only root filesystem.
    let docs = render(&[]);
    let agent = find(&docs, "DaemonSet", &component("node-agent"));
    let mounts = &agent["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    assert!(
        mounts
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/var/run/amneziawg"),
        "{mounts}"
    );
}

#[test]
fn the_default_server_can_be_offered_as_a_location_with_a_country_names_and_capacity() {
    let server_on = [
        "defaultServer.create=true",
        "defaultServer.endpoint=vpn.example.test:51820",
    ];
    let spec = |sets: &[&str]| {
        find(
            &render(&[&server_on[..], sets].concat()),
            "WgServer",
            "main",
        )["spec"]
            .clone()
    };
    assert!(
        spec(&[]).get("location").is_none(),
        "not offered by default"
    );
    // Values of a release made before the option (helm upgrade --reuse-values) lack it.
    assert!(
        spec(&["defaultServer.location=null"])
            .get("location")
            .is_none()
    );

    let offered = spec(&[
        "defaultServer.location.country=DE",
        "defaultServer.location.displayName.ru=Германия",
        "defaultServer.location.displayName.en=Germany",
        "defaultServer.location.capacity=300",
    ]);
    assert_eq!(
        offered["location"],
        serde_json::json!({
            "displayName": {"ru": "Германия", "en": "Germany"},
            "country": "DE",
            "capacity": 300,
            "hidden": false,
        })
    );
    let typed: wgsub_crds::WgServerSpec =
        serde_json::from_value(offered).expect("the rendered spec is a WgServerSpec");
    assert_eq!(typed.location.unwrap().capacity, Some(300));

    let refused = try_render(&[&server_on[..], &["defaultServer.location.country=DE"]].concat())
        .expect_err("a country without names");
    assert!(refused.contains("displayName.ru"), "{refused}");
    for bad in [
        "defaultServer.location.country=de",
        "defaultServer.location.capacity=0",
    ] {
        try_render(&[&server_on[..], &[bad]].concat()).expect_err(bad);
    }
}
