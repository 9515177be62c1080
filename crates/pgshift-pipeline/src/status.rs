//! `pgshift status`: where the newest run stands, read from the target's `pgshift`
//! schema, with the replication lag when the source is given.

use pgshift_postgres::error::Context;
use pgshift_postgres::lsn::Lsn;
use pgshift_postgres::schema_map::SchemaMap;
use pgshift_postgres::ConnInfo;
use serde::Serialize;

use crate::error::Result;
use crate::state;

#[derive(Clone, Debug, Default, Serialize)]
pub struct TableProgress {
    pub table: String,
    pub chunks_done: i64,
    pub chunks_total: i64,
    pub rows: i64,
    pub bytes: i64,
}

/// Every run on the target (several when databases are consolidated into one).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub run_id: i64,
    /// The source as `user@host:port/db` (or `sqlite:path`).
    pub source: String,
    pub phase: String,
    pub slot_name: Option<String>,
    /// Source schema -> target schema (`--map-schema`); empty when the names are kept.
    pub schema_map: SchemaMap,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusReport {
    /// False when the target holds no pgshift run yet.
    pub has_run: bool,
    pub run_id: Option<i64>,
    pub phase: Option<String>,
    pub slot_name: Option<String>,
    pub started_at: Option<String>,
    pub updated_at: Option<String>,
    pub tables: Vec<TableProgress>,
    pub chunks_done: i64,
    pub chunks_total: i64,
    /// WAL the target has not applied yet (needs the source).
    pub lag_bytes: Option<u64>,
    /// Whether a follower is streaming from the run's slot right now.
    pub following: Option<bool>,
    /// All runs, newest first; the fields above describe the newest.
    pub runs: Vec<RunSummary>,
}

pub async fn status(source: Option<&ConnInfo>, target: &ConnInfo) -> Result<StatusReport> {
    let dst_name = target.endpoint();
    let dst = target.connect().await?;
    let mut report = StatusReport::default();
    if !state::has_state_schema(&dst, dst_name).await? {
        return Ok(report);
    }
    // Every run, newest first; the report's own fields describe the newest.
    let runs = dst
        .query(
            "SELECT run_id, source, phase, slot_name, started_at::text, updated_at::text, (to_jsonb(runs) -> 'schema_map')::text \
             FROM pgshift.runs runs ORDER BY run_id DESC",
            &[],
        )
        .await
        .context(&dst_name, || "read pgshift.runs".into())?;
    let Some(run) = runs.first() else {
        return Ok(report);
    };
    let run_id: i64 = run.get(0);
    report.runs = runs
        .iter()
        .map(|r| RunSummary { run_id: r.get(0), source: r.get(1), phase: r.get(2), slot_name: r.get(3), schema_map: state::schema_map_at(r, 6) })
        .collect();
    report.has_run = true;
    report.run_id = Some(run_id);
    report.phase = run.get(2);
    report.slot_name = run.get(3);
    report.started_at = run.get(4);
    report.updated_at = run.get(5);
    let rows = dst
        .query(
            "SELECT table_name, count(done_at), count(*), coalesce(sum(rows), 0)::int8, coalesce(sum(bytes), 0)::int8 \
             FROM pgshift.chunks WHERE run_id = $1 GROUP BY table_name ORDER BY table_name",
            &[&run_id],
        )
        .await
        .context(&dst_name, || "read pgshift.chunks".into())?;
    report.tables = rows
        .iter()
        .map(|r| TableProgress { table: r.get(0), chunks_done: r.get(1), chunks_total: r.get(2), rows: r.get(3), bytes: r.get(4) })
        .collect();
    report.chunks_done = report.tables.iter().map(|t| t.chunks_done).sum();
    report.chunks_total = report.tables.iter().map(|t| t.chunks_total).sum();
    if let (Some(source), Some(slot)) = (source, &report.slot_name) {
        let src_name = source.endpoint();
        let src = source.connect().await?;
        let row = src
            .query_opt(
                "SELECT pg_current_wal_lsn()::text, confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1",
                &[slot],
            )
            .await
            .context(&src_name, || "read the run's slot".into())?;
        if let Some(row) = row {
            let (current, confirmed): (String, Option<String>) = (row.get(0), row.get(1));
            let current: Lsn = current.parse().unwrap_or_default();
            let confirmed: Lsn = confirmed.and_then(|c| c.parse().ok()).unwrap_or_default();
            report.lag_bytes = Some(current.bytes_after(confirmed));
            report.following = Some(row.get(2));
        }
    }
    Ok(report)
}
