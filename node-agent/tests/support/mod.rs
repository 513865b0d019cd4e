//! What the node-agent's process tests share: a network namespace of their own for the agent's
//! wireguard-go interface, and creating an object on the real API server.

use std::process::Command;

use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

/// A network namespace of its own; removed on drop, with the wireguard-go socket.
pub struct Netns {
    pub name: String,
    pub interface: String,
}

impl Netns {
    /// A namespace `wgsub-<tag>-<pid>` for an interface `<short><pid>` (at most 15 characters).
    pub fn new(tag: &str, short: &str) -> Netns {
        let id = std::process::id() % 100_000;
        let netns = Netns {
            name: format!("wgsub-{tag}-{id}"),
            interface: format!("{short}{id}"),
        };
        let added = Command::new("ip")
            .args(["netns", "add", &netns.name])
            .output()
            .expect("ip runs");
        assert!(added.status.success(), "ip netns add: {added:?}");
        netns
    }

    /// The public keys of the interface's peers (none while it does not exist).
    pub fn peers(&self) -> Vec<String> {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "wg",
                "show",
                &self.interface,
                "peers",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.interface));
    }
}

pub async fn create<K>(api: &Api<K>, object: &K)
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.create(&PostParams::default(), object)
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", object.name_any()));
}
