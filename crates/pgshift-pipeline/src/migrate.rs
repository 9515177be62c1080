//! `pgshift migrate`: preflight, pre-data schema, slot with exported snapshot,
//! parallel copy with checkpoints, post-data, sequence values.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pgshift_postgres::catalog::{self, Catalog, Table};
use pgshift_postgres::ddl;
use pgshift_postgres::error::Context;
use pgshift_postgres::replication::{CreatedSlot, ReplicationConn};
use pgshift_postgres::sql::quote_ident;
use pgshift_postgres::schema_map::{relocate_extensions, SchemaMap};
use pgshift_postgres::ConnInfo;
use serde::Serialize;
use tokio_postgres::Client;

use crate::copy_stage::{copy_chunks, CopyContext, CopyJob, EmbedStage, TableSummary};
use crate::embed_catchup::catchup_ddl;
use crate::embed_copy::vector_column_ddl;
use crate::embedding::{specs_by_table, EmbedPool, EmbeddingSetup, EmbeddingSpec};
use crate::vector_index::{self, IndexTarget, VectorIndexOptions};
use crate::error::{Error, Result};
use crate::follow::publication_name;
use crate::plan::{plan_tables, select_tables, with_partition_parents, Chunk, PlanOptions, SplitKind, TablePlan};
use crate::postdata::{self, PostDataOptions};
use crate::preflight::{self, Checks};
use crate::progress::Progress;
use crate::state::{self, phase, ChunkState, NewRun, Run};

#[derive(Clone, Debug)]
pub struct MigrateOptions {
    pub plan: PlanOptions,
    pub jobs: usize,
    pub dry_run: bool,
    pub resume: bool,
    /// Create a logical slot whose snapshot the copy reads, and keep it for catch-up.
    pub follow: bool,
    pub maintenance_work_mem: String,
    /// Tables that get vectors computed on the way, and the embedder.
    pub embedding: Option<EmbeddingSetup>,
    /// Ceiling for maintenance_work_mem of vector index builds, in MiB.
    pub vector_index_memory_mb: u64,
    /// Also create the extensions in the target's template1, so databases created
    /// later (Prisma's shadow database, test databases) have them too.
    pub extensions_in_template1: bool,
    /// Keys between tables that came from different databases, added after the load.
    pub foreign_keys: Vec<crate::links::DeclaredForeignKey>,
    /// Columns whose type changes on the way (every value checked first).
    pub casts: Vec<crate::casts::ColumnCast>,
    /// Source schemas whose tables go to another schema on the target.
    pub schema_map: SchemaMap,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            plan: PlanOptions::default(),
            jobs: 4,
            dry_run: false,
            resume: false,
            follow: true,
            maintenance_work_mem: "256MB".into(),
            embedding: None,
            vector_index_memory_mb: 2048,
            extensions_in_template1: false,
            foreign_keys: Vec::new(),
            casts: Vec::new(),
            schema_map: SchemaMap::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PlannedTable {
    pub table: String,
    pub rows_estimate: i64,
    pub size_bytes: i64,
    pub format: pgshift_postgres::copy::CopyFormat,
    pub split: SplitKind,
    pub chunks: Vec<Chunk>,
}

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
    pub warnings: Vec<String>,
    /// Tables that get vectors: the text expression, column, dimensions, index.
    pub embeddings: Vec<EmbeddingSpec>,
    /// Declared foreign keys: added, or waiting for a table another run brings.
    pub foreign_keys: Vec<String>,
    pub tables: Vec<TableSummary>,
    pub copy_seconds: f64,
    pub post_data_seconds: f64,
    pub total_seconds: f64,
}

