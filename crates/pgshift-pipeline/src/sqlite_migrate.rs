//! `pgshift migrate --source sqlite:///app.db`: tables created with mapped types,
//! rows encoded straight into binary COPY (tables in parallel, each one target
//! transaction with its checkpoint), then keys, indexes, FTS5 search columns with
//! GIN indexes and foreign keys (NOT VALID, then VALIDATE), identities set past max.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt};
use pgshift_postgres::catalog::relation_exists;
use pgshift_postgres::ddl::{PostDataKind, PostDataStep};
use pgshift_postgres::error::Context;
use pgshift_postgres::schema_map::SchemaMap;
use pgshift_postgres::sql::{column_list, qualified, quote_ident};
use pgshift_postgres::ConnInfo;
use pgshift_sqlite::encode::{copy_table, Rejected, Shape};
use pgshift_sqlite::Connection;
use pgshift_sqlite::schema::{inspect, Overrides, Table};
use pgshift_sqlite::types::PgType;

use std::collections::HashMap;

use crate::copy_stage::TableSummary;
use crate::embed_copy::{embed_stream, EmbedTarget};
use crate::embedding::{Cache, EmbedPool, EmbeddingSetup, EmbeddingSpec};
use crate::vector_index::{self, IndexTarget, VectorIndexOptions};
use crate::error::{Error, Result};
use crate::migrate::{MigrateReport, PlannedTable};
use crate::plan::{glob, Chunk, SplitKind};
use crate::postdata::{self, PostDataOptions};
use crate::progress::Progress;
use crate::state::{self, ChunkState, NewRun};
use crate::workers::run_workers;

#[derive(Clone, Default)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub patterns: Vec<String>,
    pub overrides: Overrides,
    /// Rows whose values cannot be converted go here (JSON lines) instead of failing.
    pub reject_file: Option<PathBuf>,
    pub jobs: usize,
    pub dry_run: bool,
    pub resume: bool,
    pub maintenance_work_mem: String,
    /// Tables that get vectors (the text expression is SQLite SQL over the row).
    pub embedding: Option<EmbeddingSetup>,
    pub vector_index_memory_mb: u64,
    /// The target schema the tables go to (`--map-schema main=NAME`). None: public
    /// (for verify: where the source's run put them).
    pub schema: Option<String>,
}

impl SqliteOptions {
    /// The target schema from a `--map-schema`, whose only key may be SQLite's `main`.
    pub fn schema_from(map: &SchemaMap) -> Result<Option<String>> {
        match map.entries().as_slice() {
            [] => Ok(None),
            [(from, to)] if *from == SQLITE_SCHEMA => Ok(Some(to.to_string())),
            _ => Err(Error::Input(format!(
                "--map-schema {map}: a SQLite database has one schema, {SQLITE_SCHEMA}: write --map-schema {SQLITE_SCHEMA}=NAME"
            ))),
        }
    }
}

impl std::fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOptions").field("path", &self.path).field("patterns", &self.patterns).finish()
    }
}

/// SQLite's name for a database's own schema, as `--map-schema main=NAME` names it.
pub const SQLITE_SCHEMA: &str = "main";

/// Runs `work` with the SQLite file open, on a blocking thread (rusqlite is synchronous).
pub(crate) async fn on_sqlite<T: Send + 'static>(
    path: &Path,
    what: &str,
    work: impl FnOnce(&Connection, &Path) -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || work(&pgshift_sqlite::open(&path)?, &path))
        .await
        .map_err(|e| Error::State(format!("{what}: {e}")))?
}

/// Reads the file's schema.
pub async fn read_schema(opts: &SqliteOptions) -> Result<Vec<Table>> {
    let overrides = opts.overrides.clone();
    let tables = on_sqlite(&opts.path, "reading the SQLite schema", move |conn, path| Ok(inspect(conn, path, &overrides)?)).await?;
    select(tables, &opts.patterns)
}

