//! Foreign keys declared by the user between tables that came from different
//! databases (`--foreign-key 'documents(asset_id) -> assets(id)'`): what such a key
//! is. `load::links` adds and validates them on the target.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeclaredForeignKey {
    /// `schema.table` (or `table` in public) holding the referencing columns.
    pub table: String,
    pub columns: Vec<String>,
    pub references: String,
    pub ref_columns: Vec<String>,
}

/// `schema.table` or `table` (in public) as (schema, table).
pub fn split_table(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((s, t)) => (s.to_string(), t.to_string()),
        None => ("public".to_string(), name.to_string()),
    }
}

/// The same, quoted for SQL.
pub fn qualified(name: &str) -> String {
    let (s, t) = split_table(name);
    pgshift_postgres::sql::qualified(&s, &t)
}

impl DeclaredForeignKey {
    /// `documents(asset_id) -> assets(id)`, schema-qualified names allowed.
    pub fn parse(text: &str) -> std::result::Result<DeclaredForeignKey, String> {
        let bad = || format!("foreign key {text:?}: write TABLE(COLUMNS) -> TABLE(COLUMNS), e.g. documents(asset_id) -> assets(id)");
        let (from, to) = text.split_once("->").ok_or_else(bad)?;
        let side = |s: &str| -> Option<(String, Vec<String>)> {
            let (table, rest) = s.trim().split_once('(')?;
            let cols: Vec<String> = rest.strip_suffix(')')?.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
            (!table.trim().is_empty() && !cols.is_empty()).then(|| (table.trim().to_string(), cols))
        };
        let ((table, columns), (references, ref_columns)) = (side(from).ok_or_else(bad)?, side(to).ok_or_else(bad)?);
        if columns.len() != ref_columns.len() {
            return Err(format!("foreign key {text:?}: {} columns reference {}", columns.len(), ref_columns.len()));
        }
        Ok(DeclaredForeignKey { table, columns, references, ref_columns })
    }

    pub fn name(&self) -> String {
        let (_, t) = split_table(&self.table);
        pgshift_postgres::sql::name_head(&format!("{t}_{}_fkey", self.columns.join("_")))
    }

    pub fn describe(&self) -> String {
        format!("{}({}) -> {}({})", self.table, self.columns.join(", "), self.references, self.ref_columns.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_keys_parse() {
        let fk = DeclaredForeignKey::parse("vectors.documents(asset_id) -> public.assets(id)").unwrap();
        assert_eq!((fk.table.as_str(), fk.columns.as_slice(), fk.references.as_str()), ("vectors.documents", &["asset_id".to_string()][..], "public.assets"));
        assert_eq!(fk.name(), "documents_asset_id_fkey");
        assert!(DeclaredForeignKey::parse("documents.asset_id -> assets.id").unwrap_err().contains("TABLE(COLUMNS)"));
        assert!(DeclaredForeignKey::parse("a(x, y) -> b(z)").unwrap_err().contains("2 columns reference 1"));
    }
}
