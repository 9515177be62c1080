//! `pgshift.runs`: a run, where it stands, and what it was started with (embedding
//! specs, schema map, statements for the cutover, left-out columns, declared keys).

use pgshift_postgres::conn::in_transaction;
use pgshift_postgres::error::Context;
use pgshift_postgres::large_objects::Carry;
use pgshift_postgres::schema_map::SchemaMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{ChunkState, Store};
use crate::error::{Error, Result};
use crate::plan::chunks::SplitKind;
use crate::plan::embedding::EmbeddingSpec;
use crate::plan::LeftOut;
use crate::run::{migrations, slot, Phase, Run};

/// The columns [`run_from`] reads, in its order, from `pgshift.runs runs`. The schema
/// map is read through the row's JSON, so a state schema made by an older pgshift
/// (without the column) still reads, as "no map", until the next migrate adds it.
pub(super) const RUN_COLUMNS: &str = "run_id, source, slot_name, start_lsn::text, phase, converge_lsn::text, (to_jsonb(runs) -> 'schema_map')::text";

pub(super) fn run_from(r: &Row) -> Result<Run> {
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

/// A run's times, for `pgshift status`.
#[derive(Clone, Debug)]
pub struct RunTimes {
    pub run: Run,
    pub started_at: String,
    pub updated_at: String,
}

impl Store<'_> {
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
            .ok_or_else(|| Error::Internal(format!("{}: run {run_id} is not in pgshift.runs", self.db.endpoint())))
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
        pick_loaded_run(runs, source, self.db.endpoint())
    }

    /// The loaded run from `source` (see [`Store::loaded_run`]) and its slot: what
    /// catch-up follows and a cutover finishes.
    pub async fn run_to_follow(&self, source: &str) -> Result<(Run, String)> {
        let run = self
            .loaded_run(source)
            .await?
            .ok_or_else(|| Error::RunState(format!("{} holds no loaded pgshift run to follow: run pgshift migrate first", self.db.endpoint())))?;
        let slot = run.slot_name.clone().ok_or_else(|| Error::RunState(format!("run {} has no replication slot", run.run_id)))?;
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
            migrations::apply(self.db).await?;
            for sql in pre_data {
                self.db.batch_execute(sql).await.context(&self.db.endpoint(), || sql.clone())?;
            }
            self.create_run(run).await
        };
        let run_id = in_transaction(self.db, "the schema", work).await?;
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
            .db
            .query_one(
                "INSERT INTO pgshift.runs (source, phase, schema_map, embeddings, at_cutover, large_objects, left_out) \
                 VALUES ($1, $2, $3::text::jsonb, $4::text::jsonb, $5::text::jsonb, $6::text::jsonb, $7::text::jsonb) RETURNING run_id",
                &[&run.source, &Phase::Copy.as_str(), &map, &specs, &at_cutover, &large_objects, &left_out],
            )
            .await
            .context(&self.db.endpoint(), ctx)?;
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
            .db
            .query_one(
                "INSERT INTO pgshift.runs (source, slot_name, start_lsn, phase, finished_at, schema_map, large_objects, left_out) \
                 VALUES ($1, $2, $3::text::pg_lsn, $4, now(), $5::text::jsonb, $6::text::jsonb, $7::text::jsonb) RETURNING run_id",
                &[&source, &slot, &start_lsn, &Phase::Loaded.as_str(), &map, &large_objects, &left_out],
            )
            .await
            .context(&self.db.endpoint(), ctx)?;
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
            return Err(Error::Internal(format!("run {run_id} cannot go from phase {from} to {to}")));
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
            return Err(Error::RunState(format!("run {run_id} is in phase {now}, not {from}: another pgshift process moved it on")));
        }
        Ok(())
    }

    /// Whether a cutover finished the run (a follower then stops).
    pub async fn is_done(&self, run_id: i64) -> Result<bool> {
        Ok(self.run(run_id).await?.phase == Phase::Done)
    }

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
            Some(v) => serde_json::from_str(&v).map(Some).map_err(|e| Error::Internal(format!("run {run_id}: unreadable {what}: {e}"))),
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
                serde_json::from_str(&text).map_err(|e| Error::Internal(format!("unreadable declared foreign keys: {e}")))?;
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
}

/// Which unfinished run a load continues (see [`Store::run_to_resume`]).
fn resume_decision(unfinished: Option<Run>, resume: bool, schema_map: &SchemaMap) -> Result<Option<Run>> {
    match (unfinished, resume) {
        (Some(run), false) => Err(Error::RunState(format!(
            "the target holds an unfinished run {} (phase {}): pass --resume to continue it",
            run.run_id, run.phase
        ))),
        (None, true) => Err(Error::RunState("--resume: the target holds no unfinished pgshift run".into())),
        (Some(run), true) if run.schema_map != *schema_map => Err(Error::RunState(format!(
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
            Err(Error::RunState(format!(
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
