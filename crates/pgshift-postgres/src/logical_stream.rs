//! A replication stream read and decoded on its own task, so the source keeps
//! sending (and the walsender keeps decoding) while the target applies the previous
//! batch. The queue between them is bounded: a slow target slows the reader down.
//! Streamed transactions (protocol 2) are kept in a [`Spool`] until they end and
//! come out as ordinary ones (Begin, changes, Commit) at their commit.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::PgError;
use crate::lsn::Lsn;
use crate::pgoutput::{self, LogicalMessage};
use crate::replication::{ReplicationConn, WalEvent};
use crate::spool::{Spool, SpoolError};

/// While a long streamed transaction is handed on, the walsender hears from us this often.
const STATUS_DURING_REPLAY: std::time::Duration = std::time::Duration::from_secs(5);

/// Where streamed transactions are spooled: PGSHIFT_SPOOL_DIR, else the system's
/// temporary directory.
fn spool_parent() -> std::path::PathBuf {
    std::env::var_os("PGSHIFT_SPOOL_DIR").map(Into::into).unwrap_or_else(std::env::temp_dir)
}

fn spool_error(e: SpoolError) -> PgError {
    PgError::Protocol { endpoint: String::new(), message: format!("streamed transaction: {e}") }
}

fn decode_error(e: pgoutput::DecodeError) -> PgError {
    PgError::Protocol { endpoint: String::new(), message: e.to_string() }
}

#[derive(Debug)]
pub enum StreamItem {
    Message { wal_start: Lsn, message: LogicalMessage },
    /// The source's end of WAL; everything before it that concerns us was sent.
    Keepalive { wal_end: Lsn },
}

pub struct LogicalStream {
    items: mpsc::Receiver<Result<StreamItem, PgError>>,
    status: mpsc::UnboundedSender<(Lsn, Lsn)>,
    task: JoinHandle<()>,
}

impl LogicalStream {
    /// Takes over a connection on which START_REPLICATION succeeded.
    pub fn spawn(conn: ReplicationConn, capacity: usize) -> LogicalStream {
        let (tx, items) = mpsc::channel(capacity);
        let (status, status_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(read(conn, tx, status_rx));
        LogicalStream { items, status, task }
    }

    /// The next item; None once the reader stopped after an error it already sent.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<StreamItem, PgError>> {
        self.items.recv().await
    }

    /// Tells the source what was received and what the target durably holds.
    pub fn confirm(&self, received: Lsn, flushed: Lsn) {
        let _ = self.status.send((received, flushed));
    }

    /// Sends the last status and closes the connection.
    pub async fn close(self) {
        drop(self.status);
        drop(self.items);
        let _ = self.task.await;
    }
}

