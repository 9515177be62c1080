//! The COPY pipe for a table that gets vectors: the source's binary COPY carries the
//! row's columns plus the text to embed as one extra field; rows are split off the
//! stream, batched, embedded (cache first), and written to the target with the
//! vector in place of the text. Reader, embedder and writer run at once, joined by
//! bounded queues, so I/O hides behind the embedding.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{pin_mut, SinkExt, StreamExt, TryStreamExt};
use pgshift_postgres::Session;
use pgshift_postgres::catalog::Table;
use pgshift_postgres::copy::PipeStats;
use pgshift_postgres::copy_binary::{header, put_row_with, trailer, vector_value, RowSplitter, SplitRow};
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::{column_list, quote_ident};

use super::chunks::{self, Cutter};
use crate::plan::embedding::ChunkCopy;
use super::{vectors_for, Cache, EmbedPool, EmbeddingSpec};
use crate::error::{Error, Result};

/// Rows per embedding request: large enough for length bucketing to find company,
/// small enough to keep a few batches in flight per worker.
const ROWS_PER_BATCH: usize = 256;
/// Batches being embedded at once per copy worker.
const IN_FLIGHT: usize = 2;

/// Every copied column but the vector column, which the pipe computes.
fn kept_columns<'a>(t: &'a Table, spec: &'a EmbeddingSpec) -> impl Iterator<Item = &'a pgshift_postgres::catalog::Column> {
    t.copy_columns().filter(move |c| c.name != spec.column)
}

pub fn copy_out_sql(t: &Table, spec: &EmbeddingSpec, predicate: Option<&str>) -> String {
    let kept: Vec<String> = kept_columns(t, spec).map(|c| c.select_expr()).collect();
    let cols = if kept.is_empty() { String::new() } else { format!("{}, ", kept.join(", ")) };
    let filter = predicate.map(|p| format!(" WHERE {p}")).unwrap_or_default();
    format!("COPY (SELECT {cols}({})::text FROM ONLY {}{filter}) TO STDOUT (FORMAT binary)", spec.text, t.qualified())
}

pub fn copy_in_sql(t: &Table, spec: &EmbeddingSpec) -> String {
    let cols = column_list(kept_columns(t, spec).map(|c| c.name.as_str()).chain([spec.column.as_str()]));
    format!("COPY {} ({cols}) FROM STDIN (FORMAT binary)", t.qualified())
}

pub struct EmbedTarget<'a> {
    pub pool: &'a EmbedPool,
    pub cache: Cache<'a>,
    pub spec: &'a EmbeddingSpec,
    /// The chunk table the vectors go to, and how texts are cut (None: a column).
    pub chunks: Option<(&'a ChunkCopy, Arc<Cutter>)>,
}

/// A batch of rows as the target takes it.
enum Encoded {
    /// Rows with their vectors, for the table's one COPY.
    Rows(Bytes),
    /// Rows for the table and their chunks for the chunk table, written batch by batch.
    Chunked(chunks::ChunkedBatch),
}

