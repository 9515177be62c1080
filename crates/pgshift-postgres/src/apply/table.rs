//! One replicated table as the apply sees it: the stream's column order mapped to the
//! target, its apply key, its staging table, and the SQL of each set-based step.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};

use crate::catalog::{Catalog, Column};
use crate::copy::CopyFormat;
use crate::error::PgError;
use crate::pgoutput::{Datum, Relation, Tuple};
use crate::sql::{column_list, qualified, quote_ident};

use super::net::Key;

const OP: &str = "_pgshift_op";
const MASK: &str = "_pgshift_mask";

#[derive(Clone)]
pub struct ApplyTable {
    pub relation: Relation,
    pub qualified: String,
    /// Positions (in the stream's column order) of the columns that identify a row;
    /// None for a table without a key (REPLICA IDENTITY FULL and no primary key).
    pub key: Option<Vec<usize>>,
    pub stage: String,
    names: Vec<String>,
    types: Vec<String>,
    /// GENERATED ALWAYS identity columns, which UPDATE may not set.
    always_identity: Vec<bool>,
    /// The target has unique or exclusion constraints (or unique indexes) besides the
    /// primary key: a batch's net effect, applied set-based in no particular row
    /// order, may collide where the source's order did not (two rows swapping a
    /// value), so its batches run under a savepoint with a source-order fallback.
    pub order_sensitive: bool,
}

impl ApplyTable {
    pub fn new(relation: Relation, target: &Catalog) -> Result<ApplyTable, PgError> {
        let display = format!("{}.{}", relation.schema, relation.name);
        let fail = |message: String| PgError::Protocol { endpoint: String::new(), message };
        let table = target.table(&relation.schema, &relation.name).ok_or_else(|| {
            fail(format!("changes arrive for table {display}, which the target does not have: create it on the target or remove it from the publication"))
        })?;
        let mut columns: Vec<&Column> = Vec::new();
        for c in &relation.columns {
            let col = table.copy_columns().find(|t| t.name == c.name).ok_or_else(|| {
                fail(format!(
                    "column {} of table {display} arrives from the source but the target has no such column: \
                     add it on the target (ALTER TABLE {} ADD COLUMN ...) and run pgshift follow again",
                    c.name,
                    table.qualified()
                ))
            })?;
            columns.push(col);
        }
        let position = |name: &str| relation.columns.iter().position(|c| c.name == name);
        let key = match relation.replica_identity {
            b'd' | b'i' => Some(relation.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect::<Vec<_>>()),
            b'f' => table.primary_key.as_ref().map(|pk| pk.columns.iter().filter_map(|c| position(c)).collect()),
            _ => {
                return Err(fail(format!(
                    "table {display} has REPLICA IDENTITY NOTHING, so its updates and deletes cannot be replicated: \
                     run on the source: ALTER TABLE {} REPLICA IDENTITY FULL (or DEFAULT with a primary key)",
                    table.qualified()
                )))
            }
        };
        let key = key.filter(|k| !k.is_empty());
        let order_sensitive = order_sensitive(target, table);
        Ok(ApplyTable {
            order_sensitive,
            qualified: qualified(&relation.schema, &relation.name),
            stage: format!("pg_temp.pgshift_stage_{}", relation.oid),
            names: relation.columns.iter().map(|c| c.name.clone()).collect(),
            types: columns.iter().map(|c| c.type_name.clone()).collect(),
            always_identity: columns.iter().map(|c| c.identity == "a").collect(),
            key,
            relation,
        })
    }

    pub fn error(&self, message: String) -> PgError {
        PgError::Protocol { endpoint: String::new(), message: format!("table {}: {message}", self.qualified) }
    }

    pub fn key_of(&self, t: &Tuple) -> Option<Key> {
        self.key.as_ref().map(|k| k.iter().map(|&i| t.get(i).and_then(|d| d.bytes().cloned())).collect())
    }

