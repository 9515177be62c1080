//! A SQLite/libSQL file as a load source: tables created with mapped types (from
//! pgshift-sqlite), one chunk per table read in one SQLite read transaction and
//! encoded straight into binary COPY, then keys, indexes, FTS5 search columns with
//! GIN indexes and foreign keys (the same NOT VALID + VALIDATE as every source),
//! identities set past the largest key.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use pgshift_postgres::Session;
use pgshift_postgres::catalog::relation_exists;
use pgshift_postgres::copy::CopyFormat;
use pgshift_postgres::ddl::{foreign_key_definition, foreign_key_steps, identity_past_max_sql, PostDataKind, PostDataStep, StepOwner};
use pgshift_postgres::schema_map::SchemaMap;
use pgshift_postgres::sql::{column_list, qualified, quote_ident};
use pgshift_sqlite::encode::{copy_table, Rejected, Shape};
use pgshift_sqlite::schema::{inspect, Overrides, Table};
use pgshift_sqlite::types::PgType;
use pgshift_sqlite::Connection;
use tokio::sync::mpsc;

use crate::plan::chunks::{Chunk, SplitKind};
use crate::plan::select::{name_matches, select};
use super::{ChunkReader, LoadPlan, LoadSource, Snapshot, TableLoad};
use crate::error::{Error, Result};
use crate::plan::embedding::{match_specs, EmbeddingSpec, SpecCandidate};
use crate::plan::MigrateOptions;
use crate::run::Run;

