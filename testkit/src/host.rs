//! What a test needs of the machine it runs on, checked up front: a test that needs root or a
//! tool fails with a message saying so, never passes silently.

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Fails unless the process runs as root with every one of `tools` on `PATH`. `who` names the
/// test(s) in the message, `why` says what root is for.
pub fn require_root_and_tools(who: &str, why: &str, tools: &[&str]) {
    assert!(
        is_root(),
        "{who} needs root ({why}): run it as root, e.g. with scripts/test"
    );
    for tool in tools {
        assert!(
            on_path(tool),
            "{who} needs `{tool}` on PATH (scripts/install-test-deps installs it)"
        );
    }
}