    /// A staging row for a delete: the key's values, NULL elsewhere.
    pub fn key_row(&self, key: &Key, format: CopyFormat) -> Tuple {
        let mut row = vec![Datum::Null; self.names.len()];
        for (&i, v) in self.key.as_ref().expect("keyed").iter().zip(key) {
            row[i] = match (v, format) {
                (None, _) => Datum::Null,
                (Some(b), CopyFormat::Binary) => Datum::Binary(b.clone()),
                (Some(b), CopyFormat::Text) => Datum::Text(b.clone()),
            };
        }
        row
    }

    /// Which columns a partial row carries: '1' sent, '0' unchanged.
    pub fn mask(&self, t: &Tuple) -> String {
        t.iter().map(|d| if *d == Datum::Unchanged { '0' } else { '1' }).collect()
    }

    fn cols(&self) -> String {
        column_list(self.names.iter().map(String::as_str))
    }

    pub fn copy_in_sql(&self, format: CopyFormat) -> String {
        format!("COPY {} ({}) FROM STDIN {}", self.qualified, self.cols(), format_option(format))
    }

    pub fn stage_copy_sql(&self, format: CopyFormat) -> String {
        format!("COPY {} ({}, {OP}, {MASK}) FROM STDIN {}", self.stage, self.cols(), format_option(format))
    }

    pub fn create_stage_sql(&self) -> String {
        format!(
            "DROP TABLE IF EXISTS {s}; CREATE TEMP TABLE {name} ON COMMIT DELETE ROWS AS SELECT {cols} FROM ONLY {q} WITH NO DATA; \
             ALTER TABLE {s} ADD COLUMN {OP} text, ADD COLUMN {MASK} text",
            s = self.stage,
            name = self.stage.trim_start_matches("pg_temp."),
            cols = self.cols(),
            q = self.qualified
        )
    }

    fn join(&self) -> String {
        let key = self.key.as_ref().expect("keyed");
        key.iter().map(|&i| format!("t.{c} = s.{c}", c = quote_ident(&self.names[i]))).collect::<Vec<_>>().join(" AND ")
    }

