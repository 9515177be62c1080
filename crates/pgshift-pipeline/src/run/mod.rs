//! A run: one source's way into the target, recorded in the target's `pgshift`
//! schema so that its state is visible to SQL, to the HTTP API and to a second
//! machine, and so that `--resume`, `follow` and `cutover` know where it stands.
//!
//! - [`store`] is the only code that reads or writes `pgshift.*`;
//! - [`migrations`] versions that schema (older state schemas upgrade in place);
//! - [`slot`] names a run's slot, publication and replication origin and owns their
//!   lifecycle (create, check, drop);
//! - [`status`] is `pgshift status`.

pub mod migrations;
pub mod slot;
pub mod status;
pub mod store;

use pgshift_postgres::schema_map::SchemaMap;
use pgshift_postgres::{ConnInfo, Session};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::embedding::EmbeddingSpec;

/// The embedding specs of the run that `follow` and `cutover` take up for `source`
/// (none without such a run: the command itself then says why).
pub async fn recorded_embeddings(source: &ConnInfo, target: &ConnInfo) -> Result<Vec<EmbeddingSpec>> {
    let dst = target.session().await?;
    let store = store::Store::new(&dst);
    match store.run_to_follow(source.endpoint()).await {
        Ok((run, _)) => store.run_embeddings(run.run_id).await,
        Err(_) => Ok(Vec::new()),
    }
}

/// Every spec the target's runs recorded, newest run first (grouped by run id), each
/// naming its table as the target has it (`schema.table`, after the run's --map-schema).
pub async fn specs_on_target(dst: &Session) -> Result<Vec<(i64, EmbeddingSpec)>> {
    let store = store::Store::new(dst);
    let mut out = Vec::new();
    for run in store.all_runs().await? {
        for spec in store.run_embeddings(run.run.run_id).await? {
            let source_name = if spec.table.contains('.') { spec.table.clone() } else { format!("public.{}", spec.table) };
            out.push((run.run.run_id, EmbeddingSpec { table: run.run.schema_map.target_display(&source_name), ..spec }));
        }
    }
    Ok(out)
}

/// The specs of the newest run on the target that computed vectors: what `vectorize`
/// keeps current after a cutover.
pub async fn newest_specs_on_target(target: &ConnInfo) -> Result<Vec<EmbeddingSpec>> {
    let all = specs_on_target(&target.session().await?).await?;
    let newest = all.first().map(|(run, _)| *run);
    Ok(all.into_iter().filter(|(run, _)| Some(*run) == newest).map(|(_, spec)| spec).collect())
}

/// Where a run stands. A run moves forward only: copy -> post-data -> loaded (when
/// catch-up follows) -> done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Chunks are being copied.
    Copy,
    /// Rows are in; keys, indexes and constraints are being built.
    PostData,
    /// Loaded and indexed; the slot waits for catch-up and cutover.
    Loaded,
    /// Cut over (or loaded without catch-up): nothing left to do.
    Done,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Copy, Phase::PostData, Phase::Loaded, Phase::Done];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Copy => "copy",
            Phase::PostData => "post-data",
            Phase::Loaded => "loaded",
            Phase::Done => "done",
        }
    }

    pub fn parse(text: &str) -> Result<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == text).ok_or_else(|| {
            Error::Internal(format!("a run is in phase {text:?}, which this pgshift does not know: was it written by a newer pgshift?"))
        })
    }

    /// The load is over (the run's finished_at is set).
    pub fn load_finished(self) -> bool {
        matches!(self, Phase::Loaded | Phase::Done)
    }

    /// Where a run goes once its rows and indexes are in.
    pub fn after_load(follow: bool) -> Phase {
        if follow {
            Phase::Loaded
        } else {
            Phase::Done
        }
    }

    /// Whether a run in `self` may move to `next`: forward only, and only through
    /// the load's steps (a run never skips its post-data).
    pub fn may_become(self, next: Phase) -> bool {
        matches!(
            (self, next),
            (Phase::Copy, Phase::PostData) | (Phase::PostData, Phase::Loaded | Phase::Done) | (Phase::Loaded, Phase::Done)
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run as `pgshift.runs` records it.
#[derive(Clone, Debug)]
pub struct Run {
    pub run_id: i64,
    /// The source as `user@host:port/db` (or `sqlite:path`).
    pub source: String,
    /// Set for runs that catch up (and so have a slot, publication and origin).
    pub slot_name: Option<String>,
    /// L0: where the slot's snapshot showed the data.
    pub start_lsn: Option<String>,
    pub phase: Phase,
    /// Up to here catch-up applies idempotently (chunks re-read after a resume).
    pub converge_lsn: Option<String>,
    /// Where the source's schemas went on the target (empty: nowhere else).
    pub schema_map: SchemaMap,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_and_unknown_ones_are_refused() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()).unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert!(Phase::parse("backfill").unwrap_err().to_string().contains("newer pgshift"));
    }

    #[test]
    fn runs_only_move_forward_through_the_load() {
        assert!(Phase::Copy.may_become(Phase::PostData));
        assert!(Phase::PostData.may_become(Phase::after_load(true)));
        assert!(Phase::PostData.may_become(Phase::after_load(false)));
        assert!(Phase::Loaded.may_become(Phase::Done));
        assert!(!Phase::Copy.may_become(Phase::Loaded), "post-data is never skipped");
        assert!(!Phase::Done.may_become(Phase::Loaded));
        assert!(!Phase::Loaded.may_become(Phase::Copy));
        assert!(Phase::Loaded.load_finished() && Phase::Done.load_finished() && !Phase::PostData.load_finished());
    }
}
