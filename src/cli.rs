//! The command line: every setting is a flag, a `PGSHIFT_*` variable and a key of
//! the configuration file (see config/pgshift.example.toml).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pgshift_pipeline::cutover::CutoverOptions;
use pgshift_pipeline::catchup::{FollowOptions, Until};
use pgshift_pipeline::plan::MigrateOptions;
use pgshift_pipeline::plan::PlanOptions;

use crate::embed_args::{EmbedRuntime, EmbedSettings};

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
        Settings come from flags, then PGSHIFT_* variables, then the --config file.\n\n\
        Passwords: keep them off the command line, where every user of the machine sees them in `ps`.\n\
        Connection strings are completed as psql completes them: PGPASSWORD, the password file\n\
        (~/.pgpass, PGPASSFILE or passfile=), service files (service=NAME or PGSERVICE, from\n\
        ~/.pg_service.conf or PGSERVICEFILE) and PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE...;\n\
        or put the whole URL in PGSHIFT_SOURCE / PGSHIFT_TARGET. pgshift only ever prints user@host:port/db."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// No progress output (results still go to stdout).
    #[arg(long, short, global = true, env = "PGSHIFT_QUIET")]
    pub quiet: bool,
    /// A TOML configuration file whose keys act as defaults for every flag (see config/pgshift.example.toml).
    #[arg(long, global = true, env = "PGSHIFT_CONFIG", value_name = "FILE")]
    pub config: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (and /health) while the command runs, e.g. 127.0.0.1:9187.
    #[arg(long, global = true, env = "PGSHIFT_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// List the source's tables: sizes, keys, replica identity, exact column types and problems.
    Inspect(InspectArgs),
    /// Copy schema and data into the target: tables, parallel COPY under one snapshot, then indexes and constraints.
    Migrate(MigrateArgs),
    /// Help a running `migrate` copy, from this or any other host: claim chunks from the run's queue on the
    /// target, copy them under the run's snapshot, and stay until every chunk is done (start as many as you like).
    Worker(WorkerArgs),
    /// Apply the source's changes since the load to the target (logical replication), until stopped.
    Follow(FollowArgs),
    /// Pause writes on the source, apply the last changes, sync sequences, compare counts, hand over.
    Cutover(CutoverArgs),
    /// Switch back after `cutover --reverse`: pause writes on the new database, apply its last changes to the old one, make the old one writable.
    Rollback(SwitchArgs),
    /// Compare row counts and content checksums of every table; exit 1 when anything differs.
    Verify(VerifyArgs),
    /// Where the target's newest run stands: phase, chunks and rows per table, and the lag when --source is given.
    Status(StatusArgs),
    /// Serve the status page, /metrics, /health and (with a token) the control API to start runs and cut over.
    Serve(ServeArgs),
    /// Recompute a live table's vectors (new model, new dimensions) without downtime: shadow column, backfill, CONCURRENTLY built index, atomic swap.
    Reembed(ReembedArgs),
    /// Print the vector pgshift computes for a text (pgvector's text form, one line per text), e.g. to search
    /// the new database: SELECT title FROM docs ORDER BY embedding <=> '<vector>' LIMIT 5.
    Embed(EmbedTextArgs),
    /// Find the rows (or chunks) of a table nearest to a question, with the model and spec a run recorded for
    /// that table: pgshift search --target DB --table pages "how do I reset a password?"
    Search(SearchArgs),
    /// Keep a database's vectors current while its application writes (after `cutover`, with the specs the
    /// run recorded; on any pgvector database with --embed): inserted rows get vectors (or chunks), changed
    /// texts are embedded again, other updates cost nothing. Runs until stopped (SIGTERM/Ctrl-C), or
    /// --until-done for a scheduled run. One per database.
    Vectorize(VectorizeArgs),
    /// Move several databases into one target: each source is loaded by its own run, then all are followed at once.
    Consolidate(ConsolidateArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file: every unknown key, wrong type or bad value, with its key and line.
    Check {
        /// The file to check.
        file: String,
    },
}

#[derive(Args)]
pub struct SourceArg {
    /// Source database: a URL (postgresql://user@host:5432/app), key=value settings (host=... dbname=...),
    /// service=NAME, or sqlite:///path/app.db. Missing settings and the password come from PG* variables,
    /// ~/.pgpass and service files, as for psql (a password written here is visible in `ps`).
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    pub source: String,
}

