//! Catch-up: changes made on the source during and after the load reach the target
//! exactly once, through restarts, and verify passes.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use pgshift_testkit::{Cluster, PgVersion};

/// Tables beyond the types fixture: TOASTed text, a replica identity index, a table
/// for truncation, and one for a large transaction.
const CATCH_UP_FIXTURE: &str = "
CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text);
INSERT INTO docs SELECT i, 'title ' || i, (SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 200) g WHERE i > 0)
  FROM generate_series(1, 60) i;
CREATE TABLE coded (code text NOT NULL, n int);
CREATE UNIQUE INDEX coded_code ON coded (code);
ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code;
INSERT INTO coded SELECT 'c' || i, i FROM generate_series(1, 100) i;
CREATE TABLE scratch (id int PRIMARY KEY);
CREATE TABLE scratch_child (id int PRIMARY KEY, parent int REFERENCES scratch);
INSERT INTO scratch SELECT generate_series(1, 10);
INSERT INTO scratch_child SELECT i, i FROM generate_series(1, 10) i;
CREATE TABLE big (id int PRIMARY KEY, v int);
";

/// Every kind of change, including the edge cases of pgoutput.
const CHANGES: &str = "
UPDATE docs SET title = 'renamed' WHERE id <= 10;
UPDATE docs SET id = id + 100000 WHERE id = 11;
DELETE FROM docs WHERE id BETWEEN 20 AND 30;
BEGIN; INSERT INTO docs VALUES (500, 'short-lived', 'x'); UPDATE docs SET title = 'changed' WHERE id = 500; DELETE FROM docs WHERE id = 500; COMMIT;
BEGIN; DELETE FROM docs WHERE id = 40; INSERT INTO docs VALUES (40, 'reborn', 'new body'); COMMIT;
UPDATE kinds SET note = 'edited ' || id, doc = '{\"edited\": true}', feelings = ARRAY['sad']::mood[] WHERE id % 7 = 0;
DELETE FROM kinds WHERE id % 11 = 0;
INSERT INTO kinds (note, price) VALUES ('added', ROW(1.5, 'USD')::money_pair);
UPDATE no_pk SET b = 'changed' WHERE a = 5;
DELETE FROM no_pk WHERE a = 6;
INSERT INTO no_pk VALUES (1000, 'new'), (1000, 'new');
UPDATE coded SET n = -n WHERE n <= 5;
UPDATE coded SET code = 'moved' WHERE code = 'c50';
DELETE FROM coded WHERE n BETWEEN 60 AND 70;
TRUNCATE scratch, scratch_child;
INSERT INTO scratch VALUES (99);
BEGIN; INSERT INTO big SELECT i, i FROM generate_series(1, 60000) i; UPDATE big SET v = -v WHERE id % 3 = 0; DELETE FROM big WHERE id % 10 = 0; COMMIT;
UPDATE toasty SET data = data || '{\"extra\": 1}' WHERE id = 1;
";

fn md5_of(c: &Cluster, sql: &str) -> String {
    c.psql("app", &format!("SELECT md5(string_agg(x::text, ',' ORDER BY x::text)) FROM ({sql}) AS q(x)"))
}

