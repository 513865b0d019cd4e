//! Connecting to PostgreSQL (a pool that works behind PgBouncer in transaction pooling) and
//! running the embedded migrations from the workspace's `migrations/` directory — directly, or
//! through a transaction pooler (see [`migrate_with`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use zeroize::Zeroizing;

/// The migrations of `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How to connect. The URL (it may carry a password) never appears in `Debug` output.
#[derive(Clone)]
pub struct DbConfig {
    pub url: Zeroizing<String>,
    pub max_connections: u32,
    /// How long to wait for a free connection.
    pub acquire_timeout: Duration,
    /// Behind PgBouncer in transaction pooling: no statement cache and no named (persistent)
    /// prepared statements, so nothing relies on a server connection surviving a transaction.
    pub pgbouncer: bool,
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("pgbouncer", &self.pgbouncer)
            .finish()
    }
}

impl DbConfig {
    /// A config with the defaults (10 connections, 5 s acquire timeout, no PgBouncer mode).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Zeroizing::new(url.into()),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            pgbouncer: false,
        }
    }

    /// The connect options this config stands for; an error names what is wrong with the URL
    /// without repeating it.
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        let options = PgConnectOptions::from_str(&self.url)?;
        Ok(if self.pgbouncer {
            options.statement_cache_capacity(0)
        } else {
            options
        })
    }
}

/// Opens a pool (lazily: connections are made on first use, so a database that is down at
/// start makes `/readyz` fail rather than the process).
pub fn connect_lazy(config: &DbConfig) -> Result<PgPool, sqlx::Error> {
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_lazy_with(config.connect_options()?))
}

/// Runs every migration not yet applied, serialised by sqlx's session-level advisory lock.
/// Use it only on a direct connection to PostgreSQL: behind a transaction pooler the lock and
/// its unlock can land on different server connections (see [`migrate_with`]).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// The key of the transaction-scoped advisory lock that serialises migrators behind PgBouncer
/// (an arbitrary constant: the bytes of "wgsubmig").
const MIGRATION_LOCK_KEY: i64 = 0x7767_7375_626d_6967;

/// Runs every migration not yet applied, in the way `pgbouncer` says the database is reached.
///
/// Directly (`false`): [`migrate`]. Behind PgBouncer in transaction pooling (`true`), where a
/// session-level advisory lock would stay on whichever server connection took it and the
/// unlock could go to another one, everything runs in ONE transaction (so the pooler keeps one
/// server connection for it): a transaction-scoped advisory lock first (concurrent migrators
/// wait for it, and it ends with the commit), then each pending migration in a savepoint, then
/// `DEALLOCATE ALL` (the pool must then be one made with [`DbConfig::pgbouncer`], which caches
/// no statements), because sqlx's migrator prepares named statements that must not outlive
/// the transaction on a pooled server connection. A migration marked `-- no-transaction` (e.g.
/// `CREATE INDEX CONCURRENTLY`) cannot run this way; there are none.
pub async fn migrate_with(
    pool: &PgPool,
    pgbouncer: bool,
) -> Result<(), sqlx::migrate::MigrateError> {
    if !pgbouncer {
        return migrate(pool).await;
    }
    let mut migrator = sqlx::migrate!("../migrations");
    migrator.set_locking(false);
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .persistent(false)
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    migrator.run(&mut *tx).await?;
    sqlx::raw_sql("DEALLOCATE ALL").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_url() {
        let config = DbConfig::new("postgres://wgsub:hunter2-but-longer@db/wgsub");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn pgbouncer_mode_turns_the_statement_cache_off() {
        let mut config = DbConfig::new("postgres://wgsub@db/wgsub");
        config.pgbouncer = true;
        let options = config.connect_options().unwrap();
        // The options print their settings; the cache capacity is one of them.
        assert!(format!("{options:?}").contains("statement_cache_capacity: 0"));
        config.pgbouncer = false;
        let options = config.connect_options().unwrap();
        assert!(!format!("{options:?}").contains("statement_cache_capacity: 0"));
    }

    #[test]
    fn the_migrations_are_embedded() {
        assert!(
            MIGRATOR
                .iter()
                .any(|migration| migration.description.contains("ledger"))
        );
    }
}