/// How a source's tables land on a target that other databases share (migrate, serve).
#[derive(Args)]
pub struct Placement {
    /// A foreign key between tables that came from different databases, added and validated
    /// once both are on the target: 'documents(asset_id) -> assets(id)'. Repeatable.
    #[arg(long = "foreign-key", env = "PGSHIFT_FOREIGN_KEYS", value_delimiter = ';')]
    pub foreign_keys: Vec<String>,
    /// Change a column's type on the way, every value checked first: TABLE.COLUMN=TYPE,
    /// e.g. 'documents.asset_id=uuid' when another database keys the same thing as uuid. Repeatable.
    #[arg(long = "cast", env = "PGSHIFT_CASTS", value_delimiter = ';')]
    pub casts: Vec<String>,
    #[command(flatten)]
    pub schemas: SchemaMapArg,
}

impl Placement {
    pub fn apply(&self, options: MigrateOptions) -> anyhow::Result<MigrateOptions> {
        Ok(MigrateOptions {
            foreign_keys: parse_all(&self.foreign_keys, pgshift_pipeline::plan::links::DeclaredForeignKey::parse)?,
            casts: parse_all(&self.casts, pgshift_pipeline::plan::casts::ColumnCast::parse)?,
            schema_map: self.schemas.map()?,
            ..options
        })
    }
}

/// Every non-empty item parsed, or the first error.
pub fn parse_all<T>(items: &[String], parse: fn(&str) -> Result<T, String>) -> anyhow::Result<Vec<T>> {
    items.iter().filter(|i| !i.trim().is_empty()).map(|i| parse(i).map_err(anyhow::Error::msg)).collect()
}

#[derive(Args)]
pub struct SchemaMapArg {
    /// Put a source schema's tables, sequences and types into another schema on the target:
    /// SOURCE=TARGET, e.g. 'public=main' when two databases both have public.users. Catch-up,
    /// verify and cutover follow the run's map by themselves.
    #[arg(long = "map-schema", env = "PGSHIFT_MAP_SCHEMA", value_delimiter = ',')]
    pub map_schema: Vec<String>,
}

impl SchemaMapArg {
    pub fn map(&self) -> anyhow::Result<pgshift_postgres::schema_map::SchemaMap> {
        pgshift_postgres::schema_map::SchemaMap::parse(&self.map_schema).map_err(|e| anyhow::anyhow!("--map-schema: {e}"))
    }
}

#[derive(Args)]
pub struct TargetArg {
    /// Target database, written as for --source (needs pgvector when vectors are stored or computed).
    #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true)]
    pub target: String,
}

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub source: SourceArg,
    /// Also compare with this target database.
    #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true)]
    pub target: Option<String>,
    /// Count rows exactly (a scan per table) instead of the planner's estimate.
    #[arg(long)]
    pub count: bool,
    /// Compare with the target's tables in these schemas (as migrate --map-schema would put them).
    #[command(flatten)]
    pub schemas: SchemaMapArg,
    /// Show columns as migrate --cast would make them (TABLE.COLUMN=TYPE), so the preview is the plan that runs.
    #[arg(long = "cast", env = "PGSHIFT_CASTS", value_delimiter = ';')]
    pub casts: Vec<String>,
    /// A SQLite source's types as migrate --sqlite-type would make them.
    #[command(flatten)]
    pub sqlite: SqliteArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How the load runs; shared by `migrate` and `serve`.
#[derive(Args)]
pub struct LoadSettings {
    /// Parallel copy and index workers (each holds one source and one target connection). 0: this process
    /// copies nothing and waits for `pgshift worker` processes to copy the chunks (indexes still use one).
    #[arg(long, short, env = "PGSHIFT_JOBS", default_value_t = 4)]
    pub jobs: usize,
    /// Only these tables: glob patterns over schema.table or table, e.g. 'public.*' 'orders_*'; '!pattern' leaves tables out.
    #[arg(long, num_args = 1.., env = "PGSHIFT_TABLES", value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Split tables with more (estimated) rows than this into ranges copied in parallel.
    #[arg(long, env = "PGSHIFT_SPLIT_ROWS", default_value_t = 500_000)]
    pub split_rows: u64,
    /// maintenance_work_mem for index builds on the target.
    #[arg(long, env = "PGSHIFT_MAINTENANCE_WORK_MEM", default_value = "256MB")]
    pub maintenance_work_mem: String,
    #[command(flatten)]
    pub embed: EmbedSettings,
}