fn changes_converge(source_version: PgVersion, target_version: PgVersion) {
    let (source, target) = pair(source_version, target_version);
    source.psql("app", &format!("{TYPES_FIXTURE}; {NO_PK_FULL}; {CATCH_UP_FIXTURE}"));
    let toast_before = md5_of(&source, "SELECT body FROM docs WHERE id <= 11");

    // Writes while the load runs: they land after L0 and reach the target by catch-up.
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                i += 1;
                source.psql("app", &format!("INSERT INTO docs VALUES ({}, 'during load', 'b'); UPDATE kinds SET small = {i} WHERE id = {i}", 1000 + i));
            }
        });
        migrate(&source, &target, &["--jobs", "2"]);
        done.store(true, Ordering::Relaxed);
    });
    source.psql("app", CHANGES);
    let out = follow(&source, &target, &["--batch-rows", "5000", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("follow --json prints JSON");
    assert!(report["inserts"].as_u64().unwrap() > 50_000, "{report}");
    assert_eq!(report["lag_bytes"].as_u64(), Some(0), "{report}");
    assert_verified(&source, &target);

    // Unchanged TOAST values were kept, also through a key change.
    assert_eq!(md5_of(&target, "SELECT body FROM docs WHERE id <= 10 OR id = 100011"), toast_before);
    assert_eq!(target.psql("app", "SELECT count(*) FROM docs WHERE body IS NULL"), "0");
    assert_eq!(target.psql("app", "SELECT count(*) FROM scratch_child"), "0");
    assert_eq!(target.psql("app", "SELECT count(*) FROM no_pk WHERE a = 1000"), "2");
    // The slot was told what the target holds, so the source can recycle its WAL.
    let slot = target.psql("app", "SELECT slot_name FROM pgshift.runs");
    let confirmed = source.psql("app", &format!("SELECT confirmed_flush_lsn = '{}' FROM pg_replication_slots WHERE slot_name = '{slot}'", report["confirmed_lsn"].as_str().unwrap()));
    assert_eq!(confirmed, "t");

    // A second follow finds nothing new and applies nothing twice.
    let out = follow(&source, &target, &["--json"]);
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["transactions"].as_u64(), Some(0), "{again}");
    assert_verified(&source, &target);
}

#[test]
fn pg15_to_pg16_changes_during_and_after_the_load_converge() {
    changes_converge(PgVersion::V15, PgVersion::V16);
}

#[test]
fn pg16_to_pg18_changes_during_and_after_the_load_converge() {
    changes_converge(PgVersion::V16, PgVersion::V18);
}

