//! Streamed transactions (pgoutput protocol 2) kept on disk until they end. A large
//! transaction's changes arrive while it still runs, in blocks; each block is
//! appended to a file of its own transaction, and when its Stream Commit arrives the
//! file is read back one message at a time and handed on as an ordinary transaction.
//! So the source decodes and sends a large transaction while it runs (the target
//! starts applying at its commit instead of after the walsender decoded it all),
//! memory stays bounded whatever its size, and a Stream Abort deletes the file: an
//! aborted transaction never reaches the target. A rolled-back subtransaction's
//! changes are skipped on the way back; its Relation and Type messages are kept
//! (later changes of the transaction may rely on them).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

use crate::pgoutput::{streamed_xid, DecodeError};

static SPOOLS: AtomicU64 = AtomicU64::new(0);
const PREFIX: &str = "pgshift-spool-";

/// Removes the spools of processes that no longer run (known where /proc is).
fn remove_orphans(parent: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(PREFIX)).and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// One stream's spool: a directory of one file per streamed transaction, removed
/// when the spool is dropped (a new connection gets every in-progress transaction
/// again from its start).
pub struct Spool {
    dir: PathBuf,
    /// The transaction whose block is being received.
    open: Option<BufWriter<File>>,
    /// Per transaction, its subtransactions that were rolled back.
    aborted: HashMap<u32, HashSet<u32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool file {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.display().to_string(), source }
}

impl Spool {
    /// A spool in `parent` (the system's temporary directory unless PGSHIFT_SPOOL_DIR
    /// says otherwise). Spools that killed processes left there are removed.
    pub fn new(parent: &Path) -> Result<Spool, SpoolError> {
        remove_orphans(parent);
        let dir = parent.join(format!("{PREFIX}{}-{}", std::process::id(), SPOOLS.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        Ok(Spool { dir, open: None, aborted: HashMap::new() })
    }

    fn path(&self, xid: u32) -> PathBuf {
        self.dir.join(format!("{xid}.changes"))
    }

    /// Stream Start: the messages up to Stream Stop belong to `xid`.
    pub fn start(&mut self, xid: u32) -> Result<(), SpoolError> {
        let path = self.path(xid);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_error(&path))?;
        self.open = Some(BufWriter::with_capacity(256 << 10, file));
        Ok(())
    }

    pub fn in_block(&self) -> bool {
        self.open.is_some()
    }

    /// A message inside the block, as received (tag, xid, body): stored as
    /// length, xid, tag and body, ready for [`crate::pgoutput::decode`].
    pub fn append(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        let xid = streamed_xid(data)?;
        let dir = self.dir.clone();
        let out = self.open.as_mut().expect("append inside a block");
        let len = (data.len() - 4) as u32;
        let write = |out: &mut BufWriter<File>| -> io::Result<()> {
            out.write_all(&len.to_be_bytes())?;
            out.write_all(&xid.to_be_bytes())?;
            out.write_all(&data[..1])?;
            out.write_all(&data[5..])
        };
        write(out).map_err(io_error(&dir))
    }

    /// Stream Stop: the block is complete.
    pub fn stop(&mut self) -> Result<(), SpoolError> {
        if let Some(mut out) = self.open.take() {
            out.flush().map_err(io_error(&self.dir))?;
        }
        Ok(())
    }

    /// Stream Abort: the whole transaction, or one subtransaction, was rolled back.
    pub fn abort(&mut self, xid: u32, subxid: u32) -> Result<(), SpoolError> {
        if xid == subxid {
            self.aborted.remove(&xid);
            let path = self.path(xid);
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(&path)(e)),
                _ => Ok(()),
            };
        }
        self.aborted.entry(xid).or_default().insert(subxid);
        Ok(())
    }

    /// Stream Commit: the transaction's messages, in order, without those of its
    /// rolled-back subtransactions. The file goes when the reader is dropped.
    pub fn replay(&mut self, xid: u32) -> Result<Replay, SpoolError> {
        let path = self.path(xid);
        let skip = self.aborted.remove(&xid).unwrap_or_default();
        // A transaction streamed in no block (nothing of ours changed) has no file.
        let reader = match File::open(&path) {
            Ok(f) => Some(BufReader::with_capacity(256 << 10, f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&path)(e)),
        };
        Ok(Replay { reader, skip, path })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.open = None;
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A committed streamed transaction read back from its file.
pub struct Replay {
    reader: Option<BufReader<File>>,
    skip: HashSet<u32>,
    path: PathBuf,
}

impl Replay {
    /// The next message, ready to decode; None at the end.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, SpoolError> {
        let Some(reader) = self.reader.as_mut() else { return Ok(None) };
        loop {
            let mut head = [0u8; 8];
            match reader.read_exact(&mut head) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                other => other.map_err(io_error(&self.path))?,
            }
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let xid = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            let mut message = BytesMut::zeroed(len);
            reader.read_exact(&mut message).map_err(io_error(&self.path))?;
            // Schema messages stay: later changes may rely on them.
            if self.skip.contains(&xid) && !matches!(message.first(), Some(b'R' | b'Y')) {
                continue;
            }
            return Ok(Some(message.freeze()));
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.reader = None;
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn streamed(tag: u8, xid: u32, body: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_u32(xid);
        b.put_slice(body);
        b.to_vec()
    }

    #[test]
    fn keeps_blocks_until_commit_and_drops_what_was_rolled_back() {
        let mut spool = Spool::new(&std::env::temp_dir()).unwrap();
        let dir = spool.dir.clone();
        spool.start(10).unwrap();
        spool.append(&streamed(b'R', 11, b"rel")).unwrap();
        spool.append(&streamed(b'I', 10, b"one")).unwrap();
        spool.stop().unwrap();
        spool.start(20).unwrap();
        spool.append(&streamed(b'I', 20, b"other")).unwrap();
        spool.stop().unwrap();
        spool.start(10).unwrap();
        spool.append(&streamed(b'I', 11, b"in savepoint")).unwrap();
        spool.append(&streamed(b'I', 10, b"two")).unwrap();
        spool.stop().unwrap();
        // The savepoint (subtransaction 11) was rolled back; transaction 20 aborted.
        spool.abort(10, 11).unwrap();
        spool.abort(20, 20).unwrap();
        let mut replay = spool.replay(10).unwrap();
        let mut got = Vec::new();
        while let Some(m) = replay.next_message().unwrap() {
            got.push(m.to_vec());
        }
        assert_eq!(got, [b"Rrel".to_vec(), b"Ione".to_vec(), b"Itwo".to_vec()]);
        drop(replay);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "files go with their transactions");
        assert!(spool.replay(30).unwrap().next_message().unwrap().is_none(), "a transaction with no block replays nothing");
        drop(spool);
        assert!(!dir.exists());
    }
}