impl LoadSettings {
    /// Loads the embedding model when tables get vectors.
    pub fn options(&self) -> anyhow::Result<MigrateOptions> {
        Ok(MigrateOptions {
            plan: PlanOptions { patterns: self.tables.clone(), split_rows: self.split_rows },
            jobs: self.jobs,
            maintenance_work_mem: self.maintenance_work_mem.clone(),
            embedding: self.embed.setup()?,
            vector_index_memory_mb: self.embed.runtime.vector_index_memory,
            ..MigrateOptions::default()
        })
    }
}

/// Settings of a SQLite source (`--source sqlite:///path/app.db`).
#[derive(Args, Default)]
pub struct SqliteArgs {
    /// Type of a SQLite column on the target, overriding what pgshift infers:
    /// TABLE.COLUMN=TYPE with TYPE one of bigint, boolean, double, text, jsonb, timestamptz, bytea,
    /// vector(N) (raw float BLOBs or JSON arrays), numeric(P,S) (exact; values with more decimals are refused).
    /// Several may be given comma-separated; a comma inside parentheses belongs to the type.
    #[arg(long = "sqlite-type", env = "PGSHIFT_SQLITE_TYPES")]
    pub types: Vec<String>,
    /// Rows whose values do not fit their column's type (not JSON, not a timestamp,
    /// invalid UTF-8...) go to this file as JSON lines instead of stopping the load.
    #[arg(long, env = "PGSHIFT_REJECT_FILE")]
    pub reject_file: Option<std::path::PathBuf>,
}

impl SqliteArgs {
    pub fn overrides(&self) -> anyhow::Result<pgshift_sqlite::schema::Overrides> {
        let mut out = pgshift_sqlite::schema::Overrides::new();
        for o in self.types.iter().flat_map(|t| split_outside_parentheses(t)).filter(|o| !o.trim().is_empty()) {
            let (column, ty) = o.split_once('=').ok_or_else(|| anyhow::anyhow!("--sqlite-type {o:?}: write TABLE.COLUMN=TYPE"))?;
            let t = pgshift_sqlite::types::PgType::parse(ty)
                .ok_or_else(|| anyhow::anyhow!("--sqlite-type {o:?}: unknown type {ty:?} ({})", pgshift_sqlite::types::OVERRIDE_TYPES))?;
            out.insert(column.trim().to_string(), t);
        }
        Ok(out)
    }
}

