//! Connection strings and connections. A [`ConnInfo`] keeps the parsed URL; only its
//! redacted endpoint (`user@host:port/db`) is ever shown.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use rustls::ClientConfig;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{describe, PgError};
use crate::libpq::{self, Env};
use crate::tls::{client_config, take_options, tls_mode, TlsMode};

/// Session settings that make text forms (and so checksums) identical on both sides.
pub const STABLE_TEXT_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET search_path = pg_catalog";

#[derive(Clone)]
pub struct ConnInfo {
    config: Config,
    endpoint: String,
    tls_mode: TlsMode,
    tls: Option<Arc<ClientConfig>>,
}

impl ConnInfo {
    /// Parses a `postgresql://` URL or a `key=value` string, completed as libpq does
    /// (service file, `PG*` variables, password file: see [`crate::libpq`]). `role`
    /// ("source", "target") names the setting in errors; the error never repeats the
    /// string, which may hold a password.
    pub fn parse(url: &str, role: &str) -> Result<ConnInfo, PgError> {
        ConnInfo::parse_with(url, role, &libpq::process_env)
    }

    /// [`ConnInfo::parse`] with the environment given.
    pub fn parse_with(url: &str, role: &str, env: Env<'_>) -> Result<ConnInfo, PgError> {
        let bad = |reason: String| PgError::BadUrl { role: role.to_string(), reason };
        let (rest, mut settings) = take_options(url, &["sslmode", "sslrootcert", "service", "passfile"]);
        let mut config = Config::from_str(&rest).map_err(|e| bad(redact_reason(&e.to_string(), &rest)))?;
        // What the string set, so that the service file and the environment only fill gaps.
        let given = [
            ("host", (!config.get_hosts().is_empty()).then(String::new)),
            ("port", (!config.get_ports().is_empty()).then(String::new)),
            ("dbname", config.get_dbname().map(str::to_string)),
            ("user", config.get_user().map(str::to_string)),
            ("password", config.get_password().map(|_| String::new())),
            ("application_name", config.get_application_name().map(str::to_string)),
            ("connect_timeout", config.get_connect_timeout().map(|_| String::new())),
        ];
        for (key, value) in given {
            if let Some(v) = value {
                settings.insert(key.to_string(), v);
            }
        }
        let mut filled = settings.clone();
        libpq::fill_defaults(&mut filled, env).map_err(bad)?;
        for (key, value) in filled.iter().filter(|(k, _)| !settings.contains_key(*k)) {
            match key.as_str() {
                "host" => value.split(',').for_each(|h| {
                    config.host(h.trim());
                }),
                "port" => {
                    for p in value.split(',') {
                        config.port(p.trim().parse().map_err(|_| bad(format!("port {p:?} is not a number")))?);
                    }
                }
                "dbname" => drop(config.dbname(value)),
                "user" => drop(config.user(value)),
                "password" => drop(config.password(value.as_str())),
                "application_name" => drop(config.application_name(value)),
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| bad(format!("connect_timeout {value:?} is not a number of seconds")))?;
                    config.connect_timeout(Duration::from_secs(secs.max(2)));
                }
                _ => {}
            }
        }
        let tls_mode = tls_mode(filled.get("sslmode").map(String::as_str), filled.get("sslrootcert").map(Into::into)).map_err(bad)?;
        let tls = client_config(&tls_mode).map_err(bad)?.map(Arc::new);
        config.ssl_mode(match tls_mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::Verify { .. } => SslMode::Require,
        });
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        // Like libpq, never TLS over a Unix-domain socket: it would only fail (no host name).
        let tls = if config.get_hosts().iter().all(|h| matches!(h, Host::Unix(_))) { None } else { tls };
        if config.get_user().is_none() {
            config.user(env("USER").unwrap_or_else(|| "postgres".into()));
        }
        if config.get_application_name().is_none() {
            config.application_name("pgshift");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let mut info = ConnInfo { config, endpoint: String::new(), tls_mode, tls };
        if info.config.get_password().is_none() {
            let at = (info.host(), info.port(), info.dbname().to_string(), info.user().to_string());
            if let Some(pw) = libpq::password_from_file(filled.get("passfile").map(String::as_str), (&at.0, at.1, &at.2, &at.3), env) {
                info.config.password(pw);
            }
        }
        info.endpoint = format!("{}@{}:{}/{}", info.user(), info.host(), info.port(), info.dbname());
        Ok(info)
    }

    /// `user@host:port/db`, safe to print.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The same server and credentials, another database (e.g. template1).
    pub fn with_dbname(&self, dbname: &str) -> ConnInfo {
        let mut info = self.clone();
        info.config.dbname(dbname);
        info.endpoint = format!("{}@{}:{}/{}", info.user(), info.host(), info.port(), info.dbname());
        info
    }

    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("postgres")
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or_else(|| self.user())
    }

    pub fn password(&self) -> Option<&[u8]> {
        self.config.get_password()
    }

    pub fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        }
    }

    pub fn tls_mode(&self) -> &TlsMode {
        &self.tls_mode
    }

    /// The TLS configuration, unless `sslmode=disable`.
    pub fn tls_config(&self) -> Option<Arc<ClientConfig>> {
        self.tls.clone()
    }

    pub fn port(&self) -> u16 {
        self.config.get_ports().first().copied().unwrap_or(5432)
    }

    /// A new connection with stable text settings; failures name the endpoint and
    /// say whether the server was unreachable or refused the credentials.
    pub async fn connect(&self) -> Result<Client, PgError> {
        let client = self.connect_plain().await?;
        client.batch_execute(STABLE_TEXT_SETTINGS).await.map_err(|e| self.connect_error(&e))?;
        Ok(client)
    }

    /// [`ConnInfo::connect`], with the endpoint it reports errors against.
    pub async fn session(&self) -> Result<Session, PgError> {
        Ok(Session { client: self.connect().await?, endpoint: self.endpoint.clone() })
    }

    /// A connection without pgshift's session settings, for servers that only speak
    /// part of PostgreSQL (PgBouncer's admin console takes no SET).
    pub async fn connect_plain(&self) -> Result<Client, PgError> {
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) =
                    self.config.connect(MakeRustlsConnect::new((**tls).clone())).await.map_err(|e| self.connect_error(&e))?;
                self.drive(connection);
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(|e| self.connect_error(&e))?;
                self.drive(connection);
                client
            }
        };
        Ok(client)
    }

    fn drive<F>(&self, connection: F)
    where
        F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    {
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%endpoint, error = %describe(&e), "connection closed");
            }
        });
    }

    pub fn connect_error(&self, e: &tokio_postgres::Error) -> PgError {
        let endpoint = self.endpoint.clone();
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            if db.message().contains("pg_hba.conf") {
                return refused_by_hba(endpoint, db.message());
            }
            // 28P01 invalid_password, 28000 invalid_authorization_specification
            if code == "28P01" || code == "28000" {
                return PgError::AuthFailed { endpoint };
            }
            return PgError::Query { endpoint, context: "connect".into(), detail: describe(e), code: Some(code.into()) };
        }
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        if text.contains("password missing") {
            return PgError::AuthFailed { endpoint };
        }
        if text.contains("TLS") || text.contains("certificate") {
            return PgError::Tls { endpoint, reason: redact_reason(&text, "") };
        }
        PgError::Unreachable { endpoint, reason: redact_reason(&text, "") }
    }
}

