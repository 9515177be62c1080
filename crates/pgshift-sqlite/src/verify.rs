//! Verify across engines: per table a row count and an order-independent sum of
//! row hashes over canonical values ([`PgValue::canonical`]). The PostgreSQL side
//! reads each column as text ([`pg_select_expr`]) and canonicalises it the same way.

use std::path::Path;

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::encode::{canonical_json, convert, PgValue};
use crate::schema::Table;
use crate::types::PgType;
use crate::{quote, read_error, Result, SqliteError};

/// Count and checksum of a table's rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableDigest {
    pub rows: u64,
    pub checksum: u64,
}

impl TableDigest {
    pub fn add(&mut self, fields: &[Option<String>]) {
        let mut h = Sha256::new();
        for f in fields {
            match f {
                Some(v) => {
                    h.update([1u8]);
                    h.update(v.as_bytes());
                }
                None => h.update([0u8]),
            }
            h.update([0x1f]);
        }
        let d = h.finalize();
        self.rows += 1;
        self.checksum = self.checksum.wrapping_add(u64::from_be_bytes(d[..8].try_into().unwrap()));
    }
}

/// The types of the columns in copy order.
pub fn column_types(table: &Table) -> Vec<PgType> {
    let mut types: Vec<PgType> = table.columns.iter().map(|c| c.pg).collect();
    if table.fts5 {
        types.insert(0, PgType::Bigint);
    }
    types
}

/// The SQLite side. Rows that would be rejected by the load are skipped here too.
pub fn digest(conn: &Connection, path: &Path, table: &Table) -> Result<TableDigest> {
    let err = |e| read_error(path, e);
    let cols: Vec<String> = table.copy_columns().iter().map(|c| quote(c)).collect();
    let types = column_types(table);
    let mut stmt = conn.prepare(&format!("SELECT {} FROM {}", cols.join(", "), quote(&table.name))).map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut digest = TableDigest::default();
    'rows: while let Some(row) = rows.next().map_err(err)? {
        let mut fields = Vec::with_capacity(types.len());
        for (i, t) in types.iter().enumerate() {
            match convert(row.get_ref(i).map_err(err)?, *t) {
                Ok(v) => fields.push(v.map(|v| v.canonical())),
                Err(_) => continue 'rows,
            }
        }
        digest.add(&fields);
    }
    Ok(digest)
}

/// How PostgreSQL should show a column for [`canonical_from_pg`].
pub fn pg_select_expr(column: &str, t: PgType) -> String {
    let c = format!("\"{}\"", column.replace('"', "\"\""));
    match t {
        // Microseconds since 2000-01-01, as PgValue::Timestamp counts them.
        PgType::Timestamptz => format!("((extract(epoch FROM {c}) - 946684800) * 1000000)::int8::text"),
        PgType::Bytea => format!("encode({c}, 'hex')"),
        _ => format!("{c}::text"),
    }
}

/// A value as PostgreSQL showed it (through [`pg_select_expr`]), canonical.
pub fn canonical_from_pg(text: &str, t: PgType) -> Result<String> {
    let bad = |what: &str| SqliteError::Input(format!("unexpected {what} from PostgreSQL: {text:?}"));
    Ok(match t {
        PgType::Double => PgValue::Float(text.parse().map_err(|_| bad("double"))?).canonical(),
        // boolean::text is true/false.
        PgType::Boolean => PgValue::Bool(text == "true").canonical(),
        PgType::Jsonb => canonical_json(&serde_json::from_str(text).map_err(|_| bad("jsonb"))?).to_string(),
        // vector::text is [1,2.5,-3]: JSON, and each value is the float4 it shows.
        PgType::Vector(_) => PgValue::Vector(serde_json::from_str(text).map_err(|_| bad("vector"))?).canonical(),
        // numeric(p,s)::text shows exactly s decimals, as PgValue::Numeric holds them.
        PgType::Numeric(..) => text.to_string(),
        _ => text.to_string(),
    })
}
