//! Run state in the target's `pgshift` schema: visible to SQL, to a second machine,
//! and the basis of `--resume`. A chunk is marked done in the same transaction that
//! writes its rows, so a chunk is either fully there and marked, or neither.

use pgshift_postgres::catalog::relation_exists;
use pgshift_postgres::conn::in_transaction;
use pgshift_postgres::error::Context;
use pgshift_postgres::schema_map::SchemaMap;
use tokio_postgres::{Client, GenericClient};

use crate::error::{Error, Result};
use crate::plan::SplitKind;

pub const SCHEMA_DDL: &str = "
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text NOT NULL,
    slot_name   text,
    start_lsn   pg_lsn,
    phase       text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS pgshift.chunks (
    run_id     bigint NOT NULL REFERENCES pgshift.runs ON DELETE CASCADE,
    table_name text NOT NULL,
    chunk_no   int NOT NULL,
    split      text NOT NULL,
    predicate  text,
    rows       bigint,
    bytes      bigint,
    done_at    timestamptz,
    PRIMARY KEY (run_id, table_name, chunk_no)
);
-- Up to this source position the target may hold rows newer than the stream
-- (chunks re-read after a resume): catch-up applies idempotently until it passes it.
ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS converge_lsn pg_lsn;
-- The run's embedding specs: catch-up and cutover need them too.
ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS embeddings jsonb;
-- Source schema -> target schema (--map-schema): the chunks keep the source's names.
ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS schema_map jsonb;
-- Same model + same text = same vector: computed once (vector as little-endian float4s).
CREATE TABLE IF NOT EXISTS pgshift.embedding_cache (
    model  text NOT NULL,
    hash   bytea NOT NULL,
    vector bytea NOT NULL,
    PRIMARY KEY (model, hash)
);";

/// The columns [`run_from`] reads, in its order, from `pgshift.runs runs`. The schema
/// map is read through the row's JSON, so a state schema made by an older pgshift
/// (without the column) still reads, as "no map", until the next migrate adds it.
const RUN_COLUMNS: &str = "run_id, slot_name, start_lsn::text, phase, converge_lsn::text, (to_jsonb(runs) -> 'schema_map')::text";

/// Phases a run goes through, in order.
pub mod phase {
    pub const COPY: &str = "copy";
    pub const POST_DATA: &str = "post-data";
    /// Loaded and indexed; the slot waits for catch-up.
    pub const LOADED: &str = "loaded";
    pub const DONE: &str = "done";
}

#[derive(Clone, Debug)]
pub struct Run {
    pub run_id: i64,
    pub slot_name: Option<String>,
    pub start_lsn: Option<String>,
    pub phase: String,
    pub converge_lsn: Option<String>,
    /// Where the source's schemas went on the target (empty: nowhere else).
    pub schema_map: SchemaMap,
}

#[derive(Clone, Debug)]
pub struct ChunkState {
    pub table_name: String,
    pub chunk_no: i32,
    pub split: SplitKind,
    pub predicate: Option<String>,
    pub done: bool,
}

pub async fn has_state_schema(client: &Client, endpoint: &str) -> Result<bool> {
    Ok(relation_exists(client, endpoint, "pgshift", "runs").await?)
}

/// The newest run from `source` that has not finished, if any. Runs from other
/// sources (several databases consolidated into one target) are not this one's.
pub async fn unfinished_run(client: &Client, endpoint: &str, source: &str) -> Result<Option<Run>> {
    if !has_state_schema(client, endpoint).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT {RUN_COLUMNS} FROM pgshift.runs runs WHERE phase NOT IN ('loaded', 'done') AND source = $1 ORDER BY run_id DESC LIMIT 1"
            ),
            &[&source],
        )
        .await
        .context(&endpoint, || "read pgshift.runs".into())?;
    Ok(row.as_ref().map(run_from))
}

