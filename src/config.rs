//! The configuration file. Its values become defaults for the matching `PGSHIFT_*`
//! environment variables before the command line is parsed, so the order of
//! precedence is the usual one: flag, then environment, then file, then built-in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use pgshift_postgres::ConnInfo;
use serde::Deserialize;

/// Environment variable that names the configuration file (like `--config`).
pub const CONFIG_ENV: &str = "PGSHIFT_CONFIG";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: Option<String>,
    pub target: Option<String>,
    #[serde(default)]
    pub tables: Tables,
    #[serde(default)]
    pub copy: Copy,
    #[serde(default)]
    pub follow: Follow,
    #[serde(default)]
    pub cutover: Cutover,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub api: Api,
    #[serde(default)]
    pub embedding: Vec<crate::embed_args::EmbedSpecArg>,
    #[serde(default)]
    pub sqlite: Sqlite,
    /// Keys between tables from different source databases: "documents(asset_id) -> assets(id)".
    #[serde(default)]
    pub foreign_keys: Vec<String>,
    /// Columns whose type changes on the way: "documents.asset_id=uuid".
    #[serde(default)]
    pub casts: Vec<String>,
    /// Source schema -> target schema: { public = "main" }.
    #[serde(default)]
    pub map_schema: BTreeMap<String, String>,
    /// Several sources for `pgshift consolidate`.
    #[serde(default)]
    pub sources: Vec<crate::cli::SourceEntry>,
}

/// Settings of a SQLite source.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sqlite {
    /// `"table.column" = "jsonb"`: the target type of a column, overriding inference.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    pub reject_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tables {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    pub jobs: Option<u32>,
    pub split_rows: Option<u64>,
    pub maintenance_work_mem: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Follow {
    pub batch_rows: Option<u64>,
    pub commit_delay_ms: Option<u64>,
    pub reconnect_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cutover {
    pub timeout: Option<String>,
    pub max_lag_mb: Option<u64>,
    pub pgbouncer: Option<String>,
    pub pgbouncer_db: Option<String>,
    pub pgbouncer_ini: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub addr: Option<String>,
    pub token: Option<String>,
    /// A file holding the token (a mounted secret), so the config file can be shared.
    pub token_file: Option<String>,
}

/// The configuration file named by `--config FILE` / `--config=FILE` or `PGSHIFT_CONFIG`.
pub fn path_from(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(p.to_string());
        }
    }
    std::env::var(CONFIG_ENV).ok()
}

/// Reads and checks a configuration file. Every problem is reported, each naming its key.
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let config: Config = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let problems = config.problems();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(format!(
            "{}: {}",
            path.display(),
            problems.iter().map(|p| format!("\n  - {p}")).collect::<String>()
        ))
    }
}

