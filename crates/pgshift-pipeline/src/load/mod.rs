//! The load, for every kind of source: plan (what the source offers, checked before
//! anything is written), pre-data with the run record in one transaction, the copy
//! (chunks in parallel, each committed with its checkpoint by [`chunk_writer`]),
//! post-data, vector indexes, sequence values. `pgshift migrate` is this, followed by
//! catch-up when the source can be followed.
//!
//! - [`resume`]: which chunks a run still copies, and how;
//! - [`copy`]: the copy workers, claiming chunks from the run's queue on the target;
//!   [`chunk_writer`]: the claim-rows-checkpoint transaction; [`worker`]: `pgshift worker`,
//!   the same workers in another process on any host;
//! - [`preflight`]: checks before writing; [`postdata`], [`vector_index`]: after the rows;
//! - [`links`]: foreign keys declared across sources; [`consolidate`]: several sources.

pub mod chunk_writer;
pub mod consolidate;
pub mod copy;
pub mod links;
pub mod postdata;
pub mod resume;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pgshift_postgres::error::Context;
use pgshift_postgres::ddl::create_extension_sql;
use pgshift_postgres::ConnInfo;
use serde::Serialize;

use crate::embed::EmbedPool;
use crate::embed::vector_index::{self, IndexTarget, VectorIndexOptions};
use crate::error::{Error, Result};
use crate::metrics::Stage;
use crate::plan::embedding::EmbeddingSpec;
use crate::plan::MigrateOptions;
use crate::progress::Progress;
use crate::run::Phase;
use crate::run::store::{ChunkState, NewRun, Store};
use crate::source::{LoadSource, PlannedTable, Source, TableLoad};
use copy::{copy_chunks, CopyContext, TableOf, TableSummary};
use postdata::PostDataOptions;

#[derive(Clone, Debug, Default, Serialize)]
pub struct MigrateReport {
    pub dry_run: bool,
    pub run_id: Option<i64>,
    pub slot_name: Option<String>,
    pub start_lsn: Option<String>,
    pub plan: Vec<PlannedTable>,
    pub pre_data: Vec<String>,
    /// Created on the source before the slot, so the slot's stream sees it from L0.
    pub publication: Option<String>,
    pub post_data: Vec<String>,
    /// Views, policies, and (without catch-up) triggers and row security, after the indexes.
    pub after_load: Vec<String>,
    /// Triggers and row security, switched on inside the cutover's fence.
    pub at_cutover: Vec<String>,
    /// With --extensions-in-template1: what runs in the target server's template1.
    pub template1: Vec<String>,
    pub warnings: Vec<String>,
    /// Tables that get vectors: the text expression, column, dimensions, index.
    pub embeddings: Vec<EmbeddingSpec>,
    /// Declared foreign keys: added, or waiting for a table another run brings.
    pub foreign_keys: Vec<String>,
    pub tables: Vec<TableSummary>,
    /// Embedding servers this process used during the copy: requests, failures, texts.
    pub embedding_endpoints: Vec<crate::metrics::EndpointUse>,
    /// Texts embedded into a column that were longer than the model's window (embedded
    /// from their start only), and the longest one's tokens.
    pub truncated_texts: u64,
    pub longest_text_tokens: u64,
    pub copy_seconds: f64,
    pub post_data_seconds: f64,
    pub total_seconds: f64,
}

/// `pgshift migrate` for any source.
pub async fn migrate(source: &Source, target: &ConnInfo, opts: &MigrateOptions, progress: Arc<dyn Progress>) -> Result<MigrateReport> {
    match source {
        Source::Postgres(s) => load(s, target, opts, progress).await,
        Source::Sqlite(s) => load(s, target, &MigrateOptions { follow: false, ..opts.clone() }, progress).await,
    }
}

