//! AmneziaWG: the obfuscation parameters as the interface holds them, the pure encoding and
//! decoding of amneziawg-go's UAPI (WireGuard's text protocol plus `jc`, `jmin`, `jmax`,
//! `s1`–`s4`, `h1`–`h4`, `i1`–`i5`), and the shell that starts amneziawg-go and talks to its
//! socket `/var/run/amneziawg/<iface>.sock`.
//!
//! wireguard-control's userspace backend is fixed to `/var/run/wireguard` and knows none of the
//! extra keys, so AmneziaWG interfaces are read into the agent's own [`InterfaceSnapshot`] here
//! and changed with one `set=1` per update, built from the same [`PeerDiff`] the WireGuard path
//! applies.

use std::fmt::{self, Write as _};
use std::io::{self, BufRead, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use jiff::Timestamp;
use wgsub_crds::WgServerSpec;
use wgsub_crds::amnezia::{AmneziaParams, HeaderRange};
use wgsub_crds::keys::{PresharedKey, PrivateKey, PublicKey};

use crate::awg_kernel::AwgImplementation;
use crate::diff::PeerDiff;
use crate::interface::{Backend, Driver};
use crate::snapshot::{InterfaceSnapshot, ObservedPeer, PeerConfig, PeerStats};
use crate::status::reason;

/// Where amneziawg-go puts its UAPI sockets.
pub const SOCKET_DIR: &str = "/var/run/amneziawg";

/// A message-type header: one value, or a range of values the sender picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Header {
    pub start: u32,
    pub end: u32,
}

impl Header {
    pub fn single(value: u32) -> Self {
        Self {
            start: value,
            end: value,
        }
    }
}

impl fmt::Display for Header {
    /// As amneziawg-go prints it: `N` for one value, `A-B` for a range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for Header {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let number = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("{text:?} is not a header value or range"))
        };
        let header = match text.split_once('-') {
            Some((start, end)) => Header {
                start: number(start)?,
                end: number(end)?,
            },
            None => Header::single(number(text)?),
        };
        if header.end < header.start {
            return Err(format!("{text:?} is a range that ends before it starts"));
        }
        Ok(header)
    }
}

/// The obfuscation parameters of an AmneziaWG interface. Zero (or absent) is "not set", which is
/// also how amneziawg-go reports them; all of them unset is plain WireGuard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwgParams {
    /// Junk packets before a handshake: how many, and their size range.
    pub jc: u32,
    pub jmin: u32,
    pub jmax: u32,
    /// Padding of init, response, cookie and transport messages (`s1`–`s4`).
    pub s: [u32; 4],
    /// Message-type headers of init, response, cookie and transport messages (`h1`–`h4`).
    pub h: [Option<Header>; 4],
    /// Signature packets `i1`–`i5` (AmneziaWG 1.5), in amneziawg-go's tag syntax.
    pub i: [Option<String>; 5],
}

impl AwgParams {
    /// Whether amneziawg-go can go from `self` (on the interface) to `wanted` by `set=1`: it
    /// takes no zero for `jc`, `jmin` and `jmax` and cannot drop a header or signature packet,
    /// so a value that is set and must become unset needs a new interface.
    pub fn settable_to(&self, wanted: &AwgParams) -> bool {
        let numbers = [
            (self.jc, wanted.jc),
            (self.jmin, wanted.jmin),
            (self.jmax, wanted.jmax),
        ];
        numbers.iter().all(|(have, want)| *have == 0 || *want != 0)
            && self
                .h
                .iter()
                .zip(&wanted.h)
                .all(|(have, want)| have.is_none() || want.is_some())
            && self
                .i
                .iter()
                .zip(&wanted.i)
                .all(|(have, want)| have.is_none() || want.is_some())
    }

