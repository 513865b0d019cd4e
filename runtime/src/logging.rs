//! How every binary logs: `--log-format` / `WGSUB_LOG_FORMAT` (text or JSON) and `--log` /
//! `WGSUB_LOG` (a tracing `EnvFilter`), flattened into each binary's settings by [`LogArgs`].
//! JSON events are flattened (`message` and the event's fields at the top level, beside
//! `level`, `timestamp` and `target`), so every binary's log lines have one shape.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The log settings of every binary (`#[command(flatten)]`; global, so a subcommand takes them
/// too).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long,
        env = "WGSUB_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. info or wgsub_operator=debug.
    #[arg(long = "log", env = "WGSUB_LOG", default_value = "info", global = true, value_parser = parse_filter)]
    pub log_filter: String,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
        }
    }
}

impl LogArgs {
    /// Installs the process's logger, writing to standard output (and `log` records through
    /// it). Once per process: a second call changes nothing.
    pub fn init(&self) {
        let _ = self.try_init_with(std::io::stdout);
    }

    /// Installs the logger writing to `writer`; an error when one is installed already.
    pub fn try_init_with<W>(
        &self,
        writer: W,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        // The filter was checked when parsed; a hand-built LogArgs falls back to `info`.
        let filter =
            EnvFilter::try_new(&self.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer);
        match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        }
    }
}

fn parse_filter(text: &str) -> Result<String, String> {
    EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{text:?} is not a log filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Parser)]
    struct Binary {
        #[command(flatten)]
        log: LogArgs,
        #[command(subcommand)]
        command: Option<Sub>,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        Migrate,
    }

    fn parse(args: &[&str]) -> Result<Binary, String> {
        Binary::try_parse_from(std::iter::once("binary").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_binary_reads_the_same_flags_and_variables() {
        let command = Binary::command();
        let env = |long: &str| {
            command
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .and_then(|a| a.get_env())
                .and_then(|e| e.to_str())
                .map(str::to_owned)
        };
        assert_eq!(env("log-format").as_deref(), Some("WGSUB_LOG_FORMAT"));
        assert_eq!(env("log").as_deref(), Some("WGSUB_LOG"));
        assert_eq!(parse(&[]).unwrap().log, LogArgs::default());
    }

    #[test]
    fn a_subcommand_takes_the_log_flags_too() {
        let binary = parse(&["migrate", "--log-format", "json", "--log", "debug"]).unwrap();
        assert!(binary.command.is_some());
        assert_eq!(binary.log.log_format, LogFormat::Json);
        assert_eq!(binary.log.log_filter, "debug");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let error = parse(&["--log", "info,=[=="]).unwrap_err();
        assert!(error.contains("--log"), "{error}");
        let error = parse(&["--log-format", "xml"]).unwrap_err();
        assert!(error.contains("--log-format"), "{error}");
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    /// The only test that installs the process's logger.
    #[test]
    fn json_lines_carry_the_message_and_fields_at_the_top_level() {
        let buffer = Buffer::default();
        let args = LogArgs {
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
        };
        args.try_init_with(buffer.clone()).unwrap();
        tracing::info!(backend = "userspace", "starting");
        tracing::debug!("filtered out");
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        // Other tests of this process may log meanwhile: their lines are JSON objects too.
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let started = lines
            .iter()
            .find(|line| line["message"] == "starting")
            .unwrap_or_else(|| panic!("no start line in {text}"));
        assert_eq!(started["backend"], "userspace", "{text}");
        assert_eq!(started["level"], "INFO", "{text}");
        assert!(
            lines.iter().all(|line| line.get("fields").is_none()),
            "{text}"
        );
        assert!(!text.contains("filtered out"), "{text}");
        assert!(
            args.try_init_with(Buffer::default()).is_err(),
            "once per process"
        );
    }
}
