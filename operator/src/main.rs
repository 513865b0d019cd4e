//! `wgsub-operator` binary: parse the settings, start logging, run the operator.

use wgsub_operator::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::try_parse_checked(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // One TLS crypto provider, named here: with two compiled in (as a build with test
    // dependencies has), rustls would refuse to pick one at the first connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    wgsub_operator::init_logging(&config);
    wgsub_operator::run(config).await
}
