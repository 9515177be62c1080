//! The copy: workers claim chunks from the run's queue on the target
//! ([`super::chunk_writer`]): migrate's own, and `pgshift worker` processes on any
//! number of hosts. Per chunk the source's reader streams COPY data into a bounded
//! queue while the writer sends it to the target (as it is, or through the embedding
//! stage). Every process stays until each chunk of the run is done, so a chunk given
//! back by a worker that died is copied by another. Bytes and rows are counted here,
//! once, for every source; what other processes copied is read from the run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgshift_postgres::Session;
use pgshift_postgres::copy::{copy_in_received, PipeStats};
use pgshift_postgres::error::Context;
use pgshift_postgres::ConnInfo;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::chunk_writer::copy_next_chunk;
use crate::embed::chunks::Cutter;
use crate::embed::copy::{embed_stream, EmbedTarget};
use crate::embed::{Cache, EmbedPool};
use crate::error::{Error, Result};
use crate::metrics;
use crate::progress::Progress;
use crate::run::store::{ClaimedChunk, Store};
use crate::source::{ChunkReader, TableLoad};

/// COPY messages read ahead of the target per worker (each up to 256 KiB).
const READ_AHEAD: usize = 4;
/// How often an idle worker looks for a chunk given back, and progress is reported.
const POLL: Duration = Duration::from_millis(200);
/// How often a process that waits for others' chunks says so.
const WAITING_NOTICE: Duration = Duration::from_secs(30);

pub struct CopyContext {
    pub target: ConnInfo,
    /// Exported snapshot to read under; None = each chunk takes its own (resume).
    pub snapshot: Option<String>,
    pub run_id: i64,
    /// Workers in this process (0: only wait for other processes' workers).
    pub jobs: usize,
    pub progress: Arc<dyn Progress>,
    /// The embedding threads, when some tables get vectors computed on the way.
    pub embedding: Option<Arc<EmbedPool>>,
}

/// How a worker finds the table a claimed chunk belongs to.
pub type TableOf<T> = Box<dyn Fn(&ClaimedChunk) -> Result<Arc<TableLoad<T>>> + Send + Sync>;

