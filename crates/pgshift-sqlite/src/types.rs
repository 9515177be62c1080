//! PostgreSQL types for SQLite columns: from the declared type (SQLite's affinity
//! rules), refined by the values actually stored, overridden by the user.

use serde::{Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgType {
    Bigint,
    Boolean,
    Double,
    Text,
    Jsonb,
    Timestamptz,
    Bytea,
    /// pgvector's `vector(n)`: libSQL's F32_BLOB(n) / F64_BLOB(n) columns, raw float
    /// BLOBs or JSON arrays when a column is overridden to it.
    Vector(u32),
    /// `numeric(precision, scale)`: exact decimals (money), from `NUMERIC(p,s)` /
    /// `DECIMAL(p,s)` columns whose every value fits.
    Numeric(u16, u16),
}

/// The types an override may name, for messages.
pub const OVERRIDE_TYPES: &str = "bigint, boolean, double, text, jsonb, timestamptz, bytea, vector(N), numeric(P,S)";

impl PgType {
    pub fn sql(self) -> String {
        match self {
            PgType::Bigint => "bigint".into(),
            PgType::Boolean => "boolean".into(),
            PgType::Double => "double precision".into(),
            PgType::Text => "text".into(),
            PgType::Jsonb => "jsonb".into(),
            PgType::Timestamptz => "timestamptz".into(),
            PgType::Bytea => "bytea".into(),
            PgType::Vector(dims) => format!("vector({dims})"),
            PgType::Numeric(p, s) => format!("numeric({p},{s})"),
        }
    }

    /// An override as users write it (`jsonb`, `boolean`, `timestamptz`, `vector(384)`, ...).
    pub fn parse(name: &str) -> Option<PgType> {
        let name = name.trim().to_ascii_lowercase();
        if let Some(dims) = name.strip_prefix("vector(").and_then(|r| r.strip_suffix(')')) {
            return dims.trim().parse().ok().filter(|d| (1..=16000).contains(d)).map(PgType::Vector);
        }
        if let Some(t) = numeric_of(&name) {
            return Some(t);
        }
        Some(match name.as_str() {
            "bigint" | "int8" | "integer" | "int" => PgType::Bigint,
            "boolean" | "bool" => PgType::Boolean,
            "double precision" | "double" | "float8" | "real" => PgType::Double,
            "text" => PgType::Text,
            "jsonb" | "json" => PgType::Jsonb,
            "timestamptz" | "timestamp" | "datetime" => PgType::Timestamptz,
            "bytea" | "blob" => PgType::Bytea,
            _ => return None,
        })
    }
}

impl Serialize for PgType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.sql())
    }
}

/// `numeric(p,s)`, `numeric(p)`, `decimal(p,s)` (any case) with 1 <= p <= 1000, s <= p.
fn numeric_of(declared: &str) -> Option<PgType> {
    let lower = declared.to_ascii_lowercase();
    let (name, rest) = lower.split_once('(')?;
    if !matches!(name.trim(), "numeric" | "decimal") {
        return None;
    }
    let args: Vec<&str> = rest.strip_suffix(')')?.split(',').map(str::trim).collect();
    let (p, s): (u16, u16) = match args.as_slice() {
        [p] => (p.parse().ok()?, 0),
        [p, s] => (p.parse().ok()?, s.parse().ok()?),
        _ => return None,
    };
    ((1..=1000).contains(&p) && s <= p).then_some(PgType::Numeric(p, s))
}

/// libSQL's vector column types (`F32_BLOB(384)`, `FLOAT32(384)`, and the 64-bit
/// ones) and their dimensions.
fn libsql_vector(declared_upper: &str) -> Option<u32> {
    let (name, rest) = declared_upper.split_once('(')?;
    if !matches!(name.trim(), "F32_BLOB" | "FLOAT32" | "F64_BLOB" | "FLOAT64") {
        return None;
    }
    rest.strip_suffix(')')?.trim().parse().ok().filter(|d| *d > 0)
}

/// The type a declared type asks for, by SQLite's affinity rules plus the names that
/// carry meaning beyond affinity (BOOLEAN, JSON, DATE/TIME, libSQL's vector types).
pub fn from_declared(declared: &str) -> PgType {
    let d = declared.to_ascii_uppercase();
    if let Some(dims) = libsql_vector(&d) {
        PgType::Vector(dims)
    } else if let Some(t) = numeric_of(&d) {
        t
    } else if d.contains("BOOL") {
        PgType::Boolean
    } else if d.contains("INT") {
        PgType::Bigint
    } else if d.contains("JSON") {
        PgType::Jsonb
    } else if d.contains("DATE") || d.contains("TIME") {
        PgType::Timestamptz
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        PgType::Text
    } else if d.contains("BLOB") {
        PgType::Bytea
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        PgType::Double
    } else if d.is_empty() {
        // No declared type: decided by the values (see refine).
        PgType::Text
    } else {
        // NUMERIC affinity: integers stay integers, anything else is a double.
        PgType::Bigint
    }
}