#[test]
fn every_object_moves_to_mapped_schemas_and_changes_follow_it() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", &format!("{TYPES_FIXTURE}; {NO_PK_FULL}; {CATCH_UP_FIXTURE}"));
    migrate(&source, &target, &["--map-schema", "public=app,sales=shop"]);
    let schemas = "SELECT string_agg(DISTINCT schemaname, ',') FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pgshift')";
    assert_eq!(target.psql("app", schemas), "app,shop");
    let feelings = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'app.kinds'::regclass AND attname = 'feelings'";
    assert_eq!(target.psql("app", feelings), "app.mood[]");
    for (on_source, on_target) in [
        ("SELECT last_value || ' ' || is_called FROM standalone_seq", "SELECT last_value || ' ' || is_called FROM app.standalone_seq"),
        ("SELECT count(*) FROM sales.orders_2024", "SELECT count(*) FROM shop.orders_2024"),
        ("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'notes_customer_id_fkey'", "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'notes_customer_id_fkey'"),
    ] {
        let expected = source.psql("app", on_source).replace("public.", "app.").replace("sales.", "shop.");
        assert_eq!(target.psql("app", on_target), expected, "{on_target}");
    }

    source.psql("app", CHANGES);
    source.psql("app", "INSERT INTO sales.orders (customer_id, placed_at, amount) VALUES (md5('c1')::uuid, '2024-03-01', 1)");
    follow(&source, &target, &[]);
    assert_verified(&source, &target);
    let out = verify(&source, &target, &["--map-schema", "public=app,sales=shop", "--tables", "sales.*"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(target.psql("app", "SELECT count(*) FROM app.scratch"), "1", "the truncate and the insert after it");
    assert_eq!(target.psql("app", schemas), "app,shop", "nothing was written outside the mapped schemas");
    // A map that points elsewhere finds nothing there.
    let out = verify(&source, &target, &["--map-schema", "public=elsewhere", "--tables", "kinds"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("elsewhere.kinds"), "{}", stdout(&out));
}

#[test]
fn sigkill_during_catch_up_loses_nothing_and_applies_nothing_twice() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    // The key-less table would show a change applied twice as a duplicate row; the
    // keyed one would fail on a duplicate key.
    source.psql(
        "app",
        "CREATE TABLE ledger (v int, note text); ALTER TABLE ledger REPLICA IDENTITY FULL; \
         CREATE TABLE counters (id int PRIMARY KEY, n bigint); INSERT INTO counters SELECT generate_series(1, 100), 0; \
         CREATE TABLE entries (id bigint PRIMARY KEY, v int)",
    );
    migrate(&source, &target, &[]);
    source.psql(
        "app",
        "DO $$ BEGIN FOR i IN 1..3000 LOOP \
           INSERT INTO ledger VALUES (i, 'entry'); UPDATE counters SET n = n + 1 WHERE id = i % 100 + 1; \
           INSERT INTO entries SELECT i * 100 + g, g FROM generate_series(1, 20) g; COMMIT; \
         END LOOP; END $$",
    );
    let (s, t) = (source.url("app"), target.url("app"));
    let args = ["follow", "--source", &s, "--target", &t, "--batch-rows", "200", "--commit-delay-ms", "0", "--until-caught-up"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgshift")).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while target.psql("app", "SELECT count(*) FROM entries").parse::<i64>().unwrap() < 5000 {
        assert!(child.try_wait().unwrap().is_none(), "follow finished before it could be killed");
        assert!(Instant::now() < deadline, "catch-up made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(target.psql("app", "SELECT count(*) FROM entries").parse::<i64>().unwrap() < 60_000, "killed too late to test anything");

    follow(&source, &target, &[]);
    assert_verified(&source, &target);
    assert_eq!(target.psql("app", "SELECT count(*) || ' ' || sum(n) FROM counters"), "100 3000");
    assert_eq!(target.psql("app", "SELECT count(*) FROM ledger"), "3000");
}

/// Large transactions arrive while they run (protocol 2, spooled to disk until their
/// commit): with a tiny logical_decoding_work_mem the source streams them. A
/// committed one arrives whole, without its rolled-back savepoint; an aborted one
/// leaves nothing on the target; the spool is gone afterwards, and so is one that a
/// killed follower left behind.
#[test]
fn large_transactions_stream_while_they_run_and_aborted_ones_cost_nothing() {
    let (source, target) = pair(PgVersion::V16, PgVersion::V18);
    source.psql("app", "ALTER SYSTEM SET logical_decoding_work_mem = '64kB'");
    source.psql("app", "SELECT pg_reload_conf()");
    source.psql("app", "CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE small (id int PRIMARY KEY)");
    migrate(&source, &target, &[]);
    source.psql(
        "app",
        "BEGIN;
         INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 30000) i;
         INSERT INTO small VALUES (1);
         SAVEPOINT s; INSERT INTO big SELECT i, 'rolled back' FROM generate_series(30001, 35000) i; ROLLBACK TO s;
         UPDATE big SET v = 'changed' WHERE id % 7 = 0;
         DELETE FROM big WHERE id % 11 = 0;
         COMMIT;
         BEGIN; INSERT INTO big SELECT i, 'aborted' FROM generate_series(40001, 70000) i; INSERT INTO small VALUES (2); ROLLBACK;
         INSERT INTO small VALUES (3);",
    );
    let spool = std::env::temp_dir().join(format!("pgshift-spool-test-{}", std::process::id()));
    let left_behind = spool.join("pgshift-spool-999999999-0");
    std::fs::create_dir_all(&left_behind).unwrap();
    let (s, t) = (source.url("app"), target.url("app"));
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        // Small parts: the large transaction is written in several, each while the next gathers.
        .args(["follow", "--source", &s, "--target", &t, "--until-caught-up", "--batch-rows", "4000"])
        .env("PGSHIFT_SPOOL_DIR", &spool)
        .env("PGSHIFT_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let streamed = source.psql("app", "SELECT stream_txns > 0 FROM pg_stat_replication_slots WHERE slot_name LIKE 'pgshift%'");
    assert_eq!(streamed, "t", "the source streamed the large transactions");
    for sql in ["SELECT count(*), md5(string_agg(id || v, ',' ORDER BY id)) FROM big", "SELECT string_agg(id::text, ',' ORDER BY id) FROM small"] {
        assert_eq!(target.psql("app", sql), source.psql("app", sql), "{sql}");
    }
    assert_eq!(target.psql("app", "SELECT count(*) FROM big WHERE v IN ('rolled back', 'aborted')"), "0");
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "the spool is cleaned up, and the one a killed follower left");
    let _ = std::fs::remove_dir_all(&spool);
    assert_verified(&source, &target);
}

/// A deploy during catch-up: columns added on the source (in one transaction with
/// changes that use them) are added on the target at that point in the stream, new
/// enum values and indexes arrive, a column renamed by the application's own role
/// is renamed there, a dropped column and a dropped table are dropped, a changed
/// type and default follow, a new partition arrives, a new table without a key is
/// made and copied in the cutover's pause. The event triggers that report schema changes go at the cutover.
#[test]
fn schema_changes_during_catch_up_arrive_at_their_place_in_the_stream() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql(
        "app",
        "CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE orders (id int PRIMARY KEY, item text, mood mood);
         INSERT INTO orders SELECT i, 'item ' || i, 'ok' FROM generate_series(1, 50) i;
         CREATE TABLE scratch (id int PRIMARY KEY); INSERT INTO scratch VALUES (1);
         CREATE TABLE events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');",
    );
    migrate(&source, &target, &[]);
    source.psql("app", "ALTER TYPE mood ADD VALUE 'happy' AFTER 'ok'; ALTER TYPE mood ADD VALUE 'angry' BEFORE 'sad'");
    source.psql(
        "app",
        "UPDATE orders SET mood = 'happy' WHERE id = 3; CREATE INDEX orders_mood ON orders (mood); UPDATE orders SET mood = 'angry' WHERE id = 4;
         INSERT INTO orders (id, item) VALUES (51, 'before');
         BEGIN;
         ALTER TABLE orders ADD COLUMN amount numeric(10,2) NOT NULL DEFAULT 0, ADD COLUMN note text, ADD COLUMN code text COLLATE \"C\";
         UPDATE orders SET amount = id * 1.5 WHERE id % 5 = 0;
         INSERT INTO orders (id, item, amount, note) VALUES (52, 'after', 9.99, 'n');
         COMMIT;
         INSERT INTO orders (id, item, amount, note) VALUES (53, 'later', 1, NULL);",
    );
    // Functions and views made, replaced and dropped.
    source.psql(
        "app",
        "CREATE FUNCTION twice(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x * 2';
         CREATE VIEW cheap AS SELECT id, item FROM orders WHERE id < 10;
         CREATE OR REPLACE VIEW cheap AS SELECT id, item, twice(id) AS doubled FROM orders WHERE id < 10;
         CREATE FUNCTION gone() RETURNS int LANGUAGE sql AS 'SELECT 1'; DROP FUNCTION gone();",
    );
    follow(&source, &target, &[]);
    assert_eq!(target.psql("app", "SELECT sum(doubled) FROM cheap"), "90");
    assert_eq!(target.psql("app", "SELECT to_regprocedure('gone()') IS NULL"), "t");
    let rows = "SELECT md5(string_agg(format('%s:%s:%s:%s:%s', id, item, amount, note, mood), ',' ORDER BY id)) FROM orders";
    assert_eq!(target.psql("app", rows), source.psql("app", rows));
    let labels = "SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = 'mood'::regtype";
    assert_eq!(target.psql("app", labels), "angry,sad,ok,happy");
    let index = "SELECT indexdef FROM pg_indexes WHERE indexname = 'orders_mood'";
    assert_eq!(target.psql("app", index), source.psql("app", index));

    // The application's own role (not a superuser) renames, drops and changes columns; a table goes.
    source.psql(
        "app",
        "CREATE ROLE shop LOGIN; ALTER TABLE orders OWNER TO shop; ALTER TABLE scratch OWNER TO shop; SET ROLE shop;
         BEGIN; UPDATE orders SET item = 'renamed soon' WHERE id = 1; ALTER TABLE orders RENAME COLUMN item TO product;
         UPDATE orders SET product = 'renamed' WHERE id = 2; COMMIT;
         ALTER TABLE orders DROP COLUMN note; ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12,3), ALTER COLUMN amount SET DEFAULT 1;
         ALTER TABLE orders ALTER COLUMN code TYPE text COLLATE \"POSIX\";
         INSERT INTO orders (id, product) VALUES (54, 'dropped');
         DROP TABLE scratch;
         ALTER TABLE orders ADD CONSTRAINT amount_positive CHECK (amount >= 0), ADD CONSTRAINT product_set CHECK (product <> '');
         ALTER TABLE orders DROP CONSTRAINT product_set; DROP INDEX orders_mood;",
    );
    target.psql("app", "CREATE ROLE shop");
    follow(&source, &target, &[]);
    let rows = "SELECT md5(string_agg(format('%s:%s:%s:%s', id, product, amount, mood), ',' ORDER BY id)) FROM orders";
    assert_eq!(target.psql("app", rows), source.psql("app", rows));
    let columns = "SELECT string_agg(format('%s %s %s %s', attname, format_type(atttypid, atttypmod), attcollation::regcollation, pg_get_expr(adbin, adrelid)), ', ' ORDER BY attnum) \
                   FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped";
    assert_eq!(target.psql("app", columns), source.psql("app", columns));
    assert_eq!(target.psql("app", "SELECT to_regclass('scratch') IS NULL"), "t");
    let constraints = "SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), ', ' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype = 'c'";
    assert_eq!(target.psql("app", constraints), "amount_positive CHECK ((amount >= (0)::numeric))");
    assert_eq!(target.psql("app", "SELECT to_regclass('orders_mood') IS NULL"), "t");

    // A new partition arrives with the rows written into it (tests/partitions.rs goes further).
    source.psql("app", "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); INSERT INTO events VALUES (1, '2026-05-05')");
    let (s, t) = (source.url("app"), target.url("app"));
    follow(&source, &target, &[]);
    assert_eq!(target.psql("app", "SELECT count(*) FROM events_2026"), "1");
    // A new table without a key is not published (the application's updates would fail): made on the
    // target, and copied again inside the cutover's pause.
    source.psql("app", "CREATE TABLE log (msg text); INSERT INTO log VALUES ('x'); UPDATE log SET msg = 'y'");
    let out = pgshift(&["follow", "--source", &s, "--target", &t, "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("public.log is a new table without a primary key or replica identity"), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT count(*) FROM log"), "0", "not followed");
    let out = pgshift_expect(0, &["cutover", "--source", &s, "--target", &t, "--dry-run"]);
    assert!(stdout(&out).contains("public.log"), "{}", stdout(&out));
    pgshift_expect(0, &["cutover", "--source", &s, "--target", &t]);
    assert_eq!(target.psql("app", "SELECT msg FROM log"), "y", "copied in the pause");
    assert_verified(&source, &target);
    assert_eq!(source.psql("app", "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgshift%'"), "0");
}