#[derive(Clone, Debug, Serialize)]
pub struct TableSummary {
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// What this process's workers share.
struct Shared<T> {
    table_of: TableOf<T>,
    /// When each table's copy began here (first chunk taken, or first seen done elsewhere).
    started: Mutex<HashMap<String, Instant>>,
    mine: Mutex<Mine>,
    chunk_done: Notify,
    failed: AtomicBool,
}

/// This process's part, as `pgshift status` shows it.
#[derive(Default)]
struct Mine {
    chunks_done: i32,
    rows: i64,
    copying: Vec<String>,
}

impl<T> Shared<T> {
    fn start(&self, progress: &dyn Progress, table: &str, size_bytes: u64) {
        let mut started = self.started.lock().unwrap();
        if !started.contains_key(table) {
            started.insert(table.to_string(), Instant::now());
            progress.table_started(table, size_bytes);
        }
    }
}

/// Copies the run's open chunks with `ctx.jobs` workers, until every chunk of the run
/// is done (by this process or another). Returns the tables finished meanwhile.
pub async fn copy_chunks<R: ChunkReader>(source: Arc<R>, ctx: Arc<CopyContext>, table_of: TableOf<R::Table>) -> Result<Vec<TableSummary>> {
    let control = ctx.target.session().await?;
    let store = Store::new(&control);
    let host = crate::workers::host_name();
    let me = format!("{host}:{}", std::process::id());
    store.register_worker(ctx.run_id, &me, &host, ctx.jobs as i32).await?;
    let shared = Arc::new(Shared { table_of, started: Mutex::default(), mine: Mutex::default(), chunk_done: Notify::new(), failed: AtomicBool::new(false) });
    // Which tables are left is read before any worker starts: a table finished by the
    // first chunk still gets reported.
    let mut watch = Watch::start(&store, ctx.run_id).await?;
    let mut tasks = JoinSet::new();
    for _ in 0..ctx.jobs {
        let (source, ctx, shared) = (source.clone(), ctx.clone(), shared.clone());
        tasks.spawn(async move {
            let result = worker(&*source, &ctx, &shared).await;
            if result.is_err() {
                shared.failed.store(true, Ordering::SeqCst);
            }
            result
        });
    }
    let mut first_error = None;
    let mut last_notice = Instant::now();
    loop {
        let left = watch.poll(&store, &ctx, &shared, &me).await?;
        if tasks.is_empty() {
            if left == 0 || first_error.is_some() {
                break;
            }
            if last_notice.elapsed() >= WAITING_NOTICE {
                last_notice = Instant::now();
                ctx.progress.step(&format!(
                    "waiting for workers: {left} chunk(s) of run {} left (start `pgshift worker --source ... --target ...` on any host)",
                    ctx.run_id
                ));
            }
        }
        tokio::select! {
            joined = tasks.join_next(), if !tasks.is_empty() => {
                if let Some(Err(e)) = joined.map(|j| j.expect("copy worker panicked")) {
                    first_error.get_or_insert(e);
                }
            }
            _ = shared.chunk_done.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        if tasks.is_empty() && first_error.is_some() {
            break;
        }
    }
    let _ = store.unregister_worker(ctx.run_id, &me).await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(watch.finished),
    }
}

/// Progress of the whole run, read from its chunks: tables finished (by any
/// process), the metrics (the one place rows are counted, so nothing twice), and this
/// process's heartbeat.
struct Watch {
    /// Tables with chunks left when the copy began here: false until done.
    tables: HashMap<String, bool>,
    finished: Vec<TableSummary>,
}

impl Watch {
    async fn start(store: &Store<'_>, run_id: i64) -> Result<Watch> {
        let totals = store.table_totals(run_id).await?;
        let tables = totals.into_iter().filter(|t| t.chunks_done < t.chunks_total).map(|t| (t.table, false)).collect();
        Ok(Watch { tables, finished: Vec::new() })
    }

