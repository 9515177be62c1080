//! `pgshift cutover`: pause writes on the source, let catch-up apply the last
//! changes, copy sequence values, compare row counts, and hand over.
//!
//! The fence is `LOCK TABLE ... IN EXCLUSIVE MODE` on the run's tables inside one
//! source transaction. It waits for running writers to finish and blocks new ones,
//! while readers go on; it needs no superuser and ends by itself (lock_timeout,
//! ROLLBACK) if anything fails, so a failed cutover leaves the source as it was.
//! When the switch succeeds, the source database is made read-only for new sessions
//! and the sessions that were waiting to write are ended before the locks go, so no
//! write can land on the old database unseen.
//!
//! Nothing whose cost grows with the data runs while writers wait: inside the fence
//! each side only opens a REPEATABLE READ transaction (the source's sees every write
//! before the fence, the target's every change applied up to it); the row counts
//! are compared under those two snapshots after the locks are released, exactly,
//! even while the application already writes to the new database.

use pgshift_postgres::large_objects;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgshift_postgres::catalog::{self, Catalog, Table};
use pgshift_postgres::ddl;
use pgshift_postgres::error::Context;
use pgshift_postgres::lsn::Lsn;
use pgshift_postgres::schema_map::SchemaMap;
use pgshift_postgres::sql::{qualified, quote_ident};
use pgshift_postgres::{ConnInfo, Session};
use serde::Serialize;
use tokio_postgres::Client;

use crate::catchup::{self as follow, emit_mark, FollowOptions, Until, FENCE};
use crate::embed::Keeper;
use crate::error::{Error, Result};
use crate::metrics::Stage;
use crate::plan::LeftOut;
use crate::progress::{Progress, Silent};
use crate::run::{Phase, Run};
use crate::run::slot::{self, SlotState};
use crate::run::store::Store;
use pooler::PoolSwitch;

