//! Operating pgshift: metrics that move with the run, the token-guarded control API,
//! the configuration file, and no secret in any of their output.

mod common;

use std::time::Duration;

use common::http::{get, post, sample};
use common::*;
use pgshift_testkit::{free_port, PgVersion, PASSWORD};

const FIXTURE: &str = "
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 1200) i;
CREATE TABLE tags (id int PRIMARY KEY, label text);
INSERT INTO tags SELECT i, 'tag ' || i FROM generate_series(1, 30) i;
";

const TOKEN: &str = "test-token-0123456789abcdef";

fn metrics(port: u16) -> String {
    let reply = get(&format!("http://127.0.0.1:{port}/metrics"), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

#[test]
fn metrics_move_as_the_run_moves() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", FIXTURE);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (s, t) = (source.url("app"), target.url("app"));
    let run = Background::pgshift(&["migrate", "--source", &s, "--target", &t, "--split-rows", "500", "--metrics-addr", &addr]);

    wait_until("phase catch-up in /metrics", Duration::from_secs(60), || {
        sample(&get(&format!("http://{addr}/metrics"), None).body, "pgshift_phase{phase=\"catch-up\"}") == Some(1.0)
    });
    let m = metrics(port);
    assert_eq!(sample(&m, "pgshift_rows_copied_total{table=\"public.items\"}"), Some(1200.0), "{m}");
    assert_eq!(sample(&m, "pgshift_rows_copied_total{table=\"public.tags\"}"), Some(30.0), "{m}");
    let total = sample(&m, "pgshift_chunks_total").unwrap();
    assert!(total >= 3.0, "items is split into ranges: {m}");
    assert_eq!(sample(&m, "pgshift_chunks_done"), Some(total), "{m}");
    assert_eq!(sample(&m, "pgshift_phase{phase=\"copy\"}"), Some(0.0), "{m}");
    assert!(sample(&m, "pgshift_bytes_copied_total{table=\"public.items\"}").unwrap() > 1200.0 * 8.0, "{m}");
    assert!(sample(&m, "pgshift_index_builds_done").unwrap() >= 2.0, "two primary keys: {m}");
    let inserts_before = sample(&m, "pgshift_applied_changes_total{op=\"insert\"}").unwrap();

    source.psql("app", "INSERT INTO items SELECT i, 'late ' || i FROM generate_series(5001, 5025) i; DELETE FROM tags WHERE id <= 3");
    wait_until("the changes in /metrics", Duration::from_secs(30), || {
        let m = metrics(port);
        sample(&m, "pgshift_applied_changes_total{op=\"insert\"}") == Some(inserts_before + 25.0)
            && sample(&m, "pgshift_applied_changes_total{op=\"delete\"}") == Some(3.0)
    });
    let m = metrics(port);
    assert!(sample(&m, "pgshift_apply_batch_seconds_count").unwrap() >= 1.0, "{m}");
    assert_eq!(get(&format!("http://{addr}/health"), None).status, 200);
    for secret in [PASSWORD, "postgresql://", &source.port.to_string()] {
        assert!(!m.contains(secret), "/metrics shows {secret:?}:\n{m}");
    }
    run.stop();
}

#[test]
fn the_control_api_needs_the_token_and_reveals_no_secret() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", FIXTURE);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (s, t) = (source.url("app"), target.url("app"));
    let addr = format!("127.0.0.1:{port}");
    // The settings that place tables (here a schema map, as a config file's map_schema sets it) hold for API runs too.
    let env = [
        ("PGSHIFT_LOG", "debug"),
        ("PGSHIFT_API_TOKEN", TOKEN),
        ("PGSHIFT_SOURCE", s.as_str()),
        ("PGSHIFT_TARGET", t.as_str()),
        ("PGSHIFT_MAP_SCHEMA", "public=served"),
    ];
    let server = Background::pgshift_with_env(&["serve", "--addr", &addr], &env);
    wait_until("pgshift serve to listen", Duration::from_secs(20), || get(&format!("{base}/health"), None).status == 200);

    // Missing, wrong, near-miss and misplaced tokens all get the same bare 401.
    let refused = get(&format!("{base}/api/plan"), None);
    assert_eq!(refused.status, 401, "{}", refused.body);
    for token in ["wrong-token-0123456789abcdef", &TOKEN[..TOKEN.len() - 1], &format!("{TOKEN}x"), ""] {
        let reply = get(&format!("{base}/api/plan"), Some(token));
        assert_eq!((reply.status, reply.body.as_str()), (401, refused.body.as_str()), "token {token:?}");
    }
    assert_eq!(get(&format!("{base}/api/plan?token={TOKEN}"), None).status, 401, "a token in the URL is not accepted");
    assert_eq!(post(&format!("{base}/api/migrate"), None, serde_json::json!({})).status, 401);
    assert_eq!(post(&format!("{base}/api/cutover"), Some("nope-nope-nope-nope"), serde_json::json!({})).status, 401);
    let body = refused.json();
    assert_eq!(body["error"], "unauthorized", "{body}");

    // Progress is read-only: it needs no token.
    let status = get(&format!("{base}/api/status"), None);
    assert_eq!(status.status, 200, "{}", status.body);
    let mut keys: Vec<String> = status.json().as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["control_api", "job", "run", "source", "target"], "GET /api/status as docs/JSON.md shows it");
    assert_eq!(status.json()["control_api"], true, "{}", status.body);
    assert_eq!(status.json()["run"]["has_run"], false, "{}", status.body);
    let plan = get(&format!("{base}/api/plan"), Some(TOKEN));
    assert_eq!(plan.status, 200, "{}", plan.body);
    assert_eq!(plan.json()["plan"].as_array().unwrap().len(), 2, "{}", plan.body);
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_tables WHERE tablename = 'items'"), "0", "the plan writes nothing");
    let bad = post(&format!("{base}/api/migrate"), Some(TOKEN), serde_json::json!({ "resum": true }));
    assert_eq!(bad.status, 400, "unknown fields are refused: {}", bad.body);

    let started = post(&format!("{base}/api/migrate"), Some(TOKEN), serde_json::json!({}));
    assert_eq!(started.status, 202, "{}", started.body);
    assert_eq!(started.json()["state"], "running");
    let again = post(&format!("{base}/api/migrate"), Some(TOKEN), serde_json::json!({}));
    assert_eq!(again.status, 409, "one job at a time: {}", again.body);
    wait_until("the API run to follow", Duration::from_secs(60), || {
        let s = get(&format!("{base}/api/status"), Some(TOKEN)).json();
        s["run"]["phase"] == "loaded" && s["run"]["following"] == true
    });
    let s = get(&format!("{base}/api/status"), Some(TOKEN)).json();
    assert_eq!(s["run"]["chunks_done"], s["run"]["chunks_total"], "{s}");
    assert_eq!(s["job"]["state"], "running", "the job follows changes: {s}");

    let dry = post(&format!("{base}/api/cutover"), Some(TOKEN), serde_json::json!({ "dry_run": true }));
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.json()["dry_run"], true);
    let cut = post(&format!("{base}/api/cutover"), Some(TOKEN), serde_json::json!({}));
    assert_eq!(cut.status, 200, "{}", cut.body);
    wait_until("the job to end with the run", Duration::from_secs(30), || {
        get(&format!("{base}/api/status"), Some(TOKEN)).json()["job"]["state"] == "succeeded"
    });
    assert_verified(&source, &target);
    assert_eq!(target.psql("app", "SELECT string_agg(DISTINCT schemaname, ',') FROM pg_tables WHERE tablename = 'items'"), "served");

    let everything: String = ["/metrics", "/health", "/"]
        .iter()
        .map(|p| get(&format!("{base}{p}"), None).body)
        .chain([status.body, plan.body, dry.body, cut.body])
        .collect();
    let (stdout, stderr) = server.printed();
    assert!(stderr.contains("DEBUG"), "the debug log was on: {stderr}");
    for secret in [PASSWORD, TOKEN] {
        assert!(!everything.contains(secret), "an HTTP answer shows {secret:?}");
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "the log shows {secret:?}");
    }
    server.stop();
}

