//! The `wgsub-bot` binary: parses the settings, refuses a bad one (exit 2, naming it), starts
//! logging and hands over to [`wgsub_bot::service::run`], which wires and runs the bot until
//! SIGTERM. The shell around it (logging, SIGTERM, probes, the exit line) is [`wgsub_runtime`]'s.

use std::process::ExitCode;

use clap::Parser;
use wgsub_bot::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    wgsub_runtime::process::install_crypto_provider();
    if let Err(error) = config.validate() {
        eprintln!("wgsub-bot: invalid configuration: {error}");
        return ExitCode::from(2);
    }
    config.log.init();
    wgsub_runtime::process::exit("wgsub-bot", wgsub_bot::service::run(config).await)
}