#[derive(Clone, Debug)]
pub struct CutoverOptions {
    /// Longest write pause: waiting for the lock and for the target together.
    pub timeout: Duration,
    /// Refuse to start while the target is further behind than this.
    pub max_lag_bytes: u64,
    /// Leave the source writable after the switch (you stop the application yourself).
    pub keep_source_writable: bool,
    /// Set up replication back to the old database (target -> source) for rollback.
    pub reverse: bool,
    /// This is `pgshift rollback`: the "target" is the old database, made writable again.
    pub rollback: bool,
    pub dry_run: bool,
    /// The embedder, when the cutover applies the last changes of a run that computes vectors.
    pub embedding: Option<crate::plan::embedding::EmbeddingSetup>,
    /// Switch the application's clients in PgBouncer instead of making them move.
    pub pgbouncer: Option<pooler::PoolerOptions>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TableCount {
    pub table: String,
    pub source_rows: i64,
    pub target_rows: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PoolerReport {
    pub database: String,
    pub ini: String,
    pub client_wait_ms: f64,
}

/// The write pause, step by step (milliseconds).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PauseSteps {
    /// Waiting for the writers in flight to finish (LOCK TABLE).
    pub lock_ms: f64,
    /// Writing the fence mark and waiting until the target applied it.
    pub last_changes_ms: f64,
    /// Copying again the tables catch-up does not follow (small, without a key).
    pub unfollowed_ms: f64,
    pub sequences_ms: f64,
    /// Bringing large objects up to date (grows with their size).
    pub large_objects_ms: f64,
    /// Opening the snapshots the counts are compared under.
    pub snapshots_ms: f64,
    /// Reverse replication's slot, rollback's read-write switch.
    pub switch_ms: f64,
    /// Making the source read-only and releasing the locks.
    pub release_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CutoverReport {
    pub run_id: i64,
    pub dry_run: bool,
    /// What the cutover does (or, with --dry-run, would do), in order.
    pub steps: Vec<String>,
    pub lag_bytes_before: u64,
    pub fence_lsn: Option<String>,
    /// How long writers on the source were blocked.
    pub write_pause_ms: f64,
    pub sequences_synced: usize,
    /// Large objects written and removed inside the pause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<large_objects::Synced>,
    pub counts: Vec<TableCount>,
    /// Where the write pause went, in milliseconds.
    pub pause_steps: PauseSteps,
    pub source_read_only: bool,
    /// The slot on the target that carries changes back to the source (--reverse).
    pub reverse_slot: Option<String>,
    /// The pooled database switched in PgBouncer (--pgbouncer), and how long its
    /// clients' queries were held.
    pub pgbouncer: Option<PoolerReport>,
    /// Foreign keys declared across sources, validated once every run they span is done.
    pub foreign_keys: Vec<String>,
    /// Statements recorded at the load (triggers, owners, row security) left out because
    /// their object was dropped or renamed on the source during catch-up, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// The database the application should use from now on (redacted).
    pub switch_to: String,
}

pub mod pooler;
pub mod reverse;

/// SQLSTATEs of an object that is not there: undefined table, column, object, function.
const GONE: [&str; 4] = ["42P01", "42703", "42704", "42883"];

/// A step of the cutover, in the order it runs. [`plan`] builds the list in order:
/// `--dry-run` prints it, the log names each step as it begins, and each step's time
/// inside the write pause goes to its part of the pause report ([`Step::pause_part`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// PgBouncer holds new queries (--pgbouncer).
    PoolerPause,
    /// LOCK TABLE on the source: writers in flight finish, new ones wait.
    Lock,
    /// The fence mark, and the wait until the target applied it.
    LastChanges,
    /// The run's tables catch-up does not follow (small, without a key) copied again.
    Unfollowed,
    /// Sequence values; the target's triggers and row security switched on.
    Sequences,
    LargeObjects,
    /// A snapshot on each side for the counts compared after the pause.
    Snapshots,
    /// Replication back to the old database (--reverse).
    Reverse,
    /// `pgshift rollback`: the old database writable again.
    Rollback,
    /// PgBouncer's entry pointed at the new database, RELOAD, RESUME.
    PoolerSwitch,
    /// The source read-only (unless --keep-source-writable), the locks released.
    Release,
    /// Row counts under the snapshots (writers no longer wait).
    Counts,
    /// The run done; its slot, publication, origin and catch-up triggers gone.
    Finish,
}

impl Step {
    /// The part of [`PauseSteps`] this step's time counts in (None: after the pause).
    fn pause_part(self, parts: &mut PauseSteps) -> Option<&mut f64> {
        match self {
            Step::PoolerPause | Step::Lock => Some(&mut parts.lock_ms),
            Step::LastChanges => Some(&mut parts.last_changes_ms),
            Step::Unfollowed => Some(&mut parts.unfollowed_ms),
            Step::Sequences => Some(&mut parts.sequences_ms),
            Step::LargeObjects => Some(&mut parts.large_objects_ms),
            Step::Snapshots => Some(&mut parts.snapshots_ms),
            Step::Reverse | Step::Rollback | Step::PoolerSwitch => Some(&mut parts.switch_ms),
            Step::Release => Some(&mut parts.release_ms),
            Step::Counts | Step::Finish => None,
        }
    }
}

/// The cutover's steps for these options, in the order they run.
fn plan(opts: &CutoverOptions, pooled: bool, unfollowed: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if pooled {
        steps.push(Step::PoolerPause);
    }
    steps.extend([Step::Lock, Step::LastChanges]);
    if unfollowed {
        steps.push(Step::Unfollowed);
    }
    steps.extend([Step::Sequences, Step::LargeObjects, Step::Snapshots]);
    if opts.reverse {
        steps.push(Step::Reverse);
    }
    if opts.rollback {
        steps.push(Step::Rollback);
    }
    if pooled {
        steps.push(Step::PoolerSwitch);
    }
    steps.extend([Step::Release, Step::Counts, Step::Finish]);
    steps
}

/// What the cutover knows before it pauses anything, and the connections it works with.
struct Cutover<'a> {
    source: &'a ConnInfo,
    target: &'a ConnInfo,
    opts: &'a CutoverOptions,
    src: &'a Session,
    dst: &'a Session,
    run: &'a Run,
    slot: &'a str,
    catalog: &'a Catalog,
    /// The run's tables as the target has them, and the server's version.
    tables: &'a [&'a Table],
    target_version: i32,
    /// Each run table as the source and as the target has it (schemas may differ: --map-schema).
    pairs: Vec<(&'a Table, &'a Table)>,
    /// Those the run's publication leaves out (small, without a key): copied in the pause.
    unfollowed: Vec<(&'a Table, &'a Table)>,
    /// The extensions' configuration tables and sequences, carried again in the pause.
    extension_config: Vec<crate::source::extension_config::ConfigRelation>,
    large_objects: Option<large_objects::Carry>,
    left_out: &'a LeftOut,
    pool: Option<PoolSwitch>,
}