/// The unfinished run from `source` that this load continues: none for a fresh load.
/// An unfinished run without `resume`, `resume` without one, or a run that put its
/// tables into other schemas than `schema_map` says are refused.
pub async fn run_to_resume(client: &Client, endpoint: &str, source: &str, resume: bool, schema_map: &SchemaMap) -> Result<Option<Run>> {
    match (unfinished_run(client, endpoint, source).await?, resume) {
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

/// What a new run records besides its pre-data.
pub struct NewRun<'a> {
    pub source: &'a str,
    /// Every chunk to copy (none done yet).
    pub chunks: Vec<ChunkState>,
    pub embeddings: &'a [crate::embedding::EmbeddingSpec],
    pub schema_map: &'a SchemaMap,
    /// Whether the run gets a replication slot name (catch-up follows a slot).
    pub slot: bool,
}

/// Pre-data DDL, the state schema and the run with its chunks, in one transaction:
/// a failure leaves the target as it was. Returns the run's id.
pub async fn create_schema_and_run(dst: &Client, endpoint: &str, pre_data: &[String], run: &NewRun<'_>) -> Result<i64> {
    let work = async {
        dst.batch_execute(SCHEMA_DDL).await.context(&endpoint, || "create the pgshift state schema".into())?;
        for sql in pre_data {
            dst.batch_execute(sql).await.context(&endpoint, || sql.clone())?;
        }
        let run_id = create_run(dst, endpoint, run).await?;
        if !run.embeddings.is_empty() {
            set_run_embeddings(dst, endpoint, run_id, run.embeddings).await?;
        }
        Ok::<_, Error>(run_id)
    };
    in_transaction(dst, endpoint, "the schema", work).await
}

/// Records a new run and all its chunks (not done), in the caller's transaction.
async fn create_run(tx: &impl GenericClient, endpoint: &str, run: &NewRun<'_>) -> Result<i64> {
    let ctx = || "record the run in pgshift.runs".to_string();
    let map = serde_json::to_string(run.schema_map).expect("map serializes");
    let row = tx
        .query_one(
            "INSERT INTO pgshift.runs (source, phase, schema_map) VALUES ($1, $2, $3::text::jsonb) RETURNING run_id",
            &[&run.source, &phase::COPY, &map],
        )
        .await
        .context(&endpoint, ctx)?;
    let run_id: i64 = row.get(0);
    if run.slot {
        let slot = format!("pgshift_{run_id}_{:x}", std::process::id());
        tx.execute("UPDATE pgshift.runs SET slot_name = $2 WHERE run_id = $1", &[&run_id, &slot]).await.context(&endpoint, ctx)?;
    }
    for c in &run.chunks {
        tx.execute(
            "INSERT INTO pgshift.chunks (run_id, table_name, chunk_no, split, predicate) VALUES ($1, $2, $3, $4, $5)",
            &[&run_id, &c.table_name, &c.chunk_no, &c.split.as_str(), &c.predicate],
        )
        .await
        .context(&endpoint, ctx)?;
    }
    Ok(run_id)
}

/// Records a run whose data is already in place and whose slot already exists (the
/// reverse run of a cutover, kept in the old database): ready to follow.
pub async fn create_loaded_run(
    client: &Client,
    endpoint: &str,
    source: &str,
    (slot, start_lsn): (&str, &str),
    tables: &[String],
    schema_map: &SchemaMap,
) -> Result<i64> {
    let ctx = || "record the reverse run in pgshift.runs".to_string();
    client.batch_execute(SCHEMA_DDL).await.context(&endpoint, || "create the pgshift state schema".into())?;
    let map = serde_json::to_string(schema_map).expect("map serializes");
    let row = client
        .query_one(
            "INSERT INTO pgshift.runs (source, slot_name, start_lsn, phase, finished_at, schema_map) \
             VALUES ($1, $2, $3::text::pg_lsn, $4, now(), $5::text::jsonb) RETURNING run_id",
            &[&source, &slot, &start_lsn, &phase::LOADED, &map],
        )
        .await
        .context(&endpoint, ctx)?;
    let run_id: i64 = row.get(0);
    for table in tables {
        client
            .execute(
                "INSERT INTO pgshift.chunks (run_id, table_name, chunk_no, split, done_at) VALUES ($1, $2, 0, 'whole', now())",
                &[&run_id, table],
            )
            .await
            .context(&endpoint, ctx)?;
    }
    Ok(run_id)
}

pub async fn run_by_id(client: &Client, endpoint: &str, run_id: i64) -> Result<Run> {
    let r = client
        .query_one(&format!("SELECT {RUN_COLUMNS} FROM pgshift.runs runs WHERE run_id = $1"), &[&run_id])
        .await
        .context(&endpoint, || "read pgshift.runs".into())?;
    Ok(run_from(&r))
}

/// The run whose load finished and whose changes are still to follow: the newest
/// one from `source`, or the only one when the source was written another way
/// (127.0.0.1 for localhost). Several from other sources: the error lists them.
pub async fn loaded_run(client: &Client, endpoint: &str, source: &str) -> Result<Option<Run>> {
    if !has_state_schema(client, endpoint).await? {
        return Ok(None);
    }
    let rows = client
        .query(&format!("SELECT {RUN_COLUMNS}, source FROM pgshift.runs runs WHERE phase = 'loaded' ORDER BY run_id DESC"), &[])
        .await
        .context(&endpoint, || "read pgshift.runs".into())?;
    if let Some(row) = rows.iter().find(|r| r.get::<_, String>(6) == source) {
        return Ok(Some(run_from(row)));
    }
    match rows.as_slice() {
        [] => Ok(None),
        [only] => Ok(Some(run_from(only))),
        many => {
            let sources: Vec<String> = many.iter().map(|r| format!("run {} from {}", r.get::<_, i64>(0), r.get::<_, String>(6))).collect();
            Err(Error::State(format!(
                "{endpoint} holds several loaded runs ({}), none from {source}: pass the --source of one of them as migrate was given it",
                sources.join("; ")
            )))
        }
    }
}

/// Rows of `SELECT {RUN_COLUMNS} FROM pgshift.runs`.
fn run_from(r: &tokio_postgres::Row) -> Run {
    Run { run_id: r.get(0), slot_name: r.get(1), start_lsn: r.get(2), phase: r.get(3), converge_lsn: r.get(4), schema_map: schema_map_at(r, 5) }
}

/// The `schema_map::text` column at `idx` (written by pgshift only; NULL before maps existed).
pub(crate) fn schema_map_at(r: &tokio_postgres::Row, idx: usize) -> SchemaMap {
    r.get::<_, Option<String>>(idx).and_then(|m| serde_json::from_str(&m).ok()).unwrap_or_default()
}

pub async fn set_converge_lsn(client: &Client, endpoint: &str, run_id: i64, lsn: &str) -> Result<()> {
    client
        .execute("UPDATE pgshift.runs SET converge_lsn = $2::text::pg_lsn, updated_at = now() WHERE run_id = $1", &[&run_id, &lsn])
        .await
        .context(&endpoint, || "record the convergence LSN".into())?;
    Ok(())
}

pub async fn set_start_lsn(client: &Client, endpoint: &str, run_id: i64, lsn: &str) -> Result<()> {
    client
        .execute("UPDATE pgshift.runs SET start_lsn = $2::text::pg_lsn, updated_at = now() WHERE run_id = $1", &[&run_id, &lsn])
        .await
        .context(&endpoint, || "record the slot's LSN".into())?;
    Ok(())
}

pub async fn set_phase(client: &Client, endpoint: &str, run_id: i64, phase: &str) -> Result<()> {
    client
        .execute(
            "UPDATE pgshift.runs SET phase = $2, updated_at = now(), \
             finished_at = CASE WHEN $2 IN ('loaded', 'done') THEN now() END WHERE run_id = $1",
            &[&run_id, &phase],
        )
        .await
        .context(&endpoint, || format!("set the run's phase to {phase}"))?;
    Ok(())
}

pub async fn chunks(client: &Client, endpoint: &str, run_id: i64) -> Result<Vec<ChunkState>> {
    let rows = client
        .query(
            "SELECT table_name, chunk_no, split, predicate, done_at IS NOT NULL FROM pgshift.chunks \
             WHERE run_id = $1 ORDER BY table_name, chunk_no",
            &[&run_id],
        )
        .await
        .context(&endpoint, || "read pgshift.chunks".into())?;
    Ok(rows
        .iter()
        .map(|r| ChunkState {
            table_name: r.get(0),
            chunk_no: r.get(1),
            split: SplitKind::parse(r.get(2)),
            predicate: r.get(3),
            done: r.get(4),
        })
        .collect())
}

/// Marks a chunk done; call inside the transaction that wrote its rows.
pub async fn mark_chunk_done(
    tx: &impl GenericClient,
    endpoint: &str,
    run_id: i64,
    table: &str,
    chunk_no: i32,
    rows: u64,
    bytes: u64,
) -> Result<()> {
    tx.execute(
        "UPDATE pgshift.chunks SET rows = $4, bytes = $5, done_at = now() WHERE run_id = $1 AND table_name = $2 AND chunk_no = $3",
        &[&run_id, &table, &chunk_no, &(rows as i64), &(bytes as i64)],
    )
    .await
    .context(&endpoint, || format!("checkpoint chunk {chunk_no} of {table}"))?;
    Ok(())
}

/// Forgets the progress of a table's chunks (used before re-copying a ctid-split
/// table whole).
pub async fn reset_table_chunks(tx: &impl GenericClient, endpoint: &str, run_id: i64, table: &str) -> Result<()> {
    tx.execute(
        "UPDATE pgshift.chunks SET rows = NULL, bytes = NULL, done_at = NULL WHERE run_id = $1 AND table_name = $2",
        &[&run_id, &table],
    )
    .await
    .context(&endpoint, || format!("reset chunks of {table}"))?;
    Ok(())
}

/// The embedding specs a run was started with (empty when it computes no vectors).
pub async fn run_embeddings(client: &Client, endpoint: &str, run_id: i64) -> Result<Vec<crate::embedding::EmbeddingSpec>> {
    let value: Option<String> = client
        .query_one("SELECT embeddings::text FROM pgshift.runs WHERE run_id = $1", &[&run_id])
        .await
        .context(&endpoint, || "read the run's embedding specs".into())?
        .get(0);
    match value {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_str(&v).map_err(|e| Error::State(format!("run {run_id}: unreadable embedding specs: {e}"))),
    }
}

pub async fn set_run_embeddings(client: &Client, endpoint: &str, run_id: i64, specs: &[crate::embedding::EmbeddingSpec]) -> Result<()> {
    let value = serde_json::to_string(specs).expect("specs serialize");
    client
        .execute("UPDATE pgshift.runs SET embeddings = $2::text::jsonb WHERE run_id = $1", &[&run_id, &value])
        .await
        .context(&endpoint, || "record the run's embedding specs".into())?;
    Ok(())
}

/// What verify needs of the source's newest run: the run (for its schema map) and the
/// embedding specs whose vector columns it computed (none without a run).
pub async fn newest_run_and_embeddings(client: &Client, endpoint: &str, source: &str) -> Result<(Option<Run>, Vec<crate::embedding::EmbeddingSpec>)> {
    let run = newest_run_of_source(client, endpoint, source).await?;
    let specs = match &run {
        Some(run) => run_embeddings(client, endpoint, run.run_id).await?,
        None => Vec::new(),
    };
    Ok((run, specs))
}

/// The newest run from exactly this source, if any.
pub async fn newest_run_of_source(client: &Client, endpoint: &str, source: &str) -> Result<Option<Run>> {
    if !has_state_schema(client, endpoint).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(&format!("SELECT {RUN_COLUMNS} FROM pgshift.runs runs WHERE source = $1 ORDER BY run_id DESC LIMIT 1"), &[&source])
        .await
        .context(&endpoint, || "read pgshift.runs".into())?;
    Ok(row.as_ref().map(run_from))
}