async fn read(mut conn: ReplicationConn, tx: mpsc::Sender<Result<StreamItem, PgError>>, mut status_rx: mpsc::UnboundedReceiver<(Lsn, Lsn)>) {
    let mut last = (Lsn::default(), Lsn::default());
    let mut spool: Option<Spool> = None;
    loop {
        tokio::select! {
            event = conn.next_event() => {
                let item = match event {
                    Ok(WalEvent::Data { wal_start, data, .. }) => {
                        match streamed(&mut spool, &data) {
                            Ok(Streamed::Kept) => continue,
                            Ok(Streamed::Committed { xid, commit_lsn, end_lsn, commit_time }) => {
                                let begin = LogicalMessage::Begin { final_lsn: commit_lsn, commit_time, xid };
                                let commit = LogicalMessage::Commit { commit_lsn, end_lsn, commit_time };
                                match replay(spool.as_mut(), xid, wal_start, (begin, commit), &tx, (&mut conn, &mut status_rx, &mut last)).await {
                                    Ok(true) => continue,
                                    Ok(false) => break,
                                    Err(e) => Err(e),
                                }
                            }
                            Ok(Streamed::No) => pgoutput::decode(data)
                                .map(|message| StreamItem::Message { wal_start, message })
                                .map_err(decode_error),
                            Err(e) => Err(e),
                        }
                    }
                    Ok(WalEvent::Keepalive { wal_end, reply_requested }) => {
                        if reply_requested {
                            if let Err(e) = conn.send_status(last.0.max(wal_end), last.1, false).await {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                        Ok(StreamItem::Keepalive { wal_end })
                    }
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
            update = status_rx.recv() => match update {
                Some(s) => {
                    last = s;
                    if let Err(e) = conn.send_status(s.0, s.1, false).await {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                None => break,
            },
        }
    }
    drop(spool);
    // Drain updates sent just before close, then report the final position.
    while let Ok(s) = status_rx.try_recv() {
        last = s;
    }
    let _ = conn.send_status(last.0, last.1, false).await;
    conn.close().await;
}

enum Streamed {
    /// Not part of a streamed transaction.
    No,
    /// Spooled (a block's message, its start or stop, an abort).
    Kept,
    Committed { xid: u32, commit_lsn: Lsn, end_lsn: Lsn, commit_time: i64 },
}

/// Keeps what belongs to a streamed transaction in the spool.
fn streamed(spool: &mut Option<Spool>, data: &bytes::Bytes) -> Result<Streamed, PgError> {
    if let Some(s) = spool.as_mut().filter(|s| s.in_block()) {
        if data.first() == Some(&b'E') {
            s.stop().map_err(spool_error)?;
        } else {
            s.append(data).map_err(spool_error)?;
        }
        return Ok(Streamed::Kept);
    }
    if !matches!(data.first(), Some(b'S' | b'A' | b'c')) {
        return Ok(Streamed::No);
    }
    let message = pgoutput::decode(data.clone()).map_err(decode_error)?;
    match message {
        LogicalMessage::StreamStart { xid, .. } => {
            if spool.is_none() {
                *spool = Some(Spool::new(&spool_parent()).map_err(spool_error)?);
            }
            spool.as_mut().expect("made above").start(xid).map_err(spool_error)?;
        }
        LogicalMessage::StreamAbort { xid, subxid } => {
            if let Some(s) = spool.as_mut() {
                s.abort(xid, subxid).map_err(spool_error)?;
            }
        }
        LogicalMessage::StreamCommit { xid, commit_lsn, end_lsn, commit_time } => {
            return Ok(Streamed::Committed { xid, commit_lsn, end_lsn, commit_time });
        }
        _ => return Ok(Streamed::No),
    }
    Ok(Streamed::Kept)
}

/// Hands a committed streamed transaction on as Begin, its changes, Commit, telling
/// the walsender where we are while it lasts (no spool: nothing was streamed on this
/// connection, so it has no changes). False when the receiver is gone.
async fn replay(
    spool: Option<&mut Spool>,
    xid: u32,
    wal_start: Lsn,
    (begin, commit): (LogicalMessage, LogicalMessage),
    tx: &mpsc::Sender<Result<StreamItem, PgError>>,
    (conn, status_rx, last): (&mut ReplicationConn, &mut mpsc::UnboundedReceiver<(Lsn, Lsn)>, &mut (Lsn, Lsn)),
) -> Result<bool, PgError> {
    let mut replay = match spool {
        Some(s) => Some(s.replay(xid).map_err(spool_error)?),
        None => None,
    };
    let item = |message| Ok(StreamItem::Message { wal_start, message });
    if tx.send(item(begin)).await.is_err() {
        return Ok(false);
    }
    let mut told = std::time::Instant::now();
    while let Some(r) = replay.as_mut() {
        let Some(data) = r.next_message().map_err(spool_error)? else { break };
        let message = pgoutput::decode(data).map_err(decode_error)?;
        if tx.send(item(message)).await.is_err() {
            return Ok(false);
        }
        if told.elapsed() >= STATUS_DURING_REPLAY {
            while let Ok(s) = status_rx.try_recv() {
                *last = s;
            }
            conn.send_status(last.0, last.1, false).await?;
            told = std::time::Instant::now();
        }
    }
    Ok(tx.send(item(commit)).await.is_ok())
}
