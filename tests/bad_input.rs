//! Bad input fails before any write, says what to change, and never shows a password.

mod common;

use common::*;
use pgshift_testkit::{Cluster, ClusterOptions, PgVersion, PASSWORD};

fn nothing_written(target: &Cluster) {
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift'"), "0");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
}

fn migrate_fails(source: &str, target: &str) -> String {
    let out = pgshift_expect(2, &["migrate", "--source", source, "--target", target]);
    stderr(&out)
}

#[test]
fn unreachable_host_and_wrong_password_are_named_without_the_password() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = migrate_fails(&format!("postgresql://postgres:{PASSWORD}@127.0.0.1:{closed}/app"), &target.url("app"));
    assert!(err.contains(&format!("cannot reach postgres@127.0.0.1:{closed}/app")), "{err}");
    assert!(err.contains("Check the host and port"), "{err}");

    let wrong = format!("postgresql://postgres:not-{PASSWORD}-either@127.0.0.1:{}/app", target.port);
    let err = migrate_fails(&source.url("app"), &wrong);
    assert!(err.contains(&format!("authentication failed for postgres@127.0.0.1:{}/app", target.port)), "{err}");
    assert!(err.contains("check the user name and the password"), "{err}");
    assert!(!err.contains("not-"), "{err}");
    nothing_written(&target);
    assert_eq!(source.psql("app", "SELECT count(*) FROM pg_replication_slots"), "0");
}

#[test]
fn target_without_pgvector_and_table_without_identity_are_refused_together() {
    // Source with pgvector (PG16), target without (Debian PG15).
    let (source, target) = pair(PgVersion::V16, PgVersion::V15);
    source.psql("app", "CREATE EXTENSION vector; CREATE TABLE items (id int PRIMARY KEY, embedding vector(3)); INSERT INTO items VALUES (1, '[1,2,3]')");
    // Over 8 MiB: too large to copy again inside the cutover's pause.
    source.psql("app", "CREATE TABLE notes (body text); INSERT INTO notes SELECT (SELECT string_agg(md5(i::text || j::text), '') FROM generate_series(1, 30) j) FROM generate_series(1, 10000) i");
    let err = migrate_fails(&source.url("app"), &target.url("app"));
    assert!(err.contains("has no pgvector"), "{err}");
    assert!(err.contains("pgvector/pgvector:pg16"), "{err}");
    // Catch-up could not carry its updates: refused with the statement that fixes it.
    assert!(err.contains(r#"ALTER TABLE "public"."notes" REPLICA IDENTITY FULL"#), "{err}");
    assert!(err.contains("tables up to 8 MiB without one are copied again inside the cutover's write pause"), "{err}");
    nothing_written(&target);
    assert_eq!(source.psql("app", "SELECT count(*) FROM pg_replication_slots"), "0");
}

#[test]
fn source_without_logical_wal_or_free_slots_is_refused_with_the_fix() {
    let source = Cluster::start_with(
        PgVersion::V15,
        &ClusterOptions { extra_conf: vec!["wal_level = replica".into(), "max_replication_slots = 1".into()], ..Default::default() },
    );
    let target = Cluster::start(PgVersion::V16);
    source.create_database("app");
    target.create_database("app");
    source.psql("app", "CREATE TABLE t (id int PRIMARY KEY); SELECT pg_create_physical_replication_slot('busy')");
    let err = migrate_fails(&source.url("app"), &target.url("app"));
    assert!(err.contains("wal_level = replica"), "{err}");
    assert!(err.contains("ALTER SYSTEM SET wal_level = logical"), "{err}");
    assert!(err.contains("uses 1 of max_replication_slots = 1"), "{err}");
    assert!(err.contains("ALTER SYSTEM SET max_replication_slots = 2"), "{err}");
    nothing_written(&target);

    // Without catch-up the copy needs neither.
    migrate(&source, &target, &["--no-follow"]);
    assert_eq!(target.psql("app", "SELECT phase FROM pgshift.runs"), "done");
}

#[test]
fn a_user_without_replication_rights_is_told_how_to_grant_them() {
    let (source, target) = pair(PgVersion::V16, PgVersion::V16);
    source.psql("app", &format!("CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'; CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO app"));
    let url = format!("postgresql://app:{PASSWORD}@127.0.0.1:{}/app", source.port);
    let err = migrate_fails(&url, &target.url("app"));
    assert!(err.contains("ALTER ROLE app WITH REPLICATION"), "{err}");
    nothing_written(&target);
}

#[test]
fn a_malformed_url_names_the_flag_without_echoing_it() {
    let err = migrate_fails(&format!("postgresql://u:{PASSWORD}@host:notaport/db"), "postgresql://localhost/x");
    assert!(err.contains("--source"), "{err}");
}

#[test]
fn invalidated_slot_stops_catch_up_with_the_way_to_recover() {
    let source = Cluster::start_with(PgVersion::V15, &ClusterOptions { extra_conf: vec!["max_slot_wal_keep_size = 1MB".into()], ..Default::default() });
    let target = Cluster::start(PgVersion::V16);
    source.create_database("app");
    target.create_database("app");
    source.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT generate_series(1, 100), 'x'");
    migrate(&source, &target, &[]);
    // More WAL than the slot may keep, then a checkpoint: the server invalidates it.
    for _ in 0..4 {
        source.psql("app", "INSERT INTO t SELECT i, 'y' FROM generate_series(1000, 1100) i ON CONFLICT DO NOTHING; SELECT pg_switch_wal()");
    }
    source.psql("app", "CHECKPOINT");
    assert_eq!(source.psql("app", "SELECT wal_status FROM pg_replication_slots"), "lost");
    let (s, t) = (source.url("app"), target.url("app"));
    let out = pgshift_expect(2, &["follow", "--source", &s, "--target", &t, "--until-caught-up"]);
    let err = stderr(&out);
    assert!(err.contains("was invalidated") && err.contains("max_slot_wal_keep_size"), "{err}");
    assert!(err.contains("run pgshift migrate again"), "{err}");
}
