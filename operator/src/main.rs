//! `wgsub-operator` binary: parse the settings, start logging, run the operator — or, as
//! `wgsub-operator migrate-keys`, move the key Secrets into their namespaces (`migrate_keys`), or
//! as `wgsub-operator export-keys`, back a key namespace up to a file (`export_keys`). The
//! shell around it (logging, SIGTERM, the exit line) is [`wgsub_runtime`]'s.

use clap::Parser as _;
use wgsub_operator::config::Config;
use wgsub_operator::export_keys::ExportConfig;
use wgsub_operator::migrate_keys::MigrateConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    wgsub_runtime::process::exit("wgsub-operator", start().await)
}

/// The binary; a bad setting exits 2 naming it, any other error is printed as one line.
async fn start() -> anyhow::Result<()> {
    wgsub_runtime::process::install_crypto_provider();
    let subcommand = std::env::args_os().nth(1);
    if subcommand.as_ref().is_some_and(|a| a == "migrate-keys") {
        let config = MigrateConfig::try_parse_checked(std::env::args_os().skip(1))
            .unwrap_or_else(|e| e.exit());
        config.log.init();
        return wgsub_operator::migrate_keys::run(config).await;
    }
    if subcommand.as_ref().is_some_and(|a| a == "export-keys") {
        // Its report is its standard output: no logger.
        let config = ExportConfig::parse_from(std::env::args_os().skip(1));
        return wgsub_operator::export_keys::run(config).await;
    }
    let config = Config::try_parse_checked(std::env::args_os()).unwrap_or_else(|e| e.exit());
    config.log.init();
    wgsub_operator::run(config).await
}