    /// Non-key columns an update may set, filtered by a mask when given.
    fn settable<'a>(&'a self, mask: Option<&'a str>) -> impl Iterator<Item = &'a str> + 'a {
        let key = self.key.clone().unwrap_or_default();
        self.names.iter().enumerate().filter_map(move |(i, n)| {
            let sent = mask.is_none_or(|m| m.as_bytes().get(i) == Some(&b'1'));
            (sent && !key.contains(&i) && !self.always_identity[i]).then_some(n.as_str())
        })
    }

    pub fn delete_sql(&self) -> String {
        format!("DELETE FROM ONLY {} t USING {} s WHERE s.{OP} = 'd' AND {}", self.qualified, self.stage, self.join())
    }

    fn update_sql(&self, op: &str, mask: Option<&str>) -> Option<String> {
        let sets: Vec<String> = self.settable(mask).map(|c| format!("{c} = s.{c}", c = quote_ident(c))).collect();
        if sets.is_empty() {
            return None;
        }
        let mask_filter = mask.map(|m| format!(" AND s.{MASK} = '{m}'")).unwrap_or_default();
        Some(format!(
            "UPDATE ONLY {} t SET {} FROM {} s WHERE s.{OP} = '{op}'{mask_filter} AND {}",
            self.qualified,
            sets.join(", "),
            self.stage,
            self.join()
        ))
    }

    /// Whole rows over rows that exist.
    pub fn set_sql(&self) -> Option<String> {
        self.update_sql("s", None)
    }

    pub fn patch_sql(&self, mask: &str) -> Option<String> {
        self.update_sql("p", Some(mask))
    }

    /// Whole rows that may or may not exist on the target yet.
    pub fn upsert_sql(&self) -> Option<String> {
        let key = self.key.as_ref().expect("keyed");
        let conflict = column_list(key.iter().map(|&i| self.names[i].as_str()));
        let sets: Vec<String> = self.settable(None).map(|c| format!("{c} = EXCLUDED.{c}", c = quote_ident(c))).collect();
        let action = if sets.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", sets.join(", ")) };
        Some(format!(
            "INSERT INTO {} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {} s WHERE s.{OP} = 's' ON CONFLICT ({conflict}) DO {action}",
            self.qualified,
            self.stage,
            cols = self.cols()
        ))
    }

    /// `col = $n::type` for every value of `t` that was sent, with its parameters.
    fn assignments(&self, t: &Tuple, format: CopyFormat, params: &mut Vec<RowParam>) -> Vec<String> {
        let mut out = Vec::new();
        for (i, d) in t.iter().enumerate() {
            if *d == Datum::Unchanged || self.always_identity[i] {
                continue;
            }
            params.push(RowParam::new(d, format));
            out.push(format!("{} = ${}::{}", quote_ident(&self.names[i]), params.len(), self.types[i]));
        }
        out
    }

    /// Finds one row equal to `old` in every sent column. Compared as text, because
    /// some types (json, point) have no equality operator.
    fn row_match(&self, old: &Tuple, format: CopyFormat, params: &mut Vec<RowParam>) -> String {
        let mut conds = Vec::new();
        for (i, d) in old.iter().enumerate() {
            if *d == Datum::Unchanged {
                continue;
            }
            params.push(RowParam::new(d, format));
            conds.push(format!("{}::text IS NOT DISTINCT FROM (${}::{})::text", quote_ident(&self.names[i]), params.len(), self.types[i]));
        }
        format!("ctid = (SELECT ctid FROM ONLY {} WHERE {} LIMIT 1)", self.qualified, conds.join(" AND "))
    }

    pub fn update_by_row(&self, old: &Tuple, new: &Tuple, format: CopyFormat) -> Option<(String, Vec<RowParam>)> {
        let mut params = Vec::new();
        let sets = self.assignments(new, format, &mut params);
        if sets.is_empty() {
            return None;
        }
        let cond = self.row_match(old, format, &mut params);
        Some((format!("UPDATE ONLY {} SET {} WHERE {cond}", self.qualified, sets.join(", ")), params))
    }

    pub fn delete_by_row(&self, old: &Tuple, format: CopyFormat) -> Option<(String, Vec<RowParam>)> {
        let mut params = Vec::new();
        let cond = self.row_match(old, format, &mut params);
        Some((format!("DELETE FROM ONLY {} WHERE {cond}", self.qualified), params))
    }

    /// One row, in source order (the fallback of a set-based batch); with `upsert`,
    /// whatever the key already holds is replaced.
    pub fn insert_row(&self, t: &Tuple, format: CopyFormat, upsert: bool) -> (String, Vec<RowParam>) {
        let mut params = Vec::new();
        let values: Vec<String> = t
            .iter()
            .enumerate()
            .map(|(i, d)| {
                params.push(RowParam::new(d, format));
                format!("${}::{}", params.len(), self.types[i])
            })
            .collect();
        let mut sql = format!("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES ({})", self.qualified, self.cols(), values.join(", "));
        if let (true, Some(key)) = (upsert, &self.key) {
            let conflict = column_list(key.iter().map(|&i| self.names[i].as_str()));
            let sets: Vec<String> = self.settable(None).map(|c| format!("{c} = EXCLUDED.{c}", c = quote_ident(c))).collect();
            let action = if sets.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", sets.join(", ")) };
            sql.push_str(&format!(" ON CONFLICT ({conflict}) DO {action}"));
        }
        (sql, params)
    }

    fn key_match(&self, key: Key, format: CopyFormat, params: &mut Vec<RowParam>) -> String {
        let columns = self.key.as_ref().expect("keyed");
        let conds: Vec<String> = columns
            .iter()
            .zip(key)
            .map(|(&i, v)| {
                params.push(RowParam(v, pg_format(format)));
                format!("{} = ${}::{}", quote_ident(&self.names[i]), params.len(), self.types[i])
            })
            .collect();
        conds.join(" AND ")
    }

    /// Deletes the row with this key.
    pub fn delete_by_key(&self, key: Key, format: CopyFormat) -> (String, Vec<RowParam>) {
        let mut params = Vec::new();
        let cond = self.key_match(key, format, &mut params);
        (format!("DELETE FROM ONLY {} WHERE {cond}", self.qualified), params)
    }

    /// A key as people read it: `(id)=(42)`, decoded for the common key types.
    pub fn describe_key(&self, key: &Key, format: CopyFormat) -> String {
        let columns = self.key.as_ref().expect("keyed");
        let names: Vec<&str> = columns.iter().map(|&i| self.names[i].as_str()).collect();
        let values: Vec<String> = columns.iter().zip(key).map(|(&i, v)| show_value(v.as_deref(), &self.types[i], format)).collect();
        format!("({})=({})", names.join(", "), values.join(", "))
    }

    /// Moves a row to a new key, keeping the columns the stream left unchanged.
    pub fn move_row(&self, old_key: Key, new: &Tuple, format: CopyFormat) -> (String, Vec<RowParam>) {
        let mut params = Vec::new();
        let sets = self.assignments(new, format, &mut params);
        let cond = self.key_match(old_key, format, &mut params);
        (format!("UPDATE ONLY {} SET {} WHERE {cond}", self.qualified, sets.join(", ")), params)
    }
}