impl Config {
    /// What is wrong with values that parsed, as "key: what to do" lines.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, url) in [("source", &self.source), ("target", &self.target)] {
            if let Some(url) = url {
                if let Err(e) = ConnInfo::parse(url, key) {
                    out.push(format!("{key}: {e}"));
                }
            }
        }
        for (key, patterns) in [("tables.include", &self.tables.include), ("tables.exclude", &self.tables.exclude)] {
            if let Some(p) = patterns.iter().find(|p| p.is_empty() || p.contains(',') || p.starts_with('!')) {
                out.push(format!("{key}: {p:?} is not a table pattern (schema.table or table, with * and ?; no commas, no '!')"));
            }
        }
        if self.copy.jobs == Some(0) {
            out.push("copy.jobs: must be at least 1".into());
        }
        if self.copy.split_rows == Some(0) {
            out.push("copy.split_rows: must be at least 1".into());
        }
        if self.follow.batch_rows == Some(0) {
            out.push("follow.batch_rows: must be at least 1".into());
        }
        if let Some(t) = &self.follow.reconnect_timeout {
            if let Err(e) = crate::cli::parse_duration(t) {
                out.push(format!("follow.reconnect_timeout: {e}"));
            }
        }
        if let Some(url) = &self.cutover.pgbouncer {
            if let Err(e) = pgshift_postgres::ConnInfo::parse(url, "cutover.pgbouncer") {
                out.push(e.to_string());
            }
        }
        if let Some(t) = &self.cutover.timeout {
            if let Err(e) = crate::cli::parse_duration(t) {
                out.push(format!("cutover.timeout: {e}"));
            }
        }
        for (key, addr) in [("metrics.addr", &self.metrics.addr), ("api.addr", &self.api.addr)] {
            if let Some(a) = addr {
                if a.parse::<SocketAddr>().is_err() {
                    out.push(format!("{key}: {a:?} is not an address: write host:port, e.g. 0.0.0.0:9187"));
                }
            }
        }
        if self.api.token.is_some() && self.api.token_file.is_some() {
            out.push("api.token, api.token_file: give one of them, not both".into());
        }
        if matches!(&self.api.token, Some(t) if t.len() < 16) {
            out.push("api.token: use at least 16 characters (e.g. the output of `openssl rand -hex 24`)".into());
        }
        if let Some(f) = &self.api.token_file {
            if !Path::new(f).is_file() {
                out.push(format!("api.token_file: {f} is not a readable file"));
            }
        }
        for (column, ty) in &self.sqlite.types {
            if pgshift_sqlite::types::PgType::parse(ty).is_none() {
                out.push(format!("sqlite.types.{column}: unknown type {ty:?} ({})", pgshift_sqlite::types::OVERRIDE_TYPES));
            }
            if !column.contains('.') {
                out.push(format!("sqlite.types.{column}: write the key as \"table.column\""));
            }
        }
        for k in &self.foreign_keys {
            if let Err(e) = pgshift_pipeline::plan::links::DeclaredForeignKey::parse(k) {
                out.push(format!("foreign_keys: {e}"));
            }
        }
        for (i, s) in self.sources.iter().enumerate() {
            if let Err(e) = ConnInfo::parse(&s.url, &format!("sources[{i}].url")) {
                out.push(format!("sources[{i}].url: {e}"));
            }
            for c in &s.casts {
                if let Err(e) = pgshift_pipeline::plan::casts::ColumnCast::parse(c) {
                    out.push(format!("sources[{i}].casts: {e}"));
                }
            }
            if let Err(e) = s.schema_map() {
                out.push(format!("sources[{i}].map_schema: {e}"));
            }
        }
        if let Err(e) = pgshift_postgres::schema_map::SchemaMap::from_pairs(&self.map_schema) {
            out.push(format!("map_schema: {e}"));
        }
        for c in &self.casts {
            if let Err(e) = pgshift_pipeline::plan::casts::ColumnCast::parse(c) {
                out.push(format!("casts: {e}"));
            }
        }
        for (i, e) in self.embedding.iter().enumerate() {
            out.extend(e.problems(&format!("embedding[{i}] ({})", e.table)));
        }
        out
    }

    /// The `PGSHIFT_*` variables this file sets. Token files are read here.
    pub fn environment(&self) -> Result<BTreeMap<&'static str, String>, String> {
        let mut env = BTreeMap::new();
        let mut set = |name: &'static str, value: Option<String>| {
            if let Some(v) = value {
                env.insert(name, v);
            }
        };
        set("PGSHIFT_SOURCE", self.source.clone());
        set("PGSHIFT_TARGET", self.target.clone());
        let patterns: Vec<String> =
            self.tables.include.iter().cloned().chain(self.tables.exclude.iter().map(|p| format!("!{p}"))).collect();
        set("PGSHIFT_TABLES", (!patterns.is_empty()).then(|| patterns.join(",")));
        set("PGSHIFT_JOBS", self.copy.jobs.map(|n| n.to_string()));
        set("PGSHIFT_SPLIT_ROWS", self.copy.split_rows.map(|n| n.to_string()));
        set("PGSHIFT_MAINTENANCE_WORK_MEM", self.copy.maintenance_work_mem.clone());
        set("PGSHIFT_BATCH_ROWS", self.follow.batch_rows.map(|n| n.to_string()));
        set("PGSHIFT_COMMIT_DELAY_MS", self.follow.commit_delay_ms.map(|n| n.to_string()));
        set("PGSHIFT_RECONNECT_TIMEOUT", self.follow.reconnect_timeout.clone());
        set("PGSHIFT_CUTOVER_TIMEOUT", self.cutover.timeout.clone());
        set("PGSHIFT_MAX_LAG_MB", self.cutover.max_lag_mb.map(|n| n.to_string()));
        set("PGSHIFT_PGBOUNCER", self.cutover.pgbouncer.clone());
        set("PGSHIFT_PGBOUNCER_DB", self.cutover.pgbouncer_db.clone());
        set("PGSHIFT_PGBOUNCER_INI", self.cutover.pgbouncer_ini.clone());
        set("PGSHIFT_METRICS_ADDR", self.metrics.addr.clone());
        set("PGSHIFT_API_ADDR", self.api.addr.clone());
        let types: Vec<String> = self.sqlite.types.iter().map(|(c, t)| format!("{c}={t}")).collect();
        set("PGSHIFT_SQLITE_TYPES", (!types.is_empty()).then(|| types.join(",")));
        set("PGSHIFT_REJECT_FILE", self.sqlite.reject_file.clone());
        set("PGSHIFT_SOURCES", (!self.sources.is_empty()).then(|| serde_json::to_string(&self.sources).expect("sources serialize")));
        set("PGSHIFT_CASTS", (!self.casts.is_empty()).then(|| self.casts.join(";")));
        let map: Vec<String> = self.map_schema.iter().map(|(k, v)| format!("{k}={v}")).collect();
        set("PGSHIFT_MAP_SCHEMA", (!map.is_empty()).then(|| map.join(",")));
        set("PGSHIFT_FOREIGN_KEYS", (!self.foreign_keys.is_empty()).then(|| self.foreign_keys.join(";")));
        set("PGSHIFT_EMBED", (!self.embedding.is_empty()).then(|| serde_json::to_string(&self.embedding).expect("specs serialize")));
        let token = match &self.api.token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("api.token_file: cannot read {f}: {e}"))?
                    .trim()
                    .to_string(),
            ),
            None => self.api.token.clone(),
        };
        set("PGSHIFT_API_TOKEN", token);
        Ok(env)
    }
}

