//! `--cast` on a PostgreSQL source: every value of a cast column is checked before
//! anything is written (what a cast is: `plan::casts`).

use pgshift_postgres::Session;
use pgshift_postgres::catalog::Table;
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::{quote_ident, quote_literal};

use crate::error::Result;

/// Values shown when a cast fails.
const SHOWN: i64 = 10;

/// Every value of every cast column must convert; the problems list the rows that do
/// not. Read-only SQL, so it works on a replica: `pg_input_is_valid` on PostgreSQL 16
/// and newer; before, a DO block that tries each value (a subtransaction per value,
/// which writes nothing) and reports the first ones that fail.
pub async fn check(src: &Session, tables: &[&Table]) -> Result<Vec<String>> {
    let src_name = src.endpoint();
    let mut problems = Vec::new();
    let mut version: Option<i32> = None;
    for t in tables.iter().filter(|t| t.holds_rows()) {
        for c in t.columns.iter().filter(|c| c.cast_to.is_some()) {
            let to = c.target_type();
            let v = match version {
                Some(v) => v,
                None => {
                    let v: i32 = src
                        .query_one("SELECT current_setting('server_version_num')::int", &[])
                        .await
                        .context(&src_name, || "read the server version".into())?
                        .get(0);
                    *version.insert(v)
                }
            };
            let col = quote_ident(&c.name);
            let key = t.primary_key.as_ref().map_or_else(|| "ctid".to_string(), |k| k.columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", "));
            let what = || format!("check that {}.{} converts to {to}", t.display_name(), c.name);
            let bad: Vec<String> = if v >= 160000 {
                let valid = format!("pg_input_is_valid({col}::text, {})", quote_literal(to));
                let sql = format!("SELECT ROW({key})::text, {col}::text FROM ONLY {} WHERE {col} IS NOT NULL AND NOT {valid} LIMIT {SHOWN}", t.qualified());
                let rows = src.query(&sql, &[]).await.context(&src_name, what)?;
                rows.iter().map(|r| format!("key {} = {:?}", r.get::<_, String>(0), r.get::<_, String>(1))).collect()
            } else {
                let block = format!(
                    "DO $pgshift$ DECLARE r record; bad text[] := '{{}}'; BEGIN \
                       FOR r IN SELECT ROW({key})::text AS k, {col}::text AS v FROM ONLY {} WHERE {col} IS NOT NULL LOOP \
                         BEGIN PERFORM r.v::{to}; \
                         EXCEPTION WHEN others THEN bad := bad || format('key %s = %s', r.k, to_json(r.v)); EXIT WHEN cardinality(bad) >= {SHOWN}; END; \
                       END LOOP; \
                       IF cardinality(bad) > 0 THEN RAISE EXCEPTION USING MESSAGE = array_to_string(bad, E'\\n'), ERRCODE = 'PGSCC'; END IF; \
                     END $pgshift$",
                    t.qualified()
                );
                match src.batch_execute(&block).await {
                    Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "PGSCC") => {
                        e.as_db_error().map(|d| d.message().lines().map(String::from).collect()).unwrap_or_default()
                    }
                    other => {
                        other.context(&src_name, what)?;
                        Vec::new()
                    }
                }
            };
            if !bad.is_empty() {
                problems.push(format!(
                    "--cast {}.{} to {to}: these values do not convert: {}; fix them on the source or leave the cast out",
                    t.display_name(),
                    c.name,
                    bad.join(", ")
                ));
            }
        }
    }
    Ok(problems)
}
