//! The operator's settings: every one a flag and a `WGSUB_…` environment variable (clap). A bad
//! value stops the binary at start with the flag named.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use clap::builder::TypedValueParser as _;
use jiff::SignedDuration;
use wgsub_runtime::duration::{self, DurationParser};
use wgsub_runtime::logging::LogArgs;
use wgsub_runtime::settings;

/// `wgsub-operator`: turns paid VpnSubscriptions into WgPeers with keys, addresses and expiry.
#[derive(Debug, Clone, Parser)]
#[command(name = "wgsub-operator", version, about, after_help = duration::HELP)]
pub struct Config {
    /// Namespace whose subscriptions, peers and servers are reconciled; absent: all namespaces.
    #[arg(long, env = "WGSUB_NAMESPACE", value_parser = settings::kubernetes_name)]
    pub namespace: Option<String>,

    /// Namespace of the peers' key Secrets, apart from the credentials of --namespace (the
    /// chart grants Secrets nowhere else); absent: each peer's own namespace. Needs --namespace.
    #[arg(long, env = "WGSUB_KEYS_NAMESPACE", value_parser = settings::kubernetes_name)]
    pub keys_namespace: Option<String>,

    /// Namespace of the leader-election Lease; defaults to --namespace (required when watching
    /// all namespaces).
    #[arg(long, env = "WGSUB_LEASE_NAMESPACE", value_parser = settings::kubernetes_name)]
    pub lease_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, env = "WGSUB_LEASE_NAME", default_value = "wgsub-operator", value_parser = settings::kubernetes_name)]
    pub lease_name: String,

    /// How long the lease stays held without renewal (e.g. 15s); at least 3s.
    #[arg(long, env = "WGSUB_LEASE_DURATION", default_value = "15s", value_name = "DURATION",
          value_parser = DurationParser::at_least(Duration::from_secs(3)))]
    pub lease_duration: Duration,

    /// This replica's name in the lease (the pod name); defaults to the host name.
    #[arg(long, env = "WGSUB_IDENTITY", value_parser = settings::identity)]
    pub identity: Option<String>,

    /// The WgServer of subscriptions that name none.
    #[arg(long, env = "WGSUB_DEFAULT_SERVER", default_value = "default", value_parser = settings::kubernetes_name)]
    pub default_server: String,

    /// How long expired or suspended subscriptions keep their peers (keys and addresses) after
    /// the paid period, e.g. 30d or 720h.
    #[arg(long, env = "WGSUB_RETENTION", default_value = "30d", value_name = "DURATION",
          value_parser = DurationParser::any().map(signed))]
    pub retention: SignedDuration,

    /// The longest a subscription's folded traffic waits to be written to its status when
    /// nothing else forces a write (reaching the quota, a new period and a new or removed
    /// device are written at once), e.g. 60s; at least 1s.
    #[arg(long, env = "WGSUB_USAGE_WRITE_INTERVAL", default_value = "60s", value_name = "DURATION",
          value_parser = DurationParser::at_least(Duration::from_secs(1)).map(signed))]
    pub usage_write_interval: SignedDuration,

    /// Subscriptions reconciled at the same time (each mostly waits for the API server).
    #[arg(long, env = "WGSUB_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "WGSUB_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// Parses and cross-checks the settings; the error names the flag at fault.
    pub fn try_parse_checked<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Self::try_parse_from(args)?;
        config.lease_namespace()?;
        if config.keys_namespace.is_some() && config.namespace.is_none() {
            use clap::CommandFactory;
            return Err(Self::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--keys-namespace (WGSUB_KEYS_NAMESPACE) needs --namespace: one keys namespace \
                 serves one watched namespace",
            ));
        }
        Ok(config)
    }

    /// The namespace of the Lease.
    pub fn lease_namespace(&self) -> Result<String, clap::Error> {
        self.lease_namespace
            .clone()
            .or_else(|| self.namespace.clone())
            .ok_or_else(|| {
                use clap::CommandFactory;
                Self::command().error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "--lease-namespace (WGSUB_LEASE_NAMESPACE) is required when --namespace is absent",
                )
            })
    }

    /// This replica's identity in the lease.
    pub fn identity(&self) -> String {
        settings::replica_identity(self.identity.as_deref(), "wgsub-operator")
    }
}

