//! The agent's settings: every one a flag and a `WGSUB_…` environment variable. A bad value stops
//! the binary at start with the setting named (clap names the flag; [`Config::validate`] covers
//! what clap cannot check).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use wgsub_runtime::duration::{self, DurationParser};
use wgsub_runtime::logging::LogArgs;

use crate::agent::Settings;
use crate::amneziawg::Userspace;
use crate::awg_kernel::{AwgBackendChoice, AwgImplementation, KernelAwg, resolve};
use crate::interface::{Backend, BackendChoice};
use crate::nat::Firewall;

/// Which firewall the NAT rules go into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FirewallChoice {
    /// nftables when `nft` works on the node, iptables otherwise.
    Auto,
    Nftables,
    Iptables,
}

impl FirewallChoice {
    /// The fixed choice, `None` for auto-detection.
    pub fn fixed(self) -> Option<Firewall> {
        match self {
            FirewallChoice::Auto => None,
            FirewallChoice::Nftables => Some(Firewall::Nftables),
            FirewallChoice::Iptables => Some(Firewall::Iptables),
        }
    }
}

/// wgsub-node-agent: keeps this node's WireGuard interfaces equal to the live WgPeers of the
/// WgServers it serves.
#[derive(Debug, Clone, Parser)]
#[command(name = "wgsub-node-agent", version, about, after_help = duration::HELP)]
pub struct Config {
    /// This node's name (from the downward API: spec.nodeName).
    #[arg(long, env = "WGSUB_NODE_NAME")]
    pub node_name: String,

    /// The namespace whose WgServers, WgPeers and VpnSubscriptions are watched.
    #[arg(long, env = "WGSUB_NAMESPACE")]
    pub namespace: String,

    /// The namespace of the server key Secrets (a WgServer's privateKeySecretRef, created here
    /// when missing) and of the preshared-key Secrets peers name; absent: --namespace. The
    /// chart keeps them apart, so the agent reads no other Secret.
    #[arg(long, env = "WGSUB_SERVER_KEYS_NAMESPACE")]
    pub server_keys_namespace: Option<String>,

    /// WireGuard implementation: kernel module, wireguard-go, or auto (the kernel when it has
    /// WireGuard or can load it).
    #[arg(long, env = "WGSUB_BACKEND", value_enum, default_value = "auto")]
    pub backend: BackendChoice,

    /// AmneziaWG implementation: kernel (the amneziawg kernel module; the agent stops at start
    /// without it), userspace (amneziawg-go), or auto (the module when its generic netlink
    /// family `amneziawg` resolves, amneziawg-go otherwise and for servers the module cannot
    /// carry, such as AmneziaWG 1.5 ones on a 1.0 module).
    #[arg(
        long,
        env = "WGSUB_AMNEZIAWG_BACKEND",
        value_enum,
        default_value = "auto"
    )]
    pub amneziawg_backend: AwgBackendChoice,

    /// amneziawg-go for AmneziaWG servers: a path, or a name looked up on PATH. Without it and
    /// without the kernel module an AmneziaWG server reports that the node has no AmneziaWG
    /// implementation.
    #[arg(long, env = "WGSUB_AMNEZIAWG_GO", default_value = "amneziawg-go")]
    pub amneziawg_go: PathBuf,

    /// Time between full comparisons of the interface with the live peers.
    #[arg(long, env = "WGSUB_RESYNC_INTERVAL", default_value = "30s", value_name = "DURATION",
          value_parser = DurationParser::positive())]
    pub resync_interval: Duration,

    /// Time between status batches (handshakes, active flags, conditions).
    #[arg(long, env = "WGSUB_STATUS_INTERVAL", default_value = "10s", value_name = "DURATION",
          value_parser = DurationParser::positive())]
    pub status_interval: Duration,

    /// Time between writes of changed byte counters (and of a server's lastSync) alone.
    #[arg(long, env = "WGSUB_COUNTERS_INTERVAL", default_value = "60s", value_name = "DURATION",
          value_parser = DurationParser::positive())]
    pub counters_interval: Duration,

    /// Most status patches per second sent to the API server.
    #[arg(long, env = "WGSUB_STATUS_WRITES_PER_SECOND", default_value = "20",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub status_writes_per_second: u32,

    /// Firewall for NAT rules.
    #[arg(long, env = "WGSUB_FIREWALL", value_enum, default_value = "auto")]
    pub firewall: FirewallChoice,

    /// Network namespace (a path like /var/run/netns/NAME) to manage interfaces in; default:
    /// the agent's own (the host's, under hostNetwork).
    #[arg(long, env = "WGSUB_NETNS")]
    pub netns: Option<PathBuf>,

    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "WGSUB_HTTP_ADDR", default_value = "0.0.0.0:9102")]
    pub http_addr: SocketAddr,

    #[command(flatten)]
    pub log: LogArgs,
}

/// A setting with a value clap accepted but the agent cannot use.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{field}: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

impl Config {
    /// The namespace of the server key Secrets.
    pub fn server_keys_namespace(&self) -> &str {
        self.server_keys_namespace
            .as_deref()
            .unwrap_or(&self.namespace)
    }

