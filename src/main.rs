//! pgshift: move a live PostgreSQL database into a pgvector PostgreSQL.

mod output;
mod progress;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use pgshift_pipeline::cutover::CutoverOptions;
use pgshift_pipeline::follow::{FollowOptions, Until};
use pgshift_pipeline::migrate::MigrateOptions;
use pgshift_pipeline::plan::PlanOptions;
use pgshift_pipeline::verify::VerifyOptions;
use pgshift_postgres::ConnInfo;

#[derive(Parser)]
#[command(
    name = "pgshift",
    version,
    about = "Move a live PostgreSQL database into a pgvector-enabled PostgreSQL with near-zero downtime",
    long_about = "Move a live PostgreSQL database into a pgvector-enabled PostgreSQL with near-zero downtime.\n\n\
        A typical cutover:\n  \
        1. pgshift inspect --source $OLD --target $NEW     see what moves and what is in the way\n  \
        2. pgshift migrate --source $OLD --target $NEW --dry-run   read the plan and every DDL statement\n  \
        3. pgshift migrate --source $OLD --target $NEW     schema, parallel binary COPY, indexes, then follow changes\n  \
        4. pgshift verify  --source $OLD --target $NEW     counts and checksums, exit 1 on a difference\n  \
        5. pgshift cutover --source $OLD --target $NEW     pause writes, apply the rest, sync sequences, switch\n\n\
        Connection strings may carry passwords; pgshift only ever prints user@host:port/db."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// No progress output (results still go to stdout).
    #[arg(long, short, global = true, env = "PGSHIFT_QUIET")]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// List the source's tables: sizes, keys, replica identity, exact column types and problems.
    Inspect(InspectArgs),
    /// Copy schema and data into the target: tables, parallel COPY under one snapshot, then indexes and constraints.
    Migrate(MigrateArgs),
    /// Apply the source's changes since the load to the target (logical replication), until stopped.
    Follow(FollowArgs),
    /// Pause writes on the source, apply the last changes, sync sequences, compare counts, hand over.
    Cutover(CutoverArgs),
    /// Switch back after `cutover --reverse`: pause writes on the new database, apply its last changes to the old one, make the old one writable.
    Rollback(SwitchArgs),
    /// Compare row counts and content checksums of every table; exit 1 when anything differs.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct SourceArg {
    /// Source database URL, e.g. postgresql://user:password@host:5432/app
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    source: String,
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    source: SourceArg,
    /// Also compare with this target database.
    #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true)]
    target: Option<String>,
    /// Count rows exactly (a scan per table) instead of the planner's estimate.
    #[arg(long)]
    count: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct MigrateArgs {
    #[command(flatten)]
    source: SourceArg,
    /// Target database URL (needs pgvector when the source uses vectors).
    #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true)]
    target: String,
    /// Parallel copy and index workers (each holds one source and one target connection).
    #[arg(long, short, env = "PGSHIFT_JOBS", default_value_t = 4)]
    jobs: usize,
    /// Only these tables: glob patterns over schema.table or table, e.g. 'public.*' 'orders_*'.
    #[arg(long, num_args = 1.., env = "PGSHIFT_TABLES", value_delimiter = ',')]
    tables: Vec<String>,
    /// Split tables with more (estimated) rows than this into ranges copied in parallel.
    #[arg(long, env = "PGSHIFT_SPLIT_ROWS", default_value_t = 500_000)]
    split_rows: u64,
    /// maintenance_work_mem for index builds on the target.
    #[arg(long, env = "PGSHIFT_MAINTENANCE_WORK_MEM", default_value = "256MB")]
    maintenance_work_mem: String,
    /// Print the plan and every DDL statement; write nothing anywhere.
    #[arg(long)]
    dry_run: bool,
    /// Continue the target's unfinished run: finished chunks are kept, the rest copied again.
    #[arg(long)]
    resume: bool,
    /// Copy without a replication slot (no catch-up afterwards; wal_level may be replica).
    #[arg(long, conflicts_with = "load_only")]
    no_follow: bool,
    /// Stop after the load, keeping the slot: run `pgshift follow` later to catch up.
    #[arg(long)]
    load_only: bool,
    #[command(flatten)]
    follow: FollowTuning,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FollowTuning {
    /// Exit once every change the source had when catch-up began is applied, instead of following until stopped.
    #[arg(long)]
    until_caught_up: bool,
    /// Changes held in memory before they are written to the target.
    #[arg(long, env = "PGSHIFT_BATCH_ROWS", default_value_t = 20_000)]
    batch_rows: usize,
    /// Longest wait before applied changes are committed on the target, in milliseconds.
    #[arg(long, env = "PGSHIFT_COMMIT_DELAY_MS", default_value_t = 200)]
    commit_delay_ms: u64,
}

impl FollowTuning {
    fn options(&self) -> FollowOptions {
        FollowOptions {
            until: if self.until_caught_up { Until::CaughtUp } else { Until::Stopped },
            batch_rows: self.batch_rows.max(1),
            commit_delay: std::time::Duration::from_millis(self.commit_delay_ms),
        }
    }
}

#[derive(Args)]
struct FollowArgs {
    #[command(flatten)]
    source: SourceArg,
    #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true)]
    target: String,
    #[command(flatten)]
    tuning: FollowTuning,
    /// Print the final report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CutoverArgs {
    #[command(flatten)]
    switch: SwitchArgs,
    /// Keep the old database as a warm rollback: replicate the new one's changes back to it
    /// (run `pgshift follow --source NEW --target OLD`; switch back with `pgshift rollback`).
    #[arg(long)]
    reverse: bool,
}

/// Cutover and rollback take the same two URLs: --source is always the old
/// database, --target the new one.
#[derive(Args)]
struct SwitchArgs {
    #[command(flatten)]
    source: SourceArg,
    /// The new database (the migration's target).
    #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true)]
    target: String,
    /// Longest write pause (waiting for locks and for the other side to apply), e.g. 5s or 800ms.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: std::time::Duration,
    /// Refuse to start while the target is more than this many MiB of WAL behind.
    #[arg(long, default_value_t = 16)]
    max_lag_mb: u64,
    /// Leave the database being switched away from writable (by default its new sessions are read-only and waiting writers are ended).
    #[arg(long)]
    keep_source_writable: bool,
    /// Print the steps and the current lag; pause nothing, write nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

/// `5s`, `800ms`, `2m` or plain seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = number.parse().map_err(|_| format!("not a duration: {s:?} (e.g. 5s, 800ms)"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use ms, s or m")),
    };
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    source: SourceArg,
    #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true)]
    target: String,
    /// Only these tables (glob patterns, as for migrate).
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    tables: Vec<String>,
    /// Check tables with more rows than this per key range, so a difference points at a range.
    #[arg(long, default_value_t = 500_000)]
    split_rows: u64,
    #[arg(long, short, default_value_t = 4)]
    jobs: usize,
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PGSHIFT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgshift: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let progress: Arc<dyn pgshift_pipeline::progress::Progress> = Arc::from(progress::reporter(cli.quiet));
    match cli.command {
        Command::Inspect(a) => {
            let source = ConnInfo::parse(&a.source.source, "--source")?;
            let target = a.target.as_deref().map(|t| ConnInfo::parse(t, "--target")).transpose()?;
            let report = pgshift_pipeline::inspect::inspect(&source, target.as_ref(), a.count).await?;
            emit(a.json, &report, output::print_inspect)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(a) => {
            let source = ConnInfo::parse(&a.source.source, "--source")?;
            let target = ConnInfo::parse(&a.target, "--target")?;
            let options = MigrateOptions {
                plan: PlanOptions { patterns: a.tables, split_rows: a.split_rows },
                jobs: a.jobs,
                dry_run: a.dry_run,
                resume: a.resume,
                follow: !a.no_follow,
                maintenance_work_mem: a.maintenance_work_mem,
            };
            let report = pgshift_pipeline::migrate::migrate(&source, &target, &options, progress.clone()).await?;
            emit(a.json, &report, output::print_migrate)?;
            if options.follow && !a.load_only && !a.dry_run {
                let report = pgshift_pipeline::follow::follow(&source, &target, &a.follow.options(), progress).await?;
                emit(a.json, &report, output::print_follow)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Follow(a) => {
            let source = ConnInfo::parse(&a.source.source, "--source")?;
            let target = ConnInfo::parse(&a.target, "--target")?;
            let report = pgshift_pipeline::follow::follow(&source, &target, &a.tuning.options(), progress).await?;
            emit(a.json, &report, output::print_follow)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cutover(a) => switch(&a.switch, a.reverse, false).await,
        Command::Rollback(a) => switch(&a, false, true).await,
        Command::Verify(a) => {
            let source = ConnInfo::parse(&a.source.source, "--source")?;
            let target = ConnInfo::parse(&a.target, "--target")?;
            let options = VerifyOptions { patterns: a.tables, split_rows: a.split_rows, jobs: a.jobs };
            let report = pgshift_pipeline::verify::verify(&source, &target, &options).await?;
            emit(a.json, &report, output::print_verify)?;
            Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

/// Cutover (old -> new) or rollback (new -> old, so the roles swap).
async fn switch(a: &SwitchArgs, reverse: bool, rollback: bool) -> Result<ExitCode> {
    let old = ConnInfo::parse(&a.source.source, "--source")?;
    let new = ConnInfo::parse(&a.target, "--target")?;
    let options = CutoverOptions {
        timeout: a.timeout,
        max_lag_bytes: a.max_lag_mb * 1024 * 1024,
        keep_source_writable: a.keep_source_writable,
        reverse,
        rollback,
        dry_run: a.dry_run,
    };
    let (from, to) = if rollback { (&new, &old) } else { (&old, &new) };
    let report = pgshift_pipeline::cutover::cutover(from, to, &options).await?;
    emit(a.json, &report, output::print_cutover)?;
    Ok(ExitCode::SUCCESS)
}

/// The report as JSON with --json, else in its human form.
fn emit<T: serde::Serialize>(json: bool, report: &T, human: fn(&T)) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        human(report);
    }
    Ok(())
}
