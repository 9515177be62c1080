//! The plan: which tables move, how (binary or text COPY), and in which chunks.
//! Large tables are split into key ranges on an integer or uuid first key column,
//! otherwise into ctid (block) ranges.

use pgshift_postgres::catalog::{Catalog, Table};
use pgshift_postgres::copy::CopyFormat;
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::{quote_ident, quote_literal};
use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    Whole,
    IntKey,
    UuidKey,
    /// Block ranges: rows can move between them when updated, so a resumed run
    /// re-copies such a table whole (see docs/ARCHITECTURE.md).
    Ctid,
}

impl SplitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitKind::Whole => "whole",
            SplitKind::IntKey => "intkey",
            SplitKind::UuidKey => "uuidkey",
            SplitKind::Ctid => "ctid",
        }
    }

    pub fn parse(s: &str) -> SplitKind {
        match s {
            "intkey" => SplitKind::IntKey,
            "uuidkey" => SplitKind::UuidKey,
            "ctid" => SplitKind::Ctid,
            _ => SplitKind::Whole,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Chunk {
    pub no: i32,
    /// SQL condition over the source table; None = the whole table.
    pub predicate: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TablePlan {
    /// The table on the source.
    pub table: Table,
    /// The same table as the target has it (another schema with --map-schema).
    pub target: Table,
    pub format: CopyFormat,
    pub split: SplitKind,
    pub chunks: Vec<Chunk>,
}

impl TablePlan {
    pub fn name(&self) -> String {
        self.table.display_name()
    }
}

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

/// Tables of the catalog that the patterns select (all when there are none); a
/// pattern that selects nothing is an error, so a typo cannot silently skip data.
/// Tables matching any pattern (all when none is given) and no `!pattern`.
pub fn select_tables<'a>(catalog: &'a Catalog, patterns: &[String]) -> Result<Vec<&'a Table>> {
    let (excludes, includes): (Vec<&str>, Vec<&str>) =
        patterns.iter().map(String::as_str).partition(|p| p.starts_with('!'));
    let excludes: Vec<&str> = excludes.iter().map(|p| &p[1..]).collect();
    for p in includes.iter().chain(&excludes) {
        if !catalog.tables.iter().any(|t| table_matches(t, p)) {
            return Err(Error::Input(format!(
                "--tables {p:?} matches no table in the source (patterns match schema.table or table, with * and ?)"
            )));
        }
    }
    let chosen: Vec<&Table> = catalog
        .tables
        .iter()
        .filter(|t| includes.is_empty() || includes.iter().any(|p| table_matches(t, p)))
        .filter(|t| !excludes.iter().any(|p| table_matches(t, p)))
        .collect();
    Ok(with_partition_parents(catalog, chosen))
}

/// The chosen tables plus every partitioned parent of a chosen partition (the target
/// needs the parent to exist), in catalog order: parents before partitions.
pub fn with_partition_parents<'a>(catalog: &'a Catalog, mut chosen: Vec<&'a Table>) -> Vec<&'a Table> {
    let mut i = 0;
    while i < chosen.len() {
        if let Some(parent) = chosen[i].partition_of.as_ref().and_then(|(s, n, _)| catalog.table(s, n)) {
            if !chosen.iter().any(|t| t.oid == parent.oid) {
                chosen.push(parent);
            }
        }
        i += 1;
    }
    catalog.tables.iter().filter(|t| chosen.iter().any(|c| c.oid == t.oid)).collect()
}

pub fn table_matches(t: &Table, pattern: &str) -> bool {
    if pattern.contains('.') {
        glob(pattern, &t.display_name())
    } else {
        glob(pattern, &t.name)
    }
}

/// `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Decides format and chunks for each table that holds rows. `target` is the
/// catalog as the target has it (see `SchemaMap::target_view`).
pub async fn plan_tables(source: &Client, endpoint: &str, tables: &[&Table], target: &Catalog, options: &PlanOptions) -> Result<Vec<TablePlan>> {
    let mut plans = Vec::new();
    for t in tables.iter().filter(|t| t.holds_rows()) {
        let (split, chunks) = chunk_table(source, endpoint, t, options.split_rows).await?;
        let target = target.same_tables(&[t]).pop().unwrap_or(t).clone();
        plans.push(TablePlan { table: (*t).clone(), target, format: CopyFormat::for_table(t), split, chunks });
    }
    // Largest first keeps the workers busy to the end.
    plans.sort_by_key(|p| std::cmp::Reverse(p.table.size_bytes));
    Ok(plans)
}

/// One chunk for a table of at most `split_rows` (estimated) rows, else ranges of
/// about that many rows. Verify calls this too, to check the ranges the copy used.
pub async fn chunk_table(source: &Client, endpoint: &str, t: &Table, split_rows: u64) -> Result<(SplitKind, Vec<Chunk>)> {
    let pieces = (t.row_estimate.max(0) as u64).div_ceil(split_rows.max(1));
    if pieces <= 1 {
        return Ok(whole_table());
    }
    split_table(source, endpoint, t, pieces).await
}

fn whole_table() -> (SplitKind, Vec<Chunk>) {
    (SplitKind::Whole, vec![Chunk { no: 0, predicate: None }])
}

async fn split_table(source: &Client, endpoint: &str, t: &Table, pieces: u64) -> Result<(SplitKind, Vec<Chunk>)> {
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

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob("public.*", "public.users"));
        assert!(glob("doc?", "docs"));
        assert!(glob("*", "anything"));
        assert!(!glob("public.*", "sales.users"));
        assert!(!glob("doc?", "documents"));
        assert!(glob("*_log*", "app_log_2024"));
    }
}
