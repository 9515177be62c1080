//! The copy: N workers, each with a source reader and one target connection, take
//! chunks from a shared queue. Per chunk the source's reader streams COPY data into
//! a bounded queue while the writer sends it to the target (as it is, or through
//! the embedding stage), inside the chunk's transaction ([`super::chunk_writer`]).
//! Bytes and rows are counted here, once, for every source.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgshift_postgres::copy::{copy_in_received, PipeStats};
use pgshift_postgres::error::Context;
use pgshift_postgres::ConnInfo;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::chunk_writer::{write_chunk, ChunkToWrite};
use super::resume::CopyJob;
use crate::embed::copy::{embed_stream, EmbedTarget};
use crate::embed::{Cache, EmbedPool};
use crate::error::{Error, Result};
use crate::metrics;
use crate::progress::Progress;
use crate::run::store::Store;
use crate::source::LoadSource;
use crate::workers::{run_workers, WorkQueue};

/// COPY messages read ahead of the target per worker (each up to 256 KiB).
const READ_AHEAD: usize = 4;

pub struct CopyContext {
    pub target: ConnInfo,
    /// Exported snapshot to read under; None = each chunk takes its own (resume).
    pub snapshot: Option<String>,
    pub run_id: i64,
    pub jobs: usize,
    pub progress: Arc<dyn Progress>,
    /// The embedding threads, when some tables get vectors computed on the way.
    pub embedding: Option<Arc<EmbedPool>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableSummary {
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

struct TableAcc {
    chunks_left: usize,
    rows: u64,
    bytes: u64,
    started: Option<Instant>,
}

type Tables = Mutex<HashMap<String, TableAcc>>;

pub async fn copy_chunks<S: LoadSource>(source: Arc<S>, ctx: Arc<CopyContext>, jobs: Vec<CopyJob<S::Table>>) -> Result<Vec<TableSummary>> {
    let mut tables: HashMap<String, TableAcc> = HashMap::new();
    for j in &jobs {
        tables.entry(j.table.name.clone()).or_insert(TableAcc { chunks_left: 0, rows: 0, bytes: 0, started: None }).chunks_left += 1;
    }
    let tables = Arc::new(Mutex::new(tables));
    let done = run_workers(ctx.jobs, jobs, |queue| {
        let (source, ctx, tables) = (source.clone(), ctx.clone(), tables.clone());
        async move { worker(&*source, &ctx, &queue, &tables).await }
    })
    .await?;
    let mut summaries: Vec<TableSummary> = done.into_iter().flatten().collect();
    summaries.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(summaries)
}

async fn worker<S: LoadSource>(source: &S, ctx: &CopyContext, queue: &WorkQueue<CopyJob<S::Table>>, tables: &Tables) -> Result<Vec<TableSummary>> {
    let dst_name = ctx.target.endpoint();
    let mut reader = source.reader().await?;
    let target = ctx.target.connect().await?;
    // A lost commit after a target crash only loses the chunk's checkpoint with its
    // rows, and the chunk is copied again: safe, and much faster.
    target.batch_execute("SET synchronous_commit = off").await.context(&dst_name, || "configure copy session".into())?;
    let mut finished = Vec::new();
    // The embedding cache is read while the chunk's COPY holds `target`: its own session.
    let mut cache_client: Option<Client> = None;
    while let Some(job) = queue.pop() {
        let table = job.table.name.clone();
        let first = {
            let mut t = tables.lock().unwrap();
            let started = &mut t.get_mut(&table).unwrap().started;
            let first = started.is_none();
            started.get_or_insert_with(Instant::now);
            first
        };
        if first {
            ctx.progress.table_started(&table, job.table.size_bytes.max(0) as u64);
        }
        if job.table.embedding.is_some() && cache_client.is_none() {
            cache_client = Some(ctx.target.connect().await?);
        }
        let chunk = ChunkToWrite { run_id: ctx.run_id, table: &table, chunk_no: job.chunk_no, clear_first: job.clear_sql() };
        let (out, received) = mpsc::channel::<Bytes>(READ_AHEAD);
        let read = source.read_chunk(&mut reader, ctx.snapshot.as_deref(), &job.table, job.predicate.as_deref(), out);
        let write = write_rows(ctx, (&target, dst_name), cache_client.as_ref(), &job, received);
        let stats = write_chunk(&target, dst_name, &chunk, async {
            let ((), stats) = tokio::try_join!(read, write)?;
            Ok(stats)
        })
        .await?;
        metrics::ROWS_COPIED.with_label_values(&[&table]).inc_by(stats.rows);
        metrics::CHUNKS_DONE.inc();

        let done = {
            let mut t = tables.lock().unwrap();
            let acc = t.get_mut(&table).unwrap();
            acc.chunks_left -= 1;
            acc.rows += stats.rows;
            acc.bytes += stats.bytes;
            (acc.chunks_left == 0).then(|| (acc.rows, acc.bytes, acc.started.map_or(Duration::ZERO, |s| s.elapsed())))
        };
        if let Some((rows, bytes, elapsed)) = done {
            ctx.progress.table_done(&table, rows, bytes, elapsed);
            finished.push(TableSummary { table, rows, bytes, seconds: elapsed.as_secs_f64() });
        }
    }
    Ok(finished)
}

/// Sends what the reader produces to the target's COPY: as it is, or with vectors
/// computed for the text in its last field. Counts bytes as they arrive.
async fn write_rows<T>(
    ctx: &CopyContext,
    (target, dst_name): (&Client, &str),
    cache_client: Option<&Client>,
    job: &CopyJob<T>,
    mut received: mpsc::Receiver<Bytes>,
) -> Result<PipeStats> {
    let table = &job.table.name;
    let in_sql = &job.table.copy_in;
    let mut reported = 0u64;
    let report = |bytes: u64| {
        ctx.progress.table_bytes(table, bytes - reported);
        metrics::BYTES_COPIED.with_label_values(&[table]).inc_by(bytes - reported);
        reported = bytes;
    };
    if let (Some(spec), Some(pool), Some(cache)) = (&job.table.embedding, &ctx.embedding, cache_client) {
        let embed = EmbedTarget { pool, cache: Cache { store: Store::new(cache, dst_name) }, spec };
        let stream = futures_util::stream::unfold(received, |mut rx| async { rx.recv().await.map(|b| (Ok::<_, Error>(b), rx)) });
        return embed_stream(stream, (target, dst_name), &embed, in_sql, table, report).await;
    }
    Ok(copy_in_received((target, dst_name), in_sql, &mut received, report).await?)
}
