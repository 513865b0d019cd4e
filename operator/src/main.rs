//! `wgsub-operator` binary: parse the settings, start logging, run the operator — or, as
//! `wgsub-operator migrate-keys`, move the key Secrets into their namespaces (`migrate_keys`), or
//! as `wgsub-operator export-keys`, back a key namespace up to a file (`export_keys`).

use clap::Parser as _;
use wgsub_operator::config::Config;
use wgsub_operator::export_keys::ExportConfig;
use wgsub_operator::migrate_keys::MigrateConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match start().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "wgsub-operator: {}",
                wgsub_crds::error_line::error_line(&*error)
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// The binary; its error is printed as one line naming its cause.
async fn start() -> anyhow::Result<()> {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "migrate-keys")
    {
        let config = MigrateConfig::try_parse_checked(std::env::args_os().skip(1))
            .unwrap_or_else(|e| e.exit());
        let _ = rustls::crypto::ring::default_provider().install_default();
        return wgsub_operator::migrate_keys::run(config).await;
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "export-keys")
    {
        let config = ExportConfig::parse_from(std::env::args_os().skip(1));
        let _ = rustls::crypto::ring::default_provider().install_default();
        return wgsub_operator::export_keys::run(config).await;
    }
    let config = Config::try_parse_checked(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // One TLS crypto provider, named here: with two compiled in (as a build with test
    // dependencies has), rustls would refuse to pick one at the first connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    wgsub_operator::init_logging(&config);
    wgsub_operator::run(config).await
}
