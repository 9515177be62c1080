//! Columns whose type changes on the way (`--cast documents.asset_id=uuid`), as when
//! two databases that stored the same key differently are consolidated. The source
//! casts in its COPY select; every value is checked before anything is written
//! (`source::casts::check`). Here: what a cast is, and how it marks a catalog.

use pgshift_postgres::catalog::{Catalog, Table};
use pgshift_postgres::schema_map::{same_type_name, SchemaMap};

use super::select::table_matches;
use super::LeftOut;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct ColumnCast {
    pub table: String,
    pub column: String,
    pub to: String,
}

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
            return Err(Error::Setting(format!("--cast {}.{}={}: no such column in the source", cast.table, cast.column, cast.to)));
        }
    }
    Ok(())
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
pub fn types_differ(source: &Catalog, target_tables: &[&Table], left_out: &LeftOut) -> bool {
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
