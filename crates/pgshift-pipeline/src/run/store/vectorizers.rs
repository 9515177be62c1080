//! `pgshift.vectorizers`: the `pgshift vectorize` keeping this database's vectors, as
//! it last reported (for `status` and the status page; its lock is an advisory lock,
//! not this row).

use super::Store;
use crate::error::Result;

/// A vectorize, for `pgshift status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VectorizeState {
    /// `host:pid`.
    pub worker: String,
    /// What it keeps: `schema.table.column`, or `schema.table -> chunk table`.
    pub tables: Vec<String>,
    /// Reporting now (every 2 s), not stopped.
    pub running: bool,
    pub rows: i64,
    pub rows_per_second: f64,
    /// Rows waiting for their vectors at its last count, and the oldest one's age.
    pub backlog: i64,
    pub lag_seconds: f64,
    pub seen_seconds_ago: f64,
    pub started_at: String,
}

/// A vectorize reports every 2 s; this long without a word, it is taken for gone.
const GONE_AFTER_SECONDS: f64 = 30.0;

impl Store<'_> {
    pub async fn vectorize_started(&self, worker: &str, tables: &[String]) -> Result<()> {
        self.execute(
            "INSERT INTO pgshift.vectorizers (worker, tables) VALUES ($1, $2) ON CONFLICT (one) DO UPDATE SET worker = $1, tables = $2, \
             started_at = now(), seen_at = now(), stopped_at = NULL, rows = 0, backlog = 0, lag_seconds = 0",
            &[&worker, &tables],
            || "record the vectorize".into(),
        )
        .await?;
        Ok(())
    }

    pub async fn vectorize_seen(&self, rows: i64, backlog: i64, lag_seconds: f64) -> Result<()> {
        self.execute(
            "UPDATE pgshift.vectorizers SET seen_at = now(), rows = $1, backlog = $2, lag_seconds = $3",
            &[&rows, &backlog, &lag_seconds],
            || "report the vectorize's progress".into(),
        )
        .await?;
        Ok(())
    }

    pub async fn vectorize_stopped(&self, rows: i64) -> Result<()> {
        self.execute("UPDATE pgshift.vectorizers SET stopped_at = now(), seen_at = now(), rows = $1", &[&rows], || "record that vectorize stopped".into())
            .await?;
        Ok(())
    }

    /// The vectorize of this database, if one ever ran.
    pub async fn vectorize_state(&self) -> Result<Option<VectorizeState>> {
        if !self.exists().await? {
            return Ok(None);
        }
        let rows = self
            .query(
                "SELECT worker, tables, stopped_at IS NULL, rows, extract(epoch FROM seen_at - started_at)::float8, backlog, lag_seconds, \
                        extract(epoch FROM now() - seen_at)::float8, started_at::text \
                 FROM pgshift.vectorizers",
                &[],
                "read pgshift.vectorizers",
            )
            .await?;
        Ok(rows.first().map(|r| {
            let (rows, seconds, seen): (i64, f64, f64) = (r.get(3), r.get(4), r.get(7));
            VectorizeState {
                worker: r.get(0),
                tables: r.get(1),
                running: r.get::<_, bool>(2) && seen < GONE_AFTER_SECONDS,
                rows,
                rows_per_second: if seconds > 0.0 { rows as f64 / seconds } else { 0.0 },
                backlog: r.get(5),
                lag_seconds: r.get(6),
                seen_seconds_ago: seen,
                started_at: r.get(8),
            }
        }))
    }
}
