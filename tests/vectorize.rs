//! `pgshift vectorize` keeps a database's vectors current while the application
//! writes: after a real cutover with reverse replication (the specs the run recorded,
//! no flags), through a SIGKILL and a server restart; and on a database that was never
//! migrated (--embed), where a second vectorize refuses.

mod common;

use std::time::Duration;

use common::*;
use pgshift_embed::Embedder;
use pgshift_testkit::{Cluster, PgVersion};

fn start_vectorize(args: &[&str]) -> Background {
    let env = model_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Background::pgshift_with_env(args, &env)
}

fn metric(url: &str, name: &str) -> f64 {
    let body = common::http::get(url, None).body;
    body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Every row with text has the local model's vector of its current text; NULL and blank have none.
fn assert_current(db: &Cluster, table: &str) {
    let json = db.psql("app", &format!("SELECT json_agg(json_build_array(id, body, embedding::text) ORDER BY id) FROM {table}"));
    let rows: Vec<(i64, Option<String>, Option<String>)> = serde_json::from_str(&json).unwrap();
    let model = local_model();
    for (id, body, vector) in rows {
        match body.as_deref().filter(|b| !b.trim().is_empty()) {
            None => assert_eq!(vector, None, "{table} {id}: no text, no vector"),
            Some(text) => {
                let got = parse_vector(vector.as_deref().unwrap_or_else(|| panic!("{table} {id} has no vector")));
                let c = cosine(&got, &model.embed(&[text]).unwrap()[0]);
                assert!(c > 0.9999, "{table} {id}: cosine {c}");
            }
        }
    }
}

#[test]
fn vectors_stay_current_after_the_cutover_through_a_kill_and_a_server_restart() {
    let (old, new) = pair(PgVersion::V15, PgVersion::V16);
    old.psql(
        "app",
        "CREATE TABLE docs (id serial PRIMARY KEY, title text, body text);
         INSERT INTO docs (title, body) SELECT 'doc ' || i, 'The lighthouse keeper wrote entry number ' || i FROM generate_series(1, 20) i;
         CREATE TABLE pages (id int PRIMARY KEY, body text);
         INSERT INTO pages VALUES (1, repeat('A paragraph about harbours and ships. ', 80)), (2, 'short page')",
    );
    let (o, n) = (old.url("app"), new.url("app"));
    let run = pgshift_env;
    let out = run(&["migrate", "--source", &o, "--target", &n, "--embed", "docs.embedding=body", "--embed", "pages->page_chunks=body", "--load-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&["cutover", "--source", &o, "--target", &n, "--reverse"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = run(&["vectorize", "--target", &n, "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("public.docs.embedding") && stdout(&out).contains("public.pages -> \"public\".\"page_chunks\""), "{}", stdout(&out));
    assert!(stdout(&out).contains("CREATE TRIGGER pgshift_vectorize_stale"), "{}", stdout(&out));
    assert_eq!(new.psql("app", "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgshift_vectorize%'"), "0", "a dry run writes nothing");

    let addr = format!("127.0.0.1:{}", pgshift_testkit::free_port());
    let metrics_url = format!("http://{addr}/metrics");
    let vectorize = start_vectorize(&["vectorize", "--target", &n, "--metrics-addr", &addr]);
    wait_until("vectorize to set up", Duration::from_secs(60), || new.psql("app", "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgshift_vectorize%'") == "2");

    // The application writes to the new database.
    new.psql(
        "app",
        "INSERT INTO docs (title, body) SELECT 'new ' || i, 'Ships arrive at the harbour on day ' || i FROM generate_series(1, 30) i;
         INSERT INTO docs (title, body) VALUES ('null', NULL), ('blank', '   ');
         UPDATE docs SET body = body || ' (revised)' WHERE id BETWEEN 1 AND 5;
         UPDATE docs SET title = 'renamed' WHERE id BETWEEN 6 AND 10;
         DELETE FROM docs WHERE id IN (11, 12, 13);
         UPDATE pages SET body = 'The page now talks about lighthouses and their keepers.' WHERE id = 2;
         INSERT INTO pages VALUES (3, repeat('Tides rise and fall twice a day. ', 60));",
    );
    let untouched = new.psql("app", "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM docs WHERE id BETWEEN 14 AND 20");
    // Killed in the middle, with rows waiting; more writes while it is down.
    wait_until("some vectors", Duration::from_secs(60), || metric(&metrics_url, "pgshift_vectorize_rows_total") > 0.0);
    let _ = vectorize.stop();
    new.psql("app", "INSERT INTO docs (title, body) VALUES ('while stopped', 'Written while vectorize was down.'); UPDATE docs SET body = 'Edited while down.' WHERE id = 14");
    let addr = format!("127.0.0.1:{}", pgshift_testkit::free_port());
    let metrics_url = format!("http://{addr}/metrics");
    let vectorize = start_vectorize(&["vectorize", "--target", &n, "--metrics-addr", &addr]);
    // A second one refuses, saying why.
    wait_until("the restarted vectorize to hold its lock", Duration::from_secs(60), || metric(&metrics_url, "pgshift_vectorize_lag_seconds{") >= 0.0 && common::http::get(&metrics_url, None).body.contains("pgshift_vectorize_backlog_rows{"));
    let out = run(&["vectorize", "--target", &n]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("another pgshift vectorize already keeps the vectors"), "{}", stderr(&out));
    // The server restarts under it.
    new.stop();
    std::thread::sleep(Duration::from_secs(1));
    new.start_again();
    new.psql("app", "INSERT INTO docs (title, body) VALUES ('after restart', 'Written after the server restarted.'); UPDATE docs SET body = NULL WHERE id = 15");

    wait_until("every vector to be current", Duration::from_secs(120), || {
        new.psql("app", "SELECT count(*) FROM docs WHERE embedding IS NULL AND body ~ '[^ ]'") == "0"
            && new.psql("app", "SELECT count(*) FROM pgshift.stale_chunks") == "0"
            && metric(&metrics_url, "pgshift_vectorize_backlog_rows") == 0.0
    });
    assert_current(&new, "docs");
    let out = run(&["status", "--target", &n, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["vectorize"]["running"], true, "{status}");
    assert_eq!(status["vectorize"]["backlog"], 0, "{status}");
    assert_eq!(new.psql("app", "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM docs WHERE id BETWEEN 16 AND 20"), untouched.split(',').skip(2).collect::<Vec<_>>().join(","), "rows that did not change were not rewritten");
    let chunks = new.psql("app", "SELECT string_agg(chunk, '|' ORDER BY chunk_seq) FROM page_chunks WHERE id = 2");
    assert_eq!(chunks, "The page now talks about lighthouses and their keepers.");
    assert!(new.psql("app", "SELECT count(*) FROM page_chunks WHERE id = 3").parse::<i64>().unwrap() >= 2, "a long new page has its chunks");
    // Nothing loops: the count of embedded rows stays still once the application stops.
    let settled = metric(&metrics_url, "pgshift_vectorize_rows_total");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(metric(&metrics_url, "pgshift_vectorize_rows_total"), settled, "vectorize's own writes came back as work");
    assert_eq!(metric(&metrics_url, "pgshift_vectorize_lag_seconds"), 0.0);
    let out = vectorize.stop();
    let _ = out;

    // The old database, following back, has every row and no vector column written to.
    let out = run(&["follow", "--source", &n, "--target", &o, "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = "SELECT md5(string_agg(format('%s:%s:%s', id, title, body), ',' ORDER BY id)) FROM docs";
    assert_eq!(old.psql("app", rows), new.psql("app", rows));
    assert_eq!(old.psql("app", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'docs' AND column_name = 'embedding'"), "0");
}

#[test]
fn a_database_never_migrated_gets_its_vectors_and_one_vectorize_at_a_time() {
    let db = Cluster::start(PgVersion::V16);
    db.create_database("app");
    db.psql(
        "app",
        "CREATE EXTENSION vector; CREATE TABLE notes (id bigint PRIMARY KEY, body text);
         INSERT INTO notes SELECT i, CASE WHEN i % 10 = 0 THEN NULL ELSE 'Note number ' || i || ' about the weather' END FROM generate_series(1, 300) i;
         CREATE TABLE pages (id int PRIMARY KEY, body text);
         INSERT INTO pages VALUES (1, repeat('Winds turn west before the rain. ', 70)), (2, NULL)",
    );
    let u = db.url("app");
    let spec = "notes.embedding=body";
    let out = pgshift_env(&["vectorize", "--target", &u, "--embed", "pages->page_chunks=body", "--until-done"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // pgshift's own chunk table, made as migrate makes it: keys valid, chunks for page 1 only.
    let keys = db.psql("app", "SELECT string_agg(contype::text || ':' || convalidated, ',' ORDER BY contype) FROM pg_constraint WHERE conrelid = 'page_chunks'::regclass");
    assert_eq!(keys, "f:true,p:true");
    assert_eq!(db.psql("app", "SELECT string_agg(DISTINCT id::text, ',') FROM page_chunks"), "1");
    assert!(db.psql("app", "SELECT count(*) FROM page_chunks WHERE embedding IS NOT NULL").parse::<i64>().unwrap() >= 2);
    let out = pgshift_env(&["vectorize", "--target", &u, "--embed", spec, "--until-done", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 270, "{report}");
    let out = pgshift_env(&["status", "--target", &u]);
    assert!(stdout(&out).contains("vectorize: not running") && stdout(&out).contains("the target holds no pgshift run"), "{}", stdout(&out));
    assert_eq!(db.psql("app", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'notes'::regclass AND attname = 'embedding'"), "vector(384)");
    assert!(db.psql("app", "SELECT indexdef FROM pg_indexes WHERE tablename = 'notes' AND indexdef LIKE '%hnsw%'").contains("vector_cosine_ops"));
    assert_current(&db, "notes");
    // A scheduled run with nothing to do embeds nothing.
    db.psql("app", "UPDATE notes SET body = 'Changed ' || id WHERE id <= 3");
    let out = pgshift_env(&["vectorize", "--target", &u, "--embed", spec, "--until-done", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 3, "only the changed texts: {report}");
    assert_current(&db, "notes");
    let out = pgshift_env(&["vectorize", "--target", &u]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("give them with --embed"), "{}", stderr(&out));
}

/// `serve --vectorize` keeps the vectors once the run is done, shows it on /api/status,
/// and stops it cleanly with the server (SIGTERM).
#[test]
fn serve_runs_vectorize_after_the_run_is_done() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", "CREATE TABLE docs (id serial PRIMARY KEY, body text); INSERT INTO docs (body) VALUES ('first'), ('second')");
    let (s, t) = (source.url("app"), target.url("app"));
    let out = pgshift_env(&["migrate", "--source", &s, "--target", &t, "--embed", "docs.embedding=body", "--no-follow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let addr = format!("127.0.0.1:{}", pgshift_testkit::free_port());
    let serve = start_vectorize(&["serve", "--source", &s, "--target", &t, "--addr", &addr, "--vectorize"]);
    target.psql("app", "INSERT INTO docs (body) VALUES ('written after the move')");
    wait_until("serve's vectorize to embed the new row", Duration::from_secs(60), || {
        target.psql("app", "SELECT count(*) FROM docs WHERE embedding IS NULL") == "0"
    });
    assert_current(&target, "docs");
    let status = common::http::get(&format!("http://{addr}/api/status"), None);
    assert_eq!(status.json()["run"]["vectorize"]["running"], true, "{}", status.body);
    let term = std::process::Command::new("kill").args(["-TERM", &serve.id().to_string()]).status().unwrap();
    assert!(term.success());
    let out = serve.wait(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = pgshift_env(&["status", "--target", &t]);
    assert!(stdout(&out).contains("vectorize: not running"), "stopped with the server: {}", stdout(&out));
}
