//! Cutover through PgBouncer (`cutover --pgbouncer ADMIN_URL`): the application's
//! clients reach the database through the pool, so the switch can happen there,
//! with a short delay for clients instead of errors or a read-only database.
//!
//! `PAUSE db` lets the transactions in flight finish, closes the pool's server
//! connections and holds new queries; the fence then finds no writer to wait for.
//! Once the target holds everything up to the fence, the `[databases]` entry that
//! points at the old server is rewritten to the new one in PgBouncer's
//! configuration file (the `conffile` of `SHOW CONFIG`, or `--pgbouncer-ini`),
//! `RELOAD` reads it, and `RESUME db` lets the held queries go to the new server.
//! Anything failing before the RESUME puts the file back, reloads and resumes: the
//! pool goes on with the old server. The admin console speaks only the simple query
//! protocol, which is all that is used here.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgshift_postgres::ConnInfo;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::error::{Error, Result};

/// Where the pool is, and optionally which of its databases and which file.
#[derive(Clone, Debug)]
pub struct PoolerOptions {
    /// The admin console: postgresql://USER@HOST:PORT/pgbouncer.
    pub admin: ConnInfo,
    /// The pooled database to switch; default: the one entry that points at the old database.
    pub database: Option<String>,
    /// The configuration file to rewrite; default: PgBouncer's own (`SHOW CONFIG` conffile).
    pub ini: Option<PathBuf>,
}

/// A pool ready to switch from one server to another.
pub struct PoolSwitch {
    admin: ConnInfo,
    client: Client,
    endpoint: String,
    pub database: String,
    pub ini: PathBuf,
    original: String,
    switched: String,
    paused: Option<Instant>,
    rewritten: bool,
}

async fn admin(client: &Client, endpoint: &str, command: &str) -> Result<Vec<tokio_postgres::SimpleQueryRow>> {
    let messages = client
        .simple_query(command)
        .await
        .map_err(|e| Error::Pooler(format!("PgBouncer {endpoint}: {command}: {}", pgshift_postgres::error::describe(&e))))?;
    Ok(messages.into_iter().filter_map(|m| if let SimpleQueryMessage::Row(r) = m { Some(r) } else { None }).collect())
}

impl PoolerOptions {
    /// Connects to the admin console, finds the configuration file and the entry
    /// that points at `old`, and prepares its new text. Writes nothing.
    pub async fn prepare(&self, old: &ConnInfo, new: &ConnInfo) -> Result<PoolSwitch> {
        let endpoint = self.admin.endpoint().to_string();
        let client = self.admin.connect_plain().await?;
        let ini = match &self.ini {
            Some(p) => p.clone(),
            None => admin(&client, &endpoint, "SHOW CONFIG")
                .await?
                .iter()
                .find(|r| r.get(0) == Some("conffile"))
                .and_then(|r| r.get(1).map(PathBuf::from))
                .ok_or_else(|| Error::Pooler(format!("PgBouncer {endpoint} does not report its conffile: give the file with --pgbouncer-ini")))?,
        };
        let original = std::fs::read_to_string(&ini)
            .map_err(|e| Error::Setting(format!("--pgbouncer: cannot read PgBouncer's configuration {}: {e} (give it with --pgbouncer-ini)", ini.display())))?;
        writable(&ini)?;
        let database = match &self.database {
            Some(d) => d.clone(),
            None => entry_for(&original, old).map_err(|e| Error::Setting(format!("--pgbouncer: {}: {e}", ini.display())))?,
        };
        let switched = repoint(&original, &database, new).map_err(|e| Error::Setting(format!("--pgbouncer: {}: {e}", ini.display())))?;
        Ok(PoolSwitch { admin: self.admin.clone(), client, endpoint, database, ini, original, switched, paused: None, rewritten: false })
    }
}

fn writable(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map(|_| ())
        .map_err(|e| Error::Setting(format!("--pgbouncer: pgshift must be able to write PgBouncer's configuration {}: {e}", path.display())))
}

impl PoolSwitch {
    /// Holds new queries once the transactions in flight finished (waits at most `timeout`).
    pub async fn pause(&mut self, timeout: Duration) -> Result<()> {
        let command = format!("PAUSE {}", self.database);
        self.paused = Some(Instant::now());
        match tokio::time::timeout(timeout, admin(&self.client, &self.endpoint, &command)).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(Error::Pooler(format!(
                "PgBouncer {}: PAUSE {} did not finish within {} ms (a long transaction through the pool?)",
                self.endpoint,
                self.database,
                timeout.as_millis()
            ))),
        }
    }

    /// Points the entry at the new server and reloads.
    pub async fn repoint(&mut self) -> Result<()> {
        write_replacing(&self.ini, &self.switched)?;
        self.rewritten = true;
        admin(&self.client, &self.endpoint, "RELOAD").await?;
        Ok(())
    }

    /// Lets the held queries go on; returns how long clients waited.
    pub async fn resume(&mut self) -> Result<Duration> {
        admin(&self.client, &self.endpoint, &format!("RESUME {}", self.database)).await?;
        Ok(self.paused.take().map(|p| p.elapsed()).unwrap_or_default())
    }

    /// After a failure: the old entry back, reloaded, and the pool resumed (best effort,
    /// each step reported if it fails). On a new console session: the first may still
    /// wait for a PAUSE that did not finish.
    pub async fn undo(&mut self) {
        match self.admin.connect_plain().await {
            Ok(client) => self.client = client,
            Err(e) => tracing::error!("{e}: run RESUME {} on the PgBouncer console", self.database),
        }
        if self.rewritten {
            if let Err(e) = write_replacing(&self.ini, &self.original) {
                tracing::error!("PgBouncer {}: could not restore {}: {e}; restore the [databases] entry {} by hand", self.endpoint, self.ini.display(), self.database);
            }
            if let Err(e) = admin(&self.client, &self.endpoint, "RELOAD").await {
                tracing::error!("{e}");
            }
            self.rewritten = false;
        }
        if self.paused.is_some() {
            if let Err(e) = self.resume().await {
                tracing::error!("{e}: run RESUME {} on the PgBouncer console", self.database);
            }
        }
    }
}

