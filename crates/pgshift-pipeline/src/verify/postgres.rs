//! Verify a PostgreSQL source: row counts and content checksums per table, per key
//! range for large tables (the copy's ranges), computed on both servers at once.

use std::sync::Arc;

use pgshift_postgres::catalog::{self, Table};
use pgshift_postgres::checksum::digest;
use pgshift_postgres::ConnInfo;

use super::{not_compared, RangeCheck, TableCheck, VerifyOptions, VerifyReport};
use crate::error::Result;
use crate::plan::chunks::SplitKind;
use crate::plan::select::{select_tables, table_matches};
use crate::run::store::Store;
use crate::source::chunks::chunk_table;
use crate::workers::run_workers;

struct Unit {
    /// The table on the source, and as the target has it.
    table: Arc<(Table, Table)>,
    /// The columns compared.
    columns: Arc<Vec<String>>,
    range: Option<String>,
}

pub async fn verify_postgres(source: &ConnInfo, target: &ConnInfo, opts: &VerifyOptions) -> Result<VerifyReport> {
    let src = source.session().await?;
    let dst = target.session().await?;
    let (run, computed) = Store::new(&dst).newest_run_and_embeddings(source.endpoint()).await?;
    let schema_map = match (opts.schema_map.is_empty(), &run) {
        (true, Some(run)) => run.schema_map.clone(),
        _ => opts.schema_map.clone(),
    };
    let mut catalog = catalog::inspect(&src).await?;
    // Columns migrate cast (text -> uuid) are compared as the target holds them.
    crate::plan::casts::follow_target_types(&mut catalog, &catalog::inspect(&dst).await?, &schema_map);
    let view = schema_map.target_view(&catalog);
    let tables = select_tables(&catalog, &opts.patterns)?;
    let made_by_run = super::made_by_run(&computed, |pattern| catalog.tables.iter().find(|t| table_matches(t, pattern)).map(|t| t.schema.clone()));
    let mut checks = Vec::new();
    let mut units = Vec::new();
    let mut skipped = Vec::new();
    for t in tables.into_iter().filter(|t| t.holds_rows()) {
        if made_by_run.contains(&t.display_name()) {
            skipped.push(t.display_name());
            continue;
        }
        let tt = view.same_tables(&[t])[0];
        // A partition's vectors come from its parent's spec.
        let parent = t.partition_of.as_ref().and_then(|(s, n, _)| catalog.table(s, n));
        let names = |pattern: &str| [Some(t), parent].into_iter().flatten().any(|x| table_matches(x, pattern));
        let not_compared = not_compared(&computed, names, t.columns.iter().map(|c| c.name.as_str()));
        let columns: Vec<String> = t.columns.iter().map(|c| c.name.clone()).filter(|c| !not_compared.contains(c)).collect();
        let exists = catalog::relation_exists(&dst, &tt.schema, &tt.name).await?;
        let mut check = TableCheck {
            table: t.display_name(),
            qualified: pgshift_postgres::sql::display_qualified(&t.schema, &t.name),
            source_rows: 0,
            target_rows: None,
            matches: exists,
            problem: (!exists).then(|| format!("missing on the target (looked for {})", tt.display_name())),
            mismatched_ranges: Vec::new(),
            ranges: 0,
            not_compared,
        };
        // Only key ranges hold the same rows on both sides; block ranges do not.
        let ranges: Vec<Option<String>> = match chunk_table(&src, t, opts.split_rows).await? {
            (SplitKind::IntKey | SplitKind::UuidKey, chunks) => chunks.into_iter().map(|c| c.predicate).collect(),
            _ => vec![None],
        };
        check.ranges = ranges.len();
        let (table, columns) = (Arc::new((t.clone(), tt.clone())), Arc::new(columns));
        for range in ranges {
            units.push(Unit { table: table.clone(), columns: columns.clone(), range });
        }
        checks.push(check);
    }
    let done = run_workers(opts.jobs, units, |queue| {
        let (source, target) = (source.clone(), target.clone());
        async move {
            let (src, dst) = (source.session().await?, target.session().await?);
            let mut results = Vec::new();
            while let Some(unit) = queue.pop() {
                let (table, target_table) = &*unit.table;
                let columns: Vec<&str> = unit.columns.iter().map(String::as_str).collect();
                let range = unit.range.as_deref();
                let (s, d) = tokio::join!(
                    digest(&src, source.endpoint(), table, &columns, range),
                    digest(&dst, target.endpoint(), target_table, &columns, range)
                );
                // A table missing on the target has no digest there.
                results.push((table.display_name(), RangeCheck { range: unit.range.clone(), source: s?, target: d.ok() }));
            }
            Ok(results)
        }
    })
    .await?;
    for (table, range) in done.into_iter().flatten() {
        let check = checks.iter_mut().find(|c| c.table == table).expect("unit of a listed table");
        check.source_rows += range.source.rows;
        if let Some(t) = &range.target {
            *check.target_rows.get_or_insert(0) += t.rows;
        }
        if range.target.as_ref() != Some(&range.source) {
            check.matches = false;
            check.mismatched_ranges.push(range);
        }
    }
    for c in &mut checks {
        c.mismatched_ranges.sort_by(|a, b| a.range.cmp(&b.range));
    }
    let mut report = VerifyReport::new(checks);
    report.made_by_run = skipped;
    Ok(report)
}
