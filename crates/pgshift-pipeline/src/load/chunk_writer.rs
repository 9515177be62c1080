//! The load's core invariant, in one place: a chunk is claimed, its rows written and
//! its checkpoint set in one target transaction. After any crash (of this process or
//! of a worker on another host) a chunk is either complete and marked done, or absent
//! and back in the queue; `--resume` copies exactly the chunks not marked.

use pgshift_postgres::Session;
use pgshift_postgres::conn::in_transaction;
use pgshift_postgres::copy::PipeStats;
use pgshift_postgres::error::Context;

use crate::error::Result;
use crate::run::store::{ClaimedChunk, Store};

/// In one target transaction: claims the run's next free chunk (the row lock is the
/// claim, see [`Store::claim_chunk`]), clears its range when it must, runs `write`
/// (which fills the chunk's rows through `client`) and marks it done. Any failure
/// rolls all of it back. None: no chunk is free now.
pub async fn copy_next_chunk<F>(client: &Session, run_id: i64, write: F) -> Result<Option<(ClaimedChunk, PipeStats)>>
where
    F: AsyncFnOnce(&ClaimedChunk) -> Result<PipeStats>,
{
    let endpoint = client.endpoint();
    let work = async {
        let store = Store::new(client);
        let Some(chunk) = store.claim_chunk(run_id).await? else { return Ok(None) };
        if let Some(sql) = chunk.clear_sql() {
            client.batch_execute(&sql).await.context(&endpoint, || format!("clear {} before re-copy", chunk.table_name))?;
        }
        let stats = write(&chunk).await?;
        store.mark_chunk_done(run_id, &chunk.table_name, chunk.chunk_no, stats.rows, stats.bytes).await?;
        Ok(Some((chunk, stats)))
    };
    in_transaction(client, &format!("a chunk of run {run_id}"), work).await
}
