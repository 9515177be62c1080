//! `pgshift worker`: other processes copy a run's chunks. The queue is the target's
//! pgshift.chunks; a worker killed mid-chunk gives its chunk back, a coordinator that
//! dies leaves a run `--resume` finishes, and the result matches the source exactly.

mod common;

use std::time::Duration;

use common::*;
use pgshift_embed::Embedder;
use pgshift_testkit::{Cluster, PgVersion};

const FIXTURE: &str = "CREATE TABLE events (id bigint PRIMARY KEY, body text); \
     INSERT INTO events SELECT i, repeat(md5(i::text), 8) FROM generate_series(1, 500000) i; \
     CREATE TABLE logs AS SELECT i AS n, repeat(md5(i::text), 8) AS line FROM generate_series(1, 300000) i; \
     ALTER TABLE logs REPLICA IDENTITY FULL; ANALYZE";

/// Count and md5 of every row, in key order, computed by each server itself.
fn checksum(c: &Cluster, table: &str, order: &str) -> String {
    c.psql("app", &format!("SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY {order})) FROM {table} t"))
}

fn assert_same(source: &Cluster, target: &Cluster) {
    for (table, order) in [("events", "id"), ("logs", "n, line")] {
        assert_eq!(checksum(source, table, order), checksum(target, table, order), "{table} differs");
    }
}

fn copy_open(target: &Cluster) -> bool {
    target.psql("app", "SELECT to_regclass('pgshift.copy_tables') IS NOT NULL") == "t" && target.psql("app", "SELECT count(*) > 0 FROM pgshift.copy_tables") == "t"
}

/// pgshift with the local model's settings: a run with vectors needs the embedder on every worker.
fn pgshift(args: &[&str]) -> Background {
    let env = model_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Background::pgshift_with_env(args, &env)
}

fn worker(s: &str, t: &str, jobs: &str, wait: &str) -> Background {
    pgshift(&["worker", "--source", s, "--target", t, "--jobs", jobs, "--wait", wait])
}

/// A table locked on the target by a session of the test: a chunk of it, once
/// claimed, waits for the lock, so a worker is sure to be killed mid-chunk.
struct HeldLock {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl HeldLock {
    fn take(target: &Cluster, table: &str) -> HeldLock {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = runtime.block_on(async {
            let client = target.connect("app").await;
            client.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).await.unwrap();
            client
        });
        HeldLock { runtime, client }
    }

    fn release(self) {
        self.runtime.block_on(self.client.batch_execute("ROLLBACK")).unwrap();
    }
}

