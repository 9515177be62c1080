use std::fmt;

/// Errors from talking to PostgreSQL. Every message names the server by its redacted
/// endpoint (never the password) and, where we know it, what to change.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid connection URL for {role}: {reason}")]
    BadUrl { role: String, reason: String },
    #[error("cannot reach {endpoint}: {reason}. Check the host and port, and that the server is running and accepts TCP connections")]
    Unreachable { endpoint: String, reason: String },
    #[error("TLS with {endpoint} failed: {reason}. Check sslmode, and that sslrootcert names the CA certificate that signed the server's")]
    Tls { endpoint: String, reason: String },
    #[error("authentication failed for {endpoint}: check the user name and the password (given in the connection string, PGPASSWORD, the password file ~/.pgpass or PGPASSFILE, or a service file)")]
    AuthFailed { endpoint: String },
    #[error("{endpoint}: {context}: {detail}")]
    Query { endpoint: String, context: String, detail: String, code: Option<String> },
    #[error("{endpoint}: replication protocol: {message}")]
    Protocol { endpoint: String, message: String },
    /// The connection went away (server shut down or restarted, session terminated,
    /// network): worth reconnecting.
    #[error("{endpoint}: connection lost: {reason}")]
    Disconnected { endpoint: String, reason: String },
}

impl PgError {
    /// The SQLSTATE of a server error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Query { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Whether the same work may succeed on a new connection a little later: the
    /// server was unreachable, went away, is starting up or shutting down, ended the
    /// session, or still holds the previous session's slot.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Unreachable { .. } | PgError::Disconnected { .. } => true,
            // 08: connection exceptions; 57P01/02/03: admin or crash shutdown, starting up;
            // 55006: the slot is still active for the session being replaced; 53300: too many connections.
            PgError::Query { code: Some(c), .. } => c.starts_with("08") || ["57P01", "57P02", "57P03", "55006", "53300"].contains(&c.as_str()),
            _ => false,
        }
    }
}

/// A server error as one line: message, detail and hint, with no connection secrets
/// (tokio-postgres errors never carry the password).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// Adds "which server, doing what" to query errors.
pub trait Context<T> {
    fn context(self, endpoint: &dyn fmt::Display, what: impl FnOnce() -> String) -> Result<T, PgError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, endpoint: &dyn fmt::Display, what: impl FnOnce() -> String) -> Result<T, PgError> {
        self.map_err(|e| query_error(&e, endpoint, what()))
    }
}

/// A server error with "which server, doing what".
pub fn query_error(e: &tokio_postgres::Error, endpoint: &dyn fmt::Display, what: String) -> PgError {
    if e.is_closed() || (e.as_db_error().is_none() && e.code().is_none() && std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())) {
        return PgError::Disconnected { endpoint: endpoint.to_string(), reason: format!("{what}: {}", describe(e)) };
    }
    PgError::Query { endpoint: endpoint.to_string(), context: what, detail: describe(e), code: e.code().map(|c| c.code().to_string()) }
}
