//! The run store: every statement on the target's `pgshift` schema (runs, chunks,
//! the embedding cache, re-embeds) is here, and nowhere else. A chunk is marked done
//! in the same transaction that writes its rows (see `load::chunk_writer`), so a
//! chunk is either fully there and marked, or neither.

use pgshift_postgres::catalog::relation_exists;
use pgshift_postgres::conn::in_transaction;
use pgshift_postgres::error::Context;
use pgshift_postgres::large_objects::Carry;
use pgshift_postgres::schema_map::SchemaMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::{migrations, slot, Phase, Run};
use crate::plan::embedding::EmbeddingSpec;
use crate::error::{Error, Result};
use crate::plan::LeftOut;
use crate::plan::chunks::SplitKind;

/// The target's `pgshift` schema through one connection.
#[derive(Clone, Copy)]
pub struct Store<'a> {
    client: &'a Client,
    endpoint: &'a str,
}

/// The columns [`run_from`] reads, in its order, from `pgshift.runs runs`. The schema
/// map is read through the row's JSON, so a state schema made by an older pgshift
/// (without the column) still reads, as "no map", until the next migrate adds it.
const RUN_COLUMNS: &str = "run_id, source, slot_name, start_lsn::text, phase, converge_lsn::text, (to_jsonb(runs) -> 'schema_map')::text";

fn run_from(r: &Row) -> Result<Run> {
    Ok(Run {
        run_id: r.get(0),
        source: r.get(1),
        slot_name: r.get(2),
        start_lsn: r.get(3),
        phase: Phase::parse(r.get(4))?,
        converge_lsn: r.get(5),
        schema_map: r.get::<_, Option<String>>(6).and_then(|m| serde_json::from_str(&m).ok()).unwrap_or_default(),
    })
}

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

/// What a new run records besides its pre-data.
pub struct NewRun<'a> {
    pub source: &'a str,
    /// Every chunk to copy (none done yet).
    pub chunks: Vec<ChunkState>,
    pub embeddings: &'a [EmbeddingSpec],
    pub schema_map: &'a SchemaMap,
    /// Whether the run gets a replication slot (catch-up follows a slot).
    pub slot: bool,
    /// Statements the cutover runs on the target (triggers, row security).
    pub at_cutover: &'a [String],
    /// Large objects are brought up to date at the cutover (PostgreSQL sources).
    pub large_objects: Option<Carry>,
    /// Columns catch-up leaves out (see [`LeftOut`]).
    pub left_out: &'a LeftOut,
}

/// A table of an open copy: where its rows go on the target.
pub struct CopyTable {
    pub table_name: String,
    pub target: String,
    pub copy_in: String,
    /// The vectors computed on the way (the chunk's last field is their text).
    pub embedding: Option<EmbeddingSpec>,
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

/// A process copying chunks, for `pgshift status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkerState {
    /// `host:pid`.
    pub worker: String,
    pub host: String,
    pub jobs: i32,
    pub chunks_done: i32,
    pub rows: i64,
    /// The chunks it holds now (`table#chunk`).
    pub copying: Vec<String>,
    pub rows_per_second: f64,
    pub seen_seconds_ago: f64,
    /// Not heard from for [`WORKER_GONE_AFTER_SECONDS`]: probably gone (its chunks went
    /// back to the queue with its session).
    pub gone: bool,
}

/// A worker reports every 200 ms while it copies; this long without a word, it is
/// taken for gone (status, the status page, `pgshift_copy_workers`).
pub const WORKER_GONE_AFTER_SECONDS: f64 = 30.0;

/// A run's times, for `pgshift status`.
#[derive(Clone, Debug)]
pub struct RunTimes {
    pub run: Run,
    pub started_at: String,
    pub updated_at: String,
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

/// A re-embed as `pgshift.reembeds` records it.
#[derive(Clone, Debug)]
pub struct ReembedState {
    pub spec: Option<EmbeddingSpec>,
    pub model: String,
    pub finished: bool,
    pub last_key: Option<Vec<String>>,
}

impl<'a> Store<'a> {
    pub fn new(client: &'a Client, endpoint: &'a str) -> Store<'a> {
        Store { client, endpoint }
    }