/// How the file's values are read: type overrides, and where rejected rows go.
#[derive(Clone, Debug, Default)]
pub struct SqliteReading {
    /// `table.column` -> type (`--sqlite-type`).
    pub overrides: Overrides,
    /// Rows whose values cannot be converted go here (JSON lines) instead of failing.
    pub reject_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct SqliteSource {
    path: PathBuf,
    reading: SqliteReading,
    name: String,
    /// Opened when the copy starts (never by --dry-run).
    rejects: Arc<OnceLock<Option<Arc<Mutex<std::fs::File>>>>>,
}

impl SqliteSource {
    pub fn new(path: PathBuf, reading: SqliteReading) -> SqliteSource {
        let name = format!("sqlite:{}", path.display());
        SqliteSource { path, reading, name, rejects: Arc::new(OnceLock::new()) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's tables (all of them: `--tables` is applied by [`Self::select`]).
    pub async fn read_schema(&self) -> Result<Vec<Table>> {
        let overrides = self.reading.overrides.clone();
        on_sqlite(&self.path, "reading the SQLite schema", move |conn, path| Ok(inspect(conn, path, &overrides)?)).await
    }

    /// The tables `patterns` select.
    pub async fn select(&self, patterns: &[String]) -> Result<Vec<Table>> {
        select(self.read_schema().await?, patterns, "the SQLite file", |t: &Table, p| table_matches_sqlite(p, &t.name))
    }

    fn rejects(&self) -> Result<Option<Arc<Mutex<std::fs::File>>>> {
        if let Some(r) = self.rejects.get() {
            return Ok(r.clone());
        }
        let file = match &self.reading.reject_file {
            Some(p) => Some(Arc::new(Mutex::new(std::fs::File::create(p).map_err(|e| Error::Setting(format!("--reject-file {}: {e}", p.display())))?))),
            None => None,
        };
        Ok(self.rejects.get_or_init(|| file).clone())
    }
}

/// The target schema a `--map-schema` puts the file's tables in (whose only key may
/// be SQLite's `main`); public without one.
pub fn target_schema(map: &SchemaMap) -> Result<String> {
    match map.entries().as_slice() {
        [] => Ok("public".into()),
        [(from, to)] if *from == SQLITE_SCHEMA => Ok(to.to_string()),
        _ => Err(Error::Setting(format!(
            "--map-schema {map}: a SQLite database has one schema, {SQLITE_SCHEMA}: write --map-schema {SQLITE_SCHEMA}=NAME"
        ))),
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
        .map_err(|e| Error::Internal(format!("{what}: {e}")))?
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
            let on_delete = Some(fk.on_delete.as_str()).filter(|a| ["CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT"].contains(a));
            let definition = foreign_key_definition(&fk.columns, &qualified(schema, &target.name), &references, on_delete);
            let owner = StepOwner { schema, relname: &t.name };
            out.extend(foreign_key_steps(owner, &format!("{}_{}_fkey", t.name, fk.columns.join("_")), &definition, true));
        }
    }
    out
}

/// Whether a table pattern names a SQLite table: bare, or as `main.` or (the
/// target's name) `public.`.
pub(crate) fn table_matches_sqlite(pattern: &str, table: &str) -> bool {
    name_matches(pattern, SQLITE_SCHEMA, table) || name_matches(pattern, "public", table)
}

/// The text expressions must work in SQLite.
async fn embedding_problems(path: &Path, tables: &[Table], specs: &HashMap<String, EmbeddingSpec>) -> Result<Vec<String>> {
    let probes: Vec<(String, String)> =
        tables.iter().filter_map(|t| specs.get(&t.name).map(|s| (t.name.clone(), s.text.clone()))).collect();
    on_sqlite(path, "checking the embedding expressions", move |conn, _| {
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

/// The embedding spec of each table, by table name.
fn specs_for(setup: &crate::plan::embedding::EmbeddingSetup, tables: &[Table]) -> Result<HashMap<String, EmbeddingSpec>> {
    let candidates: Vec<SpecCandidate> = tables
        .iter()
        .map(|t| SpecCandidate { key: t.name.clone(), parent: None, matches: Box::new(move |p: &str| table_matches_sqlite(p, &t.name)) })
        .collect();
    let specs = match_specs(setup, &candidates, "of the SQLite file being copied (check the name and --tables)")?;
    if let Some(spec) = specs.values().find(|s| s.chunks.is_some()) {
        return Err(Error::Setting(format!(
            "embedding for {}: chunk tables are not made from SQLite sources yet: embed into a column (TABLE.COLUMN=EXPR)",
            spec.table
        )));
    }
    Ok(specs)
}

/// The run records where `main` went (nothing when it went to public).
fn run_map(schema: &str) -> Result<SchemaMap> {
    match schema {
        "public" => Ok(SchemaMap::default()),
        _ => SchemaMap::parse(&[format!("{SQLITE_SCHEMA}={schema}")]).map_err(Error::Setting),
    }
}

impl LoadSource for SqliteSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn can_follow(&self) -> bool {
        false
    }

    async fn plan(&self, dst: &Session, opts: &MigrateOptions, resuming: Option<&Run>) -> Result<LoadPlan<Table>> {
        let dst_name = dst.endpoint();
        let tables = self.select(&opts.plan.patterns).await?;
        let schema = target_schema(&opts.schema_map)?;
        run_map(&schema)?;
        let specs = match &opts.embedding {
            Some(setup) => specs_for(setup, &tables)?,
            None => HashMap::new(),
        };
        let installed = pgshift_postgres::catalog::installed_extensions(dst).await?;
        let mut plan = LoadPlan::new(pgshift_postgres::catalog::vector_schema(&installed, None));
        let vector_schema = plan.vector_schema.clone();
        for t in &tables {
            plan.warnings.extend(t.skipped.iter().cloned());
            for c in t.columns.iter().filter(|c| c.note.is_some()) {
                plan.warnings.push(format!("{}.{} becomes {}: {}", t.name, c.name, c.pg.sql(), c.note.as_deref().unwrap_or_default()));
            }
        }
        // Vectors computed on the way, or stored ones (libSQL's F32_BLOB, overrides).
        let needs_pgvector = !specs.is_empty() || tables.iter().flat_map(|t| &t.columns).any(|c| matches!(c.pg, PgType::Vector(_)));
        if needs_pgvector {
            plan.pre_data.push(pgshift_postgres::ddl::create_extension_sql("vector", &vector_schema));
            plan.extensions.push(("vector".into(), vector_schema.clone()));
        }
        if schema != "public" {
            plan.pre_data.push(format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&schema)));
        }
        for t in &tables {
            let spec = specs.get(&t.name);
            plan.pre_data.push(create_table_sql(&schema, t, spec, &vector_schema));
            let shape = Shape { skip: spec.map(|s| s.column.as_str()), extra_text: None };
            let cols: Vec<String> = shape.columns(t).into_iter().map(|(c, _)| c).chain(spec.map(|s| s.column.clone())).collect();
            plan.tables.push(TableLoad {
                source: t.clone(),
                name: format!("{schema}.{}", t.name),
                target: qualified(&schema, &t.name),
                copy_in: format!("COPY {} ({}) FROM STDIN (FORMAT binary)", qualified(&schema, &t.name), column_list(cols.iter().map(String::as_str))),
                format: CopyFormat::Binary,
                split: SplitKind::Whole,
                chunks: vec![Chunk { no: 0, predicate: None }],
                rows_estimate: t.rows,
                size_bytes: 0,
                embedding: spec.cloned(),
                chunk_table: None,
            });
            if let Some(spec) = spec {
                plan.vector_indexes.push((schema.clone(), t.name.clone(), spec.clone(), None));
            }
            if let Some(col) = &t.rowid_alias {
                plan.sequence_values.push(identity_past_max_sql(StepOwner { schema: &schema, relname: &t.name }, col));
            }
        }
        plan.post_data = post_data(&schema, &tables, &mut plan.warnings);
        plan.embeddings = tables.iter().filter_map(|t| specs.get(&t.name).cloned()).collect();

        let mut problems = Vec::new();
        if resuming.is_none() {
            let mut present = Vec::new();
            for t in &tables {
                if relation_exists(dst, &schema, &t.name).await? {
                    present.push(format!("{schema}.{}", t.name));
                }
            }
            if !present.is_empty() {
                problems.push(format!("the target {dst_name} already has {}: drop them, or leave them out with --tables '!name'", present.join(", ")));
            }
        }
        if needs_pgvector {
            problems.extend(crate::source::preflight::pgvector_problem(dst).await?);
        }
        if !specs.is_empty() {
            problems.extend(embedding_problems(&self.path, &tables, &specs).await?);
        }
        if !problems.is_empty() {
            return Err(Error::Preflight(problems));
        }
        Ok(plan)
    }

    /// Each table is read in its own SQLite read transaction: nothing is shared.
    async fn open(&self, _target: &Session, run: Run, _plan: &LoadPlan<Table>, _follow: bool) -> Result<(Run, Snapshot)> {
        self.rejects()?;
        Ok((run, Snapshot::none()))
    }
}

impl ChunkReader for SqliteSource {
    type Table = Table;
    type Reader = ();

