//! `pgshift search`: the rows (or chunks) of a table nearest to a question, found
//! with the spec a run recorded for that table on the target, so the question is
//! embedded by the same model that embedded the rows.

use pgshift_postgres::catalog::{self, Table};
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::{quote_ident, quote_literal};
use pgshift_postgres::ConnInfo;
use serde::Serialize;

use super::chunks::ChunkTable;
use super::vector_literal;
use crate::error::{Error, Result};
use crate::plan::embedding::EmbeddingSpec;
use crate::plan::select::name_matches;

/// Characters of a row's text shown with a hit (a chunk is shown whole).
const SHOWN_CHARS: i32 = 300;

/// The spec a run recorded for `table` (as the target names it: `schema.table` or
/// `table`), the newest run's first, and the table as the target has it.
pub async fn recorded_spec(target: &ConnInfo, table: &str) -> Result<(EmbeddingSpec, String)> {
    let dst = target.session().await?;
    let mut known = Vec::new();
    for (_, spec) in crate::run::specs_on_target(&dst).await? {
        let (schema, name) = spec.table.split_once('.').expect("qualified");
        if name_matches(table, schema, name) {
            let on_target = spec.table.clone();
            return Ok((spec, on_target));
        }
        known.push(spec.table);
    }
    Err(Error::Setting(match known.is_empty() {
        true => format!("{}: no pgshift run recorded vectors for any table: search needs a table migrated with --embed", target.endpoint()),
        false => format!("{}: no run recorded vectors for {table}; tables with vectors: {}", target.endpoint(), known.join(", ")),
    }))
}

/// One row or chunk near the question.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    /// The row's key values (as text), in the key's order.
    pub key: Vec<String>,
    /// The chunk's position, for a chunk table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_seq: Option<i32>,
    /// The chunk, or the start of the row's text.
    pub text: String,
    /// Cosine distance (0 = same direction).
    pub distance: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SearchReport {
    /// The table searched: `schema.table`, or its chunk table.
    pub table: String,
    pub key: Vec<String>,
    pub model: String,
    pub hits: Vec<Hit>,
}

/// The `limit` rows or chunks of `table` (the target's `schema.table`) nearest to `vector`.
pub async fn search(target: &ConnInfo, spec: &EmbeddingSpec, table: &str, vector: Vec<f32>, limit: usize) -> Result<SearchReport> {
    let dst = target.session().await?;
    let endpoint = dst.endpoint();
    let catalog = catalog::inspect(&dst).await?;
    let (schema, name) = table.split_once('.').expect("qualified");
    let parent: &Table = catalog.table(schema, name).ok_or_else(|| Error::Setting(format!("{endpoint} has no table {table}")))?;
    let vector_schema = catalog::installed_extensions(&dst)
        .await?
        .remove("vector")
        .ok_or_else(|| Error::Setting(format!("{endpoint} has no pgvector extension")))?;
    let question = format!("{}::{}", quote_literal(&vector_literal(Some(vector)).expect("a vector")), spec.column_type(&vector_schema));
    let distance = |column: &str| format!("({} OPERATOR({}.<=>) {question})", quote_ident(column), quote_ident(&vector_schema));
    let key: Vec<String> = match &parent.primary_key {
        Some(k) => k.columns.clone(),
        None => vec!["ctid".into()],
    };
    let key_text = key.iter().map(|k| if k == "ctid" { "ctid::text".to_string() } else { format!("{}::text", quote_ident(k)) }).collect::<Vec<_>>().join(", ");
    let (searched, sql) = match ChunkTable::of(parent, spec) {
        Some(chunks) => (
            format!("{}.{}", chunks.schema_and_name().0, chunks.schema_and_name().1),
            format!(
                "SELECT ARRAY[{}], {seq}, {text}, {d}::float8 FROM {t} WHERE {col} IS NOT NULL ORDER BY {d} LIMIT {limit}",
                chunks.chunk_key().iter().map(|k| format!("{}::text", quote_ident(k))).collect::<Vec<_>>().join(", "),
                seq = chunks.seq_column().map_or("NULL::int".to_string(), |c| format!("{}::int", quote_ident(c))),
                text = quote_ident(chunks.text_column()),
                d = distance(&spec.column),
                t = chunks.qualified(),
                col = quote_ident(&spec.column),
            ),
        ),
        None => (
            table.to_string(),
            format!(
                "SELECT ARRAY[{key_text}], NULL::int, left(({})::text, {SHOWN_CHARS}), {d}::float8 FROM ONLY {t} WHERE {col} IS NOT NULL ORDER BY {d} LIMIT {limit}",
                spec.text,
                d = distance(&spec.column),
                t = parent.qualified(),
                col = quote_ident(&spec.column),
            ),
        ),
    };
    let rows = dst.query(&sql, &[]).await.context(&endpoint, || format!("search {searched}"))?;
    let hits = rows
        .iter()
        .map(|r| Hit { key: r.get(0), chunk_seq: r.get(1), text: r.get::<_, Option<String>>(2).unwrap_or_default(), distance: r.get(3) })
        .collect();
    Ok(SearchReport { table: searched, key, model: spec.model.clone(), hits })
}
