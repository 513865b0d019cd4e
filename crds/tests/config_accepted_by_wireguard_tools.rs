//! The rendered client config is accepted by the real wireguard-tools: `wg-quick strip` parses
//! it and `wg setconf` applies the result to a userspace (wireguard-go) interface, whose
//! `wg showconf` then carries the same keys, endpoint and routes. Needs root and the tools; a
//! machine without them fails this test with a message saying so, never a silent pass.

use std::process::Command;

use wgsub_crds::config::{ClientConfig, config_file_name};
use wgsub_crds::keys::{PresharedKey, PrivateKey};
use wgsub_crds::{SecretKeyRef, WgPeerSpec, WgServerSpec};

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install wireguard-tools, wireguard-go, iproute2 — scripts/install-test-deps): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn require_root() {
    let uid = run("id", &["-u"]);
    assert_eq!(
        uid.trim(),
        "0",
        "this test drives a real WireGuard interface and must run as root (scripts/test runs it so)"
    );
}

/// A network namespace with a wireguard-go interface, removed on drop.
struct Namespace {
    name: String,
    interface: String,
}

impl Namespace {
    fn new(tag: &str) -> Self {
        let name = format!("wgsub-cfg-{tag}-{}", std::process::id());
        let interface = format!("wgc{}", std::process::id() % 100_000);
        run("ip", &["netns", "add", &name]);
        let ns = Self { name, interface };
        run(
            "ip",
            &["netns", "exec", &ns.name, "wireguard-go", &ns.interface],
        );
        ns
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "ip",
                "link",
                "del",
                &self.interface,
            ])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn wg_quick_strip_and_wg_setconf_accept_the_rendered_config() {
    require_root();
    let server: WgServerSpec = serde_json::from_value(serde_json::json!({
        // An address, so `wg setconf` needs no DNS.
        "endpoint": "192.0.2.10:51820",
        "addressPool": "10.8.0.0/24",
        "addressPool6": "fd00:8::/64",
        "dns": ["10.8.0.1"],
        "mtu": 1380,
        "persistentKeepalive": 25,
        "privateKeySecretRef": {"name": "wg0-key"}
    }))
    .unwrap();
    let peer = WgPeerSpec {
        server: "main".into(),
        public_key: None,
        private_key_secret_ref: Some(SecretKeyRef::new("k", "privateKey")),
        preshared_key_secret_ref: None,
        address: Some("10.8.0.2/32".into()),
        address6: Some("fd00:8::2/128".into()),
        expires_at: None,
        enabled: true,
        device_name: Some("My Phone".into()),
    };
    let private = PrivateKey::generate();
    let server_public = PrivateKey::generate().public_key();
    let psk = PresharedKey::generate();
    let config = ClientConfig::for_peer(
        &server,
        Some(server_public),
        &peer,
        private.clone(),
        Some(psk.clone()),
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(config_file_name(
        server.protocol,
        peer.device_name.as_deref(),
        "1",
    ));
    std::fs::write(&file, config.render().as_bytes()).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let stripped = run("wg-quick", &["strip", file.to_str().unwrap()]);
    assert!(
        !stripped.contains("Address"),
        "wg-quick keeps only wg(8) keys: {stripped}"
    );
    let stripped_file = dir.path().join("stripped.conf");
    std::fs::write(&stripped_file, &stripped).unwrap();

    let ns = Namespace::new("setconf");
    ns.exec(&[
        "wg",
        "setconf",
        &ns.interface,
        stripped_file.to_str().unwrap(),
    ]);
    let shown = ns.exec(&["wg", "showconf", &ns.interface]);
    assert!(shown.contains(&format!("PrivateKey = {}", private.to_base64().as_str())));
    assert!(shown.contains(&format!("PublicKey = {server_public}")));
    assert!(shown.contains(&format!("PresharedKey = {}", psk.to_base64().as_str())));
    assert!(shown.contains("Endpoint = 192.0.2.10:51820"));
    assert!(shown.contains("AllowedIPs = 0.0.0.0/0, ::/0"));
    assert!(shown.contains("PersistentKeepalive = 25"));
}
