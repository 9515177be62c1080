//! A run killed mid-copy continues with --resume and ends identical to the source.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pgshift_testkit::PgVersion;

#[test]
fn resume_after_sigkill_mid_copy_converges() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    // The table without a key is the largest, so it is copied first and split by ctid.
    source.psql(
        "app",
        "CREATE TABLE logs AS SELECT i AS n, repeat(md5(i::text), 4) AS line FROM generate_series(1, 600000) i; ALTER TABLE logs REPLICA IDENTITY FULL; \
         CREATE TABLE events (id bigint PRIMARY KEY, body text); \
         INSERT INTO events SELECT i, md5(i::text) FROM generate_series(1, 400000) i; \
         CREATE INDEX events_body_idx ON events (body); ANALYZE",
    );
    let (s, t) = (source.url("app"), target.url("app"));
    let args = ["migrate", "--source", &s, "--target", &t, "--jobs", "1", "--split-rows", "50000"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgshift")).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let has_state = target.psql("app", "SELECT to_regclass('pgshift.chunks') IS NOT NULL") == "t";
        if has_state && target.psql("app", "SELECT count(done_at) FROM pgshift.chunks").parse::<i64>().unwrap() >= 3 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "pgshift finished before it could be killed");
        assert!(Instant::now() < deadline, "no chunk finished in time");
        std::thread::sleep(Duration::from_millis(30));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (done, total) = {
        let r = target.psql("app", "SELECT count(done_at) || ' ' || count(*) FROM pgshift.chunks");
        let v: Vec<i64> = r.split(' ').map(|x| x.parse().unwrap()).collect();
        (v[0], v[1])
    };
    assert!(done < total, "the kill came too late to test anything ({done} of {total} chunks)");
    assert_eq!(target.psql("app", "SELECT phase FROM pgshift.runs"), "copy");

    // Without --resume the unfinished run is pointed out, not overwritten.
    let out = pgshift_expect(2, &["migrate", "--source", &s, "--target", &t]);
    assert!(stderr(&out).contains("pass --resume"), "{}", stderr(&out));

    // Changes after L0, some of which the re-read chunks will already hold: catch-up
    // must apply them idempotently until it passes the re-reads.
    source.psql(
        "app",
        "UPDATE events SET body = 'changed' WHERE id % 1000 = 0; DELETE FROM events WHERE id % 1000 = 1; \
         INSERT INTO events SELECT i, 'new' FROM generate_series(400001, 401000) i",
    );
    let resume = ["migrate", "--source", &s, "--target", &t, "--jobs", "2", "--split-rows", "50000", "--resume", "--until-caught-up"];
    pgshift_expect(0, &resume);
    let out = verify(&source, &target, &[]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(target.psql("app", "SELECT count(*) FROM logs"), "600000");
    assert_eq!(target.psql("app", "SELECT count(*) FROM events WHERE body = 'changed'"), "400");
    assert_eq!(target.psql("app", "SELECT phase FROM pgshift.runs"), "loaded");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_indexes WHERE indexname IN ('events_pkey', 'events_body_idx')"), "2");
    // The slot created at the start (and its L0) survives: one slot, the run's.
    let slot = target.psql("app", "SELECT slot_name FROM pgshift.runs");
    assert_eq!(source.psql("app", "SELECT string_agg(slot_name, ',') FROM pg_replication_slots"), slot);
}