/// Writes a chunk into `in_sql` with its vectors: `stream` is binary COPY data (a
/// PostgreSQL COPY, or rows read from SQLite) whose last field is the text to embed.
/// With a chunk table, each batch's rows are one COPY into `in_sql` and their chunks
/// one into the chunk table, all in the caller's transaction.
pub async fn embed_stream<S>(
    stream: S,
    dst: &Session,
    embed: &EmbedTarget<'_>,
    in_sql: &str,
    name: &str,
    mut progress: impl FnMut(u64),
) -> Result<PipeStats>
where
    S: futures_util::Stream<Item = Result<Bytes>>,
{
    let dst_name = dst.endpoint();
    let (row_tx, row_rx) = tokio::sync::mpsc::channel::<Vec<SplitRow>>(IN_FLIGHT);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Encoded>(IN_FLIGHT);

    let reader = async {
        pin_mut!(stream);
        let mut splitter = RowSplitter::with_tail(embed.chunks.as_ref().map_or(0, |(c, _)| c.tail));
        let mut batch = Vec::with_capacity(ROWS_PER_BATCH);
        let mut bytes = 0u64;
        while let Some(data) = stream.try_next().await? {
            bytes += data.len() as u64;
            splitter.push(&data);
            while let Some(row) = splitter.next_row().map_err(|e| Error::Internal(format!("{name}: {e}")))? {
                batch.push(row);
                if batch.len() == ROWS_PER_BATCH {
                    progress(bytes);
                    if row_tx.send(std::mem::take(&mut batch)).await.is_err() {
                        return Ok(bytes); // the other side failed and says why
                    }
                }
            }
        }
        if !batch.is_empty() {
            let _ = row_tx.send(batch).await;
        }
        drop(row_tx);
        progress(bytes);
        Ok::<_, Error>(bytes)
    };

    let embedder = async {
        let batches = futures_util::stream::unfold(row_rx, |mut rx| async { rx.recv().await.map(|b| (b, rx)) })
            .map(|rows| encode(embed, rows))
            .buffered(IN_FLIGHT);
        pin_mut!(batches);
        while let Some(encoded) = batches.next().await {
            if out_tx.send(encoded?).await.is_err() {
                break;
            }
        }
        drop(out_tx);
        Ok::<_, Error>(())
    };

    let writer = async {
        if let Some((chunk_table, _)) = &embed.chunks {
            let mut rows = 0;
            while let Some(encoded) = out_rx.recv().await {
                let Encoded::Chunked(batch) = encoded else { unreachable!("a chunk table's batches are chunked") };
                rows += copy_batch(dst, in_sql, batch.parents).await?;
                copy_batch(dst, &chunk_table.copy_in, batch.chunks).await?;
            }
            return Ok::<_, Error>(rows);
        }
        let sink = dst.copy_in::<_, Bytes>(in_sql).await.context(&dst_name, || format!("start {in_sql}"))?;
        pin_mut!(sink);
        sink.send(header()).await.context(&dst_name, || format!("write {in_sql}"))?;
        while let Some(encoded) = out_rx.recv().await {
            let Encoded::Rows(data) = encoded else { unreachable!("a column's batches are rows") };
            sink.send(data).await.context(&dst_name, || format!("write {in_sql}"))?;
        }
        sink.send(trailer()).await.context(&dst_name, || format!("write {in_sql}"))?;
        Ok::<_, Error>(sink.finish().await.context(&dst_name, || format!("finish {in_sql}"))?)
    };

    // The first failure ends the chunk; its target transaction is never committed.
    let (bytes, (), rows) = tokio::try_join!(reader, embedder, writer)?;
    Ok(PipeStats { rows, bytes })
}

/// One COPY of a batch's rows (header, rows, trailer); returns the rows written.
async fn copy_batch(dst: &Session, sql: &str, rows: Bytes) -> Result<u64> {
    let name = dst.endpoint();
    let sink = dst.copy_in::<_, Bytes>(sql).await.context(&name, || format!("start {sql}"))?;
    pin_mut!(sink);
    for part in [header(), rows, trailer()] {
        sink.send(part).await.context(&name, || format!("write {sql}"))?;
    }
    Ok(sink.finish().await.context(&name, || format!("finish {sql}"))?)
}

/// The rows with their vectors in place of their texts (or, with a chunk table, the
/// rows and their chunks), as binary COPY data.
async fn encode(embed: &EmbedTarget<'_>, rows: Vec<SplitRow>) -> Result<Encoded> {
    if let Some((copy, cutter)) = &embed.chunks {
        return Ok(Encoded::Chunked(chunks::encode(embed.pool, &embed.cache, embed.spec, copy, cutter.clone(), rows).await?));
    }
    let texts: Vec<Option<String>> =
        rows.iter().map(|r| r.last.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())).collect();
    let vectors = vectors_for(embed.pool, &embed.cache, embed.spec, &texts).await?;
    let mut out = BytesMut::with_capacity(rows.len() * (64 + embed.spec.dims * 4));
    for (row, vector) in rows.iter().zip(vectors) {
        let value = vector.map(|v| vector_value(&v, embed.spec.halfvec));
        put_row_with(&mut out, row, value.as_deref());
    }
    Ok(Encoded::Rows(out.freeze()))
}

/// `ALTER TABLE` that gives the target table the vector column in the spec's type
/// (the source's column, if any, may hold another model's vectors or none).
pub fn vector_column_ddl(t: &Table, spec: &EmbeddingSpec, vector_schema: &str) -> String {
    let col = quote_ident(&spec.column);
    let drop = if t.columns.iter().any(|c| c.name == spec.column) { format!("DROP COLUMN {col}, ") } else { String::new() };
    format!("ALTER TABLE {} {drop}ADD COLUMN {col} {}", t.qualified(), spec.column_type(vector_schema))
}
