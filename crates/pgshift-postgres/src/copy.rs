//! COPY streams from source to target. Bytes go through untouched: the source's
//! `COPY ... TO STDOUT` messages are fed to the target's `COPY ... FROM STDIN` as they
//! arrive, so memory holds a few messages, never a table.

use bytes::{Bytes, BytesMut};
use futures_util::{pin_mut, SinkExt, TryStreamExt};
use tokio_postgres::Client;

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

/// Streams one COPY from `source` into `target`. Both clients should already be
/// inside the transactions the caller wants (snapshot on the source, chunk + its
/// checkpoint on the target). `progress(bytes)` is called as data moves.
pub async fn pipe(
    source: (&Client, &str),
    target: (&Client, &str),
    out_sql: &str,
    in_sql: &str,
    mut progress: impl FnMut(u64),
) -> Result<PipeStats, PgError> {
    let (src, src_name) = source;
    let (dst, dst_name) = target;
    let stream = src.copy_out(out_sql).await.context(&src_name, || format!("start {out_sql}"))?;
    let sink = dst.copy_in::<_, Bytes>(in_sql).await.context(&dst_name, || format!("start {in_sql}"))?;
    pin_mut!(stream);
    pin_mut!(sink);
    let mut bytes = 0u64;
    let mut batch = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    while let Some(data) = stream.try_next().await.context(&src_name, || format!("read {out_sql}"))? {
        bytes += data.len() as u64;
        batch.extend_from_slice(&data);
        if batch.len() >= WRITE_BATCH_BYTES {
            sink.send(batch.split().freeze()).await.context(&dst_name, || format!("write {in_sql}"))?;
            progress(bytes);
        }
    }
    if !batch.is_empty() {
        sink.send(batch.split().freeze()).await.context(&dst_name, || format!("write {in_sql}"))?;
    }
    progress(bytes);
    let rows = sink.finish().await.context(&dst_name, || format!("finish {in_sql}"))?;
    Ok(PipeStats { rows, bytes })
}
