//! The Dockerfile and the chart agree: every binary a chart container runs is a `[[bin]]` of a
//! workspace crate, the Dockerfile builds that crate and copies the binary into the image target
//! the chart uses for it; the runtime stages are what the chart's securityContexts assume
//! (non-root distroless for the three services, the WireGuard tools for the node-agent). No
//! container engine runs here, so this is checked by reading the Dockerfile.

use std::collections::BTreeMap;

use crate::support::{component, find, render, repo_root};

/// The Dockerfile's stages: name → the lines of the stage (the `FROM` line first).
fn stages() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile"))
        .expect("Dockerfile at the repository root");
    // Join continuation lines so that one instruction is one line.
    let joined = text.replace("\\\n", " ");
    let mut stages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(from) = line.strip_prefix("FROM ") {
            let words: Vec<&str> = from.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => panic!("every Dockerfile stage is named: {line}"),
            };
            current = Some(name.clone());
            stages.insert(name, vec![line.to_owned()]);
        } else if let Some(stage) = &current {
            stages.get_mut(stage).unwrap().push(line.to_owned());
        }
    }
    stages
}

/// The binaries (`[[bin]]` names) a crate's manifest declares.
fn bins_of(crate_dir: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(repo_root().join(crate_dir).join("Cargo.toml")).unwrap();
    let mut bins = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
            bins.push(name.trim_matches('"').to_owned());
        }
    }
    bins
}

fn package_of(crate_dir: &str) -> String {
    let manifest = std::fs::read_to_string(repo_root().join(crate_dir).join("Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .map(|n| n.trim_matches('"').to_owned())
        .expect("a package name")
}

#[test]
fn every_binary_the_chart_runs_is_built_and_copied_into_its_image() {
    let stages = stages();
    let build = stages.get("build").expect("a build stage");
    let cargo = build
        .iter()
        .find(|l| l.contains("cargo build"))
        .expect("the build stage runs cargo build");
    assert!(
        cargo.contains("--release") && cargo.contains("--locked"),
        "{cargo}"
    );
    let docs = render(&[]);
    for (crate_dir, workload, kind, stage) in [
        ("operator", "operator", "Deployment", "wgsub"),
        ("api", "api", "Deployment", "wgsub"),
        ("bot", "bot", "Deployment", "wgsub"),
        ("api", "migrate", "Job", "wgsub"),
        ("node-agent", "node-agent", "DaemonSet", "node-agent"),
    ] {
        let doc = find(&docs, kind, &component(workload));
        let container = &doc["spec"]["template"]["spec"]["containers"][0];
        let command = container["command"][0]
            .as_str()
            .expect("the chart sets the command");
        let binary = command
            .strip_prefix("/usr/local/bin/")
            .expect("binaries live in /usr/local/bin");
        assert!(
            bins_of(crate_dir).iter().any(|b| b == binary),
            "{crate_dir}/Cargo.toml declares no [[bin]] {binary} (the chart runs {command})"
        );
        let package = package_of(crate_dir);
        assert!(
            cargo.contains(&format!("-p {package}")),
            "the Dockerfile does not build {package}: {cargo}"
        );
        assert!(
            build
                .iter()
                .any(|l| l.contains(&format!("target/release/{binary}"))),
            "the build stage does not collect {binary}"
        );
        let target = stages
            .get(stage)
            .unwrap_or_else(|| panic!("no Dockerfile target {stage}"));
        assert!(
            target.iter().any(|l| l.starts_with("COPY --from=build")
                && l.contains(&format!("/out/{binary}"))
                && l.ends_with("/usr/local/bin/")),
            "target {stage} does not copy {binary} to /usr/local/bin/"
        );
        let image = container["image"].as_str().unwrap();
        let expected_repository = if stage == "node-agent" {
            "ghcr.io/wgsub/wgsub-node-agent:"
        } else {
            "ghcr.io/wgsub/wgsub:"
        };
        assert!(
            image.starts_with(expected_repository),
            "{workload} runs {image}, built by target {stage}"
        );
    }
}

#[test]
fn the_service_image_is_distroless_and_non_root_and_the_agent_image_has_the_wireguard_tools() {
    let stages = stages();
    let wgsub = &stages["wgsub"];
    assert!(
        wgsub[0].contains("gcr.io/distroless/") && wgsub[0].contains(":nonroot"),
        "{}",
        wgsub[0]
    );
    assert!(
        wgsub.iter().any(|l| l == "USER 65532:65532"),
        "the chart runs the services as uid 65532"
    );
    let agent = &stages["node-agent"];
    let install = agent
        .iter()
        .find(|l| l.contains("apt-get install"))
        .expect("the agent image installs packages");
    for package in ["wireguard-go", "iproute2", "nftables", "iptables"] {
        assert!(
            install.split_whitespace().any(|w| w == package),
            "node-agent image lacks {package}: {install}"
        );
    }
    assert!(
        install.contains("--no-install-recommends")
            && install.contains("rm -rf /var/lib/apt/lists")
    );
}

#[test]
fn the_agent_image_carries_amneziawg_go_built_from_its_pinned_upstream_tag() {
    let stages = stages();
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let tag = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG AMNEZIAWG_GO_VERSION="))
        .expect("the Dockerfile pins AMNEZIAWG_GO_VERSION");
    assert!(
        tag.starts_with('v') && tag[1..].split('.').all(|n| n.parse::<u32>().is_ok()),
        "AMNEZIAWG_GO_VERSION is a release tag, not a branch: {tag}"
    );
    let builder = &stages["amneziawg-go"];
    let build = builder
        .iter()
        .find(|l| l.starts_with("RUN git clone"))
        .expect("the amneziawg-go stage clones the upstream source");
    for part in [
        "--branch \"${AMNEZIAWG_GO_VERSION}\"",
        "https://github.com/amnezia-vpn/amneziawg-go.git",
        "go mod verify",
        "go build",
        "-o /out/amneziawg-go",
    ] {
        assert!(build.contains(part), "{part} missing: {build}");
    }
    let agent = &stages["node-agent"];
    assert!(
        agent
            .iter()
            .any(|l| l == "COPY --from=amneziawg-go /out/amneziawg-go /usr/local/bin/"),
        "the node-agent image does not carry amneziawg-go on its PATH"
    );
}

#[test]
fn the_build_image_uses_the_pinned_toolchain() {
    let toolchain = std::fs::read_to_string(repo_root().join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .map(|c| c.trim_matches('"').to_owned())
        .expect("rust-toolchain.toml pins a channel");
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile
            .lines()
            .any(|l| l == format!("ARG RUST_VERSION={channel}")),
        "the Dockerfile's RUST_VERSION is not the pinned {channel}"
    );
}
