//! `pgshift.chunks` and `pgshift.copy_tables`: a run's chunks, and the copy queue
//! that the run's own workers and `pgshift worker` processes take chunks from.

use pgshift_postgres::conn::in_transaction;

use super::Store;
use super::runs::{run_from, RUN_COLUMNS};
use crate::error::{Error, Result};
use crate::plan::chunks::SplitKind;
use crate::plan::embedding::{ChunkCopy, EmbeddingSpec};
use crate::run::Run;

/// One chunk as the run records it.
#[derive(Clone, Debug)]
pub struct ChunkState {
    /// The table as the source names it (`schema.table`).
    pub table_name: String,
    pub chunk_no: i32,
    pub split: SplitKind,
    pub predicate: Option<String>,
    pub done: bool,
}

/// A table of an open copy: where its rows go on the target.
pub struct CopyTable {
    pub table_name: String,
    pub target: String,
    pub copy_in: String,
    /// The vectors computed on the way (the chunk's last field is their text).
    pub embedding: Option<EmbeddingSpec>,
    /// The chunk table those vectors go to.
    pub chunk_table: Option<ChunkCopy>,
}

/// A chunk still to copy, as [`Store::open_copy`] publishes it.
pub struct ChunkWork {
    pub table_name: String,
    pub chunk_no: i32,
    /// The statement that reads the chunk on the source; None when only the
    /// process that opened the copy can read it (a SQLite file).
    pub copy_out: Option<String>,
    pub clear_first: bool,
}

/// A chunk a worker holds (see [`Store::claim_chunk`]).
#[derive(Clone, Debug)]
pub struct ClaimedChunk {
    pub table_name: String,
    pub chunk_no: i32,
    pub predicate: Option<String>,
    pub copy_out: Option<String>,
    /// Rows of its range may be on the target already: delete them first.
    pub clear_first: bool,
    pub target: String,
    pub copy_in: String,
    pub embedding: Option<EmbeddingSpec>,
    pub chunk_table: Option<ChunkCopy>,
}

impl ClaimedChunk {
    /// The statement that clears the chunk's range on the target, when it must.
    pub fn clear_sql(&self) -> Option<String> {
        self.clear_first.then(|| match &self.predicate {
            Some(p) => format!("DELETE FROM ONLY {} WHERE {p}", self.target),
            None => format!("TRUNCATE ONLY {}", self.target),
        })
    }
}

/// A table's copy progress, summed over its chunks.
#[derive(Clone, Debug)]
pub struct TableTotals {
    pub table: String,
    pub chunks_done: i64,
    pub chunks_total: i64,
    pub rows: i64,
    pub bytes: i64,
}

