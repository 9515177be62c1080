//! SQLite (and local libSQL files) as a pgshift source: the schema is read from the
//! file, every column gets a PostgreSQL type (declared type, the values actually
//! stored, and the user's overrides), and rows are encoded straight into binary COPY.

pub mod encode;
pub mod schema;
pub mod time;
pub mod types;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::OpenFlags;
pub use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("{0}")]
    Open(String),
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    /// A value that cannot become its PostgreSQL type; names where it is.
    #[error("table {table}, row {key}, column {column}: {message}")]
    Value { table: String, key: String, column: String, message: String },
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = SqliteError> = std::result::Result<T, E>;

/// `sqlite:///abs/path.db`, `sqlite://rel.db`, `sqlite:path.db` or `file:path.db` -> the path.
pub fn path_of(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:").or_else(|| url.strip_prefix("libsql:")).or_else(|| url.strip_prefix("file:"))?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    Some(PathBuf::from(rest.split('?').next().unwrap_or(rest)))
}

/// Opens the file read-only and checks that it is a SQLite database nobody holds locked.
pub fn open(path: &Path) -> Result<Connection> {
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(SqliteError::Open(format!("{shown} does not exist or is not a file")));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| SqliteError::Open(format!("cannot open {shown}: {e}")))?;
    conn.busy_timeout(Duration::from_secs(2)).map_err(|e| read_error(path, e))?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0)).map_err(|e| read_error(path, e))?;
    Ok(conn)
}

/// SQLite's errors, with what to do about the common ones.
pub fn read_error(path: &Path, e: rusqlite::Error) -> SqliteError {
    let shown = path.display().to_string();
    let message = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => "is not a SQLite database (check the path)".to_string(),
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            "the database is locked by another process: stop its writers, or copy it first \
             (sqlite3 FILE \".backup copy.db\") and migrate the copy"
                .to_string()
        }
        _ => e.to_string(),
    };
    SqliteError::Read { path: shown, message }
}

/// Quotes a SQLite identifier.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_files() {
        assert_eq!(path_of("sqlite:///var/app.db"), Some(PathBuf::from("/var/app.db")));
        assert_eq!(path_of("sqlite://app.db"), Some(PathBuf::from("app.db")));
        assert_eq!(path_of("sqlite:app.db?mode=ro"), Some(PathBuf::from("app.db")));
        assert_eq!(path_of("postgresql://h/db"), None);
    }
}
