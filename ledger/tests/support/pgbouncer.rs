//! A real PgBouncer (Debian's `pgbouncer`) in `pool_mode = transaction` in front of the test
//! PostgreSQL at `WGSUB_TEST_DATABASE_URL`, with a small server pool so client connections
//! really share server connections. The process is killed when the value is dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// Where the binary is: `WGSUB_PGBOUNCER_BIN`, else Debian's path, else `pgbouncer` on `PATH`.
fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("WGSUB_PGBOUNCER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "WGSUB_PGBOUNCER_BIN={} does not exist: this test needs a real PgBouncer \
             (apt-get install pgbouncer)",
            path.display()
        );
        return path;
    }
    let debian = PathBuf::from("/usr/sbin/pgbouncer");
    if debian.exists() {
        return debian;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("pgbouncer"))
                .find(|candidate| candidate.exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "pgbouncer not found: this test needs a real PgBouncer \
                 (apt-get install pgbouncer, or WGSUB_PGBOUNCER_BIN=<path to the binary>)"
            )
        })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .map(|uids| uids.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The running pooler.
pub struct PgBouncer {
    child: Child,
    port: u16,
    user: String,
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    /// Starts PgBouncer in transaction pooling with at most `server_connections` server
    /// connections per database, and waits until it accepts connections.
    pub async fn start(server_connections: u32) -> PgBouncer {
        let base = std::env::var("WGSUB_TEST_DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "WGSUB_TEST_DATABASE_URL is not set: this test needs PostgreSQL \
                 (run scripts/test, or `source scripts/test-postgres; start_test_postgres DIR`)"
            )
        });
        let upstream =
            PgConnectOptions::from_str(&base).expect("WGSUB_TEST_DATABASE_URL is a PostgreSQL URL");
        let user = upstream.get_username().to_owned();
        let port = free_port();
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Readable by the unprivileged user PgBouncer switches to when started as root.
        let config_path = dir.path().join("pgbouncer.ini");
        let users_path = dir.path().join("userlist.txt");
        std::fs::write(&users_path, format!("\"{user}\" \"\"\n")).expect("write userlist.txt");
        std::fs::write(
            &config_path,
            format!(
                "[databases]\n\
                 * = host={host} port={upstream_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {server_connections}\n\
                 max_db_connections = {server_connections}\n\
                 max_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 server_login_retry = 1\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n",
                host = upstream.get_host(),
                upstream_port = upstream.get_port(),
                users = users_path.display(),
            ),
        )
        .expect("write pgbouncer.ini");
        for path in [dir.path(), &config_path, &users_path] {
            let mode = if path.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("make the config readable");
        }
        let log_path = dir.path().join("pgbouncer.log");
        let log = std::fs::File::create(&log_path).expect("create the pgbouncer log");
        let mut command = Command::new(binary());
        // PgBouncer refuses to run as root; `-u` makes it switch to the PostgreSQL user.
        if running_as_root() {
            command.args(["-u", "postgres"]);
        }
        let mut child = command
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pgbouncer: {e}"));
        let bouncer_url = format!("postgres://{user}@127.0.0.1:{port}/postgres");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("pgbouncer's status") {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("pgbouncer exited at start ({status}):\n{log}");
            }
            match PgConnection::connect(&bouncer_url).await {
                Ok(connection) => {
                    connection.close().await.ok();
                    break;
                }
                Err(error) if Instant::now() > deadline => {
                    panic!("pgbouncer did not accept connections within 15 s: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        PgBouncer {
            child,
            port,
            user,
            _dir: dir,
        }
    }

    /// The URL of `database` through the pooler.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{database}",
            self.user, self.port
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