/// A SQLite column default as PostgreSQL SQL for a column of type `t`: literals
/// (converted like the values: 1 -> true for booleans), NULL, and the current time.
pub fn default_sql(default: &str, t: PgType) -> Option<String> {
    let d = default.trim().trim_start_matches('(').trim_end_matches(')').trim();
    let upper = d.to_ascii_uppercase();
    if upper == "NULL" {
        return None;
    }
    if matches!(upper.as_str(), "CURRENT_TIMESTAMP" | "CURRENT_DATE" | "CURRENT_TIME") {
        return (t == PgType::Timestamptz).then(|| "now()".to_string());
    }
    let literal = if let Some(s) = d.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        s.replace("''", "'")
    } else if d.parse::<f64>().is_ok() || upper == "TRUE" || upper == "FALSE" {
        match (t, upper.as_str()) {
            (PgType::Boolean, "1" | "TRUE") => return Some("true".into()),
            (PgType::Boolean, "0" | "FALSE") => return Some("false".into()),
            (PgType::Boolean, _) => return None,
            (PgType::Bigint | PgType::Double | PgType::Numeric(..), _) => return Some(d.to_string()),
            _ => d.to_string(),
        }
    } else {
        return None;
    };
    let value = crate::encode::convert(rusqlite::types::ValueRef::Text(literal.as_bytes()), t).ok()??;
    let text = match &value {
        crate::encode::PgValue::Json(raw, _) => raw.clone(),
        crate::encode::PgValue::Timestamp(_) => literal.clone(),
        v => v.canonical(),
    };
    Some(format!("'{}'::{}", text.replace('\'', "''"), t.sql()))
}

/// What a column holds, counted by SQLite's typeof() over the whole table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stored {
    pub integers: i64,
    pub reals: i64,
    pub texts: i64,
    pub blobs: i64,
    /// Texts that are JSON objects or arrays.
    pub json_texts: i64,
    /// Integers that are 0 or 1.
    pub zero_ones: i64,
    /// Numbers that do not fit a declared numeric(p,s): more decimals than its scale,
    /// or too large.
    pub unfit_numbers: i64,
}

/// Why an integer column holds booleans, if it does: ORMs and apps declare flags as
/// plain INTEGER. Said by a `CHECK (column IN (0, 1))`, or by every value being 0, 1
/// or NULL in a column whose name reads as a flag.
pub fn flag_reason(column: &str, declared: PgType, s: Stored, checked_01: bool) -> Option<String> {
    if declared != PgType::Bigint || s.reals + s.texts + s.blobs > 0 || s.zero_ones != s.integers {
        return None;
    }
    if checked_01 {
        return Some(format!("CHECK ({column} IN (0, 1)) makes it a flag"));
    }
    let n = column.to_ascii_lowercase();
    let named = ["is_", "has_", "can_", "should_", "allow_", "enable_"].iter().any(|p| n.starts_with(p))
        || ["_enabled", "_disabled", "_flag", "_active", "_deleted", "_visible", "_verified", "_required"].iter().any(|x| n.ends_with(x))
        || ["active", "enabled", "disabled", "deleted", "archived", "verified", "published", "visible", "done", "completed"].contains(&n.as_str());
    (named && s.integers > 0).then(|| "every value is 0, 1 or NULL and the name reads as a flag".to_string())
}

