//! A replication stream read and decoded on its own task, so the source keeps
//! sending (and the walsender keeps decoding) while the target applies the previous
//! batch. The queue between them is bounded: a slow target slows the reader down.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::PgError;
use crate::lsn::Lsn;
use crate::pgoutput::{self, LogicalMessage};
use crate::replication::{ReplicationConn, WalEvent};

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
    loop {
        tokio::select! {
            event = conn.next_event() => {
                let item = match event {
                    Ok(WalEvent::Data { wal_start, data, .. }) => pgoutput::decode(data)
                        .map(|message| StreamItem::Message { wal_start, message })
                        .map_err(|e| PgError::Protocol { endpoint: String::new(), message: e.to_string() }),
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
    // Drain updates sent just before close, then report the final position.
    while let Ok(s) = status_rx.try_recv() {
        last = s;
    }
    let _ = conn.send_status(last.0, last.1, false).await;
    conn.close().await;
}
