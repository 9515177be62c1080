//! SQLite values to PostgreSQL: each value is converted once to its target type
//! ([`PgValue`]), then written as binary COPY (the load) or as canonical text (verify).

use bytes::{BufMut, Bytes, BytesMut};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::path::Path;

use crate::schema::Table;
use crate::time::{from_unix_seconds, parse_iso};
use crate::types::PgType;
use crate::{quote, read_error, Result, SqliteError};

#[derive(Clone, Debug, PartialEq)]
pub enum PgValue {
    Int(i64),
    Bool(bool),
    Float(f64),
    Text(String),
    /// The JSON text as stored (PostgreSQL normalises it) and its parsed form.
    Json(String, serde_json::Value),
    /// Microseconds since 2000-01-01 00:00:00 UTC.
    Timestamp(i64),
    Bytes(Vec<u8>),
    Vector(Vec<f32>),
    /// A decimal with exactly its column's scale of fractional digits: `-19.90`.
    Numeric(String),
}

/// `text` as a decimal of scale `s` and at most `p` digits, or why not. Fewer
/// decimals are padded; more are refused unless they are zeros (nothing is rounded).
pub fn decimal(text: &str, p: u16, s: u16) -> Result<String, String> {
    let t = text.trim();
    let (sign, digits) = match t.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let valid = |d: &str| d.chars().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !valid(int) || !valid(frac) {
        return Err(format!("{t:?} is not a decimal number"));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > s as usize {
        return Err(format!("{t:?} has more than {s} decimal places (numeric({p},{s}))"));
    }
    let int = int.trim_start_matches('0');
    if int.len() > (p - s) as usize {
        return Err(format!("{t:?} has more than {} digits before the point (numeric({p},{s}))", p - s));
    }
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.is_empty();
    let sign = if zero { "" } else { sign };
    Ok(if s == 0 { format!("{sign}{int}") } else { format!("{sign}{int}.{frac:0<width$}", width = s as usize) })
}

/// PostgreSQL's binary numeric: digit count, weight, sign, display scale, then the
/// digits in base 10000 (grouped from the decimal point outwards).
fn put_numeric(out: &mut BytesMut, text: &str) {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int_padded = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
    let frac_padded = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
    let group = |s: &str| s.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).expect("ascii").parse::<i16>().expect("digits")).collect::<Vec<_>>();
    let mut groups = group(&int_padded);
    let mut weight = groups.len() as i16 - 1;
    groups.extend(group(&frac_padded));
    while groups.first() == Some(&0) && !groups.is_empty() {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight);
    out.put_u16(if negative && !groups.is_empty() { 0x4000 } else { 0 });
    out.put_u16(frac.len() as u16);
    groups.iter().for_each(|g| out.put_i16(*g));
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()))
}