/// `a=numeric(10,2),b=text` -> `a=numeric(10,2)`, `b=text`.
fn split_outside_parentheses(text: &str) -> Vec<String> {
    let (mut out, mut current, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out
}

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
    #[command(flatten)]
    pub load: LoadSettings,
    #[command(flatten)]
    pub sqlite: SqliteArgs,
    /// Print the plan and every DDL statement; write nothing anywhere.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue the target's unfinished run: finished chunks are kept, the rest copied again.
    #[arg(long)]
    pub resume: bool,
    /// Copy without a replication slot (no catch-up afterwards; wal_level may be replica).
    #[arg(long, conflicts_with = "load_only")]
    pub no_follow: bool,
    /// Stop after the load, keeping the slot: run `pgshift follow` later to catch up.
    #[arg(long)]
    pub load_only: bool,
    /// Also create the extensions (e.g. vector) in the target's template1, so databases created
    /// later have them: Prisma's shadow database, test databases.
    #[arg(long, env = "PGSHIFT_EXTENSIONS_IN_TEMPLATE1")]
    pub extensions_in_template1: bool,
    /// Leave owners as they fall (the migrating user) instead of the source's (ALTER ... OWNER TO).
    #[arg(long, env = "PGSHIFT_NO_OWNER")]
    pub no_owner: bool,
    /// Copy no GRANTs (tables, columns, sequences, views, functions, schemas, default privileges).
    #[arg(long, env = "PGSHIFT_NO_PRIVILEGES")]
    pub no_privileges: bool,
    /// Create the roles that owners and grants name but the target lacks (NOLOGIN, without passwords,
    /// which cannot be read: set them on the target afterwards).
    #[arg(long, env = "PGSHIFT_ROLES")]
    pub roles: bool,
    #[command(flatten)]
    pub placement: Placement,
    #[command(flatten)]
    pub follow: FollowTuning,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct FollowTuning {
    /// Exit once every change the source had when catch-up began is applied, instead of following until stopped.
    #[arg(long)]
    pub until_caught_up: bool,
    /// Changes held in memory before they are written to the target.
    #[arg(long, env = "PGSHIFT_BATCH_ROWS", default_value_t = 20_000)]
    pub batch_rows: usize,
    /// Longest wait before applied changes are committed on the target, in milliseconds.
    #[arg(long, env = "PGSHIFT_COMMIT_DELAY_MS", default_value_t = 200)]
    pub commit_delay_ms: u64,
    /// When a connection to the source or target is lost (restart, failover, terminated session), keep
    /// reconnecting this long (e.g. 5m, 1h) before giving up; catch-up resumes at the last applied transaction.
    #[arg(long, env = "PGSHIFT_RECONNECT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub reconnect_timeout: Duration,
    /// Receive a large transaction only after it commits (protocol 1), instead of while it runs (spooled
    /// to disk under PGSHIFT_SPOOL_DIR or the temporary directory until its commit; PostgreSQL 14+ sources).
    #[arg(long, env = "PGSHIFT_NO_STREAMING")]
    pub no_streaming: bool,
    /// Schema changes on the source during catch-up: `on` makes them on the target at their place in the
    /// stream; `off` stops at the first one that the target does not have yet, with the statement and
    /// what to run on the target.
    #[arg(long, env = "PGSHIFT_FOLLOW_DDL", default_value = "on", value_parser = ["on", "off"])]
    pub follow_ddl: String,
}

impl FollowTuning {
    pub fn options(&self) -> FollowOptions {
        FollowOptions {
            until: if self.until_caught_up { Until::CaughtUp } else { Until::Stopped },
            reconnect_timeout: self.reconnect_timeout,
            batch_rows: self.batch_rows.max(1),
            commit_delay: Duration::from_millis(self.commit_delay_ms),
            streaming: !self.no_streaming,
            follow_ddl: self.follow_ddl == "on",
            embedding: None,
        }
    }
}

#[derive(Args)]
pub struct FollowArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
    #[command(flatten)]
    pub tuning: FollowTuning,
    #[command(flatten)]
    pub embed: EmbedSettings,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CutoverArgs {
    #[command(flatten)]
    pub switch: SwitchArgs,
    /// Keep the old database as a warm rollback: replicate the new one's changes back to it
    /// (run `pgshift follow --source NEW --target OLD`; switch back with `pgshift rollback`).
    #[arg(long)]
    pub reverse: bool,
}

/// How long a cutover may pause writes; shared by `cutover`, `rollback` and `serve`.
#[derive(Args)]
pub struct PauseSettings {
    /// Longest write pause (waiting for locks and for the other side to apply), e.g. 5s or 800ms.
    #[arg(long, env = "PGSHIFT_CUTOVER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Refuse to start while the target is more than this many MiB of WAL behind.
    #[arg(long, env = "PGSHIFT_MAX_LAG_MB", default_value_t = 16)]
    pub max_lag_mb: u64,
    /// Switch the application in its PgBouncer instead of making it move: the admin console,
    /// e.g. postgresql://admin@pool:6432/pgbouncer. PAUSE, fence, last changes, the pool's [databases]
    /// entry pointed at the new database, RELOAD, RESUME: clients wait a moment instead of failing.
    #[arg(long, env = "PGSHIFT_PGBOUNCER", hide_env_values = true, value_name = "ADMIN_URL")]
    pub pgbouncer: Option<String>,
    /// The pooled database to switch (default: the [databases] entry that points at the old database).
    #[arg(long, env = "PGSHIFT_PGBOUNCER_DB", requires = "pgbouncer")]
    pub pgbouncer_db: Option<String>,
    /// PgBouncer's configuration file, when pgshift sees it at another path than PgBouncer reports (SHOW CONFIG's conffile).
    #[arg(long, env = "PGSHIFT_PGBOUNCER_INI", requires = "pgbouncer")]
    pub pgbouncer_ini: Option<std::path::PathBuf>,
}

impl PauseSettings {
    pub fn options(&self) -> anyhow::Result<CutoverOptions> {
        let pgbouncer = match &self.pgbouncer {
            Some(url) => Some(pgshift_pipeline::cutover::pooler::PoolerOptions {
                admin: pgshift_postgres::ConnInfo::parse(url, "--pgbouncer")?,
                database: self.pgbouncer_db.clone(),
                ini: self.pgbouncer_ini.clone(),
            }),
            None => None,
        };
        Ok(CutoverOptions {
            timeout: self.timeout,
            max_lag_bytes: self.max_lag_mb * 1024 * 1024,
            keep_source_writable: false,
            reverse: false,
            rollback: false,
            dry_run: false,
            embedding: None,
            pgbouncer,
        })
    }
}

/// Cutover and rollback take the same two URLs: --source is always the old
/// database, --target the new one.
#[derive(Args)]
pub struct SwitchArgs {
    #[command(flatten)]
    pub source: SourceArg,
    /// The new database (the migration's target).
    #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true)]
    pub target: String,
    #[command(flatten)]
    pub pause: PauseSettings,
    /// Leave the database being switched away from writable (by default its new sessions are read-only and waiting writers are ended).
    #[arg(long)]
    pub keep_source_writable: bool,
    /// Print the steps and the current lag; pause nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
    /// For a run that computes vectors: the embedder that applies the last changes.
    #[command(flatten)]
    pub embed: EmbedSettings,
}

/// `5s`, `800ms`, `2m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = number.parse().map_err(|_| format!("not a duration: {s:?} (e.g. 5s, 800ms)"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
    /// Only these tables (glob patterns, as for migrate).
    #[arg(long, num_args = 1.., env = "PGSHIFT_TABLES", value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Check tables with more rows than this per key range, so a difference points at a range.
    #[arg(long, env = "PGSHIFT_SPLIT_ROWS", default_value_t = 500_000)]
    pub split_rows: u64,
    #[arg(long, short, env = "PGSHIFT_JOBS", default_value_t = 4)]
    pub jobs: usize,
    /// Where the source's schemas are on the target (default: the map of the source's run).
    #[command(flatten)]
    pub schemas: SchemaMapArg,
    #[command(flatten)]
    pub sqlite: SqliteArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
    /// The run to join (default: the newest run whose copy is open).
    #[arg(long, env = "PGSHIFT_RUN")]
    pub run: Option<i64>,
    /// Chunks copied at once by this process (each holds one source and one target connection).
    #[arg(long, short, env = "PGSHIFT_JOBS", default_value_t = 4)]
    pub jobs: usize,
    /// Seconds to wait for a run's copy to open (workers may start before migrate reaches its copy).
    #[arg(long, env = "PGSHIFT_WORKER_WAIT", default_value_t = 300)]
    pub wait: u64,
    /// How the embedder runs, when the run computes vectors (its model and server come from the run).
    #[command(flatten)]
    pub embed: crate::embed_args::EmbedRuntime,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArg,
    /// The source, to report the replication lag of the run's slot.
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    pub source: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
    /// Listen here for the status page, /metrics, /health and /api.
    #[arg(long, env = "PGSHIFT_API_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Turns the control API on: clients send `Authorization: Bearer <token>`. At least 16 characters.
    /// Prefer the variable (or [api] token_file): a flag is visible to other users in the process list.
    #[arg(long, env = "PGSHIFT_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    #[command(flatten)]
    pub load: LoadSettings,
    #[command(flatten)]
    pub placement: Placement,
    #[command(flatten)]
    pub follow: FollowTuning,
    #[command(flatten)]
    pub pause: PauseSettings,
    /// Once the target's run is cut over, keep its vectors current as `pgshift vectorize` does (with the
    /// run's specs, or --embed), until serve stops.
    #[arg(long, env = "PGSHIFT_VECTORIZE")]
    pub vectorize: bool,
}