/// Tables matching the patterns (`!pattern` leaves out); a pattern matching nothing is an error.
fn select(tables: Vec<Table>, patterns: &[String]) -> Result<Vec<Table>> {
    let (excludes, includes): (Vec<&str>, Vec<&str>) = patterns.iter().map(String::as_str).partition(|p| p.starts_with('!'));
    let excludes: Vec<&str> = excludes.iter().map(|p| &p[1..]).collect();
    for p in includes.iter().chain(&excludes) {
        if !tables.iter().any(|t| table_matches_sqlite(p, &t.name)) {
            return Err(Error::Input(format!("--tables {p:?} matches no table in the SQLite file")));
        }
    }
    Ok(tables
        .into_iter()
        .filter(|t| includes.is_empty() || includes.iter().any(|p| table_matches_sqlite(p, &t.name)))
        .filter(|t| !excludes.iter().any(|p| table_matches_sqlite(p, &t.name)))
        .collect())
}

/// A column's type in DDL: pgvector's qualified (sessions run with search_path = pg_catalog).
fn column_type_sql(t: PgType, vector_schema: &str) -> String {
    match t {
        PgType::Vector(dims) => format!("{}.vector({dims})", quote_ident(vector_schema)),
        t => t.sql(),
    }
}

pub fn create_table_sql(schema: &str, t: &Table, spec: Option<&EmbeddingSpec>, vector_schema: &str) -> String {
    let mut cols = Vec::new();
    if t.fts5 {
        cols.push("\"rowid\" bigint NOT NULL".to_string());
    }
    for c in t.columns.iter().filter(|c| spec.is_none_or(|s| s.column != c.name)) {
        let mut def = format!("{} {}", quote_ident(&c.name), column_type_sql(c.pg, vector_schema));
        if t.rowid_alias.as_deref() == Some(c.name.as_str()) {
            def.push_str(" GENERATED BY DEFAULT AS IDENTITY");
        } else {
            if let Some(d) = &c.default {
                def.push_str(&format!(" DEFAULT {d}"));
            }
            if c.not_null {
                def.push_str(" NOT NULL");
            }
        }
        cols.push(def);
    }
    if t.fts5 {
        let text: Vec<String> = t.columns.iter().map(|c| format!("coalesce({}, '')", quote_ident(&c.name))).collect();
        cols.push(format!("\"search\" tsvector GENERATED ALWAYS AS (to_tsvector('simple', {})) STORED", text.join(" || ' ' || ")));
    }
    if let Some(spec) = spec {
        cols.push(format!("{} {}", quote_ident(&spec.column), spec.column_type(vector_schema)));
    }
    format!("CREATE TABLE {} ({})", qualified(schema, &t.name), cols.join(", "))
}

