//! pgshift: move a live PostgreSQL database into a pgvector PostgreSQL.

mod cli;
mod config;
mod embed_args;
mod jobs;
mod output;
mod progress;
mod server;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Parser;
use cli::{Cli, Command, ConfigCommand, ServeArgs, SwitchArgs};
use pgshift_pipeline::cutover::CutoverOptions;
use pgshift_pipeline::catchup::FollowOptions;
use pgshift_pipeline::source::sqlite::SqliteReading;
use pgshift_pipeline::source::Source;
use pgshift_pipeline::verify::VerifyOptions;
use pgshift_postgres::ConnInfo;

fn main() -> ExitCode {
    // The file's values become PGSHIFT_* defaults before clap reads the environment.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("config") {
        if let Some(path) = config::path_from(&args) {
            if let Err(e) = config::load(std::path::Path::new(&path)).and_then(|c| config::apply(&c)) {
                eprintln!("pgshift: error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let cli = Cli::parse();
    warn_of_passwords_in_arguments(&args);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PGSHIFT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        // Colours only for a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    pgshift_pipeline::metrics::init();
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
    if let (Some(addr), false) = (&cli.metrics_addr, matches!(cli.command, Command::Serve(_))) {
        let local = server::spawn(addr, "metrics", server::metrics_routes()).await?;
        tracing::info!("metrics at http://{local}/metrics");
    }
    let result = dispatch(cli.command, progress).await;
    if let Err(e) = &result {
        if let Some(e) = e.downcast_ref::<pgshift_pipeline::error::Error>() {
            pgshift_pipeline::metrics::count_error(e);
        }
    }
    result
}

async fn dispatch(command: Command, progress: Arc<dyn pgshift_pipeline::progress::Progress>) -> Result<ExitCode> {
    match command {
        Command::Inspect(a) if pgshift_sqlite::path_of(&a.source.source).is_some() => {
            if !a.casts.is_empty() {
                bail!("--cast is for PostgreSQL sources: a SQLite column's type is set with --sqlite-type TABLE.COLUMN=TYPE");
            }
            let Source::Sqlite(source) = source_of(&a.source.source, &a.sqlite)? else { unreachable!("a SQLite path") };
            emit(a.json, &source.read_schema().await?, output::print_sqlite_inspect)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(a) => {
            let source = ConnInfo::parse(&a.source.source, "--source")?;
            let target = a.target.as_deref().map(|t| ConnInfo::parse(t, "--target")).transpose()?;
            if !a.sqlite.types.is_empty() {
                bail!("--sqlite-type is for SQLite sources: a PostgreSQL column's type on the target is set with --cast TABLE.COLUMN=TYPE");
            }
            let casts = cli::parse_all(&a.casts, pgshift_pipeline::plan::casts::ColumnCast::parse)?;
            let report = pgshift_pipeline::source::inspect::inspect(&source, target.as_ref(), a.count, (&a.schemas.map()?, &casts)).await?;
            emit(a.json, &report, output::print_inspect)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(a) => {
            let source = source_of(&a.source.source, &a.sqlite)?;
            if let Source::Sqlite(_) = source {
                if !a.placement.casts.is_empty() {
                    bail!("--cast is for PostgreSQL sources: a SQLite column's type is set with --sqlite-type TABLE.COLUMN=TYPE");
                }
                if !a.placement.foreign_keys.is_empty() {
                    bail!("--foreign-key: a SQLite load adds no declared keys; declare it on the PostgreSQL source's migrate, run after this load");
                }
            }
            let target = ConnInfo::parse(&a.target.target, "--target")?;
            let options = pgshift_pipeline::plan::MigrateOptions {
                dry_run: a.dry_run,
                resume: a.resume,
                follow: !a.no_follow,
                extensions_in_template1: a.extensions_in_template1,
                owners: !a.no_owner,
                privileges: !a.no_privileges,
                create_roles: a.roles,
                ..a.placement.apply(a.load.options()?)?
            };
            let report = pgshift_pipeline::load::migrate(&source, &target, &options, progress.clone()).await?;
            emit(a.json, &report, output::print_migrate)?;
            if let (Source::Postgres(source), true) = (&source, options.follow && !a.load_only && !a.dry_run) {
                let follow = FollowOptions { embedding: options.embedding.clone(), ..a.follow.options() };
                let report = pgshift_pipeline::catchup::follow(source.conn(), &target, &follow, progress).await?;
                emit(a.json, &report, output::print_follow)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(a) => {
            if pgshift_sqlite::path_of(&a.source.source).is_some() {
                bail!("a SQLite file is read only by the migrate that loads it (with --jobs 1 or more): workers copy from PostgreSQL sources");
            }
            let source = ConnInfo::parse(&a.source.source, "--source")?;
            let target = ConnInfo::parse(&a.target.target, "--target")?;
            let wait = std::time::Duration::from_secs(a.wait);
            let Some(open) = pgshift_pipeline::load::worker::join(&target, a.run, wait, &*progress).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            let embedding = a.embed.setup_for(open.embeddings.iter().map(embed_args::EmbedSpecArg::from_spec).collect())?;
            progress.step(&format!("joined run {} (copy from {})", open.run.run_id, open.run.source));
            let report = pgshift_pipeline::load::worker::work((&source, &target), &open, (a.jobs, wait), embedding.as_ref(), progress).await?;
            emit(a.json, &report, output::print_worker)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Follow(a) => {
            let source = ConnInfo::parse(&a.source.source, "--source")?;
            let target = ConnInfo::parse(&a.target.target, "--target")?;
            let options = FollowOptions { embedding: a.embed.setup_for_run(&source, &target).await?, ..a.tuning.options() };
            let report = pgshift_pipeline::catchup::follow(&source, &target, &options, progress).await?;
            emit(a.json, &report, output::print_follow)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cutover(a) => switch(&a.switch, a.reverse, false).await,
        Command::Rollback(a) => switch(&a, false, true).await,
        Command::Verify(a) => {
            let source = source_of(&a.source.source, &a.sqlite)?;
            let target = ConnInfo::parse(&a.target.target, "--target")?;
            let options = VerifyOptions { patterns: a.tables, split_rows: a.split_rows, jobs: a.jobs.max(1), schema_map: a.schemas.map()? };
            let report = pgshift_pipeline::verify::verify(&source, &target, &options).await?;
            emit(a.json, &report, output::print_verify)?;
            Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Status(a) => {
            let target = ConnInfo::parse(&a.target.target, "--target")?;
            let source = a.source.as_deref().map(|s| ConnInfo::parse(s, "--source")).transpose()?;
            let report = pgshift_pipeline::run::status::status(source.as_ref(), &target).await?;
            emit(a.json, &report, output::print_status)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => serve(a, progress).await,
        Command::Consolidate(a) => consolidate(a, progress).await,
        Command::Embed(a) => {
            let spec = embed_args::EmbedSpecArg::for_texts(&a.model, a.url.clone(), a.dims);
            let setup = a.embed.setup_for(vec![spec])?.expect("one spec");
            let texts = a.texts;
            // The model runs on this thread's CPU: off the async runtime.
            let (texts, vectors) = tokio::task::spawn_blocking(move || {
                let wanted: Vec<&str> = texts.iter().map(String::as_str).filter(|t| !pgshift_pipeline::embed::is_blank(t)).collect();
                let vectors = setup.embedder.embed(&wanted);
                vectors.map(|v| (texts, v))
            })
            .await??;
            let mut vectors = vectors.into_iter();
            for text in &texts {
                match pgshift_pipeline::embed::is_blank(text) {
                    true => println!("NULL"),
                    false => println!("{}", pgshift_pipeline::embed::vector_literal(vectors.next()).unwrap_or_default()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Vectorize(a) => {
            let target = ConnInfo::parse(&a.target.target, "--target")?;
            let Some(setup) = vectorize_setup(&a.embed, &target).await? else {
                anyhow::bail!(
                    "vectorize: no run on {} recorded embedding specs: give them with --embed (e.g. --embed 'docs.embedding=title || body')",
                    target.endpoint()
                );
            };
            let options = pgshift_pipeline::vectorize::VectorizeOptions {
                setup,
                poll: a.poll,
                until_done: a.until_done,
                reconnect_timeout: a.reconnect_timeout,
                dry_run: a.dry_run,
            };
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("vectorize: stopping after this round");
                let _ = stop.send(true);
            });
            let report = pgshift_pipeline::vectorize::vectorize(&target, &options, stopped).await?;
            emit(a.json, &report, output::print_vectorize)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Search(a) => {
            let target = ConnInfo::parse(&a.target.target, "--target")?;
            let (spec, table) = pgshift_pipeline::embed::search::recorded_spec(&target, &a.table).await?;
            let setup = a.embed.setup_for(vec![embed_args::EmbedSpecArg::from_spec(&spec)])?.expect("one spec");
            let question = a.question.clone();
            let vector = tokio::task::spawn_blocking(move || setup.embedder.embed(&[question.as_str()])).await??.remove(0);
            let report = pgshift_pipeline::embed::search::search(&target, &spec, &table, vector, a.limit.max(1)).await?;
            emit(a.json, &report, output::print_search)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reembed(a) => {
            let target = ConnInfo::parse(&a.target.target, "--target")?;
            let setup = a.embed.setup_for(vec![a.spec.clone()])?.expect("one spec");
            let options = pgshift_pipeline::embed::reembed::ReembedOptions {
                setup,
                batch_rows: a.batch.max(1),
                dry_run: a.dry_run,
                lock_timeout_ms: a.lock_timeout.as_millis() as u64,
                index_memory_mb: a.embed.vector_index_memory,
                full: a.full,
            };
            let report = pgshift_pipeline::embed::reembed::reembed(&target, &options, progress).await?;
            emit(a.json, &report, output::print_reembed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => match config::load(std::path::Path::new(&file)) {
            Ok(c) => {
                println!("{file}: ok ({} setting(s), {} embedding section(s))", c.environment().map_err(anyhow::Error::msg)?.len(), c.embedding.len());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("pgshift: {e}");
                Ok(ExitCode::from(1))
            }
        },
    }
}

async fn consolidate(a: cli::ConsolidateArgs, progress: Arc<dyn pgshift_pipeline::progress::Progress>) -> Result<ExitCode> {
    let target = ConnInfo::parse(&a.target.target, "--target")?;
    let entries: Vec<cli::SourceEntry> =
        serde_json::from_str(&a.sources).map_err(|e| anyhow::anyhow!("--sources / PGSHIFT_SOURCES: not a JSON array of sources ({e})"))?;
    if entries.is_empty() {
        bail!("--sources: name at least one source ([[sources]] in the config)");
    }
    // Casts and schema maps belong to one source: set at the top they would be ignored.
    for (var, key) in [("PGSHIFT_CASTS", "casts"), ("PGSHIFT_MAP_SCHEMA", "map_schema")] {
        if std::env::var(var).is_ok_and(|v| !v.trim().is_empty()) {
            bail!("consolidate: {key} ({var}) applies per source: move it into the [[sources]] section it belongs to");
        }
    }
    let mut sources = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if pgshift_sqlite::path_of(&e.url).is_some() {
            bail!("sources[{i}].url: consolidate follows PostgreSQL sources; load a SQLite database first with `pgshift migrate --source sqlite://... --map-schema main=NAME`");
        }
        sources.push(pgshift_pipeline::load::consolidate::SourcePlan {
            source: ConnInfo::parse(&e.url, &format!("sources[{i}].url"))?,
            tables: e.tables.clone(),
            casts: cli::parse_all(&e.casts, pgshift_pipeline::plan::casts::ColumnCast::parse)?,
            schema_map: e.schema_map().map_err(|err| anyhow::anyhow!("sources[{i}].map_schema: {err}"))?,
        });
    }
    let base = pgshift_pipeline::plan::MigrateOptions {
        dry_run: a.dry_run,
        foreign_keys: cli::parse_all(&a.foreign_keys, pgshift_pipeline::plan::links::DeclaredForeignKey::parse)?,
        ..a.load.options()?
    };
    let follow = FollowOptions { embedding: base.embedding.clone(), ..a.follow.options() };
    let follow = (!a.load_only).then_some(&follow);
    let report = pgshift_pipeline::load::consolidate::consolidate(&sources, &target, &base, follow, progress).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.loads.iter().for_each(output::print_migrate);
        report.follows.iter().for_each(output::print_follow);
    }
    Ok(ExitCode::SUCCESS)
}

/// The source a URL names: a SQLite file (read with `sqlite`'s settings) or a
/// PostgreSQL database.
fn source_of(url: &str, sqlite: &cli::SqliteArgs) -> Result<Source> {
    let reading = SqliteReading { overrides: sqlite.overrides()?, reject_file: sqlite.reject_file.clone() };
    Ok(Source::parse(url, reading)?)
}

async fn serve(a: ServeArgs, progress: Arc<dyn pgshift_pipeline::progress::Progress>) -> Result<ExitCode> {
    let source = ConnInfo::parse(&a.source.source, "--source")?;
    let target = ConnInfo::parse(&a.target.target, "--target")?;
    let token = a.api_token.filter(|t| !t.is_empty());
    if token.as_ref().is_some_and(|t| t.len() < 16) {
        bail!("the API token is too short: use at least 16 characters (e.g. `openssl rand -hex 24`)");
    }
    if token.is_none() {
        eprintln!("pgshift: the control API is off (no PGSHIFT_API_TOKEN): serving the status page, /metrics and /health only");
    }
    let load = a.placement.apply(a.load.options()?)?;
    // Without --embed, a run already on the target brings its own embedding settings.
    let embedding = match &load.embedding {
        Some(setup) => Some(setup.clone()),
        None => a.load.embed.setup_for_run(&source, &target).await.unwrap_or_else(|e| {
            eprintln!("pgshift: warning: cannot read the embedding settings of a run on the target ({e}); follow and cutover use --embed");
            None
        }),
    };
    let follow = FollowOptions { embedding: embedding.clone(), ..a.follow.options() };
    let cutover = CutoverOptions { embedding, ..a.pause.options()? };
    let target_for_vectorize = target.clone();
    let control = Arc::new(jobs::Control::new((source, target), token, (load, follow, cutover), progress));
    let listener = server::bind(&a.addr, "pgshift serve").await?;
    eprintln!("pgshift: serving on http://{}/", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let vectorize = a.vectorize.then(|| tokio::spawn(vectorize_after_cutover(target_for_vectorize, a.load.embed.clone(), stopped)));
    axum::serve(listener, server::serve_routes(control))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        })
        .await?;
    if let Some(task) = vectorize {
        let _ = task.await;
    }
    Ok(ExitCode::SUCCESS)
}

/// What vectorize keeps: `--embed` when given, else the specs of the newest run on the
/// target that recorded any (None: there are none yet).
async fn vectorize_setup(embed: &embed_args::EmbedSettings, target: &ConnInfo) -> Result<Option<pgshift_pipeline::plan::embedding::EmbeddingSetup>> {
    if !embed.embed.is_empty() {
        return embed.setup();
    }
    let recorded = pgshift_pipeline::run::newest_specs_on_target(target).await?;
    embed.runtime.setup_for(recorded.iter().map(embed_args::EmbedSpecArg::from_spec).collect())
}

/// `serve --vectorize`: once the target's newest run is cut over (or loaded without
/// catch-up), keeps its vectors current until the server stops. Its errors are
/// logged and end it (`status` shows it stopped); a restart of serve starts it again.
async fn vectorize_after_cutover(target: ConnInfo, embed: embed_args::EmbedSettings, stop: tokio::sync::watch::Receiver<bool>) {
    let ready = async {
        loop {
            let status = pgshift_pipeline::run::status::status(None, &target).await?;
            if status.phase == Some(pgshift_pipeline::run::Phase::Done) {
                if let Some(setup) = vectorize_setup(&embed, &target).await? {
                    return Ok::<_, anyhow::Error>(setup);
                }
            }
            let mut stop = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = stop.changed() => anyhow::bail!("stopped before a run was cut over"),
            }
        }
    };
    let setup = match ready.await {
        Ok(setup) => setup,
        Err(e) => return tracing::info!("vectorize: {e:#}"),
    };
    let options = pgshift_pipeline::vectorize::VectorizeOptions {
        setup,
        poll: std::time::Duration::from_millis(250),
        until_done: false,
        reconnect_timeout: std::time::Duration::from_secs(3600),
        dry_run: false,
    };
    match pgshift_pipeline::vectorize::vectorize(&target, &options, stop).await {
        Ok(r) => tracing::info!("vectorize: stopped after {} row(s)", r.rows),
        Err(e) => {
            pgshift_pipeline::metrics::count_error(&e);
            tracing::error!("vectorize stopped: {e}");
        }
    }
}

/// Ctrl-C, or SIGTERM (what `docker stop` and Kubernetes send).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Cutover (old -> new) or rollback (new -> old, so the roles swap).
async fn switch(a: &SwitchArgs, reverse: bool, rollback: bool) -> Result<ExitCode> {
    let old = ConnInfo::parse(&a.source.source, "--source")?;
    let new = ConnInfo::parse(&a.target, "--target")?;
    let (from, to) = if rollback { (&new, &old) } else { (&old, &new) };
    let options = CutoverOptions {
        keep_source_writable: a.keep_source_writable,
        reverse,
        rollback,
        dry_run: a.dry_run,
        embedding: a.embed.setup_for_run(from, to).await?,
        ..a.pause.options()?
    };
    let report = pgshift_pipeline::cutover::cutover(from, to, &options).await?;
    emit(a.json, &report, output::print_cutover)?;
    Ok(ExitCode::SUCCESS)
}

/// A password written into a flag is visible to every user of the machine (`ps`):
/// say so once, with the ways to keep it off the command line.
fn warn_of_passwords_in_arguments(args: &[String]) {
    let exposed = args.iter().skip(1).any(|a| {
        let value = a.split_once('=').filter(|(k, _)| k.starts_with("--")).map_or(a.as_str(), |(_, v)| v);
        let in_url = value.starts_with("postgres") && value.split_once("://").is_some_and(|(_, rest)| rest.split('@').next().is_some_and(|u| u.contains(':')) && rest.contains('@'));
        in_url || value.split_whitespace().any(|kv| kv.starts_with("password="))
    });
    if exposed {
        eprintln!(
            "pgshift: warning: a password on the command line is visible to every user of this machine (ps); \
             use PGPASSWORD, ~/.pgpass, a service file, or PGSHIFT_SOURCE/PGSHIFT_TARGET instead"
        );
    }
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