/// The value as its column's PostgreSQL type; Err says why it cannot be.
pub fn convert(v: ValueRef<'_>, t: PgType) -> Result<Option<PgValue>, String> {
    use ValueRef::*;
    let shown = |v: ValueRef<'_>| match v {
        Text(b) | Blob(b) => String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned(),
        Integer(i) => i.to_string(),
        Real(f) => f.to_string(),
        Null => "NULL".into(),
    };
    let value = match (v, t) {
        (Null, _) => return Ok(None),
        (Integer(i), PgType::Numeric(p, s)) => PgValue::Numeric(decimal(&i.to_string(), p, s)?),
        // Rust shows a double with the fewest digits that read back as it: 19.99, not 19.989999...
        (Real(f), PgType::Numeric(p, s)) if f.is_finite() => PgValue::Numeric(decimal(&f.to_string(), p, s)?),
        (Text(t), PgType::Numeric(p, s)) => PgValue::Numeric(decimal(&utf8(t)?, p, s)?),
        (Integer(i), PgType::Bigint) => PgValue::Int(i),
        (Real(f), PgType::Bigint) if f.fract() == 0.0 && f.abs() < 9.2e18 => PgValue::Int(f as i64),
        (Text(s), PgType::Bigint) => PgValue::Int(utf8(s)?.trim().parse().map_err(|_| format!("{:?} is not an integer", shown(v)))?),
        (Integer(i @ (0 | 1)), PgType::Boolean) => PgValue::Bool(i == 1),
        (Real(f), PgType::Boolean) if f == 0.0 || f == 1.0 => PgValue::Bool(f == 1.0),
        (Text(s), PgType::Boolean) => match utf8(s)?.trim().to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "yes" | "y" | "on" => PgValue::Bool(true),
            "0" | "f" | "false" | "no" | "n" | "off" => PgValue::Bool(false),
            _ => return Err(format!("{:?} is not a boolean (0/1, true/false)", shown(v))),
        },
        (Integer(i), PgType::Double) => PgValue::Float(i as f64),
        (Real(f), PgType::Double) => PgValue::Float(f),
        (Text(s), PgType::Double) => PgValue::Float(utf8(s)?.trim().parse().map_err(|_| format!("{:?} is not a number", shown(v)))?),
        (Text(s) | Blob(s), PgType::Text) => PgValue::Text(utf8(s)?),
        (Integer(i), PgType::Text) => PgValue::Text(i.to_string()),
        (Real(f), PgType::Text) => PgValue::Text(f.to_string()),
        (Text(s) | Blob(s), PgType::Jsonb) => {
            let text = utf8(s)?;
            let parsed = serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {:?}", shown(v)))?;
            PgValue::Json(text, parsed)
        }
        (Integer(i), PgType::Jsonb) => PgValue::Json(i.to_string(), i.into()),
        (Real(f), PgType::Jsonb) => PgValue::Json(f.to_string(), serde_json::json!(f)),
        (Integer(i), PgType::Timestamptz) => PgValue::Timestamp(from_unix_seconds(i as f64).ok_or("not a timestamp")?),
        (Real(f), PgType::Timestamptz) => PgValue::Timestamp(from_unix_seconds(f).ok_or("not a timestamp")?),
        (Text(s), PgType::Timestamptz) => {
            let text = utf8(s)?;
            let micros = parse_iso(&text).or_else(|| text.trim().parse::<f64>().ok().and_then(from_unix_seconds));
            PgValue::Timestamp(micros.ok_or_else(|| format!("{:?} is not a timestamp (ISO 8601 text or Unix seconds)", shown(v)))?)
        }
        (Blob(b) | Text(b), PgType::Bytea) => PgValue::Bytes(b.to_vec()),
        (Integer(i), PgType::Bytea) => PgValue::Bytes(i.to_string().into_bytes()),
        (Real(f), PgType::Bytea) => PgValue::Bytes(f.to_string().into_bytes()),
        (Blob(b), PgType::Vector(dims)) => PgValue::Vector(floats_of_blob(b, dims as usize)?),
        (Text(s), PgType::Vector(dims)) => {
            let values: Vec<f32> = serde_json::from_str(&utf8(s)?).map_err(|_| format!("{:?} is not a JSON array of numbers", shown(v)))?;
            if values.len() != dims as usize {
                return Err(format!("the vector has {} dimensions, the column {dims}", values.len()));
            }
            PgValue::Vector(values)
        }
        (other, t) => return Err(format!("a {} value cannot become {}", other.data_type(), t.sql())),
    };
    Ok(Some(value))
}

impl PgValue {
    /// The binary COPY form of the value (without its length word).
    pub fn put_binary(&self, out: &mut BytesMut) {
        match self {
            PgValue::Int(i) => out.put_i64(*i),
            PgValue::Bool(b) => out.put_u8(*b as u8),
            PgValue::Float(f) => out.put_f64(*f),
            PgValue::Text(s) => out.put_slice(s.as_bytes()),
            PgValue::Json(text, _) => {
                out.put_u8(1); // jsonb binary format version
                out.put_slice(text.as_bytes());
            }
            PgValue::Timestamp(t) => out.put_i64(*t),
            PgValue::Bytes(b) => out.put_slice(b),
            PgValue::Vector(v) => {
                // pgvector's binary form: dimensions, an unused word, float4s.
                out.put_u16(v.len() as u16);
                out.put_u16(0);
                v.iter().for_each(|f| out.put_f32(*f));
            }
            PgValue::Numeric(text) => put_numeric(out, text),
        }
    }

    /// Text that is equal exactly when the PostgreSQL values are (verify across engines).
    pub fn canonical(&self) -> String {
        match self {
            PgValue::Int(i) => i.to_string(),
            PgValue::Bool(b) => if *b { "t" } else { "f" }.into(),
            PgValue::Float(f) => format!("{f:?}"),
            PgValue::Text(s) => s.clone(),
            PgValue::Json(_, v) => canonical_json(v).to_string(),
            PgValue::Timestamp(t) => t.to_string(),
            PgValue::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
            PgValue::Vector(v) => v.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(","),
            PgValue::Numeric(text) => text.clone(),
        }
    }
}