/// Sets the file's values as environment defaults: a variable already set wins.
/// Runs before any thread starts, so changing the environment is sound.
pub fn apply(config: &Config) -> Result<(), String> {
    for (name, value) in config.environment()? {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.join("\n"))
        }
    }

    #[test]
    fn the_example_file_is_valid_and_sets_the_documented_variables() {
        let text = include_str!("../config/pgshift.example.toml");
        let config = parse(text).unwrap();
        let env = config.environment().unwrap();
        assert_eq!(env["PGSHIFT_JOBS"], "4");
        assert!(env["PGSHIFT_TABLES"].contains("!public.audit_log"), "{env:?}");
        assert_eq!(config.embedding.len(), 1);
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = parse("[copy]\njobs = 2\njbos = 4\n").unwrap_err();
        assert!(e.contains("jbos") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn wrong_types_and_values_name_the_key() {
        let e = parse("[copy]\njobs = \"four\"\n").unwrap_err();
        assert!(e.contains("jobs") && e.contains("line 2"), "{e}");
        let e = parse("[metrics]\naddr = \"localhost\"\n[copy]\njobs = 0\n").unwrap_err();
        assert!(e.contains("metrics.addr") && e.contains("copy.jobs"), "{e}");
        let e = parse("[[embedding]]\ntable = \"docs\"\ntext = \"body\"\ncolumn = \"v\"\ndims = 1536\n").unwrap_err();
        assert!(e.contains("embedding[0] (docs).dims"), "{e}");
        let e = parse("[[embedding]]\ntable = \"docs\"\ntext = \"body\"\ncolum = \"v\"\n").unwrap_err();
        assert!(e.contains("colum") && e.contains("line 4"), "{e}");
    }

    #[test]
    fn bad_urls_are_reported_without_their_password() {
        let e = parse("source = \"postgresql://app:hunter2@host:notaport/app\"\n").unwrap_err();
        assert!(e.starts_with("source:"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn config_path_comes_from_the_flag_first() {
        let args: Vec<String> = ["pgshift", "migrate", "--config", "a.toml"].iter().map(|s| s.to_string()).collect();
        assert_eq!(path_from(&args).as_deref(), Some("a.toml"));
        let args: Vec<String> = ["pgshift", "--config=b.toml"].iter().map(|s| s.to_string()).collect();
        assert_eq!(path_from(&args).as_deref(), Some("b.toml"));
    }
}
