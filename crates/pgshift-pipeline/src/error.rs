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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