pub async fn migrate(source: &ConnInfo, target: &ConnInfo, opts: &MigrateOptions, progress: Arc<dyn Progress>) -> Result<MigrateReport> {
    let started = Instant::now();
    let (src_name, dst_name) = (source.endpoint(), target.endpoint());
    crate::progress::enter(&*progress, "inspect");
    let src = source.connect().await?;
    let dst = target.connect().await?;
    let mut catalog = catalog::inspect(&src, &src_name).await?;
    crate::casts::apply(&mut catalog, &opts.casts)?;
    let unfinished = state::run_to_resume(&dst, dst_name, source.endpoint(), opts.resume, &opts.schema_map).await?;
    let tables = match &unfinished {
        Some(run) => tables_of_run(&dst, dst_name, run, &catalog).await?,
        None => select_tables(&catalog, &opts.plan.patterns)?,
    };
    let needs_slot = opts.follow && unfinished.as_ref().is_none_or(|r| r.start_lsn.is_none());
    let specs = match &opts.embedding {
        Some(setup) => specs_by_table(setup, &tables)?,
        None => HashMap::new(),
    };
    // The tables that get vectors (partitions take theirs from the parent), and their specs.
    let embedded = embedded_parents(&tables, &specs);
    let embedded_specs: Vec<EmbeddingSpec> = embedded.iter().map(|(_, s)| (*s).clone()).collect();
    if let Some(run) = &unfinished {
        let recorded = state::run_embeddings(&dst, dst_name, run.run_id).await?;
        if recorded != embedded_specs {
            return Err(Error::Input(format!(
                "run {} was started with other embedding settings ({} table(s) with vectors): resume it with the same --embed (or --config)",
                run.run_id,
                recorded.len()
            )));
        }
    }
    let mut problems = preflight::embedding_problems((&src, src_name), (&dst, dst_name), &tables, &specs, opts.follow).await?;
    problems.extend(crate::casts::check(&src, src_name, &tables).await?);
    if !problems.is_empty() {
        return Err(Error::Preflight(problems));
    }
    // The catalog and the tables as the target gets them (other schemas with --map-schema,
    // extensions where the target already has them).
    let installed = catalog::installed_extensions(&dst, dst_name).await?;
    let view = relocate_extensions(&opts.schema_map.target_view(&catalog), &installed);
    let vector_schema = catalog::vector_schema(&installed, Some(&view));
    let target_tables = view.same_tables(&tables);
    let embedded_targets: Vec<(&Table, &EmbeddingSpec)> =
        embedded.iter().map(|(t, s)| (view.same_tables(&[t])[0], *s)).collect();
    let checks = Checks { needs_slot, resume: opts.resume, follow: opts.follow };
    preflight::check((&src, src_name), (&dst, dst_name), &catalog, (&tables, &target_tables), &checks).await?;

    let plans = plan_tables(&src, src_name, &tables, &view, &opts.plan).await?;
    let mut pre_data = ddl::pre_data(&view, &target_tables);
    pre_data.extend(vector_columns_ddl(&view, &embedded_targets, &vector_schema));
    let post_steps = ddl::post_data(&target_tables);
    let mut report = MigrateReport {
        dry_run: opts.dry_run,
        plan: plans.iter().map(planned).collect(),
        pre_data: pre_data.clone(),
        post_data: post_steps.iter().map(|s| s.sql.clone()).collect(),
        warnings: if opts.follow { Vec::new() } else { preflight::identity_problems(&tables) },
        publication: needs_slot.then(|| publication_sql("<slot name>", &plans)),
        embeddings: embedded_specs.clone(),
        ..Default::default()
    };
    if opts.dry_run {
        return Ok(report);
    }

    if opts.extensions_in_template1 {
        let mut wanted: Vec<(String, String)> = view.extensions.iter().map(|e| (e.name.clone(), e.schema.clone())).collect();
        if !specs.is_empty() && !wanted.iter().any(|(n, _)| n == "vector") {
            wanted.push(("vector".into(), vector_schema.clone()));
        }
        extensions_in_template1(target, &wanted).await?;
    }
    let run = match unfinished {
        Some(run) => run,
        None => {
            crate::progress::enter(&*progress, "schema");
            let chunk = |p: &TablePlan, c: &Chunk| ChunkState { table_name: p.name(), chunk_no: c.no, split: p.split, predicate: c.predicate.clone(), done: false };
            let chunks = plans.iter().flat_map(|p| p.chunks.iter().map(move |c| chunk(p, c))).collect();
            let new = NewRun { source: source.endpoint(), chunks, embeddings: &embedded_specs, schema_map: &opts.schema_map, slot: true };
            let run_id = state::create_schema_and_run(&dst, dst_name, &pre_data, &new).await?;
            state::run_by_id(&dst, dst_name, run_id).await?
        }
    };
    report.run_id = Some(run.run_id);

    // The snapshot must stay exported until every chunk transaction has imported it:
    // the holder lives until the copy ends.
    let (holder, snapshot, run) = open_snapshot(source, &src, &dst, dst_name, run, opts.follow, &plans).await?;
    report.slot_name = if opts.follow { run.slot_name.clone() } else { None };
    report.start_lsn = run.start_lsn.clone();

    if run.phase == phase::COPY {
        crate::progress::enter(&*progress, "copy");
        let copy_started = Instant::now();
        let jobs = copy_jobs(&dst, dst_name, &run, &plans, snapshot.is_some()).await?;
        let total: usize = plans.iter().map(|p| p.chunks.len()).sum();
        crate::metrics::CHUNKS_TOTAL.set(total as i64);
        crate::metrics::CHUNKS_DONE.set((total - jobs.len()) as i64);
        let embedding = opts.embedding.as_ref().filter(|_| !specs.is_empty()).map(|setup| {
            Arc::new(EmbedStage {
                pool: EmbedPool::start(setup.embedder.clone(), setup.threads, setup.batch_size),
                specs: specs.clone(),
            })
        });
        let ctx = Arc::new(CopyContext {
            source: source.clone(),
            target: target.clone(),
            snapshot: snapshot.clone(),
            run_id: run.run_id,
            jobs: opts.jobs,
            progress: progress.clone(),
            embedding,
        });
        report.tables = copy_chunks(ctx, jobs).await?;
        if snapshot.is_none() && opts.follow {
            // Chunks read under fresh snapshots may hold rows newer than L0.
            let lsn: String = src
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
                .context(&src_name, || "read the source's WAL position".into())?
                .get(0);
            state::set_converge_lsn(&dst, dst_name, run.run_id, &lsn).await?;
        }
        report.copy_seconds = copy_started.elapsed().as_secs_f64();
        state::set_phase(&dst, dst_name, run.run_id, phase::POST_DATA).await?;
    }
    holder.close().await;

    crate::progress::enter(&*progress, "post-data");
    let post_started = Instant::now();
    let pd = PostDataOptions { jobs: opts.jobs, maintenance_work_mem: opts.maintenance_work_mem.clone() };
    postdata::run(target, &post_steps, &pd, progress.clone()).await?;
    let vector_options = VectorIndexOptions {
        min_memory_mb: memory_mb(&opts.maintenance_work_mem).unwrap_or(256),
        max_memory_mb: opts.vector_index_memory_mb,
        parallel_workers: opts.jobs.clamp(1, 7),
        vector_schema: vector_schema.clone(),
    };
    let index_work: Vec<IndexTarget> = embedded_targets.iter().map(|(t, s)| IndexTarget::of(t, s)).collect();
    report.warnings.extend(vector_index::build(target, &index_work, &vector_options, progress.clone()).await?);
    if opts.follow {
        for sql in embedded_targets.iter().flat_map(|(t, s)| catchup_ddl(t, s)) {
            dst.batch_execute(&sql).await.context(&dst_name, || sql.clone())?;
        }
    }
    for sql in ddl::sequence_values(&view, &target_tables) {
        dst.batch_execute(&sql).await.context(&dst_name, || sql.clone())?;
    }
    report.post_data_seconds = post_started.elapsed().as_secs_f64();
    state::set_phase(&dst, dst_name, run.run_id, if opts.follow { phase::LOADED } else { phase::DONE }).await?;
    report.foreign_keys = crate::links::add_declared(&dst, dst_name, &opts.foreign_keys).await?;
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The tables a spec names (partitions take theirs from the parent), in catalog order.
fn embedded_parents<'a>(tables: &[&'a Table], specs: &'a HashMap<String, EmbeddingSpec>) -> Vec<(&'a Table, &'a EmbeddingSpec)> {
    tables.iter().filter(|t| t.partition_of.is_none()).filter_map(|t| specs.get(&t.display_name()).map(|s| (*t, s))).collect()
}

