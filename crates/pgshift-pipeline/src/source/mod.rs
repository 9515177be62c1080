//! What a load reads from. Every kind of source answers the same questions for the
//! one load orchestrator (`load`): which tables move and in which chunks, what DDL
//! the target needs before and after the rows ([`LoadPlan`]), what the copy reads
//! under ([`Snapshot`]), and each chunk's rows as a COPY stream ([`LoadSource::read_chunk`]).
//!
//! - [`postgres`]: a PostgreSQL database read under one exported snapshot (a slot's,
//!   when catch-up follows), split into key or block ranges ([`chunks`]);
//! - [`sqlite`]: a SQLite/libSQL file, one chunk per table, rows encoded by
//!   pgshift-sqlite into binary COPY;
//! - [`select`]: `--tables` patterns, [`casts`]: `--cast`, [`inspect`]: `pgshift inspect`.

pub mod casts;
pub mod chunks;
pub mod extension_config;
pub mod inspect;
pub mod postgres;
pub mod preflight;
pub mod sqlite;

use pgshift_postgres::large_objects::Carry;
use crate::plan::LeftOut;
use std::future::Future;

use bytes::Bytes;
use pgshift_postgres::copy::CopyFormat;
use pgshift_postgres::ddl::PostDataStep;
use pgshift_postgres::{ConnInfo, Session};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::plan::chunks::{Chunk, SplitKind};
use crate::plan::embedding::{ChunkCopy, EmbeddingSpec};
use crate::plan::MigrateOptions;
use crate::run::Run;

/// A source as the command line names it.
pub enum Source {
    Postgres(postgres::PostgresSource),
    Sqlite(sqlite::SqliteSource),
}

impl Source {
    /// A `sqlite://` URL (or a path ending in .db/.sqlite) is a SQLite file; anything
    /// else is a PostgreSQL connection string.
    pub fn parse(url: &str, sqlite: sqlite::SqliteReading) -> Result<Source> {
        match pgshift_sqlite::path_of(url) {
            Some(path) => Ok(Source::Sqlite(sqlite::SqliteSource::new(path, sqlite))),
            None => Ok(Source::Postgres(postgres::PostgresSource::new(ConnInfo::parse(url, "--source")?))),
        }
    }
}

/// One table as the load moves it. `T` is the source's own description of it.
#[derive(Clone, Debug)]
pub struct TableLoad<T> {
    pub source: T,
    /// As the run's chunks name it: the source's `schema.table`.
    pub name: String,
    /// Qualified name on the target.
    pub target: String,
    /// `COPY ... FROM STDIN` on the target (with the vector column when embedded).
    pub copy_in: String,
    pub format: CopyFormat,
    pub split: SplitKind,
    pub chunks: Vec<Chunk>,
    pub rows_estimate: i64,
    pub size_bytes: i64,
    /// Set when the table gets vectors computed on the way: the chunk's COPY stream
    /// then carries the text to embed as its last field.
    pub embedding: Option<EmbeddingSpec>,
    /// Set when those vectors go to a chunk table (the stream then carries the key and
    /// the context before the text).
    pub chunk_table: Option<ChunkCopy>,
}

/// Everything a load does on the target besides copying rows, decided before
/// anything is written (so `--dry-run` shows it all).
#[derive(Debug)]
pub struct LoadPlan<T> {
    pub tables: Vec<TableLoad<T>>,
    /// Run in one transaction with the run record.
    pub pre_data: Vec<String>,
    /// Keys, indexes, constraints, foreign keys, comments.
    pub post_data: Vec<PostDataStep>,
    /// (schema, table, spec, index name) on the target: vector indexes built after
    /// post-data; the name is the source's when it had an index on the column.
    pub vector_indexes: Vec<(String, String, EmbeddingSpec, Option<String>)>,
    /// For catch-up of computed vectors (after the indexes).
    pub catchup_ddl: Vec<String>,
    /// Views, materialized views, policies (and, without catch-up, triggers and row
    /// security): after the indexes, run again by a resumed load.
    pub after_load: Vec<String>,
    /// Triggers and row security when changes are followed: recorded in the run and
    /// switched on inside the cutover's fence, so nothing fires twice during catch-up.
    pub at_cutover: Vec<String>,
    /// Sequence and identity values, set last.
    pub sequence_values: Vec<String>,
    /// Recorded in the run: resume, catch-up and cutover need the same.
    pub embeddings: Vec<EmbeddingSpec>,
    /// Where pgvector's types and operator classes are on the target.
    pub vector_schema: String,
    /// Extensions (name, schema) the target's template1 gets with `--extensions-in-template1`.
    pub extensions: Vec<(String, String)>,
    /// The publication catch-up reads (shown by --dry-run), and its tables (with
    /// column lists where columns are left out).
    pub publication: Option<String>,
    pub publication_tables: Vec<String>,
    /// Columns catch-up leaves out (recorded in the run).
    pub left_out: LeftOut,
    /// Large objects are made the same after the load and at the cutover (PostgreSQL sources).
    pub large_objects: Option<Carry>,
    pub warnings: Vec<String>,
}