/// A libSQL vector BLOB (or a raw float array): little-endian float32s, or float64s,
/// optionally followed by libSQL's one-byte type tag (1 = float32, 2 = float64).
fn floats_of_blob(b: &[u8], dims: usize) -> Result<Vec<f32>, String> {
    let f32s = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    let f64s = |b: &[u8]| b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect();
    let values: Vec<f32> = match b.len() {
        n if n == dims * 4 => f32s(b),
        n if n == dims * 4 + 1 && b[n - 1] == 1 => f32s(&b[..n - 1]),
        n if n == dims * 8 => f64s(b),
        n if n == dims * 8 + 1 && b[n - 1] == 2 => f64s(&b[..n - 1]),
        n => return Err(format!("a BLOB of {n} bytes is not a vector of {dims} float32 or float64 values")),
    };
    if values.iter().any(|f| !f.is_finite()) {
        return Err("the vector holds NaN or infinity, which pgvector does not store".into());
    }
    Ok(values)
}

/// Object keys sorted (serde_json's map is ordered), numbers as doubles: what jsonb
/// and SQLite text have in common.
pub fn canonical_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_f64().map(|f| serde_json::json!(f)).unwrap_or_else(|| v.clone()),
        Value::Array(a) => Value::Array(a.iter().map(canonical_json).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), canonical_json(v))).collect()),
        _ => v.clone(),
    }
}

/// A row left out of the load (with `--reject-file`) and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Rejected {
    pub table: String,
    pub key: String,
    pub column: String,
    pub error: String,
}

/// Bytes written per call of the sink.
const CHUNK_BYTES: usize = 256 * 1024;

/// Which fields a copy carries beyond the table's own columns.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape<'a> {
    /// A column left out (the vector column the target computes).
    pub skip: Option<&'a str>,
    /// A SQLite expression over the row appended as a last text field (the text to embed).
    pub extra_text: Option<&'a str>,
}

impl Shape<'_> {
    /// The table's columns as this shape copies them, with their types.
    pub fn columns(&self, table: &Table) -> Vec<(String, PgType)> {
        let types = crate::verify::column_types(table);
        table.copy_columns().into_iter().zip(types).filter(|(c, _)| Some(c.as_str()) != self.skip).collect()
    }
}