/// The declared type, widened so every stored value fits: an integer column holding
/// reals becomes double precision, one holding text becomes text; a text column
/// whose every value is a JSON object or array becomes jsonb.
pub fn refine(declared: PgType, untyped: bool, s: Stored) -> PgType {
    match declared {
        PgType::Numeric(..) if s.texts > 0 || s.blobs > 0 => PgType::Text,
        PgType::Numeric(..) if s.unfit_numbers > 0 => PgType::Double,
        PgType::Bigint if s.texts > 0 || s.blobs > 0 => PgType::Text,
        PgType::Bigint if s.reals > 0 => PgType::Double,
        PgType::Double if s.texts > 0 || s.blobs > 0 => PgType::Text,
        PgType::Text if s.texts > 0 && s.json_texts == s.texts && s.integers + s.reals + s.blobs == 0 => PgType::Jsonb,
        PgType::Text if untyped && s.texts + s.blobs == 0 && s.reals > 0 => PgType::Double,
        PgType::Text if untyped && s.texts + s.blobs + s.reals == 0 && s.integers > 0 => PgType::Bigint,
        PgType::Text if untyped && s.blobs > 0 && s.texts + s.integers + s.reals == 0 => PgType::Bytea,
        t => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_follow_affinity_with_meaningful_names() {
        for (decl, t) in [
            ("INTEGER", PgType::Bigint),
            ("BOOLEAN", PgType::Boolean),
            ("DATETIME", PgType::Timestamptz),
            ("varchar(20)", PgType::Text),
            ("JSON", PgType::Jsonb),
            ("REAL", PgType::Double),
            ("BLOB", PgType::Bytea),
            ("NUMERIC", PgType::Bigint),
            ("F32_BLOB(384)", PgType::Vector(384)),
            ("float64(3)", PgType::Vector(3)),
            ("F16_BLOB(8)", PgType::Bytea),
            ("NUMERIC(10,2)", PgType::Numeric(10, 2)),
            ("decimal( 6 , 3 )", PgType::Numeric(6, 3)),
            ("NUMERIC(5)", PgType::Numeric(5, 0)),
        ] {
            assert_eq!(from_declared(decl), t, "{decl}");
        }
    }

    #[test]
    fn defaults_become_postgresql_sql() {
        assert_eq!(default_sql("1", PgType::Boolean).as_deref(), Some("true"));
        assert_eq!(default_sql("CURRENT_TIMESTAMP", PgType::Timestamptz).as_deref(), Some("now()"));
        assert_eq!(default_sql("'it''s'", PgType::Text).as_deref(), Some("'it''s'::text"));
        assert_eq!(default_sql("'{}'", PgType::Jsonb).as_deref(), Some("'{}'::jsonb"));
        assert_eq!(default_sql("-2.5", PgType::Double).as_deref(), Some("-2.5"));
        assert_eq!(default_sql("NULL", PgType::Text), None);
        assert_eq!(default_sql("(random())", PgType::Bigint), None);
    }

    #[test]
    fn stored_values_widen_the_type() {
        let s = |integers, reals, texts, json_texts| Stored { integers, reals, texts, json_texts, ..Stored::default() };
        assert_eq!(refine(PgType::Bigint, false, s(5, 1, 0, 0)), PgType::Double);
        assert_eq!(refine(PgType::Bigint, false, s(5, 0, 1, 0)), PgType::Text);
        assert_eq!(refine(PgType::Text, false, s(0, 0, 4, 4)), PgType::Jsonb);
        assert_eq!(refine(PgType::Text, false, s(0, 0, 4, 3)), PgType::Text);
        assert_eq!(refine(PgType::Text, true, s(3, 0, 0, 0)), PgType::Bigint);
        assert_eq!(refine(PgType::Boolean, false, s(3, 0, 0, 0)), PgType::Boolean);
        let money = PgType::Numeric(10, 2);
        assert_eq!(refine(money, false, s(3, 4, 0, 0)), money);
        assert_eq!(refine(money, false, Stored { reals: 4, unfit_numbers: 1, ..Stored::default() }), PgType::Double);
        assert_eq!(PgType::parse("numeric(10,2)"), Some(money));
        assert_eq!(PgType::parse("numeric(10,20)"), None);
    }

    #[test]
    fn integer_flags_become_booleans_when_a_check_or_their_name_says_so() {
        let s = |integers, zero_ones| Stored { integers, zero_ones, ..Stored::default() };
        assert!(flag_reason("is_admin", PgType::Bigint, s(10, 10), false).is_some());
        assert!(flag_reason("archived", PgType::Bigint, s(10, 10), false).is_some());
        assert!(flag_reason("x", PgType::Bigint, s(10, 10), true).unwrap().contains("CHECK"));
        assert!(flag_reason("x", PgType::Bigint, s(10, 10), false).is_none(), "a name that says nothing");
        assert!(flag_reason("is_admin", PgType::Bigint, s(10, 9), false).is_none(), "a 2 somewhere");
        assert!(flag_reason("is_admin", PgType::Bigint, s(0, 0), false).is_none(), "no values to go by");
        assert!(flag_reason("is_admin", PgType::Text, s(10, 10), false).is_none());
    }
}
