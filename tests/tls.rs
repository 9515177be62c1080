//! Servers that accept only TLS: the load, the slot's replication connection and
//! catch-up all go over TLS, with and without certificate verification.

mod common;

use common::*;
use pgshift_testkit::{Cluster, ClusterOptions, PgVersion};

#[test]
fn tls_only_source_is_migrated_and_followed_over_tls() {
    // Debian's PostgreSQL 15 is built with OpenSSL.
    let source = Cluster::start_with(PgVersion::V15, &ClusterOptions { tls_only: true, ..Default::default() });
    let target = Cluster::start(PgVersion::V16);
    source.create_database("app");
    target.create_database("app");
    source.psql("app", "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT i, 'n' || i FROM generate_series(1, 1000) i");
    let t = target.url("app");

    // Plain TCP is refused by the server, and the error says so without the password.
    let plain = format!("{}?sslmode=disable", source.url("app"));
    let out = pgshift_expect(2, &["inspect", "--source", &plain]);
    assert!(stderr(&out).contains("no encryption"), "{}", stderr(&out));

    let require = format!("{}?sslmode=require", source.url("app"));
    pgshift_expect(0, &["migrate", "--source", &require, "--target", &t, "--load-only"]);
    source.psql("app", "UPDATE notes SET body = 'changed' WHERE id <= 10; DELETE FROM notes WHERE id > 990");

    let verified = format!("{}?sslmode=verify-full&sslrootcert={}", source.url("app"), source.tls_cert().display());
    pgshift_expect(0, &["follow", "--source", &verified, "--target", &t, "--until-caught-up"]);
    let out = pgshift(&["verify", "--source", &verified, "--target", &t]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));

    // verify-full against the public roots rejects the self-signed certificate.
    let untrusted = format!("{}?sslmode=verify-full", source.url("app"));
    let out = pgshift_expect(2, &["inspect", "--source", &untrusted]);
    assert!(stderr(&out).to_lowercase().contains("certificate"), "{}", stderr(&out));
}
