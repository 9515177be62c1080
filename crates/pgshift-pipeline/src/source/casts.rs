//! Columns whose type changes on the way (`--cast documents.asset_id=uuid`), as when
//! two databases that stored the same key differently are consolidated. The source
//! casts in its COPY select; every value is checked before anything is written.

use pgshift_postgres::catalog::{Catalog, Table};
use pgshift_postgres::error::Context;
use pgshift_postgres::schema_map::{same_type_name, SchemaMap};
use pgshift_postgres::sql::{quote_ident, quote_literal};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use super::select::table_matches;

#[derive(Clone, Debug, PartialEq)]
pub struct ColumnCast {
    pub table: String,
    pub column: String,
    pub to: String,
}

/// Values shown when a cast fails.
const SHOWN: i64 = 10;

impl ColumnCast {
    /// `TABLE.COLUMN=TYPE`, the table optionally schema-qualified.
    pub fn parse(text: &str) -> std::result::Result<ColumnCast, String> {
        let bad = || format!("--cast {text:?}: write TABLE.COLUMN=TYPE, e.g. documents.asset_id=uuid");
        let (target, to) = text.split_once('=').ok_or_else(bad)?;
        let (table, column) = target.trim().rsplit_once('.').ok_or_else(bad)?;
        let to = to.trim();
        if table.is_empty() || column.is_empty() || to.is_empty() || to.contains([';', '\'']) {
            return Err(bad());
        }
        Ok(ColumnCast { table: table.into(), column: column.into(), to: to.into() })
    }
}

/// Marks the catalog's columns with their target types; a cast naming no column is an error.
pub fn apply(catalog: &mut Catalog, casts: &[ColumnCast]) -> Result<()> {
    for cast in casts {
        let mut found = false;
        for t in catalog.tables.iter_mut().filter(|t| table_matches(t, &cast.table)) {
            if let Some(c) = t.columns.iter_mut().find(|c| c.name == cast.column) {
                c.cast_to = Some(cast.to.clone());
                found = true;
            }
        }
        if !found {
            return Err(Error::Input(format!("--cast {}.{}={}: no such column in the source", cast.table, cast.column, cast.to)));
        }
    }
    Ok(())
}

/// Every value of every cast column must convert; the problems list the rows that do
/// not. Read-only SQL, so it works on a replica: `pg_input_is_valid` on PostgreSQL 16
/// and newer; before, a DO block that tries each value (a subtransaction per value,
/// which writes nothing) and reports the first ones that fail.
pub async fn check(src: &Client, src_name: &str, tables: &[&Table]) -> Result<Vec<String>> {
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

/// For verify: a text column on the source that the target holds as another type is
/// compared as the target type (a cast made by migrate --cast).
pub fn follow_target_types(source: &mut Catalog, target: &Catalog, schema_map: &SchemaMap) {
    for t in &mut source.tables {
        let Some(tt) = target.table(schema_map.target_schema(&t.schema), &t.name) else { continue };
        for c in &mut t.columns {
            let textual = matches!(c.type_name.split('(').next(), Some("text" | "character varying" | "character"));
            if let Some(tc) = tt.columns.iter().find(|x| x.name == c.name) {
                if textual && tc.type_name != c.type_name && !tc.type_name.starts_with("character") && tc.type_name != "text" {
                    c.cast_to = Some(tc.type_name.clone());
                }
            }
        }
    }
}

/// Whether any run table's column has another type on the target than on the source
/// (then catch-up streams text, which the target converts).
pub fn types_differ(source: &Catalog, target_tables: &[&Table], left_out: &crate::run::store::LeftOut) -> bool {
    target_tables.iter().any(|tt| {
        let skipped = left_out.get(&tt.display_name());
        source.table(&tt.schema, &tt.name).is_some_and(|st| {
            st.columns.iter().filter(|sc| !skipped.is_some_and(|s| s.contains(&sc.name))).any(|sc| {
                tt.columns.iter().any(|tc| tc.name == sc.name && !same_type_name(&tc.type_name, &sc.type_name))
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_parse() {
        assert_eq!(
            ColumnCast::parse("public.documents.asset_id=uuid").unwrap(),
            ColumnCast { table: "public.documents".into(), column: "asset_id".into(), to: "uuid".into() }
        );
        assert!(ColumnCast::parse("documents=uuid").unwrap_err().contains("TABLE.COLUMN=TYPE"));
        assert!(ColumnCast::parse("d.c=uuid; DROP TABLE x").is_err());
    }
}