    /// Checks what clap cannot: names that must be non-empty, a netns that must exist, the
    /// AmneziaWG kernel module when it is asked for by name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_name.trim().is_empty() {
            return Err(ConfigError {
                field: "node-name",
                message: "must not be empty".into(),
            });
        }
        if self.namespace.trim().is_empty() {
            return Err(ConfigError {
                field: "namespace",
                message: "must not be empty".into(),
            });
        }
        if self
            .server_keys_namespace
            .as_ref()
            .is_some_and(|ns| ns.trim().is_empty())
        {
            return Err(ConfigError {
                field: "server-keys-namespace",
                message: "must not be empty".into(),
            });
        }
        if let Some(path) = &self.netns
            && !path.exists()
        {
            return Err(ConfigError {
                field: "netns",
                message: format!("{} does not exist", path.display()),
            });
        }
        if self.amneziawg_backend == AwgBackendChoice::Kernel {
            self.amneziawg()?;
        }
        Ok(())
    }

    /// The AmneziaWG implementation this node has, by `--amneziawg-backend` (the kernel asked
    /// for `auto` and `kernel`); an error only for `kernel` without a usable module.
    pub fn amneziawg(&self) -> Result<Option<AwgImplementation>, ConfigError> {
        resolve(
            self.amneziawg_backend,
            KernelAwg::probe,
            Userspace::find(&self.amneziawg_go),
        )
        .map_err(|message| ConfigError {
            field: "amneziawg-backend",
            message,
        })
    }

    /// The agent loop's settings (the backends resolved against this machine: `auto` is the
    /// kernel's when it has WireGuard, or the AmneziaWG module). An explicit AmneziaWG `kernel`
    /// that [`Config::validate`] accepted but that is gone by now leaves AmneziaWG servers
    /// reporting that the node has no implementation.
    pub fn agent_settings(&self) -> Settings {
        let amneziawg = self.amneziawg().unwrap_or_else(|error| {
            tracing::error!(%error, "no AmneziaWG implementation");
            None
        });
        Settings {
            node_name: self.node_name.clone(),
            backend: Backend::resolve(self.backend),
            amneziawg,
            resync_interval: self.resync_interval,
            status_interval: self.status_interval,
            counters_interval: self.counters_interval,
            firewall: self.firewall.fixed(),
        }
    }

    /// How long `/healthz` tolerates no finished full comparison: four resync periods and a
    /// minute for a slow one.
    pub fn health_deadline(&self) -> Duration {
        self.resync_interval * 4 + Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut all = vec![
            "wgsub-node-agent",
            "--node-name",
            "n1",
            "--namespace",
            "wgsub",
        ];
        all.extend_from_slice(args);
        Config::try_parse_from(all)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.resync_interval, Duration::from_secs(30));
        assert_eq!(config.status_interval, Duration::from_secs(10));
        assert_eq!(config.counters_interval, Duration::from_secs(60));
        assert_eq!(config.backend, BackendChoice::Auto);
        assert_eq!(config.amneziawg_backend, AwgBackendChoice::Auto);
        assert_eq!(config.firewall, FirewallChoice::Auto);
        assert_eq!(config.http_addr.port(), 9102);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn the_agent_settings_carry_the_flags() {
        let config = parse(&[
            "--backend",
            "userspace",
            "--resync-interval",
            "5",
            "--status-interval",
            "2",
            "--counters-interval",
            "90",
            "--firewall",
            "iptables",
        ])
        .unwrap();
        let settings = config.agent_settings();
        assert_eq!(settings.node_name, "n1");
        assert_eq!(settings.backend, Backend::Userspace);
        assert_eq!(settings.resync_interval, Duration::from_secs(5));
        assert_eq!(settings.status_interval, Duration::from_secs(2));
        assert_eq!(settings.counters_interval, Duration::from_secs(90));
        assert_eq!(settings.firewall, Some(Firewall::Iptables));
        assert_eq!(config.health_deadline(), Duration::from_secs(80));
        let missing = parse(&[
            "--amneziawg-backend",
            "userspace",
            "--amneziawg-go",
            "/nonexistent/amneziawg-go",
        ])
        .unwrap();
        assert_eq!(
            missing.agent_settings().amneziawg,
            None,
            "no AmneziaWG here"
        );
        let found = parse(&["--amneziawg-backend", "userspace", "--amneziawg-go", "sh"])
            .unwrap()
            .agent_settings();
        assert!(matches!(
            found.amneziawg,
            Some(AwgImplementation::Userspace(u)) if u.binary.is_absolute()
        ));
        let defaults = parse(&["--backend", "userspace"]).unwrap().agent_settings();
        assert_eq!(defaults.firewall, None, "auto: detected on first use");
    }

    #[test]
    fn every_setting_has_an_env_variable() {
        for arg in Config::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert!(env.starts_with("WGSUB_"), "--{id} has no WGSUB_ variable");
        }
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = parse(&["--resync-interval", "0"]).unwrap_err().to_string();
        assert!(err.contains("--resync-interval"), "{err}");
        let err = parse(&["--backend", "magic"]).unwrap_err().to_string();
        assert!(err.contains("--backend"), "{err}");
        let err = parse(&["--amneziawg-backend", "magic"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--amneziawg-backend"), "{err}");
        let err = parse(&["--status-writes-per-second", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--status-writes-per-second"), "{err}");
        let config = parse(&["--netns", "/nonexistent/netns"]).unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--netns")
        );
        let err = parse(&["--log", "[[["]).unwrap_err().to_string();
        assert!(err.contains("--log"), "{err}");
        let mut config = parse(&[]).unwrap();
        config.node_name = " ".into();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--node-name")
        );
        assert!(parse(&["--resync-interval", "1.5"]).is_ok());
    }
}
