//! Vectors during catch-up. On the target, a trigger clears a row's vector when an
//! applied update changes its text (inserted rows arrive without one); before each
//! catch-up transaction commits, the rows without a vector get one, in that same
//! transaction, so a vector is never older than its text and a restart redoes
//! nothing twice. Updates that leave the text alone keep their vector.

use pgshift_postgres::Session;
use pgshift_postgres::catalog::Table;
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::{name_head, name_tail, quote_ident};

use super::{has_text_sql, vector_literal, vectors_for, Cache, EmbedPool, EmbeddingSpec, Keeper};
use crate::error::{Error, Result};
use crate::run::store::Store;

/// Rows re-embedded per statement while a transaction is being committed.
const ROWS_PER_ROUND: i64 = 1000;

/// Names derived from the table's OID-free identity, stable across runs.
fn function_name(t: &Table, spec: &EmbeddingSpec, keeper: Keeper) -> String {
    let name = name_head(&format!("{}_{}_{}_{}", keeper.word(), t.schema, t.name, spec.column));
    format!("pgshift.{}", quote_ident(&name))
}

fn pending_index(t: &Table, spec: &EmbeddingSpec, keeper: Keeper) -> String {
    name_tail(&format!("{}_{}_{}", t.name, spec.column, keeper.index_suffix()))
}

/// A trigger (fired by replication sessions too: ENABLE ALWAYS) that clears the
/// spec's column when an update changes the row's text. Idempotent.
pub fn trigger_ddl(t: &Table, spec: &EmbeddingSpec, keeper: Keeper) -> Vec<String> {
    let (table, col, function, trigger) = (t.qualified(), quote_ident(&spec.column), function_name(t, spec, keeper), keeper.column_trigger());
    let text_of = |row: &str| format!("(SELECT ({})::text FROM (SELECT {row}.*) AS r)", spec.text);
    vec![
        format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgshift$ \
             BEGIN IF {} IS DISTINCT FROM {} THEN NEW.{col} := NULL; END IF; RETURN NEW; END $pgshift$",
            text_of("NEW"),
            text_of("OLD")
        ),
        format!("DROP TRIGGER IF EXISTS {trigger} ON {table}"),
        format!("CREATE TRIGGER {trigger} BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()"),
        format!("ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger}"),
    ]
}

pub fn drop_trigger_ddl(t: &Table, spec: &EmbeddingSpec, keeper: Keeper) -> Vec<String> {
    vec![
        format!("DROP TRIGGER IF EXISTS {} ON {}", keeper.column_trigger(), t.qualified()),
        format!("DROP FUNCTION IF EXISTS {}()", function_name(t, spec, keeper)),
    ]
}

/// The trigger and a partial index that finds rows without a vector quickly.
/// `with_text`: the index holds only rows that have text (when the text expression is
/// immutable, as index predicates must be), so rows that never get a vector cost a
/// long-running keeper nothing.
pub fn stale_ddl(t: &Table, spec: &EmbeddingSpec, keeper: Keeper, with_text: bool) -> Vec<String> {
    let col = quote_ident(&spec.column);
    let mut out = trigger_ddl(t, spec, keeper);
    let text = if with_text { format!(" AND {}", has_text_sql(spec)) } else { String::new() };
    out.push(format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} (({col} IS NULL)) WHERE {col} IS NULL{text}",
        quote_ident(&pending_index(t, spec, keeper)),
        t.qualified()
    ));
    out
}

/// Catch-up's [`stale_ddl`].
pub fn catchup_ddl(t: &Table, spec: &EmbeddingSpec) -> Vec<String> {
    stale_ddl(t, spec, Keeper::CatchUp, false)
}

/// Undoes [`stale_ddl`] (catch-up's at the cutover: from then on the application, or vectorize, writes vectors).
pub fn drop_stale_ddl(t: &Table, spec: &EmbeddingSpec, keeper: Keeper) -> Vec<String> {
    let mut out = drop_trigger_ddl(t, spec, keeper);
    out.push(format!("DROP INDEX IF EXISTS {}.{}", quote_ident(&t.schema), quote_ident(&pending_index(t, spec, keeper))));
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
    let mut total = 0;
    loop {
        match embed_round(client, pool, column, false).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

/// One round of [`embed_pending`]: up to [`ROWS_PER_ROUND`] rows. `others_write`: the
/// rows may change while their vectors are computed (vectorize, outside a
/// transaction): a vector is stored only into the row version it was computed for
/// (same ctid, still without a vector), and a row changed meanwhile stays pending for
/// the next round.
pub async fn embed_round(client: &Session, pool: &EmbedPool, column: VectorColumn<'_>, others_write: bool) -> Result<u64> {
    let endpoint = client.endpoint();
    let (table, col, spec) = (column.table.qualified(), quote_ident(&column.spec.column), column.spec);
    let select = format!(
        "SELECT ctid::text, ({})::text FROM ONLY {table} WHERE {col} IS NULL AND {} LIMIT {ROWS_PER_ROUND}",
        spec.text,
        has_text_sql(spec)
    );
    let condition = format!("{col} IS NULL");
    let update = column.store_by_ctid_sql(others_write.then_some(condition.as_str()));
    let cache = Cache { store: Store::new(client) };
    let rows = client.query(&select, &[]).await.context(&endpoint, || format!("find rows of {table} without a vector"))?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let texts: Vec<Option<String>> = rows.iter().map(|r| r.get(1)).collect();
    let vectors: Vec<Option<String>> = vectors_for(pool, &cache, spec, &texts).await?.into_iter().map(vector_literal).collect();
    let updated = client.execute(&update, &[&ids, &vectors]).await.context(&endpoint, || format!("store vectors of {table}"))?;
    if updated == 0 && !others_write {
        return Err(Error::Data(format!("{table}: rows without a vector could not be updated")));
    }
    // Rows changed meanwhile count as done for this round: the next one finds them.
    Ok(rows.len() as u64)
}
