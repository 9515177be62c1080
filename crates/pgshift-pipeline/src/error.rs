//! pgshift's errors, by what the user does about them. Every message says what went
//! wrong and what to do; the kind ([`Error::kind`]) is the `kind` label of
//! `pgshift_errors_total` and the API's `kind`, from a small, documented set
//! (docs/ARCHITECTURE.md "Errors by kind").

use pgshift_postgres::PgError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// Everything that stops a run before it writes, each with its fix.
    #[error("cannot start: {}", .0.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Preflight(Vec<String>),
    /// A flag, config value or spec that cannot work as given (`--embed`, `--tables`,
    /// `--cast`, `--map-schema`, `--pgbouncer`, `reembed` arguments, ...).
    #[error("{0}")]
    Setting(String),
    /// The runs recorded on the target do not allow this command as asked (an
    /// unfinished run without --resume, no run to follow, other settings than the
    /// run's, another process moved it on, a target too far behind to cut over).
    #[error("{0}")]
    RunState(String),
    /// The run's slot is gone or lost WAL it needed: changes since the load are lost.
    #[error("{0}")]
    SlotLost(String),
    /// A chunk cannot import the run's exported snapshot: the migrate holding it stopped.
    #[error(
        "{table}: the run's snapshot is gone on {endpoint} (the migrate that exported it has stopped): \
         run `pgshift migrate --resume` with the same settings; workers join its new copy"
    )]
    SnapshotGone { table: String, endpoint: String },
    /// Catch-up stopped at a schema change it does not make itself.
    #[error("{0}")]
    SchemaChange(String),
    /// Catch-up ended or could not go on (the stream ended, reconnects gave up).
    #[error("{0}")]
    CatchUpStopped(String),
    /// The cutover stopped inside its pause: writes resumed on the source, nothing switched.
    #[error("{0}")]
    CutoverAborted(String),
    /// After the switch, the row counts at the fence differ.
    #[error("{0}")]
    CountsDiffer(String),
    /// A PgBouncer step of the cutover failed.
    #[error("{0}")]
    Pooler(String),
    /// The source's data does not fit what was asked (rows that break a declared key,
    /// a text expression that fails on a row).
    #[error("{0}")]
    Data(String),
    /// pgshift's own state or threads: a bug, or state written by a newer pgshift.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Embed(#[from] pgshift_embed::EmbedError),
    #[error(transparent)]
    Sqlite(#[from] pgshift_sqlite::SqliteError),
    /// An error of one source of several (`consolidate`), with what to do about the run
    /// it left; its kind is the error's own.
    #[error("{of}: {error}{note}")]
    OfSource { of: String, error: Box<Error>, note: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every value [`Error::kind`] gives, in the order docs/ARCHITECTURE.md lists them.
pub const KINDS: [&str; 21] = [
    "bad_url",
    "unreachable",
    "tls",
    "auth",
    "query",
    "replication",
    "disconnected",
    "preflight",
    "bad_setting",
    "run_state",
    "slot_lost",
    "snapshot_gone",
    "schema_change",
    "catchup_stopped",
    "cutover_aborted",
    "counts_differ",
    "pooler",
    "data",
    "internal",
    "embedding",
    "sqlite",
];

impl Error {
    /// Whether retrying on new connections may succeed (see `PgError::is_transient`).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Postgres(e) => e.is_transient(),
            Error::OfSource { error, .. } => error.is_transient(),
            _ => false,
        }
    }

    /// The same error, said of one source of several; `note` follows the message.
    pub fn of_source(self, source: &str, note: String) -> Error {
        Error::OfSource { of: source.to_string(), error: Box::new(self), note }
    }

    /// A short, secret-free name for the `kind` label of `pgshift_errors_total` (one of [`KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Postgres(PgError::BadUrl { .. }) => "bad_url",
            Error::Postgres(PgError::Unreachable { .. }) => "unreachable",
            Error::Postgres(PgError::Tls { .. }) => "tls",
            Error::Postgres(PgError::AuthFailed { .. }) => "auth",
            Error::Postgres(PgError::Query { .. }) => "query",
            Error::Postgres(PgError::Protocol { .. }) => "replication",
            Error::Postgres(PgError::Disconnected { .. }) => "disconnected",
            Error::Preflight(_) => "preflight",
            Error::Setting(_) => "bad_setting",
            Error::RunState(_) => "run_state",
            Error::SlotLost(_) => "slot_lost",
            Error::SnapshotGone { .. } => "snapshot_gone",
            Error::SchemaChange(_) => "schema_change",
            Error::CatchUpStopped(_) => "catchup_stopped",
            Error::CutoverAborted(_) => "cutover_aborted",
            Error::CountsDiffer(_) => "counts_differ",
            Error::Pooler(_) => "pooler",
            Error::Data(_) => "data",
            Error::Internal(_) => "internal",
            Error::Embed(_) => "embedding",
            Error::Sqlite(_) => "sqlite",
            Error::OfSource { error, .. } => error.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_and_a_source_keeps_its_errors_kind() {
        let errors = [
            Error::Preflight(vec![]),
            Error::Setting(String::new()),
            Error::RunState(String::new()),
            Error::SlotLost(String::new()),
            Error::SnapshotGone { table: String::new(), endpoint: String::new() },
            Error::SchemaChange(String::new()),
            Error::CatchUpStopped(String::new()),
            Error::CutoverAborted(String::new()),
            Error::CountsDiffer(String::new()),
            Error::Pooler(String::new()),
            Error::Data(String::new()),
            Error::Internal(String::new()),
        ];
        for e in &errors {
            assert!(KINDS.contains(&e.kind()), "{}", e.kind());
        }
        let wrapped = Error::Setting("--tables x matches no table".into()).of_source("u@h:1/db", ". then".into());
        assert_eq!((wrapped.kind(), wrapped.to_string().as_str()), ("bad_setting", "u@h:1/db: --tables x matches no table. then"));
    }
}