/// Keys, indexes, the FTS5 GIN index and foreign keys (to tables being copied).
pub fn post_data(schema: &str, tables: &[Table], warnings: &mut Vec<String>) -> Vec<PostDataStep> {
    let mut out = Vec::new();
    let step = |t: &Table, object: String, kind, sql: String| PostDataStep {
        table: format!("{schema}.{}", t.name),
        schema: schema.into(),
        relname: t.name.clone(),
        object,
        kind,
        sql,
    };
    for t in tables {
        let name = qualified(schema, &t.name);
        if !t.primary_key.is_empty() {
            let pkey = format!("{}_pkey", t.name);
            let sql = format!("ALTER TABLE {name} ADD CONSTRAINT {} PRIMARY KEY ({})", quote_ident(&pkey), column_list(t.primary_key.iter().map(String::as_str)));
            out.push(step(t, pkey, PostDataKind::Index, sql));
        }
        for (n, i) in t.indexes.iter().enumerate() {
            // SQLite names the indexes of UNIQUE constraints sqlite_autoindex_*.
            let idx = if i.name.starts_with("sqlite_autoindex") { format!("{}_{}_key{n}", t.name, i.columns.join("_")) } else { i.name.clone() };
            let sql = format!(
                "CREATE {}INDEX {} ON {name} ({})",
                if i.unique { "UNIQUE " } else { "" },
                quote_ident(&idx),
                column_list(i.columns.iter().map(String::as_str))
            );
            out.push(step(t, idx, PostDataKind::Index, sql));
        }
        if t.fts5 {
            let idx = format!("{}_search_idx", t.name);
            out.push(step(t, idx.clone(), PostDataKind::Index, format!("CREATE INDEX {} ON {name} USING gin (\"search\")", quote_ident(&idx))));
        }
        for fk in &t.foreign_keys {
            let Some(target) = tables.iter().find(|r| r.name == fk.table) else {
                warnings.push(format!("foreign key {}({}) -> {}: that table is not copied, the key is left out", t.name, fk.columns.join(","), fk.table));
                continue;
            };
            let references = if fk.references.is_empty() { target.primary_key.clone() } else { fk.references.clone() };
            let fkey = format!("{}_{}_fkey", t.name, fk.columns.join("_"));
            let action = match fk.on_delete.as_str() {
                "CASCADE" => " ON DELETE CASCADE",
                "SET NULL" => " ON DELETE SET NULL",
                "SET DEFAULT" => " ON DELETE SET DEFAULT",
                "RESTRICT" => " ON DELETE RESTRICT",
                _ => "",
            };
            let sql = format!(
                "ALTER TABLE {name} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}){action} NOT VALID",
                quote_ident(&fkey),
                column_list(fk.columns.iter().map(String::as_str)),
                qualified(schema, &target.name),
                column_list(references.iter().map(String::as_str))
            );
            out.push(step(t, fkey.clone(), PostDataKind::ForeignKey, sql));
            out.push(step(t, fkey.clone(), PostDataKind::Validate, format!("ALTER TABLE {name} VALIDATE CONSTRAINT {}", quote_ident(&fkey))));
        }
    }
    out
}

fn planned(schema: &str, t: &Table) -> PlannedTable {
    PlannedTable {
        table: format!("{schema}.{}", t.name),
        rows_estimate: t.rows,
        size_bytes: 0,
        format: pgshift_postgres::copy::CopyFormat::Binary,
        split: SplitKind::Whole,
        chunks: vec![Chunk { no: 0, predicate: None }],
    }
}