/// pgvector, and the vector column of every embedded table in the spec's type.
fn vector_columns_ddl(catalog: &Catalog, work: &[(&Table, &EmbeddingSpec)], vector_schema: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !work.is_empty() && !catalog.extensions.iter().any(|e| e.name == "vector") {
        out.push(create_extension_sql("vector", vector_schema));
    }
    out.extend(work.iter().map(|(t, s)| vector_column_ddl(t, s, vector_schema)));
    out
}

/// `CREATE EXTENSION` into a named schema: pgshift's sessions run with
/// `search_path = pg_catalog`, where a bare CREATE EXTENSION would put it.
pub(crate) fn create_extension_sql(name: &str, schema: &str) -> String {
    let schema = quote_ident(schema);
    format!("CREATE SCHEMA IF NOT EXISTS {schema}; CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {schema}", quote_ident(name))
}

/// Creates the extensions (name, schema) in template1 (databases created from it get them).
async fn extensions_in_template1(target: &ConnInfo, wanted: &[(String, String)]) -> Result<()> {
    let template = target.with_dbname("template1");
    let client = template.connect().await?;
    for (name, schema) in wanted {
        let sql = create_extension_sql(name, schema);
        client
            .batch_execute(&sql)
            .await
            .context(&template.endpoint(), || format!("{sql} in template1 (needs the right to create extensions there)"))?;
    }
    Ok(())
}