impl Store<'_> {
    pub async fn chunks(&self, run_id: i64) -> Result<Vec<ChunkState>> {
        let rows = self
            .query(
                "SELECT table_name, chunk_no, split, predicate, done_at IS NOT NULL FROM pgshift.chunks \
                 WHERE run_id = $1 ORDER BY table_name, chunk_no",
                &[&run_id],
                "read pgshift.chunks",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ChunkState { table_name: r.get(0), chunk_no: r.get(1), split: SplitKind::parse(r.get(2)), predicate: r.get(3), done: r.get(4) })
            .collect())
    }

    /// The source names of the tables a run copies, in order, once each.
    /// A table the run follows from now on (created on the source during catch-up), as
    /// one copied chunk, in the caller's transaction.
    pub async fn add_run_table(&self, run_id: i64, table: &str) -> Result<()> {
        self.execute(
            "INSERT INTO pgshift.chunks (run_id, table_name, chunk_no, split, done_at, rows, bytes) VALUES ($1, $2, 0, $3, now(), 0, 0) ON CONFLICT DO NOTHING",
            &[&run_id, &table, &SplitKind::Whole.as_str()],
            || format!("record table {table} in the run"),
        )
        .await?;
        Ok(())
    }

    /// A table dropped on the source during catch-up: no longer the run's.
    pub async fn remove_run_table(&self, run_id: i64, table: &str) -> Result<()> {
        self.execute("DELETE FROM pgshift.chunks WHERE run_id = $1 AND table_name = $2", &[&run_id, &table], || format!("forget table {table} in the run"))
            .await?;
        Ok(())
    }

    pub async fn run_table_names(&self, run_id: i64) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.chunks(run_id).await?.into_iter().map(|c| c.table_name).collect();
        names.dedup();
        Ok(names)
    }

    /// Marks a chunk done; only `load::chunk_writer` calls this, inside the
    /// transaction that wrote the chunk's rows.
    pub(crate) async fn mark_chunk_done(&self, run_id: i64, table: &str, chunk_no: i32, rows: u64, bytes: u64) -> Result<()> {
        self.execute(
            "UPDATE pgshift.chunks SET rows = $4, bytes = $5, done_at = now() WHERE run_id = $1 AND table_name = $2 AND chunk_no = $3",
            &[&run_id, &table, &chunk_no, &(rows as i64), &(bytes as i64)],
            || format!("checkpoint chunk {chunk_no} of {table}"),
        )
        .await?;
        Ok(())
    }

    /// Opens the copy to workers, in one transaction: what every table's rows go
    /// through on the target, each chunk still to copy with its source statement and
    /// whether it clears its range first, and the snapshot chunks read under.
    pub async fn open_copy(&self, run_id: i64, snapshot: Option<&str>, tables: &[CopyTable], chunks: &[ChunkWork]) -> Result<()> {
        let work = async {
            self.execute("DELETE FROM pgshift.copy_tables WHERE run_id = $1", &[&run_id], || "reset the copy queue".into()).await?;
            let names: Vec<&str> = tables.iter().map(|t| t.table_name.as_str()).collect();
            let targets: Vec<&str> = tables.iter().map(|t| t.target.as_str()).collect();
            let copy_in: Vec<&str> = tables.iter().map(|t| t.copy_in.as_str()).collect();
            let specs: Vec<Option<String>> = tables.iter().map(|t| t.embedding.as_ref().map(|s| serde_json::to_string(s).expect("specs serialize"))).collect();
            let chunk_tables: Vec<Option<String>> =
                tables.iter().map(|t| t.chunk_table.as_ref().map(|c| serde_json::to_string(c).expect("chunk tables serialize"))).collect();
            self.execute(
                "INSERT INTO pgshift.copy_tables (run_id, table_name, ord, target, copy_in, embedding, chunk_table) \
                 SELECT $1, n, o::int, t, c, e::jsonb, k::jsonb FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS u(n, t, c, e, k, o)",
                &[&run_id, &names, &targets, &copy_in, &specs, &chunk_tables],
                || "record the copy's tables".into(),
            )
            .await?;
            let names: Vec<&str> = chunks.iter().map(|c| c.table_name.as_str()).collect();
            let numbers: Vec<i32> = chunks.iter().map(|c| c.chunk_no).collect();
            let copy_out: Vec<Option<&str>> = chunks.iter().map(|c| c.copy_out.as_deref()).collect();
            let clear: Vec<bool> = chunks.iter().map(|c| c.clear_first).collect();
            self.execute(
                "UPDATE pgshift.chunks c SET copy_out = u.o, clear_first = u.c \
                 FROM unnest($2::text[], $3::int[], $4::text[], $5::bool[]) AS u(n, no, o, c) \
                 WHERE c.run_id = $1 AND c.table_name = u.n AND c.chunk_no = u.no",
                &[&run_id, &names, &numbers, &copy_out, &clear],
                || "record the chunks to copy".into(),
            )
            .await?;
            self.execute("UPDATE pgshift.runs SET copy_snapshot = $2 WHERE run_id = $1", &[&run_id, &snapshot], || "record the copy's snapshot".into())
                .await?;
            Ok::<_, Error>(())
        };
        in_transaction(self.db, "open the copy to workers", work).await
    }

    /// After the last chunk: workers find nothing more to join.
    pub async fn close_copy(&self, run_id: i64) -> Result<()> {
        self.execute(
            "UPDATE pgshift.runs SET copy_snapshot = NULL WHERE run_id = $1",
            &[&run_id],
            || "close the copy".into(),
        )
        .await?;
        self.execute("DELETE FROM pgshift.copy_tables WHERE run_id = $1", &[&run_id], || "close the copy".into()).await?;
        Ok(())
    }

    /// The newest run (or `run_id`) whose copy is open to workers, and its snapshot.
    pub async fn open_copy_run(&self, run_id: Option<i64>) -> Result<Option<(Run, Option<String>)>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS}, runs.copy_snapshot FROM pgshift.runs runs \
                     WHERE runs.phase = 'copy' AND ($1::int8 IS NULL OR runs.run_id = $1) \
                       AND EXISTS (SELECT FROM pgshift.copy_tables t WHERE t.run_id = runs.run_id) \
                     ORDER BY runs.run_id DESC LIMIT 1"
                ),
                &[&run_id],
                "find a run whose copy is open",
            )
            .await?;
        rows.first().map(|r| Ok((run_from(r)?, r.get(7)))).transpose()
    }

    /// Takes the next chunk no other session holds, locked until the caller's
    /// transaction ends: committed with the chunk's rows it is done; rolled back, or
    /// its session gone (a worker killed), it is back in the queue.
    pub async fn claim_chunk(&self, run_id: i64) -> Result<Option<ClaimedChunk>> {
        let rows = self
            .query(
                "SELECT c.table_name, c.chunk_no, c.predicate, c.copy_out, coalesce(c.clear_first, false), t.target, t.copy_in, t.embedding::text, t.chunk_table::text \
                 FROM pgshift.chunks c JOIN pgshift.copy_tables t USING (run_id, table_name) \
                 WHERE c.run_id = $1 AND c.done_at IS NULL ORDER BY t.ord, c.chunk_no \
                 LIMIT 1 FOR UPDATE OF c SKIP LOCKED",
                &[&run_id],
                "claim a chunk",
            )
            .await?;
        rows.first().map(|r| Ok(ClaimedChunk {
            table_name: r.get(0),
            chunk_no: r.get(1),
            predicate: r.get(2),
            copy_out: r.get(3),
            clear_first: r.get(4),
            target: r.get(5),
            copy_in: r.get(6),
            embedding: r.get::<_, Option<String>>(7).map(|s| serde_json::from_str(&s)).transpose().map_err(|e| Error::Internal(format!("pgshift.copy_tables: {e}")))?,
            chunk_table: r.get::<_, Option<String>>(8).map(|s| serde_json::from_str(&s)).transpose().map_err(|e| Error::Internal(format!("pgshift.copy_tables: {e}")))?,
        }))
        .transpose()
    }

    /// Chunks of the run not done yet (being copied or waiting).
    pub async fn chunks_left(&self, run_id: i64) -> Result<i64> {
        let rows = self.query("SELECT count(*) FROM pgshift.chunks WHERE run_id = $1 AND done_at IS NULL", &[&run_id], "count chunks left").await?;
        Ok(rows[0].get(0))
    }

    /// Forgets the progress of a table's chunks (before re-copying a ctid-split table whole).
    pub async fn reset_table_chunks(&self, run_id: i64, table: &str) -> Result<()> {
        self.execute(
            "UPDATE pgshift.chunks SET rows = NULL, bytes = NULL, done_at = NULL WHERE run_id = $1 AND table_name = $2",
            &[&run_id, &table],
            || format!("reset chunks of {table}"),
        )
        .await?;
        Ok(())
    }

    /// Per table of a run: chunks done and total, rows and bytes copied.
    pub async fn table_totals(&self, run_id: i64) -> Result<Vec<TableTotals>> {
        let rows = self
            .query(
                "SELECT table_name, count(done_at), count(*), coalesce(sum(rows), 0)::int8, coalesce(sum(bytes), 0)::int8 \
                 FROM pgshift.chunks WHERE run_id = $1 GROUP BY table_name ORDER BY table_name",
                &[&run_id],
                "read pgshift.chunks",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| TableTotals { table: r.get(0), chunks_done: r.get(1), chunks_total: r.get(2), rows: r.get(3), bytes: r.get(4) })
            .collect())
    }
}