pub async fn migrate_sqlite(opts: &SqliteOptions, target: &ConnInfo, progress: Arc<dyn Progress>) -> Result<MigrateReport> {
    let started = Instant::now();
    let dst_name = target.endpoint();
    crate::progress::enter(&*progress, "inspect");
    let tables = read_schema(opts).await?;
    let source = format!("sqlite:{}", opts.path.display());
    let schema = opts.schema.as_deref().unwrap_or("public");
    let mut report = MigrateReport { dry_run: opts.dry_run, plan: tables.iter().map(|t| planned(schema, t)).collect(), ..Default::default() };
    for t in &tables {
        report.warnings.extend(t.skipped.iter().cloned());
        for c in t.columns.iter().filter(|c| c.note.is_some()) {
            report.warnings.push(format!("{}.{} becomes {}: {}", t.name, c.name, c.pg.sql(), c.note.as_deref().unwrap_or_default()));
        }
    }
    let specs = match &opts.embedding {
        Some(setup) => specs_for(setup, &tables)?,
        None => HashMap::new(),
    };
    report.embeddings = specs.values().cloned().collect();
    let dst = target.connect().await?;
    let vector_schema = pgshift_postgres::catalog::vector_schema(&pgshift_postgres::catalog::installed_extensions(&dst, dst_name).await?, None);
    report.pre_data = tables.iter().map(|t| create_table_sql(schema, t, specs.get(&t.name), &vector_schema)).collect();
    if schema != "public" {
        report.pre_data.insert(0, format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)));
    }
    // Vectors computed on the way, or stored ones (libSQL's F32_BLOB, overrides).
    let needs_pgvector = !specs.is_empty() || tables.iter().flat_map(|t| &t.columns).any(|c| matches!(c.pg, PgType::Vector(_)));
    if needs_pgvector {
        report.pre_data.insert(0, crate::migrate::create_extension_sql("vector", &vector_schema));
    }
    let steps = post_data(schema, &tables, &mut report.warnings);
    report.post_data = steps.iter().map(|s| s.sql.clone()).collect();

    let schema_map = run_map(schema)?;
    let resume_run = state::run_to_resume(&dst, dst_name, &source, opts.resume, &schema_map).await?;
    if resume_run.is_none() {
        let mut present = Vec::new();
        for t in &tables {
            if relation_exists(&dst, dst_name, schema, &t.name).await? {
                present.push(format!("{schema}.{}", t.name));
            }
        }
        if !present.is_empty() {
            return Err(Error::Preflight(vec![format!(
                "the target {dst_name} already has {}: drop them, or leave them out with --tables '!name'",
                present.join(", ")
            )]));
        }
    }
    let mut problems: Vec<String> = match needs_pgvector {
        true => crate::preflight::pgvector_problem(&dst, dst_name).await?.into_iter().collect(),
        false => Vec::new(),
    };
    if !specs.is_empty() {
        problems.extend(embedding_problems(opts, &tables, &specs).await?);
    }
    if !problems.is_empty() {
        return Err(Error::Preflight(problems));
    }
    if opts.dry_run {
        return Ok(report);
    }

    let run_id = match resume_run {
        Some(run) => run.run_id,
        None => {
            crate::progress::enter(&*progress, "schema");
            let chunk = |t: &Table| ChunkState { table_name: format!("{schema}.{}", t.name), chunk_no: 0, split: SplitKind::Whole, predicate: None, done: false };
            let new = NewRun { source: &source, chunks: tables.iter().map(chunk).collect(), embeddings: &report.embeddings, schema_map: &schema_map, slot: false };
            state::create_schema_and_run(&dst, dst_name, &report.pre_data, &new).await?
        }
    };
    report.run_id = Some(run_id);
    let done: Vec<String> = state::chunks(&dst, dst_name, run_id).await?.into_iter().filter(|c| c.done).map(|c| c.table_name).collect();

    crate::progress::enter(&*progress, "copy");
    let copy_started = Instant::now();
    let rejects = match &opts.reject_file {
        Some(p) => Some(Arc::new(Mutex::new(std::fs::File::create(p).map_err(|e| Error::Input(format!("--reject-file {}: {e}", p.display())))?))),
        None => None,
    };
    let work: Vec<Table> = tables.iter().filter(|t| !done.contains(&format!("{schema}.{}", t.name))).cloned().collect();
    crate::metrics::CHUNKS_TOTAL.set(tables.len() as i64);
    crate::metrics::CHUNKS_DONE.set((tables.len() - work.len()) as i64);
    let embed = opts.embedding.as_ref().filter(|_| !specs.is_empty()).map(|setup| {
        Arc::new((EmbedPool::start(setup.embedder.clone(), setup.threads, setup.batch_size), specs.clone()))
    });
    let summaries = run_workers(opts.jobs, work, |queue| {
        let (target, path, progress, rejects, embed) = (target.clone(), opts.path.clone(), progress.clone(), rejects.clone(), embed.clone());
        let schema = schema.to_string();
        async move {
            let mut finished = Vec::new();
            while let Some(table) = queue.pop() {
                let embedding = embed.as_ref().and_then(|e| e.1.get(&table.name).map(|s| (&e.0, s)));
                finished.push(copy_one((&target, &schema), &path, &table, run_id, &*progress, rejects.clone(), embedding).await?);
            }
            Ok(finished)
        }
    })
    .await?;
    report.tables = summaries.into_iter().flatten().collect();
    report.tables.sort_by(|a, b| a.table.cmp(&b.table));
    report.copy_seconds = copy_started.elapsed().as_secs_f64();
    state::set_phase(&dst, dst_name, run_id, state::phase::POST_DATA).await?;

    crate::progress::enter(&*progress, "post-data");
    let post_started = Instant::now();
    let options = PostDataOptions { jobs: opts.jobs, maintenance_work_mem: opts.maintenance_work_mem.clone() };
    postdata::run(target, &steps, &options, progress.clone()).await?;
    let index_work: Vec<IndexTarget> =
        tables.iter().filter_map(|t| specs.get(&t.name).map(|spec| IndexTarget { schema, name: &t.name, spec })).collect();
    let vector_options = VectorIndexOptions {
        min_memory_mb: 256,
        max_memory_mb: opts.vector_index_memory_mb.max(256),
        parallel_workers: opts.jobs.clamp(1, 7),
        vector_schema,
    };
    report.warnings.extend(vector_index::build(target, &index_work, &vector_options, progress.clone()).await?);
    for t in &tables {
        if let Some(col) = &t.rowid_alias {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{}', {}), coalesce(max({}), 0) + 1, false) FROM {}",
                qualified(schema, &t.name).replace('\'', "''"),
                pgshift_postgres::sql::quote_literal(col),
                quote_ident(col),
                qualified(schema, &t.name)
            );
            dst.batch_execute(&sql).await.context(&dst_name, || sql.clone())?;
        }
    }
    report.post_data_seconds = post_started.elapsed().as_secs_f64();
    state::set_phase(&dst, dst_name, run_id, state::phase::DONE).await?;
    crate::metrics::set_phase("done");
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The schema map a SQLite run records, for verify and resume: where `main` went
/// (nothing when it went to public).
fn run_map(schema: &str) -> Result<SchemaMap> {
    match schema {
        "public" => Ok(SchemaMap::default()),
        _ => SchemaMap::parse(&[format!("{SQLITE_SCHEMA}={schema}")]).map_err(Error::Input),
    }
}

