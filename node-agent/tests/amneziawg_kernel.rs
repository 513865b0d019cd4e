//! The AmneziaWG kernel backend's choice against this machine's real kernel: the generic
//! netlink lookup of the `amneziawg` family really runs (it finds the controller's own family
//! `nlctrl`, so an absent `amneziawg` is the kernel's answer, not a failed request), `auto`
//! resolves to the module exactly when the kernel has it and to amneziawg-go otherwise, and an
//! explicit `--amneziawg-backend kernel` stops the binary at start naming the setting when the
//! module is absent. Which branch runs is decided by `/sys/module/amneziawg` after the lookup
//! (which loads the module where the kernel can); the development and CI kernels have no
//! AmneziaWG module, so there the absent branch is the one exercised.

use std::path::Path;
use std::process::Command;

use clap::Parser;
use wgsub_node_agent::awg_kernel::{AwgImplementation, KernelAwg, Probe, family_version_of};
use wgsub_node_agent::config::Config;

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-node-agent");

fn module_loaded() -> bool {
    Path::new("/sys/module/amneziawg").exists()
}

fn config(backend: &str) -> Config {
    Config::try_parse_from([
        "wgsub-node-agent",
        "--node-name",
        "n1",
        "--namespace",
        "wgsub",
        "--amneziawg-backend",
        backend,
        // Any runnable file stands in for amneziawg-go: only the choice is under test.
        "--amneziawg-go",
        "sh",
    ])
    .unwrap()
}

#[test]
fn the_family_lookup_asks_the_kernel_and_matches_the_loaded_module() {
    let controller = family_version_of("nlctrl").unwrap();
    assert!(
        controller.is_some(),
        "the generic netlink controller answers for its own family"
    );
    let probe = KernelAwg::probe().unwrap();
    if module_loaded() {
        assert!(
            matches!(probe, Probe::Found(_) | Probe::UnknownVersion(_)),
            "{probe:?}"
        );
    } else {
        assert_eq!(probe, Probe::Absent);
        assert_eq!(family_version_of("amneziawg").unwrap(), None);
    }
}

#[test]
fn auto_resolves_to_the_module_only_when_the_kernel_has_it() {
    let settings = config("auto").agent_settings();
    match settings.amneziawg {
        Some(AwgImplementation::KernelOrUserspace(_, userspace)) => {
            assert!(module_loaded(), "the kernel was chosen without a module");
            assert!(userspace.binary.ends_with("sh"));
        }
        Some(AwgImplementation::Userspace(userspace)) => {
            assert!(!module_loaded(), "auto passed over a loaded module");
            assert!(userspace.binary.ends_with("sh"));
        }
        other => panic!("auto with amneziawg-go found: {other:?}"),
    }
    assert!(
        config("auto").validate().is_ok(),
        "auto never stops the agent"
    );
    assert!(matches!(
        config("userspace").agent_settings().amneziawg,
        Some(AwgImplementation::Userspace(_))
    ));
}

#[test]
fn an_explicit_kernel_choice_stops_the_agent_at_start_without_the_module() {
    let validated = config("kernel").validate();
    if module_loaded() {
        assert!(validated.is_ok(), "{validated:?}");
        return;
    }
    let error = validated.unwrap_err().to_string();
    assert!(error.starts_with("invalid --amneziawg-backend:"), "{error}");
    assert!(error.contains("\"amneziawg\" does not resolve"), "{error}");
    // The binary itself: exit code 2 and the setting named, before any cluster is contacted.
    let output = Command::new(BINARY)
        .args(["--node-name", "n1", "--namespace", "wgsub"])
        .env("WGSUB_AMNEZIAWG_BACKEND", "kernel")
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("wgsub-node-agent: invalid --amneziawg-backend: the AmneziaWG kernel module is not available"),
        "{stderr}"
    );
}

#[test]
fn help_documents_the_amneziawg_backend_choice() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let section = help
        .split_once("--amneziawg-backend <AMNEZIAWG_BACKEND>")
        .and_then(|(_, rest)| rest.split_once("--amneziawg-go <AMNEZIAWG_GO>"))
        .map(|(section, _)| section)
        .unwrap_or_else(|| panic!("--help has no --amneziawg-backend:\n{help}"));
    for needed in [
        "- auto:",
        "- kernel:",
        "- userspace:",
        "generic netlink family `amneziawg`",
        "[env: WGSUB_AMNEZIAWG_BACKEND=]",
        "[default: auto]",
    ] {
        assert!(section.contains(needed), "lacks {needed:?}:\n{section}");
    }
}