/// `256MB`, `1GB`, `512kB` as MiB.
fn memory_mb(setting: &str) -> Option<u64> {
    let s = setting.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    match s[split..].trim().to_ascii_uppercase().as_str() {
        "KB" => Some(n / 1024),
        "MB" | "" => Some(n),
        "GB" => Some(n * 1024),
        "TB" => Some(n * 1024 * 1024),
        _ => None,
    }
}

fn planned(p: &TablePlan) -> PlannedTable {
    PlannedTable {
        table: p.name(),
        rows_estimate: p.table.row_estimate,
        size_bytes: p.table.size_bytes,
        format: p.format,
        split: p.split,
        chunks: p.chunks.clone(),
    }
}

enum SnapshotHolder {
    Slot(ReplicationConn),
    Transaction(Client),
    None,
}

impl SnapshotHolder {
    async fn close(self) {
        match self {
            SnapshotHolder::Slot(conn) => conn.close().await,
            SnapshotHolder::Transaction(client) => drop(client),
            SnapshotHolder::None => {}
        }
    }
}

/// With catch-up: a new slot exports the snapshot and fixes L0. Without: a plain
/// exported snapshot. A resumed run whose L0 is already recorded reads each chunk
/// under a fresh snapshot; catch-up from L0 makes the target converge.
async fn open_snapshot(
    source: &ConnInfo,
    src: &Client,
    dst: &Client,
    dst_name: &str,
    run: Run,
    follow: bool,
    plans: &[TablePlan],
) -> Result<(SnapshotHolder, Option<String>, Run)> {
    let src_name = source.endpoint();
    if run.start_lsn.is_some() {
        if let Some(slot) = &run.slot_name {
            let exists: bool = src
                .query_one("SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", &[slot])
                .await
                .context(&src_name, || "look for the run's slot".into())?
                .get(0);
            if !exists {
                return Err(Error::State(format!(
                    "slot {slot} of run {} no longer exists on the source, so changes since the load began are lost: \
                     drop the migrated tables and the pgshift schema on the target and start over",
                    run.run_id
                )));
            }
        }
        return Ok((SnapshotHolder::None, None, run));
    }
    if !follow {
        let holder = source.connect().await?;
        holder
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .context(&src_name, || "open the snapshot transaction".into())?;
        let snap: String = holder
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .context(&src_name, || "export a snapshot".into())?
            .get(0);
        return Ok((SnapshotHolder::Transaction(holder), Some(snap), run));
    }
    let slot_name = run.slot_name.clone().expect("runs get a slot name when created");
    // A slot made by a run that died before recording L0 cannot be trusted: remake it.
    src.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
        &[&slot_name],
    )
    .await
    .context(&src_name, || format!("drop stale slot {slot_name}"))?;
    // pgoutput reads publications as of each change's position: the publication
    // must exist before the slot's consistent point, or changes right after L0 fail.
    let publication = publication_sql(&slot_name, plans);
    src.batch_execute(&publication).await.context(&src_name, || publication.clone())?;
    let mut conn = ReplicationConn::connect(source).await?;
    let CreatedSlot { consistent_point, snapshot_name, .. } = conn.create_slot_with_snapshot(&slot_name).await?;
    state::set_start_lsn(dst, dst_name, run.run_id, &consistent_point).await?;
    tracing::info!(slot = %slot_name, lsn = %consistent_point, "created replication slot");
    let run = state::run_by_id(dst, dst_name, run.run_id).await?;
    Ok((SnapshotHolder::Slot(conn), Some(snapshot_name), run))
}

