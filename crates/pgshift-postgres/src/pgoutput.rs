//! Decoder for the pgoutput logical replication protocol (versions 1 and 2): the
//! messages inside XLogData. Values stay as the bytes the server sent (text or binary
//! form), sliced out of the message without copying. Version 2 adds streamed
//! transactions: a large transaction arrives while in progress, in blocks between
//! Stream Start and Stream Stop whose messages carry the (sub)transaction's xid after
//! their tag ([`streamed_xid`]), and ends with Stream Commit or Stream Abort.

use bytes::{Buf, Bytes};

use crate::lsn::Lsn;

#[derive(Clone, Debug, PartialEq)]
pub enum Datum {
    Null,
    /// An unchanged TOASTed value the server did not send: keep what the target has.
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

impl Datum {
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Datum::Text(b) | Datum::Binary(b) => Some(b),
            Datum::Null | Datum::Unchanged => None,
        }
    }
}

pub type Tuple = Vec<Datum>;

#[derive(Clone, Debug, PartialEq)]
pub struct RelationColumn {
    /// Part of the replica identity.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// d default, n nothing, f full, i index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// Which old tuple an update or delete carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldKind {
    /// 'K': only the replica identity columns (others null).
    Key,
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LogicalMessage {
    Begin { final_lsn: Lsn, commit_time: i64, xid: u32 },
    Commit { commit_lsn: Lsn, end_lsn: Lsn, commit_time: i64 },
    Origin { lsn: Lsn, name: String },
    Relation(Relation),
    Type { oid: u32, schema: String, name: String },
    Insert { relation: u32, new: Tuple },
    Update { relation: u32, old: Option<(OldKind, Tuple)>, new: Tuple },
    Delete { relation: u32, old: (OldKind, Tuple) },
    Truncate { relations: Vec<u32>, cascade: bool, restart_identity: bool },
    Message { transactional: bool, lsn: Lsn, prefix: String, content: Bytes },
    /// Protocol 2: a block of an in-progress transaction's changes follows.
    StreamStart { xid: u32, first: bool },
    StreamStop,
    StreamCommit { xid: u32, commit_lsn: Lsn, end_lsn: Lsn, commit_time: i64 },
    /// The whole transaction (`subxid == xid`) or one subtransaction was rolled back.
    StreamAbort { xid: u32, subxid: u32 },
}

/// Inside a stream block: the xid of the (sub)transaction a message belongs to, which
/// follows its tag; [`decode`] reads the message once the 4 bytes are taken out.
pub fn streamed_xid(data: &[u8]) -> Result<u32, DecodeError> {
    match data.get(1..5) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(short("streamed message xid")),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub struct DecodeError(String);

fn short(what: &str) -> DecodeError {
    DecodeError(format!("message ends inside {what}"))
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize, what: &str) -> Result<(), DecodeError> {
        if self.0.remaining() < n {
            return Err(short(what));
        }
        Ok(())
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.0.get_u8())
    }
    fn i16(&mut self, what: &str) -> Result<i16, DecodeError> {
        self.need(2, what)?;
        Ok(self.0.get_i16())
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.0.get_u32())
    }
    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        self.need(4, what)?;
        Ok(self.0.get_i32())
    }
    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        self.need(8, what)?;
        Ok(self.0.get_i64())
    }
    fn lsn(&mut self, what: &str) -> Result<Lsn, DecodeError> {
        self.need(8, what)?;
        Ok(Lsn(self.0.get_u64()))
    }
    fn bytes(&mut self, n: usize, what: &str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        Ok(self.0.split_to(n))
    }
    fn cstr(&mut self, what: &str) -> Result<String, DecodeError> {
        let end = self.0.iter().position(|&b| b == 0).ok_or_else(|| short(what))?;
        let s = self.0.split_to(end);
        self.0.advance(1);
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError(format!("{what} is not UTF-8")))
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.i16("tuple column count")?;
        let mut tuple = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            let datum = match self.u8("column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                kind @ (b't' | b'b') => {
                    let len = self.i32("column length")?;
                    let len = usize::try_from(len).map_err(|_| DecodeError(format!("negative column length {len}")))?;
                    let data = self.bytes(len, "column value")?;
                    if kind == b't' {
                        Datum::Text(data)
                    } else {
                        Datum::Binary(data)
                    }
                }
                other => return Err(DecodeError(format!("unknown column kind {:?}", other as char))),
            };
            tuple.push(datum);
        }
        Ok(tuple)
    }

    fn old_tuple(&mut self, tag: u8) -> Result<(OldKind, Tuple), DecodeError> {
        let kind = match tag {
            b'K' => OldKind::Key,
            b'O' => OldKind::Full,
            other => return Err(DecodeError(format!("expected old tuple K or O, got {:?}", other as char))),
        };
        Ok((kind, self.tuple()?))
    }

    fn new_tuple(&mut self) -> Result<Tuple, DecodeError> {
        match self.u8("tuple tag")? {
            b'N' => self.tuple(),
            other => Err(DecodeError(format!("expected new tuple N, got {:?}", other as char))),
        }
    }
}

