//! The run store: every statement on the target's `pgshift` schema is here, and
//! nowhere else, one file per thing it keeps: [`runs`] (a run, its phase and the
//! settings it was started with), [`chunks`] (the chunks and the copy queue workers
//! take from), [`workers`] (who is copying), [`cache`] (the embedding cache),
//! [`reembeds`] and [`vectorizers`]. Two exceptions, which live with the triggers that
//! fill them: `pgshift.stale_chunks` (written by chunk tables' triggers inside the
//! application's transactions, read in `embed::chunks`) and the comparing scan of an
//! in-place re-embed (`embed::reembed`), a join of the user's table with the cache. A chunk is marked done in the same transaction that writes its rows
//! (see `load::chunk_writer`), so a chunk is either fully there and marked, or neither.

mod cache;
mod chunks;
mod reembeds;
mod runs;
mod vectorizers;
mod workers;

use pgshift_postgres::catalog::relation_exists;
use pgshift_postgres::conn::in_transaction;
use pgshift_postgres::error::Context;
use pgshift_postgres::Session;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

pub use chunks::{ChunkState, ChunkWork, ClaimedChunk, CopyTable, TableTotals};
pub use reembeds::ReembedState;
pub use runs::{NewRun, RunTimes};
pub use vectorizers::VectorizeState;
pub use workers::{WorkerState, WORKER_GONE_AFTER_SECONDS};

use super::migrations;
use crate::error::Result;

/// The target's `pgshift` schema through one connection.
#[derive(Clone, Copy)]
pub struct Store<'a> {
    db: &'a Session,
}

impl<'a> Store<'a> {
    pub fn new(db: &'a Session) -> Store<'a> {
        Store { db }
    }

    /// The connection, for the statements on the user's tables that must share a
    /// transaction with the run's state (a chunk's rows and its checkpoint).
    pub fn connection(&self) -> &'a Session {
        self.db
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)], what: &str) -> Result<Vec<Row>> {
        Ok(self.db.query(sql, params).await.context(&self.db.endpoint(), || what.to_string())?)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)], what: impl FnOnce() -> String) -> Result<u64> {
        Ok(self.db.execute(sql, params).await.context(&self.db.endpoint(), what)?)
    }

    pub async fn exists(&self) -> Result<bool> {
        Ok(relation_exists(self.db, "pgshift", "runs").await?)
    }

    /// Creates or upgrades the state schema, in its own transaction.
    pub async fn ensure_schema(&self) -> Result<()> {
        in_transaction(self.db, "the pgshift state schema", migrations::apply(self.db)).await
    }
}
