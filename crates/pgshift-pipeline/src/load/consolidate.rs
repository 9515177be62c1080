//! Several databases into one target in one command: each source is loaded by its
//! own run (its own slot, publication and origin), in the order given, then every
//! run follows its source at the same time.

use std::sync::Arc;

use pgshift_postgres::schema_map::SchemaMap;
use pgshift_postgres::ConnInfo;
use serde::Serialize;

use super::{load, MigrateOptions, MigrateReport, PlanOptions};
use crate::catchup::{follow, FollowOptions, FollowReport};
use crate::error::Result;
use crate::progress::Progress;
use crate::run::store::Store;
use crate::run::Phase;
use crate::source::casts::ColumnCast;
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
    let (dst_name, dst) = (target.endpoint(), target.connect().await?);
    let store = Store::new(&dst, dst_name);
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
        progress.step(&format!("loading {name}"));
        let options = MigrateOptions {
            plan: PlanOptions { patterns: s.tables.clone(), ..base.plan.clone() },
            casts: s.casts.clone(),
            schema_map: s.schema_map.clone(),
            resume,
            ..base.clone()
        };
        report.loads.push(load(&PostgresSource::new(s.source.clone()), target, &options, progress.clone()).await?);
    }
    if let (Some(fo), false) = (follow_options, base.dry_run || !base.follow) {
        let runs = sources.iter().map(|s| follow(&s.source, target, fo, progress.clone()));
        report.follows = futures_util::future::try_join_all(runs).await?;
    }
    Ok(report)
}