    /// The device lines of a `set=1`: every parameter that is set, `s1`–`s4` always (zero is a
    /// valid padding).
    fn encode(&self, out: &mut String) {
        for (key, value) in [("jc", self.jc), ("jmin", self.jmin), ("jmax", self.jmax)] {
            if value != 0 {
                let _ = writeln!(out, "{key}={value}");
            }
        }
        for (n, value) in self.s.iter().enumerate() {
            let _ = writeln!(out, "s{}={value}", n + 1);
        }
        for (n, header) in self.h.iter().enumerate() {
            if let Some(header) = header {
                let _ = writeln!(out, "h{}={header}", n + 1);
            }
        }
        for (n, packet) in self.i.iter().enumerate() {
            if let Some(packet) = packet {
                let _ = writeln!(out, "i{}={packet}", n + 1);
            }
        }
    }

    /// Takes one device line of a `get=1` answer; `Ok(false)` when the key is not a parameter.
    fn decode_line(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("{key}={value:?} is not a number"))
        };
        let indexed = |prefix: char, count: usize| {
            let rest = key.strip_prefix(prefix)?;
            let n: usize = rest.parse().ok()?;
            (1..=count).contains(&n).then_some(n - 1)
        };
        match key {
            "jc" => self.jc = number()?,
            "jmin" => self.jmin = number()?,
            "jmax" => self.jmax = number()?,
            _ => {
                if let Some(n) = indexed('s', 4) {
                    self.s[n] = number()?;
                } else if let Some(n) = indexed('h', 4) {
                    self.h[n] = Some(value.parse()?);
                } else if let Some(n) = indexed('i', 5) {
                    self.i[n] = Some(value.to_owned());
                } else {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

impl From<HeaderRange> for Header {
    fn from(range: HeaderRange) -> Self {
        Header {
            start: range.start,
            end: range.end,
        }
    }
}

impl From<&AmneziaParams> for AwgParams {
    fn from(params: &AmneziaParams) -> Self {
        AwgParams {
            jc: params.jc,
            jmin: params.jmin,
            jmax: params.jmax,
            s: [params.s1, params.s2, params.s3, params.s4],
            h: [params.h1, params.h2, params.h3, params.h4].map(|h| Some(h.into())),
            i: params.signatures.clone(),
        }
    }
}

/// How this node drives a server: WireGuard through `backend`; AmneziaWG with the server's
/// parameters through the kernel module or amneziawg-go — with both (`auto`), the module unless
/// it cannot carry the parameters (AmneziaWG 1.5 ones on a 1.0 module). An AmneziaWG server is
/// not brought up — the error is the reason and message of its `Ready` condition — when this
/// node has no AmneziaWG implementation that can carry it, or while its parameters are not all
/// chosen (the operator fills them in) or break a rule.
pub fn driver_for(
    spec: &WgServerSpec,
    backend: Backend,
    amneziawg: Option<&AwgImplementation>,
) -> Result<Driver, (&'static str, String)> {
    if !spec.is_amneziawg() {
        return Ok(Driver::WireGuard(backend));
    }
    let Some(implementation) = amneziawg else {
        return Err((
            reason::AMNEZIAWG_UNAVAILABLE,
            "this node has no AmneziaWG implementation (neither the amneziawg kernel module nor \
             amneziawg-go was found); WireGuard servers are not affected"
                .into(),
        ));
    };
    if let Some(broken) = wgsub_crds::amnezia::validate(spec).first() {
        return Err((reason::INVALID_PARAMETERS, broken.to_string()));
    }
    let Some(params) = spec.amneziawg_params() else {
        return Err((
            reason::PARAMETERS_PENDING,
            "the AmneziaWG parameters are not all chosen yet (the operator chooses them)".into(),
        ));
    };
    let params = Box::new(AwgParams::from(&params));
    let (kernel, userspace) = match implementation {
        AwgImplementation::Userspace(found) => (None, Some(found)),
        AwgImplementation::Kernel(kernel) => (Some(kernel), None),
        AwgImplementation::KernelOrUserspace(kernel, found) => (Some(kernel), Some(found)),
    };
    let problem = match kernel {
        Some(kernel) => match kernel.dialect.cannot_carry(&params) {
            None => {
                return Ok(Driver::AmneziaWgKernel {
                    kernel: *kernel,
                    params,
                });
            }
            Some(problem) => Some(problem),
        },
        None => None,
    };
    match (userspace, problem) {
        (Some(userspace), _) => Ok(Driver::AmneziaWg {
            userspace: userspace.clone(),
            params,
        }),
        (None, problem) => Err((
            reason::AMNEZIAWG_UNAVAILABLE,
            format!(
                "{}; with amneziawg-go on the node (--amneziawg-backend auto or userspace) it \
                 would serve this server",
                problem.unwrap_or_default()
            ),
        )),
    }
}

/// What goes with the peers of one update when the interface's own settings are (re)set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings<'a> {
    pub private_key: &'a PrivateKey,
    pub listen_port: u16,
    pub params: &'a AwgParams,
}

fn hex(bytes: &[u8; 32], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}

fn unhex(text: &str) -> Result<[u8; 32], String> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(format!("a key of {} hex digits", bytes.len()));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err("a key with a character that is not hex".to_owned()),
    };
    let mut key = [0u8; 32];
    for (n, pair) in bytes.chunks_exact(2).enumerate() {
        key[n] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(key)
}

fn key_line(out: &mut String, name: &str, key: &[u8; 32]) {
    out.push_str(name);
    out.push('=');
    hex(key, out);
    out.push('\n');
}

fn peer_lines(out: &mut String, key: &PublicKey, config: &PeerConfig, existing: bool) {
    key_line(out, "public_key", key.as_bytes());
    match &config.preshared_key {
        Some(psk) => key_line(out, "preshared_key", psk.as_bytes()),
        // A new peer has no preshared key to clear.
        None if existing => key_line(out, "preshared_key", &[0; 32]),
        None => {}
    }
    out.push_str("replace_allowed_ips=true\n");
    for net in &config.allowed_ips {
        let _ = writeln!(out, "allowed_ip={net}");
    }
}

/// The body of one `set=1` request (without the `set=1` line, with the closing blank line): the
/// device settings when given, then exactly the peers of `diff` — additions and updates replace
/// the peer's allowed IPs and set (or clear) its preshared key, removals remove.
pub fn encode_set(device: Option<&DeviceSettings<'_>>, diff: &PeerDiff) -> String {
    let mut out = String::with_capacity(128 + diff.len() * 160);
    if let Some(device) = device {
        key_line(&mut out, "private_key", device.private_key.as_bytes());
        let _ = writeln!(out, "listen_port={}", device.listen_port);
        device.params.encode(&mut out);
    }
    for (key, config) in &diff.add {
        peer_lines(&mut out, key, config, false);
    }
    for (key, config) in &diff.update {
        peer_lines(&mut out, key, config, true);
    }
    for key in &diff.remove {
        key_line(&mut out, "public_key", key.as_bytes());
        out.push_str("remove=true\n");
    }
    out.push('\n');
    out
}

/// The interface as a `get=1` answer describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwgDevice {
    pub snapshot: InterfaceSnapshot,
    pub params: AwgParams,
}

