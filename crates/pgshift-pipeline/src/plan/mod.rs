//! What every stage reads, decided before anything runs: which tables ([`select`]),
//! in which pieces ([`chunks`]), which get vectors ([`embedding`]), which columns
//! change type ([`casts`]), which keys join tables of different sources ([`links`]),
//! and the options of a load. Nothing here opens a connection: the run store and the
//! stages sit above this module and read it; it reads none of them.

pub mod casts;
pub mod chunks;
pub mod embedding;
pub mod links;
pub mod select;

use pgshift_postgres::schema_map::SchemaMap;

use embedding::EmbeddingSetup;

/// Which tables, and how finely they are split.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Glob patterns over `schema.table` (or bare `table` for any schema); empty = all.
    pub patterns: Vec<String>,
    /// Tables with more (estimated) rows than this are split into chunks of about
    /// this many rows.
    pub split_rows: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { patterns: Vec::new(), split_rows: 500_000 }
    }
}

#[derive(Clone, Debug)]
pub struct MigrateOptions {
    pub plan: PlanOptions,
    /// Copy workers in this process (0: only coordinate `pgshift worker` processes).
    pub jobs: usize,
    pub dry_run: bool,
    pub resume: bool,
    /// Keep a logical slot for catch-up (sources that can be followed).
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
    pub foreign_keys: Vec<links::DeclaredForeignKey>,
    /// Columns whose type changes on the way (every value checked first).
    pub casts: Vec<casts::ColumnCast>,
    /// Source schemas whose tables go to another schema on the target.
    pub schema_map: SchemaMap,
    /// Give objects the source's owners (ALTER ... OWNER TO).
    pub owners: bool,
    /// Copy the source's GRANTs and default privileges.
    pub privileges: bool,
    /// Create missing roles (NOLOGIN, no password) instead of refusing.
    pub create_roles: bool,
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
            owners: true,
            privileges: true,
            create_roles: false,
        }
    }
}

/// Target table (`schema.table`) -> columns that catch-up leaves out of the changes it
/// applies: a vector column recomputed in place keeps the target's vectors, not the
/// source's (in either direction).
pub type LeftOut = std::collections::BTreeMap<String, Vec<String>>;

