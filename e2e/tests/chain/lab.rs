//! The two hosts of a chain test: a `server` and a `client` network namespace joined by a veth
//! pair, with names unique to this process and test; the client's WireGuard interface configured from a
//! `.conf` as wg-quick would (`wg-quick strip` + `wg setconf`, addresses, MTU and routes by
//! `ip`); ping through the tunnel; the server interface's peers read with `wg show`. Everything is
//! removed on drop (deleting a wireguard-go interface or its UAPI socket ends its process).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The server's end of the veth pair: the endpoint clients dial.
pub const SERVER_VETH_ADDRESS: &str = "172.31.0.1";
const SERVER_VETH_CIDR: &str = "172.31.0.1/24";
const CLIENT_VETH_CIDR: &str = "172.31.0.2/24";

/// Fails the test with a clear message when root or a tool is missing (never a silent pass).
pub fn require_prerequisites() {
    wgsub_testkit::host::require_root_and_tools(
        "the chain test",
        "network namespaces, veth pairs, wireguard-go",
        &["wireguard-go", "wg", "wg-quick", "ip", "ping", "nft"],
    );
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "the chain test needs /dev/net/tun for wireguard-go"
    );
}

/// Runs a command that must succeed; panics with its stderr otherwise.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What the client needs from a wg-quick `.conf` besides what `wg setconf` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickSettings {
    pub addresses: Vec<String>,
    pub mtu: Option<String>,
    pub allowed_ips: Vec<String>,
}

/// Reads `Address`, `MTU` and `AllowedIPs` from a wg-quick `.conf`.
pub fn quick_settings(conf: &str) -> QuickSettings {
    let mut settings = QuickSettings {
        addresses: Vec::new(),
        mtu: None,
        allowed_ips: Vec::new(),
    };
    let list = |value: &str| -> Vec<String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    };
    for line in conf.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "Address" => settings.addresses.extend(list(value)),
            "MTU" => settings.mtu = Some(value.trim().to_owned()),
            "AllowedIPs" => settings.allowed_ips.extend(list(value)),
            _ => {}
        }
    }
    settings
}

