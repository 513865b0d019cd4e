//! The AmneziaWG kernel module as a backend, and the choice between it and amneziawg-go.
//!
//! The module registers the generic netlink family `amneziawg` (and the link kind
//! `amneziawg`). [`KernelAwg::probe`] asks the kernel's generic netlink controller for that
//! family — which also loads the module when the kernel can — and reads its version, which says
//! how the obfuscation attributes travel ([`Dialect`]). [`KernelAwg::get`] and
//! [`KernelAwg::set`] send the messages [`crate::awg_netlink`] builds and read what comes back.
//!
//! [`resolve`] turns the `--amneziawg-backend` setting into what this node runs AmneziaWG
//! servers with: `auto` prefers the kernel module when the family resolves and keeps
//! amneziawg-go beside it for servers the module cannot carry (AmneziaWG 1.5 parameters on a
//! 1.0 module); `kernel` insists on the module and stops the agent at start without it.

use std::io;
use std::process::Command;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_request::{max_genl_payload_length, netlink_request_genl};

use crate::amneziawg::{AwgDevice, DeviceSettings, Userspace};
use crate::awg_netlink::{self, AmneziaWg, Dialect, FAMILY_NAME};
use crate::diff::PeerDiff;

/// Which AmneziaWG implementation the agent asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AwgBackendChoice {
    /// The kernel module when its generic netlink family resolves, amneziawg-go otherwise
    /// (and amneziawg-go for a server the module cannot carry).
    Auto,
    /// The kernel module only; the agent does not start without it.
    Kernel,
    /// amneziawg-go only.
    Userspace,
}

/// What the kernel's generic netlink controller says about the `amneziawg` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No such family: the module is not loaded and could not be.
    Absent,
    Found(KernelAwg),
    /// The family exists in a version this agent does not know how to speak.
    UnknownVersion(u32),
}

/// The AmneziaWG kernel module of this node, in the dialect of its family version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelAwg {
    pub dialect: Dialect,
}

/// How this node runs AmneziaWG servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwgImplementation {
    Kernel(KernelAwg),
    Userspace(Userspace),
    /// `auto` with both: the kernel module, and amneziawg-go for what the module cannot carry.
    KernelOrUserspace(KernelAwg, Userspace),
}

impl AwgImplementation {
    pub fn as_str(&self) -> &'static str {
        match self {
            AwgImplementation::Kernel(_) => "kernel",
            AwgImplementation::Userspace(_) => "amneziawg-go",
            AwgImplementation::KernelOrUserspace(..) => "kernel, amneziawg-go",
        }
    }
}

/// Resolves the choice: `userspace` is amneziawg-go when it was found (the kernel is not
/// asked); `kernel` is the module or an error saying why not; `auto` is the module when the
/// probe finds one it can speak to (with amneziawg-go beside it when found), amneziawg-go
/// otherwise. `None`: no AmneziaWG implementation on this node.
pub fn resolve(
    choice: AwgBackendChoice,
    probe: impl FnOnce() -> io::Result<Probe>,
    userspace: Option<Userspace>,
) -> Result<Option<AwgImplementation>, String> {
    match choice {
        AwgBackendChoice::Userspace => Ok(userspace.map(AwgImplementation::Userspace)),
        AwgBackendChoice::Kernel => match probe() {
            Ok(Probe::Found(kernel)) => Ok(Some(AwgImplementation::Kernel(kernel))),
            Ok(Probe::Absent) => Err(format!(
                "the AmneziaWG kernel module is not available: the generic netlink family \
                 {FAMILY_NAME:?} does not resolve (load the amneziawg module, or choose auto \
                 or userspace)"
            )),
            Ok(Probe::UnknownVersion(version)) => Err(format!(
                "the AmneziaWG kernel module's family {FAMILY_NAME:?} has version {version}, \
                 which this agent does not speak (it knows 1 to 3)"
            )),
            Err(error) => Err(format!(
                "looking up the generic netlink family {FAMILY_NAME:?}: {error}"
            )),
        },
        AwgBackendChoice::Auto => {
            let kernel = match probe() {
                Ok(Probe::Found(kernel)) => Some(kernel),
                Ok(Probe::Absent) => None,
                Ok(Probe::UnknownVersion(version)) => {
                    tracing::warn!(
                        version,
                        "the AmneziaWG kernel module speaks a family version this agent does \
                         not know; using amneziawg-go"
                    );
                    None
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot look up the AmneziaWG kernel module");
                    None
                }
            };
            Ok(match (kernel, userspace) {
                (Some(kernel), Some(userspace)) => {
                    Some(AwgImplementation::KernelOrUserspace(kernel, userspace))
                }
                (Some(kernel), None) => Some(AwgImplementation::Kernel(kernel)),
                (None, userspace) => userspace.map(AwgImplementation::Userspace),
            })
        }
    }
}

fn family_version(nlas: &[GenlCtrlAttrs]) -> Option<u32> {
    nlas.iter().find_map(|attr| match attr {
        GenlCtrlAttrs::Version(version) => Some(*version),
        _ => None,
    })
}

fn payloads(
    replies: Vec<netlink_packet_core::NetlinkMessage<GenlMessage<AmneziaWg>>>,
) -> Vec<AmneziaWg> {
    replies
        .into_iter()
        .filter_map(|reply| match reply.payload {
            NetlinkPayload::InnerMessage(message) => Some(message.payload),
            _ => None,
        })
        .collect()
}

