//! Catch-up: stream the run's slot from where the target left off, apply changes in
//! batches that end on source transaction boundaries, confirm to the source only
//! what the target committed. The slot, publication and origin are the run's
//! (`run::slot`); pgshift-postgres does the protocol, decoding and set-based apply.

pub mod ddl;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgshift_postgres::Session;
use pgshift_postgres::apply::{Applied, Applier};
use pgshift_postgres::catalog::{self, Table};
use pgshift_postgres::copy::CopyFormat;
use pgshift_postgres::error::Context;
use pgshift_postgres::lsn::Lsn;
use pgshift_postgres::logical_stream::{LogicalStream, StreamItem};
use pgshift_postgres::pgoutput::{LogicalMessage, Tuple};
use pgshift_postgres::replication::{pg_now_micros, ReplicationConn};
use pgshift_postgres::schema_map::{relocate_extensions, SchemaMap};
use pgshift_postgres::ConnInfo;
use serde::Serialize;
use tokio_postgres::Client;

use crate::embed::catchup::{embed_pending, VectorColumn};
use crate::embed::chunks::{self, ChunkTable, Cutter};
use crate::embed::EmbedPool;
use crate::error::{Error, Result};
use crate::metrics::{self, Stage};
use crate::plan::embedding::specs_by_table;
use crate::plan::embedding::{EmbeddingSetup, EmbeddingSpec};
use crate::plan::LeftOut;
use crate::progress::Progress;
use crate::run::Run;
use crate::run::slot;
use crate::run::store::Store;

/// Prefix of the logical messages pgshift writes into the source's WAL to mark a
/// position (caught-up probes, cutover fences).
pub const MARK_PREFIX: &str = "pgshift.mark";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Until interrupted (SIGINT/SIGTERM) or until a cutover finishes the run.
    Stopped,
    /// Until everything the source had written when following began is applied.
    CaughtUp,
    /// Until a cutover's fence mark is applied (the cutover runs the follower itself
    /// when no other process follows the slot).
    Fence,
}

/// Decoded messages read ahead of the apply.
const STREAM_QUEUE: usize = 8192;

/// Content of the mark a cutover writes while the source is fenced.
pub const FENCE: &str = "fence";

