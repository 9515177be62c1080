//! `pgshift worker`: another process, on any host, copying chunks of a run that
//! `migrate` opened. PostgreSQL is the coordinator: the worker claims chunks from the
//! target's queue exactly as migrate's own workers do, reads each with the statement
//! the run recorded under the run's exported snapshot, and commits rows and
//! checkpoint in one transaction ([`super::chunk_writer`]). Nothing but the two
//! connection strings (and, for vectors, the same embedder) is needed on its host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgshift_postgres::copy::CopyFormat;
use pgshift_postgres::ConnInfo;
use serde::Serialize;

use super::copy::{copy_chunks, CopyContext, TableOf, TableSummary};
use crate::embed::EmbedPool;
use crate::error::{Error, Result};
use crate::plan::chunks::SplitKind;
use crate::plan::embedding::{EmbeddingSetup, EmbeddingSpec};
use crate::progress::Progress;
use crate::run::Run;
use crate::run::store::Store;
use crate::source::postgres::RecordedStatements;
use crate::source::TableLoad;

/// How often a waiting worker looks for a run's copy to open.
const LOOK_AGAIN: Duration = Duration::from_millis(200);

/// A run whose copy is open, as a worker joins it.
pub struct OpenRun {
    pub run: Run,
    pub snapshot: Option<String>,
    /// The run's embedding specs: the worker needs an embedder when there are any.
    pub embeddings: Vec<EmbeddingSpec>,
}

#[derive(Debug, Default, Serialize)]
pub struct WorkerReport {
    pub run_id: i64,
    /// Tables whose last chunk was done while this worker was part of the copy.
    pub tables: Vec<TableSummary>,
    pub seconds: f64,
}

/// The run to join: `run_id`, or the newest whose copy is open; waits up to `wait`
/// for one (a worker may start before migrate reaches its copy). None: nothing to do
/// (the run, or with no run given the newest one, is past its copy: a worker
/// restarted after the copy ended, say by a Kubernetes Job, ends without an error).
pub async fn join(target: &ConnInfo, run_id: Option<i64>, wait: Duration, progress: &dyn Progress) -> Result<Option<OpenRun>> {
    let dst_name = target.endpoint();
    let dst = target.session().await?;
    let store = Store::new(&dst);
    let started = Instant::now();
    let mut said = false;
    loop {
        if store.exists().await? {
            if let Some((run, snapshot)) = store.open_copy_run(run_id).await? {
                let embeddings = store.run_embeddings(run.run_id).await?;
                return Ok(Some(OpenRun { run, snapshot, embeddings }));
            }
            if let Some(id) = run_id {
                let run = store.run(id).await?;
                if run.phase != crate::run::Phase::Copy {
                    progress.step(&format!("run {id} on {dst_name} is past its copy (phase {}): nothing for a worker to do", run.phase.as_str()));
                    return Ok(None);
                }
            }
        }
        if started.elapsed() >= wait {
            let newest = if store.exists().await? { store.all_runs().await?.into_iter().next() } else { None };
            if let Some(done) = newest.filter(|r| r.run.phase != crate::run::Phase::Copy) {
                progress.step(&format!(
                    "no copy opened on {dst_name} within {} s, and the newest run ({}) is past its copy: nothing for a worker to do",
                    wait.as_secs(),
                    done.run.run_id
                ));
                return Ok(None);
            }
            return Err(Error::RunState(format!(
                "no run's copy is open on {dst_name} after {} s: start `pgshift migrate` (workers join its copy), or wait longer with --wait",
                wait.as_secs()
            )));
        }
        if !said {
            progress.step(&format!("waiting for a run's copy to open on {dst_name}"));
            said = true;
        }
        tokio::time::sleep(LOOK_AGAIN).await;
    }
}

/// Copies chunks of `open` with `jobs` workers until every chunk of the run is done.
/// When the run's snapshot is gone (its migrate stopped), waits up to `wait` for
/// `migrate --resume` to open the copy again, and goes on with that.
pub async fn work(
    (source, target): (&ConnInfo, &ConnInfo),
    open: &OpenRun,
    (jobs, wait): (usize, Duration),
    embedding: Option<&EmbeddingSetup>,
    progress: Arc<dyn Progress>,
) -> Result<WorkerReport> {
    let started = Instant::now();
    let run_id = open.run.run_id;
    if source.endpoint() != open.run.source {
        tracing::warn!("run {run_id} copies from {}; --source is {} (the same server under another name is fine)", open.run.source, source.endpoint());
    }
    if !open.embeddings.is_empty() && embedding.is_none() {
        return Err(Error::Setting(format!("run {run_id} computes vectors: this worker needs the same embedder (the run's model, or --embed-url)")));
    }
    let embedding = embedding.map(|setup| Arc::new(EmbedPool::start(setup.embedder.clone(), setup.threads, setup.batch_size)));
    let mut snapshot = open.snapshot.clone();
    loop {
        let ctx = Arc::new(CopyContext {
            target: target.clone(),
            snapshot: snapshot.clone(),
            run_id,
            jobs: jobs.max(1),
            progress: progress.clone(),
            embedding: embedding.clone(),
        });
        match copy_chunks(Arc::new(RecordedStatements { conn: source.clone() }), ctx, recorded_tables(run_id)).await {
            Ok(tables) => return Ok(WorkerReport { run_id, tables, seconds: started.elapsed().as_secs_f64() }),
            Err(gone @ Error::SnapshotGone { .. }) => {
                progress.step(&format!("run {run_id}'s snapshot is gone (its migrate stopped): waiting up to {} s for `migrate --resume`", wait.as_secs()));
                match reopened(target, run_id, snapshot.as_deref(), wait).await? {
                    Some(next) => snapshot = next,
                    None => return Err(gone),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The snapshot of the run's copy once it is opened again under another one (None
/// inside: chunks read their own); None when that does not happen within `wait`.
async fn reopened(target: &ConnInfo, run_id: i64, gone: Option<&str>, wait: Duration) -> Result<Option<Option<String>>> {
    let dst = target.session().await?;
    let store = Store::new(&dst);
    let started = Instant::now();
    while started.elapsed() < wait {
        if let Some((_, snapshot)) = store.open_copy_run(Some(run_id)).await? {
            if snapshot.as_deref() != gone {
                return Ok(Some(snapshot));
            }
        }
        tokio::time::sleep(LOOK_AGAIN).await;
    }
    Ok(None)
}

/// A claimed chunk's table as the run recorded it: the source statement, the
/// target's COPY, the vectors computed on the way.
fn recorded_tables(run_id: i64) -> TableOf<String> {
    Box::new(move |chunk| {
        let Some(copy_out) = chunk.copy_out.clone() else {
            return Err(Error::Setting(format!(
                "chunk {} of {} is read from a file only the migrate that opened run {run_id} can read (a SQLite source): workers cannot help",
                chunk.chunk_no, chunk.table_name
            )));
        };
        Ok(Arc::new(TableLoad {
            source: copy_out,
            name: chunk.table_name.clone(),
            target: chunk.target.clone(),
            copy_in: chunk.copy_in.clone(),
            format: if chunk.copy_in.ends_with("(FORMAT text)") { CopyFormat::Text } else { CopyFormat::Binary },
            split: SplitKind::Whole,
            chunks: Vec::new(),
            rows_estimate: 0,
            size_bytes: 0,
            embedding: chunk.embedding.clone(),
            chunk_table: chunk.chunk_table.clone(),
        }))
    })
}
