//! The interface shell: reading the interface into a snapshot, creating it, applying one update
//! (the device settings and a [`PeerDiff`]), and keeping its link (addresses, MTU, up) as wanted.
//! The [`Driver`] says what speaks on it. WireGuard goes through wireguard-control with a
//! [`Backend`] value — the kernel module, or wireguard-go over its UAPI socket in
//! `/var/run/wireguard` — so tests run the same code on userspace WireGuard. AmneziaWG goes to
//! amneziawg-go over its socket in `/var/run/amneziawg` ([`crate::amneziawg`]) or to the
//! AmneziaWG kernel module over generic netlink ([`crate::awg_kernel`]), with the obfuscation
//! parameters sent beside the key and port. Links and addresses go through iproute2 (`ip -j` to
//! read, `ip` to change).
//!
//! All of it runs on one dedicated OS thread, the [`Worker`]: the calls block, the agent's async
//! tasks must not, and the thread can enter a network namespace first (`--netns`), so everything
//! it starts — `ip`, `nft`, wireguard-go — lives in that namespace.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

use ipnet::IpNet;
use wgsub_crds::keys::PrivateKey;
use wireguard_control::{Device, DeviceUpdate, InterfaceName, Key};

use crate::amneziawg::{AwgParams, DeviceSettings, Userspace, encode_set};
use crate::awg_kernel::KernelAwg;
use crate::diff::PeerDiff;
use crate::snapshot::InterfaceSnapshot;

/// Which WireGuard implementation the agent asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The kernel module when the kernel has it, wireguard-go otherwise.
    Auto,
    Kernel,
    Userspace,
}

/// The WireGuard implementation in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Kernel,
    Userspace,
}

impl Backend {
    /// Resolves a choice: `auto` is the kernel when it has WireGuard (see
    /// [`kernel_has_wireguard`]); the kernel is only asked for `auto`.
    pub fn resolve(choice: BackendChoice) -> Backend {
        Self::resolve_with(choice, kernel_has_wireguard)
    }

    fn resolve_with(choice: BackendChoice, kernel_has_wireguard: impl FnOnce() -> bool) -> Backend {
        match choice {
            BackendChoice::Kernel => Backend::Kernel,
            BackendChoice::Userspace => Backend::Userspace,
            BackendChoice::Auto if kernel_has_wireguard() => Backend::Kernel,
            BackendChoice::Auto => Backend::Userspace,
        }
    }

    fn control(self) -> wireguard_control::Backend {
        match self {
            Backend::Kernel => wireguard_control::Backend::Kernel,
            Backend::Userspace => wireguard_control::Backend::Userspace,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        }
    }
}

/// What speaks on an interface, and through which implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    WireGuard(Backend),
    /// amneziawg-go with these obfuscation parameters.
    AmneziaWg {
        userspace: Userspace,
        params: Box<AwgParams>,
    },
    /// The AmneziaWG kernel module with these obfuscation parameters.
    AmneziaWgKernel {
        kernel: KernelAwg,
        params: Box<AwgParams>,
    },
    /// An AmneziaWG server this node cannot bring up yet (no implementation here, or its
    /// parameters not chosen): nothing is created and the interface reads as absent.
    AmneziaWgUnavailable,
}

impl Driver {
    /// Whether two drivers speak the same protocol through the same kind of link (so one
    /// interface can go from one to the other by an update instead of being made again): an
    /// amneziawg-go tun device and a kernel link are not one interface.
    pub fn same_protocol(&self, other: &Driver) -> bool {
        let kernel_awg = |d: &Driver| matches!(d, Driver::AmneziaWgKernel { .. });
        self.is_amneziawg() == other.is_amneziawg()
            && (!self.is_amneziawg()
                || kernel_awg(self) == kernel_awg(other)
                || *self == Driver::AmneziaWgUnavailable
                || *other == Driver::AmneziaWgUnavailable)
    }

    pub fn is_amneziawg(&self) -> bool {
        !matches!(self, Driver::WireGuard(_))
    }

    /// The obfuscation parameters the interface should hold (`None` for WireGuard).
    pub fn params(&self) -> Option<&AwgParams> {
        match self {
            Driver::AmneziaWg { params, .. } | Driver::AmneziaWgKernel { params, .. } => {
                Some(params)
            }
            Driver::WireGuard(_) | Driver::AmneziaWgUnavailable => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Driver::WireGuard(backend) => backend.as_str(),
            Driver::AmneziaWg { .. } => "amneziawg-go",
            Driver::AmneziaWgKernel { .. } => "amneziawg-kernel",
            Driver::AmneziaWgUnavailable => "amneziawg-unavailable",
        }
    }
}

