//! COPY streams from source to target. Bytes go through untouched: the source's
//! `COPY ... TO STDOUT` messages are gathered into batches for the target's
//! `COPY ... FROM STDIN`, so memory holds a few batches, never a table.

use bytes::{Bytes, BytesMut};
use futures_util::{pin_mut, SinkExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::conn::Session;
use crate::catalog::Table;
use crate::error::{Context, PgError};
use crate::sql::column_list;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyFormat {
    /// Raw passthrough; needs identical binary representations on both sides.
    Binary,
    /// For types whose binary form carries cluster-specific OIDs.
    Text,
}

impl CopyFormat {
    pub fn for_table(t: &Table) -> CopyFormat {
        if t.copy_columns().any(|c| c.oid_in_binary) {
            CopyFormat::Text
        } else {
            CopyFormat::Binary
        }
    }

    fn option(self) -> &'static str {
        match self {
            CopyFormat::Binary => "(FORMAT binary)",
            CopyFormat::Text => "(FORMAT text)",
        }
    }
}

/// `COPY (SELECT cols FROM ONLY t WHERE predicate) TO STDOUT`, or the plain table
/// form when the whole table is wanted.
pub fn copy_out_sql(t: &Table, predicate: Option<&str>, format: CopyFormat) -> String {
    let cols = column_list(t.copy_columns().map(|c| c.name.as_str()));
    // A cast column is selected as the target type, so its binary form matches.
    let casts = t.copy_columns().any(|c| c.cast_to.is_some());
    let select = || t.copy_columns().map(|c| c.select_expr()).collect::<Vec<_>>().join(", ");
    match predicate {
        Some(p) => format!("COPY (SELECT {} FROM ONLY {} WHERE {p}) TO STDOUT {}", select(), t.qualified(), format.option()),
        None if casts => format!("COPY (SELECT {} FROM ONLY {}) TO STDOUT {}", select(), t.qualified(), format.option()),
        None => format!("COPY {} ({cols}) TO STDOUT {}", t.qualified(), format.option()),
    }
}

pub fn copy_in_sql(t: &Table, format: CopyFormat) -> String {
    let cols = column_list(t.copy_columns().map(|c| c.name.as_str()));
    format!("COPY {} ({cols}) FROM STDIN {}", t.qualified(), format.option())
}

/// What went through one pipe.
#[derive(Clone, Copy, Debug, Default)]
pub struct PipeStats {
    pub rows: u64,
    pub bytes: u64,
}

/// The server sends a CopyData message per row; gathering them into larger writes
/// saves a syscall and a message header per row on the target side.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Streams `COPY ... TO STDOUT` from `source` into `out` in pieces of about
/// [`WRITE_BATCH_BYTES`]. Returns false when the receiver went away first (whoever
/// reads `out` failed and says why), true when every row was sent.
pub async fn copy_out_batched(src: &Session, out_sql: &str, out: &mpsc::Sender<Bytes>) -> Result<bool, PgError> {
    let src_name = src.endpoint();
    let stream = src.copy_out(out_sql).await.context(&src_name, || format!("start {out_sql}"))?;
    pin_mut!(stream);
    let mut batch = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    while let Some(data) = stream.try_next().await.context(&src_name, || format!("read {out_sql}"))? {
        batch.extend_from_slice(&data);
        if batch.len() >= WRITE_BATCH_BYTES && out.send(batch.split().freeze()).await.is_err() {
            return Ok(false);
        }
    }
    Ok(batch.is_empty() || out.send(batch.split().freeze()).await.is_ok())
}

/// Writes what arrives on `received` into `COPY ... FROM STDIN` on `target` (inside
/// whatever transaction the caller holds) until the sender is dropped.
/// `progress(bytes)` is called with the running total as data goes.
pub async fn copy_in_received(
    dst: &Session,
    in_sql: &str,
    received: &mut mpsc::Receiver<Bytes>,
    mut progress: impl FnMut(u64),
) -> Result<PipeStats, PgError> {
    let dst_name = dst.endpoint();
    let sink = dst.copy_in::<_, Bytes>(in_sql).await.context(&dst_name, || format!("start {in_sql}"))?;
    pin_mut!(sink);
    let mut bytes = 0u64;
    while let Some(data) = received.recv().await {
        bytes += data.len() as u64;
        sink.send(data).await.context(&dst_name, || format!("write {in_sql}"))?;
        progress(bytes);
    }
    let rows = sink.finish().await.context(&dst_name, || format!("finish {in_sql}"))?;
    Ok(PipeStats { rows, bytes })
}

/// Copies what `out_sql` reads on `src` into `in_sql` on `dst` (inside whatever
/// transactions the callers hold), a few batches in flight.
pub async fn pipe(src: &Session, out_sql: &str, dst: &Session, in_sql: &str) -> Result<PipeStats, PgError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let read = async move {
        let sent = copy_out_batched(src, out_sql, &tx).await;
        drop(tx);
        sent
    };
    let (sent, written) = tokio::join!(read, copy_in_received(dst, in_sql, &mut rx, |_| {}));
    let stats = written?;
    sent?;
    Ok(stats)
}
