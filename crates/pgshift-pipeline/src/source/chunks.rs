//! How a PostgreSQL table is read in pieces: large tables are split into key ranges
//! on an integer or uuid first key column, otherwise into ctid (block) ranges. Verify
//! uses the same ranges, so a mismatch points at one.

use pgshift_postgres::Session;
use pgshift_postgres::catalog::Table;
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::{quote_ident, quote_literal};

use crate::error::Result;
use crate::plan::chunks::{Chunk, SplitKind};

/// One chunk for a table of at most `split_rows` (estimated) rows, else ranges of
/// about that many rows. Verify calls this too, to check the ranges the copy used.
pub async fn chunk_table(source: &Session, t: &Table, split_rows: u64) -> Result<(SplitKind, Vec<Chunk>)> {
    let pieces = (t.row_estimate.max(0) as u64).div_ceil(split_rows.max(1));
    if pieces <= 1 {
        return Ok(whole_table());
    }
    split_table(source, t, pieces).await
}

fn whole_table() -> (SplitKind, Vec<Chunk>) {
    (SplitKind::Whole, vec![Chunk { no: 0, predicate: None }])
}

async fn split_table(source: &Session, t: &Table, pieces: u64) -> Result<(SplitKind, Vec<Chunk>)> {
    let endpoint = source.endpoint();
    let key = t.primary_key.as_ref().map(|k| (k.columns[0].clone(), k.first_type.as_str()));
    let (kind, column, bounds): (SplitKind, String, Vec<String>) = match key {
        Some((col, "smallint" | "integer" | "bigint")) => {
            let sql = format!("SELECT min({c})::int8, max({c})::int8 FROM ONLY {}", t.qualified(), c = quote_ident(&col));
            let row = source.query_one(&sql, &[]).await.context(&endpoint, || format!("find key range of {}", t.display_name()))?;
            let (lo, hi): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
            let (Some(lo), Some(hi)) = (lo, hi) else {
                return Ok(whole_table());
            };
            let span = (hi as i128 - lo as i128 + 1).max(1);
            let bounds = (1..pieces as i128).map(|i| (lo as i128 + span * i / pieces as i128).to_string()).collect();
            (SplitKind::IntKey, quote_ident(&col), bounds)
        }
        Some((col, "uuid")) => {
            let bounds = (1..pieces as u128)
                .map(|i| {
                    let v = (u128::MAX / pieces as u128) * i;
                    let h = format!("{v:032x}");
                    quote_literal(&format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
                        + "::uuid"
                })
                .collect();
            (SplitKind::UuidKey, quote_ident(&col), bounds)
        }
        _ => {
            let sql = format!(
                "SELECT (pg_relation_size({}::regclass) / current_setting('block_size')::int)::int8",
                quote_literal(&t.qualified())
            );
            let row = source.query_one(&sql, &[]).await.context(&endpoint, || format!("size {}", t.display_name()))?;
            let blocks: i64 = row.get(0);
            let pieces = pieces.min(blocks.max(1) as u64);
            let bounds = (1..pieces as i64).map(|i| format!("'({},0)'::tid", blocks * i / pieces as i64)).collect();
            (SplitKind::Ctid, "ctid".into(), bounds)
        }
    };
    let mut bounds = bounds;
    bounds.dedup();
    if bounds.is_empty() {
        return Ok(whole_table());
    }
    let mut chunks = Vec::with_capacity(bounds.len() + 1);
    for i in 0..=bounds.len() {
        let predicate = match (i.checked_sub(1).map(|j| &bounds[j]), bounds.get(i)) {
            (None, Some(hi)) => format!("{column} < {hi}"),
            (Some(lo), Some(hi)) => format!("{column} >= {lo} AND {column} < {hi}"),
            (Some(lo), None) => format!("{column} >= {lo}"),
            (None, None) => unreachable!(),
        };
        chunks.push(Chunk { no: i as i32, predicate: Some(predicate) });
    }
    Ok((kind, chunks))
}

