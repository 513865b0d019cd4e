//! Each binary accepts the settings the chart gives it: every `WGSUB_*` variable a container
//! gets is one its clap command reads, and the binary's own parsing and validation accept the
//! rendered values (Secret and downward-API values are stood in for by made-up ones).

use std::collections::BTreeSet;

use clap::{Arg, ArgAction, Command, CommandFactory};
use serde_json::Value;

use crate::support::{NAMESPACE, component, find, render, render_every_option_on};

/// The quick start's minimal install: the public URL is what every component needs.
const PUBLIC_URL: &str = "api.publicUrl=https://vpn.example.test";

/// The made-up stand-in for a Secret's value, by the key it is read from.
fn stand_in_for_secret(key: &str) -> String {
    let pid = std::process::id();
    match key {
        "url" | "uri" => format!("postgres://wgsub:made-up-{pid}@db.example.test:5432/wgsub"),
        "bot-token" | "token" => format!("{pid}:made-up-token-{pid}"),
        other => format!("made-up-{other}-{pid}"),
    }
}

/// The command line a container's command and environment stand for: the command's own
/// arguments (a subcommand), then `--flag=value` for every variable. A file the chart mounts
/// from a ConfigMap is written to a temporary file with the rendered content.
fn arguments(docs: &[Value], kind: &str, workload: &str, command: &Command) -> Vec<String> {
    let doc = find(docs, kind, &component(workload));
    let container = &doc["spec"]["template"]["spec"]["containers"][0];
    let mut args = vec![command.get_name().to_owned()];
    let leading: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let subcommand = leading.first().map(|name| {
        command
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("{} has no subcommand {name}", command.get_name()))
    });
    args.extend(leading.iter().cloned());
    for var in container["env"].as_array().expect("the container has env") {
        let name = var["name"].as_str().unwrap();
        if !name.starts_with("WGSUB_") {
            // The C library's own settings (MALLOC_ARENA_MAX) are not the binary's.
            continue;
        }
        let value = if let Some(value) = var["value"].as_str() {
            mounted_file(docs, doc, container, value).unwrap_or_else(|| value.to_owned())
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match field {
                "metadata.namespace" => NAMESPACE.to_owned(),
                "metadata.name" => format!("{}-5d9c7-x2x4q", component(workload)),
                "spec.nodeName" => "vpn-1".to_owned(),
                other => panic!("{workload}: no stand-in for the downward API field {other}"),
            }
        } else if let Some(key) = var["valueFrom"]["secretKeyRef"]["key"].as_str() {
            stand_in_for_secret(key)
        } else {
            panic!("{workload}: {name} has neither a value nor a known valueFrom");
        };
        let arg = command
            .get_arguments()
            .chain(subcommand.into_iter().flat_map(|s| s.get_arguments()))
            .find(|a| a.get_env().and_then(|e| e.to_str()) == Some(name))
            .unwrap_or_else(|| {
                panic!(
                    "the chart gives {workload} {name}, which {} does not read",
                    command.get_name()
                )
            });
        let long = arg.get_long().expect("every setting has a long flag");
        if arg.get_action().takes_values() {
            args.push(format!("--{long}={value}"));
        } else if switch_is_on(arg, name, &value) {
            args.push(format!("--{long}"));
        }
    }
    args
}

/// A switch (a flag taking no value, like `--database-pgbouncer`) set from its variable: clap
/// parses the variable's value with the flag's own value parser, so does this (on a copy of the
/// flag that takes the value); `true` stands for the flag given, `false` for it left out,
/// anything else fails the test.
fn switch_is_on(arg: &Arg, name: &str, value: &str) -> bool {
    assert!(
        matches!(arg.get_action(), ArgAction::SetTrue),
        "{name} sets a flag of action {:?}, which the chart does not use",
        arg.get_action()
    );
    let long = arg.get_long().expect("every setting has a long flag");
    let taking_the_value = arg.clone().action(ArgAction::Set).required(false);
    let matches = Command::new("switch")
        .arg(taking_the_value)
        .try_get_matches_from(["switch".to_owned(), format!("--{long}={value}")])
        .unwrap_or_else(|e| panic!("{name}={value} is refused: {e}"));
    matches
        .get_one::<bool>(arg.get_id().as_str())
        .copied()
        .unwrap_or_else(|| panic!("{name} is a switch whose value is not a bool"))
}