impl<T> LoadPlan<T> {
    pub fn new(vector_schema: String) -> LoadPlan<T> {
        LoadPlan {
            tables: Vec::new(),
            pre_data: Vec::new(),
            post_data: Vec::new(),
            vector_indexes: Vec::new(),
            catchup_ddl: Vec::new(),
            after_load: Vec::new(),
            at_cutover: Vec::new(),
            sequence_values: Vec::new(),
            embeddings: Vec::new(),
            vector_schema,
            extensions: Vec::new(),
            publication: None,
            publication_tables: Vec::new(),
            left_out: LeftOut::new(),
            large_objects: None,
            warnings: Vec::new(),
        }
    }
}

/// A table of the plan as `migrate --dry-run` and `--json` show it.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedTable {
    pub table: String,
    pub rows_estimate: i64,
    pub size_bytes: i64,
    pub format: CopyFormat,
    pub split: SplitKind,
    pub chunks: Vec<Chunk>,
}

impl<T> From<&TableLoad<T>> for PlannedTable {
    fn from(t: &TableLoad<T>) -> PlannedTable {
        PlannedTable {
            table: t.name.clone(),
            rows_estimate: t.rows_estimate,
            size_bytes: t.size_bytes,
            format: t.format,
            split: t.split,
            chunks: t.chunks.clone(),
        }
    }
}

/// What the copy reads under. A PostgreSQL source's exported snapshot stays valid
/// only while the session that exported it is open: [`Snapshot::release`] closes it
/// once every chunk is copied.
pub struct Snapshot {
    /// The exported snapshot every chunk imports; None: each chunk reads its own.
    pub name: Option<String>,
    holder: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Snapshot {
    /// Nothing shared: each chunk reads the source as it is then.
    pub fn none() -> Snapshot {
        Snapshot { name: None, holder: None }
    }

    /// A snapshot kept alive by `close`'s owner until [`Snapshot::release`].
    pub fn held<F: Future<Output = ()> + Send + 'static>(name: String, close: impl FnOnce() -> F + Send + 'static) -> Snapshot {
        let (release, released) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = released.await;
            close().await;
        });
        Snapshot { name: Some(name), holder: Some((release, task)) }
    }

    pub async fn release(self) {
        if let Some((release, task)) = self.holder {
            let _ = release.send(());
            let _ = task.await;
        }
    }
}

/// What a copy worker reads a chunk with: a load's own source, or (for
/// `pgshift worker`) the statements the run recorded.
pub trait ChunkReader: Send + Sync + 'static {
    /// The source's own description of a table (what its reader needs).
    type Table: Clone + Send + Sync + 'static;
    /// What one copy worker reads with (a connection, or nothing).
    type Reader: Send;

    fn reader(&self) -> impl Future<Output = Result<Self::Reader>> + Send;

    /// Streams one chunk's rows as COPY data (header, rows, trailer) into `out`. When
    /// the receiver is gone (the writer failed and says why), it stops and returns Ok.
    fn read_chunk(
        &self,
        reader: &mut Self::Reader,
        snapshot: Option<&str>,
        table: &TableLoad<Self::Table>,
        predicate: Option<&str>,
        out: mpsc::Sender<Bytes>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// A kind of source, as the load orchestrator uses it.
pub trait LoadSource: ChunkReader {
    /// How runs record this source (redacted).
    fn name(&self) -> &str;

    /// Whether changes can be followed after the load (logical replication).
    fn can_follow(&self) -> bool;

    /// Tables, chunks and DDL, with every problem found before anything is written
    /// (`Error::Preflight` lists them all). `resuming` is the run a `--resume` continues.
    fn plan(&self, target: &Session, options: &MigrateOptions, resuming: Option<&Run>) -> impl Future<Output = Result<LoadPlan<Self::Table>>> + Send;

    /// Opens what the copy reads under (after the run is recorded); may record the
    /// run's start position. Returns the run as it now stands.
    fn open(&self, target: &Session, run: Run, plan: &LoadPlan<Self::Table>, follow: bool) -> impl Future<Output = Result<(Run, Snapshot)>> + Send;

    /// The statement another process (`pgshift worker`) reads a chunk with; None
    /// when only this process can read the source (a SQLite file).
    fn copy_out(&self, _table: &TableLoad<Self::Table>, _predicate: Option<&str>) -> Option<String> {
        None
    }

    /// After the last chunk: what catch-up must know of how the chunks were read
    /// (`shared_snapshot`: all under the run's first snapshot).
    fn after_copy(&self, _target: &Session, _run: &Run, _shared_snapshot: bool, _follow: bool) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// The load's last step, run again by a resumed load: what the source has besides
    /// its tables' rows (large objects). Returns what to report.
    fn finish_load(&self, _target: &Session, _plan: &LoadPlan<Self::Table>) -> impl Future<Output = Result<Vec<String>>> + Send {
        async { Ok(Vec::new()) }
    }
}
