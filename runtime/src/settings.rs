//! Value parsers of the settings several binaries share: Kubernetes object names (namespaces,
//! Lease names, WgServer names) and a replica's identity in a leader Lease, with the identity
//! every replica falls back to (its host name, which Kubernetes makes the pod name).

/// A Kubernetes object name (DNS-1123 label: lower-case alphanumerics and '-', at most 63).
pub fn kubernetes_name(text: &str) -> Result<String, String> {
    if wgsub_crds::resources::is_dns_label(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a Kubernetes name (lower-case letters, digits and '-', at most 63)"
        ))
    }
}

/// A replica's identity in a Lease: 1 to 128 characters, not only blanks.
pub fn identity(text: &str) -> Result<String, String> {
    if text.trim().is_empty() || text.len() > 128 {
        return Err("the identity must be 1 to 128 characters".to_owned());
    }
    Ok(text.to_owned())
}

/// `given` (`--identity`), else the host name (the pod name), else `<binary>-<process id>`.
pub fn replica_identity(given: Option<&str>, binary: &str) -> String {
    given.map(str::to_owned).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("{binary}-{}", std::process::id()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_are_dns_labels() {
        assert_eq!(kubernetes_name("vpn-keys"), Ok("vpn-keys".to_owned()));
        for bad in ["", "Upper", "under_score", "-lead", &"a".repeat(64)] {
            let error = kubernetes_name(bad).unwrap_err();
            assert!(error.contains("not a Kubernetes name"), "{bad}: {error}");
        }
    }

    #[test]
    fn an_identity_is_one_to_128_characters() {
        assert_eq!(
            identity("wgsub-bot-5d9c7"),
            Ok("wgsub-bot-5d9c7".to_owned())
        );
        for bad in ["", "  ", &"x".repeat(129)] {
            assert!(identity(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn without_an_identity_a_replica_is_named_by_its_host() {
        assert_eq!(replica_identity(Some("pod-1"), "wgsub-test"), "pod-1");
        let fallback = replica_identity(None, "wgsub-test");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        if host.is_empty() {
            assert!(fallback.starts_with("wgsub-test-"), "{fallback}");
        } else {
            assert_eq!(fallback, host);
        }
    }
}
