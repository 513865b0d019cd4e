//! How every binary stops: SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C) cancels one
//! `CancellationToken` that every task of the binary observes.

use tokio_util::sync::CancellationToken;

use tokio::signal::unix::{Signal, SignalKind};

/// Completes at the first SIGTERM or SIGINT. A signal that cannot be listened for is logged and
/// the other one still waited for.
pub async fn signal() {
    wait(tokio::signal::unix::signal(SignalKind::terminate())).await;
}

/// A token cancelled at the first SIGTERM or SIGINT (logged as "shutting down"). SIGTERM is
/// caught from this call on; call it inside the runtime, once, before anything may take long.
pub fn on_signal() -> CancellationToken {
    let terminate = tokio::signal::unix::signal(SignalKind::terminate());
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait(terminate).await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

async fn wait(terminate: std::io::Result<Signal>) {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match terminate {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The only test that signals its own process.
    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let token = on_signal();
        assert!(!token.is_cancelled());
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), token.cancelled())
            .await
            .expect("cancelled within 5 s of SIGTERM");
    }
}