/// When `value` is a path inside a ConfigMap volume of the pod, a temporary copy of the
/// rendered file (kept for the test's lifetime) and its path.
fn mounted_file(
    docs: &[Value],
    workload: &Value,
    container: &Value,
    value: &str,
) -> Option<String> {
    let mount = container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| value.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))?;
    let file = value.strip_prefix(&format!("{}/", mount["mountPath"].as_str()?))?;
    let volume = workload["spec"]["template"]["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == mount["name"])?;
    let config_map = volume["configMap"]["name"].as_str()?;
    let content = find(docs, "ConfigMap", config_map)["data"][file]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {config_map} has no {file}"));
    let dir = std::env::temp_dir().join(format!("wgsub-chart-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, content).unwrap();
    Some(path.to_str().unwrap().to_owned())
}

fn operator(docs: &[Value]) -> Result<(), String> {
    use wgsub_operator::config::Config;
    let args = arguments(docs, "Deployment", "operator", &Config::command());
    Config::try_parse_checked(&args)
        .map(drop)
        .map_err(|e| format!("{args:?}: {e}"))
}

fn node_agent(docs: &[Value]) -> Result<(), String> {
    use wgsub_node_agent::config::Config;
    let args = arguments(docs, "DaemonSet", "node-agent", &Config::command());
    let config =
        clap::Parser::try_parse_from(&args).map_err(|e: clap::Error| format!("{args:?}: {e}"))?;
    Config::validate(&config).map_err(|e| format!("{args:?}: {e}"))
}

fn bot_with(docs: &[Value], extra: &[&str]) -> Result<(), String> {
    use wgsub_bot::config::Config;
    let mut args = arguments(docs, "Deployment", "bot", &Config::command());
    args.extend(extra.iter().map(|a| a.to_string()));
    let config =
        clap::Parser::try_parse_from(&args).map_err(|e: clap::Error| format!("{args:?}: {e}"))?;
    Config::validate(&config).map_err(|e| format!("{args:?}: {e}"))
}

fn api(docs: &[Value], workload: &str, kind: &str) -> Result<(), String> {
    use wgsub_api::config::{Cli, Command as ApiCommand};
    let args = arguments(docs, kind, workload, &Cli::command());
    let cli: Cli =
        clap::Parser::try_parse_from(&args).map_err(|e: clap::Error| format!("{args:?}: {e}"))?;
    match cli.command {
        ApiCommand::Serve(serve) => serve
            .return_url()
            .map(drop)
            .map_err(|e| format!("{args:?}: {e}")),
        ApiCommand::Migrate(_) => Ok(()),
        ApiCommand::Import(_) => Err(format!("{args:?}: the chart never runs an import")),
    }
}

/// The variables a workload's container gets.
fn variables_given(docs: &[Value], kind: &str, workload: &str) -> BTreeSet<String> {
    let doc = find(docs, kind, &component(workload));
    doc["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("the container has env")
        .iter()
        .map(|var| var["name"].as_str().unwrap().to_owned())
        .filter(|name| name.starts_with("WGSUB_"))
        .collect()
}

/// The variables a command (with the named subcommand's) reads.
fn variables_read(command: &Command, subcommand: Option<&str>) -> BTreeSet<String> {
    let sub = subcommand.map(|name| command.find_subcommand(name).unwrap());
    command
        .get_arguments()
        .chain(sub.into_iter().flat_map(|s| s.get_arguments()))
        .filter_map(|a| a.get_env()?.to_str().map(str::to_owned))
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// With every option on, the chart sets every setting the api and the bot read except the ones
/// it leaves at the binary's default on purpose (API base URLs, which only tests point
/// elsewhere, and tuning, which `extraEnv` can set): a setting a binary gains is caught here
/// until the chart passes it or it is added to these lists.
#[test]
fn with_every_option_on_the_api_and_the_bot_get_every_setting_they_read_but_the_defaults_kept() {
    let docs = render_every_option_on();
    let api = wgsub_api::config::Cli::command();
    let kept_by_the_api = names(&[
        "WGSUB_DATABASE_MAX_CONNECTIONS",
        "WGSUB_YOOKASSA_API_URL",
        "WGSUB_TELEGRAM_API_URL",
        "WGSUB_YOOKASSA_ALLOWED_IPS",
        "WGSUB_MAX_BODY_BYTES",
    ]);
    let read: BTreeSet<String> = variables_read(&api, Some("serve"))
        .difference(&kept_by_the_api)
        .cloned()
        .collect();
    assert_eq!(variables_given(&docs, "Deployment", "api"), read);
    let migrate: BTreeSet<String> = variables_read(&api, Some("migrate"))
        .difference(&kept_by_the_api)
        .cloned()
        .collect();
    assert_eq!(variables_given(&docs, "Job", "migrate"), migrate);

    let bot = wgsub_bot::config::Config::command();
    let kept_by_the_bot = names(&[
        "WGSUB_TELEGRAM_API_URL",
        "WGSUB_DATABASE_MAX_CONNECTIONS",
        "WGSUB_YOOKASSA_API_URL",
        "WGSUB_BOT_REMINDER_INTERVAL",
        "WGSUB_BOT_OUTBOX_INTERVAL",
        "WGSUB_BOT_RENEWAL_INTERVAL",
        "WGSUB_BOT_BROADCAST_RATE",
        "WGSUB_LEASE_DURATION",
    ]);
    let read: BTreeSet<String> = variables_read(&bot, None)
        .difference(&kept_by_the_bot)
        .cloned()
        .collect();
    assert_eq!(variables_given(&docs, "Deployment", "bot"), read);
}

#[test]
fn a_switch_is_given_when_its_value_is_true_and_left_out_when_false() {
    use wgsub_api::config::Cli;
    for (value, given) in [("true", true), ("false", false)] {
        let docs = render(&[PUBLIC_URL, &format!("database.pgbouncer={value}")]);
        let args = arguments(&docs, "Deployment", "api", &Cli::command());
        assert_eq!(
            args.iter().any(|a| a == "--database-pgbouncer"),
            given,
            "{args:?}"
        );
        api(&docs, "api", "Deployment").unwrap();
    }
}

#[test]
fn the_api_and_its_migrations_job_accept_the_charts_settings() {
    for docs in [render(&[PUBLIC_URL]), render_every_option_on()] {
        api(&docs, "api", "Deployment").unwrap();
        api(&docs, "migrate", "Job").unwrap();
    }
}

#[test]
fn the_operator_accepts_the_charts_settings() {
    for docs in [render(&[PUBLIC_URL]), render_every_option_on(), render(&[])] {
        operator(&docs).unwrap();
    }
}

#[test]
fn the_node_agent_accepts_the_charts_settings() {
    for docs in [render(&[PUBLIC_URL]), render_every_option_on(), render(&[])] {
        node_agent(&docs).unwrap();
    }
}

#[test]
fn the_bot_accepts_the_charts_settings() {
    for docs in [render(&[PUBLIC_URL]), render_every_option_on()] {
        bot_with(&docs, &[]).unwrap();
    }
}

#[test]
fn without_a_public_url_the_bot_lacks_exactly_the_urls_derived_from_it() {
    let docs = render(&[]);
    let refused = bot_with(&docs, &[]).expect_err("the bot cannot start without its Mini App URL");
    assert!(refused.contains("--miniapp-url"), "{refused}");
    bot_with(
        &docs,
        &[
            "--miniapp-url=https://vpn.example.test/miniapp/",
            "--yookassa-return-url=https://vpn.example.test/miniapp/",
        ],
    )
    .unwrap();
}

#[test]
fn a_setting_the_binary_does_not_read_is_caught() {
    let mut docs = render(&[PUBLIC_URL]);
    let doc = docs
        .iter_mut()
        .find(|d| {
            d["kind"] == "Deployment" && d["metadata"]["name"] == component("operator").as_str()
        })
        .unwrap();
    doc["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "WGSUB_NO_SUCH_SETTING", "value": "1"}));
    let caught =
        std::panic::catch_unwind(|| operator(&docs)).expect_err("an unknown variable is refused");
    let message = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("WGSUB_NO_SUCH_SETTING"), "{message}");
}
