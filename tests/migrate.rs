//! End-to-end: `pgshift migrate` then `pgshift verify` between real clusters.

mod common;

use common::*;
use pgshift_testkit::{Cluster, PgVersion};

fn q(c: &Cluster, sql: &str) -> String {
    c.psql("app", sql)
}

fn migrate_types_and_check(source_version: PgVersion, target_version: PgVersion) {
    let (source, target) = pair(source_version, target_version);
    q(&source, &format!("{TYPES_FIXTURE}; {NO_PK_FULL}"));
    migrate(&source, &target, &["--jobs", "3"]);
    let out = verify(&source, &target, &[]);
    assert_eq!(out.status.code(), Some(0), "verify failed:\n{}{}", stdout(&out), stderr(&out));

    // The checksums cover the rows; these cover what checksums cannot see.
    for sql in [
        "SELECT count(*) FROM pg_indexes WHERE indexname IN ('kinds_at_idx', 'kinds_doc_idx', 'orders_placed_idx', 'kinds_pkey', 'kinds_ident_key')",
        "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE contype = 'x'",
        "SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname) FROM pg_constraint WHERE contype IN ('f', 'c') AND connamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'pgshift'))",
        "SELECT obj_description('kinds'::regclass, 'pg_class') || ' / ' || col_description('kinds'::regclass, 18)",
        "SELECT last_value || ' ' || is_called FROM standalone_seq",
        "SELECT last_value || ' ' || is_called FROM sales.orders_id_seq",
        "SELECT pg_get_serial_sequence('kinds', 'id') IS NOT NULL",
        "SELECT count(*) FROM sales.orders_2024",
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'kinds'::regclass AND attname = 'feelings'",
    ] {
        assert_eq!(q(&source, sql), q(&target, sql), "{sql}");
    }
    // Identity continues after the copied values instead of colliding with them.
    let next = q(&target, "INSERT INTO kinds (note) VALUES ('new') RETURNING id");
    assert_eq!(next, "503");
    assert_eq!(q(&target, "SELECT total FROM kinds WHERE id = 2"), "6.000000");
    // The run is recorded as loaded, with its slot and L0 kept for catch-up.
    assert_eq!(q(&target, "SELECT phase, start_lsn IS NOT NULL FROM pgshift.runs"), "loaded|t");
    let slot = q(&target, "SELECT slot_name FROM pgshift.runs");
    assert_eq!(q(&source, &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'")), "1");
}

#[test]
fn pg15_to_pg16_carries_every_type_and_object() {
    migrate_types_and_check(PgVersion::V15, PgVersion::V16);
}

#[test]
fn pg16_to_pg18_carries_every_type_and_object() {
    migrate_types_and_check(PgVersion::V16, PgVersion::V18);
}

#[test]
fn large_table_is_split_into_key_ranges_and_verified_per_range() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    q(
        &source,
        "CREATE TABLE events (id bigint PRIMARY KEY, body text, at timestamptz DEFAULT now()); \
         INSERT INTO events (id, body) SELECT i, md5(i::text) FROM generate_series(1, 1000000) i; \
         CREATE TABLE blocks AS SELECT i AS n, md5(i::text) AS h FROM generate_series(1, 300000) i; \
         ANALYZE",
    );
    migrate(&source, &target, &["--jobs", "2", "--split-rows", "200000", "--no-follow"]);
    assert_eq!(q(&target, "SELECT count(*), min(split), sum(rows) FROM pgshift.chunks WHERE table_name = 'public.events'"), "5|intkey|1000000");
    // No key: block ranges.
    assert_eq!(q(&target, "SELECT min(split), sum(rows) FROM pgshift.chunks WHERE table_name = 'public.blocks'"), "ctid|300000");
    assert_eq!(q(&target, "SELECT phase FROM pgshift.runs"), "done");
    let out = verify(&source, &target, &["--split-rows", "200000", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let events = report["tables"].as_array().unwrap().iter().find(|t| t["table"] == "public.events").unwrap();
    assert_eq!(events["ranges"], 5);
    assert_eq!(events["target_rows"], 1000000);

    // A changed row is found, and its range named.
    q(&target, "UPDATE events SET body = 'changed' WHERE id = 777777");
    let out = verify(&source, &target, &["--split-rows", "200000", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let events = report["tables"].as_array().unwrap().iter().find(|t| t["table"] == "public.events").unwrap();
    let ranges = events["mismatched_ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 1, "{events}");
    assert_eq!(ranges[0]["range"], "\"id\" >= 600001 AND \"id\" < 800001");
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    q(&source, &format!("{TYPES_FIXTURE}; {NO_PK_FULL}"));
    let out = migrate(&source, &target, &["--dry-run"]);
    let text = stdout(&out);
    assert!(text.contains("CREATE TABLE \"public\".\"kinds\""), "{text}");
    assert!(text.contains("CREATE INDEX kinds_doc_idx"), "{text}");
    assert!(text.contains("NOT VALID"), "{text}");
    assert_eq!(q(&target, "SELECT count(*) FROM pg_class WHERE relnamespace <> ALL (ARRAY['pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace])"), "0");
    assert_eq!(q(&target, "SELECT count(*) FROM pg_namespace WHERE nspname IN ('pgshift', 'sales')"), "0");
    assert_eq!(q(&source, "SELECT count(*) FROM pg_replication_slots"), "0");
}

#[test]
fn a_second_run_refuses_to_write_over_loaded_tables() {
    let (source, target) = pair(PgVersion::V16, PgVersion::V16);
    q(&source, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)");
    q(&target, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (42)");
    let (s, t) = (source.url("app"), target.url("app"));
    let out = pgshift_expect(2, &["migrate", "--source", &s, "--target", &t]);
    let err = stderr(&out);
    assert!(err.contains("target table public.t already holds rows"), "{err}");
    assert!(err.contains("DROP TABLE"), "{err}");
    assert_eq!(q(&target, "SELECT string_agg(id::text, ',') FROM t"), "42");
    assert_eq!(q(&source, "SELECT count(*) FROM pg_replication_slots"), "0");
}

#[test]
fn tables_pattern_selects_and_a_typo_is_an_error() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    q(&source, &format!("{TYPES_FIXTURE}; {NO_PK_FULL}"));
    migrate(&source, &target, &["--tables", "sales.*", "--no-follow"]);
    assert_eq!(q(&target, "SELECT count(*) FROM sales.orders"), "400");
    assert_eq!(q(&target, "SELECT to_regclass('public.kinds') IS NULL"), "t");
    let (s, t) = (source.url("app"), target.url("app"));
    let out = pgshift_expect(2, &["migrate", "--source", &s, "--target", &t, "--tables", "sales.ordres"]);
    assert!(stderr(&out).contains("matches no table"), "{}", stderr(&out));
}
