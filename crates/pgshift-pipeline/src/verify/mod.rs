//! `pgshift verify`: the target holds what the source holds. One entry point for
//! every kind of source ([`verify`]); each compares row counts and an
//! order-independent checksum per table (per key range for large PostgreSQL tables),
//! with `--jobs` tables or ranges at once. Columns a run replaced with computed
//! vectors are left out on both sides and listed as `not_compared`.

pub mod postgres;
pub mod sqlite;

use pgshift_postgres::checksum::Digest;
use pgshift_postgres::schema_map::SchemaMap;
use pgshift_postgres::ConnInfo;
use serde::Serialize;

use crate::error::Result;
use crate::plan::embedding::EmbeddingSpec;
use crate::source::Source;

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub patterns: Vec<String>,
    /// Tables with more estimated rows are checked per range of about this many rows,
    /// so a mismatch points at a range.
    pub split_rows: u64,
    pub jobs: usize,
    /// Source schema -> target schema; empty: the one the source's run recorded.
    pub schema_map: SchemaMap,
}

#[derive(Clone, Debug, Serialize)]
pub struct RangeCheck {
    /// SQL condition of the range; None = the whole table.
    pub range: Option<String>,
    pub source: Digest,
    pub target: Option<Digest>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableCheck {
    /// `schema.table`, as `--tables` and the run's chunks name it.
    pub table: String,
    /// The same name quoted where needed, so names with dots or quotes read unambiguously.
    pub qualified: String,
    pub source_rows: i64,
    pub target_rows: Option<i64>,
    pub matches: bool,
    /// Set when the table is missing on the target.
    pub problem: Option<String>,
    pub mismatched_ranges: Vec<RangeCheck>,
    pub ranges: usize,
    /// Columns left out of the comparison: vectors the run computed in place of the
    /// source's values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_compared: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub tables: Vec<TableCheck>,
    /// Applications' chunk tables, whose rows the run made from their parents'
    /// texts (the source's are the old vectors): not compared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub made_by_run: Vec<String>,
}

/// Verifies any source against the target.
pub async fn verify(source: &Source, target: &ConnInfo, opts: &VerifyOptions) -> Result<VerifyReport> {
    match source {
        Source::Postgres(s) => postgres::verify_postgres(s.conn(), target, opts).await,
        Source::Sqlite(s) => sqlite::verify_sqlite(s, target, opts).await,
    }
}

/// The applications' chunk tables of the specs a run computed, as `schema.table`
/// (`parent_schema` finds a spec's table's schema: the chunk table is in it unless named).
pub(crate) fn made_by_run(computed: &[EmbeddingSpec], parent_schema: impl Fn(&str) -> Option<String>) -> Vec<String> {
    computed
        .iter()
        .filter_map(|s| s.chunks.as_ref().filter(|c| c.columns.is_some()).map(|c| (s, c)))
        .filter_map(|(s, c)| {
            let schema = parent_schema(&s.table)?;
            let (schema, name) = c.schema_and_name(&schema);
            Some(format!("{schema}.{name}"))
        })
        .collect()
}

/// The columns of a table that a run replaced with computed vectors: the specs'
/// columns that the table (named by `names`) has.
pub(crate) fn not_compared<'a>(computed: &[EmbeddingSpec], names: impl Fn(&str) -> bool, columns: impl Iterator<Item = &'a str> + Clone) -> Vec<String> {
    computed
        .iter()
        .filter(|s| names(&s.table))
        .map(|s| s.column.clone())
        .filter(|c| columns.clone().any(|x| x == c))
        .collect()
}

impl VerifyReport {
    pub fn new(tables: Vec<TableCheck>) -> VerifyReport {
        VerifyReport { ok: tables.iter().all(|c| c.matches), tables, made_by_run: Vec::new() }
    }
}
