//! The chart's `crds/` is a copy of the generated CRDs in the repository's `crds/`, and what the
//! chart renders for the custom resources and the plan catalogue is what the types accept.

use std::collections::BTreeSet;

use wgsub_crds::plans::PlanCatalogue;
use wgsub_crds::resources::WgServer;

use crate::support::{
    RELEASE, chart_dir, component, find, render, render_every_option_on, repo_root,
};

fn yaml_files(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect()
}

#[test]
fn the_charts_crds_are_identical_to_the_generated_ones() {
    let generated = repo_root().join("crds");
    let copied = chart_dir().join("crds");
    let files = yaml_files(&generated);
    assert_eq!(files.len(), 3, "three generated CRDs in crds/: {files:?}");
    assert_eq!(
        yaml_files(&copied),
        files,
        "charts/wgsub/crds holds exactly the generated CRDs"
    );
    for file in files {
        let want = std::fs::read(generated.join(&file)).unwrap();
        let have = std::fs::read(copied.join(&file)).unwrap();
        assert!(
            want == have,
            "charts/wgsub/crds/{file} differs from crds/{file}; copy it: cp crds/*.yaml charts/wgsub/crds/"
        );
    }
}

#[test]
fn the_default_server_the_chart_renders_is_a_valid_wgserver() {
    for docs in [
        render(&[
            "defaultServer.create=true",
            "defaultServer.endpoint=203.0.113.7:51820",
        ]),
        render_every_option_on(),
    ] {
        let doc = find(&docs, "WgServer", "main");
        assert_eq!(doc["apiVersion"], "wgsub.io/v1alpha1");
        let server: WgServer = serde_json::from_value(doc.clone()).expect("a WgServer");
        let spec = &server.spec;
        assert_eq!(spec.listen_port, 51820);
        assert_eq!(spec.interface_name, "wg0");
        assert_eq!(spec.address_pool, "10.8.0.0/24");
        assert_eq!(
            spec.private_key_secret_ref.name,
            format!("{RELEASE}-main-server-key")
        );
        assert!(spec.nat.as_ref().is_some_and(|n| n.enabled));
        assert!(spec.endpoint.ends_with(":51820"));
    }
}

#[test]
fn the_plans_configmap_is_a_valid_plan_catalogue() {
    let docs = render(&[]);
    let config = find(&docs, "ConfigMap", &component("plans"));
    let text = config["data"]["plans.yaml"].as_str().expect("plans.yaml");
    let catalogue = PlanCatalogue::from_yaml_str(text).expect("the chart's plans validate");
    let example = std::fs::read_to_string(repo_root().join("crds/examples/plans.yaml")).unwrap();
    assert_eq!(
        catalogue,
        PlanCatalogue::from_yaml_str(&example).unwrap(),
        "defaults are the example catalogue"
    );
}