/// Asks the kernel's generic netlink controller for the family `name`: its version, `None`
/// when the kernel has no such family (`ENOENT`).
pub fn family_version_of(name: &str) -> io::Result<Option<u32>> {
    let request = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.into())],
    });
    let replies = match netlink_request_genl(request, Some(NLM_F_REQUEST | NLM_F_ACK)) {
        Ok(replies) => replies,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let version = replies.iter().find_map(|reply| match &reply.payload {
        NetlinkPayload::InnerMessage(message) => family_version(&message.payload.nlas),
        _ => None,
    });
    version
        .map(Some)
        .ok_or_else(|| io::Error::other(format!("the family {name:?} came without a version")))
}

impl KernelAwg {
    /// Asks the generic netlink controller for the `amneziawg` family.
    pub fn probe() -> io::Result<Probe> {
        Ok(match family_version_of(FAMILY_NAME)? {
            None => Probe::Absent,
            Some(version) => match Dialect::from_version(version) {
                Some(dialect) => Probe::Found(KernelAwg { dialect }),
                None => Probe::UnknownVersion(version),
            },
        })
    }

    /// Makes the link (the module's link kind is `amneziawg` too).
    pub fn create_link(interface: &str) -> io::Result<()> {
        let output = Command::new("ip")
            .args(["link", "add", "dev", interface, "type", FAMILY_NAME])
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("ip: {e}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "ip link add dev {interface} type {FAMILY_NAME}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// Reads the interface. `EOPNOTSUPP` means the link is not an AmneziaWG kernel link.
    pub fn get(&self, interface: &str) -> io::Result<AwgDevice> {
        let request = GenlMessage::from_payload(awg_netlink::get_message(interface, self.dialect));
        let replies = netlink_request_genl(request, Some(NLM_F_REQUEST | NLM_F_DUMP))?;
        awg_netlink::decode_dump(&payloads(replies)).map_err(io::Error::other)
    }

    /// Applies one update: the device settings when given and the peer changes, in as many
    /// messages as the peers need, sent one after another.
    pub fn set(
        &self,
        interface: &str,
        device: Option<&DeviceSettings<'_>>,
        peers: &PeerDiff,
    ) -> io::Result<()> {
        let messages = awg_netlink::set_messages(
            interface,
            self.dialect,
            device,
            peers,
            max_genl_payload_length(),
        )
        .map_err(|problem| io::Error::new(io::ErrorKind::Unsupported, problem))?;
        for message in messages {
            netlink_request_genl(
                GenlMessage::from_payload(message),
                Some(NLM_F_REQUEST | NLM_F_ACK),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn userspace() -> Userspace {
        Userspace {
            binary: PathBuf::from("/usr/bin/amneziawg-go"),
        }
    }

    const KERNEL: KernelAwg = KernelAwg {
        dialect: Dialect::Awg15,
    };

    #[test]
    fn auto_prefers_the_module_and_keeps_amneziawg_go_beside_it() {
        let found = || Ok(Probe::Found(KERNEL));
        assert_eq!(
            resolve(AwgBackendChoice::Auto, found, Some(userspace())),
            Ok(Some(AwgImplementation::KernelOrUserspace(
                KERNEL,
                userspace()
            )))
        );
        assert_eq!(
            resolve(AwgBackendChoice::Auto, found, None),
            Ok(Some(AwgImplementation::Kernel(KERNEL)))
        );
    }

    #[test]
    fn auto_without_a_usable_module_is_amneziawg_go_or_nothing() {
        for probe in [
            Ok(Probe::Absent),
            Ok(Probe::UnknownVersion(9)),
            Err(io::Error::other("no netlink")),
        ] {
            let failed = format!("{probe:?}");
            assert_eq!(
                resolve(AwgBackendChoice::Auto, move || probe, Some(userspace())),
                Ok(Some(AwgImplementation::Userspace(userspace()))),
                "{failed}"
            );
        }
        assert_eq!(
            resolve(AwgBackendChoice::Auto, || Ok(Probe::Absent), None),
            Ok(None)
        );
    }

    #[test]
    fn an_explicit_kernel_choice_needs_the_module_and_userspace_never_asks() {
        assert_eq!(
            resolve(
                AwgBackendChoice::Kernel,
                || Ok(Probe::Found(KERNEL)),
                Some(userspace())
            ),
            Ok(Some(AwgImplementation::Kernel(KERNEL)))
        );
        let absent = resolve(AwgBackendChoice::Kernel, || Ok(Probe::Absent), None).unwrap_err();
        assert!(
            absent.contains("\"amneziawg\" does not resolve"),
            "{absent}"
        );
        let unknown = resolve(
            AwgBackendChoice::Kernel,
            || Ok(Probe::UnknownVersion(7)),
            None,
        )
        .unwrap_err();
        assert!(unknown.contains("version 7"), "{unknown}");
        let broken = resolve(
            AwgBackendChoice::Kernel,
            || Err(io::Error::other("socket refused")),
            None,
        )
        .unwrap_err();
        assert!(broken.contains("socket refused"), "{broken}");
        let not_asked = || -> io::Result<Probe> { panic!("userspace does not probe the kernel") };
        assert_eq!(
            resolve(AwgBackendChoice::Userspace, not_asked, Some(userspace())),
            Ok(Some(AwgImplementation::Userspace(userspace())))
        );
        assert_eq!(
            resolve(AwgBackendChoice::Userspace, not_asked, None),
            Ok(None)
        );
    }
}
