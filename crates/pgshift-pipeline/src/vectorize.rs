//! `pgshift vectorize`: keeps every embedding spec of a database current while its
//! application writes: an inserted row gets its vector (or its chunks), a changed text
//! is embedded again, an update of other columns costs nothing, a delete takes its
//! chunks along, NULL or blank text has no vector.
//!
//! It learns of changes as catch-up does on a target, from triggers of its own
//! ([`Keeper::Vectorize`]): a vector column's stale vector is cleared by a BEFORE
//! UPDATE trigger (a new row arrives without one) and found by a partial index; a
//! chunk table's stale rows are queued in `pgshift.stale_chunks`. The state of the
//! work is the data itself, so a killed vectorize, a restarted server or rows written
//! while it was stopped lose nothing; its own writes change no text, so they never
//! come back as work. Why triggers and not a logical slot: ARCHITECTURE "vectorize".

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgshift_postgres::catalog::{self, Catalog, Table};
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::quote_ident;
use pgshift_postgres::{ConnInfo, Session};
use serde::Serialize;

use crate::embed::catchup::{embed_round, stale_ddl, VectorColumn};
use crate::embed::chunks::{self, ChunkTable, Cutter};
use crate::embed::{has_text_sql, EmbedPool, Keeper};
use crate::error::{Error, Result};
use crate::metrics;
use crate::plan::embedding::{match_specs, table_candidates, EmbeddingSetup, EmbeddingSpec};
use crate::run::store::Store;

/// The advisory lock (two-key form: "pgsh", 1) that one vectorize per database holds.
const LOCK: (i32, i32) = (0x7067_7368, 1);
/// How often the backlog and the lag are counted.
const COUNT_EVERY: Duration = Duration::from_secs(2);
/// How long samples that date transactions are kept (older texts count from the oldest).
const SAMPLES_KEPT: Duration = Duration::from_secs(3600);