/// Whether the target table (or a partitioned table above it, whose unique indexes
/// its partitions share) has unique or exclusion constraints, or unique indexes,
/// other than its primary key.
fn order_sensitive(target: &Catalog, table: &crate::catalog::Table) -> bool {
    let own = |t: &crate::catalog::Table| {
        t.constraints.iter().any(|c| c.kind == "u" || c.kind == "x") || t.indexes.iter().any(|i| i.definition.starts_with("CREATE UNIQUE INDEX"))
    };
    let mut current = Some(table);
    while let Some(t) = current {
        if own(t) {
            return true;
        }
        current = t.partition_of.as_ref().and_then(|(s, n, _)| target.table(s, n));
    }
    false
}

/// One value for an error message: text as it is; binary integers, uuids and text
/// decoded; anything else as hex.
fn show_value(v: Option<&[u8]>, type_name: &str, format: CopyFormat) -> String {
    let Some(b) = v else { return "NULL".into() };
    if format == CopyFormat::Text {
        return String::from_utf8_lossy(b).into_owned();
    }
    match (type_name, b.len()) {
        ("smallint", 2) => i16::from_be_bytes([b[0], b[1]]).to_string(),
        ("integer", 4) => i32::from_be_bytes(b.try_into().expect("4 bytes")).to_string(),
        ("bigint", 8) => i64::from_be_bytes(b.try_into().expect("8 bytes")).to_string(),
        ("uuid", 16) => {
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
        }
        (t, _) if t == "text" || t.starts_with("character") => String::from_utf8_lossy(b).into_owned(),
        _ => format!("\\x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    }
}

fn format_option(format: CopyFormat) -> &'static str {
    match format {
        CopyFormat::Binary => "(FORMAT binary)",
        CopyFormat::Text => "(FORMAT text)",
    }
}

fn pg_format(format: CopyFormat) -> Format {
    match format {
        CopyFormat::Binary => Format::Binary,
        CopyFormat::Text => Format::Text,
    }
}

/// A value passed to the server exactly as the stream sent it.
#[derive(Debug)]
pub struct RowParam(Option<Bytes>, Format);

impl RowParam {
    fn new(d: &Datum, format: CopyFormat) -> RowParam {
        RowParam(d.bytes().cloned(), pg_format(format))
    }
}

impl ToSql for RowParam {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(b) => {
                out.put_slice(b);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        self.1
    }

    to_sql_checked!();
}
