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
use pgshift_postgres::ConnInfo;
use serde::Serialize;
use tokio_postgres::Client;

use crate::catchup::{self as follow, emit_mark, FollowOptions, Until, FENCE};
use crate::error::{Error, Result};
use crate::metrics::Stage;
use crate::progress::{Progress, Silent};
use crate::run::Phase;
use crate::run::slot::{self, SlotState};
use crate::run::store::Store;

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

pub async fn cutover(source: &ConnInfo, target: &ConnInfo, opts: &CutoverOptions) -> Result<CutoverReport> {
    let (src_name, dst_name) = (source.endpoint(), target.endpoint());
    let src = source.connect().await?;
    let dst = target.connect().await?;
    if opts.rollback {
        // The old database was made read-only by the cutover; this session writes to it.
        dst.batch_execute("SET default_transaction_read_only = off").await.context(&dst_name, || "leave read-only mode".into())?;
    }
    let store = Store::new(&dst, dst_name);
    let (run, slot) = store.run_to_follow(src_name).await?;
    let large_objects = store.large_objects(run.run_id).await?;
    let left_out = store.left_out(run.run_id).await?;
    let SlotState::Usable { active: follower_running, confirmed } = slot::check(&src, src_name, &slot).await? else {
        unreachable!("check refuses missing and lost slots")
    };
    let confirmed: Lsn = confirmed.unwrap_or_default().parse().unwrap_or_default();
    let lag = slot::lag_bytes(&src, src_name, confirmed).await?;
    let catalog = catalog::inspect(&src, &src_name).await?;
    let target_catalog = catalog::inspect(&dst, &dst_name).await?;
    let tables = follow::run_tables(&dst, dst_name, &run, &target_catalog).await?;
    // Each run table as the source and as the target has it (schemas may differ: --map-schema).
    let back = run.schema_map.inverse();
    let pairs: Vec<(&Table, &Table)> =
        tables.iter().filter_map(|t| catalog.table(back.target_schema(&t.schema), &t.name).map(|s| (s, *t))).collect();
    let source_tables: Vec<&Table> = pairs.iter().map(|(s, _)| *s).collect();
    let names: Vec<String> = source_tables.iter().map(|t| t.qualified()).collect();

    let mut report = CutoverReport { run_id: run.run_id, dry_run: opts.dry_run, lag_bytes_before: lag, switch_to: dst_name.to_string(), ..Default::default() };
    report.steps = vec![
        format!("on the source: LOCK TABLE {} IN EXCLUSIVE MODE (lock_timeout {} ms)", names.join(", "), opts.timeout.as_millis()),
        "write a fence mark into the source's WAL and wait until the target applied it".into(),
        format!("copy {} sequence values to the target, switch on its triggers and row security", ddl::sequence_values(&catalog, &source_tables).len()),
        match large_objects {
            Some(_) => "bring the target's large objects up to date (only those that differ are written)".into(),
            None => "large objects: not carried by this run".into(),
        },
        "open a snapshot on each side (the counts are compared under them after the pause)".into(),
        if opts.keep_source_writable {
            "release the locks; the source stays writable (--keep-source-writable)".into()
        } else {
            "make the source database read-only for new sessions and end the sessions waiting to write, then release the locks".into()
        },
        format!("compare row counts of {} tables under the fence's snapshots", names.len()),
        format!("mark run {} done, drop slot {slot} and its publication on the source", run.run_id),
    ];
    if opts.reverse {
        reverse::check_possible(&dst, dst_name).await?;
        let mut step = "on the target: create a publication and a slot for replication back to the source".to_string();
        let columns: Vec<String> = left_out.iter().flat_map(|(t, cs)| cs.iter().map(move |c| format!("{t}.{c}"))).collect();
        if !columns.is_empty() {
            step.push_str(&format!(
                ", leaving out {} (vectors pgshift recomputed: the old database's column keeps its own)",
                columns.join(", ")
            ));
        }
        report.steps.insert(5, step);
    }
    if opts.rollback {
        report.steps.insert(5, format!("make {dst_name} writable again (ALTER DATABASE ... RESET default_transaction_read_only)"));
    }
    let mut pool = match &opts.pgbouncer {
        Some(p) => Some(p.prepare(source, target).await?),
        None => None,
    };
    if let Some(p) = &pool {
        report.steps.insert(0, format!("PgBouncer: PAUSE {} (transactions in flight finish, new queries wait)", p.database));
        let at = report.steps.len() - 2;
        report.steps.insert(
            at,
            format!("PgBouncer: point [databases] {} in {} at {dst_name}, RELOAD, RESUME {}", p.database, p.ini.display(), p.database),
        );
    }
    if lag > opts.max_lag_bytes {
        return Err(Error::State(format!(
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
    if let Err(e) = wait_until_caught_up(&src, src_name, &slot, opts.timeout, own_follower.is_some(), &stopped).await {
        return match own_follower {
            Some(task) => match task.await {
                Ok(Err(follow_error)) => Err(follow_error),
                _ => Err(e),
            },
            None => Err(e),
        };
    }

    crate::metrics::set_phase(Stage::Cutover);
    let activation = store.at_cutover(run.run_id).await?;

    // Every connection the pause needs is made before it begins.
    let fence = source.connect().await?;
    let snapshots = (source.connect().await?, target.connect().await?);
    let lock = format!(
        "BEGIN; SET LOCAL lock_timeout = {}; LOCK TABLE {} IN EXCLUSIVE MODE",
        opts.timeout.as_millis(),
        if names.is_empty() { "pg_catalog.pg_class".to_string() } else { names.join(", ") }
    );
    let paused = Instant::now();
    let mut clock = StepClock::new();
    let result = async {
        if let Some(p) = pool.as_mut() {
            p.pause(opts.timeout).await?;
        }
        fence.batch_execute(&lock).await.context(&src_name, || "fence writes (LOCK TABLE ... IN EXCLUSIVE MODE)".into())?;
        report.pause_steps.lock_ms = clock.lap();
        let fence_lsn = apply_up_to_fence(&fence, &src, src_name, &slot, paused, opts.timeout).await?;
        report.pause_steps.last_changes_ms = clock.lap();
        let source_tables: Vec<&Table> = pairs.iter().map(|(s, _)| *s).collect();
        let sequences = sync_sequences(&fence, &dst, (src_name, dst_name), (&catalog, &run.schema_map), &source_tables).await?;
        // Triggers and row security, held back while catch-up applied the source's
        // own triggers' results: from now on the target's fire.
        for sql in &activation {
            // Recorded at the load: an object dropped (or renamed) on the source during
            // catch-up is gone on the target too, and its statement no longer applies.
            match dst.batch_execute(sql).await {
                Err(e) if e.code().is_some_and(|c| GONE.contains(&c.code())) => {
                    report.skipped.push(format!("{sql}: {}", pgshift_postgres::error::describe(&e)));
                }
                other => other.context(&dst_name, || sql.clone())?,
            }
        }
        report.pause_steps.sequences_ms = clock.lap();
        // Logical decoding does not carry large objects: made the same here, while
        // writers wait (a pause that grows with their size; none without them).
        if let Some(carry) = large_objects {
            report.large_objects = Some(large_objects::sync((&src, src_name), (&dst, dst_name), carry).await?);
        }
        report.pause_steps.large_objects_ms = clock.lap();
        for (client, name) in [(&snapshots.0, src_name), (&snapshots.1, dst_name)] {
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
                .await
                .context(&name, || "open the snapshot the counts are compared under".into())?;
        }
        report.pause_steps.snapshots_ms = clock.lap();
        if opts.reverse {
            let forward = reverse::Forward { run_id: run.run_id, schema_map: &run.schema_map, large_objects, left_out: &left_out };
            report.reverse_slot = Some(reverse::set_up((&src, src_name), (&dst, target), (&tables, target_catalog.server_version_num), &forward).await?);
        }
        if opts.rollback {
            let sql = format!("ALTER DATABASE {} RESET default_transaction_read_only", quote_ident(target.dbname()));
            dst.batch_execute(&sql).await.context(&dst_name, || sql.clone())?;
        }
        if let Some(p) = pool.as_mut() {
            p.repoint().await?;
            let waited = p.resume().await?;
            report.pgbouncer =
                Some(PoolerReport { database: p.database.clone(), ini: p.ini.display().to_string(), client_wait_ms: waited.as_secs_f64() * 1000.0 });
        }
        report.pause_steps.switch_ms = clock.lap();
        Ok::<_, Error>((fence_lsn, sequences))
    }
    .await;
    match result {
        Ok((fence_lsn, sequences)) => {
            if !opts.keep_source_writable {
                make_read_only(&fence, src_name, source.dbname()).await?;
                report.source_read_only = true;
            }
            fence.batch_execute("COMMIT").await.context(&src_name, || "release the fence".into())?;
            report.pause_steps.release_ms = clock.lap();
            report.write_pause_ms = paused.elapsed().as_secs_f64() * 1000.0;
            report.fence_lsn = Some(fence_lsn.to_string());
            report.sequences_synced = sequences;
        }
        Err(e) => {
            let _ = fence.batch_execute("ROLLBACK").await;
            if let Some(p) = pool.as_mut() {
                p.undo().await;
            }
            return Err(Error::State(format!("cutover aborted, writes on the source resumed and nothing was switched: {e}")));
        }
    }
    tracing::info!("writes resumed after {:.0} ms; comparing row counts under the fence's snapshots", report.write_pause_ms);
    let counted = compare_counts(&snapshots.0, &snapshots.1, (src_name, dst_name), &pairs).await;
    store.advance(run.run_id, Phase::Loaded, Phase::Done).await?;
    if let Some(task) = own_follower {
        let _ = task.await;
    }
    slot::drop(&src, src_name, &slot).await?;
    crate::catchup::ddl::remove_if_unused(&src, src_name).await?;
    slot::drop_origin(&dst, dst_name, &slot).await;
    // From now on the application writes the vectors: catch-up's trigger goes.
    let embedded = store.run_embeddings(run.run_id).await?;
    for (s, t) in pairs.iter().filter(|(_, t)| t.partition_of.is_none()) {
        for spec in embedded.iter().filter(|spec| crate::plan::select::table_matches(s, &spec.table)) {
            for sql in crate::embed::catchup::drop_catchup_ddl(t, spec) {
                dst.batch_execute(&sql).await.context(&dst_name, || sql.clone())?;
            }
        }
    }
    // Replication back reports the new database's schema changes too (after pgshift's own cleanup above).
    if opts.reverse {
        if let Some(reason) = crate::catchup::ddl::install(&dst, dst_name).await? {
            tracing::warn!("{reason}");
        }
    }
    report.foreign_keys = crate::load::links::validate_declared(&dst, dst_name).await?;
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
async fn apply_up_to_fence(fence: &Client, src: &Client, src_name: &str, slot: &str, paused: Instant, timeout: Duration) -> Result<Lsn> {
    let fence_lsn = emit_mark(fence, src, src_name, FENCE).await?;
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
            return Err(Error::State(format!(
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
async fn wait_until_caught_up(src: &Client, src_name: &str, slot: &str, timeout: Duration, own: bool, stopped: &(dyn Fn() -> bool + Sync)) -> Result<()> {
    let deadline = Instant::now() + timeout.max(Duration::from_secs(30));
    loop {
        let row = src
            .query_one(
                "SELECT active, (pg_current_wal_lsn() - confirmed_flush_lsn)::float8 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .context(&src_name, || "read the run's slot".into())?;
        let lag: Option<f64> = row.get(1);
        if row.get::<_, bool>(0) && lag.is_some_and(|l| l < 1024.0 * 1024.0) {
            return Ok(());
        }
        if stopped() {
            return Err(Error::State("catch-up stopped before the cutover could begin".into()));
        }
        if Instant::now() >= deadline {
            if !own {
                tracing::warn!("catch-up is still {} bytes behind the source: the write pause includes applying them", lag.unwrap_or_default() as u64);
                return Ok(());
            }
            return Err(Error::State("catch-up did not start in time; run pgshift follow first".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets every sequence of the run on the target to the source's current value.
async fn sync_sequences(
    fence: &Client,
    dst: &Client,
    (src_name, dst_name): (&str, &str),
    (catalog, schema_map): (&Catalog, &SchemaMap),
    tables: &[&Table],
) -> Result<usize> {
    let mut current = catalog.clone();
    for s in current.sequences.iter_mut() {
        let sql = format!("SELECT last_value, is_called FROM {}", qualified(&s.schema, &s.name));
        let row = fence.query_one(&sql, &[]).await.context(&src_name, || sql.clone())?;
        s.value = Some((row.get(0), row.get(1)));
    }
    let view = schema_map.target_view(&current);
    let statements = ddl::sequence_values(&view, &view.same_tables(tables));
    for sql in &statements {
        dst.batch_execute(sql).await.context(&dst_name, || sql.clone())?;
    }
    Ok(statements.len())
}

/// Row counts of every run table, each side in the snapshot opened inside the fence
/// (both transactions end here). The switch already happened: a difference is an
/// error that says how to go back.
async fn compare_counts(src: &Client, dst: &Client, (src_name, dst_name): (&str, &str), tables: &[(&Table, &Table)]) -> Result<Vec<TableCount>> {
    let mut counts = Vec::new();
    let mut differ = Vec::new();
    for (s, t) in tables {
        let count = |t: &Table| format!("SELECT count(*) FROM ONLY {}", t.qualified());
        let (src_sql, dst_sql, name) = (count(s), count(t), t.display_name());
        let (s, d) = tokio::join!(src.query_one(&src_sql, &[]), dst.query_one(&dst_sql, &[]));
        let c = TableCount {
            table: name.clone(),
            source_rows: s.context(&src_name, || src_sql.clone())?.get(0),
            target_rows: d.context(&dst_name, || dst_sql.clone())?.get(0),
        };
        if c.source_rows != c.target_rows {
            differ.push(format!("{name}: source {} rows, target {}", c.source_rows, c.target_rows));
        }
        counts.push(c);
    }
    for (client, name) in [(src, src_name), (dst, dst_name)] {
        client.batch_execute("COMMIT").await.context(&name, || "end the snapshot".into())?;
    }
    if !differ.is_empty() {
        return Err(Error::State(format!(
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
async fn make_read_only(fence: &Client, src_name: &str, dbname: &str) -> Result<()> {
    let sql = format!(
        "ALTER DATABASE {} SET default_transaction_read_only = on; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' \
           AND application_name <> 'pgshift'",
        quote_ident(dbname)
    );
    fence.batch_execute(&sql).await.context(&src_name, || "make the source read-only (needs the database owner or a superuser)".into())?;
    Ok(())
}