/// A connection and its printable endpoint (`user@host:port/db`): what every statement
/// needs, to run and to say where it failed. Derefs to the client.
pub struct Session {
    client: Client,
    endpoint: String,
}

impl Session {
    /// `user@host:port/db`, safe to print.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint)
    }
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnInfo({})", self.endpoint)
    }
}

/// Runs `work` in a transaction on `client`: committed when it succeeds, rolled back
/// when it fails, so a failure leaves the database as it was. `what` names the work
/// in errors ("commit the schema").
pub async fn in_transaction<T, E: From<PgError>>(client: &Session, what: &str, work: impl std::future::Future<Output = Result<T, E>>) -> Result<T, E> {
    let endpoint = client.endpoint();
    client.batch_execute("BEGIN").await.map_err(|e| crate::error::query_error(&e, &endpoint, format!("begin {what}")))?;
    match work.await {
        Ok(v) => {
            client.batch_execute("COMMIT").await.map_err(|e| crate::error::query_error(&e, &endpoint, format!("commit {what}")))?;
            Ok(v)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// pg_hba.conf has no line for this connection: not a password problem.
pub fn refused_by_hba(endpoint: String, message: &str) -> PgError {
    PgError::Query {
        endpoint,
        context: "the server refused the connection (pg_hba.conf); if it only accepts TLS, add sslmode=require to the URL".into(),
        detail: message.to_string(),
        code: Some("28000".into()),
    }
}

/// Parser messages may quote the input; never let the raw string through.
fn redact_reason(reason: &str, url: &str) -> String {
    if !url.is_empty() && reason.contains(url) {
        return "the string could not be parsed (expected postgresql://user:password@host:port/dbname)".into();
    }
    reason.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_never_shows_the_password() {
        let c = ConnInfo::parse("postgresql://app:s3cr3t@db.example:6543/shop", "source").unwrap();
        assert_eq!(c.endpoint(), "app@db.example:6543/shop");
        assert!(!format!("{c} {c:?}").contains("s3cr3t"));
        assert_eq!(c.password(), Some(&b"s3cr3t"[..]));
    }

    #[test]
    fn unix_sockets_never_use_tls() {
        let c = ConnInfo::parse("host=/var/run/postgresql port=5432 user=app dbname=app", "target").unwrap();
        assert!(c.tls_config().is_none());
        assert!(ConnInfo::parse("postgresql://app@db.example/app", "target").unwrap().tls_config().is_some());
    }

    #[test]
    fn libpq_variables_fill_what_the_string_leaves_out() {
        let env = |name: &str| match name {
            "PGHOST" => Some("db.internal".to_string()),
            "PGPORT" => Some("6432".to_string()),
            "PGUSER" => Some("envuser".to_string()),
            "PGPASSWORD" => Some("from-env".to_string()),
            "PGSSLMODE" => Some("disable".to_string()),
            _ => None,
        };
        let c = ConnInfo::parse_with("dbname=shop", "source", &env).unwrap();
        assert_eq!(c.endpoint(), "envuser@db.internal:6432/shop");
        assert_eq!(c.password(), Some(&b"from-env"[..]));
        assert_eq!(c.tls_mode(), &TlsMode::Disable);
        // The string wins.
        let c = ConnInfo::parse_with("postgresql://app:given@h:1/db?sslmode=require", "source", &env).unwrap();
        assert_eq!((c.endpoint(), c.password()), ("app@h:1/db", Some(&b"given"[..])));
        assert_eq!(c.tls_mode(), &TlsMode::Require);
        let err = ConnInfo::parse_with("service=missing", "--source", &|_: &str| None).unwrap_err().to_string();
        assert!(err.contains("--source") && err.contains("\"missing\" is not defined"), "{err}");
    }

    #[test]
    fn bad_url_error_does_not_echo_the_input() {
        let err = ConnInfo::parse("postgresql://app:s3cr3t@host:notaport/db", "target").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("target"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}