/// One peer while its lines are read.
#[derive(Default)]
struct PeerLines {
    key: Option<PublicKey>,
    allowed: Vec<IpNet>,
    preshared_key: Option<PresharedKey>,
    handshake_sec: i64,
    handshake_nsec: i64,
    stats: PeerStats,
}

impl PeerLines {
    fn finish(self, peers: &mut InterfaceSnapshot) {
        let Some(key) = self.key else {
            return;
        };
        let stats = PeerStats {
            last_handshake: (self.handshake_sec != 0 || self.handshake_nsec != 0)
                .then(|| Timestamp::new(self.handshake_sec, 0).ok())
                .flatten(),
            ..self.stats
        };
        peers.peers.insert(
            key,
            ObservedPeer {
                config: PeerConfig::new(self.allowed, self.preshared_key),
                stats,
            },
        );
    }
}

/// Reads a `get=1` answer (its lines up to and including `errno=…`). A non-zero errno is an
/// error; so is a line that is not `key=value` or a value the protocol does not allow.
pub fn decode_get(text: &str) -> Result<AwgDevice, String> {
    let mut device = AwgDevice::default();
    let mut peer: Option<PeerLines> = None;
    let mut errno = None;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("the line {line:?} is not key=value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key}={value:?} is not a number"))
        };
        match (key, peer.as_mut()) {
            ("errno", _) => errno = Some(number()?),
            ("public_key", _) => {
                if let Some(done) = peer.take() {
                    done.finish(&mut device.snapshot);
                }
                peer = Some(PeerLines {
                    key: Some(PublicKey::from_bytes(unhex(value)?)),
                    ..PeerLines::default()
                });
            }
            ("private_key", None) => {
                let bytes = unhex(value)?;
                if bytes.iter().any(|b| *b != 0) {
                    device.snapshot.public_key = Some(PrivateKey::from_bytes(bytes).public_key());
                }
            }
            ("listen_port", None) => {
                let port = u16::try_from(number()?).map_err(|_| format!("listen_port={value}"))?;
                device.snapshot.listen_port = (port != 0).then_some(port);
            }
            (key, None) => {
                // fwmark and anything newer than this agent are not the agent's business.
                device.params.decode_line(key, value)?;
            }
            ("preshared_key", Some(peer)) => {
                let bytes = unhex(value)?;
                peer.preshared_key = bytes
                    .iter()
                    .any(|b| *b != 0)
                    .then(|| PresharedKey::from_base64(&base64_of(&bytes)))
                    .transpose()
                    .map_err(|e| format!("preshared_key: {e}"))?;
            }
            ("allowed_ip", Some(peer)) => peer.allowed.push(
                value
                    .parse()
                    .map_err(|_| format!("allowed_ip={value:?} is not a network"))?,
            ),
            ("last_handshake_time_sec", Some(peer)) => {
                peer.handshake_sec = i64::try_from(number()?).map_err(|e| e.to_string())?;
            }
            ("last_handshake_time_nsec", Some(peer)) => {
                peer.handshake_nsec = i64::try_from(number()?).map_err(|e| e.to_string())?;
            }
            ("rx_bytes", Some(peer)) => peer.stats.rx_bytes = number()?,
            ("tx_bytes", Some(peer)) => peer.stats.tx_bytes = number()?,
            // endpoint, keepalive, protocol_version: not part of the agent's picture.
            (_, Some(_)) => {}
        }
    }
    if let Some(done) = peer.take() {
        done.finish(&mut device.snapshot);
    }
    match errno {
        Some(0) => Ok(device),
        Some(errno) => Err(format!("amneziawg-go answered errno={errno}")),
        None => Err("the answer has no errno line".into()),
    }
}

