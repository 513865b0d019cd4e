//! wgsub's resource model and pure domain logic.
//!
//! The custom resources (`WgServer`, `VpnSubscription`, `WgPeer`) live in [`resources`]; the
//! decisions every binary shares (keys, client configs, address pools, the payment ledger fold,
//! peer liveness, the plan catalogue, device ownership and names) live in their own modules.
//! Nothing here performs I/O or reads a clock: time is always a parameter.

pub mod amnezia;
pub mod build_info;
pub mod config;
pub mod devices;
pub mod error_line;
pub mod import;
pub mod keys;
pub mod ledger;
pub mod liveness;
pub mod locations;
pub mod plans;
pub mod pool;
pub mod resources;

pub use resources::{
    SecretKeyRef, SubscriptionPhase, VpnSubscription, VpnSubscriptionSpec, VpnSubscriptionStatus,
    WgPeer, WgPeerSpec, WgPeerStatus, WgServer, WgServerSpec, WgServerStatus,
};
