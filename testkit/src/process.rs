//! A binary run as a process the way Kubernetes runs it: configured by its environment alone
//! (plus `PATH`), serving HTTP on a free loopback port given as `WGSUB_HTTP_ADDR`, its standard
//! output (the log) kept in a file, stopped with SIGTERM and given a deadline to exit. Killed
//! when dropped, whatever happened.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free loopback TCP port (free when asked; the process binds it soon after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Polls `check` until it gives a value; fails naming `what` after `within`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `binary <args> --help`: fails unless it exits 0 and its text mentions each of `mentions`
/// (flags and their environment variables).
pub fn assert_help_mentions(binary: &str, args: &[&str], mentions: &[&str]) {
    let help = Command::new(binary)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{binary} does not run: {e}"));
    assert!(help.status.success(), "--help exits 0: {help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    for mention in mentions {
        assert!(text.contains(mention), "--help mentions {mention}: {text}");
    }
}

/// `binary <args>` with an empty environment: fails unless it stops at once with exit code 2
/// and a message naming `flag`; returns the message.
pub fn assert_refused_at_start(binary: &str, args: &[&str], flag: &str) -> String {
    let refused = Command::new(binary)
        .env_clear()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{binary} does not run: {e}"));
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a bad setting exits 2: {refused:?}"
    );
    let message = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        message.contains(flag),
        "the message names {flag}: {message}"
    );
    message
}

/// Runs `binary` with `args` and exactly the environment `env` (plus `KUBECONFIG` naming no
/// file, and no in-cluster environment) and asserts it stops at start with exit code 1 and one
/// line on stderr, `<binary name>: …`, that names the missing kubeconfig's path. Returns it.
pub fn assert_stops_without_kubeconfig(
    binary: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> String {
    let missing = "/nonexistent/kubeconfig";
    let stopped = Command::new(binary)
        .env_clear()
        .envs(env.iter().copied())
        .env("KUBECONFIG", missing)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{binary} does not run: {e}"));
    let message = String::from_utf8_lossy(&stopped.stderr).into_owned();
    assert_eq!(stopped.status.code(), Some(1), "exits 1: {stopped:?}");
    let name = Path::new(binary).file_name().unwrap().to_string_lossy();
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(
        message.starts_with(&format!("{name}: ")) && message.contains(missing),
        "names the binary and the missing kubeconfig: {message}"
    );
    message
}

/// One running binary.
#[derive(Debug)]
pub struct Process {
    child: Child,
    port: u16,
    name: String,
    log: PathBuf,
}

impl Process {
    /// Starts `binary` with `args` and exactly the environment `env` (plus `PATH` and
    /// `WGSUB_HTTP_ADDR`), logging to `<dir>/<name>.log`.
    pub fn start<V: AsRef<OsStr>>(
        binary: &str,
        name: &str,
        dir: &Path,
        env: &[(&str, V)],
        args: &[&str],
    ) -> Process {
        let log = dir.join(format!("{name}.log"));
        let port = free_port();
        let child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(key, value)| (key, value.as_ref())))
            .env("WGSUB_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .args(args)
            .stdout(std::fs::File::create(&log).expect("a log file"))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} ({binary}) does not start: {e}"));
        Process {
            child,
            port,
            name: name.to_owned(),
            log,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `GET` of one of its HTTP paths: status and body, `None` while it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Waits until `/healthz` and `/readyz` answer 200.
    pub async fn wait_ready(&self, within: Duration) {
        for path in ["/healthz", "/readyz"] {
            eventually(
                &format!("{} answers {path} with 200", self.name),
                within,
                async || (self.get(path).await?.0 == 200).then_some(()),
            )
            .await;
        }
    }

    /// Sends SIGTERM and returns the exit status; fails if it still runs after `within`.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM sent to {}", self.name);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the process") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs {within:?} after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its log as JSON lines; fails on an empty log or a line that is not a JSON object with a
    /// `level`.
    pub fn json_log(&self) -> Vec<serde_json::Value> {
        let text = self.log();
        assert!(!text.is_empty(), "{} logged nothing", self.name);
        text.lines()
            .map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{}: a log line that is not JSON ({e}): {line}", self.name)
                });
                assert!(
                    entry.get("level").is_some(),
                    "{}: no level: {line}",
                    self.name
                );
                entry
            })
            .collect()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