/// An application's migration in one transaction while catch-up runs: a column
/// added and filled, a table created and filled right away, an index; changes
/// before and after it. Everything arrives, and verify passes after the cutover.
#[test]
fn an_applications_migration_during_catch_up_arrives_whole() {
    let (source, target) = pair(PgVersion::V16, PgVersion::V18);
    source.psql("app", "CREATE TABLE customers (id int PRIMARY KEY, name text); INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 30) i;");
    migrate(&source, &target, &[]);
    source.psql(
        "app",
        "INSERT INTO customers VALUES (31, 'before');
         BEGIN;
         ALTER TABLE customers ADD COLUMN tier text NOT NULL DEFAULT 'basic';
         UPDATE customers SET tier = 'gold' WHERE id % 10 = 0;
         CREATE TABLE invoices (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, customer int NOT NULL, total numeric(12,2));
         CREATE TABLE payments (id bigserial PRIMARY KEY, invoice bigint, paid numeric CHECK (paid > 0));
         INSERT INTO payments (invoice, paid) VALUES (1, 10), (2, 20);
         INSERT INTO invoices (customer, total) SELECT id, id * 2.5 FROM customers;
         CREATE INDEX invoices_customer ON invoices (customer);
         COMMIT;
         INSERT INTO invoices (customer, total) VALUES (1, 99.99);
         UPDATE customers SET name = 'after' WHERE id = 2;",
    );
    follow(&source, &target, &[]);
    for sql in [
        "SELECT md5(string_agg(format('%s:%s:%s', id, name, tier), ',' ORDER BY id)) FROM customers",
        "SELECT count(*), sum(total) FROM invoices",
    ] {
        assert_eq!(target.psql("app", sql), source.psql("app", sql), "{sql}");
    }
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_indexes WHERE indexname = 'invoices_customer'"), "1");
    let (s, t) = (source.url("app"), target.url("app"));
    source.psql("app", "INSERT INTO invoices (customer, total) VALUES (2, 1.5)");
    pgshift_expect(0, &["cutover", "--source", &s, "--target", &t]);
    assert_verified(&source, &target);
    assert_eq!(target.psql("app", "SELECT count(*) FROM invoices"), source.psql("app", "SELECT count(*) FROM invoices"));
    // After the cutover the application inserts into the new tables as on the source: the next numbers.
    let next = "INSERT INTO invoices (customer, total) VALUES (3, 1) RETURNING id; INSERT INTO payments (invoice, paid) VALUES (3, 1) RETURNING id";
    let expected = "SELECT (SELECT max(id) + 1 FROM invoices); SELECT (SELECT max(id) + 1 FROM payments)";
    assert_eq!(target.psql("app", next), source.psql("app", expected));
}