/// The two namespaces and the interface names used in them.
#[derive(Debug)]
pub struct Lab {
    pub server_ns: String,
    pub client_ns: String,
    /// The WireGuard interface the node-agent creates in the server namespace.
    pub server_if: String,
    client_if: String,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Creates the namespaces and the veth pair between them; `tag` (a lowercase letter or
    /// digit) tells apart the labs of tests that run at the same time in this process.
    pub fn new(tag: char) -> Lab {
        require_prerequisites();
        assert!(
            tag.is_ascii_lowercase() || tag.is_ascii_digit(),
            "a lab tag fits an interface name: {tag:?}"
        );
        let id = format!("{tag}{}", std::process::id() % 100_000);
        let lab = Lab {
            server_ns: format!("wgsub-chain-s{id}"),
            client_ns: format!("wgsub-chain-c{id}"),
            server_if: format!("wgchs{id}"),
            client_if: format!("wgchc{id}"),
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        let (server_veth, client_veth) = (format!("vchs{id}"), format!("vchc{id}"));
        run("ip", &["netns", "add", &lab.server_ns]);
        run("ip", &["netns", "add", &lab.client_ns]);
        run(
            "ip",
            &[
                "link",
                "add",
                &server_veth,
                "type",
                "veth",
                "peer",
                "name",
                &client_veth,
            ],
        );
        run(
            "ip",
            &["link", "set", &server_veth, "netns", &lab.server_ns],
        );
        run(
            "ip",
            &["link", "set", &client_veth, "netns", &lab.client_ns],
        );
        for (ns, dev, cidr) in [
            (&lab.server_ns, &server_veth, SERVER_VETH_CIDR),
            (&lab.client_ns, &client_veth, CLIENT_VETH_CIDR),
        ] {
            run("ip", &["-n", ns, "addr", "add", cidr, "dev", dev]);
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// The server namespace as the node-agent's `--netns` takes it.
    pub fn server_netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.server_ns))
    }

    /// Brings the client's interface up from a wg-quick `.conf` (as downloaded from the API).
    pub fn connect_client(&self, conf: &str) {
        let path = self.dir.path().join(format!("{}.conf", self.client_if));
        std::fs::write(&path, conf).expect("write the client config");
        let stripped = run("wg-quick", &["strip", path.to_str().expect("utf-8 path")]);
        let stripped_path = self.dir.path().join("stripped.conf");
        std::fs::write(&stripped_path, stripped).expect("write the stripped config");
        let settings = quick_settings(conf);
        assert!(
            !settings.addresses.is_empty(),
            "the config has no Address:\n{}",
            conf.lines()
                .filter(|l| !l.starts_with("PrivateKey"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let ns = self.client_ns.as_str();
        run(
            "ip",
            &["netns", "exec", ns, "wireguard-go", &self.client_if],
        );
        run(
            "wg",
            &[
                "setconf",
                &self.client_if,
                stripped_path.to_str().expect("utf-8 path"),
            ],
        );
        for address in &settings.addresses {
            run(
                "ip",
                &["-n", ns, "addr", "add", address, "dev", &self.client_if],
            );
        }
        if let Some(mtu) = &settings.mtu {
            run(
                "ip",
                &["-n", ns, "link", "set", "dev", &self.client_if, "mtu", mtu],
            );
        }
        run("ip", &["-n", ns, "link", "set", &self.client_if, "up"]);
        for route in &settings.allowed_ips {
            run(
                "ip",
                &["-n", ns, "route", "replace", route, "dev", &self.client_if],
            );
        }
    }

    /// Takes the client's WireGuard interface down (to bring it up again from another config).
    pub fn disconnect_client(&self) {
        run(
            "ip",
            &["-n", &self.client_ns, "link", "del", &self.client_if],
        );
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.client_if));
    }

    /// The client's latest handshake with the server (`wg show <if> latest-handshakes`, Unix
    /// seconds; 0 when there has been none).
    pub async fn client_handshake(&self) -> u64 {
        let output = tokio::process::Command::new("wg")
            .args(["show", &self.client_if, "latest-handshakes"])
            .output()
            .await
            .expect("wg runs");
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .nth(1)
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or(0)
    }

    /// One ping from the client to `target` with a one-second deadline.
    async fn ping_once(&self, target: &str) -> bool {
        tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client_ns,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                target,
            ])
            .output()
            .await
            .is_ok_and(|output| output.status.success())
    }

    /// Pings `target` from the client until one answer arrives or `within` passes.
    pub async fn ping_answers(&self, target: &str, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.ping_once(target).await {
                return true;
            }
        }
        false
    }

    /// The public keys on the server's WireGuard interface (`wg show <if> peers`); empty while
    /// the interface does not exist.
    pub async fn server_peers(&self) -> Vec<String> {
        match tokio::process::Command::new("wg")
            .args(["show", &self.server_if, "peers"])
            .output()
            .await
        {
            Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the server's WireGuard interface answers on its UAPI socket.
    pub async fn server_interface_exists(&self) -> bool {
        tokio::process::Command::new("wg")
            .args(["show", &self.server_if])
            .output()
            .await
            .is_ok_and(|output| output.status.success())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (ns, interface) in [
            (&self.server_ns, &self.server_if),
            (&self.client_ns, &self.client_if),
        ] {
            let _ = Command::new("ip")
                .args(["-n", ns, "link", "del", interface])
                .output();
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{interface}.sock"));
        }
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_settings_reads_addresses_mtu_and_routes() {
        let conf = "[Interface]\nAddress = 10.8.0.2/32, fd00:8::2/128\nMTU = 1420\n\n\
                    [Peer]\nEndpoint = 172.31.0.1:51820\nAllowedIPs = 10.8.0.0/24\n";
        assert_eq!(
            quick_settings(conf),
            QuickSettings {
                addresses: vec!["10.8.0.2/32".into(), "fd00:8::2/128".into()],
                mtu: Some("1420".into()),
                allowed_ips: vec!["10.8.0.0/24".into()],
            }
        );
    }
}