/// The errno of a `set=1` answer.
pub fn decode_set_answer(text: &str) -> Result<(), String> {
    match text.lines().find_map(|line| line.strip_prefix("errno=")) {
        Some("0") => Ok(()),
        Some(errno) => Err(format!("amneziawg-go refused the update: errno={errno}")),
        None => Err("amneziawg-go gave no answer to the update".into()),
    }
}

fn base64_of(bytes: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// amneziawg-go on this node: the binary the agent starts for each AmneziaWG interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Userspace {
    pub binary: PathBuf,
}

/// How long a freshly started amneziawg-go gets to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl Userspace {
    /// The configured binary when it can be run: a path, or a name found on `PATH`.
    pub fn find(binary: &Path) -> Option<Userspace> {
        let runnable = |path: &Path| {
            use std::os::unix::fs::PermissionsExt;
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if binary.components().count() > 1 {
            return runnable(binary).then(|| Userspace {
                binary: binary.to_owned(),
            });
        }
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(binary))
            .find(|path| runnable(path))
            .map(|binary| Userspace { binary })
    }

    pub fn socket(interface: &str) -> PathBuf {
        Path::new(SOCKET_DIR).join(format!("{interface}.sock"))
    }

    /// Starts amneziawg-go for `interface` (it daemonizes; its tun device and socket live in
    /// the calling thread's network namespace) and waits for its socket.
    pub fn start(&self, interface: &str) -> io::Result<()> {
        let output = Command::new(&self.binary)
            .arg(interface)
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.binary.display())))?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "{} {interface}: {}",
                self.binary.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match UnixStream::connect(Self::socket(interface)) {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!("amneziawg-go did not open its socket for {interface}: {error}"),
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn request(interface: &str, request: &[&str]) -> io::Result<String> {
        let path = Self::socket(interface);
        let stream = UnixStream::connect(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut writer = io::BufWriter::with_capacity(64 * 1024, &stream);
        for part in request {
            writer.write_all(part.as_bytes())?;
        }
        writer.flush()?;
        drop(writer);
        let mut answer = String::new();
        let mut reader = BufReader::with_capacity(64 * 1024, &stream);
        loop {
            let before = answer.len();
            if reader.read_line(&mut answer)? == 0 || answer[before..] == *"\n" {
                return Ok(answer);
            }
        }
    }

    /// Reads the interface.
    pub fn get(interface: &str) -> io::Result<AwgDevice> {
        let answer = Self::request(interface, &["get=1\n\n"])?;
        decode_get(&answer).map_err(io::Error::other)
    }

    /// Sends one `set=1` with `body` (from [`encode_set`]).
    pub fn set(interface: &str, body: &str) -> io::Result<()> {
        let answer = Self::request(interface, &["set=1\n", body])?;
        decode_set_answer(&answer).map_err(io::Error::other)
    }
}

/// The parameter set the UAPI and netlink tests encode and decode.
#[cfg(test)]
pub(crate) fn test_params_1_0() -> AwgParams {
    AwgParams {
        jc: 4,
        jmin: 40,
        jmax: 70,
        s: [25, 61, 0, 0],
        h: [1_234_567, 2_345_678, 3_456_789, 4_567_890].map(|v| Some(Header::single(v))),
        i: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::test_params_1_0 as params_1_0;
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn hex_of(bytes: &[u8; 32]) -> String {
        let mut out = String::new();
        hex(bytes, &mut out);
        out
    }

    #[test]
    fn headers_read_and_print_as_amneziawg_go_does() {
        assert_eq!("5".parse::<Header>().unwrap(), Header::single(5));
        let range: Header = "100-200".parse().unwrap();
        assert_eq!((range.start, range.end), (100, 200));
        assert_eq!(range.to_string(), "100-200");
        assert_eq!(Header::single(7).to_string(), "7");
        assert!("200-100".parse::<Header>().is_err());
        assert!("x".parse::<Header>().is_err());
        assert!("4294967296".parse::<Header>().is_err());
    }

    #[test]
    fn a_set_carries_key_port_every_parameter_and_the_peer_changes() {
        let private = PrivateKey::generate();
        let added = PrivateKey::generate().public_key();
        let updated = PrivateKey::generate().public_key();
        let removed = PrivateKey::generate().public_key();
        let psk = PresharedKey::generate();
        let mut params = params_1_0();
        params.s[2] = 18;
        params.i[0] = Some("<b 0xf6ab3267fa><r 10>".into());
        let diff = PeerDiff {
            add: [(
                added,
                PeerConfig::new([net("10.8.0.2/32"), net("fd00::2/128")], Some(psk.clone())),
            )]
            .into(),
            update: [(updated, PeerConfig::new([net("10.8.0.3/32")], None))].into(),
            remove: vec![removed],
        };
        let device = DeviceSettings {
            private_key: &private,
            listen_port: 51820,
            params: &params,
        };
        let body = encode_set(Some(&device), &diff);
        let expected = format!(
            "private_key={}\nlisten_port=51820\njc=4\njmin=40\njmax=70\ns1=25\ns2=61\ns3=18\ns4=0\n\
             h1=1234567\nh2=2345678\nh3=3456789\nh4=4567890\ni1=<b 0xf6ab3267fa><r 10>\n\
             public_key={}\npreshared_key={}\nreplace_allowed_ips=true\nallowed_ip=10.8.0.2/32\nallowed_ip=fd00::2/128\n\
             public_key={}\npreshared_key={}\nreplace_allowed_ips=true\nallowed_ip=10.8.0.3/32\n\
             public_key={}\nremove=true\n\n",
            hex_of(private.as_bytes()),
            hex_of(added.as_bytes()),
            hex_of(psk.as_bytes()),
            hex_of(updated.as_bytes()),
            "0".repeat(64),
            hex_of(removed.as_bytes()),
        );
        assert_eq!(body, expected);
        // Peers only: no device line at all.
        let peers_only = encode_set(None, &diff);
        assert!(peers_only.starts_with("public_key="), "{peers_only}");
        assert_eq!(encode_set(None, &PeerDiff::default()), "\n");
    }

    #[test]
    fn a_get_answer_becomes_the_snapshot_and_the_parameters() {
        let private = PrivateKey::generate();
        let peer = PrivateKey::generate().public_key();
        let bare = PrivateKey::generate().public_key();
        let psk = PresharedKey::generate();
        let answer = format!(
            "private_key={}\nlisten_port=51820\nfwmark=7\njc=4\njmin=40\njmax=70\ns1=25\ns2=61\n\
             h1=1234567\nh2=2345678\nh3=3456789\nh4=4567890-4567999\ni2=<r 16>\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=198.51.100.7:40000\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=100\nrx_bytes=200\n\
             persistent_keepalive_interval=0\nallowed_ip=10.8.0.2/32\nallowed_ip=fd00::2/128\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nlast_handshake_time_sec=0\n\
             last_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n\
             errno=0\n\n",
            hex_of(private.as_bytes()),
            hex_of(peer.as_bytes()),
            hex_of(psk.as_bytes()),
            hex_of(bare.as_bytes()),
            "0".repeat(64),
        );
        let device = decode_get(&answer).unwrap();
        let mut params = params_1_0();
        params.h[3] = Some(Header {
            start: 4_567_890,
            end: 4_567_999,
        });
        params.i[1] = Some("<r 16>".into());
        assert_eq!(device.params, params);
        let snapshot = device.snapshot;
        assert_eq!(snapshot.public_key, Some(private.public_key()));
        assert_eq!(snapshot.listen_port, Some(51820));
        let first = &snapshot.peers[&peer];
        assert_eq!(
            first.config,
            PeerConfig::new([net("fd00::2/128"), net("10.8.0.2/32")], Some(psk))
        );
        assert_eq!(first.stats, crate::snapshot::REPORTED_STATS);
        let second = &snapshot.peers[&bare];
        assert_eq!(second.config, PeerConfig::new([], None));
        assert_eq!(second.stats, PeerStats::default());
    }

    #[test]
    fn a_fresh_interface_reads_as_empty_and_errors_are_errors() {
        let empty = decode_get("errno=0\n\n").unwrap();
        assert_eq!(empty, AwgDevice::default());
        let zero_key = format!("private_key={}\nlisten_port=0\nerrno=0\n\n", "0".repeat(64));
        assert_eq!(decode_get(&zero_key).unwrap(), AwgDevice::default());
        assert!(decode_get("errno=1\n\n").unwrap_err().contains("errno=1"));
        assert!(
            decode_get("listen_port=1\n\n")
                .unwrap_err()
                .contains("errno")
        );
        assert!(decode_get("garbage\nerrno=0\n").is_err());
        assert!(decode_get("private_key=abc\nerrno=0\n").is_err());
        assert!(decode_get("h1=9-1\nerrno=0\n").is_err());
        assert!(decode_get("jc=many\nerrno=0\n").is_err());
        let unknown = decode_get("fwmark=3\nsomething_new=1\nerrno=0\n").unwrap();
        assert_eq!(unknown, AwgDevice::default());
        assert_eq!(decode_set_answer("errno=0\n\n"), Ok(()));
        assert!(
            decode_set_answer("errno=22\n\n")
                .unwrap_err()
                .contains("22")
        );
        assert!(decode_set_answer("").is_err());
    }

    #[test]
    fn what_is_encoded_reads_back_the_same() {
        let private = PrivateKey::generate();
        let mut params = params_1_0();
        params.h[0] = Some(Header { start: 10, end: 20 });
        params.i = [
            Some("<b 0x01>".into()),
            None,
            Some("<r 3>".into()),
            None,
            Some("<t>".into()),
        ];
        let peers: PeerDiff = PeerDiff {
            add: (0..3u8)
                .map(|n| {
                    (
                        PrivateKey::generate().public_key(),
                        PeerConfig::new([net(&format!("10.8.0.{}/32", n + 2))], None),
                    )
                })
                .collect(),
            ..PeerDiff::default()
        };
        let device = DeviceSettings {
            private_key: &private,
            listen_port: 443,
            params: &params,
        };
        let mut answer = encode_set(Some(&device), &peers);
        answer = answer.replace("replace_allowed_ips=true\n", "");
        answer.insert_str(answer.len() - 1, "errno=0\n");
        let read = decode_get(&answer).unwrap();
        assert_eq!(read.params, params);
        assert_eq!(read.snapshot.public_key, Some(private.public_key()));
        assert_eq!(read.snapshot.listen_port, Some(443));
        assert_eq!(read.snapshot.into_peer_configs(), peers.add);
    }

    #[test]
    fn only_a_parameter_that_must_become_unset_needs_a_new_interface() {
        let on = params_1_0();
        let mut other = on.clone();
        other.jc = 9;
        other.s[0] = 0;
        other.h[2] = Some(Header::single(99));
        assert!(on.settable_to(&other));
        assert!(AwgParams::default().settable_to(&on));
        assert!(on.settable_to(&on));
        for unset in [
            AwgParams {
                jc: 0,
                ..on.clone()
            },
            AwgParams {
                jmax: 0,
                ..on.clone()
            },
            AwgParams {
                h: [None, on.h[1], on.h[2], on.h[3]],
                ..on.clone()
            },
        ] {
            assert!(!on.settable_to(&unset), "{unset:?}");
        }
        let with_i = AwgParams {
            i: [Some("<r 2>".into()), None, None, None, None],
            ..on.clone()
        };
        assert!(on.settable_to(&with_i));
        assert!(!with_i.settable_to(&on));
    }

    #[test]
    fn keys_go_to_hex_and_back() {
        let key = PrivateKey::generate();
        assert_eq!(unhex(&hex_of(key.as_bytes())).unwrap(), *key.as_bytes());
        assert_eq!(
            unhex(&hex_of(key.as_bytes()).to_uppercase()).unwrap(),
            *key.as_bytes()
        );
        assert!(unhex("00").is_err());
        assert!(unhex(&"g".repeat(64)).is_err());
        let psk = PresharedKey::generate();
        assert_eq!(
            PresharedKey::from_base64(&base64_of(psk.as_bytes())).unwrap(),
            psk
        );
    }

    fn server(protocol: &str, amneziawg: Option<serde_json::Value>) -> WgServerSpec {
        let mut spec = serde_json::json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": "k", "key": "privateKey"},
            "protocol": protocol,
        });
        if let Some(block) = amneziawg {
            spec["amneziawg"] = block;
        }
        serde_json::from_value(spec).unwrap()
    }

    fn full_block() -> serde_json::Value {
        serde_json::json!({
            "jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61,
            "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890",
        })
    }

    #[test]
    fn a_wireguard_server_is_driven_by_the_wireguard_backend_even_without_amneziawg() {
        let spec = server("wireguard", None);
        assert_eq!(
            driver_for(&spec, Backend::Userspace, None),
            Ok(Driver::WireGuard(Backend::Userspace))
        );
        assert_eq!(
            driver_for(&spec, Backend::Kernel, None),
            Ok(Driver::WireGuard(Backend::Kernel))
        );
    }

    #[test]
    fn an_amneziawg_server_gets_amneziawg_go_with_its_parameters() {
        let userspace = Userspace {
            binary: PathBuf::from("/usr/bin/amneziawg-go"),
        };
        let spec = server("amneziawg", Some(full_block()));
        assert_eq!(
            driver_for(
                &spec,
                Backend::Kernel,
                Some(&AwgImplementation::Userspace(userspace.clone()))
            ),
            Ok(Driver::AmneziaWg {
                userspace: userspace.clone(),
                params: Box::new(params_1_0()),
            })
        );
    }

    fn block_1_5() -> serde_json::Value {
        let mut block = full_block();
        block["version"] = "1.5".into();
        block["s3"] = 18.into();
        block["s4"] = 0.into();
        block["i1"] = "<r 16>".into();
        block
    }

    #[test]
    fn the_kernel_module_serves_what_its_family_version_can_carry() {
        use crate::awg_kernel::KernelAwg;
        use crate::awg_netlink::Dialect;
        let userspace = Userspace {
            binary: PathBuf::from("/usr/bin/amneziawg-go"),
        };
        let module_1_0 = KernelAwg {
            dialect: Dialect::Awg10,
        };
        let module_1_5 = KernelAwg {
            dialect: Dialect::Awg15,
        };
        let plain = server("amneziawg", Some(full_block()));
        let newer = server("amneziawg", Some(block_1_5()));
        let mut params_1_5 = params_1_0();
        params_1_5.s[2] = 18;
        params_1_5.i[0] = Some("<r 16>".into());
        let kernel = |kernel: KernelAwg, params: AwgParams| Driver::AmneziaWgKernel {
            kernel,
            params: Box::new(params),
        };
        let on = |implementation: AwgImplementation, spec: &WgServerSpec| {
            driver_for(spec, Backend::Userspace, Some(&implementation))
        };
        // AmneziaWG 1.0 on either module; 1.5 on a 1.5 module.
        assert_eq!(
            on(AwgImplementation::Kernel(module_1_0), &plain),
            Ok(kernel(module_1_0, params_1_0()))
        );
        assert_eq!(
            on(AwgImplementation::Kernel(module_1_5), &newer),
            Ok(kernel(module_1_5, params_1_5.clone()))
        );
        assert_eq!(
            on(
                AwgImplementation::KernelOrUserspace(module_1_5, userspace.clone()),
                &newer
            ),
            Ok(kernel(module_1_5, params_1_5.clone()))
        );
        // 1.5 on a 1.0 module: amneziawg-go when there is one, a clear refusal otherwise.
        assert_eq!(
            on(
                AwgImplementation::KernelOrUserspace(module_1_0, userspace.clone()),
                &newer
            ),
            Ok(Driver::AmneziaWg {
                userspace: userspace.clone(),
                params: Box::new(params_1_5),
            })
        );
        let (why, message) = on(AwgImplementation::Kernel(module_1_0), &newer).unwrap_err();
        assert_eq!(why, reason::AMNEZIAWG_UNAVAILABLE);
        assert!(message.contains("AmneziaWG 1.0"), "{message}");
        assert!(message.contains("S3/S4, I1–I5"), "{message}");
        assert!(message.contains("amneziawg-go"), "{message}");
    }

    #[test]
    fn an_amneziawg_server_stays_down_without_implementation_or_parameters() {
        let userspace = AwgImplementation::Userspace(Userspace {
            binary: PathBuf::from("/usr/bin/amneziawg-go"),
        });
        let complete = server("amneziawg", Some(full_block()));
        let (why, message) = driver_for(&complete, Backend::Userspace, None).unwrap_err();
        assert_eq!(why, reason::AMNEZIAWG_UNAVAILABLE);
        assert!(message.contains("amneziawg-go"), "{message}");
        for pending in [
            server("amneziawg", None),
            server("amneziawg", Some(serde_json::json!({"jc": 4}))),
        ] {
            let (why, _) = driver_for(&pending, Backend::Userspace, Some(&userspace)).unwrap_err();
            assert_eq!(why, reason::PARAMETERS_PENDING);
        }
        let mut overlapping = full_block();
        overlapping["h2"] = "1234567".into();
        let broken = server("amneziawg", Some(overlapping));
        let (why, message) = driver_for(&broken, Backend::Userspace, Some(&userspace)).unwrap_err();
        assert_eq!(why, reason::INVALID_PARAMETERS);
        assert!(message.contains("spec.amneziawg.h"), "{message}");
    }

    #[test]
    fn the_socket_lives_under_var_run_amneziawg() {
        assert_eq!(
            Userspace::socket("awg0"),
            PathBuf::from("/var/run/amneziawg/awg0.sock")
        );
        assert_eq!(
            Userspace::find(Path::new("/nonexistent/amneziawg-go")),
            None
        );
        assert_eq!(Userspace::find(Path::new("no-such-binary-wgsub")), None);
        let sh = Userspace::find(Path::new("sh")).expect("sh is on PATH");
        assert!(sh.binary.ends_with("sh"));
    }
}