#[test]
fn without_a_token_the_api_is_off_but_health_and_metrics_answer() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let env = [("PGSHIFT_LOG", "warn")];
    // Nothing listens at these databases: serve starts anyway, the API stays off.
    let url = format!("postgresql://app:{PASSWORD}@127.0.0.1:1/app");
    let server = Background::pgshift_with_env(&["serve", "--addr", &addr, "--source", &url, "--target", &url], &env);
    wait_until("pgshift serve to listen", Duration::from_secs(20), || get(&format!("http://{addr}/health"), None).status == 200);
    for (method, path) in [("GET", "/api/plan"), ("POST", "/api/migrate"), ("POST", "/api/cutover")] {
        let url = format!("http://{addr}{path}");
        let reply = if method == "GET" { get(&url, Some(TOKEN)) } else { post(&url, Some(TOKEN), serde_json::json!({})) };
        assert_eq!(reply.status, 403, "{path}: {}", reply.body);
        assert!(reply.json()["error"].as_str().unwrap().contains("PGSHIFT_API_TOKEN"), "{path}: {}", reply.body);
    }
    // Progress needs no token: here it answers with why it cannot read the run.
    let status = get(&format!("http://{addr}/api/status"), None);
    assert_eq!((status.status, status.json()["kind"].as_str()), (502, Some("unreachable")), "{}", status.body);
    assert!(!status.body.contains(PASSWORD), "{}", status.body);
    assert!(get(&format!("http://{addr}/metrics"), None).body.contains("pgshift_phase"));
    let out = server.stop();
    assert!(stderr(&out).contains("control API is off"), "{}", stderr(&out));
}