#[derive(Args)]
pub struct ReembedArgs {
    #[command(flatten)]
    pub target: TargetArg,
    /// The table, its text, the vector column and the model.
    #[command(flatten)]
    pub spec: crate::embed_args::EmbedSpecArg,
    /// Rows per backfill transaction (each commits with its checkpoint).
    #[arg(long, default_value_t = 500)]
    pub batch: i64,
    /// Longest wait for the table lock of the final swap.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lock_timeout: Duration,
    #[command(flatten)]
    pub embed: EmbedRuntime,
    /// Replace the whole column (shadow column, new index, swap) even when it already holds this model's
    /// vectors; by default such a column is brought up to date in place: only rows whose text changed
    /// since their vector was made are embedded again (a scheduled re-index costs only what changed).
    #[arg(long)]
    pub full: bool,
    /// Print the steps; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EmbedTextArgs {
    /// The texts; blank ones (empty or only whitespace) print NULL, as pgshift stores them.
    #[arg(required = true)]
    pub texts: Vec<String>,
    /// all-MiniLM-L6-v2 (local), or the model name an embedding server (--url) expects.
    #[arg(long, default_value = pgshift_embed::MINILM)]
    pub model: String,
    /// An OpenAI-compatible (.../v1/embeddings) or TEI (.../embed) embedding server (repeat for several).
    #[arg(long)]
    pub url: Vec<String>,
    /// Dimensions the server's model makes.
    #[arg(long)]
    pub dims: Option<usize>,
    #[command(flatten)]
    pub embed: EmbedRuntime,
}

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub target: TargetArg,
    /// The table whose vectors to search (schema.table or table, as the target has it); a table whose
    /// vectors went to a chunk table finds chunks.
    #[arg(long)]
    pub table: String,
    /// The question (or any text): embedded by the table's recorded model, compared by cosine distance.
    pub question: String,
    /// How many rows or chunks to show.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub embed: EmbedRuntime,
}

