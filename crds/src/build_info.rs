//! What a binary was built from, for its `build_info` metric: the workspace version, the git
//! commit (`WGSUB_GIT_COMMIT` in the build's environment, e.g. the release workflow's
//! `github.sha`; `unknown` when unset or empty) and the compiler's version.

/// The workspace version (`Cargo.toml`), which the chart's `appVersion` and image tags follow.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from, or `unknown`.
pub const GIT_COMMIT: &str = match option_env!("WGSUB_GIT_COMMIT") {
    Some(commit) if !commit.is_empty() => commit,
    _ => "unknown",
};

/// The version of the rustc that compiled the workspace, e.g. `1.95.0`.
pub const RUSTC: &str = env!("WGSUB_RUSTC_VERSION");

/// The labels of every binary's `build_info` gauge.
pub const LABELS: [(&str, &str); 3] = [
    ("version", VERSION),
    ("git_commit", GIT_COMMIT),
    ("rustc", RUSTC),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_the_workspace_version_and_a_real_compiler() {
        assert_eq!(VERSION.split('.').count(), 3, "{VERSION}");
        let mut parts = RUSTC.split('.');
        assert!(
            parts
                .next()
                .is_some_and(|major| major.parse::<u32>().is_ok()),
            "rustc version {RUSTC}"
        );
        assert!(!GIT_COMMIT.is_empty());
    }
}