pub fn decode(data: Bytes) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader(data);
    let msg = match r.u8("message tag")? {
        b'B' => LogicalMessage::Begin { final_lsn: r.lsn("begin")?, commit_time: r.i64("begin")?, xid: r.u32("begin")? },
        b'C' => {
            r.u8("commit flags")?;
            LogicalMessage::Commit { commit_lsn: r.lsn("commit")?, end_lsn: r.lsn("commit")?, commit_time: r.i64("commit")? }
        }
        b'O' => LogicalMessage::Origin { lsn: r.lsn("origin")?, name: r.cstr("origin name")? },
        b'R' => {
            let oid = r.u32("relation")?;
            let schema = r.cstr("relation schema")?;
            let name = r.cstr("relation name")?;
            let replica_identity = r.u8("replica identity")?;
            let n = r.i16("relation column count")?;
            let mut columns = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let flags = r.u8("column flags")?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name: r.cstr("column name")?,
                    type_oid: r.u32("column type")?,
                    type_modifier: r.i32("column type modifier")?,
                });
            }
            LogicalMessage::Relation(Relation { oid, schema, name, replica_identity, columns })
        }
        b'Y' => LogicalMessage::Type { oid: r.u32("type")?, schema: r.cstr("type schema")?, name: r.cstr("type name")? },
        b'I' => {
            let relation = r.u32("insert")?;
            LogicalMessage::Insert { relation, new: r.new_tuple()? }
        }
        b'U' => {
            let relation = r.u32("update")?;
            let (old, new) = match r.u8("update tuple tag")? {
                b'N' => (None, r.tuple()?),
                tag => (Some(r.old_tuple(tag)?), r.new_tuple()?),
            };
            LogicalMessage::Update { relation, old, new }
        }
        b'D' => {
            let relation = r.u32("delete")?;
            let tag = r.u8("delete tuple tag")?;
            LogicalMessage::Delete { relation, old: r.old_tuple(tag)? }
        }
        b'T' => {
            let n = r.u32("truncate")?;
            let options = r.u8("truncate options")?;
            let relations = (0..n).map(|_| r.u32("truncate relation")).collect::<Result<_, _>>()?;
            LogicalMessage::Truncate { relations, cascade: options & 1 != 0, restart_identity: options & 2 != 0 }
        }
        b'M' => {
            let transactional = r.u8("message flags")? & 1 == 1;
            let lsn = r.lsn("message")?;
            let prefix = r.cstr("message prefix")?;
            let len = r.u32("message length")? as usize;
            LogicalMessage::Message { transactional, lsn, prefix, content: r.bytes(len, "message content")? }
        }
        b'S' => LogicalMessage::StreamStart { xid: r.u32("stream start")?, first: r.u8("stream start")? == 1 },
        b'E' => LogicalMessage::StreamStop,
        b'c' => {
            let xid = r.u32("stream commit")?;
            r.u8("stream commit flags")?;
            LogicalMessage::StreamCommit { xid, commit_lsn: r.lsn("stream commit")?, end_lsn: r.lsn("stream commit")?, commit_time: r.i64("stream commit")? }
        }
        b'A' => LogicalMessage::StreamAbort { xid: r.u32("stream abort")?, subxid: r.u32("stream abort")? },
        other => return Err(DecodeError(format!("unknown message tag {:?}", other as char))),
    };
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn text(b: &mut BytesMut, s: &str) {
        b.put_u8(b't');
        b.put_i32(s.len() as i32);
        b.put_slice(s.as_bytes());
    }

    #[test]
    fn decodes_relation_and_update_with_old_key_and_unchanged_toast() {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(16384);
        b.put_slice(b"public\0notes\0");
        b.put_u8(b'd');
        b.put_i16(2);
        b.put_u8(1);
        b.put_slice(b"id\0");
        b.put_u32(20);
        b.put_i32(-1);
        b.put_u8(0);
        b.put_slice(b"body\0");
        b.put_u32(25);
        b.put_i32(-1);
        let rel = decode(b.split().freeze()).unwrap();
        let LogicalMessage::Relation(rel) = rel else { panic!("{rel:?}") };
        assert_eq!((rel.schema.as_str(), rel.name.as_str(), rel.replica_identity), ("public", "notes", b'd'));
        assert!(rel.columns[0].key && !rel.columns[1].key);

        b.put_u8(b'U');
        b.put_u32(16384);
        b.put_u8(b'K');
        b.put_i16(2);
        text(&mut b, "1");
        b.put_u8(b'n');
        b.put_u8(b'N');
        b.put_i16(2);
        text(&mut b, "2");
        b.put_u8(b'u');
        let msg = decode(b.split().freeze()).unwrap();
        let expected_old = (OldKind::Key, vec![Datum::Text(Bytes::from("1")), Datum::Null]);
        let expected_new = vec![Datum::Text(Bytes::from("2")), Datum::Unchanged];
        assert_eq!(msg, LogicalMessage::Update { relation: 16384, old: Some(expected_old), new: expected_new });
    }

    #[test]
    fn decodes_multi_relation_truncate_and_messages() {
        let mut b = BytesMut::new();
        b.put_u8(b'T');
        b.put_u32(2);
        b.put_u8(3);
        b.put_u32(1);
        b.put_u32(2);
        let msg = decode(b.split().freeze()).unwrap();
        assert_eq!(msg, LogicalMessage::Truncate { relations: vec![1, 2], cascade: true, restart_identity: true });

        b.put_u8(b'M');
        b.put_u8(0);
        b.put_u64(0x1_0000_0010);
        b.put_slice(b"pgshift.fence\0");
        b.put_u32(2);
        b.put_slice(b"42");
        let msg = decode(b.split().freeze()).unwrap();
        let content = Bytes::from("42");
        assert_eq!(msg, LogicalMessage::Message { transactional: false, lsn: Lsn(0x1_0000_0010), prefix: "pgshift.fence".into(), content });
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(7);
        b.put_u8(b'N');
        b.put_i16(1);
        b.put_u8(b't');
        b.put_i32(10);
        b.put_slice(b"abc");
        let err = decode(b.freeze()).unwrap_err();
        assert!(err.to_string().contains("column value"), "{err}");
    }
}