/// `--follow-ddl off` stops at a schema change with what to run on the target, and
/// goes on once the target has it; after `cutover --reverse`, a schema change on the
/// new database reaches the old one by the reverse replication.
#[test]
fn follow_ddl_off_says_what_to_run_and_reverse_replication_follows_schema_changes() {
    let (source, target) = pair(PgVersion::V16, PgVersion::V18);
    source.psql("app", "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, 'one')");
    migrate(&source, &target, &[]);
    source.psql("app", "ALTER TABLE notes ADD COLUMN stars int NOT NULL DEFAULT 3; INSERT INTO notes VALUES (2, 'two', 5)");
    let (s, t) = (source.url("app"), target.url("app"));
    let out = pgshift(&["follow", "--source", &s, "--target", &t, "--until-caught-up", "--follow-ddl", "off"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains(r#"ALTER TABLE "public"."notes" ADD COLUMN "stars" integer DEFAULT 3 NOT NULL"#), "{err}");
    target.psql("app", "ALTER TABLE notes ADD COLUMN stars int NOT NULL DEFAULT 3");
    follow(&source, &target, &["--follow-ddl", "off"]);
    assert_eq!(target.psql("app", "SELECT string_agg(format('%s:%s', id, stars), ',' ORDER BY id) FROM notes"), "1:3,2:5");

    pgshift_expect(0, &["cutover", "--source", &s, "--target", &t, "--reverse"]);
    target.psql("app", "ALTER TABLE notes ADD COLUMN color text; INSERT INTO notes VALUES (3, 'three', 1, 'red')");
    follow(&target, &source, &[]);
    assert_eq!(source.psql("app", "SELECT color FROM notes WHERE id = 3"), "red");
}
