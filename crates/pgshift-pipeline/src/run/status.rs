//! `pgshift status`: where the newest run stands, read from the target's `pgshift`
//! schema, with the replication lag when the source is given.

use pgshift_postgres::schema_map::SchemaMap;
use pgshift_postgres::ConnInfo;
use serde::Serialize;

use super::slot::{self, SlotState};
use super::store::{Store, WorkerState};
use super::Phase;
use crate::error::Result;

#[derive(Clone, Debug, Default, Serialize)]
pub struct TableProgress {
    pub table: String,
    pub chunks_done: i64,
    pub chunks_total: i64,
    pub rows: i64,
    pub bytes: i64,
}

/// Every run on the target (several when databases are consolidated into one).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub run_id: i64,
    /// The source as `user@host:port/db` (or `sqlite:path`).
    pub source: String,
    pub phase: Phase,
    pub slot_name: Option<String>,
    /// Source schema -> target schema (`--map-schema`); empty when the names are kept.
    pub schema_map: SchemaMap,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusReport {
    /// False when the target holds no pgshift run yet.
    pub has_run: bool,
    pub run_id: Option<i64>,
    pub phase: Option<Phase>,
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
    /// The processes copying the newest run's chunks (migrate's own and `pgshift worker`s), while it copies.
    pub workers: Vec<WorkerState>,
    /// All runs, newest first; the fields above describe the newest.
    pub runs: Vec<RunSummary>,
    /// The `pgshift vectorize` of this database, if one ever ran (also without a run).
    pub vectorize: Option<super::store::VectorizeState>,
}

pub async fn status(source: Option<&ConnInfo>, target: &ConnInfo) -> Result<StatusReport> {
    let dst = target.session().await?;
    let store = Store::new(&dst);
    let mut report = StatusReport { vectorize: store.vectorize_state().await?, ..Default::default() };
    // Every run, newest first; the report's own fields describe the newest.
    let runs = store.all_runs().await?;
    let Some(newest) = runs.first() else {
        return Ok(report);
    };
    let run_id = newest.run.run_id;
    report.has_run = true;
    report.run_id = Some(run_id);
    report.phase = Some(newest.run.phase);
    report.slot_name = newest.run.slot_name.clone();
    report.started_at = Some(newest.started_at.clone());
    report.updated_at = Some(newest.updated_at.clone());
    report.runs = runs
        .iter()
        .map(|r| RunSummary {
            run_id: r.run.run_id,
            source: r.run.source.clone(),
            phase: r.run.phase,
            slot_name: r.run.slot_name.clone(),
            schema_map: r.run.schema_map.clone(),
        })
        .collect();
    report.tables = store
        .table_totals(run_id)
        .await?
        .into_iter()
        .map(|t| TableProgress { table: t.table, chunks_done: t.chunks_done, chunks_total: t.chunks_total, rows: t.rows, bytes: t.bytes })
        .collect();
    if newest.run.phase == Phase::Copy {
        report.workers = store.workers(run_id).await?;
    }
    report.chunks_done = report.tables.iter().map(|t| t.chunks_done).sum();
    report.chunks_total = report.tables.iter().map(|t| t.chunks_total).sum();
    if let (Some(source), Some(slot)) = (source, &report.slot_name) {
        let src = source.session().await?;
        if let SlotState::Usable { active, confirmed } = slot::state(&src, slot).await? {
            report.lag_bytes = Some(crate::run::slot::lag_bytes(&src, confirmed.and_then(|c| c.parse().ok()).unwrap_or_default()).await?);
            report.following = Some(active);
        }
    }
    Ok(report)
}