/// One table: read on a blocking thread, written through a bounded queue into COPY,
/// committed with its checkpoint. A resumed table is emptied first, in the same transaction.
async fn copy_one(
    (target, schema): (&ConnInfo, &str),
    path: &std::path::Path,
    table: &Table,
    run_id: i64,
    progress: &dyn Progress,
    rejects: Option<Arc<Mutex<std::fs::File>>>,
    embedding: Option<(&EmbedPool, &EmbeddingSpec)>,
) -> Result<TableSummary> {
    let started = Instant::now();
    let dst_name = target.endpoint();
    let name = format!("{schema}.{}", table.name);
    progress.table_started(&name, 0);
    let client = target.connect().await?;
    let qualified = qualified(schema, &table.name);
    client
        .batch_execute(&format!("SET synchronous_commit = off; BEGIN; TRUNCATE ONLY {qualified}"))
        .await
        .context(&dst_name, || format!("begin the copy of {name}"))?;
    let shape = Shape { skip: embedding.map(|(_, s)| s.column.as_str()), extra_text: embedding.map(|(_, s)| s.text.as_str()) };
    let mut cols: Vec<String> = shape.columns(table).into_iter().map(|(c, _)| c).collect();
    cols.extend(embedding.map(|(_, s)| s.column.clone()));
    let in_sql = format!("COPY {qualified} ({}) FROM STDIN (FORMAT binary)", column_list(cols.iter().map(String::as_str)));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let (path, reader_table) = (path.to_path_buf(), table.clone());
    let (skip, extra) = (shape.skip.map(str::to_string), shape.extra_text.map(str::to_string));
    let reader = tokio::task::spawn_blocking(move || {
        let conn = pgshift_sqlite::open(&path)?;
        let mut write_reject = |r: Rejected| {
            if let Some(file) = &rejects {
                let line = serde_json::to_string(&r).expect("rejects serialize");
                let _ = writeln!(file.lock().unwrap(), "{line}");
            }
        };
        let enabled = rejects.is_some();
        let reject: Option<&mut dyn FnMut(Rejected)> = if enabled { Some(&mut write_reject) } else { None };
        let shape = Shape { skip: skip.as_deref(), extra_text: extra.as_deref() };
        copy_table(&conn, &path, &reader_table, &shape, |b| tx.blocking_send(b).is_ok(), reject)
    });
    if let Some((pool, spec)) = embedding {
        let cache_client = target.connect().await?;
        let embed = EmbedTarget { pool, cache: Cache { client: &cache_client, endpoint: dst_name }, spec };
        let stream = futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|b| (Ok::<_, Error>(b), rx)) });
        let mut reported = 0;
        let stats = embed_stream(stream, (&client, dst_name), &embed, &in_sql, &name, |bytes| {
            progress.table_bytes(&name, bytes - reported);
            reported = bytes;
        })
        .await;
        let rows = reader.await.map_err(|e| Error::State(format!("reading {name}: {e}")))??;
        let stats = stats?;
        return finish_table(&client, dst_name, run_id, &name, stats.rows.min(rows), stats.bytes, progress, started).await;
    }
    let sink = client.copy_in::<_, Bytes>(&in_sql).await.context(&dst_name, || format!("start {in_sql}"))?;
    pin_mut!(sink);
    let mut bytes = 0u64;
    let mut write_error = None;
    while let Some(data) = rx.recv().await {
        bytes += data.len() as u64;
        progress.table_bytes(&name, data.len() as u64);
        crate::metrics::BYTES_COPIED.with_label_values(&[&name]).inc_by(data.len() as u64);
        if let Err(e) = sink.send(data).await {
            write_error = Some(e);
            break;
        }
    }
    drop(rx);
    let read = reader.await.map_err(|e| Error::State(format!("reading {name}: {e}")))?;
    if let Some(e) = write_error {
        Err::<(), _>(e).context(&dst_name, || format!("write {in_sql}"))?;
    }
    let rows = read?;
    sink.finish().await.context(&dst_name, || format!("finish {in_sql}"))?;
    finish_table(&client, dst_name, run_id, &name, rows, bytes, progress, started).await
}