/// Reads the whole table in one read transaction and hands binary COPY data to
/// `sink` in pieces (false from the sink stops the read). Values that cannot be
/// converted fail the table, or go to `reject` when given. Returns rows written.
pub fn copy_table(
    conn: &Connection,
    path: &Path,
    table: &Table,
    shape: &Shape<'_>,
    mut sink: impl FnMut(Bytes) -> bool,
    mut reject: Option<&mut dyn FnMut(Rejected)>,
) -> Result<u64> {
    let err = |e| read_error(path, e);
    let (mut cols, mut types): (Vec<String>, Vec<PgType>) = shape.columns(table).into_iter().unzip();
    let mut select: Vec<String> = cols.iter().map(|c| quote(c)).collect();
    if let Some(expr) = shape.extra_text {
        select.push(format!("CAST(({expr}) AS TEXT)"));
        cols.push(format!("({expr})"));
        types.push(PgType::Text);
    }
    let sql = format!("SELECT {} FROM {}", select.join(", "), quote(&table.name));
    let key_positions: Vec<usize> = table.primary_key.iter().filter_map(|k| cols.iter().position(|c| c == k)).collect();
    let mut stmt = conn.prepare(&sql).map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut out = BytesMut::with_capacity(CHUNK_BYTES * 2);
    out.put_slice(b"PGCOPY\n\xff\r\n\0");
    out.put_i32(0);
    out.put_i32(0);
    let (mut written, mut ordinal) = (0u64, 0u64);
    let mut row_buf = BytesMut::new();
    while let Some(row) = rows.next().map_err(err)? {
        ordinal += 1;
        row_buf.clear();
        row_buf.put_i16(types.len() as i16);
        let mut failure = None;
        for (i, t) in types.iter().enumerate() {
            match convert(row.get_ref(i).map_err(err)?, *t) {
                Ok(None) => row_buf.put_i32(-1),
                Ok(Some(v)) => {
                    let at = row_buf.len();
                    row_buf.put_i32(0);
                    v.put_binary(&mut row_buf);
                    let len = (row_buf.len() - at - 4) as i32;
                    row_buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
                Err(message) => {
                    failure = Some((cols[i].clone(), message));
                    break;
                }
            }
        }
        if let Some((column, message)) = failure {
            let key = row_key(row, &key_positions, &cols, ordinal);
            match reject.as_mut() {
                Some(r) => {
                    r(Rejected { table: table.name.clone(), key, column, error: message });
                    continue;
                }
                None => return Err(SqliteError::Value { table: table.name.clone(), key, column, message }),
            }
        }
        out.put_slice(&row_buf);
        written += 1;
        if out.len() >= CHUNK_BYTES && !sink(out.split().freeze()) {
            return Ok(written);
        }
    }
    out.put_i16(-1);
    sink(out.freeze());
    Ok(written)
}

/// `id=7` (the primary key's values) or `#12` (the row's position) for messages.
fn row_key(row: &rusqlite::Row<'_>, keys: &[usize], cols: &[String], ordinal: u64) -> String {
    if keys.is_empty() {
        return format!("#{ordinal}");
    }
    keys.iter()
        .map(|&i| {
            let v = match row.get_ref(i) {
                Ok(ValueRef::Integer(n)) => n.to_string(),
                Ok(ValueRef::Real(f)) => f.to_string(),
                Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                _ => "?".into(),
            };
            format!("{}={v}", cols[i])
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod numeric_tests {
    use super::*;

    fn binary(text: &str) -> Vec<i16> {
        let mut out = BytesMut::new();
        put_numeric(&mut out, text);
        out.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn decimals_take_postgresqls_binary_form() {
        // ndigits, weight, sign, dscale, digits (base 10000)
        assert_eq!(binary("1234567.89"), vec![3, 1, 0, 2, 123, 4567, 8900]);
        assert_eq!(binary("-0.05"), vec![1, -1, 0x4000, 2, 500]);
        assert_eq!(binary("0.00"), vec![0, 0, 0, 2]);
        assert_eq!(binary("10000"), vec![1, 1, 0, 0, 1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_or_say_why_not() {
        assert_eq!(convert(ValueRef::Integer(1), PgType::Boolean), Ok(Some(PgValue::Bool(true))));
        let money = PgType::Numeric(10, 2);
        assert_eq!(convert(ValueRef::Real(19.99), money), Ok(Some(PgValue::Numeric("19.99".into()))));
        assert_eq!(convert(ValueRef::Real(0.1), money), Ok(Some(PgValue::Numeric("0.10".into()))));
        assert_eq!(convert(ValueRef::Integer(-3), money), Ok(Some(PgValue::Numeric("-3.00".into()))));
        assert_eq!(convert(ValueRef::Text(b"1000.50"), money), Ok(Some(PgValue::Numeric("1000.50".into()))));
        assert!(convert(ValueRef::Real(0.30000000000000004), money).unwrap_err().contains("decimal places"));
        assert!(convert(ValueRef::Integer(123_456_789), money).unwrap_err().contains("digits before the point"));
        assert!(convert(ValueRef::Integer(2), PgType::Boolean).unwrap_err().contains("boolean"));
        assert_eq!(convert(ValueRef::Text(b"2000-01-01T00:00:02Z"), PgType::Timestamptz), Ok(Some(PgValue::Timestamp(2_000_000))));
        assert_eq!(convert(ValueRef::Integer(946_684_801), PgType::Timestamptz), Ok(Some(PgValue::Timestamp(1_000_000))));
        assert!(convert(ValueRef::Text(b"{oops"), PgType::Jsonb).unwrap_err().contains("not JSON"));
        assert!(convert(ValueRef::Text(b"ab\xffcd"), PgType::Text).unwrap_err().contains("invalid UTF-8 at byte 2"));
        assert_eq!(convert(ValueRef::Null, PgType::Jsonb), Ok(None));
    }

    #[test]
    fn vector_blobs_in_every_libsql_layout() {
        let v = |b: &[u8]| convert(ValueRef::Blob(b), PgType::Vector(2));
        let f32s: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let f64s: Vec<u8> = [1.5f64, -2.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let want = Ok(Some(PgValue::Vector(vec![1.5, -2.0])));
        assert_eq!(v(&f32s), want);
        assert_eq!(v(&[&f32s[..], &[1]].concat()), want, "float32 with libSQL's type tag");
        assert_eq!(v(&f64s), want);
        assert_eq!(v(&[&f64s[..], &[2]].concat()), want, "float64 with libSQL's type tag");
        assert!(v(&f32s[..7]).unwrap_err().contains("7 bytes"));
        assert!(v(&[f32::NAN.to_le_bytes(), 0f32.to_le_bytes()].concat()).unwrap_err().contains("NaN"));
        assert!(convert(ValueRef::Text(b"[1, 2, 3]"), PgType::Vector(2)).unwrap_err().contains("3 dimensions"));
        let mut out = BytesMut::new();
        PgValue::Vector(vec![1.5, -2.0]).put_binary(&mut out);
        assert_eq!(&out[..4], &[0, 2, 0, 0], "pgvector's header: dimensions, unused");
    }

    #[test]
    fn canonical_json_ignores_key_order_and_number_spelling() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b": 1e2, "a": [1, {"z": true, "y": null}]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a": [1.0, {"y": null, "z": true}], "b": 100}"#).unwrap();
        assert_eq!(canonical_json(&a).to_string(), canonical_json(&b).to_string());
    }
}