#[derive(Args)]
pub struct VectorizeArgs {
    #[command(flatten)]
    pub target: TargetArg,
    /// Which tables get vectors and how the embedder runs (as for migrate); without --embed, the specs of
    /// the newest run recorded on the target. A vector column or pgshift's chunk table that is missing is
    /// created (the rows then wait for their vectors, oldest first).
    #[command(flatten)]
    pub embed: EmbedSettings,
    /// Stop once no row waits for its vector (a scheduled run, e.g. a Kubernetes CronJob).
    #[arg(long)]
    pub until_done: bool,
    /// Wait between looks when nothing waits (e.g. 250ms, 1s).
    #[arg(long, env = "PGSHIFT_VECTORIZE_POLL", default_value = "250ms", value_parser = parse_duration)]
    pub poll: Duration,
    /// While the database is unreachable (restart, failover), keep reconnecting this long before giving up.
    #[arg(long, env = "PGSHIFT_RECONNECT_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub reconnect_timeout: Duration,
    /// Print what it would set up (columns, chunk tables, triggers, indexes); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

/// One source of `consolidate`, as `[[sources]]` in the config or PGSHIFT_SOURCES (JSON).
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    pub url: String,
    /// Table patterns of this source (`!pattern` leaves out); empty = every table.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Columns whose type changes on the way: "assets.id=uuid".
    #[serde(default)]
    pub casts: Vec<String>,
    /// Source schema -> target schema: { public = "main" }.
    #[serde(default)]
    pub map_schema: std::collections::BTreeMap<String, String>,
}

impl SourceEntry {
    pub fn schema_map(&self) -> Result<pgshift_postgres::schema_map::SchemaMap, String> {
        pgshift_postgres::schema_map::SchemaMap::from_pairs(&self.map_schema)
    }
}

#[derive(Args)]
pub struct ConsolidateArgs {
    #[command(flatten)]
    pub target: TargetArg,
    /// The sources, a JSON array of {"url": ..., "tables": [...], "casts": [...], "map_schema": {...}};
    /// usually [[sources]] sections of the --config file.
    #[arg(long, env = "PGSHIFT_SOURCES", hide_env_values = true)]
    pub sources: String,
    #[command(flatten)]
    pub load: LoadSettings,
    /// Keys between tables of different sources: 'documents(asset_id) -> assets(id)'. Repeatable.
    #[arg(long = "foreign-key", env = "PGSHIFT_FOREIGN_KEYS", value_delimiter = ';')]
    pub foreign_keys: Vec<String>,
    /// Print every source's plan; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after the loads, keeping the slots (follow each source later).
    #[arg(long)]
    pub load_only: bool,
    #[command(flatten)]
    pub follow: FollowTuning,
    #[arg(long)]
    pub json: bool,
}