#[test]
fn config_file_settings_yield_to_environment_and_flags() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", FIXTURE);
    let dir = std::env::temp_dir().join(format!("pgshift-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgshift.toml");
    let text = format!(
        "source = \"{}\"\ntarget = \"{}\"\n[tables]\ninclude = [\"public.*\"]\nexclude = [\"tags\"]\n[copy]\njobs = 2\nsplit_rows = 400\n",
        source.url("app"),
        target.url("app")
    );
    std::fs::write(&file, text).unwrap();
    let f = file.to_str().unwrap();

    let out = pgshift_expect(0, &["config", "check", f]);
    assert!(stdout(&out).contains("ok"), "{}", stdout(&out));
    let out = pgshift_expect(0, &["migrate", "--config", f, "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables: Vec<&str> = plan["plan"].as_array().unwrap().iter().map(|p| p["table"].as_str().unwrap()).collect();
    assert_eq!(tables, ["public.items"], "exclude left tags out");
    assert_eq!(plan["plan"][0]["chunks"].as_array().unwrap().len(), 3, "split_rows 400 over 1200 rows");

    // A flag beats the file.
    let out = pgshift_expect(0, &["migrate", "--config", f, "--dry-run", "--json", "--split-rows", "100000"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["plan"][0]["chunks"].as_array().unwrap().len(), 1);

    // A variable beats the file (PGSHIFT_CONFIG names the file, too).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["migrate", "--dry-run", "--json"])
        .env("PGSHIFT_CONFIG", f)
        .env("PGSHIFT_TABLES", "tags")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["plan"][0]["table"], "public.tags");

    std::fs::write(&file, "[copy]\njobs = 2\njbos = 4\n[metrics]\naddr = \"nowhere\"\n").unwrap();
    let out = pgshift_expect(1, &["config", "check", f]);
    assert!(stderr(&out).contains("jbos") && stderr(&out).contains("line 3"), "{}", stderr(&out));
    let out = pgshift_expect(2, &["migrate", "--config", f, "--dry-run"]);
    assert!(stderr(&out).contains("jbos"), "a broken file stops every command: {}", stderr(&out));
    std::fs::write(&file, format!("source = \"postgresql://app:{PASSWORD}@h:x/app\"\n[metrics]\naddr = \"nowhere\"\n")).unwrap();
    let out = pgshift_expect(1, &["config", "check", f]);
    assert!(stderr(&out).contains("source:") && stderr(&out).contains("metrics.addr"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `keys:` line under the docs/JSON.md heading that contains `heading`.
fn documented_keys(heading: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/JSON.md")).unwrap();
    let section = doc.split("\n## ").find(|s| s.lines().next().unwrap().contains(heading)).unwrap_or_else(|| panic!("no section {heading}"));
    let line = section.lines().find_map(|l| l.trim_start_matches("- ").strip_prefix("keys: ").or_else(|| l.split("→ keys: ").nth(1)));
    line.unwrap_or_else(|| panic!("no keys line under {heading}")).split(", ").map(|k| k.trim().to_string()).collect()
}

fn keys_of(json: &[u8]) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_slice(json).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(json)));
    value.as_object().unwrap().keys().cloned().collect()
}

fn assert_shape(heading: &str, json: &[u8]) {
    let (mut documented, mut actual) = (documented_keys(heading), keys_of(json));
    documented.sort();
    actual.sort();
    assert_eq!(actual, documented, "{heading}: the JSON output and docs/JSON.md disagree");
}

#[test]
fn json_reports_have_the_documented_shape() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", FIXTURE);
    let (s, t) = (source.url("app"), target.url("app"));
    let both = ["--source", s.as_str(), "--target", t.as_str(), "--json"];
    let run = |command: &[&str], extra: &[&str]| pgshift_expect(0, &[command, &both[..], extra].concat()).stdout;

    assert_shape("pgshift inspect", &run(&["inspect"], &[]));
    assert_shape("pgshift migrate", &run(&["migrate"], &["--dry-run"]));
    assert_shape("pgshift migrate", &run(&["migrate"], &["--load-only"]));
    source.psql("app", "UPDATE tags SET label = 'x' WHERE id = 1");
    assert_shape("pgshift follow", &run(&["follow"], &["--until-caught-up"]));
    assert_shape("pgshift verify", &run(&["verify"], &[]));
    assert_shape("pgshift status", &run(&["status"], &[]));
    assert_shape("pgshift cutover", &run(&["cutover"], &["--dry-run"]));
    let status: serde_json::Value = serde_json::from_slice(&run(&["status"], &[])).unwrap();
    assert_eq!(status["phase"], "loaded", "{status}");
    assert_eq!(status["lag_bytes"].as_u64().map(|_| ()), Some(()), "lag with --source: {status}");
}