/// What the write pause holds: the fence's session, the two snapshot sessions.
struct Pause {
    fence: Session,
    snapshots: (Session, Session),
    began: Instant,
    /// The fence's statement, made before the pause begins.
    lock: String,
    activation: Vec<String>,
}

impl Cutover<'_> {
    fn source_tables(&self) -> Vec<&Table> {
        self.pairs.iter().map(|(s, _)| *s).collect()
    }

    fn names(&self) -> Vec<String> {
        self.pairs.iter().map(|(s, _)| s.qualified()).collect()
    }

    /// What a step does, as `--dry-run` and the log say it.
    fn describe(&self, step: Step) -> String {
        let database = || self.pool.as_ref().map(|p| p.database.clone()).unwrap_or_default();
        match step {
            Step::PoolerPause => format!("PgBouncer: PAUSE {} (transactions in flight finish, new queries wait)", database()),
            Step::Lock => format!("on the source: LOCK TABLE {} IN EXCLUSIVE MODE (lock_timeout {} ms)", self.names().join(", "), self.opts.timeout.as_millis()),
            Step::LastChanges => "write a fence mark into the source's WAL and wait until the target applied it".into(),
            Step::Unfollowed => {
                let tables: Vec<String> = self.unfollowed.iter().map(|(s, _)| format!("{} ({} KiB, no primary key or replica identity)", s.display_name(), s.size_bytes.max(0) / 1024)).collect();
                let config: Vec<String> = self.extension_config.iter().map(|c| format!("{}'s {}", c.extension, c.relation)).collect();
                format!("copy again what catch-up does not follow: {}", [tables, config].concat().join(", "))
            }
            Step::Sequences => format!(
                "copy {} sequence values to the target, switch on its triggers and row security",
                ddl::sequence_values(self.catalog, &self.source_tables()).len()
            ),
            Step::LargeObjects => match self.large_objects {
                Some(_) => "bring the target's large objects up to date (only those that differ are written)".into(),
                None => "large objects: not carried by this run".into(),
            },
            Step::Snapshots => "open a snapshot on each side (the counts are compared under them after the pause)".into(),
            Step::Reverse => {
                let mut step = "on the target: create a publication and a slot for replication back to the source".to_string();
                let columns: Vec<String> = self.left_out.iter().flat_map(|(t, cs)| cs.iter().map(move |c| format!("{t}.{c}"))).collect();
                if !columns.is_empty() {
                    step.push_str(&format!(", leaving out {} (vectors pgshift computed: the old database keeps its own column, or has none)", columns.join(", ")));
                }
                step
            }
            Step::Rollback => format!("make {} writable again (ALTER DATABASE ... RESET default_transaction_read_only)", self.dst.endpoint()),
            Step::PoolerSwitch => {
                let ini = self.pool.as_ref().map(|p| p.ini.display().to_string()).unwrap_or_default();
                format!("PgBouncer: point [databases] {} in {ini} at {}, RELOAD, RESUME {}", database(), self.dst.endpoint(), database())
            }
            Step::Release => match self.opts.keep_source_writable {
                true => "release the locks; the source stays writable (--keep-source-writable)".into(),
                false => "make the source database read-only for new sessions and end the sessions waiting to write, then release the locks".into(),
            },
            Step::Counts => format!("compare row counts of {} tables under the fence's snapshots", self.pairs.len()),
            Step::Finish => format!("mark run {} done, drop slot {} and its publication on the source", self.run.run_id, self.slot),
        }
    }

    /// One step inside the write pause.
    async fn pause_step(&mut self, step: Step, pause: &Pause, report: &mut CutoverReport) -> Result<()> {
        let (src, dst) = (self.src, self.dst);
        match step {
            Step::PoolerPause => self.pool.as_mut().expect("planned with a pool").pause(self.opts.timeout).await?,
            Step::Lock => {
                pause.fence.batch_execute(&pause.lock).await.context(&src.endpoint(), || "fence writes (LOCK TABLE ... IN EXCLUSIVE MODE)".into())?;
            }
            Step::LastChanges => {
                let fence_lsn = apply_up_to_fence(&pause.fence, src, self.slot, pause.began, self.opts.timeout).await?;
                report.fence_lsn = Some(fence_lsn.to_string());
            }
            Step::Unfollowed => {
                // Read by the fence's session, which holds the lock: nothing writes them now.
                for (s, t) in &self.unfollowed {
                    let format = pgshift_postgres::copy::CopyFormat::for_table(s);
                    let (out_sql, in_sql) = (pgshift_postgres::copy::copy_out_sql(s, None, format), pgshift_postgres::copy::copy_in_sql(t, format));
                    let truncate = format!("TRUNCATE ONLY {}", t.qualified());
                    let copy = async {
                        dst.batch_execute(&truncate).await.context(&dst.endpoint(), || truncate.clone())?;
                        Ok::<_, Error>(pgshift_postgres::copy::pipe(&pause.fence, &out_sql, dst, &in_sql).await?)
                    };
                    pgshift_postgres::conn::in_transaction(dst, "copy a table catch-up does not follow", copy).await?;
                }
                let notes = crate::source::extension_config::carry(&pause.fence, dst, &self.extension_config).await?;
                report.skipped.extend(notes.into_iter().filter(|n| n.starts_with("not carried")));
            }
            Step::Sequences => {
                report.sequences_synced = sync_sequences(&pause.fence, dst, (self.catalog, &self.run.schema_map), &self.source_tables()).await?;
                // Triggers and row security, held back while catch-up applied the source's
                // own triggers' results: from now on the target's fire.
                for sql in &pause.activation {
                    // Recorded at the load: an object dropped (or renamed) on the source during
                    // catch-up is gone on the target too, and its statement no longer applies.
                    match dst.batch_execute(sql).await {
                        Err(e) if e.code().is_some_and(|c| GONE.contains(&c.code())) => {
                            report.skipped.push(format!("{sql}: {}", pgshift_postgres::error::describe(&e)));
                        }
                        other => other.context(&dst.endpoint(), || sql.clone())?,
                    }
                }
            }
            Step::LargeObjects => {
                // Logical decoding does not carry large objects: made the same here, while
                // writers wait (a pause that grows with their size; none without them).
                if let Some(carry) = self.large_objects {
                    report.large_objects = Some(large_objects::sync(src, dst, carry).await?);
                }
            }
            Step::Snapshots => {
                for session in [&pause.snapshots.0, &pause.snapshots.1] {
                    session
                        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
                        .await
                        .context(&session.endpoint(), || "open the snapshot the counts are compared under".into())?;
                }
            }
            Step::Reverse => {
                let forward = reverse::Forward { run_id: self.run.run_id, schema_map: &self.run.schema_map, large_objects: self.large_objects, left_out: self.left_out };
                report.reverse_slot = Some(reverse::set_up(src, dst, (self.tables, self.target_version), &forward).await?);
            }
            Step::Rollback => {
                let sql = format!("ALTER DATABASE {} RESET default_transaction_read_only", quote_ident(self.target.dbname()));
                dst.batch_execute(&sql).await.context(&dst.endpoint(), || sql.clone())?;
            }
            Step::PoolerSwitch => {
                let p = self.pool.as_mut().expect("planned with a pool");
                p.repoint().await?;
                let waited = p.resume().await?;
                report.pgbouncer = Some(PoolerReport { database: p.database.clone(), ini: p.ini.display().to_string(), client_wait_ms: waited.as_secs_f64() * 1000.0 });
            }
            Step::Release | Step::Counts | Step::Finish => unreachable!("{step:?} runs after the pause"),
        }
        Ok(())
    }

    /// Ends the pause: the source read-only (unless kept writable), the locks released.
    async fn release(&self, pause: &Pause, report: &mut CutoverReport) -> Result<()> {
        if !self.opts.keep_source_writable {
            make_read_only(&pause.fence, self.source.dbname()).await?;
            report.source_read_only = true;
        }
        pause.fence.batch_execute("COMMIT").await.context(&self.src.endpoint(), || "release the fence".into())?;
        Ok(())
    }

    /// After the switch: the run is done, its slot, publication, origin and catch-up
    /// triggers go, declared keys are validated.
    async fn finish(&self, store: &Store<'_>, own_follower: Option<tokio::task::JoinHandle<Result<follow::FollowReport>>>, report: &mut CutoverReport) -> Result<()> {
        let (src, dst) = (self.src, self.dst);
        store.advance(self.run.run_id, Phase::Loaded, Phase::Done).await?;
        if let Some(task) = own_follower {
            let _ = task.await;
        }
        slot::drop(src, self.slot).await?;
        crate::catchup::ddl::remove_if_unused(src).await?;
        slot::drop_origin(dst, self.slot).await;
        // From now on the application writes the vectors: catch-up's trigger goes.
        let embedded = store.run_embeddings(self.run.run_id).await?;
        for (s, t) in self.pairs.iter().filter(|(_, t)| t.partition_of.is_none()) {
            for spec in embedded.iter().filter(|spec| crate::plan::select::table_matches(s, &spec.table)) {
                let ddl = match crate::embed::chunks::ChunkTable::of(t, spec) {
                    Some(chunks) => chunks.drop_stale_ddl(Keeper::CatchUp),
                    None => crate::embed::catchup::drop_stale_ddl(t, spec, Keeper::CatchUp),
                };
                for sql in ddl {
                    dst.batch_execute(&sql).await.context(&dst.endpoint(), || sql.clone())?;
                }
            }
        }
        // Replication back reports the new database's schema changes too (after pgshift's own cleanup above).
        if self.opts.reverse {
            if let Some(reason) = crate::catchup::ddl::install(dst).await? {
                tracing::warn!("{reason}");
            }
        }
        report.foreign_keys = crate::load::links::validate_declared(dst).await?;
        Ok(())
    }
}