/// A parsed duration as jiff's: what is longer than jiff can hold is its longest.
fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_checked(std::iter::once("wgsub-operator").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_documented_values() {
        let config = parse(&["--namespace", "vpn"]).unwrap();
        assert_eq!(config.concurrency, 64);
        assert_eq!(config.retention, SignedDuration::from_hours(30 * 24));
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.lease_namespace().unwrap(), "vpn");
        assert_eq!(config.default_server, "default");
        assert_eq!(config.http_addr.port(), 8080);
        assert_eq!(config.log, LogArgs::default());
        assert_eq!(config.keys_namespace, None, "keys beside their peers");
        assert_eq!(
            config.usage_write_interval,
            crate::usage::DEFAULT_WRITE_INTERVAL
        );
        let apart = parse(&["--namespace", "vpn", "--keys-namespace", "vpn-keys"]).unwrap();
        assert_eq!(apart.keys_namespace.as_deref(), Some("vpn-keys"));
    }

    #[test]
    fn durations_accept_days_and_hours() {
        let config = parse(&[
            "--namespace",
            "vpn",
            "--retention",
            "720h",
            "--lease-duration",
            "1m",
        ])
        .unwrap();
        assert_eq!(config.retention, SignedDuration::from_hours(720));
        assert_eq!(config.lease_duration, Duration::from_secs(60));
        let quick = parse(&["--namespace", "vpn", "--usage-write-interval", "2s"]).unwrap();
        assert_eq!(quick.usage_write_interval, SignedDuration::from_secs(2));
        let zero = parse(&["--namespace", "vpn", "--retention", "0s"]).unwrap();
        assert_eq!(zero.retention, SignedDuration::ZERO);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (vec!["--namespace", "Not_A_Name"], "--namespace"),
            (
                vec!["--namespace", "vpn", "--retention", "soon"],
                "--retention",
            ),
            (vec!["--namespace", "vpn", "--retention=-3d"], "--retention"),
            (
                vec!["--namespace", "vpn", "--lease-duration", "1s"],
                "--lease-duration",
            ),
            (
                vec!["--namespace", "vpn", "--concurrency", "0"],
                "--concurrency",
            ),
            (
                vec!["--namespace", "vpn", "--usage-write-interval", "0s"],
                "--usage-write-interval",
            ),
            (
                vec!["--namespace", "vpn", "--http-addr", "nowhere"],
                "--http-addr",
            ),
            (
                vec!["--namespace", "vpn", "--log-format", "xml"],
                "--log-format",
            ),
            (vec!["--namespace", "vpn", "--log", "info,=[=="], "--log"),
            (
                vec!["--namespace", "vpn", "--default-server", "UPPER"],
                "--default-server",
            ),
            (vec![], "--lease-namespace"),
            (
                vec!["--namespace", "vpn", "--keys-namespace", "Keys"],
                "--keys-namespace",
            ),
            (
                vec!["--lease-namespace", "vpn", "--keys-namespace", "vpn-keys"],
                "--keys-namespace",
            ),
        ] {
            let error = parse(&args).unwrap_err().to_string();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
    }

    #[test]
    fn the_log_filter_is_read_from_the_same_variable_as_the_other_binaries() {
        use clap::CommandFactory;
        let command = Config::command();
        let log = command
            .get_arguments()
            .find(|a| a.get_long() == Some("log"))
            .expect("a --log flag");
        assert_eq!(log.get_env().and_then(|e| e.to_str()), Some("WGSUB_LOG"));
        let config = parse(&["--namespace", "vpn", "--log", "wgsub_operator=debug"]).unwrap();
        assert_eq!(config.log.log_filter, "wgsub_operator=debug");
    }

    #[test]
    fn all_namespaces_with_a_lease_namespace_is_accepted() {
        let config = parse(&["--lease-namespace", "wgsub"]).unwrap();
        assert_eq!(config.namespace, None);
        assert_eq!(config.lease_namespace().unwrap(), "wgsub");
    }
}
