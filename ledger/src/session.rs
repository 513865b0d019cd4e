//! One unit of database work that also holds behind PgBouncer in transaction pooling.
//!
//! sqlx runs a query with arguments in two round trips, each ended by `Sync`: `Parse` (+
//! `Describe`), then `Bind` + `Execute`. Outside a transaction a transaction pooler takes the
//! server connection back at the first `Sync`'s idle `ReadyForQuery`, so the `Bind` can reach a
//! server connection that never saw the `Parse` ("unnamed prepared statement does not exist")
//! even with the statement cache off and every statement unnamed. In PgBouncer mode a
//! [`Session`] is therefore a transaction, which keeps one server connection for its whole
//! length; directly it is a plain pool connection (no extra `BEGIN`/`COMMIT`).

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnection, PgQueryResult, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Transaction};

use crate::Ledger;

/// A connection for one unit of work; call [`Session::finish`] after its last query (in
/// PgBouncer mode that commits; dropping it unfinished rolls back).
pub enum Session {
    Direct(PoolConnection<Postgres>),
    Pooled(Transaction<'static, Postgres>),
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Session::Direct(_) => "Session::Direct",
            Session::Pooled(_) => "Session::Pooled",
        })
    }
}

impl Session {
    /// Ends the unit of work (commits in PgBouncer mode).
    pub async fn finish(self) -> Result<(), sqlx::Error> {
        match self {
            Session::Direct(_) => Ok(()),
            Session::Pooled(transaction) => transaction.commit().await,
        }
    }
}

impl Deref for Session {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Session::Direct(connection) => connection,
            Session::Pooled(transaction) => transaction,
        }
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Session::Direct(connection) => connection,
            Session::Pooled(transaction) => transaction,
        }
    }
}

impl Ledger {
    /// A session for queries outside the ledger's own transactions (e.g. the bot's tables):
    /// a transaction in PgBouncer mode, a pool connection otherwise.
    pub async fn session(&self) -> Result<Session, sqlx::Error> {
        if self.persistent_statements() {
            Ok(Session::Direct(self.pool().acquire().await?))
        } else {
            Ok(Session::Pooled(self.pool().begin().await?))
        }
    }
}

/// Runs one query in its own [`Session`] of the ledger, with the ledger's statement mode: what
/// code outside the ledger (the bot's tables) uses for a single query so it holds behind PgBouncer.
#[allow(async_fn_in_trait)]
pub trait RunOn {
    async fn execute_on(self, ledger: &Ledger) -> Result<PgQueryResult, sqlx::Error>;
    async fn fetch_one_on(self, ledger: &Ledger) -> Result<PgRow, sqlx::Error>;
    async fn fetch_optional_on(self, ledger: &Ledger) -> Result<Option<PgRow>, sqlx::Error>;
    async fn fetch_all_on(self, ledger: &Ledger) -> Result<Vec<PgRow>, sqlx::Error>;
}

impl RunOn for Query<'_, Postgres, PgArguments> {
    async fn execute_on(self, ledger: &Ledger) -> Result<PgQueryResult, sqlx::Error> {
        let mut session = ledger.session().await?;
        let done = self
            .persistent(ledger.persistent_statements())
            .execute(&mut *session)
            .await?;
        session.finish().await?;
        Ok(done)
    }

    async fn fetch_one_on(self, ledger: &Ledger) -> Result<PgRow, sqlx::Error> {
        let mut session = ledger.session().await?;
        let row = self
            .persistent(ledger.persistent_statements())
            .fetch_one(&mut *session)
            .await?;
        session.finish().await?;
        Ok(row)
    }

    async fn fetch_optional_on(self, ledger: &Ledger) -> Result<Option<PgRow>, sqlx::Error> {
        let mut session = ledger.session().await?;
        let row = self
            .persistent(ledger.persistent_statements())
            .fetch_optional(&mut *session)
            .await?;
        session.finish().await?;
        Ok(row)
    }

    async fn fetch_all_on(self, ledger: &Ledger) -> Result<Vec<PgRow>, sqlx::Error> {
        let mut session = ledger.session().await?;
        let rows = self
            .persistent(ledger.persistent_statements())
            .fetch_all(&mut *session)
            .await?;
        session.finish().await?;
        Ok(rows)
    }
}
