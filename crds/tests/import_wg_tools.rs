//! The import reads what the real WireGuard tools make: keys from `wg genkey` / `wg pubkey`, a
//! `wg0.conf` loaded into a running wireguard-go interface (`wg-quick strip` + `wg setconf`, in
//! a network namespace of its own), and that interface's `wg show <if> dump` — both give the
//! same peers, keys and addresses.
//!
//! Needs root, wireguard-go, wireguard-tools and iproute2: fails with a message otherwise.

use std::io::Write as _;
use std::process::{Command, Stdio};

use wgsub_crds::import::source::{parse_conf, parse_server};

fn tool(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} runs (this test needs wireguard-tools, wireguard-go, iproute2 and root): {e}",
                args[0]
            )
        });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn genkey() -> (String, String) {
    let private = tool(&["wg", "genkey"], None).trim().to_owned();
    let public = tool(&["wg", "pubkey"], Some(&format!("{private}\n")))
        .trim()
        .to_owned();
    (private, public)
}

/// A network namespace of its own and the interface in it; on drop the interface is deleted
/// (which ends its wireguard-go) and then the namespace.
struct Netns(String, String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.0, "ip", "link", "del", &self.1])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.1));
    }
}

#[test]
fn a_conf_and_the_dump_of_its_running_interface_give_the_same_peers() {
    let id = std::process::id() % 100_000;
    let interface = format!("wgimp{id}");
    let netns = Netns(format!("wgsub-import-{id}"), interface.clone());
    tool(&["ip", "netns", "add", &netns.0], None);

    let (server_private, _) = genkey();
    let (_, alice) = genkey();
    let (_, bob) = genkey();
    let psk = tool(&["wg", "genpsk"], None).trim().to_owned();
    let conf = format!(
        "[Interface]\nAddress = 10.77.0.1/24\nListenPort = 51999\nPrivateKey = {server_private}\n\n\
         # alice\n[Peer]\nPublicKey = {alice}\nAllowedIPs = 10.77.0.2/32\n\n\
         [Peer]\nPublicKey = {bob}\nPresharedKey = {psk}\nAllowedIPs = 10.77.0.3/32, fd77::3/128\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{interface}.conf"));
    std::fs::write(&path, &conf).unwrap();
    let stripped = tool(&["wg-quick", "strip", path.to_str().unwrap()], None);
    let setconf = dir.path().join("setconf.conf");
    std::fs::write(&setconf, stripped).unwrap();
    tool(
        &["ip", "netns", "exec", &netns.0, "wireguard-go", &interface],
        None,
    );
    tool(
        &[
            "ip",
            "netns",
            "exec",
            &netns.0,
            "wg",
            "setconf",
            &interface,
            setconf.to_str().unwrap(),
        ],
        None,
    );
    let dump = tool(
        &[
            "ip", "netns", "exec", &netns.0, "wg", "show", &interface, "dump",
        ],
        None,
    );

    let from_conf = parse_conf(&conf).unwrap();
    let from_dump = parse_server(&dump).unwrap();
    assert_eq!(from_conf.len(), 2);
    let summary = |peers: &[wgsub_crds::import::source::SourcePeer]| {
        let mut list: Vec<_> = peers
            .iter()
            .map(|p| {
                (
                    p.public_key.to_base64(),
                    p.address,
                    p.address6,
                    p.preshared_key.is_some(),
                )
            })
            .collect();
        list.sort();
        list
    };
    assert_eq!(summary(&from_dump), summary(&from_conf));
    assert!(summary(&from_conf).contains(&(alice, "10.77.0.2".parse().unwrap(), None, false)));
    assert!(summary(&from_conf).contains(&(
        bob,
        "10.77.0.3".parse().unwrap(),
        Some("fd77::3".parse().unwrap()),
        true
    )));
}