/// The source publication that names the run's tables for pgoutput.
fn publication_sql(name: &str, plans: &[TablePlan]) -> String {
    let name = quote_ident(publication_name(name));
    let tables: Vec<String> = plans.iter().map(|p| p.table.qualified()).collect();
    let scope = if tables.is_empty() { String::new() } else { format!(" FOR TABLE {}", tables.join(", ")) };
    format!("DROP PUBLICATION IF EXISTS {name}; CREATE PUBLICATION {name}{scope}")
}

/// The chunks still to copy. A fresh run copies all; a resumed one (some chunk done,
/// or no shared snapshot) follows [`resume_plan`].
async fn copy_jobs(dst: &Client, dst_name: &str, run: &Run, plans: &[TablePlan], shared_snapshot: bool) -> Result<Vec<CopyJob>> {
    let states = state::chunks(dst, dst_name, run.run_id).await?;
    let resumed = states.iter().any(|c| c.done) || !shared_snapshot;
    let mut jobs = Vec::new();
    for plan in plans {
        let plan = Arc::new(plan.clone());
        let name = plan.name();
        let mine: Vec<&ChunkState> = states.iter().filter(|c| c.table_name == name).collect();
        let (truncate, todo) = resume_plan(&mine, resumed);
        if truncate {
            dst.batch_execute(&format!("BEGIN; TRUNCATE ONLY {}", plan.target.qualified()))
                .await
                .context(&dst_name, || format!("clear {name} for a whole re-copy"))?;
            state::reset_table_chunks(dst, dst_name, run.run_id, &name).await?;
            dst.batch_execute("COMMIT").await.context(&dst_name, || "commit".into())?;
        }
        for (c, clear_first) in todo {
            jobs.push(CopyJob { plan: plan.clone(), chunk_no: c.chunk_no, predicate: c.predicate.clone(), clear_first });
        }
    }
    Ok(jobs)
}

