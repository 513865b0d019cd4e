//! Versions and images move together: the chart's `version` and `appVersion` are the
//! workspace's version, the default images are tagged with it, and the release workflow
//! (`.github/workflows/release.yml`) builds the chart's default image names from Dockerfile
//! targets that exist, for amd64 and arm64, tagged with the version it checked, and pushes the
//! packaged chart. The workflows' schema is checked by `scripts/test` (check-jsonschema).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{chart_dir, of_kind, render, repo_root};

fn yaml_file(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn chart() -> Value {
    yaml_file(&chart_dir().join("Chart.yaml"))
}

fn values() -> Value {
    yaml_file(&chart_dir().join("values.yaml"))
}

fn release_workflow() -> Value {
    yaml_file(&repo_root().join(".github/workflows/release.yml"))
}

/// The workspace version: every crate inherits it (`version.workspace = true`), this one too.
const WORKSPACE_VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn the_charts_version_and_app_version_are_the_workspace_version() {
    let chart = chart();
    assert_eq!(
        chart["appVersion"], WORKSPACE_VERSION,
        "Chart.yaml appVersion"
    );
    assert_eq!(chart["version"], WORKSPACE_VERSION, "Chart.yaml version");
}

#[test]
fn default_images_are_the_values_repositories_tagged_with_the_app_version() {
    let values = values();
    assert_eq!(
        values["image"]["tag"], "",
        "image.tag defaults to appVersion"
    );
    assert_eq!(values["nodeAgent"]["image"]["tag"], "");
    let expected: BTreeSet<String> = [
        &values["image"]["repository"],
        &values["nodeAgent"]["image"]["repository"],
    ]
    .iter()
    .map(|repository| format!("{}:{WORKSPACE_VERSION}", repository.as_str().unwrap()))
    .collect();
    let docs = render(&[]);
    let mut images = BTreeSet::new();
    for kind in ["Deployment", "DaemonSet", "Job"] {
        for doc in of_kind(&docs, kind) {
            let pod = &doc["spec"]["template"]["spec"];
            for list in ["initContainers", "containers"] {
                for container in pod[list].as_array().into_iter().flatten() {
                    images.insert(container["image"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    assert_eq!(images, expected);
}

#[test]
fn the_release_workflow_builds_the_charts_default_images_for_both_architectures() {
    let workflow = release_workflow();
    assert_eq!(workflow["on"]["push"]["tags"], serde_json::json!(["v*"]));
    let values = values();
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let images = &workflow["jobs"]["images"];
    let matrix = images["strategy"]["matrix"]["include"]
        .as_array()
        .expect("an images matrix");
    let pushed: BTreeSet<(String, String)> = matrix
        .iter()
        .map(|entry| {
            (
                entry["target"].as_str().unwrap().to_owned(),
                entry["image"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("wgsub", &values["image"]["repository"]),
        ("node-agent", &values["nodeAgent"]["image"]["repository"]),
    ]
    .iter()
    .map(|(target, repository)| {
        (
            (*target).to_owned(),
            repository.as_str().unwrap().to_owned(),
        )
    })
    .collect();
    assert_eq!(pushed, expected);
    for (target, _) in &pushed {
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {target}"))),
            "the Dockerfile has no stage {target}"
        );
    }
    let steps = images["steps"].as_array().unwrap();
    let build = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action@"))
        })
        .expect("a build-push step");
    assert_eq!(build["with"]["target"], "${{ matrix.target }}");
    assert_eq!(build["with"]["platforms"], "linux/amd64,linux/arm64");
    assert_eq!(build["with"]["push"], true);
    assert_eq!(
        build["with"]["tags"],
        "${{ matrix.image }}:${{ needs.version.outputs.version }}"
    );
    assert!(
        build["with"]["build-args"]
            .as_str()
            .unwrap()
            .contains("WGSUB_GIT_COMMIT=${{ github.sha }}")
    );
    assert!(
        dockerfile.contains("ARG WGSUB_GIT_COMMIT"),
        "the build stage takes the commit"
    );
}

#[test]
fn the_release_checks_the_tag_against_the_versions_and_pushes_the_packaged_chart() {
    let workflow = release_workflow();
    let jobs = &workflow["jobs"];
    let check = jobs["version"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<String>();
    for read in [
        "Cargo.toml",
        "charts/wgsub/Chart.yaml",
        "appVersion",
        "exit 1",
    ] {
        assert!(check.contains(read), "the version check lacks {read}");
    }
    assert_eq!(jobs["images"]["needs"], "version");
    assert_eq!(
        jobs["chart"]["needs"],
        serde_json::json!(["version", "images"])
    );
    let chart_steps = jobs["chart"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<String>();
    assert!(chart_steps.contains("helm package charts/wgsub --destination dist"));
    assert!(chart_steps.contains("helm push \"dist/wgsub-$VERSION.tgz\" oci://ghcr.io/"));
    assert!(
        !chart_steps.contains("secrets."),
        "the token reaches helm through the environment, never the command line"
    );
}