/// Replaces the file's content through a new file in the same directory, keeping its
/// permissions, so PgBouncer never reads half a file.
fn write_replacing(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("pgshift-new");
    let fail = |e: std::io::Error| Error::Pooler(format!("write {}: {e}", path.display()));
    std::fs::write(&tmp, text).map_err(fail)?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions()).map_err(fail)?;
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
    }
    std::fs::rename(&tmp, path).map_err(fail)
}

/// One `[databases]` entry: its line, name and settings.
type Entry = (usize, String, Vec<(String, String)>);

/// The `[databases]` section's entries.
fn entries(ini: &str) -> Vec<Entry> {
    let mut in_databases = false;
    let mut out = Vec::new();
    for (i, line) in ini.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_databases = t.eq_ignore_ascii_case("[databases]");
            continue;
        }
        if !in_databases || t.is_empty() || t.starts_with(';') || t.starts_with('#') {
            continue;
        }
        if let Some((name, settings)) = t.split_once('=') {
            out.push((i, name.trim().to_string(), parse_settings(settings)));
        }
    }
    out
}

/// `key=value key='quoted value'` pairs.
fn parse_settings(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.trim().chars().peekable();
    while chars.peek().is_some() {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_string();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\'' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        value.push('\'');
                    }
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| !c.is_whitespace()).collect();
        }
        out.push((key, value));
    }
    out
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// The one entry whose server is `old` (host, port and database).
fn entry_for(ini: &str, old: &ConnInfo) -> std::result::Result<String, String> {
    let get = |s: &[(String, String)], k: &str| s.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let matching: Vec<String> = entries(ini)
        .into_iter()
        .filter(|(_, name, s)| {
            let host = get(s, "host").unwrap_or_else(|| "localhost".into());
            let same_host = host == old.host() || (is_loopback(&host) && is_loopback(&old.host()));
            let port = get(s, "port").and_then(|p| p.parse::<u16>().ok()).unwrap_or(5432);
            let dbname = get(s, "dbname").unwrap_or_else(|| name.clone());
            same_host && port == old.port() && dbname == old.dbname()
        })
        .map(|(_, name, _)| name)
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("no [databases] entry points at {}: name the pooled database with --pgbouncer-db", old.endpoint())),
        many => Err(format!("several [databases] entries point at {} ({}): name one with --pgbouncer-db", old.endpoint(), many.join(", "))),
    }
}

/// The file with `database`'s entry pointing at `new` (its other settings kept).
fn repoint(ini: &str, database: &str, new: &ConnInfo) -> std::result::Result<String, String> {
    let (line, _, mut settings) =
        entries(ini).into_iter().find(|(_, name, _)| name == database).ok_or_else(|| format!("no [databases] entry {database}"))?;
    let quote = |v: &str| if v.is_empty() || v.contains([' ', '\'']) { format!("'{}'", v.replace('\'', "''")) } else { v.to_string() };
    for (key, value) in [("host", new.host()), ("port", new.port().to_string()), ("dbname", new.dbname().to_string())] {
        settings.retain(|(k, _)| k != key);
        settings.push((key.to_string(), value));
    }
    let text = settings.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect::<Vec<_>>().join(" ");
    let mut lines: Vec<String> = ini.lines().map(str::to_string).collect();
    lines[line] = format!("{database} = {text}");
    Ok(lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = "[databases]\n; the app\napp = host=127.0.0.1 port=5433 dbname=app pool_size=20\nreports = host=10.0.0.9 dbname=app\nother = host=localhost port=5433 dbname='my db'\n\n[pgbouncer]\nlisten_port = 6432\n";

    fn conn(url: &str) -> ConnInfo {
        ConnInfo::parse_with(url, "test", &|_: &str| None).unwrap()
    }

    #[test]
    fn the_entry_pointing_at_the_old_server_is_found_and_repointed() {
        assert_eq!(entry_for(INI, &conn("postgresql://u@localhost:5433/app")).unwrap(), "app");
        assert!(entry_for(INI, &conn("postgresql://u@h:5433/app")).unwrap_err().contains("--pgbouncer-db"));
        assert_eq!(entry_for(INI, &conn("postgresql://u@10.0.0.9/app")).unwrap(), "reports");
        let out = repoint(INI, "app", &conn("postgresql://u@new.internal:6543/shop")).unwrap();
        assert!(out.contains("app = pool_size=20 host=new.internal port=6543 dbname=shop\n"), "{out}");
        assert!(out.contains("reports = host=10.0.0.9 dbname=app") && out.contains("listen_port = 6432"), "{out}");
        let out = repoint(INI, "other", &conn("postgresql://u@h:1/x")).unwrap();
        assert!(out.contains("other = host=h port=1 dbname=x"), "{out}");
        assert_eq!(parse_settings("dbname='my ''db''' host=x"), vec![("dbname".into(), "my 'db'".into()), ("host".into(), "x".into())]);
    }
}