/// The one load orchestrator.
pub async fn load<S: LoadSource + Clone>(source: &S, target: &ConnInfo, opts: &MigrateOptions, progress: Arc<dyn Progress>) -> Result<MigrateReport> {
    let started = Instant::now();
    let dst_name = target.endpoint();
    let follow = opts.follow && source.can_follow();
    crate::progress::enter(&*progress, Stage::Inspect);
    let dst = target.session().await?;
    let store = Store::new(&dst);
    let resuming = store.run_to_resume(source.name(), opts.resume, &opts.schema_map).await?;
    let plan = source.plan(&dst, opts, resuming.as_ref()).await?;
    if opts.jobs == 0 && plan.tables.first().is_some_and(|t| source.copy_out(t, None).is_none()) {
        return Err(Error::Setting("--jobs 0 leaves the copy to `pgshift worker` processes, which cannot read this source (a file): use --jobs 1 or more".into()));
    }
    if let Some(run) = &resuming {
        let recorded = store.run_embeddings(run.run_id).await?;
        if recorded != plan.embeddings {
            return Err(Error::RunState(format!(
                "run {} was started with other embedding settings ({} table(s) with vectors): resume it with the same --embed (or --config)",
                run.run_id,
                recorded.len()
            )));
        }
    }
    let mut report = MigrateReport {
        dry_run: opts.dry_run,
        plan: plan.tables.iter().map(PlannedTable::from).collect(),
        pre_data: plan.pre_data.clone(),
        post_data: plan.post_data.iter().map(|s| s.sql.clone()).collect(),
        after_load: plan.after_load.clone(),
        at_cutover: plan.at_cutover.clone(),
        template1: match opts.extensions_in_template1 {
            true => plan.extensions.iter().map(|(name, schema)| create_extension_sql(name, schema)).collect(),
            false => Vec::new(),
        },
        warnings: plan.warnings.clone(),
        publication: plan.publication.clone(),
        embeddings: plan.embeddings.clone(),
        ..Default::default()
    };
    if opts.dry_run {
        return Ok(report);
    }

    if opts.extensions_in_template1 {
        progress.step(&format!("template1: {}", report.template1.join("; ")));
        extensions_in_template1(target, &plan.extensions).await?;
    }
    let run = match resuming {
        Some(run) => run,
        None => {
            crate::progress::enter(&*progress, Stage::Schema);
            let chunks = plan
                .tables
                .iter()
                .flat_map(|t| {
                    t.chunks.iter().map(|c| ChunkState { table_name: t.name.clone(), chunk_no: c.no, split: t.split, predicate: c.predicate.clone(), done: false })
                })
                .collect();
            let new = NewRun {
                source: source.name(),
                chunks,
                embeddings: &plan.embeddings,
                schema_map: &opts.schema_map,
                slot: follow,
                at_cutover: &plan.at_cutover,
                large_objects: plan.large_objects,
                left_out: &plan.left_out,
            };
            store.create_schema_and_run(&plan.pre_data, &new).await?
        }
    };
    report.run_id = Some(run.run_id);

    // The snapshot must stay exported until every chunk transaction has imported it.
    let (run, snapshot) = source.open(&dst, run, &plan, follow).await?;
    report.slot_name = if follow { run.slot_name.clone() } else { None };
    report.start_lsn = run.start_lsn.clone();
    let plan = Arc::new(plan);
    if run.phase == Phase::Copy {
        crate::progress::enter(&*progress, Stage::Copy);
        let copy_started = Instant::now();
        resume::open_copy(&store, &run, &plan, source, snapshot.name.as_deref()).await?;
        let embedding = opts
            .embedding
            .as_ref()
            .filter(|_| plan.tables.iter().any(|t| t.embedding.is_some()))
            .map(|setup| Arc::new(EmbedPool::start(setup.embedder.clone(), setup.threads, setup.batch_size)));
        let ctx = Arc::new(CopyContext {
            target: target.clone(),
            snapshot: snapshot.name.clone(),
            run_id: run.run_id,
            jobs: opts.jobs,
            progress: progress.clone(),
            embedding,
        });
        let tables: HashMap<String, Arc<TableLoad<S::Table>>> = plan.tables.iter().map(|t| (t.name.clone(), Arc::new(t.clone()))).collect();
        let table_of: TableOf<S::Table> = Box::new(move |chunk| {
            tables.get(&chunk.table_name).cloned().ok_or_else(|| Error::Internal(format!("chunk {} of {}: not a table of this run's plan", chunk.chunk_no, chunk.table_name)))
        });
        let copied = copy_chunks(Arc::new(source.clone()), ctx, table_of).await;
        if copied.is_ok() {
            store.close_copy(run.run_id).await?;
        }
        let shared_snapshot = snapshot.name.is_some();
        snapshot.release().await;
        report.tables = copied?;
        source.after_copy(&dst, &run, shared_snapshot, follow).await?;
        report.copy_seconds = copy_started.elapsed().as_secs_f64();
        report.embedding_endpoints = crate::metrics::embedding_endpoints();
        report.truncated_texts = crate::metrics::EMBEDDING_TRUNCATED.get();
        report.longest_text_tokens = crate::metrics::EMBEDDING_LONGEST_TOKENS.get().max(0) as u64;
        store.advance(run.run_id, Phase::Copy, Phase::PostData).await?;
    } else {
        snapshot.release().await;
    }

    crate::progress::enter(&*progress, Stage::PostData);
    let post_started = Instant::now();
    let pd = PostDataOptions { jobs: opts.jobs.max(1), maintenance_work_mem: opts.maintenance_work_mem.clone() };
    postdata::run(target, &plan.post_data, &pd, progress.clone()).await?;
    let vector_options = VectorIndexOptions {
        max_memory_mb: opts.vector_index_memory_mb,
        max_workers: opts.jobs.max(1),
        vector_schema: plan.vector_schema.clone(),
    };
    let index_work: Vec<IndexTarget> =
        plan.vector_indexes.iter().map(|(schema, name, spec, index)| IndexTarget { schema, name, spec, index: index.as_deref() }).collect();
    report.warnings.extend(vector_index::build(target, &index_work, &vector_options, progress.clone()).await?);
    for sql in plan.after_load.iter().chain(&plan.catchup_ddl).chain(&plan.sequence_values) {
        dst.batch_execute(sql).await.context(&dst_name, || sql.clone())?;
    }
    for line in source.finish_load(&dst, &plan).await? {
        progress.step(&line);
    }
    report.post_data_seconds = post_started.elapsed().as_secs_f64();
    store.advance(run.run_id, Phase::PostData, Phase::after_load(follow)).await?;
    if !follow {
        crate::metrics::set_phase(Stage::Done);
    }
    if !opts.foreign_keys.is_empty() {
        store.set_run_foreign_keys(run.run_id, &opts.foreign_keys).await?;
    }
    report.foreign_keys = links::add_declared(&dst, &opts.foreign_keys, true).await?;
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Creates the extensions (name, schema) in template1 (databases created from it get them).
async fn extensions_in_template1(target: &ConnInfo, wanted: &[(String, String)]) -> Result<()> {
    let template = target.with_dbname("template1");
    let client = template.session().await?;
    for (name, schema) in wanted {
        let sql = create_extension_sql(name, schema);
        client
            .batch_execute(&sql)
            .await
            .context(&template.endpoint(), || format!("{sql} in template1 (needs the right to create extensions there)"))?;
    }
    Ok(())
}
