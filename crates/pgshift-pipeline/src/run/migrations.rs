//! The `pgshift` state schema, versioned. Each migration is applied once and recorded
//! in `pgshift.state_versions`; every statement is idempotent (`IF NOT EXISTS`), so a
//! state schema made before versions were recorded (which has some of these objects
//! already) upgrades by applying them all once. Migrations run under an advisory
//! lock, so two pgshift processes starting on one target do not race.

use pgshift_postgres::error::Context;
use pgshift_postgres::Session;

use crate::error::{Error, Result};

/// (version, what it adds, SQL). Append only: a released version never changes.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "runs and chunks",
        "CREATE TABLE IF NOT EXISTS pgshift.runs (
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
        )",
    ),
    (
        2,
        "convergence LSN: up to here the target may hold rows newer than the stream (chunks re-read after a resume)",
        "ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS converge_lsn pg_lsn",
    ),
    (3, "the run's embedding specs (catch-up and cutover need them too)", "ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS embeddings jsonb"),
    (
        4,
        "source schema -> target schema (--map-schema); chunks keep the source's names",
        "ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS schema_map jsonb",
    ),
    (
        5,
        "embedding cache: same model + same text = same vector (little-endian float4s)",
        "CREATE TABLE IF NOT EXISTS pgshift.embedding_cache (
            model  text NOT NULL,
            hash   bytea NOT NULL,
            vector bytea NOT NULL,
            PRIMARY KEY (model, hash)
        )",
    ),
    (
        6,
        "re-embeds of live tables (pgshift reembed) with their checkpoints",
        "CREATE TABLE IF NOT EXISTS pgshift.reembeds (
            table_name  text NOT NULL,
            column_name text NOT NULL,
            spec        jsonb NOT NULL,
            model       text NOT NULL,
            phase       text NOT NULL,
            last_key    text[],
            rows_done   bigint NOT NULL DEFAULT 0,
            started_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (table_name, column_name)
        )",
    ),
    (
        7,
        "statements the cutover runs on the target (triggers and row security switched on after catch-up)",
        "ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS at_cutover jsonb",
    ),
    (
        8,
        "foreign keys declared across sources (--foreign-key), validated once every run they span is done",
        "ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS foreign_keys jsonb",
    ),
    (
        9,
        "how the cutover and rollback bring large objects up to date (owners, privileges); null: the run has none to carry",
        "ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS large_objects jsonb",
    ),
    (
        10,
        "columns catch-up leaves out (a vector column recomputed in place), by the target's table names",
        "ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS left_out jsonb",
    ),
    (
        11,
        "the copy as a queue any worker claims from (pgshift worker): each chunk's source statement, the tables' target statements, the exported snapshot, the workers",
        "ALTER TABLE pgshift.chunks ADD COLUMN IF NOT EXISTS copy_out text;
        ALTER TABLE pgshift.chunks ADD COLUMN IF NOT EXISTS clear_first boolean;
        ALTER TABLE pgshift.runs ADD COLUMN IF NOT EXISTS copy_snapshot text;
        CREATE TABLE IF NOT EXISTS pgshift.copy_tables (
            run_id     bigint NOT NULL REFERENCES pgshift.runs ON DELETE CASCADE,
            table_name text NOT NULL,
            ord        int NOT NULL,
            target     text NOT NULL,
            copy_in    text NOT NULL,
            embedding  jsonb,
            PRIMARY KEY (run_id, table_name)
        );
        CREATE TABLE IF NOT EXISTS pgshift.workers (
            run_id      bigint NOT NULL REFERENCES pgshift.runs ON DELETE CASCADE,
            worker      text NOT NULL,
            host        text NOT NULL,
            jobs        int NOT NULL,
            chunks_done int NOT NULL DEFAULT 0,
            rows        bigint NOT NULL DEFAULT 0,
            copying     text[] NOT NULL DEFAULT '{}',
            started_at  timestamptz NOT NULL DEFAULT now(),
            seen_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (run_id, worker)
        )",
    ),
    (
        12,
        "the chunk table a copied table's vectors go to (what a worker needs to write them)",
        "ALTER TABLE pgshift.copy_tables ADD COLUMN IF NOT EXISTS chunk_table jsonb",
    ),
    (
        13,
        "a digest of each cached vector as pgvector sends it (reembed finds the rows whose vector is not their text's)",
        "ALTER TABLE pgshift.embedding_cache ADD COLUMN IF NOT EXISTS digest bytea",
    ),
    (
        14,
        "the vectorize keeping this database's vectors, as it last reported (one per database)",
        "CREATE TABLE IF NOT EXISTS pgshift.vectorizers (
            one         boolean PRIMARY KEY DEFAULT true CHECK (one),
            worker      text NOT NULL,
            tables      text[] NOT NULL,
            started_at  timestamptz NOT NULL DEFAULT now(),
            seen_at     timestamptz NOT NULL DEFAULT now(),
            stopped_at  timestamptz,
            rows        bigint NOT NULL DEFAULT 0,
            backlog     bigint NOT NULL DEFAULT 0,
            lag_seconds float8 NOT NULL DEFAULT 0
        )",
    ),
];

/// The newest version this pgshift knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The migrations a schema at `current` still needs, in order.
pub fn pending(current: i32) -> impl Iterator<Item = &'static (i32, &'static str, &'static str)> {
    MIGRATIONS.iter().filter(move |m| m.0 > current)
}

/// Brings the state schema to [`latest`]. Must run inside a transaction on `client`
/// (the advisory lock is held until it ends). Refuses a schema newer than this pgshift.
pub async fn apply(client: &Session) -> Result<()> {
    let endpoint = client.endpoint();
    let ctx = || "create or upgrade the pgshift state schema".to_string();
    client
        .batch_execute(
            "SELECT pg_advisory_xact_lock(hashtext('pgshift.state_versions')); \
             CREATE SCHEMA IF NOT EXISTS pgshift; \
             CREATE TABLE IF NOT EXISTS pgshift.state_versions ( \
                 version int PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .context(&endpoint, ctx)?;
    let current: i32 = client
        .query_one("SELECT coalesce(max(version), 0) FROM pgshift.state_versions", &[])
        .await
        .context(&endpoint, ctx)?
        .get(0);
    if current > latest() {
        return Err(Error::Internal(format!(
            "the pgshift state schema on {endpoint} is at version {current}, newer than this pgshift knows ({}): use the pgshift that wrote it, or a newer one",
            latest()
        )));
    }
    for (version, description, sql) in pending(current) {
        client.batch_execute(sql).await.context(&endpoint, || format!("state schema version {version} ({description})"))?;
        client
            .execute("INSERT INTO pgshift.state_versions (version, description) VALUES ($1, $2)", &[version, description])
            .await
            .context(&endpoint, ctx)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_idempotent() {
        for (i, (version, _, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1, "versions count up from 1 without gaps");
            // Old state schemas already have some objects: every statement must tolerate that.
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                assert!(statement.contains("IF NOT EXISTS"), "version {version} is not idempotent: {statement}");
            }
        }
        assert_eq!(pending(0).count(), MIGRATIONS.len());
        assert_eq!(pending(latest()).count(), 0);
        assert_eq!(pending(4).map(|m| m.0).collect::<Vec<_>>(), (5..=latest()).collect::<Vec<_>>());
    }
}
