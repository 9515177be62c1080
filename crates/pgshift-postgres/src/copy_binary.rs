//! Just enough of the binary COPY format to put a computed column on each row: rows
//! are split at their field boundaries, the fields to keep stay raw bytes, and the
//! vector is appended in pgvector's binary form. Nothing is decoded that is not needed.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// `PGCOPY\n\377\r\n\0`, flags, header extension length.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
const HEADER_LEN: usize = SIGNATURE.len() + 8;

pub fn header() -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN);
    b.put_slice(SIGNATURE);
    b.put_i32(0);
    b.put_i32(0);
    b.freeze()
}

pub fn trailer() -> Bytes {
    Bytes::from_static(&[0xff, 0xff])
}

/// One row: every field but the last (or the last few) as raw bytes (with their
/// length words), and the last field's value (None = NULL); with a splitter that takes
/// more than one field off the end, the fields before the last in `tail`.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitRow {
    pub kept_fields: i16,
    pub kept: Bytes,
    pub last: Option<Bytes>,
    /// The fields between `kept` and `last` (values, None = NULL), in order.
    pub tail: Vec<Option<Bytes>>,
}

/// Splits a binary COPY stream into rows, whatever the message boundaries are.
#[derive(Default)]
pub struct RowSplitter {
    buf: BytesMut,
    header_seen: bool,
    ended: bool,
    /// Fields taken off the end of each row besides the last (see [`SplitRow::tail`]).
    tail: usize,
}