/// What the link of the interface should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub addresses: Vec<IpNet>,
    pub mtu: Option<u32>,
}

/// The link as `ip -j addr show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkState {
    pub up: bool,
    pub mtu: u32,
    pub addresses: BTreeSet<IpNet>,
}

/// One change to the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAction {
    AddAddress(IpNet),
    RemoveAddress(IpNet),
    SetMtu(u32),
    SetUp,
}

/// The changes that make `state` match `spec`; IPv6 link-local addresses are left alone.
pub fn link_actions(state: &LinkState, spec: &LinkSpec) -> Vec<LinkAction> {
    let wanted: BTreeSet<IpNet> = spec.addresses.iter().copied().collect();
    let link_local: IpNet = "fe80::/10".parse().unwrap_or_default();
    let mut actions: Vec<LinkAction> = state
        .addresses
        .iter()
        .filter(|a| !wanted.contains(a) && !link_local.contains(*a))
        .map(|a| LinkAction::RemoveAddress(*a))
        .collect();
    actions.extend(
        wanted
            .iter()
            .filter(|a| !state.addresses.contains(a))
            .map(|a| LinkAction::AddAddress(*a)),
    );
    if let Some(mtu) = spec.mtu.filter(|mtu| *mtu != state.mtu) {
        actions.push(LinkAction::SetMtu(mtu));
    }
    if !state.up {
        actions.push(LinkAction::SetUp);
    }
    actions
}