    async fn reader(&self) -> Result<()> {
        Ok(())
    }

    /// Reads the table on a blocking thread (rusqlite is synchronous) in one read
    /// transaction, encoding rows into binary COPY as it goes.
    async fn read_chunk(&self, _reader: &mut (), _snapshot: Option<&str>, table: &TableLoad<Table>, _predicate: Option<&str>, out: mpsc::Sender<Bytes>) -> Result<()> {
        let (path, source, rejects) = (self.path.clone(), table.source.clone(), self.rejects()?);
        let (skip, extra) = (table.embedding.as_ref().map(|s| s.column.clone()), table.embedding.as_ref().map(|s| s.text.clone()));
        let name = table.name.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pgshift_sqlite::open(&path)?;
            let mut write_reject = |r: Rejected| {
                if let Some(file) = &rejects {
                    let line = serde_json::to_string(&r).expect("rejects serialize");
                    let _ = writeln!(file.lock().unwrap(), "{line}");
                }
            };
            let reject: Option<&mut dyn FnMut(Rejected)> = if rejects.is_some() { Some(&mut write_reject) } else { None };
            let shape = Shape { skip: skip.as_deref(), extra_text: extra.as_deref() };
            copy_table(&conn, &path, &source, &shape, |b| out.blocking_send(b).is_ok(), reject)?;
            Ok::<_, Error>(())
        })
        .await
        .map_err(|e| Error::Internal(format!("reading {name}: {e}")))?
    }
}
