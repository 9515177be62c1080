//! Row counts and content checksums computed by the server, so verification never
//! pulls a table into memory. The checksum is an order-independent sum of each row's
//! md5 over its text form, read with [`crate::conn::STABLE_TEXT_SETTINGS`] so both
//! sides print values the same way.

use tokio_postgres::Client;

use crate::catalog::Table;
use crate::error::{Context, PgError};
use crate::sql::quote_ident;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Digest {
    pub rows: i64,
    /// Sum of the first 64 bits of each row's md5, as decimal text (a numeric).
    pub checksum: String,
}

pub fn digest_sql(t: &Table, columns: &[&str], predicate: Option<&str>) -> String {
    // A cast column is compared as the target holds it.
    let expr = |c: &str| t.columns.iter().find(|col| col.name == c).map_or_else(|| quote_ident(c), |col| col.select_expr());
    let row = columns.iter().map(|c| expr(c)).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT count(*), coalesce(sum(('x' || left(md5(ROW({row})::text), 16))::bit(64)::bigint::numeric), 0)::text \
         FROM ONLY {} {}",
        t.qualified(),
        predicate.map(|p| format!("WHERE {p}")).unwrap_or_default()
    )
}

pub async fn digest(
    client: &Client,
    endpoint: &str,
    t: &Table,
    columns: &[&str],
    predicate: Option<&str>,
) -> Result<Digest, PgError> {
    let sql = digest_sql(t, columns, predicate);
    let row = client.query_one(&sql, &[]).await.context(&endpoint, || format!("checksum {}", t.display_name()))?;
    Ok(Digest { rows: row.get(0), checksum: row.get(1) })
}