/// Parses `ip -j addr show dev <name>` output.
pub fn parse_link_state(json: &str) -> io::Result<Option<LinkState>> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| io::Error::other(format!("ip -j output: {e}")))?;
    let Some(link) = value.as_array().and_then(|links| links.first()) else {
        return Ok(None);
    };
    let up = link
        .get("flags")
        .and_then(|f| f.as_array())
        .is_some_and(|flags| flags.iter().any(|f| f.as_str() == Some("UP")));
    let mtu = link
        .get("mtu")
        .and_then(|m| m.as_u64())
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(0);
    let addresses = link
        .get("addr_info")
        .and_then(|a| a.as_array())
        .map(|infos| {
            infos
                .iter()
                .filter_map(|info| {
                    let local = info.get("local")?.as_str()?.parse().ok()?;
                    let prefix = u8::try_from(info.get("prefixlen")?.as_u64()?).ok()?;
                    IpNet::new(local, prefix).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(LinkState { up, mtu, addresses }))
}

fn ip(args: &[&str]) -> io::Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("ip: {e}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Whether this kernel runs WireGuard interfaces: its module is loaded, or it can be — on a
/// fresh node the module is usually not loaded until the first WireGuard link, so a throwaway
/// link is made (which loads it) and removed at once.
pub fn kernel_has_wireguard() -> bool {
    if Path::new("/sys/module/wireguard").exists() {
        return true;
    }
    let probe = format!("wgsubprobe{}", std::process::id() % 100_000);
    if ip(&["link", "add", "dev", &probe, "type", "wireguard"]).is_err() {
        return false;
    }
    if let Err(error) = ip(&["link", "del", "dev", &probe]) {
        tracing::warn!(%error, link = probe, "could not remove the probe link");
    }
    true
}

/// Why an interface name was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a valid interface name")]
pub struct InvalidName(pub String);

/// One WireGuard or AmneziaWG interface on this node.
#[derive(Debug, Clone)]
pub struct WgInterface {
    name: InterfaceName,
    text: String,
    driver: Driver,
}

/// The kernel's answer to a netlink request about a link of another kind.
const EOPNOTSUPP: i32 = 95;

fn unavailable() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "no AmneziaWG implementation for this interface",
    )
}

impl WgInterface {
    /// A WireGuard interface.
    pub fn new(name: &str, backend: Backend) -> Result<Self, InvalidName> {
        Self::with_driver(name, Driver::WireGuard(backend))
    }

    pub fn with_driver(name: &str, driver: Driver) -> Result<Self, InvalidName> {
        let parsed = name.parse().map_err(|_| InvalidName(name.into()))?;
        Ok(Self {
            name: parsed,
            text: name.to_owned(),
            driver,
        })
    }

    pub fn name(&self) -> &str {
        &self.text
    }

    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// Changes what the next updates send (new AmneziaWG parameters go out with the next
    /// device settings).
    pub fn set_driver(&mut self, driver: Driver) {
        self.driver = driver;
    }

    /// The link's state, `None` when there is no such link.
    pub fn link_state(&self) -> io::Result<Option<LinkState>> {
        match ip(&["-j", "addr", "show", "dev", &self.text]) {
            Ok(out) => parse_link_state(&out),
            Err(e) if e.to_string().contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads the interface and its link; `None` when it does not exist. An AmneziaWG
    /// interface's snapshot carries the parameters it holds.
    pub fn observe(&self) -> io::Result<Option<(InterfaceSnapshot, LinkState)>> {
        if self.driver == Driver::AmneziaWgUnavailable {
            return Ok(None);
        }
        let Some(link) = self.link_state()? else {
            return Ok(None);
        };
        let snapshot = match &self.driver {
            Driver::WireGuard(backend) => {
                InterfaceSnapshot::from(&Device::get(&self.name, backend.control())?)
            }
            Driver::AmneziaWg { .. } => {
                let device = Userspace::get(&self.text)?;
                InterfaceSnapshot {
                    params: Some(device.params),
                    ..device.snapshot
                }
            }
            Driver::AmneziaWgKernel { kernel, .. } => match kernel.get(&self.text) {
                Ok(device) => InterfaceSnapshot {
                    params: Some(device.params),
                    ..device.snapshot
                },
                // A link of another kind under this name (amneziawg-go's, from before the
                // implementation changed): it goes, and the interface is made again.
                Err(error) if error.raw_os_error() == Some(EOPNOTSUPP) => {
                    tracing::info!(
                        interface = self.text,
                        "the link is not an AmneziaWG kernel link; making it again"
                    );
                    self.delete()?;
                    return Ok(None);
                }
                Err(error) => return Err(error),
            },
            Driver::AmneziaWgUnavailable => return Ok(None),
        };
        Ok(Some((snapshot, link)))
    }

    /// Whether the interface as read holds the wanted key, port and (AmneziaWG) parameters.
    pub fn settings_match(
        &self,
        snapshot: &InterfaceSnapshot,
        key: &PrivateKey,
        port: u16,
    ) -> bool {
        snapshot.public_key == Some(key.public_key())
            && snapshot.listen_port == Some(port)
            && snapshot.params.as_ref() == self.driver.params()
    }

    /// Whether the parameters on the interface cannot become the wanted ones by an update
    /// (one that is set would have to become unset): the interface must be made again.
    pub fn needs_recreate(&self, snapshot: &InterfaceSnapshot) -> bool {
        match (&snapshot.params, self.driver.params()) {
            (Some(have), Some(want)) => !have.settable_to(want),
            _ => false,
        }
    }

    /// Creates the interface with its first configuration (key, port, the AmneziaWG parameters
    /// and every peer in `peers`). The kernel backends need the link first; wireguard-control
    /// starts wireguard-go itself when the userspace socket is missing; amneziawg-go is started
    /// here.
    pub fn create(&self, key: &PrivateKey, port: u16, peers: &PeerDiff) -> io::Result<()> {
        match &self.driver {
            Driver::WireGuard(Backend::Kernel) => {
                ip(&["link", "add", "dev", &self.text, "type", "wireguard"])?;
            }
            Driver::WireGuard(Backend::Userspace) => {}
            Driver::AmneziaWg { userspace, .. } => userspace.start(&self.text)?,
            Driver::AmneziaWgKernel { .. } => KernelAwg::create_link(&self.text)?,
            Driver::AmneziaWgUnavailable => return Err(unavailable()),
        }
        self.apply(Some((key, port)), peers)
    }

    /// Applies one update: the device settings when given (key and port, and for AmneziaWG
    /// its parameters), and the peer changes.
    pub fn apply(&self, device: Option<(&PrivateKey, u16)>, peers: &PeerDiff) -> io::Result<()> {
        match &self.driver {
            Driver::WireGuard(backend) => {
                let mut update = DeviceUpdate::new();
                if let Some((key, port)) = device {
                    update = update
                        .set_private_key(Key(*key.as_bytes()))
                        .set_listen_port(port);
                }
                peers.add_to(update).apply(&self.name, backend.control())
            }
            Driver::AmneziaWg { params, .. } => {
                let settings = device.map(|(private_key, listen_port)| DeviceSettings {
                    private_key,
                    listen_port,
                    params,
                });
                Userspace::set(&self.text, &encode_set(settings.as_ref(), peers))
            }
            Driver::AmneziaWgKernel { kernel, params } => {
                let settings = device.map(|(private_key, listen_port)| DeviceSettings {
                    private_key,
                    listen_port,
                    params,
                });
                kernel.set(&self.text, settings.as_ref(), peers)
            }
            Driver::AmneziaWgUnavailable => Err(unavailable()),
        }
    }

    /// Brings the link to `spec` from `state` (the link as just read; `None`: read it now);
    /// returns the changes made.
    pub fn ensure_link(
        &self,
        spec: &LinkSpec,
        state: Option<LinkState>,
    ) -> io::Result<Vec<LinkAction>> {
        let state = match state {
            Some(state) => state,
            None => self
                .link_state()?
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the link vanished"))?,
        };
        let actions = link_actions(&state, spec);
        for action in &actions {
            match action {
                LinkAction::AddAddress(a) => {
                    ip(&["addr", "add", &a.to_string(), "dev", &self.text])?
                }
                LinkAction::RemoveAddress(a) => {
                    ip(&["addr", "del", &a.to_string(), "dev", &self.text])?
                }
                LinkAction::SetMtu(mtu) => {
                    ip(&["link", "set", "dev", &self.text, "mtu", &mtu.to_string()])?
                }
                LinkAction::SetUp => ip(&["link", "set", "dev", &self.text, "up"])?,
            };
        }
        Ok(actions)
    }

    /// Deletes the link (wireguard-go and amneziawg-go exit when their tun device goes).
    pub fn delete(&self) -> io::Result<()> {
        match ip(&["link", "del", "dev", &self.text]) {
            Err(e) if e.to_string().contains("Cannot find device") => Ok(()),
            other => other.map(drop),
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The worker thread is gone (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("the interface worker thread has stopped")]
pub struct WorkerGone;

/// A dedicated OS thread that runs every blocking interface call, optionally inside a network
/// namespace.
#[derive(Debug, Clone)]
pub struct Worker {
    jobs: mpsc::Sender<Job>,
    netns: Option<PathBuf>,
}

impl Worker {
    /// Starts the thread; with `netns` (a path such as `/var/run/netns/<name>`) it enters that
    /// network namespace first and fails here when it cannot.
    pub fn start(netns: Option<PathBuf>) -> io::Result<Worker> {
        Self::start_named("wg-interface", netns)
    }

    /// Another thread in the same network namespace, for jobs that should not wait behind this
    /// one's (firewall rules while wireguard-go works through a large update).
    pub fn sibling(&self, name: &str) -> io::Result<Worker> {
        Self::start_named(name, self.netns.clone())
    }

    fn start_named(name: &str, netns: Option<PathBuf>) -> io::Result<Worker> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let path = netns.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let entered = match &path {
                    Some(path) => enter_netns(path),
                    None => Ok(()),
                };
                let failed = entered.is_err();
                let _ = ready_tx.send(entered);
                if failed {
                    return;
                }
                while let Ok(job) = receiver.recv() {
                    job();
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the interface worker did not start"))??;
        Ok(Worker { jobs, netns })
    }

    /// Runs `f` on the worker thread and waits for its result.
    pub async fn run<R, F>(&self, f: F) -> Result<R, WorkerGone>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        self.submit(f)?.await.map_err(|_| WorkerGone)
    }

    /// Queues `f` behind the jobs already queued without waiting for it; its result arrives on
    /// the returned channel (closed if the worker is gone).
    pub fn submit<R, F>(&self, f: F) -> Result<tokio::sync::oneshot::Receiver<R>, WorkerGone>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| WorkerGone)?;
        Ok(rx)
    }
}

fn enter_netns(path: &Path) -> io::Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("netns {}: {e}", path.display())))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("entering netns {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn auto_backend_prefers_the_kernel_and_only_auto_asks_it() {
        assert_eq!(
            Backend::resolve_with(BackendChoice::Auto, || true),
            Backend::Kernel
        );
        assert_eq!(
            Backend::resolve_with(BackendChoice::Auto, || false),
            Backend::Userspace
        );
        let not_asked = || -> bool { panic!("an explicit choice does not probe the kernel") };
        assert_eq!(
            Backend::resolve_with(BackendChoice::Userspace, not_asked),
            Backend::Userspace
        );
        assert_eq!(
            Backend::resolve_with(BackendChoice::Kernel, not_asked),
            Backend::Kernel
        );
    }

    #[test]
    fn a_kernel_link_and_an_amneziawg_go_device_are_not_one_interface() {
        let params = Box::new(AwgParams::default());
        let userspace = Driver::AmneziaWg {
            userspace: Userspace {
                binary: PathBuf::from("/usr/bin/amneziawg-go"),
            },
            params: params.clone(),
        };
        let kernel = Driver::AmneziaWgKernel {
            kernel: KernelAwg {
                dialect: crate::awg_netlink::Dialect::Awg15,
            },
            params,
        };
        let wireguard = Driver::WireGuard(Backend::Kernel);
        assert!(!userspace.same_protocol(&kernel));
        assert!(!kernel.same_protocol(&userspace));
        assert!(!kernel.same_protocol(&wireguard));
        assert!(kernel.same_protocol(&kernel));
        assert!(wireguard.same_protocol(&Driver::WireGuard(Backend::Userspace)));
        // Nothing exists for a server that could not be served: it becomes either by an update.
        for driver in [&kernel, &userspace] {
            assert!(Driver::AmneziaWgUnavailable.same_protocol(driver));
            assert!(driver.same_protocol(&Driver::AmneziaWgUnavailable));
        }
        assert!(!wireguard.same_protocol(&Driver::AmneziaWgUnavailable));
        assert_eq!(kernel.as_str(), "amneziawg-kernel");
        assert_eq!(kernel.params(), Some(&AwgParams::default()));
    }

    #[test]
    fn ip_json_is_parsed_into_link_state() {
        let json = r#"[{"ifindex":5,"ifname":"wg0","flags":["POINTOPOINT","NOARP","UP","LOWER_UP"],"mtu":1420,
            "addr_info":[{"family":"inet","local":"10.8.0.1","prefixlen":24},
                         {"family":"inet6","local":"fd00:8::1","prefixlen":64}]}]"#;
        let state = parse_link_state(json).unwrap().unwrap();
        assert!(state.up);
        assert_eq!(state.mtu, 1420);
        assert_eq!(
            state.addresses,
            [net("10.8.0.1/24"), net("fd00:8::1/64")].into()
        );
        assert_eq!(parse_link_state("[]").unwrap(), None);
        let down =
            r#"[{"ifname":"wg0","flags":["POINTOPOINT","NOARP"],"mtu":1420,"addr_info":[]}]"#;
        assert!(!parse_link_state(down).unwrap().unwrap().up);
        assert!(parse_link_state("not json").is_err());
    }

    #[test]
    fn link_actions_add_missing_remove_foreign_and_keep_link_local() {
        let spec = LinkSpec {
            addresses: vec![net("10.8.0.1/24"), net("fd00:8::1/64")],
            mtu: Some(1420),
        };
        let fresh = LinkState {
            up: false,
            mtu: 1500,
            addresses: BTreeSet::new(),
        };
        assert_eq!(
            link_actions(&fresh, &spec),
            vec![
                LinkAction::AddAddress(net("10.8.0.1/24")),
                LinkAction::AddAddress(net("fd00:8::1/64")),
                LinkAction::SetMtu(1420),
                LinkAction::SetUp,
            ]
        );
        let drifted = LinkState {
            up: true,
            mtu: 1420,
            addresses: [
                net("10.8.0.1/24"),
                net("10.9.0.1/24"),
                net("fe80::1/64"),
                net("fd00:8::1/64"),
            ]
            .into(),
        };
        assert_eq!(
            link_actions(&drifted, &spec),
            vec![LinkAction::RemoveAddress(net("10.9.0.1/24"))]
        );
        let no_mtu = LinkSpec {
            mtu: None,
            ..spec.clone()
        };
        let settled = LinkState {
            up: true,
            mtu: 1500,
            addresses: spec.addresses.iter().copied().collect(),
        };
        assert!(link_actions(&settled, &no_mtu).is_empty());
    }

    #[tokio::test]
    async fn worker_runs_jobs_in_order_and_reports_a_bad_netns() {
        let worker = Worker::start(None).unwrap();
        let thread = worker
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("wg-interface"));
        assert_eq!(worker.run(|| 1 + 1).await.unwrap(), 2);
        // Queued jobs run in order, before a job run after them.
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let queued: Vec<_> = (0..3)
            .map(|i| {
                let order = order.clone();
                worker
                    .submit(move || {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        order.lock().unwrap().push(i);
                        i
                    })
                    .unwrap()
            })
            .collect();
        let seen = worker.run({
            let order = order.clone();
            move || order.lock().unwrap().clone()
        });
        assert_eq!(seen.await.unwrap(), [0, 1, 2]);
        for (i, reply) in queued.into_iter().enumerate() {
            assert_eq!(reply.await.unwrap(), i);
        }
        let sibling = worker.sibling("wg-firewall").unwrap();
        let thread = sibling
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("wg-firewall"));
        let err = Worker::start(Some(PathBuf::from("/nonexistent/netns/x"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/netns/x"), "{err}");
    }
}
