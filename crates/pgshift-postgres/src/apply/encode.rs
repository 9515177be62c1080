//! Rows from pgoutput tuples, encoded for `COPY ... FROM STDIN` in the stream's format.
//! Binary values go in as the server sent them; text values are escaped for COPY's
//! text format.

use bytes::{BufMut, BytesMut};

use crate::copy::CopyFormat;
use crate::pgoutput::Datum;

/// Signature, flags and header extension length of a binary COPY stream.
pub const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
pub const BINARY_TRAILER: &[u8] = &[0xff, 0xff];

/// A field of an encoded row: a value from the stream, or one pgshift adds itself
/// (the staging table's operation and mask columns).
pub enum Field<'a> {
    Datum(&'a Datum),
    Own(&'a str),
}

/// Appends one row. Unchanged TOAST values are written as NULL: the row's mask tells
/// the apply statements to leave those columns alone.
pub fn put_row(out: &mut BytesMut, format: CopyFormat, fields: &[Field<'_>]) -> Result<(), String> {
    match format {
        CopyFormat::Binary => {
            out.put_i16(fields.len() as i16);
            for f in fields {
                let bytes: Option<&[u8]> = match f {
                    Field::Datum(Datum::Binary(b)) => Some(b),
                    Field::Datum(Datum::Text(_)) => return Err("the server sent a value in text form in a binary stream".into()),
                    Field::Datum(Datum::Null | Datum::Unchanged) => None,
                    Field::Own(s) => Some(s.as_bytes()),
                };
                match bytes {
                    Some(b) => {
                        out.put_i32(b.len() as i32);
                        out.put_slice(b);
                    }
                    None => out.put_i32(-1),
                }
            }
        }
        CopyFormat::Text => {
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b'\t');
                }
                match f {
                    Field::Datum(Datum::Text(b)) => put_escaped(out, b),
                    Field::Datum(Datum::Binary(_)) => return Err("the server sent a value in binary form in a text stream".into()),
                    Field::Datum(Datum::Null | Datum::Unchanged) => out.put_slice(b"\\N"),
                    Field::Own(s) => put_escaped(out, s.as_bytes()),
                }
            }
            out.put_u8(b'\n');
        }
    }
    Ok(())
}

fn put_escaped(out: &mut BytesMut, value: &[u8]) {
    let mut start = 0;
    for (i, &b) in value.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.put_slice(&value[start..i]);
        out.put_slice(escaped);
        start = i + 1;
    }
    out.put_slice(&value[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn text_rows_escape_copy_specials_and_write_null_for_missing_values() {
        let mut out = BytesMut::new();
        let v = Datum::Text(Bytes::from("a\tb\\c\nd"));
        put_row(&mut out, CopyFormat::Text, &[Field::Datum(&v), Field::Datum(&Datum::Unchanged), Field::Own("u")]).unwrap();
        assert_eq!(&out[..], b"a\\tb\\\\c\\nd\t\\N\tu\n");
    }

    #[test]
    fn binary_rows_frame_each_field_with_its_length() {
        let mut out = BytesMut::new();
        let v = Datum::Binary(Bytes::from_static(&[0, 0, 0, 7]));
        put_row(&mut out, CopyFormat::Binary, &[Field::Datum(&v), Field::Datum(&Datum::Null)]).unwrap();
        assert_eq!(&out[..], &[0, 2, 0, 0, 0, 4, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff]);
        assert!(put_row(&mut out, CopyFormat::Binary, &[Field::Datum(&Datum::Text(Bytes::from("1")))]).is_err());
    }
}
