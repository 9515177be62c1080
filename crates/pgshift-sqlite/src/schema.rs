//! What a SQLite file holds: tables with columns, keys, foreign keys, indexes and
//! FTS5 virtual tables (whose shadow tables are skipped), each column with the
//! PostgreSQL type it becomes.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use crate::types::{flag_reason, default_sql, from_declared, refine, PgType, Stored};
use crate::{quote, read_error, Result, SqliteError};

#[derive(Clone, Debug, Serialize)]
pub struct Column {
    pub name: String,
    pub declared: String,
    pub not_null: bool,
    pub pg: PgType,
    /// The default as PostgreSQL SQL (None when there is none or it cannot be carried).
    pub default: Option<String>,
    /// Why the type was chosen when it is not the declared type's.
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub table: String,
    pub references: Vec<String>,
    pub on_delete: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Index {
    pub name: String,
    pub columns: Vec<String>,
    pub unique: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// The `INTEGER PRIMARY KEY` column (an alias of the rowid): an identity on the target.
    pub rowid_alias: Option<String>,
    pub foreign_keys: Vec<ForeignKey>,
    pub indexes: Vec<Index>,
    /// An FTS5 virtual table: its rowid is copied as a column and a tsvector is added.
    pub fts5: bool,
    pub rows: i64,
    /// Indexes and other things that cannot be carried, with the reason.
    pub skipped: Vec<String>,
}

impl Table {
    /// The columns as read from SQLite, in COPY order.
    pub fn copy_columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        if self.fts5 {
            cols.insert(0, "rowid".into());
        }
        cols
    }
}

/// `table.column` -> type, as the user overrides them.
pub type Overrides = HashMap<String, PgType>;

