//! `pgshift verify --source sqlite:///app.db`: per table, row count and checksum of
//! canonical values on both engines (pgshift-sqlite's digest), streamed, never held.

use futures_util::{pin_mut, TryStreamExt};
use pgshift_postgres::error::Context;
use pgshift_postgres::ConnInfo;
use pgshift_sqlite::verify::{canonical_from_pg, column_types, digest, pg_select_expr, TableDigest};

use crate::error::{Error, Result};
use crate::sqlite_migrate::{on_sqlite, read_schema, table_matches_sqlite, SqliteOptions, SQLITE_SCHEMA};
use crate::state;
use crate::verify::{TableCheck, VerifyReport};

pub async fn verify_sqlite(opts: &SqliteOptions, target: &ConnInfo) -> Result<VerifyReport> {
    let dst_name = target.endpoint();
    let tables = read_schema(opts).await?;
    let dst = target.connect().await?;
    let source_name = format!("sqlite:{}", opts.path.display());
    let (run, computed) = state::newest_run_and_embeddings(&dst, dst_name, &source_name).await?;
    // Where the tables are: as asked, else where the source's run put them.
    let recorded = run.as_ref().map(|r| r.schema_map.target_schema(SQLITE_SCHEMA).to_string()).filter(|s| s != SQLITE_SCHEMA);
    let schema = opts.schema.clone().or(recorded).unwrap_or_else(|| "public".into());
    let mut checks = Vec::new();
    for mut table in tables {
        // A source column the run replaced with computed vectors has nothing to compare with.
        let not_compared: Vec<String> = computed
            .iter()
            .filter(|s| table_matches_sqlite(&s.table, &table.name))
            .map(|s| s.column.clone())
            .filter(|c| table.columns.iter().any(|x| &x.name == c))
            .collect();
        table.columns.retain(|c| !not_compared.contains(&c.name));
        let t = table.clone();
        let source = on_sqlite(&opts.path, &format!("reading {}", table.name), move |conn, path| Ok(digest(conn, path, &t)?)).await?;
        let name = format!("{schema}.{}", table.name);
        let types = column_types(&table);
        let exprs: Vec<String> = table.copy_columns().iter().zip(&types).map(|(c, t)| pg_select_expr(c, *t)).collect();
        let sql = format!("SELECT {} FROM {}", exprs.join(", "), pgshift_postgres::sql::qualified(&schema, &table.name));
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
        checks.push(TableCheck {
            table: name,
            source_rows: source.rows as i64,
            target_rows,
            matches: problem.is_none(),
            problem,
            mismatched_ranges: Vec::new(),
            ranges: 1,
            not_compared,
        });
    }
    Ok(VerifyReport { ok: checks.iter().all(|c| c.matches), tables: checks })
}
