//! Catch-up never stalls on changes whose net effect collides when applied
//! set-based (values swapped between rows of a unique column, cycles, partial unique
//! indexes, exclusion constraints, key changes), and a change the target really
//! rejects stops `follow` with the table, the change and its key.

mod common;

use common::*;
use pgshift_testkit::{Cluster, PgVersion};

const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL UNIQUE, slot int, active bool NOT NULL DEFAULT true);
CREATE UNIQUE INDEX accounts_active_slot ON accounts (slot) WHERE active;
INSERT INTO accounts SELECT i, 'a' || i, i, true FROM generate_series(1, 20) i;
CREATE TABLE rooms (id int PRIMARY KEY, during int4range NOT NULL, EXCLUDE USING gist (during WITH &&));
INSERT INTO rooms VALUES (1, '[1,5)'), (2, '[5,10)'), (3, '[20,30)');
CREATE TABLE seats (id int PRIMARY KEY, seat text NOT NULL, CONSTRAINT seats_seat_key UNIQUE (seat) DEFERRABLE INITIALLY DEFERRED);
INSERT INTO seats VALUES (1, 'A'), (2, 'B');
CREATE TABLE tokens (id int PRIMARY KEY, code text NOT NULL UNIQUE);
INSERT INTO tokens VALUES (1, 'c1'), (2, 'c2'), (3, 'c3');
";

/// What applications do, each line its own transaction, in an order a set-based
/// statement would not keep.
const CHANGES: &str = "
UPDATE accounts SET email = 'tmp' WHERE id = 1;
UPDATE accounts SET email = 'a1' WHERE id = 2;
UPDATE accounts SET email = 'a2' WHERE id = 1;
UPDATE accounts SET email = 'tmp3' WHERE id = 3;
UPDATE accounts SET email = 'a3' WHERE id = 5;
UPDATE accounts SET email = 'a5' WHERE id = 4;
UPDATE accounts SET email = 'a4' WHERE id = 3;
UPDATE accounts SET slot = NULL WHERE id = 6;
UPDATE accounts SET slot = 6 WHERE id = 7;
UPDATE accounts SET slot = 7 WHERE id = 6;
UPDATE accounts SET active = false WHERE id = 8;
UPDATE accounts SET slot = 8 WHERE id = 9;
UPDATE rooms SET during = '[10,15)' WHERE id = 2;
UPDATE rooms SET during = '[3,8)' WHERE id = 1;
BEGIN; UPDATE seats SET seat = 'B' WHERE id = 1; UPDATE seats SET seat = 'A' WHERE id = 2; COMMIT;
UPDATE tokens SET id = 100 WHERE id = 1;
INSERT INTO tokens VALUES (1, 'c1-new');
UPDATE tokens SET code = 'tmp' WHERE id = 2;
UPDATE tokens SET code = 'c2' WHERE id = 3;
UPDATE tokens SET code = 'c3' WHERE id = 2;
";

fn loaded() -> (Cluster, Cluster) {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", SCHEMA);
    migrate(&source, &target, &[]);
    (source, target)
}

fn rows(c: &Cluster) -> String {
    c.psql(
        "app",
        "SELECT string_agg(x, ' ' ORDER BY x) FROM (SELECT format('a%s:%s:%s:%s', id, email, slot, active) FROM accounts
         UNION ALL SELECT format('r%s:%s', id, during) FROM rooms UNION ALL SELECT format('s%s:%s', id, seat) FROM seats
         UNION ALL SELECT format('t%s:%s', id, code) FROM tokens) q(x)",
    )
}

#[test]
fn swaps_cycles_partial_indexes_exclusions_and_key_changes_converge() {
    let (source, target) = loaded();
    source.psql("app", CHANGES);
    let out = follow(&source, &target, &["--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(report["fallbacks"].as_u64().unwrap() >= 1, "the colliding batch went the source-order way: {report}");
    assert_eq!(rows(&target), rows(&source));
    assert_verified(&source, &target);

    // The fast path comes back: plain changes after the fallback apply set-based.
    source.psql("app", "UPDATE accounts SET slot = slot + 100 WHERE id > 10; INSERT INTO tokens VALUES (4, 'c4')");
    let out = follow(&source, &target, &["--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["fallbacks"], 0, "{report}");
    assert_eq!(rows(&target), rows(&source));
}

#[test]
fn a_change_the_target_rejects_in_source_order_too_stops_follow_with_its_key() {
    let (source, target) = loaded();
    // Something only the target has: a stricter unique index.
    target.psql("app", "CREATE UNIQUE INDEX tokens_first_letter ON tokens (substr(code, 1, 2)) WHERE id > 50");
    source.psql("app", "INSERT INTO tokens VALUES (60, 'zz1'); INSERT INTO tokens VALUES (61, 'zz2')");
    let (s, t) = (source.url("app"), target.url("app"));
    for _ in 0..2 {
        // The same error each time: it is the target's, and says so, instead of a retry loop.
        let out = pgshift_expect(2, &["follow", "--source", &s, "--target", &t, "--until-caught-up"]);
        let err = stderr(&out);
        assert!(err.contains("tokens") && err.contains("(id)=(61)") && err.contains("fails in the source's order too"), "{err}");
        assert!(err.contains("duplicate key value violates unique constraint \"tokens_first_letter\""), "{err}");
    }
    // Fixing the target lets catch-up go on from where it stopped.
    target.psql("app", "DROP INDEX tokens_first_letter");
    follow(&source, &target, &[]);
    assert_verified(&source, &target);
}
