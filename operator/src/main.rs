//! `wgsub-operator` binary: parse the settings, start logging, run the operator.

use wgsub_operator::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::try_parse_checked(std::env::args_os()).unwrap_or_else(|e| e.exit());
    wgsub_operator::init_logging(&config);
    wgsub_operator::run(config).await
}