#[derive(Clone, Debug)]
pub struct FollowOptions {
    pub until: Until,
    /// How long to keep reconnecting after a connection is lost before giving up.
    pub reconnect_timeout: Duration,
    /// Changes held in memory before they are written to the target.
    pub batch_rows: usize,
    /// How long applied changes may wait before their target transaction commits.
    pub commit_delay: Duration,
    /// Large transactions arrive while they run (protocol 2, PostgreSQL 14+ sources).
    pub streaming: bool,
    /// Make the source's schema changes on the target (else stop at the first one).
    pub follow_ddl: bool,
    /// The embedder, for a run that computes vectors (its specs must match the run's).
    pub embedding: Option<EmbeddingSetup>,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            until: Until::Stopped,
            reconnect_timeout: Duration::from_secs(300),
            batch_rows: 20_000,
            commit_delay: Duration::from_millis(200),
            streaming: true,
            follow_ddl: true,
            embedding: None,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FollowReport {
    pub run_id: i64,
    pub slot_name: String,
    pub started_at_lsn: String,
    pub confirmed_lsn: String,
    pub lag_bytes: u64,
    pub transactions: u64,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub truncates: u64,
    /// Batches re-applied change by change in source order after a set-based
    /// statement collided (values swapped between rows of a unique column).
    pub fallbacks: u64,
    pub seconds: f64,
}

/// What catch-up did across reconnections.
#[derive(Default)]
struct Totals {
    transactions: u64,
    applied: Applied,
    /// The first attempt's start position.
    started_at: Option<Lsn>,
    /// Set when an attempt got as far as streaming (the outage, if any, is over).
    streamed: bool,
}

type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Catch-up that outlives failovers and maintenance: when a connection to either
/// side goes away (restart, shutdown, terminated session, network), it reconnects
/// with backoff and resumes from the replication origin, which records exactly what
/// the target committed. It gives up only after `reconnect_timeout` without getting
/// back to streaming, saying what failed.
pub async fn follow(source: &ConnInfo, target: &ConnInfo, opts: &FollowOptions, progress: Arc<dyn Progress>) -> Result<FollowReport> {
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut shutdown: Shutdown = Box::pin(shutdown_signal());
    let mut lost_since: Option<Instant> = None;
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let attempt = follow_once(source, target, opts, &progress, &mut totals, &mut shutdown).await;
        if std::mem::take(&mut totals.streamed) {
            (lost_since, backoff) = (None, INITIAL_BACKOFF);
        }
        match attempt {
            Ok(mut report) => {
                report.started_at_lsn = totals.started_at.unwrap_or_default().to_string();
                report.transactions = totals.transactions;
                let a = totals.applied;
                (report.inserts, report.updates, report.deletes, report.truncates, report.fallbacks) = (a.inserts, a.updates, a.deletes, a.truncates, a.fallbacks);
                report.seconds = started.elapsed().as_secs_f64();
                return Ok(report);
            }
            Err(e) if e.is_transient() => {
                let down = lost_since.get_or_insert_with(Instant::now).elapsed();
                if down >= opts.reconnect_timeout {
                    return Err(Error::CatchUpStopped(format!(
                        "catch-up gave up after {}s of failed reconnects (--reconnect-timeout): {e}. Nothing is lost: \
                         pgshift follow resumes from the last applied transaction once both servers are reachable",
                        down.as_secs()
                    )));
                }
                metrics::RECONNECTS.inc();
                tracing::warn!("{e}; reconnecting in {:.1}s", backoff.as_secs_f64());
                progress.step(&format!("connection lost ({e}); reconnecting in {:.1}s", backoff.as_secs_f64()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut shutdown => return Err(Error::CatchUpStopped(format!("stopped while reconnecting after: {e}"))),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits between reconnect attempts: doubling from the first to the last.
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One connection's worth of catch-up: from the origin's position until the stop
/// condition, a shutdown signal, or an error.
async fn follow_once(
    source: &ConnInfo,
    target: &ConnInfo,
    opts: &FollowOptions,
    progress: &Arc<dyn Progress>,
    totals: &mut Totals,
    shutdown: &mut Shutdown,
) -> Result<FollowReport> {
    let src_name = source.endpoint();
    let src = source.session().await?;
    let dst = target.session().await?;
    let store = Store::new(&dst);
    let (run, slot) = store.run_to_follow(src_name).await?;
    slot::check(&src, &slot).await?;
    let version: i32 = src.query_one("SELECT current_setting('server_version_num')::int", &[]).await.context(&src_name, || "read the server version".into())?.get(0);
    if version < 140000 {
        return Err(Error::Setting(format!("catch-up needs PostgreSQL 14 or newer on the source ({src_name} runs {})", version / 10000)));
    }

    let target_catalog = catalog::inspect(&dst).await?;
    let tables = run_tables(&dst, &run, &target_catalog).await?;
    // A column whose type changed on the way (migrate --cast) must arrive as text; the
    // source's names are compared as the target has them (schema map, extensions).
    let installed = catalog::installed_extensions(&dst).await?;
    let source_raw = catalog::inspect(&src).await?;
    let source_catalog = relocate_extensions(&run.schema_map.target_view(&source_raw), &installed);
    // Columns left out (vectors recomputed in place) are dropped from every change.
    let left_out = Store::new(&dst).left_out(run.run_id).await?;
    let binary = tables.iter().all(|t| CopyFormat::for_table(t) == CopyFormat::Binary) && !crate::plan::casts::types_differ(&source_catalog, &tables, &left_out);
    let format = if binary { CopyFormat::Binary } else { CopyFormat::Text };
    let embed = catchup_embedding(&dst, &run, (&target_catalog, &tables), opts).await?;
    let apply_client = target.session().await?;
    let (mut applier, origin_lsn) = Applier::new(apply_client, format, target_catalog.clone(), slot::origin_name(&slot)).await?;
    let l0: Lsn = run.start_lsn.as_deref().unwrap_or("0/0").parse().map_err(Error::Internal)?;
    let converge_until: Option<Lsn> = run.converge_lsn.as_deref().map(str::parse).transpose().map_err(Error::Internal)?;
    let start = origin_lsn.max(l0);

    let mut repl = ReplicationConn::connect(source).await?;
    // Protocol 2 streams large transactions while they run (spooled until their commit).
    let streaming = opts.streaming && source_catalog.server_version_num >= 140000;
    let mut options = vec![
        ("proto_version", if streaming { "2" } else { "1" }.to_string()),
        ("publication_names", slot::publication_name(&slot).to_string()),
        ("binary", (format == CopyFormat::Binary).to_string()),
        ("messages", "true".to_string()),
    ];
    if streaming {
        options.push(("streaming", "on".to_string()));
    }
    if let Err(e) = repl.start_logical(&slot, start, &options).await {
        return Err(slot::explain_stream_error(e, &src, &slot).await);
    }
    let mut stream = LogicalStream::spawn(repl, STREAM_QUEUE);
    crate::progress::enter(&**progress, Stage::CatchUp);
    tracing::info!(slot = %slot, from = %start, ?format, "streaming changes");
    totals.started_at.get_or_insert(start);
    totals.streamed = true;

    let probe = match opts.until {
        Until::CaughtUp => Some(emit_mark(&src, &src, "caught-up").await?),
        Until::Stopped | Until::Fence => None,
    };
    let mut f = Follower {
        applier: &mut applier,
        skip_before: origin_lsn,
        converge_until,
        confirmed: start,
        received: start,
        uncommitted_end: None,
        in_transaction: false,
        skipping: false,
        batch_started: None,
        transactions: 0,
        totals,
        oldest_unapplied: None,
        counted: Applied::default(),
        committing: None,
        embed: embed.as_ref(),
        schema_map: &run.schema_map,
        left_out: &left_out,
        dropped: HashMap::new(),
        following: ddl::Following {
            rewriter: run.schema_map.statement_rewriter(&source_raw),
            followed: tables.iter().map(|t| t.display_name()).collect(),
            own: own_columns(&source_raw, &target_catalog, &run.schema_map, &left_out, embed.as_ref()),
            embedded: embed.as_ref().map(|e| e.tables.iter().map(|(t, s)| (t.display_name(), s.text.clone())).collect()).unwrap_or_default(),
        },
        schema_changed: false,
        run_id: run.run_id,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_status = Instant::now();
    let mut last_confirmed = start;
    let mut last_check = Instant::now();
    // Set when the stop mark was applied; the loop then waits briefly for the
    // keepalive that confirms the WAL written after the mark (its flushing commit).
    let mut reached_mark: Option<Instant> = None;
    let mut confirmed_past_mark = false;
    loop {
        tokio::select! {
            item = stream.next() => {
                let item = match item {
                    Some(Ok(item)) => item,
                    // A finished cutover ends the stream (and drops the slot).
                    _ if store.is_done(run.run_id).await? => break,
                    Some(Err(e)) => return Err(slot::explain_stream_error(e, &src, &slot).await),
                    None => return Err(Error::CatchUpStopped("the replication stream ended".into())),
                };
                match item {
                    StreamItem::Message { wal_start, message } => {
                        f.received = f.received.max(wal_start);
                        if let Some((mark, content)) = f.handle(message, opts).await? {
                            f.confirmed = f.confirmed.max(mark);
                            stream.confirm(f.received, f.confirmed);
                            if probe.is_some_and(|p| mark >= p) || (opts.until == Until::Fence && content == FENCE) {
                                reached_mark.get_or_insert_with(Instant::now);
                            }
                        }
                    }
                    StreamItem::Keepalive { wal_end } => {
                        f.received = f.received.max(wal_end);
                        if f.idle() {
                            f.confirmed = f.confirmed.max(wal_end);
                            confirmed_past_mark = reached_mark.is_some();
                        }
                    }
                }
            }
            _ = tick.tick() => {
                f.applier.settle_if_done().await?;
                f.absorb();
                if !f.in_transaction && f.uncommitted_end.is_some() && f.batch_started.is_some_and(|t| t.elapsed() >= opts.commit_delay) {
                    f.commit_soon().await?;
                }
                // The slot's confirmed position is what status and cutover read as the
                // lag: keep it within a tick of what the target holds.
                if f.confirmed != last_confirmed || last_status.elapsed() >= Duration::from_secs(1) {
                    stream.confirm(f.received, f.confirmed);
                    (last_status, last_confirmed) = (Instant::now(), f.confirmed);
                }
                if last_check.elapsed() >= Duration::from_secs(2) {
                    last_check = Instant::now();
                    let lag = slot::lag_bytes(&src, f.confirmed).await?;
                    let secs = f.lag_seconds(lag);
                    metrics::LAG_BYTES.set(lag as i64);
                    metrics::LAG_SECONDS.set(secs);
                    progress.step(&format!("lag {lag} bytes, {secs:.1}s; applied {} transactions", f.totals.transactions));
                    if store.is_done(run.run_id).await? {
                        break;
                    }
                }
            }
            _ = &mut *shutdown => {
                tracing::info!("stopping: committing what is complete");
                break;
            }
        }
        if reached_mark.is_some_and(|t| confirmed_past_mark || t.elapsed() >= Duration::from_secs(1)) && f.idle() {
            break;
        }
    }
    if !f.in_transaction {
        f.commit().await?;
    }
    f.applier.settle().await?;
    f.absorb();
    stream.confirm(f.received, f.confirmed);
    stream.close().await;
    Ok(FollowReport {
        run_id: run.run_id,
        slot_name: slot,
        confirmed_lsn: f.confirmed.to_string(),
        lag_bytes: slot::lag_bytes(&src, f.confirmed).await?,
        ..Default::default()
    })
}

struct Follower<'a> {
    applier: &'a mut Applier,
    /// Transactions committing before this were applied by an earlier session.
    skip_before: Lsn,
    converge_until: Option<Lsn>,
    /// What the source may forget: everything up to here is committed on the target.
    confirmed: Lsn,
    received: Lsn,
    /// End of the last source transaction applied but not yet committed on the target.
    uncommitted_end: Option<Lsn>,
    in_transaction: bool,
    skipping: bool,
    batch_started: Option<Instant>,
    /// Source transactions applied since the target's last commit.
    transactions: u64,
    /// Counts across reconnections (committed work only).
    totals: &'a mut Totals,
    /// Commit time of the oldest source transaction received but not yet committed
    /// on the target: what "seconds behind" means while a batch or a large
    /// transaction is on its way.
    oldest_unapplied: Option<i64>,
    /// Applier counts already added to the metrics.
    counted: Applied,
    /// A batch committing in the background: its source transactions and when it began.
    committing: Option<(u64, Instant)>,
    embed: Option<&'a CatchupEmbedding>,
    /// Where the source's schemas went on the target.
    schema_map: &'a SchemaMap,
    left_out: &'a LeftOut,
    /// Relation OID -> positions (descending) of left-out columns in its changes.
    dropped: HashMap<u32, Vec<usize>>,
    following: ddl::Following,
    run_id: i64,
    /// The source transaction being applied changed the schema: commit at its end.
    schema_changed: bool,
}

/// `schema.table.column` (target names) that the target holds differently from the
/// source by design: computed vectors, vector columns recomputed in place, and
/// `--cast` columns (text on the source, another type on the target, as verify
/// reads them). Schema changes leave them as they are.
fn own_columns(source: &catalog::Catalog, target: &catalog::Catalog, map: &SchemaMap, left_out: &LeftOut, embed: Option<&CatchupEmbedding>) -> HashSet<String> {
    let mut own: HashSet<String> = embed.map(|e| e.tables.iter().map(|(t, s)| format!("{}.{}", t.display_name(), s.column)).collect()).unwrap_or_default();
    own.extend(left_out.iter().flat_map(|(t, cs)| cs.iter().map(move |c| format!("{t}.{c}"))));
    let mut cast = source.clone();
    crate::plan::casts::follow_target_types(&mut cast, target, map);
    for t in &cast.tables {
        for c in t.columns.iter().filter(|c| c.cast_to.is_some()) {
            own.insert(format!("{}.{}.{}", map.target_schema(&t.schema), t.name, c.name));
        }
    }
    own
}

/// Removes the columns at `positions` (descending) from a change's row.
fn drop_columns(row: &mut Tuple, positions: &[usize]) {
    for &i in positions {
        if i < row.len() {
            row.remove(i);
        }
    }
}

/// The embedding threads and the tables (those holding rows) whose vectors follow their text.
struct CatchupEmbedding {
    pool: EmbedPool,
    tables: Vec<(Table, EmbeddingSpec)>,
    /// Where pgvector is on the target.
    vector_schema: String,
}

/// For a run that computes vectors: the embedder given must serve the run's specs.
async fn catchup_embedding(
    dst: &Session,
    run: &Run,
    (target, tables): (&catalog::Catalog, &[&Table]),
    opts: &FollowOptions,
) -> Result<Option<CatchupEmbedding>> {
    let recorded = Store::new(dst).run_embeddings(run.run_id).await?;
    if recorded.is_empty() {
        return Ok(None);
    }
    let setup = match &opts.embedding {
        Some(setup) if setup.same_specs(&recorded) => setup,
        _ => {
            let specs: Vec<String> = recorded.iter().map(|s| format!("{}.{}={}", s.table, s.column, s.text)).collect();
            return Err(Error::Setting(format!(
                "run {} computes vectors ({}): give catch-up the same embedding settings (--embed or the same --config)",
                run.run_id,
                specs.join("; ")
            )));
        }
    };
    // Specs name the tables as the source does.
    let back = run.schema_map.inverse();
    let by_table = specs_by_table(setup, &back.target_view(target).same_tables(tables))?;
    let spec_of = |t: &Table| by_table.get(&back.target_display(&t.display_name())).map(|s| (t.clone(), s.clone()));
    let tables = tables.iter().filter(|t| t.holds_rows()).filter_map(|t| spec_of(t)).collect();
    let vector_schema = catalog::vector_schema(&catalog::installed_extensions(dst).await?, None);
    let pool = EmbedPool::start(setup.embedder.clone(), setup.threads, setup.batch_size);
    Ok(Some(CatchupEmbedding { pool, tables, vector_schema }))
}

impl Follower<'_> {
    fn drop_left_out<'r, const N: usize>(&self, relation: u32, rows: [&'r mut Tuple; N]) {
        if let Some(positions) = self.dropped.get(&relation).filter(|p| !p.is_empty()) {
            rows.into_iter().for_each(|row| drop_columns(row, positions));
        }
    }

    fn idle(&self) -> bool {
        !self.in_transaction && self.uncommitted_end.is_none() && self.committing.is_none()
    }

    /// Moves the applied-changes counters by what the applier did since last time.
    fn count_applied(&mut self) {
        let (now, before) = (self.applier.applied(), self.counted);
        let total = &mut self.totals.applied;
        total.inserts += now.inserts - before.inserts;
        total.updates += now.updates - before.updates;
        total.deletes += now.deletes - before.deletes;
        total.truncates += now.truncates - before.truncates;
        total.fallbacks += now.fallbacks - before.fallbacks;
        for (op, n) in [
            ("insert", now.inserts - before.inserts),
            ("update", now.updates - before.updates),
            ("delete", now.deletes - before.deletes),
            ("truncate", now.truncates - before.truncates),
        ] {
            metrics::APPLIED.with_label_values(&[op]).inc_by(n);
        }
        metrics::APPLY_FALLBACKS.inc_by(now.fallbacks - before.fallbacks);
        self.counted = now;
    }

    fn lag_seconds(&self, lag_bytes: u64) -> f64 {
        match (lag_bytes, self.oldest_unapplied) {
            (0, _) | (_, None) => 0.0,
            (_, Some(t)) => (pg_now_micros() - t).max(0) as f64 / 1e6,
        }
    }

    /// Commits what was applied; the target holds it when this returns.
    async fn commit(&mut self) -> Result<()> {
        self.applier.settle().await?;
        self.absorb();
        if let Some(end) = self.uncommitted_end.take() {
            let started = Instant::now();
            if let Some(embed) = self.embed {
                // Vectors for the rows this transaction inserted or whose text it changed.
                self.applier.flush().await?;
                if self.applier.in_transaction() {
                    let client = self.applier.client().await?;
                    for (table, spec) in &embed.tables {
                        match ChunkTable::of(table, spec) {
                            Some(chunks) => {
                                let cutter = Arc::new(Cutter::new(&embed.pool, chunks.chunks));
                                chunks::embed_pending(client, &embed.pool, &chunks, &cutter, &embed.vector_schema).await?;
                            }
                            None => {
                                let column = VectorColumn { table, spec, vector_schema: &embed.vector_schema };
                                embed_pending(client, &embed.pool, column).await?;
                            }
                        }
                    }
                }
            }
            self.applier.commit(end).await?;
            metrics::APPLY_BATCH_SECONDS.observe(started.elapsed().as_secs_f64());
            self.count_applied();
            self.totals.transactions += std::mem::take(&mut self.transactions);
            self.confirmed = self.confirmed.max(end);
        }
        if !self.in_transaction {
            self.oldest_unapplied = None;
        }
        self.batch_started = None;
        Ok(())
    }

    /// Commits in the background, so the target writes this batch while the next one
    /// gathers; the source hears of it once it is committed ([`Follower::absorb`]).
    /// With vectors to compute inside the transaction, commits here and now.
    async fn commit_soon(&mut self) -> Result<()> {
        if self.embed.is_some() {
            return self.commit().await;
        }
        if let Some(end) = self.uncommitted_end.take() {
            self.applier.commit_in_background(end).await?;
            self.absorb();
            self.committing = Some((std::mem::take(&mut self.transactions), Instant::now()));
        }
        self.batch_started = None;
        Ok(())
    }

    /// A schema change at its place in the stream: the changes before it are written
    /// with the old definition, then the target gets the same columns, in the same
    /// transaction, before the changes that use them.
    async fn schema_change(&mut self, content: &[u8], follow_ddl: bool) -> Result<()> {
        let change = ddl::Change::parse(content)?;
        self.applier.flush().await?;
        let target = catalog::inspect(self.applier.client().await?).await?;
        let plan = ddl::plan(&change, &target, self.schema_map, &self.following)?;
        if plan.statements.is_empty() {
            let ours = change.tables.iter().any(|t| self.following.followed.contains(&format!("{}.{}", self.schema_map.target_schema(&t.schema), t.name)));
            if !ours {
                tracing::warn!("schema change on the source not followed ({}): `{}`; make it on the target if the application needs it", change.tag, change.shown());
            }
            return Ok(());
        }
        if !follow_ddl {
            return Err(Error::SchemaChange(format!(
                "the source ran `{}` (--follow-ddl off): run on the target\n  {};\nthen run pgshift follow again (it resumes at this change)",
                change.shown(),
                plan.statements.join(";\n  ")
            )));
        }
        for sql in &plan.statements {
            self.applier.execute(sql).await?;
        }
        // Cutover fences and counts the run's tables, verify compares them.
        let back = self.schema_map.inverse();
        for table in &plan.created {
            Store::new(self.applier.client().await?).add_run_table(self.run_id, &back.target_display(table)).await?;
            self.following.followed.insert(table.clone());
        }
        for table in &plan.dropped {
            Store::new(self.applier.client().await?).remove_run_table(self.run_id, &back.target_display(table)).await?;
            self.following.followed.remove(table);
        }
        let statements = plan.statements;
        let target = catalog::inspect(self.applier.client().await?).await?;
        self.applier.set_target(target);
        metrics::SCHEMA_CHANGES.inc();
        self.schema_changed = true;
        tracing::info!("schema change followed: `{}` ({})", change.shown(), statements.join("; "));
        Ok(())
    }

    /// Takes in a background commit that finished: the source may forget up to it.
    fn absorb(&mut self) {
        let Some(lsn) = self.applier.take_committed() else { return };
        if let Some((transactions, started)) = self.committing.take() {
            metrics::APPLY_BATCH_SECONDS.observe(started.elapsed().as_secs_f64());
            self.totals.transactions += transactions;
        }
        self.confirmed = self.confirmed.max(lsn);
        self.count_applied();
        if !self.in_transaction && self.uncommitted_end.is_none() && self.committing.is_none() {
            self.oldest_unapplied = None;
        }
    }

    /// Applies one message. Returns a position the source may now forget when the
    /// message was one of pgshift's marks (everything before it is committed).
    async fn handle(&mut self, msg: LogicalMessage, opts: &FollowOptions) -> Result<Option<(Lsn, String)>> {
        match msg {
            LogicalMessage::Begin { final_lsn, commit_time, .. } => {
                self.in_transaction = true;
                self.skipping = final_lsn < self.skip_before;
                if !self.skipping {
                    self.oldest_unapplied.get_or_insert(commit_time);
                }
                self.applier.set_converge(self.converge_until.is_some_and(|c| final_lsn <= c)).await?;
                self.batch_started.get_or_insert_with(Instant::now);
            }
            LogicalMessage::Commit { end_lsn, .. } => {
                self.in_transaction = false;
                if !self.skipping {
                    self.uncommitted_end = Some(end_lsn);
                    self.transactions += 1;
                }
                if self.skipping && self.uncommitted_end.is_none() {
                    self.oldest_unapplied = None;
                }
                self.skipping = false;
                let due = self.batch_started.is_some_and(|t| t.elapsed() >= opts.commit_delay);
                if std::mem::take(&mut self.schema_changed) {
                    // Later transactions may use what it added (an enum value, say) only once committed.
                    self.commit().await?;
                } else if self.applier.pending_rows() >= opts.batch_rows || due {
                    self.commit_soon().await?;
                }
            }
            LogicalMessage::Relation(mut rel) => {
                rel.schema = self.schema_map.target_schema(&rel.schema).to_string();
                let mut positions: Vec<usize> = match self.left_out.get(&format!("{}.{}", rel.schema, rel.name)) {
                    Some(columns) => rel.columns.iter().enumerate().filter(|(_, c)| columns.contains(&c.name)).map(|(i, _)| i).collect(),
                    None => Vec::new(),
                };
                positions.reverse();
                for &i in &positions {
                    rel.columns.remove(i);
                }
                self.dropped.insert(rel.oid, positions);
                self.applier.relation(rel).await?
            }
            _ if self.skipping => {}
            LogicalMessage::Insert { relation, mut new } => {
                self.drop_left_out(relation, [&mut new]);
                self.applier.insert(relation, new).await?
            }
            LogicalMessage::Update { relation, mut old, mut new } => {
                match &mut old {
                    Some((_, row)) => self.drop_left_out(relation, [row, &mut new]),
                    None => self.drop_left_out(relation, [&mut new]),
                }
                self.applier.update(relation, old, new).await?
            }
            LogicalMessage::Delete { relation, mut old } => {
                self.drop_left_out(relation, [&mut old.1]);
                self.applier.delete(relation, old.1).await?
            }
            LogicalMessage::Truncate { relations, cascade, restart_identity } => {
                // A table with a chunk table is truncated with it (its foreign key would refuse).
                let chunked = self.embed.is_some_and(|e| {
                    relations.iter().any(|r| e.tables.iter().any(|(t, s)| s.chunks.is_some() && self.applier.qualified(*r) == Some(t.qualified().as_str())))
                });
                self.applier.truncate(&relations, cascade || chunked, restart_identity).await?
            }
            LogicalMessage::Message { prefix, transactional: true, content, .. } if prefix == ddl::PREFIX => self.schema_change(&content, opts.follow_ddl).await?,
            LogicalMessage::Message { prefix, lsn, transactional: false, content } if prefix == MARK_PREFIX => {
                self.commit().await?;
                return Ok(Some((lsn, String::from_utf8_lossy(&content).into_owned())));
            }
            // Changes pgshift itself applied on this server (the other direction of a
            // reverse replication) must not travel back.
            LogicalMessage::Origin { name, .. } if slot::is_pgshift_origin(&name) => self.skipping = true,
            LogicalMessage::Origin { .. } | LogicalMessage::Type { .. } | LogicalMessage::Message { .. } => {}
            // The stream reader hands streamed transactions on as ordinary ones.
            LogicalMessage::StreamStart { .. } | LogicalMessage::StreamStop | LogicalMessage::StreamCommit { .. } | LogicalMessage::StreamAbort { .. } => {}
        }
        if self.in_transaction && self.applier.pending_rows() >= opts.batch_rows {
            // A large source transaction: write what we hold while the next part
            // gathers; it commits with the transaction's end.
            self.applier.flush_in_background().await?;
        }
        Ok(None)
    }
}

/// Writes a mark into the source's WAL through `client` and returns its position.
/// The walsender only sends flushed WAL, and a lone message record is not flushed by
/// itself (until PostgreSQL 17's flush argument), so a tiny committed transaction on
/// `flusher` (a connection outside any transaction) pushes it out.
pub async fn emit_mark(client: &Client, flusher: &Session, what: &str) -> Result<Lsn> {
    let src_name = flusher.endpoint();
    let lsn: String = client
        .query_one("SELECT pg_logical_emit_message(false, $1, $2)::text", &[&MARK_PREFIX, &what])
        .await
        .context(&src_name, || "write a position mark into the source's WAL".into())?
        .get(0);
    flusher
        .batch_execute("SET synchronous_commit = on; SELECT pg_current_xact_id()")
        .await
        .context(&src_name, || "flush the source's WAL".into())?;
    lsn.parse().map_err(Error::Internal)
}

/// The tables the run copies, as the target has them now (the chunks keep the
/// source's names; the run's schema map says where they went).
pub(crate) async fn run_tables<'a>(dst: &Session, run: &Run, target: &'a catalog::Catalog) -> Result<Vec<&'a Table>> {
    let names: Vec<String> =
        Store::new(dst).run_table_names(run.run_id).await?.iter().map(|n| run.schema_map.target_display(n)).collect();
    Ok(target.tables.iter().filter(|t| names.contains(&t.display_name())).collect())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
