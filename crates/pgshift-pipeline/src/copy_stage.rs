//! The bulk load: N workers, each with one source and one target connection, take
//! chunks from a shared queue. A chunk is one source transaction under the exported
//! snapshot and one target transaction that holds its rows and its checkpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgshift_postgres::copy::{copy_in_sql, copy_out_sql, pipe};
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::quote_literal;
use pgshift_postgres::ConnInfo;
use serde::Serialize;

use crate::embed_copy::{embed_pipe, EmbedTarget};
use crate::embedding::{Cache, EmbedPool, EmbeddingSpec};
use crate::error::Result;
use crate::metrics;
use crate::plan::TablePlan;
use crate::progress::Progress;
use crate::state;
use crate::workers::{run_workers, WorkQueue};

#[derive(Clone, Debug)]
pub struct CopyJob {
    pub plan: Arc<TablePlan>,
    pub chunk_no: i32,
    pub predicate: Option<String>,
    /// On resume, rows of this range may be on the target from a newer source state
    /// than the snapshot we now read: clear the range in the same transaction.
    pub clear_first: bool,
}

pub struct CopyContext {
    pub source: ConnInfo,
    pub target: ConnInfo,
    /// Exported snapshot to read under; None = each chunk takes its own (resume).
    pub snapshot: Option<String>,
    pub run_id: i64,
    pub jobs: usize,
    pub progress: Arc<dyn Progress>,
    /// Set when some tables get vectors computed on the way.
    pub embedding: Option<Arc<EmbedStage>>,
}

/// The embedding threads and which table gets which vector.
pub struct EmbedStage {
    pub pool: EmbedPool,
    pub specs: HashMap<String, EmbeddingSpec>,
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

pub async fn copy_chunks(ctx: Arc<CopyContext>, jobs: Vec<CopyJob>) -> Result<Vec<TableSummary>> {
    let mut tables: HashMap<String, TableAcc> = HashMap::new();
    for j in &jobs {
        tables.entry(j.plan.name()).or_insert(TableAcc { chunks_left: 0, rows: 0, bytes: 0, started: None }).chunks_left += 1;
    }
    let tables = Arc::new(Mutex::new(tables));
    let done = run_workers(ctx.jobs, jobs, |queue| {
        let (ctx, tables) = (ctx.clone(), tables.clone());
        async move { worker(&ctx, &queue, &tables).await }
    })
    .await?;
    let mut summaries: Vec<TableSummary> = done.into_iter().flatten().collect();
    summaries.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(summaries)
}

async fn worker(ctx: &CopyContext, queue: &WorkQueue<CopyJob>, tables: &Tables) -> Result<Vec<TableSummary>> {
    let (src_name, dst_name) = (ctx.source.endpoint(), ctx.target.endpoint());
    let source = ctx.source.connect().await?;
    let target = ctx.target.connect().await?;
    // A lost commit after a target crash only loses the chunk's checkpoint with its
    // rows, and the chunk is copied again: safe, and much faster.
    target.batch_execute("SET synchronous_commit = off").await.context(&dst_name, || "configure copy session".into())?;
    let mut finished = Vec::new();
    // The embedding cache is read while the chunk's COPY holds `target`: its own session.
    let mut cache_client = None;
    while let Some(job) = queue.pop() {
        let table = job.plan.name();
        let first = {
            let mut t = tables.lock().unwrap();
            let started = &mut t.get_mut(&table).unwrap().started;
            let first = started.is_none();
            started.get_or_insert_with(Instant::now);
            first
        };
        if first {
            ctx.progress.table_started(&table, job.plan.table.size_bytes.max(0) as u64);
        }

        let mut begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_string();
        if let Some(s) = &ctx.snapshot {
            begin.push_str(&format!("; SET TRANSACTION SNAPSHOT {}", quote_literal(s)));
        }
        source.batch_execute(&begin).await.context(&src_name, || format!("open snapshot for {table}"))?;
        target.batch_execute("BEGIN").await.context(&dst_name, || format!("begin chunk of {table}"))?;
        if job.clear_first {
            let sql = match &job.predicate {
                Some(p) => format!("DELETE FROM ONLY {} WHERE {p}", job.plan.target.qualified()),
                None => format!("TRUNCATE ONLY {}", job.plan.target.qualified()),
            };
            target.batch_execute(&sql).await.context(&dst_name, || format!("clear {table} before re-copy"))?;
        }
        let mut reported = 0u64;
        let report = |bytes: u64| {
            ctx.progress.table_bytes(&table, bytes - reported);
            metrics::BYTES_COPIED.with_label_values(&[&table]).inc_by(bytes - reported);
            reported = bytes;
        };
        let spec = ctx.embedding.as_ref().and_then(|e| e.specs.get(&table).map(|s| (&e.pool, s)));
        let stats = match spec {
            Some((pool, spec)) => {
                if cache_client.is_none() {
                    cache_client = Some(ctx.target.connect().await?);
                }
                let cache = Cache { client: cache_client.as_ref().expect("just connected"), endpoint: dst_name };
                let embed = EmbedTarget { pool, cache, spec };
                let tables = (&job.plan.table, &job.plan.target);
                embed_pipe((&source, src_name), (&target, dst_name), &embed, tables, job.predicate.as_deref(), report).await?
            }
            None => {
                let out_sql = copy_out_sql(&job.plan.table, job.predicate.as_deref(), job.plan.format);
                let in_sql = copy_in_sql(&job.plan.target, job.plan.format);
                pipe((&source, src_name), (&target, dst_name), &out_sql, &in_sql, report).await?
            }
        };
        state::mark_chunk_done(&target, dst_name, ctx.run_id, &table, job.chunk_no, stats.rows, stats.bytes).await?;
        target.batch_execute("COMMIT").await.context(&dst_name, || format!("commit chunk of {table}"))?;
        source.batch_execute("COMMIT").await.context(&src_name, || "end snapshot transaction".into())?;
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
