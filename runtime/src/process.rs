//! The start and the end of every binary's process: one TLS crypto provider named before any
//! connection, and a startup error printed as one line naming its cause, with exit code 1.

use std::process::ExitCode;

/// Names ring as the process's TLS crypto provider: with two compiled in (as a build with test
/// dependencies has), rustls would refuse to pick one at the first connection.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The exit code of `binary`'s run: 0, or 1 with `<binary>: <the error chain on one line>` on
/// standard error.
pub fn exit(binary: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_report(binary, &error));
            ExitCode::FAILURE
        }
    }
}

/// `<binary>: <cause>: <cause>…`, each cause once (see [`wgsub_crds::error_line`]).
pub fn error_report(binary: &str, error: &anyhow::Error) -> String {
    format!("{binary}: {}", wgsub_crds::error_line::error_line(&**error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_startup_error_is_one_line_with_every_cause() {
        let error = Err::<(), _>(std::io::Error::other("no such file"))
            .context("no Kubernetes configuration")
            .unwrap_err();
        let report = error_report("wgsub-test", &error);
        assert_eq!(
            report,
            "wgsub-test: no Kubernetes configuration: no such file"
        );
        assert!(!report.contains('\n'));
    }
}