impl RowSplitter {
    /// A splitter that takes `tail` fields off the end of each row besides the last.
    pub fn with_tail(tail: usize) -> RowSplitter {
        RowSplitter { tail, ..RowSplitter::default() }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete row, `Ok(None)` when more data is needed or the trailer came.
    pub fn next_row(&mut self) -> Result<Option<SplitRow>, String> {
        if !self.header_seen {
            if self.buf.len() < HEADER_LEN {
                return Ok(None);
            }
            if &self.buf[..SIGNATURE.len()] != SIGNATURE {
                return Err("not a binary COPY stream".into());
            }
            let ext = i32::from_be_bytes(self.buf[SIGNATURE.len() + 4..HEADER_LEN].try_into().unwrap());
            if ext != 0 {
                return Err("binary COPY header extensions are not supported".into());
            }
            self.buf.advance(HEADER_LEN);
            self.header_seen = true;
        }
        if self.ended || self.buf.len() < 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([self.buf[0], self.buf[1]]);
        if count == -1 {
            self.ended = true;
            self.buf.advance(2);
            return Ok(None);
        }
        let split = 1 + self.tail;
        if (count as usize) < split {
            return Err(format!("binary COPY row with {count} fields"));
        }
        // Walk the fields without consuming until the whole row is here.
        let mut pos = 2;
        let mut first_split = 0;
        for i in 0..count as usize {
            if self.buf.len() < pos + 4 {
                return Ok(None);
            }
            if i == count as usize - split {
                first_split = pos - 2;
            }
            let len = i32::from_be_bytes(self.buf[pos..pos + 4].try_into().unwrap());
            pos += 4 + len.max(0) as usize;
            if self.buf.len() < pos {
                return Ok(None);
            }
        }
        let mut row = self.buf.split_to(pos).freeze();
        row.advance(2);
        // The split-off fields, read again from where they start (the row is all here).
        let mut at = first_split;
        let mut next_value = || {
            let len = i32::from_be_bytes(row[at..at + 4].try_into().unwrap());
            let value = (len >= 0).then(|| row.slice(at + 4..at + 4 + len as usize));
            at += 4 + len.max(0) as usize;
            value
        };
        let tail: Vec<Option<Bytes>> = (0..self.tail).map(|_| next_value()).collect();
        let last = next_value();
        Ok(Some(SplitRow { kept_fields: count - split as i16, kept: row.slice(..first_split), last, tail }))
    }

    /// True once the trailer was read.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// Writes `row`'s kept fields as a row of their own.
pub fn put_kept(out: &mut BytesMut, row: &SplitRow) {
    out.put_i16(row.kept_fields);
    out.put_slice(&row.kept);
}

/// Writes `row`'s kept fields followed by one more field (None = NULL).
pub fn put_row_with(out: &mut BytesMut, row: &SplitRow, extra: Option<&[u8]>) {
    out.put_i16(row.kept_fields + 1);
    out.put_slice(&row.kept);
    put_field(out, extra);
}

/// One field: its length word and value (None = NULL, length -1).
pub fn put_field(out: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
        None => out.put_i32(-1),
    }
}

/// pgvector's binary `vector`: dimensions (int16), unused (int16), float4s; or
/// `halfvec` with IEEE half floats.
pub fn vector_value(v: &[f32], half: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + v.len() * if half { 2 } else { 4 });
    b.extend_from_slice(&(v.len() as i16).to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    for x in v {
        if half {
            b.extend_from_slice(&half::f16::from_f32(*x).to_bits().to_be_bytes());
        } else {
            b.extend_from_slice(&x.to_be_bytes());
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn rows_split_across_any_message_boundary() {
        let mut stream = BytesMut::new();
        stream.put_slice(&header());
        for (id, text) in [(&b"\0\0\0\x01"[..], Some(&b"hello"[..])), (b"\0\0\0\x02", None), (b"\0\0\0\x03", Some(b""))] {
            stream.put_i16(2);
            put_field(&mut stream, Some(id));
            put_field(&mut stream, text);
        }
        stream.put_slice(&trailer());
        for step in [1, 3, 7, stream.len()] {
            let mut s = RowSplitter::default();
            let mut rows = Vec::new();
            for piece in stream.chunks(step) {
                s.push(piece);
                while let Some(r) = s.next_row().unwrap() {
                    rows.push(r);
                }
            }
            assert!(s.ended());
            assert_eq!(rows.len(), 3, "step {step}");
            assert_eq!(rows[0].last.as_deref(), Some(&b"hello"[..]));
            assert_eq!(rows[1].last, None);
            assert_eq!(rows[2].last.as_deref(), Some(&b""[..]));
            assert_eq!(&rows[1].kept[..], b"\0\0\0\x04\0\0\0\x02");
            let mut out = BytesMut::new();
            put_row_with(&mut out, &rows[0], Some(b"xy"));
            assert_eq!(&out[..], b"\0\x02\0\0\0\x04\0\0\0\x01\0\0\0\x02xy");
        }
    }

    #[test]
    fn the_last_few_fields_come_off_together() {
        let mut stream = BytesMut::new();
        stream.put_slice(&header());
        stream.put_i16(4);
        put_field(&mut stream, Some(b"a"));
        put_field(&mut stream, Some(b"key"));
        put_field(&mut stream, None);
        put_field(&mut stream, Some(b"text"));
        stream.put_slice(&trailer());
        let mut s = RowSplitter::with_tail(2);
        s.push(&stream);
        let row = s.next_row().unwrap().unwrap();
        assert_eq!((row.kept_fields, &row.kept[..]), (1, &b"\0\0\0\x01a"[..]));
        assert_eq!(row.tail, [Some(Bytes::from_static(b"key")), None]);
        assert_eq!(row.last.as_deref(), Some(&b"text"[..]));
        assert!(RowSplitter::with_tail(4).next_row().unwrap().is_none(), "no data yet");
    }

    #[test]
    fn vectors_in_pgvector_binary_form() {
        assert_eq!(vector_value(&[1.0, -2.0], false), [0, 2, 0, 0, 0x3f, 0x80, 0, 0, 0xc0, 0, 0, 0]);
        assert_eq!(vector_value(&[1.0, -2.0], true), [0, 2, 0, 0, 0x3c, 0x00, 0xc0, 0x00]);
    }
}
