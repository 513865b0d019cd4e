//! What every binary's metrics share: a registry under the binary's prefix that already holds
//! `<prefix>_build_info`, and its text exposition for `/metrics`.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// A registry whose metrics are named `<prefix>_…`, holding `<prefix>_build_info` (what the
/// binary was built from: version, git commit, rustc; always 1).
pub fn registry(prefix: &str) -> Registry {
    let mut registry = Registry::with_prefix(prefix);
    let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    build_info
        .get_or_create(&wgsub_crds::build_info::LABELS.to_vec())
        .set(1);
    registry.register(
        "build_info",
        "What this binary was built from (version, git commit, rustc); always 1",
        build_info,
    );
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_names_version_commit_and_compiler() {
        use wgsub_crds::build_info::{GIT_COMMIT, RUSTC, VERSION};
        let text = encode(&registry("wgsub_test"));
        let expected = format!(
            "wgsub_test_build_info{{version=\"{VERSION}\",git_commit=\"{GIT_COMMIT}\",rustc=\"{RUSTC}\"}} 1"
        );
        assert!(text.contains(&expected), "{expected} missing from\n{text}");
    }

    #[test]
    fn the_exposition_ends_as_openmetrics_requires() {
        assert!(encode(&registry("wgsub_test")).ends_with("# EOF\n"));
    }
}
