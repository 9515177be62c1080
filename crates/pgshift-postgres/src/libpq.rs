//! libpq's conventions for where connection settings come from, so that what works
//! for `psql` works for pgshift: the connection string first, then the service file
//! entry it (or `PGSERVICE`) names, then the `PG*` environment variables, then the
//! defaults; a password missing from all of them is looked up in the password file
//! (`passfile=`, `PGPASSFILE`, `~/.pgpass`). Passwords can so stay off the command
//! line, where every user of the machine could read them in `ps`.
//!
//! The environment is passed in ([`Env`]), so that tests never touch the process's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The settings this module resolves (libpq's names).
pub const KEYS: &[&str] = &["host", "port", "dbname", "user", "password", "sslmode", "sslrootcert", "application_name", "connect_timeout", "passfile"];

/// Which environment variable sets which setting.
const ENV: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("application_name", "PGAPPNAME"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("passfile", "PGPASSFILE"),
];

/// Reads an environment variable.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Fills the settings `given` lacks from the service file entry (`service` in
/// `given`, else `PGSERVICE`), then from the environment. Errors name the service or
/// file, never a value.
pub fn fill_defaults(given: &mut BTreeMap<String, String>, env: Env<'_>) -> Result<(), String> {
    let service = given.remove("service").or_else(|| env("PGSERVICE"));
    if let Some(name) = service {
        let entry = service_entry(&name, env)?;
        for (k, v) in entry {
            given.entry(k).or_insert(v);
        }
    }
    for (key, var) in ENV {
        if !given.contains_key(*key) {
            if let Some(v) = env(var) {
                given.insert(key.to_string(), v);
            }
        }
    }
    Ok(())
}

fn home(env: Env<'_>) -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

/// The settings of service `name`: from `PGSERVICEFILE` (or `~/.pg_service.conf`),
/// else from `PGSYSCONFDIR/pg_service.conf` (or `/etc/postgresql-common/pg_service.conf`).
fn service_entry(name: &str, env: Env<'_>) -> Result<BTreeMap<String, String>, String> {
    let user_file = env("PGSERVICEFILE").map(PathBuf::from).or_else(|| home(env).map(|h| h.join(".pg_service.conf")));
    let system_file = env("PGSYSCONFDIR").map_or_else(|| PathBuf::from("/etc/postgresql-common"), PathBuf::from).join("pg_service.conf");
    let mut looked = Vec::new();
    for file in user_file.into_iter().chain([system_file]) {
        looked.push(file.display().to_string());
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        if let Some(entry) = parse_service(&text, name).map_err(|e| format!("{}: {e}", file.display()))? {
            return Ok(entry);
        }
    }
    Err(format!("service {name:?} is not defined in {}", looked.join(" or ")))
}

/// The `[name]` section of a service file, if there is one.
fn parse_service(text: &str, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
    let mut section: Option<&str> = None;
    let mut found: Option<BTreeMap<String, String>> = None;
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if found.is_some() {
                break;
            }
            section = Some(s.trim());
            if section == Some(name) {
                found = Some(BTreeMap::new());
            }
            continue;
        }
        let Some(entry) = found.as_mut().filter(|_| section == Some(name)) else { continue };
        let (k, v) = line.split_once('=').ok_or_else(|| format!("line {}: expected key=value", no + 1))?;
        let key = k.trim();
        if key == "service" {
            return Err(format!("line {}: a service cannot name another service", no + 1));
        }
        entry.insert(key.to_string(), v.trim().to_string());
    }
    Ok(found)
}

/// The password for (host, port, dbname, user) from the password file: `passfile`
/// (a setting), else `~/.pgpass`. Like libpq, a file others can read is ignored
/// (with a warning), and `*` matches anything.
pub fn password_from_file(passfile: Option<&str>, (host, port, dbname, user): (&str, u16, &str, &str), env: Env<'_>) -> Option<String> {
    let path = passfile.map(PathBuf::from).or_else(|| home(env).map(|h| h.join(".pgpass")))?;
    let text = std::fs::read_to_string(&path).ok()?;
    if !private(&path) {
        tracing::warn!("password file {} has group or world access and is ignored: chmod 0600 it", path.display());
        return None;
    }
    // A Unix-socket directory counts as "localhost", as in libpq.
    let host = if host.starts_with('/') { "localhost" } else { host };
    let port = port.to_string();
    text.lines().filter(|l| !l.trim_start().starts_with('#')).find_map(|line| {
        let fields = split_pgpass(line);
        let [h, p, d, u, password] = fields.as_slice() else { return None };
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        (matches(h, host) && matches(p, &port) && matches(d, dbname) && matches(u, user)).then(|| password.clone())
    })
}

fn private(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o077 == 0).unwrap_or(false)
}

/// A `.pgpass` line's five fields, with `\:` and `\\` unescaped.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().expect("one field").extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_string_wins_over_the_service_which_wins_over_the_environment() {
        let dir = std::env::temp_dir().join(format!("pgshift-libpq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("services.conf");
        std::fs::write(&file, "# ours\n[other]\nhost=elsewhere\n[app]\nhost = db.internal\nport=6432\ndbname=shop\n").unwrap();
        let env = env_of(&[("PGSERVICEFILE", file.to_str().unwrap()), ("PGHOST", "envhost"), ("PGUSER", "envuser"), ("PGPASSWORD", "pw")]);
        let mut given: BTreeMap<String, String> = [("service", "app"), ("dbname", "given")].map(|(k, v)| (k.to_string(), v.to_string())).into();
        fill_defaults(&mut given, &env).unwrap();
        assert_eq!(given.get("dbname").map(String::as_str), Some("given"));
        assert_eq!(given.get("host").map(String::as_str), Some("db.internal"));
        assert_eq!(given.get("port").map(String::as_str), Some("6432"));
        assert_eq!(given.get("user").map(String::as_str), Some("envuser"));
        assert_eq!(given.get("password").map(String::as_str), Some("pw"));
        let mut missing: BTreeMap<String, String> = [("service".to_string(), "nope".to_string())].into();
        let err = fill_defaults(&mut missing, &env).unwrap_err();
        assert!(err.contains("\"nope\" is not defined") && err.contains("services.conf"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_password_file_matches_like_libpq_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pgshift-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(&file, "# comment\ndb.example:5432:shop:app:first\n*:*:*:app:wild\\:card\nlocalhost:5433:*:*:sock\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = env_of(&[]);
        let path = file.to_str();
        assert_eq!(password_from_file(path, ("db.example", 5432, "shop", "app"), &env).as_deref(), Some("first"));
        assert_eq!(password_from_file(path, ("other", 1, "x", "app"), &env).as_deref(), Some("wild:card"));
        assert_eq!(password_from_file(path, ("/tmp", 5433, "x", "bob"), &env).as_deref(), Some("sock"));
        assert_eq!(password_from_file(path, ("other", 1, "x", "bob"), &env), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(password_from_file(path, ("db.example", 5432, "shop", "app"), &env), None, "readable by others: ignored");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
