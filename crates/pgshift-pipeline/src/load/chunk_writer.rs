//! The load's core invariant, in one place: a chunk's rows and its checkpoint commit
//! in one target transaction. After any crash a chunk is either complete and marked
//! done, or absent; `--resume` copies exactly the chunks not marked.

use pgshift_postgres::conn::in_transaction;
use pgshift_postgres::copy::PipeStats;
use pgshift_postgres::error::Context;
use tokio_postgres::Client;

use crate::error::Result;
use crate::run::store::Store;

/// A chunk to write: which one, and what to remove first.
pub struct ChunkToWrite<'a> {
    pub run_id: i64,
    /// As the run's chunks name the table (the source's `schema.table`).
    pub table: &'a str,
    pub chunk_no: i32,
    /// Deletes rows a newer source state may have left in the chunk's range
    /// (resumed runs), in the same transaction.
    pub clear_first: Option<String>,
}

/// Runs `write` (which fills the chunk's rows through `client`) inside one target
/// transaction that also clears the range first and marks the chunk done last. Any
/// failure rolls all of it back.
pub async fn write_chunk<F>(client: &Client, endpoint: &str, chunk: &ChunkToWrite<'_>, write: F) -> Result<PipeStats>
where
    F: std::future::Future<Output = Result<PipeStats>>,
{
    let work = async {
        if let Some(sql) = &chunk.clear_first {
            client.batch_execute(sql).await.context(&endpoint, || format!("clear {} before re-copy", chunk.table))?;
        }
        let stats = write.await?;
        Store::new(client, endpoint).mark_chunk_done(chunk.run_id, chunk.table, chunk.chunk_no, stats.rows, stats.bytes).await?;
        Ok(stats)
    };
    in_transaction(client, endpoint, &format!("chunk {} of {}", chunk.chunk_no, chunk.table), work).await
}
