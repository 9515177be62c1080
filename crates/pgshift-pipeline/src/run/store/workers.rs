//! `pgshift.workers`: the processes copying a run's chunks, as they last reported
//! (for `status` and `pgshift_copy_workers`; claims are row locks, not this table).

use super::Store;
use crate::error::Result;

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

impl Store<'_> {
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
}