/// The table's checkpoint, in its transaction, and the commit.
#[allow(clippy::too_many_arguments)]
async fn finish_table(
    client: &tokio_postgres::Client,
    dst_name: &str,
    run_id: i64,
    name: &str,
    rows: u64,
    bytes: u64,
    progress: &dyn Progress,
    started: Instant,
) -> Result<TableSummary> {
    state::mark_chunk_done(client, dst_name, run_id, name, 0, rows, bytes).await?;
    client.batch_execute("COMMIT").await.context(&dst_name, || format!("commit {name}"))?;
    crate::metrics::ROWS_COPIED.with_label_values(&[name]).inc_by(rows);
    crate::metrics::CHUNKS_DONE.inc();
    progress.table_done(name, rows, bytes, started.elapsed());
    Ok(TableSummary { table: name.to_string(), rows, bytes, seconds: started.elapsed().as_secs_f64() })
}

/// Whether a table pattern (as for PostgreSQL, `public.` allowed) names a SQLite table.
pub(crate) fn table_matches_sqlite(pattern: &str, table: &str) -> bool {
    glob(pattern.strip_prefix("public.").unwrap_or(pattern), table)
}

/// Each spec names exactly one copied table and asks for the model's dimensions.
fn specs_for(setup: &EmbeddingSetup, tables: &[Table]) -> Result<HashMap<String, EmbeddingSpec>> {
    let mut out = HashMap::new();
    for spec in &setup.specs {
        let matching: Vec<&Table> = tables.iter().filter(|t| table_matches_sqlite(&spec.table, &t.name)).collect();
        let [table] = matching.as_slice() else {
            return Err(Error::Input(format!("embedding for {}: names {} of the SQLite tables being copied, not one", spec.table, matching.len())));
        };
        setup.check_dims(spec, &format!("embedding for {}", spec.table))?;
        out.insert(table.name.clone(), spec.clone());
    }
    Ok(out)
}

/// The text expressions must work in SQLite.
async fn embedding_problems(opts: &SqliteOptions, tables: &[Table], specs: &HashMap<String, EmbeddingSpec>) -> Result<Vec<String>> {
    let probes: Vec<(String, String)> =
        tables.iter().filter_map(|t| specs.get(&t.name).map(|s| (t.name.clone(), s.text.clone()))).collect();
    on_sqlite(&opts.path, "checking the embedding expressions", move |conn, _| {
        Ok(probes
            .iter()
            .filter_map(|(table, text)| {
                let sql = format!("SELECT CAST(({text}) AS TEXT) FROM {} LIMIT 0", pgshift_sqlite::quote(table));
                conn.prepare(&sql).err().map(|e| format!("embedding for {table}: the text expression {text:?} fails in SQLite: {e}"))
            })
            .collect())
    })
    .await
}
