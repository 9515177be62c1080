//! Verify a SQLite source: per table, row count and checksum of canonical values on
//! both engines (pgshift-sqlite's digest), streamed, never held; `--jobs` tables at once.

use std::sync::Arc;

use futures_util::{pin_mut, TryStreamExt};
use pgshift_postgres::Session;
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::{display_qualified, qualified};
use pgshift_postgres::ConnInfo;
use pgshift_sqlite::schema::Table;
use pgshift_sqlite::verify::{canonical_from_pg, column_types, digest, pg_select_expr, TableDigest};

use super::{not_compared, TableCheck, VerifyOptions, VerifyReport};
use crate::error::{Error, Result};
use crate::run::store::Store;
use crate::source::sqlite::{on_sqlite, table_matches_sqlite, SqliteSource, SQLITE_SCHEMA};
use crate::workers::run_workers;

pub async fn verify_sqlite(source: &SqliteSource, target: &ConnInfo, opts: &VerifyOptions) -> Result<VerifyReport> {
    let tables = source.select(&opts.patterns).await?;
    let dst = target.session().await?;
    let (run, computed) = Store::new(&dst).newest_run_and_embeddings(crate::source::LoadSource::name(source)).await?;
    // Where the tables are: as asked, else where the source's run put them.
    let schema = match (opts.schema_map.is_empty(), &run) {
        (false, _) => crate::source::sqlite::target_schema(&opts.schema_map)?,
        (true, Some(run)) => run.schema_map.target_schema(SQLITE_SCHEMA).to_string(),
        (true, None) => SQLITE_SCHEMA.to_string(),
    };
    let schema = Arc::new(if schema == SQLITE_SCHEMA { "public".to_string() } else { schema });
    let mut work = Vec::new();
    for mut table in tables {
        // A source column the run replaced with computed vectors has nothing to compare with.
        let skipped = not_compared(&computed, |p| table_matches_sqlite(p, &table.name), table.columns.iter().map(|c| c.name.as_str()));
        table.columns.retain(|c| !skipped.contains(&c.name));
        work.push((table, skipped));
    }
    let path = source.path().to_path_buf();
    let checks = run_workers(opts.jobs, work, |queue| {
        let (target, path, schema) = (target.clone(), path.clone(), schema.clone());
        async move {
            let dst = target.session().await?;
            let mut checks = Vec::new();
            while let Some((table, skipped)) = queue.pop() {
                checks.push(check_table(&path, &dst, &schema, table, skipped).await?);
            }
            Ok(checks)
        }
    })
    .await?;
    let mut checks: Vec<TableCheck> = checks.into_iter().flatten().collect();
    checks.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(VerifyReport::new(checks))
}

/// One table: the source's digest on a blocking thread, the target's from its rows.
async fn check_table(path: &std::path::Path, dst: &Session, schema: &str, table: Table, not_compared: Vec<String>) -> Result<TableCheck> {
    let dst_name = dst.endpoint();
    let t = table.clone();
    let source = on_sqlite(path, &format!("reading {}", table.name), move |conn, path| Ok(digest(conn, path, &t)?)).await?;
    let types = column_types(&table);
    let exprs: Vec<String> = table.copy_columns().iter().zip(&types).map(|(c, t)| pg_select_expr(c, *t)).collect();
    let sql = format!("SELECT {} FROM {}", exprs.join(", "), qualified(schema, &table.name));
    let mut target_digest = TableDigest::default();
    let result = async {
        let rows = dst.query_raw(&sql, std::iter::empty::<i32>()).await.context(&dst_name, || sql.clone())?;
        pin_mut!(rows);
        while let Some(row) = rows.try_next().await.context(&dst_name, || sql.clone())? {
            let mut fields = Vec::with_capacity(types.len());
            for (i, t) in types.iter().enumerate() {
                let text: Option<String> = row.get(i);
                fields.push(text.map(|v| canonical_from_pg(&v, *t)).transpose()?);
            }
            target_digest.add(&fields);
        }
        Ok::<_, Error>(())
    }
    .await;
    let (target_rows, problem) = match result {
        Ok(()) if target_digest == source => (Some(target_digest.rows as i64), None),
        Ok(()) if target_digest.rows != source.rows => (Some(target_digest.rows as i64), Some("row counts differ".to_string())),
        Ok(()) => (Some(target_digest.rows as i64), Some("same row count, different content".to_string())),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(TableCheck {
        table: format!("{schema}.{}", table.name),
        qualified: display_qualified(schema, &table.name),
        source_rows: source.rows as i64,
        target_rows,
        matches: problem.is_none(),
        problem,
        mismatched_ranges: Vec::new(),
        ranges: 1,
        not_compared,
    })
}