#[test]
fn workers_copy_the_chunks_and_one_killed_mid_chunk_loses_nothing() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", FIXTURE);
    let (s, t) = (source.url("app"), target.url("app"));
    // The coordinator copies nothing itself: every chunk goes through workers.
    // Vectors too: the worker that takes the docs chunk embeds it with the run's model.
    source.psql("app", "CREATE TABLE docs (id int PRIMARY KEY, body text); INSERT INTO docs SELECT i, 'a note about ' || i FROM generate_series(1, 300) i");
    let coordinator = pgshift(&["migrate", "--source", &s, "--target", &t, "--jobs", "0", "--split-rows", "40000", "--until-caught-up", "--embed", "docs.embedding=body"]);
    // A worker started before the copy opens waits for it.
    let mut doomed = worker(&s, &t, "1", "60");
    let steady = worker(&s, &t, "1", "60");
    wait_until("the copy to open", Duration::from_secs(120), || copy_open(&target));
    let lock = HeldLock::take(&target, "events");
    // Writes after the snapshot: catch-up brings them once the workers are done.
    source.psql("app", "UPDATE events SET body = 'changed' WHERE id % 997 = 0; DELETE FROM logs WHERE n % 991 = 0");

    // Kill one worker while it holds a chunk (its heartbeat says which).
    let me = format!("%:{}", doomed.id());
    let held = |target: &Cluster| target.psql("app", &format!("SELECT copying[1] FROM pgshift.workers WHERE worker LIKE '{me}' AND cardinality(copying) > 0"));
    wait_until("the worker to hold a chunk", Duration::from_secs(60), || held(&target).starts_with("public.events#"));
    let status = pgshift_expect(0, &["status", "--target", &t, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let workers = report["workers"].as_array().unwrap();
    assert!(workers.len() >= 3, "the coordinator and both workers report: {report}");
    assert!(workers.iter().any(|w| w["jobs"] == 0), "the coordinator copies nothing: {report}");
    assert!(workers.iter().all(|w| w["gone"] == false), "every process reported just now: {report}");
    let killed_holding = held(&target);
    assert!(doomed.running(), "the worker ended before it could be killed");
    let _ = doomed.stop();
    lock.release();

    // Another worker joins; the killed worker's chunk goes back to the queue.
    let late = worker(&s, &t, "2", "60");
    let out = coordinator.wait(Duration::from_secs(300));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for w in [steady, late] {
        let out = w.wait(Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(0), "a worker ends by itself when every chunk is done: {}", stderr(&out));
        assert!(stdout(&out).contains("every chunk is copied"), "{}", stdout(&out));
    }
    let (chunk_table, chunk_no) = killed_holding.split_once('#').unwrap();
    assert_eq!(
        target.psql("app", &format!("SELECT done_at IS NOT NULL FROM pgshift.chunks WHERE table_name = '{chunk_table}' AND chunk_no = {chunk_no}")),
        "t",
        "the chunk the killed worker held ({killed_holding}) was copied by another"
    );
    assert_eq!(target.psql("app", "SELECT count(*) FROM pgshift.chunks WHERE done_at IS NULL"), "0");
    assert_same(&source, &target);
    assert_verified(&source, &target);
    // A worker started (or restarted by its Job) after the copy ended has nothing to do, and says so.
    let late = pgshift_expect(0, &["worker", "--source", &s, "--target", &t, "--wait", "1"]);
    assert!(stderr(&late).contains("nothing for a worker to do"), "{}", stderr(&late));
    let model = local_model();
    for id in [1, 150, 300] {
        let vector = parse_vector(&target.psql("app", &format!("SELECT embedding::text FROM docs WHERE id = {id}")));
        let want = &model.embed(&[&format!("a note about {id}")]).unwrap()[0];
        assert!(cosine(&vector, want) > 0.9999, "docs {id}: the worker's vector is the model's");
    }
}

#[test]
fn a_dead_coordinators_run_is_resumed_and_its_workers_say_what_happened() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", FIXTURE);
    let (s, t) = (source.url("app"), target.url("app"));
    let args = ["migrate", "--source", &s, "--target", &t, "--jobs", "0", "--split-rows", "40000", "--until-caught-up"];
    let coordinator = pgshift(&args);
    wait_until("the copy to open", Duration::from_secs(120), || copy_open(&target));
    let mut helper = worker(&s, &t, "1", "3");
    wait_until("a chunk done", Duration::from_secs(60), || target.psql("app", "SELECT count(done_at) > 0 FROM pgshift.chunks") == "t");
    // The coordinator dies: the snapshot it exported is gone with it.
    let _ = coordinator.stop();
    let left: i64 = target.psql("app", "SELECT count(*) FROM pgshift.chunks WHERE done_at IS NULL").parse().unwrap();
    assert!(left > 1, "the kill came too late to test anything");
    wait_until("the worker to stop", Duration::from_secs(60), || !helper.running());
    let out = helper.wait(Duration::from_secs(1));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("snapshot is gone") && stderr(&out).contains("--resume"), "{}", stderr(&out));

    source.psql("app", "UPDATE events SET body = 'after' WHERE id % 1001 = 0");
    let mut resume = args.to_vec();
    resume.push("--resume");
    let coordinator = pgshift(&resume);
    let helper = worker(&s, &t, "2", "60");
    let out = coordinator.wait(Duration::from_secs(300));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(helper.wait(Duration::from_secs(60)).status.code(), Some(0));
    assert_same(&source, &target);
    assert_verified(&source, &target);
}

#[test]
fn a_sqlite_file_is_never_left_to_workers() {
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    let dir = std::env::temp_dir().join(format!("pgshift-workers-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("app.db");
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'x')").unwrap();
    let (s, t) = (format!("sqlite://{}", db.display()), target.url("app"));
    let out = pgshift_expect(2, &["migrate", "--source", &s, "--target", &t, "--jobs", "0"]);
    assert!(stderr(&out).contains("--jobs 0") && stderr(&out).contains("--jobs 1 or more"), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT to_regclass('pgshift.runs') IS NULL AND to_regclass('public.notes') IS NULL"), "t", "nothing was written");
    let out = pgshift_expect(2, &["worker", "--source", &s, "--target", &t]);
    assert!(stderr(&out).contains("SQLite file is read only by the migrate"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}
