//! `wgsub-api` binary: parses the settings, sets up logging and hands the command — `migrate`
//! (for the Helm hook Job), `import` (an old server's customers) or `serve` — to
//! [`wgsub_api::service::run`]. The shell around it (logging, SIGTERM, the exit line) is
//! [`wgsub_runtime`]'s.

use clap::Parser;
use wgsub_api::config::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    wgsub_runtime::process::exit("wgsub-api", start().await)
}

/// The binary; a bad setting exits 2 naming it, any other error is printed as one line.
async fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    wgsub_runtime::process::install_crypto_provider();
    cli.log.init();
    wgsub_api::service::run(cli.command).await
}