pub async fn cutover(source: &ConnInfo, target: &ConnInfo, opts: &CutoverOptions) -> Result<CutoverReport> {
    let src = source.session().await?;
    let dst = target.session().await?;
    if opts.rollback {
        // The old database was made read-only by the cutover; this session writes to it.
        dst.batch_execute("SET default_transaction_read_only = off").await.context(&dst.endpoint(), || "leave read-only mode".into())?;
    }
    let store = Store::new(&dst);
    let (run, slot) = store.run_to_follow(src.endpoint()).await?;
    let left_out = store.left_out(run.run_id).await?;
    let SlotState::Usable { active: follower_running, confirmed } = slot::check(&src, &slot).await? else {
        unreachable!("check refuses missing and lost slots")
    };
    let confirmed: Lsn = confirmed.unwrap_or_default().parse().unwrap_or_default();
    let lag = slot::lag_bytes(&src, confirmed).await?;
    let catalog = catalog::inspect(&src).await?;
    let target_catalog = catalog::inspect(&dst).await?;
    let tables = follow::run_tables(&dst, &run, &target_catalog).await?;
    let back = run.schema_map.inverse();
    // On the way back, columns the old database lacks (vector columns --embed added)
    // are left out too, beside those recomputed in place.
    let mut left_out = left_out;
    for t in &tables {
        if let Some(s) = catalog.table(back.target_schema(&t.schema), &t.name) {
            let added = t.columns.iter().filter(|c| !s.columns.iter().any(|x| x.name == c.name)).map(|c| c.name.clone());
            let entry = left_out.entry(t.display_name()).or_default();
            for c in added {
                if !entry.contains(&c) {
                    entry.push(c);
                }
            }
            if entry.is_empty() {
                left_out.remove(&t.display_name());
            }
        }
    }
    let mut cut = Cutover {
        source,
        target,
        opts,
        src: &src,
        dst: &dst,
        run: &run,
        slot: &slot,
        catalog: &catalog,
        tables: &tables,
        target_version: target_catalog.server_version_num,
        pairs: tables.iter().filter_map(|t| catalog.table(back.target_schema(&t.schema), &t.name).map(|s| (s, *t))).collect(),
        unfollowed: Vec::new(),
        extension_config: crate::source::extension_config::of_source(&src).await?,
        large_objects: store.large_objects(run.run_id).await?,
        left_out: &left_out,
        pool: None,
    };
    if opts.reverse {
        reverse::check_possible(&dst).await?;
    }
    if let Some(p) = &opts.pgbouncer {
        cut.pool = Some(p.prepare(source, target).await?);
    }
    cut.unfollowed = unfollowed(&src, &slot, &cut.pairs).await?;
    let steps = plan(opts, cut.pool.is_some(), !cut.unfollowed.is_empty() || !cut.extension_config.is_empty());
    let mut report = CutoverReport {
        run_id: run.run_id,
        dry_run: opts.dry_run,
        steps: steps.iter().map(|step| cut.describe(*step)).collect(),
        lag_bytes_before: lag,
        switch_to: dst.endpoint().to_string(),
        ..Default::default()
    };
    if lag > opts.max_lag_bytes {
        return Err(Error::RunState(format!(
            "the target is {lag} bytes of WAL behind the source (limit {}): let pgshift follow catch up first, \
             or raise --max-lag",
            opts.max_lag_bytes
        )));
    }
    if opts.dry_run {
        return Ok(report);
    }

    // Without a running follower, this process applies the last changes itself.
    let own_follower = (!follower_running).then(|| {
        let (s, t) = (source.clone(), target.clone());
        let fo = FollowOptions {
            until: Until::Fence,
            commit_delay: Duration::from_millis(20),
            embedding: opts.embedding.clone(),
            ..Default::default()
        };
        tokio::spawn(async move { follow::follow(&s, &t, &fo, Arc::new(Silent) as Arc<dyn Progress>).await })
    });
    // The pause applies what the source wrote since catch-up was last close: wait until
    // it is close now, before fencing, whoever follows.
    let stopped = || own_follower.as_ref().is_some_and(|task| task.is_finished());
    if let Err(e) = wait_until_caught_up(&src, &slot, opts.timeout, own_follower.is_some(), &stopped).await {
        return match own_follower {
            Some(task) => match task.await {
                Ok(Err(follow_error)) => Err(follow_error),
                _ => Err(e),
            },
            None => Err(e),
        };
    }

    crate::metrics::set_phase(Stage::Cutover);
    let release_at = steps.iter().position(|s| *s == Step::Release).expect("every plan releases the fence");
    let planned = report.steps.clone();
    let activation = store.at_cutover(run.run_id).await?;
    // Every connection the pause needs is made before it begins.
    let (fence, snapshots) = (source.session().await?, (source.session().await?, target.session().await?));
    let lock = format!(
        "BEGIN; SET LOCAL lock_timeout = {}; LOCK TABLE {} IN EXCLUSIVE MODE",
        opts.timeout.as_millis(),
        if cut.pairs.is_empty() { "pg_catalog.pg_class".to_string() } else { cut.names().join(", ") }
    );
    let pause = Pause { fence, snapshots, began: Instant::now(), lock, activation };
    let mut clock = StepClock::new();
    // What each step does, as the plan said it (described once, not again inside the pause).
    let said = |step: Step| &planned[steps.iter().position(|s| *s == step).expect("a planned step")];
    let paused = async {
        for &step in &steps[..release_at] {
            tracing::info!("cutover: {}", said(step));
            cut.pause_step(step, &pause, &mut report).await?;
            *step.pause_part(&mut report.pause_steps).expect("a step of the pause") += clock.lap();
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = paused {
        let _ = pause.fence.batch_execute("ROLLBACK").await;
        if let Some(p) = cut.pool.as_mut() {
            p.undo().await;
        }
        return Err(Error::CutoverAborted(format!("cutover aborted, writes on the source resumed and nothing was switched: {e}")));
    }
    tracing::info!("cutover: {}", said(Step::Release));
    cut.release(&pause, &mut report).await?;
    *Step::Release.pause_part(&mut report.pause_steps).expect("the pause's last step") += clock.lap();
    report.write_pause_ms = pause.began.elapsed().as_secs_f64() * 1000.0;

    tracing::info!("writes resumed after {:.0} ms; cutover: {}", report.write_pause_ms, said(Step::Counts));
    let counted = compare_counts(&pause.snapshots.0, &pause.snapshots.1, &cut.pairs).await;
    tracing::info!("cutover: {}", said(Step::Finish));
    cut.finish(&store, own_follower, &mut report).await?;
    crate::metrics::set_phase(Stage::Done);
    report.counts = counted?;
    Ok(report)
}

/// Milliseconds since the last lap.
struct StepClock(Instant);

impl StepClock {
    fn new() -> StepClock {
        StepClock(Instant::now())
    }

    fn lap(&mut self) -> f64 {
        let ms = self.0.elapsed().as_secs_f64() * 1000.0;
        self.0 = Instant::now();
        ms
    }
}

/// Writes the fence mark and waits until the target confirmed it: every change made
/// before the fence is applied. Gives up at `timeout` after the pause began.
async fn apply_up_to_fence(fence: &Client, src: &Session, slot: &str, paused: Instant, timeout: Duration) -> Result<Lsn> {
    let src_name = src.endpoint();
    let fence_lsn = emit_mark(fence, src, FENCE).await?;
    loop {
        let confirmed: Option<String> = src
            .query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await
            .context(&src_name, || "read the slot's confirmed position".into())?
            .get(0);
        if confirmed.and_then(|c| c.parse::<Lsn>().ok()).is_some_and(|c| c >= fence_lsn) {
            return Ok(fence_lsn);
        }
        if paused.elapsed() >= timeout {
            return Err(Error::CatchUpStopped(format!(
                "the target did not apply the changes up to the fence at {fence_lsn} within {} ms (is pgshift follow running?)",
                timeout.as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (before fencing) until catch-up is within 1 MiB of the source. This
/// process's own follower (`own`) must get there, or the cutover stops (`stopped`:
/// it ended). Another process's follower that stays further behind for `timeout`
/// (30 s at least) is not waited for longer: the pause then includes its lag.
async fn wait_until_caught_up(src: &Session, slot: &str, timeout: Duration, own: bool, stopped: &(dyn Fn() -> bool + Sync)) -> Result<()> {
    let deadline = Instant::now() + timeout.max(Duration::from_secs(30));
    loop {
        let row = src
            .query_one(
                "SELECT active, (pg_current_wal_lsn() - confirmed_flush_lsn)::float8 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .context(&src.endpoint(), || "read the run's slot".into())?;
        let lag: Option<f64> = row.get(1);
        if row.get::<_, bool>(0) && lag.is_some_and(|l| l < 1024.0 * 1024.0) {
            return Ok(());
        }
        if stopped() {
            return Err(Error::CatchUpStopped("catch-up stopped before the cutover could begin".into()));
        }
        if Instant::now() >= deadline {
            if !own {
                tracing::warn!("catch-up is still {} bytes behind the source: the write pause includes applying them", lag.unwrap_or_default() as u64);
                return Ok(());
            }
            return Err(Error::CatchUpStopped("catch-up did not start in time; run pgshift follow first".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The run's tables its publication (named like its slot) leaves out: those without a
/// key, which catch-up cannot carry and the pause copies again.
async fn unfollowed<'a>(src: &Session, publication: &str, pairs: &[(&'a Table, &'a Table)]) -> Result<Vec<(&'a Table, &'a Table)>> {
    let published: Vec<(String, String)> = src
        .query("SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1", &[&publication])
        .await
        .context(&src.endpoint(), || format!("list the tables of publication {publication}"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(pairs.iter().filter(|(s, _)| s.holds_rows() && !published.iter().any(|(sc, n)| *sc == s.schema && *n == s.name)).copied().collect())
}

/// Sets every sequence of the run on the target to the source's current value.
async fn sync_sequences(fence: &Session, dst: &Session, (catalog, schema_map): (&Catalog, &SchemaMap), tables: &[&Table]) -> Result<usize> {
    let mut current = catalog.clone();
    for s in current.sequences.iter_mut() {
        let sql = format!("SELECT last_value, is_called FROM {}", qualified(&s.schema, &s.name));
        let row = fence.query_one(&sql, &[]).await.context(&fence.endpoint(), || sql.clone())?;
        s.value = Some((row.get(0), row.get(1)));
    }
    let view = schema_map.target_view(&current);
    let statements = ddl::sequence_values(&view, &view.same_tables(tables));
    for sql in &statements {
        dst.batch_execute(sql).await.context(&dst.endpoint(), || sql.clone())?;
    }
    Ok(statements.len())
}

/// Row counts of every run table, each side in the snapshot opened inside the fence
/// (both transactions end here). The switch already happened: a difference is an
/// error that says how to go back.
async fn compare_counts(src: &Session, dst: &Session, tables: &[(&Table, &Table)]) -> Result<Vec<TableCount>> {
    let mut counts = Vec::new();
    let mut differ = Vec::new();
    for (s, t) in tables {
        let count = |t: &Table| format!("SELECT count(*) FROM ONLY {}", t.qualified());
        let (src_sql, dst_sql, name) = (count(s), count(t), t.display_name());
        let (s, d) = tokio::join!(src.query_one(&src_sql, &[]), dst.query_one(&dst_sql, &[]));
        let c = TableCount {
            table: name.clone(),
            source_rows: s.context(&src.endpoint(), || src_sql.clone())?.get(0),
            target_rows: d.context(&dst.endpoint(), || dst_sql.clone())?.get(0),
        };
        if c.source_rows != c.target_rows {
            differ.push(format!("{name}: source {} rows, target {}", c.source_rows, c.target_rows));
        }
        counts.push(c);
    }
    for session in [src, dst] {
        session.batch_execute("COMMIT").await.context(&session.endpoint(), || "end the snapshot".into())?;
    }
    if !differ.is_empty() {
        return Err(Error::CountsDiffer(format!(
            "the switch happened, but the row counts at the fence differ ({}): the target is missing changes. \
             Keep the application on the old database: pgshift rollback (with --reverse) switches back, or \
             ALTER DATABASE ... RESET default_transaction_read_only on the old one; pgshift verify shows where they differ",
            differ.join("; ")
        )));
    }
    Ok(counts)
}

/// New sessions of the source database start read-only; sessions waiting on the
/// fence are ended so that none of them writes to the old database afterwards.
async fn make_read_only(fence: &Session, dbname: &str) -> Result<()> {
    let sql = format!(
        "ALTER DATABASE {} SET default_transaction_read_only = on; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' \
           AND application_name <> 'pgshift'",
        quote_ident(dbname)
    );
    fence.batch_execute(&sql).await.context(&fence.endpoint(), || "make the source read-only (needs the database owner or a superuser)".into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(reverse: bool, rollback: bool) -> CutoverOptions {
        CutoverOptions {
            timeout: Duration::from_secs(5),
            max_lag_bytes: 0,
            keep_source_writable: false,
            reverse,
            rollback,
            dry_run: true,
            embedding: None,
            pgbouncer: None,
        }
    }

    #[test]
    fn the_plan_lists_the_steps_in_the_order_they_run() {
        use Step::*;
        assert_eq!(plan(&options(false, false), false, false), [Lock, LastChanges, Sequences, LargeObjects, Snapshots, Release, Counts, Finish]);
        assert_eq!(
            plan(&options(true, false), true, false),
            [PoolerPause, Lock, LastChanges, Sequences, LargeObjects, Snapshots, Reverse, PoolerSwitch, Release, Counts, Finish],
            "the pool resumes on the new database before the fence is released"
        );
        assert_eq!(plan(&options(false, true), false, false)[5], Rollback);
    }

    #[test]
    fn every_step_before_the_release_counts_in_the_pause() {
        for steps in [plan(&options(true, false), true, false), plan(&options(false, true), false, false)] {
            let release = steps.iter().position(|s| *s == Step::Release).unwrap();
            for step in &steps[..=release] {
                assert!(step.pause_part(&mut PauseSteps::default()).is_some(), "{step:?}");
            }
            for step in &steps[release + 1..] {
                assert!(step.pause_part(&mut PauseSteps::default()).is_none(), "{step:?}");
            }
        }
    }
}
