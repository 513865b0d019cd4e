//! wgsub-node-agent: keeps each WireGuard interface of a node equal to the live `WgPeer`s of the
//! `WgServer`s the node serves.
//!
//! Functional core: [`desired`] (which peers belong on the interface), [`diff`] (the changes),
//! [`expiry`] (when the next peer leaves), [`pass`] (what one pass over a server does: rebuild or
//! update the decision, converge or diff, NAT), [`status`] (what to write and when), the rendering
//! half of [`nat`], the link decisions of [`interface`] and the AmneziaWG encodings ([`amneziawg`]'s
//! UAPI text, [`awg_netlink`]'s kernel messages). Imperative shell: [`interface`] (WireGuard
//! through wireguard-control, AmneziaWG through amneziawg-go or the kernel module
//! ([`awg_kernel`]), links through iproute2, on one worker thread), [`kube_shell`] (watches,
//! Secret creation, status writes), [`agent`] (the loop), [`http`] and [`metrics`]; [`service`]
//! wires them from the settings and runs them (what the binary's `main` hands over to).
//!
//! Writes, with the field manager `wgsub-node-agent`: `WgPeer.status`, `WgServer.status`, and
//! the server key Secret when it is missing.

pub mod agent;
pub mod amneziawg;
pub mod awg_kernel;
pub mod awg_netlink;
pub mod config;
pub mod desired;
pub mod diff;
pub mod expiry;
pub mod http;
pub mod index;
pub mod interface;
pub mod kube_shell;
pub mod metrics;
pub mod nat;
pub mod pass;
pub mod service;
pub mod snapshot;
pub mod status;
