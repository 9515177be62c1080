//! Several databases into one target in one command: each source is loaded by its
//! own run (its own slot, publication and origin), in the order given, then every
//! run follows its source at the same time. Every source's checks run before
//! anything is written to any of them; a load that fails says what it left behind.

use std::sync::Arc;

use pgshift_postgres::schema_map::SchemaMap;
use pgshift_postgres::ConnInfo;
use serde::Serialize;

use super::{load, MigrateReport};
use crate::catchup::{follow, FollowOptions, FollowReport};
use crate::error::{Error, Result};
use crate::plan::casts::ColumnCast;
use crate::plan::{MigrateOptions, PlanOptions};
use crate::progress::{OfSource, Progress, Silent};
use crate::run::Phase;
use crate::run::slot;
use crate::run::store::Store;
use crate::source::postgres::PostgresSource;

/// One source and what of it moves.
#[derive(Clone, Debug)]
pub struct SourcePlan {
    pub source: ConnInfo,
    /// Table patterns (`!pattern` leaves out); empty = every table.
    pub tables: Vec<String>,
    pub casts: Vec<ColumnCast>,
    /// Where this source's schemas go on the target.
    pub schema_map: SchemaMap,
}

#[derive(Debug, Default, Serialize)]
pub struct ConsolidateReport {
    /// One per source, in order.
    pub loads: Vec<MigrateReport>,
    /// One per source when catch-up ran (and ended).
    pub follows: Vec<FollowReport>,
}

/// Loads every source, then (unless `follow` is None) follows all of them at once.
/// Rerunning continues: a source already loaded is not loaded again, an unfinished
/// load is resumed.
pub async fn consolidate(
    sources: &[SourcePlan],
    target: &ConnInfo,
    base: &MigrateOptions,
    follow_options: Option<&FollowOptions>,
    progress: Arc<dyn Progress>,
) -> Result<ConsolidateReport> {
    let mut report = ConsolidateReport::default();
    let dst = target.session().await?;
    let store = Store::new(&dst);
    let mut todo = Vec::new();
    for s in sources {
        let name = s.source.endpoint();
        let resume = match store.newest_run_of_source(name).await?.map(|r| r.phase) {
            Some(Phase::Loaded) if !base.dry_run => {
                progress.step(&format!("{name} is already loaded"));
                continue;
            }
            Some(Phase::Copy | Phase::PostData) => true,
            _ => false,
        };
        let options = MigrateOptions {
            plan: PlanOptions { patterns: s.tables.clone(), ..base.plan.clone() },
            casts: s.casts.clone(),
            schema_map: s.schema_map.clone(),
            resume,
            ..base.clone()
        };
        todo.push((s, options));
    }
    // Every source's checks before anything is written to any of them, all problems at once.
    let mut problems = Vec::new();
    for (s, options) in &todo {
        let checked = load(&PostgresSource::new(s.source.clone()), target, &MigrateOptions { dry_run: true, ..options.clone() }, Arc::new(Silent)).await;
        match checked {
            Ok(plan) if base.dry_run => report.loads.push(plan),
            Ok(_) => {}
            Err(Error::Preflight(p)) => problems.extend(p.into_iter().map(|p| format!("{}: {p}", s.source.endpoint()))),
            Err(e) => return Err(e.of_source(s.source.endpoint(), String::new())),
        }
    }
    if !problems.is_empty() {
        return Err(Error::Preflight(problems));
    }
    if base.dry_run {
        return Ok(report);
    }
    for (s, options) in &todo {
        let name = s.source.endpoint();
        progress.step(&format!("loading {name}"));
        let of_source: Arc<dyn Progress> = Arc::new(OfSource { inner: progress.clone(), source: name.to_string() });
        match load(&PostgresSource::new(s.source.clone()), target, options, of_source).await {
            Ok(r) => report.loads.push(r),
            Err(e) => return Err(left_behind(&store, name, e).await),
        }
    }
    if let (Some(fo), false) = (follow_options, base.dry_run || !base.follow) {
        let runs = sources.iter().map(|s| follow(&s.source, target, fo, progress.clone()));
        report.follows = futures_util::future::try_join_all(runs).await?;
    }
    Ok(report)
}

/// A failed load's error, with what it left behind on the source and how to go on.
async fn left_behind(store: &Store<'_>, source: &str, e: Error) -> Error {
    let Ok(Some(run)) = store.unfinished_run(source).await else {
        return e.of_source(source, String::new());
    };
    let leftovers = match &run.slot_name {
        Some(slot) => format!(
            "its replication slot {slot} and publication {} on {source} keep WAL there until removed \
             (SELECT pg_drop_replication_slot('{slot}'); DROP PUBLICATION {}; and, once no pgshift slot is left there, \
             DROP EVENT TRIGGER IF EXISTS pgshift_ddl, pgshift_ddl_drop;)",
            slot::publication_name(slot),
            pgshift_postgres::sql::quote_ident(slot::publication_name(slot))
        ),
        None => "no slot".to_string(),
    };
    let note = format!(
        ". Run {} of {source} is unfinished (phase {}): {leftovers}. Fix the cause and run pgshift consolidate \
         again to continue it, or remove it with the statements above and the run's tables on the target",
        run.run_id, run.phase
    );
    e.of_source(source, note)
}