/// For one table's chunks: whether to empty the table first, and which chunks to copy,
/// each with whether to clear its range on the target first.
///
/// A resumed key-range chunk clears its range (rows of a newer source state may sit
/// there). A block (ctid) range means nothing on the target, whose rows sit in other
/// blocks, so a resumed ctid-split table is never cleared by range: with some chunks
/// done it is emptied and copied whole (updates move rows between blocks), otherwise
/// it is still empty and its chunks just run.
fn resume_plan<'a>(chunks: &[&'a ChunkState], resumed: bool) -> (bool, Vec<(&'a ChunkState, bool)>) {
    let pending = chunks.iter().filter(|c| !c.done).count();
    if pending == 0 {
        return (false, Vec::new());
    }
    if resumed && chunks[0].split == SplitKind::Ctid {
        return (pending < chunks.len(), chunks.iter().map(|c| (*c, false)).collect());
    }
    (false, chunks.iter().filter(|c| !c.done).map(|c| (*c, resumed)).collect())
}

/// The tables a run was started with, looked up in today's source catalog.
async fn tables_of_run<'a>(dst: &Client, dst_name: &str, run: &Run, catalog: &'a Catalog) -> Result<Vec<&'a Table>> {
    let names: Vec<String> = state::chunks(dst, dst_name, run.run_id).await?.into_iter().map(|c| c.table_name).collect();
    let mut tables: Vec<&Table> = Vec::new();
    for name in names {
        let t = catalog.tables.iter().find(|t| t.display_name() == name).ok_or_else(|| {
            Error::State(format!("run {} copies table {name}, which is no longer in the source", run.run_id))
        })?;
        if !tables.iter().any(|x| x.oid == t.oid) {
            tables.push(t);
        }
    }
    // Partitioned parents hold no chunks but own keys and indexes.
    Ok(with_partition_parents(catalog, tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(no: i32, split: SplitKind, done: bool) -> ChunkState {
        let predicate = Some(format!("range {no}"));
        ChunkState { table_name: "public.t".into(), chunk_no: no, split, predicate, done }
    }

    fn plan_of(chunks: &[ChunkState], resumed: bool) -> (bool, Vec<(i32, bool)>) {
        let refs: Vec<&ChunkState> = chunks.iter().collect();
        let (truncate, todo) = resume_plan(&refs, resumed);
        (truncate, todo.into_iter().map(|(c, clear)| (c.chunk_no, clear)).collect())
    }

    #[test]
    fn a_fresh_run_copies_every_chunk_without_clearing() {
        let chunks = [chunk(0, SplitKind::Ctid, false), chunk(1, SplitKind::Ctid, false)];
        assert_eq!(plan_of(&chunks, false), (false, vec![(0, false), (1, false)]));
    }

    #[test]
    fn resumed_key_ranges_clear_and_recopy_only_unfinished_chunks() {
        let chunks = [chunk(0, SplitKind::IntKey, true), chunk(1, SplitKind::IntKey, false), chunk(2, SplitKind::IntKey, false)];
        assert_eq!(plan_of(&chunks, true), (false, vec![(1, true), (2, true)]));
    }

    #[test]
    fn resumed_block_ranges_are_never_cleared_by_range() {
        // Partly done: empty the table, copy it whole.
        let chunks = [chunk(0, SplitKind::Ctid, true), chunk(1, SplitKind::Ctid, false)];
        assert_eq!(plan_of(&chunks, true), (true, vec![(0, false), (1, false)]));
        // Not started: a DELETE by block range would hit rows another chunk just wrote.
        let chunks = [chunk(0, SplitKind::Ctid, false), chunk(1, SplitKind::Ctid, false)];
        assert_eq!(plan_of(&chunks, true), (false, vec![(0, false), (1, false)]));
    }

    #[test]
    fn a_finished_table_has_nothing_to_do() {
        let chunks = [chunk(0, SplitKind::Whole, true)];
        assert_eq!(plan_of(&chunks, true), (false, vec![]));
    }
}
