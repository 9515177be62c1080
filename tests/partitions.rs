//! Partitions made, attached, detached and dropped on the source during catch-up are
//! made the same on the target at their place in the stream, and the rows written
//! into them right after arrive: a monthly-partitioned table whose maintenance
//! creates the next months in one transaction, a partition made as a table and then
//! attached (as pg_partman does), one detached and dropped.

mod common;

use std::time::Duration;

use common::*;
use pgshift_testkit::PgVersion;

#[test]
fn partitions_made_during_catch_up_are_followed() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql(
        "app",
        "CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, body text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE INDEX events_body ON events (body);
         CREATE TABLE events_2026_11 PARTITION OF events FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
         CREATE TABLE events_2026_12 PARTITION OF events FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
         INSERT INTO events SELECT i, date '2026-11-01' + (i % 60), 'event ' || i FROM generate_series(1, 600) i;",
    );
    let (s, t) = (source.url("app"), target.url("app"));
    let migrate = migrate_until_catch_up(&["migrate", "--source", &s, "--target", &t], Duration::from_secs(120));

    // Maintenance makes the next three months in one transaction; the application writes into them at once.
    source.psql(
        "app",
        "BEGIN;
         CREATE TABLE events_2027_01 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2027-02-01');
         CREATE TABLE events_2027_02 PARTITION OF events FOR VALUES FROM ('2027-02-01') TO ('2027-03-01');
         CREATE TABLE events_2027_03 PARTITION OF events FOR VALUES FROM ('2027-03-01') TO ('2027-04-01');
         COMMIT;
         INSERT INTO events SELECT 1000 + i, date '2027-01-01' + (i % 90), 'new ' || i FROM generate_series(1, 300) i;
         CREATE TABLE events_2027_04 (LIKE events INCLUDING ALL);
         ALTER TABLE events ATTACH PARTITION events_2027_04 FOR VALUES FROM ('2027-04-01') TO ('2027-05-01');
         INSERT INTO events VALUES (5000, '2027-04-15', 'in the attached month');
         UPDATE events SET body = 'edited' WHERE id = 1001;
         ALTER TABLE events DETACH PARTITION events_2026_11;
         DROP TABLE events_2026_11;",
    );
    wait_until("the changes to arrive", Duration::from_secs(60), || {
        target.psql("app", "SELECT count(*) FROM events WHERE body = 'in the attached month'") == "1"
            && target.psql("app", "SELECT to_regclass('events_2026_11') IS NULL") == "t"
    });
    let partitions = "SELECT string_agg(c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid), E'\\n' ORDER BY c.relname) \
                      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass";
    assert_eq!(target.psql("app", partitions), source.psql("app", partitions));
    assert_eq!(target.psql("app", "SELECT body FROM events WHERE id = 1001"), "edited");
    assert!(target.psql("app", "SELECT indexdef FROM pg_indexes WHERE tablename = 'events_2027_02'").contains("(body)"), "the parent's indexes on a new partition");
    assert_verified(&source, &target);
    let out = pgshift(&["cutover", "--source", &s, "--target", &t]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    migrate.wait(Duration::from_secs(60));
    assert_eq!(target.psql("app", "SELECT count(*) FROM events"), source.psql("app", "SELECT count(*) FROM events"));
    // The application writes into a new month on the new database.
    target.psql("app", "SET default_transaction_read_only = off; INSERT INTO events VALUES (9000, '2027-03-03', 'after the cutover')");
}
