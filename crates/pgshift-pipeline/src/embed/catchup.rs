//! Vectors during catch-up. On the target, a trigger clears a row's vector when an
//! applied update changes its text (inserted rows arrive without one); before each
//! catch-up transaction commits, the rows without a vector get one, in that same
//! transaction, so a vector is never older than its text and a restart redoes
//! nothing twice. Updates that leave the text alone keep their vector.

use pgshift_postgres::Session;
use pgshift_postgres::catalog::Table;
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::{name_head, name_tail, quote_ident};

use super::{has_text_sql, vector_literal, vectors_for, Cache, EmbedPool, EmbeddingSpec};
use crate::error::{Error, Result};
use crate::run::store::Store;

/// Rows re-embedded per statement while a transaction is being committed.
const ROWS_PER_ROUND: i64 = 1000;

/// Names derived from the table's OID-free identity, stable across runs.
fn function_name(t: &Table, spec: &EmbeddingSpec) -> String {
    let name = name_head(&format!("stale_{}_{}_{}", t.schema, t.name, spec.column));
    format!("pgshift.{}", quote_ident(&name))
}

pub const TRIGGER: &str = "pgshift_embedding_stale";

fn pending_index(t: &Table, spec: &EmbeddingSpec) -> String {
    name_tail(&format!("{}_{}_pending_idx", t.name, spec.column))
}

/// A trigger (fired by replication sessions too: ENABLE ALWAYS) that clears the
/// spec's column when an update changes the row's text. Idempotent.
pub fn trigger_ddl(t: &Table, spec: &EmbeddingSpec) -> Vec<String> {
    let (table, col, function) = (t.qualified(), quote_ident(&spec.column), function_name(t, spec));
    let text_of = |row: &str| format!("(SELECT ({})::text FROM (SELECT {row}.*) AS r)", spec.text);
    vec![
        format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgshift$ \
             BEGIN IF {} IS DISTINCT FROM {} THEN NEW.{col} := NULL; END IF; RETURN NEW; END $pgshift$",
            text_of("NEW"),
            text_of("OLD")
        ),
        format!("DROP TRIGGER IF EXISTS {TRIGGER} ON {table}"),
        format!("CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()"),
        format!("ALTER TABLE {table} ENABLE ALWAYS TRIGGER {TRIGGER}"),
    ]
}

pub fn drop_trigger_ddl(t: &Table, spec: &EmbeddingSpec) -> Vec<String> {
    vec![format!("DROP TRIGGER IF EXISTS {TRIGGER} ON {}", t.qualified()), format!("DROP FUNCTION IF EXISTS {}()", function_name(t, spec))]
}

/// The trigger and a partial index that finds rows without a vector quickly.
pub fn catchup_ddl(t: &Table, spec: &EmbeddingSpec) -> Vec<String> {
    let col = quote_ident(&spec.column);
    let mut out = trigger_ddl(t, spec);
    out.push(format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} (({col} IS NULL)) WHERE {col} IS NULL",
        quote_ident(&pending_index(t, spec)),
        t.qualified()
    ));
    out
}

/// Undoes [`catchup_ddl`] (at cutover: from then on the application writes vectors).
pub fn drop_catchup_ddl(t: &Table, spec: &EmbeddingSpec) -> Vec<String> {
    let mut out = drop_trigger_ddl(t, spec);
    out.push(format!("DROP INDEX IF EXISTS {}.{}", quote_ident(&t.schema), quote_ident(&pending_index(t, spec))));
    out
}

/// A table's vector column on the target: the spec, and where pgvector's types are.
#[derive(Clone, Copy)]
pub struct VectorColumn<'a> {
    pub table: &'a Table,
    pub spec: &'a EmbeddingSpec,
    pub vector_schema: &'a str,
}

impl VectorColumn<'_> {
    /// `UPDATE` writing vector literal `$2[i]` into the row at ctid `$1[i]` (text), where
    /// `condition` (over `$1..$3`) also holds: one statement per batch, not per row.
    pub(crate) fn store_by_ctid_sql(&self, condition: Option<&str>) -> String {
        format!(
            "UPDATE ONLY {} SET {} = ($2::text[])[array_position($1::text[]::tid[], ctid)]::{} WHERE ctid = ANY($1::text[]::tid[]){}",
            self.table.qualified(),
            quote_ident(&self.spec.column),
            self.spec.column_type(self.vector_schema),
            condition.map(|c| format!(" AND {c}")).unwrap_or_default()
        )
    }
}

/// Gives every row of the table that has text (not blank) but no vector its vector,
/// inside the caller's open transaction on `client`. Returns how many rows got one.
pub async fn embed_pending(client: &Session, pool: &EmbedPool, column: VectorColumn<'_>) -> Result<u64> {
    let endpoint = client.endpoint();
    let (table, col, spec) = (column.table.qualified(), quote_ident(&column.spec.column), column.spec);
    let select = format!(
        "SELECT ctid::text, ({})::text FROM ONLY {table} WHERE {col} IS NULL AND {} LIMIT {ROWS_PER_ROUND}",
        spec.text,
        has_text_sql(spec)
    );
    let update = column.store_by_ctid_sql(None);
    let cache = Cache { store: Store::new(client) };
    let mut total = 0;
    loop {
        let rows = client.query(&select, &[]).await.context(&endpoint, || format!("find rows of {table} without a vector"))?;
        if rows.is_empty() {
            return Ok(total);
        }
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let texts: Vec<Option<String>> = rows.iter().map(|r| r.get(1)).collect();
        let vectors: Vec<Option<String>> = vectors_for(pool, &cache, spec, &texts)
            .await?
            .into_iter()
            .map(vector_literal)
            .collect();
        let updated = client.execute(&update, &[&ids, &vectors]).await.context(&endpoint, || format!("store vectors of {table}"))?;
        if updated == 0 {
            return Err(Error::Data(format!("{table}: rows without a vector could not be updated")));
        }
        total += updated;
    }
}
