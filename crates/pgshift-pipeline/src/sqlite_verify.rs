//! `pgshift verify --source sqlite:///app.db`: per table, row count and checksum of
//! canonical values on both engines (pgshift-sqlite's digest), streamed, never held.

use futures_util::{pin_mut, TryStreamExt};
use pgshift_postgres::error::Context;
use pgshift_postgres::ConnInfo;
use pgshift_sqlite::verify::{canonical_from_pg, column_types, digest, pg_select_expr, TableDigest};

use crate::error::{Error, Result};
use crate::sqlite_migrate::{read_schema, SqliteOptions};
use crate::verify::{TableCheck, VerifyReport};

pub async fn verify_sqlite(opts: &SqliteOptions, target: &ConnInfo) -> Result<VerifyReport> {
    let dst_name = target.endpoint();
    let tables = read_schema(opts).await?;
    let dst = target.connect().await?;
    let mut checks = Vec::new();
    for table in tables {
        let (path, t) = (opts.path.clone(), table.clone());
        let source = tokio::task::spawn_blocking(move || {
            let conn = pgshift_sqlite::open(&path)?;
            digest(&conn, &path, &t)
        })
        .await
        .map_err(|e| Error::State(format!("reading {}: {e}", table.name)))??;
        let name = format!("public.{}", table.name);
        let types = column_types(&table);
        let exprs: Vec<String> = table.copy_columns().iter().zip(&types).map(|(c, t)| pg_select_expr(c, *t)).collect();
        let sql = format!("SELECT {} FROM public.{}", exprs.join(", "), pgshift_postgres::sql::quote_ident(&table.name));
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
        });
    }
    Ok(VerifyReport { ok: checks.iter().all(|c| c.matches), tables: checks })
}