pub fn inspect(conn: &Connection, path: &Path, overrides: &Overrides) -> Result<Vec<Table>> {
    let err = |e| read_error(path, e);
    let mut stmt = conn
        .prepare("SELECT name, coalesce(sql, '') FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .map_err(err)?;
    let entries: Vec<(String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?.collect::<rusqlite::Result<_>>().map_err(err)?;
    let fts: Vec<&str> =
        entries.iter().filter(|(_, sql)| is_fts5(sql)).map(|(n, _)| n.as_str()).collect();
    let shadow = |name: &str| {
        fts.iter().any(|f| ["_data", "_idx", "_content", "_docsize", "_config"].iter().any(|s| name == format!("{f}{s}")))
    };
    let mut tables = Vec::new();
    for (name, sql) in &entries {
        if shadow(name) {
            continue;
        }
        if sql.to_ascii_uppercase().starts_with("CREATE VIRTUAL TABLE") && !is_fts5(sql) {
            return Err(SqliteError::Input(format!(
                "table {name} is a virtual table of a module pgshift cannot read ({}): leave it out with --tables '!{name}'",
                sql.split_whitespace().skip_while(|w| !w.eq_ignore_ascii_case("USING")).nth(1).unwrap_or("?")
            )));
        }
        tables.push(table(conn, path, name, is_fts5(sql), overrides, sql)?);
    }
    for key in overrides.keys() {
        let (t, c) = key.rsplit_once('.').unwrap_or(("", key));
        if !tables.iter().any(|tb| tb.name == t && tb.columns.iter().any(|col| col.name == c)) {
            return Err(SqliteError::Input(format!("type override {key}: no such column (write TABLE.COLUMN)")));
        }
    }
    Ok(tables)
}

fn is_fts5(sql: &str) -> bool {
    let s = sql.to_ascii_lowercase();
    s.starts_with("create virtual table") && s.contains("using fts5")
}

/// A column as `PRAGMA table_xinfo` shows it: name, declared type, not null, key
/// position, hidden, default.
type RawColumn = (String, String, bool, i64, i64, Option<String>);

/// The single INTEGER PRIMARY KEY column (SQLite's rowid alias), if any.
fn rowid_alias_of(raw: &[RawColumn], fts5: bool) -> Option<&str> {
    let keys: Vec<_> = raw.iter().filter(|c| c.3 > 0).collect();
    match (keys.as_slice(), fts5) {
        ([only], false) if only.1.eq_ignore_ascii_case("INTEGER") => Some(only.0.as_str()),
        _ => None,
    }
}

/// Whether the table's SQL has `CHECK (column IN (0, 1))` (in either order, any spacing
/// and quoting).
fn checks_zero_one(sql: &str, column: &str) -> bool {
    let squeezed: String = sql.to_ascii_lowercase().chars().filter(|c| !c.is_whitespace() && !matches!(c, '"' | '`' | '[' | ']')).collect();
    let c = column.to_ascii_lowercase().replace(char::is_whitespace, "");
    [format!("check({c}in(0,1))"), format!("check({c}in(1,0))")].iter().any(|p| squeezed.contains(p.as_str()))
}

fn table(conn: &Connection, path: &Path, name: &str, fts5: bool, overrides: &Overrides, sql_of_table: &str) -> Result<Table> {
    let err = |e| read_error(path, e);
    let mut stmt = conn.prepare(&format!("PRAGMA table_xinfo({})", quote(name))).map_err(err)?;
    // cid, name, type, notnull, dflt_value, pk, hidden
    let raw: Vec<RawColumn> = stmt
        .query_map([], |r| Ok((r.get(1)?, r.get::<_, Option<String>>(2)?.unwrap_or_default(), r.get(3)?, r.get(5)?, r.get(6)?, r.get(4)?)))
        .map_err(err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(err)?;
    // FTS5 declares hidden columns (the table itself, rank); generated columns are hidden 2/3.
    let raw: Vec<_> = raw.into_iter().filter(|c| c.4 == 0).collect();
    let keys = raw.iter().filter(|c| c.3 > 0).count();
    let probes: Vec<Probe> = raw
        .iter()
        .map(|(col, declared, _, pk, _, _)| {
            // A rowid alias (INTEGER PRIMARY KEY) holds integers only.
            let rowid = !fts5 && keys == 1 && *pk > 0 && declared.eq_ignore_ascii_case("INTEGER");
            let declared_type = if fts5 { PgType::Text } else { from_declared(declared) };
            Probe::for_column(col, if rowid { None } else { Some((declared_type, declared.is_empty())) })
        })
        .collect();
    let stored = stored_kinds(conn, path, name, &probes)?;
    let mut columns = Vec::new();
    let mut skipped = Vec::new();
    for ((col, declared, not_null, _, _, default), s) in raw.iter().zip(stored) {
        let base = if fts5 { PgType::Text } else { from_declared(declared) };
        let refined = refine(base, declared.is_empty(), s);
        let flag = (!fts5 && rowid_alias_of(&raw, fts5) != Some(col.as_str())).then(|| flag_reason(col, base, s, checks_zero_one(sql_of_table, col))).flatten();
        let (pg, note) = match overrides.get(&format!("{name}.{col}")) {
            Some(t) => (*t, Some("override".to_string())),
            None if flag.is_some() => (PgType::Boolean, flag),
            None if refined == PgType::Jsonb && base != PgType::Jsonb => (refined, Some("every stored value is a JSON object or array".into())),
            None if matches!(base, PgType::Numeric(..)) && refined == PgType::Double => {
                (refined, Some(format!("declared {declared:?}, but {} stored value(s) have more decimals or digits than it holds", s.unfit_numbers)))
            }
            None if refined != base => (refined, Some(format!("declared {declared:?}, but the stored values need {}", refined.sql()))),
            None => (refined, None),
        };
        let carried = default.as_deref().and_then(|d| default_sql(d, pg));
        if let (Some(d), None) = (default, &carried) {
            skipped.push(format!("default {d} of {name}.{col}: no PostgreSQL equivalent, left out"));
        }
        columns.push(Column { name: col.clone(), declared: declared.clone(), not_null: *not_null, pg, default: carried, note });
    }
    let mut pk: Vec<(i64, String)> = raw.iter().filter(|c| c.3 > 0).map(|c| (c.3, c.0.clone())).collect();
    pk.sort();
    let primary_key: Vec<String> = pk.into_iter().map(|(_, c)| c).collect();
    let rowid_alias = match (primary_key.as_slice(), fts5) {
        ([only], false) => columns.iter().find(|c| &c.name == only && c.declared.eq_ignore_ascii_case("INTEGER")).map(|c| c.name.clone()),
        _ => None,
    };
    let rows = conn.query_row(&format!("SELECT count(*) FROM {}", quote(name)), [], |r| r.get(0)).map_err(err)?;
    let (indexes, skipped_indexes) = if fts5 { (Vec::new(), Vec::new()) } else { indexes(conn, path, name)? };
    skipped.extend(skipped_indexes);
    let primary_key = if fts5 { vec!["rowid".to_string()] } else { primary_key };
    Ok(Table {
        name: name.to_string(),
        columns,
        primary_key,
        rowid_alias,
        foreign_keys: if fts5 { Vec::new() } else { foreign_keys(conn, path, name)? },
        indexes,
        fts5,
        rows,
        skipped,
    })
}

/// What [`refine`] needs to know of one column's stored values, as SQL aggregates:
/// typeof() counts where the declared type can widen (integer, real, text and untyped
/// columns), and JSON texts only where text can become jsonb. Other columns (and rowid
/// aliases) need no look at their values.
struct Probe {
    aggregates: Vec<String>,
    /// The four typeof() counts, the 0/1 count and the numeric misfits come first, then the JSON count.
    kinds: bool,
    json: bool,
}

impl Probe {
    fn for_column(column: &str, declared: Option<(PgType, bool)>) -> Probe {
        let c = quote(column);
        let (kinds, json) = match declared {
            Some((PgType::Bigint | PgType::Double | PgType::Numeric(..), _)) => (true, false),
            Some((PgType::Text, _)) => (true, true),
            _ => (false, false),
        };
        let mut aggregates = Vec::new();
        if kinds {
            aggregates.extend(["integer", "real", "text", "blob"].map(|k| format!("sum(typeof({c}) = '{k}')")));
            aggregates.push(format!("sum(typeof({c}) = 'integer' AND {c} IN (0, 1))"));
            // Values a numeric(p,s) cannot hold exactly: more decimals, or too large.
            aggregates.push(match declared {
                Some((PgType::Numeric(p, s), _)) => format!(
                    "sum(typeof({c}) IN ('integer', 'real') AND (round({c}, {s}) <> {c} OR abs({c}) >= 1e{}))",
                    p - s
                ),
                _ => "0".to_string(),
            });
        }
        if json {
            // CASE, not AND: SQLite evaluates both sides of an AND in a result column,
            // and json_valid() is the costly part.
            aggregates.push(format!(
                "sum(CASE WHEN typeof({c}) = 'text' AND substr(ltrim({c}), 1, 1) IN ('{{', '[') THEN json_valid({c}) ELSE 0 END)"
            ));
        }
        Probe { aggregates, kinds, json }
    }
}

/// One scan of the table (none when no column needs one) counts, per column, what
/// typeof() says it holds.
fn stored_kinds(conn: &Connection, path: &Path, table: &str, probes: &[Probe]) -> Result<Vec<Stored>> {
    let parts: Vec<&str> = probes.iter().flat_map(|p| p.aggregates.iter().map(String::as_str)).collect();
    if parts.is_empty() {
        return Ok(probes.iter().map(|_| Stored::default()).collect());
    }
    let sql = format!("SELECT {} FROM {}", parts.join(", "), quote(table));
    conn.query_row(&sql, [], |r| {
        let mut i = 0;
        let mut next = || {
            i += 1;
            r.get::<_, Option<i64>>(i - 1).map(|v| v.unwrap_or(0))
        };
        let mut out = Vec::with_capacity(probes.len());
        for p in probes {
            let mut s = Stored::default();
            if p.kinds {
                (s.integers, s.reals, s.texts, s.blobs, s.zero_ones, s.unfit_numbers) = (next()?, next()?, next()?, next()?, next()?, next()?);
            }
            if p.json {
                s.json_texts = next()?;
            }
            out.push(s);
        }
        Ok(out)
    })
    .map_err(|e| read_error(path, e))
}

fn foreign_keys(conn: &Connection, path: &Path, table: &str) -> Result<Vec<ForeignKey>> {
    let err = |e| read_error(path, e);
    let mut stmt = conn.prepare(&format!("PRAGMA foreign_key_list({})", quote(table))).map_err(err)?;
    // id, seq, table, from, to, on_update, on_delete, match
    let rows: Vec<(i64, String, String, Option<String>, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(6)?)))
        .map_err(err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(err)?;
    let mut out: Vec<(i64, ForeignKey)> = Vec::new();
    for (id, target, from, to, on_delete) in rows {
        let fk = match out.iter_mut().find(|(i, _)| *i == id) {
            Some((_, fk)) => fk,
            None => {
                out.push((id, ForeignKey { columns: Vec::new(), table: target, references: Vec::new(), on_delete }));
                &mut out.last_mut().expect("just pushed").1
            }
        };
        fk.columns.push(from);
        // A missing "to" means the referenced table's primary key.
        fk.references.extend(to);
    }
    Ok(out.into_iter().map(|(_, fk)| fk).collect())
}

fn indexes(conn: &Connection, path: &Path, table: &str) -> Result<(Vec<Index>, Vec<String>)> {
    let err = |e| read_error(path, e);
    let mut stmt = conn.prepare(&format!("PRAGMA index_list({})", quote(table))).map_err(err)?;
    // seq, name, unique, origin, partial
    let list: Vec<(String, bool, String, bool)> = stmt
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .map_err(err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(err)?;
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for (name, unique, origin, partial) in list {
        if origin == "pk" {
            continue;
        }
        let mut info = conn.prepare(&format!("PRAGMA index_info({})", quote(&name))).map_err(err)?;
        let columns: Vec<Option<String>> =
            info.query_map([], |r| r.get(2)).map_err(err)?.collect::<rusqlite::Result<_>>().map_err(err)?;
        if partial || columns.iter().any(Option::is_none) {
            skipped.push(format!("index {name} on {table}: partial and expression indexes are not carried over; recreate it on the target"));
            continue;
        }
        out.push(Index { name, columns: columns.into_iter().flatten().collect(), unique });
    }
    Ok((out, skipped))
}