pub struct VectorizeOptions {
    pub setup: EmbeddingSetup,
    /// Wait between rounds when nothing was left to do.
    pub poll: Duration,
    /// Stop once no row is left (a scheduled run); otherwise run until stopped.
    pub until_done: bool,
    /// How long to keep reconnecting while the server is unreachable.
    pub reconnect_timeout: Duration,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VectorizeReport {
    /// The tables kept current (`schema.table`), with their vector column or chunk table.
    pub tables: Vec<String>,
    /// What it set up (or, with --dry-run, would set up), in order.
    pub steps: Vec<String>,
    pub dry_run: bool,
    /// Rows embedded (or re-chunked) while it ran.
    pub rows: u64,
    pub reconnects: u64,
    pub seconds: f64,
}

/// One table whose vectors are kept: a vector column or a chunk table.
struct Kept {
    table: Table,
    spec: EmbeddingSpec,
    name: String,
}

impl Kept {
    fn describe(&self) -> String {
        match ChunkTable::of(&self.table, &self.spec) {
            Some(c) => format!("{} -> {}", self.name, c.qualified()),
            None => format!("{}.{}", self.name, self.spec.column),
        }
    }
}

/// Runs until `stop` turns true (or, with `until_done`, until nothing is left).
pub async fn vectorize(target: &ConnInfo, opts: &VectorizeOptions, stop: tokio::sync::watch::Receiver<bool>) -> Result<VectorizeReport> {
    let started = Instant::now();
    let mut report = VectorizeReport { dry_run: opts.dry_run, ..Default::default() };
    let session = target.session().await?;
    let catalog = catalog::inspect(&session).await?;
    let Some(vector_schema) = catalog::installed_extensions(&session).await?.remove("vector") else {
        return Err(Error::Setting(format!("vectorize: {} has no pgvector extension: CREATE EXTENSION vector first", target.endpoint())));
    };
    let kept = kept_tables(&catalog, &opts.setup, target.endpoint())?;
    report.tables = kept.iter().map(Kept::describe).collect();
    let setup = setup_steps(&kept, &vector_schema);
    report.steps = setup.iter().map(|(sql, _)| sql.clone()).collect();
    if opts.dry_run {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let mut lock = hold_lock(target).await?;
    Store::new(&session).ensure_schema().await?;
    // Its own triggers and indexes are not the application's schema changes.
    let internal = format!("SET {} = on", crate::catchup::ddl::INTERNAL);
    session.batch_execute(&internal).await.context(&session.endpoint(), || internal.clone())?;
    for (sql, fallback) in &setup {
        if let Err(e) = session.batch_execute(sql).await {
            // A text expression that is not immutable cannot be in an index predicate:
            // the index then holds every row without a vector.
            match fallback {
                Some(plain) => session.batch_execute(plain).await.context(&session.endpoint(), || plain.clone())?,
                None => return Err(pgshift_postgres::error::query_error(&e, &session.endpoint(), sql.clone()).into()),
            }
        }
    }
    tracing::info!("vectorize: keeping {} current", report.tables.join(", "));
    let worker = format!("{}:{}", crate::workers::host_name(), std::process::id());
    Store::new(&session).vectorize_started(&worker, &report.tables).await?;

    let pool = EmbedPool::start(opts.setup.embedder.clone(), opts.setup.threads, opts.setup.batch_size);
    let mut session = session;
    let mut clock = XidClock::default();
    let mut counted = None::<Instant>;
    let mut lost_since = None::<Instant>;
    let mut backoff = Duration::from_millis(500);
    loop {
        if *stop.borrow() {
            break;
        }
        let rows_so_far = report.rows;
        let pass = async {
            let done = round(&session, &pool, &kept, &vector_schema).await?;
            // Counting is reads (and dates the lag to a poll's precision when idle); the
            // status row it reports to is written every COUNT_EVERY only, not at every
            // idle poll.
            let due = counted.is_none_or(|c: Instant| c.elapsed() >= COUNT_EVERY);
            let backlog = match due || done == 0 {
                true => {
                    let (backlog, lag) = count_backlog(&session, &kept, &mut clock, started).await?;
                    if due {
                        Store::new(&session).vectorize_seen((rows_so_far + done) as i64, backlog as i64, lag).await?;
                    }
                    Some((backlog, due))
                }
                false => None,
            };
            Ok::<_, Error>((done, backlog))
        };
        match pass.await {
            Ok((done, backlog)) => {
                lost_since = None;
                backoff = Duration::from_millis(500);
                report.rows += done;
                if let Some((backlog, reported)) = backlog {
                    if reported {
                        counted = Some(Instant::now());
                    }
                    if backlog == 0 && done == 0 && opts.until_done {
                        break;
                    }
                }
                if done == 0 {
                    let mut stop = stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(opts.poll) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            Err(e) if e.is_transient() => {
                let down = lost_since.get_or_insert_with(Instant::now).elapsed();
                if down >= opts.reconnect_timeout {
                    return Err(Error::RunState(format!(
                        "vectorize gave up after {}s of failed reconnects (--reconnect-timeout): {e}. Nothing is lost: \
                         started again, it finds every row still without its vector",
                        down.as_secs()
                    )));
                }
                metrics::RECONNECTS.inc();
                report.reconnects += 1;
                tracing::warn!("{e}; reconnecting in {:.1}s", backoff.as_secs_f64());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                if let Ok(s) = target.session().await {
                    // A lock whose connection went (a server restart) is taken again; another
                    // vectorize may have taken over meanwhile, and then this one stops.
                    if lock.is_closed() {
                        match hold_lock(target).await {
                            Ok(l) => lock = l,
                            Err(e) if e.is_transient() => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    session = s;
                }
            }
            Err(e) => return Err(e),
        }
    }
    // Best effort: status says it stopped; a lost connection says so by the report's age.
    if let Err(e) = Store::new(&session).vectorize_stopped(report.rows as i64).await {
        tracing::warn!("vectorize: could not record that it stopped: {e}");
    }
    drop(lock);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The tables of the specs as this database has them (a partitioned table's
/// partitions each take its spec); each spec must name one table.
fn kept_tables(catalog: &Catalog, setup: &EmbeddingSetup, endpoint: &str) -> Result<Vec<Kept>> {
    let specs = match_specs(setup, &table_candidates(&catalog.tables), &format!("of {endpoint}"))?;
    let mut kept = Vec::new();
    for t in catalog.tables.iter().filter(|t| t.holds_rows()) {
        let Some(spec) = specs.get(&t.display_name()) else { continue };
        let what = format!("vectorize {}", t.display_name());
        if spec.chunks.is_some() && t.partition_of.is_some() {
            return Err(Error::Setting(format!("{what}: chunk tables of partitioned tables are not supported yet: embed into a column")));
        }
        if spec.chunks.is_some() && t.primary_key.is_none() {
            return Err(Error::Setting(format!("{what}: a chunk table holds its parent's key, and the table has no primary key: add one")));
        }
        if let Some(chunks) = ChunkTable::of(t, spec) {
            let (schema, name) = chunks.schema_and_name();
            if chunks.application().is_some() && catalog.table(schema, name).is_none() {
                return Err(Error::Setting(format!("{what}: chunk_columns name the chunk table {schema}.{name}, which {endpoint} lacks")));
            }
        } else if let Some(c) = t.columns.iter().find(|c| c.name == spec.column) {
            if !spec.holds_its_vectors(&c.type_name) {
                let wanted = spec.type_name();
                return Err(Error::Setting(format!(
                    "{what}: column {} is {}, not {wanted} as the model {} makes: change the model's vectors with pgshift reembed first",
                    c.name, c.type_name, spec.model
                )));
            }
        }
        kept.push(Kept { table: t.clone(), spec: spec.clone(), name: t.display_name() });
    }
    Ok(kept)
}

/// What vectorize sets up, in order: a missing vector column or chunk table (with its
/// keys and vector index), then its own triggers and pending index. Each statement
/// with a plainer one to use when it fails (the index without the text predicate).
fn setup_steps(kept: &[Kept], vector_schema: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for k in kept {
        match ChunkTable::of(&k.table, &k.spec) {
            Some(chunks) => {
                if chunks.application().is_none() {
                    out.push((chunks.create_sql(vector_schema).replacen("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1), None));
                    let (_, name) = chunks.schema_and_name();
                    for step in chunks.post_data() {
                        // Validating a valid constraint does nothing: only additions need a guard.
                        if step.sql.contains("VALIDATE CONSTRAINT") {
                            out.push((step.sql, None));
                            continue;
                        }
                        // Only when missing: the steps add constraints, which have no IF NOT EXISTS.
                        let guard = format!(
                            "DO $pgshift$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = {} AND conrelid = {}::regclass) THEN EXECUTE {}; END IF; END $pgshift$",
                            pgshift_postgres::sql::quote_literal(&step.object),
                            pgshift_postgres::sql::quote_literal(&chunks.qualified()),
                            pgshift_postgres::sql::quote_literal(&step.sql)
                        );
                        out.push((guard, None));
                    }
                    let index = crate::embed::vector_index::index_name(name, &k.spec);
                    out.extend(k.spec.index_sql(&chunks.qualified(), &index, false, vector_schema).map(|sql| (sql, None)));
                }
                out.extend(chunks.stale_ddl(Keeper::Vectorize).into_iter().map(|sql| (sql, None)));
                out.push((chunks.queue_missing_sql(), None));
            }
            None => {
                if !k.table.columns.iter().any(|c| c.name == k.spec.column) {
                    out.push((crate::embed::copy::vector_column_ddl(&k.table, &k.spec, vector_schema).replacen("ADD COLUMN", "ADD COLUMN IF NOT EXISTS", 1), None));
                    let index = crate::embed::vector_index::index_name(&k.table.name, &k.spec);
                    out.extend(k.spec.index_sql(&k.table.qualified(), &index, false, vector_schema).map(|sql| (sql, None)));
                }
                let with_text = stale_ddl(&k.table, &k.spec, Keeper::Vectorize, true);
                let plain = stale_ddl(&k.table, &k.spec, Keeper::Vectorize, false);
                out.extend(with_text.into_iter().zip(plain).map(|(sql, plain)| {
                    let fallback = (sql != plain).then_some(plain);
                    (sql, fallback)
                }));
            }
        }
    }
    out
}

/// One round over every table: the rows each had waiting, up to a round's worth.
async fn round(session: &Session, pool: &EmbedPool, kept: &[Kept], vector_schema: &str) -> Result<u64> {
    let mut done = 0;
    for k in kept {
        let n = match ChunkTable::of(&k.table, &k.spec) {
            Some(chunks) => {
                // The queue's entries and the chunks change in one transaction: a kill
                // in between leaves the rows queued.
                let cutter = Arc::new(Cutter::new(pool, chunks.chunks));
                session.batch_execute("BEGIN").await.context(&session.endpoint(), || "begin".into())?;
                let n = chunks::embed_round(session, pool, &chunks, &cutter, vector_schema).await?;
                session.batch_execute("COMMIT").await.context(&session.endpoint(), || "commit the chunks".into())?;
                n
            }
            None => embed_round(session, pool, VectorColumn { table: &k.table, spec: &k.spec, vector_schema }, true).await?,
        };
        if n > 0 {
            metrics::VECTORIZE_ROWS.with_label_values(&[&k.name]).inc_by(n);
        }
        done += n;
    }
    Ok(done)
}

/// Dates transactions: the next transaction id, sampled as time goes on, so the
/// oldest waiting row's xmin tells when it was written (to a sample's precision).
#[derive(Default)]
struct XidClock {
    samples: VecDeque<(Instant, i64)>,
}

impl XidClock {
    fn sample(&mut self, next_xid: i64) {
        let now = Instant::now();
        self.samples.push_back((now, next_xid));
        while self.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > SAMPLES_KEPT) {
            self.samples.pop_front();
        }
    }

    /// When transaction `xid` was at most written: the last sample taken before it was
    /// assigned; before every sample, `since`.
    fn written_after(&self, xid: i64, since: Instant) -> Instant {
        self.samples.iter().rev().find(|(_, next)| *next <= xid).map_or(since, |(t, _)| *t)
    }
}

/// Counts every table's waiting rows into the metrics and sets the lag; returns the
/// total and the lag.
async fn count_backlog(session: &Session, kept: &[Kept], clock: &mut XidClock, started: Instant) -> Result<(u64, f64)> {
    let endpoint = session.endpoint();
    let mut total = 0;
    let mut oldest_age: Option<i64> = None;
    for k in kept {
        let sql = match ChunkTable::of(&k.table, &k.spec) {
            Some(chunks) => format!(
                "SELECT count(DISTINCT key), max(age(xmin))::bigint FROM pgshift.stale_chunks WHERE chunk_table = {}",
                pgshift_postgres::sql::quote_literal(&chunks.qualified())
            ),
            None => format!(
                "SELECT count(*), max(age(xmin))::bigint FROM ONLY {} WHERE {} IS NULL AND {}",
                k.table.qualified(),
                quote_ident(&k.spec.column),
                has_text_sql(&k.spec)
            ),
        };
        let row = session.query_one(&sql, &[]).await.context(&endpoint, || format!("count the rows of {} waiting for vectors", k.name))?;
        let (count, age): (i64, Option<i64>) = (row.get(0), row.get(1));
        metrics::VECTORIZE_BACKLOG.with_label_values(&[&k.name]).set(count);
        total += count as u64;
        oldest_age = oldest_age.max(age);
    }
    let row = session
        .query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint", &[])
        .await
        .context(&endpoint, || "read the next transaction id".into())?;
    let next: i64 = row.get(0);
    let lag = match oldest_age {
        Some(age) => clock.written_after(next - age, started).elapsed().as_secs_f64(),
        None => 0.0,
    };
    clock.sample(next);
    metrics::VECTORIZE_LAG.set(lag);
    Ok((total, lag))
}

/// Takes the database's vectorize lock on a connection of its own, held while it runs;
/// a second vectorize refuses, naming the one that holds it.
async fn hold_lock(target: &ConnInfo) -> Result<Session> {
    let lock = target.session().await?;
    let endpoint = lock.endpoint();
    let got: bool = lock
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK.0, &LOCK.1])
        .await
        .context(&endpoint, || "take the vectorize lock".into())?
        .get(0);
    if got {
        return Ok(lock);
    }
    let holder = lock
        .query_opt(
            "SELECT a.pid, coalesce(a.client_addr::text, 'local'), a.backend_start::text FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid = $1::int::oid AND l.objid = $2::int::oid AND l.granted",
            &[&LOCK.0, &LOCK.1],
        )
        .await
        .context(&endpoint, || "find the vectorize holding the lock".into())?;
    let who = holder.map_or("another session".to_string(), |r| {
        format!("the session of backend pid {} from {}, connected since {}", r.get::<_, i32>(0), r.get::<_, String>(1), r.get::<_, String>(2))
    });
    Err(Error::RunState(format!(
        "another pgshift vectorize already keeps the vectors of {endpoint} ({who}): one per database, so no row is embedded twice; \
         stop that one first (in Kubernetes, one replica with strategy Recreate)"
    )))
}