    /// Returns how many chunks are not done yet.
    async fn poll<T>(&mut self, store: &Store<'_>, ctx: &CopyContext, shared: &Shared<T>, me: &str) -> Result<i64> {
        let totals = store.table_totals(ctx.run_id).await?;
        let tables = &mut self.tables;
        metrics::CHUNKS_TOTAL.set(totals.iter().map(|t| t.chunks_total).sum());
        metrics::CHUNKS_DONE.set(totals.iter().map(|t| t.chunks_done).sum());
        for t in &totals {
            // Rows committed by any process, counted here only.
            let rows = metrics::ROWS_COPIED.with_label_values(&[&t.table]);
            if t.rows as u64 > rows.get() && tables.contains_key(&t.table) {
                rows.inc_by(t.rows as u64 - rows.get());
            }
            let Some(done) = tables.get_mut(&t.table) else { continue };
            if *done || t.chunks_done < t.chunks_total {
                continue;
            }
            *done = true;
            shared.start(&*ctx.progress, &t.table, 0);
            let elapsed = shared.started.lock().unwrap()[&t.table].elapsed();
            ctx.progress.table_done(&t.table, t.rows as u64, t.bytes as u64, elapsed);
            self.finished.push(TableSummary { table: t.table.clone(), rows: t.rows as u64, bytes: t.bytes as u64, seconds: elapsed.as_secs_f64() });
        }
        let (chunks_done, rows, copying) = {
            let mine = shared.mine.lock().unwrap();
            (mine.chunks_done, mine.rows, mine.copying.clone())
        };
        store.worker_seen(ctx.run_id, me, chunks_done, rows, &copying).await?;
        let live = store.workers(ctx.run_id).await?.iter().filter(|w| !w.gone).count();
        metrics::COPY_WORKERS.set(live as i64);
        Ok(totals.iter().map(|t| t.chunks_total - t.chunks_done).sum())
    }
}

async fn worker<R: ChunkReader>(source: &R, ctx: &CopyContext, shared: &Shared<R::Table>) -> Result<()> {
    let dst_name = ctx.target.endpoint();
    let mut reader = source.reader().await?;
    let target = ctx.target.session().await?;
    // A lost commit after a target crash only loses the chunk's checkpoint with its
    // rows, and the chunk is copied again: safe, and much faster.
    target.batch_execute("SET synchronous_commit = off").await.context(&dst_name, || "configure copy session".into())?;
    // The embedding cache is read while the chunk's COPY holds `target`: its own session.
    let mut cache_client: Option<Session> = None;
    while !shared.failed.load(Ordering::SeqCst) {
        let mut holding = None;
        let copied = copy_next_chunk(&target, ctx.run_id, async |chunk: &ClaimedChunk| {
            let table = (shared.table_of)(chunk)?;
            shared.start(&*ctx.progress, &table.name, table.size_bytes.max(0) as u64);
            let label = format!("{}#{}", chunk.table_name, chunk.chunk_no);
            shared.mine.lock().unwrap().copying.push(label.clone());
            holding = Some(label);
            if table.embedding.is_some() && cache_client.is_none() {
                cache_client = Some(ctx.target.session().await?);
            }
            // The range's rows were cleared before this (see `copy_next_chunk`); their
            // chunks go too (the foreign key that would cascade comes after the load).
            if let Some(sql) = table.chunk_table.as_ref().filter(|_| chunk.clear_first).map(|c| c.clear_sql(chunk.predicate.as_deref())) {
                target.batch_execute(&sql).await.context(&dst_name, || format!("clear the chunks of {} before re-copy", chunk.table_name))?;
            }
            let (out, received) = mpsc::channel::<Bytes>(READ_AHEAD);
            let read = source.read_chunk(&mut reader, ctx.snapshot.as_deref(), &table, chunk.predicate.as_deref(), out);
            let write = write_rows(ctx, &target, cache_client.as_ref(), &table, received);
            // Both run to their end (a failed side ends the other); a reader's error is
            // the cause when both fail (the writer then only saw the rows stop).
            let (read, write) = tokio::join!(read, write);
            read?;
            write
        })
        .await;
        if let Some(label) = holding {
            shared.mine.lock().unwrap().copying.retain(|c| *c != label);
        }
        match copied? {
            Some((_, stats)) => {
                let mut mine = shared.mine.lock().unwrap();
                mine.chunks_done += 1;
                mine.rows += stats.rows as i64;
                shared.chunk_done.notify_one();
            }
            // Every chunk is taken: wait for the others, and take over a chunk whose
            // worker died (its lock went with its session).
            None if Store::new(&target).chunks_left(ctx.run_id).await? == 0 => break,
            None => tokio::time::sleep(POLL).await,
        }
    }
    Ok(())
}

/// Sends what the reader produces to the target's COPY: as it is, or with vectors
/// computed for the text in its last field. Counts bytes as they arrive.
async fn write_rows<T>(
    ctx: &CopyContext,
    target: &Session,
    cache_client: Option<&Session>,
    table: &TableLoad<T>,
    mut received: mpsc::Receiver<Bytes>,
) -> Result<PipeStats> {
    let (name, in_sql) = (&table.name, &table.copy_in);
    let mut reported = 0u64;
    let report = |bytes: u64| {
        ctx.progress.table_bytes(name, bytes - reported);
        metrics::BYTES_COPIED.with_label_values(&[name]).inc_by(bytes - reported);
        reported = bytes;
    };
    if let (Some(spec), Some(pool), Some(cache)) = (&table.embedding, &ctx.embedding, cache_client) {
        let chunks = table.chunk_table.as_ref().zip(spec.chunks.as_ref()).map(|(copy, c)| {
            (copy, Arc::new(Cutter::new(pool, c)))
        });
        let embed = EmbedTarget { pool, cache: Cache { store: Store::new(cache) }, spec, chunks };
        let stream = futures_util::stream::unfold(received, |mut rx| async { rx.recv().await.map(|b| (Ok::<_, Error>(b), rx)) });
        return embed_stream(stream, target, &embed, in_sql, name, report).await;
    }
    Ok(copy_in_received(target, in_sql, &mut received, report).await?)
}

