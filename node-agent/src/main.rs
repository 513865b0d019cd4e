//! The `wgsub-node-agent` binary: parses the settings, refuses a bad one (exit 2, naming it),
//! starts logging and hands over to [`wgsub_node_agent::service::run`], which wires and runs the
//! agent until SIGTERM or Ctrl-C. The shell around it (logging, SIGTERM, probes, the exit line)
//! is [`wgsub_runtime`]'s.

use std::process::ExitCode;

use clap::Parser;
use wgsub_node_agent::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    wgsub_runtime::process::install_crypto_provider();
    if let Err(error) = config.validate() {
        eprintln!("wgsub-node-agent: {error}");
        return ExitCode::from(2);
    }
    config.log.init();
    wgsub_runtime::process::exit(
        "wgsub-node-agent",
        wgsub_node_agent::service::run(config).await,
    )
}