    /// The connection, for the statements on the user's tables that must share a
    /// transaction with the run's state (a chunk's rows and its checkpoint).
    pub fn connection(&self) -> (&'a Client, &'a str) {
        (self.client, self.endpoint)
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)], what: &str) -> Result<Vec<Row>> {
        Ok(self.client.query(sql, params).await.context(&self.endpoint, || what.to_string())?)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)], what: impl FnOnce() -> String) -> Result<u64> {
        Ok(self.client.execute(sql, params).await.context(&self.endpoint, what)?)
    }

    pub async fn exists(&self) -> Result<bool> {
        Ok(relation_exists(self.client, self.endpoint, "pgshift", "runs").await?)
    }

    /// Creates or upgrades the state schema, in its own transaction.
    pub async fn ensure_schema(&self) -> Result<()> {
        in_transaction(self.client, self.endpoint, "the pgshift state schema", migrations::apply(self.client, self.endpoint)).await
    }

    // ---- runs ----

    async fn runs_where(&self, condition: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Run>> {
        if !self.exists().await? {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {RUN_COLUMNS} FROM pgshift.runs runs WHERE {condition} ORDER BY run_id DESC");
        self.query(&sql, params, "read pgshift.runs").await?.iter().map(run_from).collect()
    }

    pub async fn run(&self, run_id: i64) -> Result<Run> {
        self.runs_where("run_id = $1", &[&run_id])
            .await?
            .pop()
            .ok_or_else(|| Error::State(format!("{}: run {run_id} is not in pgshift.runs", self.endpoint)))
    }

    /// The newest run from `source` whose load has not finished, if any. Runs from
    /// other sources (several databases consolidated into one target) are not this one's.
    pub async fn unfinished_run(&self, source: &str) -> Result<Option<Run>> {
        let unfinished: Vec<&str> = Phase::ALL.iter().filter(|p| !p.load_finished()).map(|p| p.as_str()).collect();
        Ok(self.runs_where("phase = ANY($1) AND source = $2", &[&unfinished, &source]).await?.into_iter().next())
    }

    /// The unfinished run from `source` that this load continues: none for a fresh
    /// load. An unfinished run without `resume`, `resume` without one, or a run that
    /// put its tables into other schemas than `schema_map` says are refused.
    pub async fn run_to_resume(&self, source: &str, resume: bool, schema_map: &SchemaMap) -> Result<Option<Run>> {
        resume_decision(self.unfinished_run(source).await?, resume, schema_map)
    }

    /// The newest run from exactly this source, if any.
    pub async fn newest_run_of_source(&self, source: &str) -> Result<Option<Run>> {
        Ok(self.runs_where("source = $1", &[&source]).await?.into_iter().next())
    }

    /// The run whose load finished and whose changes are still to follow: the newest
    /// one from `source`, or the only one when the source was written another way
    /// (127.0.0.1 for localhost). Several from other sources: the error lists them.
    pub async fn loaded_run(&self, source: &str) -> Result<Option<Run>> {
        let runs = self.runs_where("phase = $1", &[&Phase::Loaded.as_str()]).await?;
        pick_loaded_run(runs, source, self.endpoint)
    }

    /// The loaded run from `source` (see [`Store::loaded_run`]) and its slot: what
    /// catch-up follows and a cutover finishes.
    pub async fn run_to_follow(&self, source: &str) -> Result<(Run, String)> {
        let run = self
            .loaded_run(source)
            .await?
            .ok_or_else(|| Error::State(format!("{} holds no loaded pgshift run to follow: run pgshift migrate first", self.endpoint)))?;
        let slot = run.slot_name.clone().ok_or_else(|| Error::State(format!("run {} has no replication slot", run.run_id)))?;
        Ok((run, slot))
    }

    /// Every run, newest first, with its times.
    pub async fn all_runs(&self) -> Result<Vec<RunTimes>> {
        if !self.exists().await? {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {RUN_COLUMNS}, started_at::text, updated_at::text FROM pgshift.runs runs ORDER BY run_id DESC");
        self.query(&sql, &[], "read pgshift.runs")
            .await?
            .iter()
            .map(|r| Ok(RunTimes { run: run_from(r)?, started_at: r.get(7), updated_at: r.get(8) }))
            .collect()
    }

    /// Pre-data DDL, the state schema and the run with its chunks, in one transaction:
    /// a failure leaves the target as it was. Returns the run.
    pub async fn create_schema_and_run(&self, pre_data: &[String], run: &NewRun<'_>) -> Result<Run> {
        let work = async {
            migrations::apply(self.client, self.endpoint).await?;
            for sql in pre_data {
                self.client.batch_execute(sql).await.context(&self.endpoint, || sql.clone())?;
            }
            self.create_run(run).await
        };
        let run_id = in_transaction(self.client, self.endpoint, "the schema", work).await?;
        self.run(run_id).await
    }

    /// Records a new run and all its chunks (not done), in the caller's transaction.
    async fn create_run(&self, run: &NewRun<'_>) -> Result<i64> {
        let ctx = || "record the run in pgshift.runs".to_string();
        let map = serde_json::to_string(run.schema_map).expect("map serializes");
        let specs = (!run.embeddings.is_empty()).then(|| serde_json::to_string(run.embeddings).expect("specs serialize"));
        let at_cutover = (!run.at_cutover.is_empty()).then(|| serde_json::to_string(run.at_cutover).expect("statements serialize"));
        let large_objects = run.large_objects.map(|c| serde_json::to_string(&c).expect("settings serialize"));
        let left_out = (!run.left_out.is_empty()).then(|| serde_json::to_string(run.left_out).expect("columns serialize"));
        let row = self
            .client
            .query_one(
                "INSERT INTO pgshift.runs (source, phase, schema_map, embeddings, at_cutover, large_objects, left_out) \
                 VALUES ($1, $2, $3::text::jsonb, $4::text::jsonb, $5::text::jsonb, $6::text::jsonb, $7::text::jsonb) RETURNING run_id",
                &[&run.source, &Phase::Copy.as_str(), &map, &specs, &at_cutover, &large_objects, &left_out],
            )
            .await
            .context(&self.endpoint, ctx)?;
        let run_id: i64 = row.get(0);
        if run.slot {
            let slot = slot::slot_name(run_id);
            self.execute("UPDATE pgshift.runs SET slot_name = $2 WHERE run_id = $1", &[&run_id, &slot], ctx).await?;
        }
        for c in &run.chunks {
            self.execute(
                "INSERT INTO pgshift.chunks (run_id, table_name, chunk_no, split, predicate) VALUES ($1, $2, $3, $4, $5)",
                &[&run_id, &c.table_name, &c.chunk_no, &c.split.as_str(), &c.predicate],
                ctx,
            )
            .await?;
        }
        Ok(run_id)
    }

    /// Records a run whose data is already in place and whose slot already exists (the
    /// reverse run of a cutover, kept in the old database): ready to follow.
    pub async fn create_loaded_run(
        &self,
        source: &str,
        (slot, start_lsn): (&str, &str),
        tables: &[String],
        schema_map: &SchemaMap,
        (large_objects, left_out): (Option<Carry>, &LeftOut),
    ) -> Result<i64> {
        let ctx = || "record the reverse run in pgshift.runs".to_string();
        self.ensure_schema().await?;
        let map = serde_json::to_string(schema_map).expect("map serializes");
        let large_objects = large_objects.map(|c| serde_json::to_string(&c).expect("settings serialize"));
        let left_out = (!left_out.is_empty()).then(|| serde_json::to_string(left_out).expect("columns serialize"));
        let row = self
            .client
            .query_one(
                "INSERT INTO pgshift.runs (source, slot_name, start_lsn, phase, finished_at, schema_map, large_objects, left_out) \
                 VALUES ($1, $2, $3::text::pg_lsn, $4, now(), $5::text::jsonb, $6::text::jsonb, $7::text::jsonb) RETURNING run_id",
                &[&source, &slot, &start_lsn, &Phase::Loaded.as_str(), &map, &large_objects, &left_out],
            )
            .await
            .context(&self.endpoint, ctx)?;
        let run_id: i64 = row.get(0);
        for table in tables {
            self.execute(
                "INSERT INTO pgshift.chunks (run_id, table_name, chunk_no, split, done_at) VALUES ($1, $2, 0, $3, now())",
                &[&run_id, table, &SplitKind::Whole.as_str()],
                ctx,
            )
            .await?;
        }
        Ok(run_id)
    }

    pub async fn set_converge_lsn(&self, run_id: i64, lsn: &str) -> Result<()> {
        self.execute(
            "UPDATE pgshift.runs SET converge_lsn = $2::text::pg_lsn, updated_at = now() WHERE run_id = $1",
            &[&run_id, &lsn],
            || "record the convergence LSN".into(),
        )
        .await?;
        Ok(())
    }

    pub async fn set_start_lsn(&self, run_id: i64, lsn: &str) -> Result<()> {
        self.execute(
            "UPDATE pgshift.runs SET start_lsn = $2::text::pg_lsn, updated_at = now() WHERE run_id = $1",
            &[&run_id, &lsn],
            || "record the slot's LSN".into(),
        )
        .await?;
        Ok(())
    }

    /// Moves a run from `from` to `to`; refused when the run is no longer in `from`
    /// (another process moved it) or the move is not forward through the load.
    pub async fn advance(&self, run_id: i64, from: Phase, to: Phase) -> Result<()> {
        if !from.may_become(to) {
            return Err(Error::State(format!("run {run_id} cannot go from phase {from} to {to}")));
        }
        let moved = self
            .execute(
                "UPDATE pgshift.runs SET phase = $3, updated_at = now(), finished_at = CASE WHEN $4 THEN now() END \
                 WHERE run_id = $1 AND phase = $2",
                &[&run_id, &from.as_str(), &to.as_str(), &to.load_finished()],
                || format!("set the run's phase to {to}"),
            )
            .await?;
        if moved == 0 {
            let now = self.run(run_id).await?.phase;
            return Err(Error::State(format!("run {run_id} is in phase {now}, not {from}: another pgshift process moved it on")));
        }
        Ok(())
    }

    /// Whether a cutover finished the run (a follower then stops).
    pub async fn is_done(&self, run_id: i64) -> Result<bool> {
        Ok(self.run(run_id).await?.phase == Phase::Done)
    }

    // ---- chunks ----

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

    // ---- the copy queue: chunks claimed by the run's own workers and by `pgshift worker` ----

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
            self.execute(
                "INSERT INTO pgshift.copy_tables (run_id, table_name, ord, target, copy_in, embedding) \
                 SELECT $1, n, o::int, t, c, e::jsonb FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(n, t, c, e, o)",
                &[&run_id, &names, &targets, &copy_in, &specs],
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
        in_transaction(self.client, self.endpoint, "open the copy to workers", work).await
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
                "SELECT c.table_name, c.chunk_no, c.predicate, c.copy_out, coalesce(c.clear_first, false), t.target, t.copy_in, t.embedding::text \
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
            embedding: r.get::<_, Option<String>>(7).map(|s| serde_json::from_str(&s)).transpose().map_err(|e| Error::State(format!("pgshift.copy_tables: {e}")))?,
        }))
        .transpose()
    }

    /// Chunks of the run not done yet (being copied or waiting).
    pub async fn chunks_left(&self, run_id: i64) -> Result<i64> {
        let rows = self.query("SELECT count(*) FROM pgshift.chunks WHERE run_id = $1 AND done_at IS NULL", &[&run_id], "count chunks left").await?;
        Ok(rows[0].get(0))
    }

    /// A process taking chunks of a run (a worker, or migrate's own workers).
    pub async fn register_worker(&self, run_id: i64, worker: &str, host: &str, jobs: i32) -> Result<()> {
        self.execute(
            "INSERT INTO pgshift.workers (run_id, worker, host, jobs) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (run_id, worker) DO UPDATE SET host = $3, jobs = $4, started_at = now(), seen_at = now(), chunks_done = 0, rows = 0, copying = '{}'",
            &[&run_id, &worker, &host, &jobs],
            || "register the worker".into(),
        )
        .await?;
        Ok(())
    }

    pub async fn worker_seen(&self, run_id: i64, worker: &str, chunks_done: i32, rows: i64, copying: &[String]) -> Result<()> {
        self.execute(
            "UPDATE pgshift.workers SET seen_at = now(), chunks_done = $3, rows = $4, copying = $5 WHERE run_id = $1 AND worker = $2",
            &[&run_id, &worker, &chunks_done, &rows, &copying],
            || "report the worker's progress".into(),
        )
        .await?;
        Ok(())
    }

    pub async fn unregister_worker(&self, run_id: i64, worker: &str) -> Result<()> {
        self.execute("DELETE FROM pgshift.workers WHERE run_id = $1 AND worker = $2", &[&run_id, &worker], || "unregister the worker".into()).await?;
        Ok(())
    }

    /// The processes copying a run's chunks, as they last reported.
    pub async fn workers(&self, run_id: i64) -> Result<Vec<WorkerState>> {
        let rows = self
            .query(
                "SELECT worker, host, jobs, chunks_done, rows, copying, \
                        extract(epoch FROM seen_at - started_at)::float8, extract(epoch FROM now() - seen_at)::float8 \
                 FROM pgshift.workers WHERE run_id = $1 ORDER BY started_at, worker",
                &[&run_id],
                "read pgshift.workers",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let (rows, seconds, seen): (i64, f64, f64) = (r.get(4), r.get(6), r.get(7));
                WorkerState {
                    worker: r.get(0),
                    host: r.get(1),
                    jobs: r.get(2),
                    chunks_done: r.get(3),
                    rows,
                    copying: r.get(5),
                    rows_per_second: if seconds > 0.0 { rows as f64 / seconds } else { 0.0 },
                    seen_seconds_ago: seen,
                    gone: seen > WORKER_GONE_AFTER_SECONDS,
                }
            })
            .collect())
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

    // ---- embedding specs ----

    /// The embedding specs a run was started with (empty when it computes no vectors).
    pub async fn run_embeddings(&self, run_id: i64) -> Result<Vec<EmbeddingSpec>> {
        Ok(self.run_json(run_id, "embeddings", "embedding specs").await?.unwrap_or_default())
    }

    /// What verify needs of the source's newest run: the run (for its schema map) and
    /// the embedding specs whose vector columns it computed (none without a run).
    pub async fn newest_run_and_embeddings(&self, source: &str) -> Result<(Option<Run>, Vec<EmbeddingSpec>)> {
        let run = self.newest_run_of_source(source).await?;
        let specs = match &run {
            Some(run) => self.run_embeddings(run.run_id).await?,
            None => Vec::new(),
        };
        Ok((run, specs))
    }

    /// The statements the cutover runs on the target (none for runs made before them).
    pub async fn at_cutover(&self, run_id: i64) -> Result<Vec<String>> {
        Ok(self.run_json(run_id, "at_cutover", "cutover statements").await?.unwrap_or_default())
    }

    /// A JSON column of a run, read through the row's JSON so that a state schema made
    /// before the column existed reads as None.
    async fn run_json<T: serde::de::DeserializeOwned>(&self, run_id: i64, column: &str, what: &str) -> Result<Option<T>> {
        let rows = self
            .query("SELECT (to_jsonb(runs) -> $2::text)::text FROM pgshift.runs runs WHERE run_id = $1", &[&run_id, &column], &format!("read the run's {what}"))
            .await?;
        match rows.first().and_then(|r| r.get::<_, Option<String>>(0)).filter(|v| v != "null") {
            None => Ok(None),
            Some(v) => serde_json::from_str(&v).map(Some).map_err(|e| Error::State(format!("run {run_id}: unreadable {what}: {e}"))),
        }
    }

    /// How the cutover brings the run's large objects up to date (None: it does not;
    /// runs made before large objects were carried).
    pub async fn large_objects(&self, run_id: i64) -> Result<Option<Carry>> {
        self.run_json(run_id, "large_objects", "large object settings").await
    }

    /// The columns the run's catch-up leaves out.
    pub async fn left_out(&self, run_id: i64) -> Result<LeftOut> {
        Ok(self.run_json(run_id, "left_out", "left-out columns").await?.unwrap_or_default())
    }

    /// Records the foreign keys a run declared (validated later, see `load::links`).
    pub async fn set_run_foreign_keys(&self, run_id: i64, keys: &[crate::plan::links::DeclaredForeignKey]) -> Result<()> {
        let value = serde_json::to_string(keys).expect("keys serialize");
        self.execute("UPDATE pgshift.runs SET foreign_keys = $2::text::jsonb WHERE run_id = $1", &[&run_id, &value], || {
            "record the run's declared foreign keys".into()
        })
        .await?;
        Ok(())
    }

    /// Every foreign key declared by any run, once each.
    pub async fn declared_foreign_keys(&self) -> Result<Vec<crate::plan::links::DeclaredForeignKey>> {
        if !self.exists().await? {
            return Ok(Vec::new());
        }
        let rows = self
            .query("SELECT (to_jsonb(runs) -> 'foreign_keys')::text FROM pgshift.runs runs ORDER BY run_id", &[], "read the declared foreign keys")
            .await?;
        let mut out: Vec<crate::plan::links::DeclaredForeignKey> = Vec::new();
        for text in rows.iter().filter_map(|r| r.get::<_, Option<String>>(0)).filter(|t| t != "null") {
            let keys: Vec<crate::plan::links::DeclaredForeignKey> =
                serde_json::from_str(&text).map_err(|e| Error::State(format!("unreadable declared foreign keys: {e}")))?;
            for k in keys {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        Ok(out)
    }

    /// The runs that brought a table (`schema.table` as the target has it).
    pub async fn runs_owning(&self, table: &str) -> Result<Vec<Run>> {
        let mut out = Vec::new();
        for r in self.all_runs().await? {
            if self.run_table_names(r.run.run_id).await?.iter().any(|n| r.run.schema_map.target_display(n) == table) {
                out.push(r.run);
            }
        }
        Ok(out)
    }

    // ---- embedding cache ----

    pub async fn cached_vectors(&self, model: &str, hashes: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = self
            .query(
                "SELECT hash, vector FROM pgshift.embedding_cache WHERE model = $1 AND hash = ANY($2)",
                &[&model, &hashes],
                "read the embedding cache",
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn cache_vectors(&self, model: &str, hashes: &[&Vec<u8>], vectors: &[Vec<u8>]) -> Result<()> {
        self.execute(
            "INSERT INTO pgshift.embedding_cache (model, hash, vector) SELECT $1, h, v FROM unnest($2::bytea[], $3::bytea[]) AS u(h, v) \
             ON CONFLICT DO NOTHING",
            &[&model, &hashes, &vectors],
            || "write the embedding cache".into(),
        )
        .await?;
        Ok(())
    }

    // ---- re-embeds ----

    pub async fn reembed(&self, table: &str, column: &str) -> Result<Option<ReembedState>> {
        let rows = self
            .query(
                "SELECT spec::text, model, phase = 'done', last_key FROM pgshift.reembeds WHERE table_name = $1 AND column_name = $2",
                &[&table, &column],
                "read pgshift.reembeds",
            )
            .await?;
        Ok(rows.first().map(|r| ReembedState {
            spec: serde_json::from_str(r.get(0)).ok(),
            model: r.get(1),
            finished: r.get(2),
            last_key: r.get(3),
        }))
    }

    /// Records a re-embed from its start (replacing a finished one of the same column).
    pub async fn start_reembed(&self, table: &str, spec: &EmbeddingSpec, model: &str) -> Result<()> {
        let spec_json = serde_json::to_string(spec).expect("spec serializes");
        self.execute(
            "INSERT INTO pgshift.reembeds (table_name, column_name, spec, model, phase) VALUES ($1, $2, $3::text::jsonb, $4, 'backfill') \
             ON CONFLICT (table_name, column_name) DO UPDATE SET spec = EXCLUDED.spec, model = EXCLUDED.model, phase = 'backfill', \
             last_key = NULL, rows_done = 0, started_at = now(), updated_at = now()",
            &[&table, &spec.column, &spec_json, &model],
            || "record the re-embed".into(),
        )
        .await?;
        Ok(())
    }

    /// The backfill's checkpoint; call in the transaction that wrote the batch.
    pub async fn checkpoint_reembed(&self, table: &str, column: &str, last_key: &[String], rows: u64) -> Result<()> {
        self.execute(
            "UPDATE pgshift.reembeds SET last_key = $3, rows_done = rows_done + $4, updated_at = now() WHERE table_name = $1 AND column_name = $2",
            &[&table, &column, &last_key, &(rows as i64)],
            || "checkpoint the backfill".into(),
        )
        .await?;
        Ok(())
    }

    pub async fn finish_reembed(&self, table: &str, column: &str) -> Result<()> {
        self.execute(
            "UPDATE pgshift.reembeds SET phase = 'done', updated_at = now() WHERE table_name = $1 AND column_name = $2",
            &[&table, &column],
            || "finish the re-embed".into(),
        )
        .await?;
        Ok(())
    }
}

/// Which unfinished run a load continues (see [`Store::run_to_resume`]).
fn resume_decision(unfinished: Option<Run>, resume: bool, schema_map: &SchemaMap) -> Result<Option<Run>> {
    match (unfinished, resume) {
        (Some(run), false) => Err(Error::State(format!(
            "the target holds an unfinished run {} (phase {}): pass --resume to continue it",
            run.run_id, run.phase
        ))),
        (None, true) => Err(Error::State("--resume: the target holds no unfinished pgshift run".into())),
        (Some(run), true) if run.schema_map != *schema_map => Err(Error::Input(format!(
            "run {} was started with another schema map ({}): resume it with the same --map-schema",
            run.run_id,
            if run.schema_map.is_empty() { "none".to_string() } else { run.schema_map.to_string() }
        ))),
        (run, _) => Ok(run),
    }
}

/// Among loaded runs (newest first): the one from `source`, else the only one.
fn pick_loaded_run(runs: Vec<Run>, source: &str, endpoint: &str) -> Result<Option<Run>> {
    if let Some(i) = runs.iter().position(|r| r.source == source) {
        return Ok(runs.into_iter().nth(i));
    }
    match runs.len() {
        0 => Ok(None),
        1 => Ok(runs.into_iter().next()),
        _ => {
            let sources: Vec<String> = runs.iter().map(|r| format!("run {} from {}", r.run_id, r.source)).collect();
            Err(Error::State(format!(
                "{endpoint} holds several loaded runs ({}), none from {source}: pass the --source of one of them as migrate was given it",
                sources.join("; ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, source: &str, phase: Phase) -> Run {
        Run { run_id: id, source: source.into(), slot_name: None, start_lsn: None, phase, converge_lsn: None, schema_map: SchemaMap::default() }
    }

    #[test]
    fn resuming_needs_an_unfinished_run_and_the_same_map() {
        let map = SchemaMap::parse(&["public=app".to_string()]).unwrap();
        assert!(resume_decision(None, false, &map).unwrap().is_none());
        assert!(resume_decision(Some(run(3, "a", Phase::Copy)), false, &map).unwrap_err().to_string().contains("pass --resume"));
        assert!(resume_decision(None, true, &map).unwrap_err().to_string().contains("no unfinished"));
        assert!(resume_decision(Some(run(3, "a", Phase::Copy)), true, &map).unwrap_err().to_string().contains("same --map-schema"));
        let mut mapped = run(3, "a", Phase::PostData);
        mapped.schema_map = map.clone();
        assert_eq!(resume_decision(Some(mapped), true, &map).unwrap().unwrap().run_id, 3);
    }

    #[test]
    fn a_loaded_run_is_found_by_source_or_as_the_only_one() {
        let runs = || vec![run(5, "u@b:1/db", Phase::Loaded), run(4, "u@a:1/db", Phase::Loaded)];
        assert_eq!(pick_loaded_run(runs(), "u@a:1/db", "t").unwrap().unwrap().run_id, 4);
        assert_eq!(pick_loaded_run(vec![run(7, "u@localhost:1/db", Phase::Loaded)], "u@127.0.0.1:1/db", "t").unwrap().unwrap().run_id, 7);
        assert!(pick_loaded_run(Vec::new(), "x", "t").unwrap().is_none());
        let err = pick_loaded_run(runs(), "u@c:1/db", "t").unwrap_err().to_string();
        assert!(err.contains("run 5 from u@b:1/db") && err.contains("run 4 from u@a:1/db"), "{err}");
    }
}
