//! Cutover under a live pgbench workload: the target ends identical to the source,
//! sequences continue, the source is fenced, the slot is gone.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use pgshift_testkit::{Cluster, PgVersion, PASSWORD};

fn pgbench(source: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new(source.bin_dir().join("pgbench"));
    cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p", &source.port.to_string()]).args(args).arg("app").env("PGPASSWORD", PASSWORD);
    cmd
}

#[test]
fn cutover_under_pgbench_ends_with_identical_databases() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    let init = pgbench(&source, &["-i", "-s", "2", "-q"]).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    // pgbench_history has no key; it is insert-only, so FULL identity costs nothing.
    source.psql("app", "ALTER TABLE pgbench_history REPLICA IDENTITY FULL; CREATE TABLE orders (id bigserial PRIMARY KEY, note text)");
    let workload = "\\set aid random(1, 200000)\n\\set delta random(-5000, 5000)\n\
        UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n\
        INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, now());\n\
        INSERT INTO orders (note) VALUES ('order');\n";
    let script = std::env::temp_dir().join(format!("pgshift-bench-{}.sql", std::process::id()));
    std::fs::write(&script, workload).unwrap();
    let bench = pgbench(&source, &["-n", "-T", "60", "-c", "4", "-R", "300", "-f", script.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _bench = Background::adopt(bench);

    // migrate loads and then follows until the cutover finishes the run.
    let (s, t) = (source.url("app"), target.url("app"));
    let migrating = Background::pgshift(&["migrate", "--source", &s, "--target", &t, "--jobs", "2"]);
    wait_until("the load to finish and catch-up to start", Duration::from_secs(120), || {
        target.psql("app", "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgshift' AND tablename = 'runs'") == "1"
            && target.psql("app", "SELECT count(*) FROM pgshift.runs WHERE phase = 'loaded'") == "1"
            && source.psql("app", "SELECT count(*) FROM pg_replication_slots WHERE active") == "1"
    });
    std::thread::sleep(Duration::from_secs(2));

    let dry = pgshift_expect(0, &["cutover", "--source", &s, "--target", &t, "--dry-run"]);
    assert!(stdout(&dry).contains("LOCK TABLE"), "{}", stdout(&dry));
    assert_eq!(target.psql("app", "SELECT phase FROM pgshift.runs"), "loaded");

    let out = pgshift_expect(0, &["cutover", "--source", &s, "--target", &t, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["write_pause_ms"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["source_read_only"], true);
    let orders = report["counts"].as_array().unwrap().iter().find(|c| c["table"] == "public.orders").cloned().unwrap();
    assert!(orders["source_rows"].as_i64().unwrap() > 0, "pgbench wrote nothing: {report}");

    // The follower saw the run end and stopped cleanly.
    let followed = migrating.wait(Duration::from_secs(30));
    assert!(followed.status.success(), "{}", stderr(&followed));

    assert_verified(&source, &target);
    assert_eq!(target.psql("app", "SELECT phase FROM pgshift.runs"), "done");
    assert_eq!(source.psql("app", "SELECT count(*) FROM pg_replication_slots"), "0");
    assert_eq!(source.psql("app", "SELECT count(*) FROM pg_publication"), "0");
    // Sequences continue past the source's values on the target.
    let max = source.psql("app", "SELECT max(id) FROM orders").parse::<i64>().unwrap();
    assert!(target.psql("app", "SELECT nextval('orders_id_seq')").parse::<i64>().unwrap() > max);
    // New sessions on the old database cannot write.
    let write = Command::new(source.bin_dir().join("psql"))
        .args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-p", &source.port.to_string(), "-d", "app", "-c", "INSERT INTO orders (note) VALUES ('late')"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&write.stderr).contains("read-only transaction"), "{write:?}");
    let _ = std::fs::remove_file(script);
}

#[test]
fn cutover_with_reverse_replication_then_rollback_returns_to_the_old_database() {
    let (old, new) = pair(PgVersion::V15, PgVersion::V16);
    old.psql("app", "CREATE TABLE items (id bigserial PRIMARY KEY, v text); INSERT INTO items (v) SELECT 'old ' || i FROM generate_series(1, 500) i");
    migrate(&old, &new, &[]);
    // State written by an older pgshift (before schema maps) is still read.
    new.psql("app", "ALTER TABLE pgshift.runs DROP COLUMN schema_map");
    pgshift_expect(0, &["status", "--target", &new.url("app")]);
    old.psql("app", "INSERT INTO items (v) VALUES ('after the load'); UPDATE items SET v = 'edited' WHERE id = 1");
    let (o, n) = (old.url("app"), new.url("app"));

    // No follower runs: the cutover applies the last changes itself.
    let out = pgshift_expect(0, &["cutover", "--source", &o, "--target", &n, "--reverse", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["reverse_slot"], "pgshift_rev_1", "{report}");
    assert_verified(&old, &new);

    // The application now writes to the new database; the old one follows it.
    new.psql("app", "INSERT INTO items (v) VALUES ('written to the new database'); DELETE FROM items WHERE id = 2");
    pgshift_expect(0, &["follow", "--source", &n, "--target", &o, "--until-caught-up"]);
    assert_eq!(old.psql("app", "SELECT count(*) FROM items WHERE v = 'written to the new database'"), "1");
    // (verify compares its --source with its --target: the new database is the source now.)
    let out = pgshift(&["verify", "--source", &n, "--target", &o]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));

    new.psql("app", "INSERT INTO items (v) VALUES ('last write before the rollback')");
    pgshift_expect(0, &["rollback", "--source", &o, "--target", &n]);
    assert_eq!(old.psql("app", "SELECT count(*) FROM items WHERE v = 'last write before the rollback'"), "1");
    // The old database takes writes again, and its sequence continues past the new one's ids.
    let id: i64 = old.psql("app", "INSERT INTO items (v) VALUES ('back home') RETURNING id").parse().unwrap();
    assert!(id > new.psql("app", "SELECT max(id) FROM items").parse::<i64>().unwrap());
    assert_eq!(new.psql("app", "SELECT count(*) FROM pg_replication_slots"), "0");
    assert_eq!(old.psql("app", "SELECT count(*) FROM pg_replication_slots"), "0");
    // The new database is fenced now, as the old one was after the cutover.
    assert_eq!(new.psql("app", "SHOW default_transaction_read_only"), "on");
    let fresh = Command::new(new.bin_dir().join("psql"))
        .args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-p", &new.port.to_string(), "-d", "app", "-c", "INSERT INTO items (v) VALUES ('x')"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&fresh.stderr).contains("read-only transaction"), "{fresh:?}");
}

/// A small table without a key is not followed (the source would refuse its updates
/// once published), and the cutover copies it again inside its write pause; after
/// `--reverse` the new database takes the application's updates of it, and a rollback
/// copies it back the same way.
#[test]
fn a_small_table_without_a_key_is_copied_in_the_pause_both_ways() {
    let (old, new) = pair(PgVersion::V15, PgVersion::V16);
    old.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 100) i;
         CREATE TABLE audit (at timestamptz DEFAULT now(), msg text); INSERT INTO audit (msg) SELECT 'loaded ' || i FROM generate_series(1, 50) i;",
    );
    let (o, n) = (old.url("app"), new.url("app"));
    let out = pgshift_expect(0, &["migrate", "--source", &o, "--target", &n, "--dry-run"]);
    assert!(stdout(&out).contains("public.audit has no primary key or replica identity") && stdout(&out).contains("inside its write pause"), "{}", stdout(&out));
    migrate(&old, &new, &[]);
    old.psql("app", "INSERT INTO audit (msg) VALUES ('during catch-up'); UPDATE audit SET msg = 'changed' WHERE msg = 'loaded 1'; DELETE FROM audit WHERE msg = 'loaded 2'; UPDATE items SET v = 'x' WHERE id = 1");
    let rows = "SELECT md5(string_agg(format('%s|%s', at, msg), ',' ORDER BY at, msg)) FROM audit";
    let out = pgshift_expect(0, &["cutover", "--source", &o, "--target", &n, "--reverse", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["steps"].to_string().contains("copy again what catch-up does not follow") && report["steps"].to_string().contains("public.audit"), "{report}");
    assert!(report["pause_steps"]["unfollowed_ms"].as_f64().is_some(), "{report}");
    assert_eq!(new.psql("app", rows), old.psql("app", rows));
    assert_eq!(new.psql("app", "SELECT v FROM items WHERE id = 1"), "x");

    // The application updates it on the new database (it is not in the reverse publication).
    new.psql("app", "UPDATE audit SET msg = 'on the new database' WHERE msg = 'changed'; INSERT INTO items VALUES (101, 'new')");
    pgshift_expect(0, &["follow", "--source", &n, "--target", &o, "--until-caught-up"]);
    pgshift_expect(0, &["rollback", "--source", &o, "--target", &n]);
    assert_eq!(old.psql("app", rows), new.psql("app", rows), "the rollback copied it back");
    assert_eq!(old.psql("app", "SELECT count(*) FROM items"), "101");
}
