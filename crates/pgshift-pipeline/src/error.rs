use pgshift_postgres::PgError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// Everything that stops a run before it writes, each with its fix.
    #[error("cannot start: {}", .0.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Preflight(Vec<String>),
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Embed(#[from] pgshift_embed::EmbedError),
    #[error(transparent)]
    Sqlite(#[from] pgshift_sqlite::SqliteError),
    /// A chunk cannot import the run's exported snapshot: the migrate holding it stopped.
    #[error(
        "{table}: the run's snapshot is gone on {endpoint} (the migrate that exported it has stopped): \
         run `pgshift migrate --resume` with the same settings; workers join its new copy"
    )]
    SnapshotGone { table: String, endpoint: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether retrying on new connections may succeed (see `PgError::is_transient`).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Postgres(e) if e.is_transient())
    }

    /// A short, secret-free name for the `kind` label of `pgshift_errors_total`.
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
            Error::State(_) => "state",
            Error::Input(_) => "input",
            Error::Embed(_) => "embedding",
            Error::Sqlite(_) => "sqlite",
            Error::SnapshotGone { .. } => "snapshot_gone",
        }
    }
}
