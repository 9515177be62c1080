//! Targets used with Prisma: the migration history table moves like any table, and
//! --extensions-in-template1 gives databases created later (Prisma's shadow
//! database) the extensions the schema needs.

mod common;

use common::*;
use pgshift_testkit::PgVersion;

#[test]
fn prisma_history_moves_and_shadow_databases_get_pgvector() {
    let (source, target) = pair(PgVersion::V16, PgVersion::V18);
    source.psql(
        "app",
        r#"CREATE EXTENSION vector;
        CREATE TABLE "_prisma_migrations" (
            id varchar(36) PRIMARY KEY, checksum varchar(64) NOT NULL, finished_at timestamptz,
            migration_name varchar(255) NOT NULL, logs text, rolled_back_at timestamptz,
            started_at timestamptz NOT NULL DEFAULT now(), applied_steps_count integer NOT NULL DEFAULT 0);
        INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, applied_steps_count)
          SELECT md5(i::text)::uuid::text, md5('c' || i), now(), '2024010' || i || '_init', 1 FROM generate_series(1, 5) i;
        CREATE TABLE "Document" (id serial PRIMARY KEY, "createdAt" timestamptz DEFAULT now(), embedding vector(3));
        INSERT INTO "Document" (embedding) SELECT ARRAY[i, 0, 1]::vector FROM generate_series(1, 20) i;"#,
    );
    // The dry run names the template1 step.
    let (s, t) = (source.url("app"), target.url("app"));
    let out = pgshift_expect(0, &["migrate", "--source", &s, "--target", &t, "--no-follow", "--extensions-in-template1", "--dry-run"]);
    assert!(stdout(&out).contains("template1") && stdout(&out).contains("CREATE EXTENSION IF NOT EXISTS \"vector\""), "{}", stdout(&out));
    migrate(&source, &target, &["--no-follow", "--extensions-in-template1"]);
    assert_verified(&source, &target);
    assert_eq!(target.psql("app", r#"SELECT count(*) FROM "_prisma_migrations" WHERE finished_at IS NOT NULL"#), "5");

    // What `prisma migrate dev` does: create a shadow database and apply the schema there.
    target.psql("postgres", "CREATE DATABASE prisma_shadow");
    assert_eq!(target.psql("prisma_shadow", "SELECT extname FROM pg_extension WHERE extname = 'vector'"), "vector");
    target.psql("prisma_shadow", "CREATE TABLE t (v vector(3))");

    // Without the flag template1 stays as it was.
    let (source2, target2) = pair(PgVersion::V16, PgVersion::V16);
    source2.psql("app", "CREATE EXTENSION vector; CREATE TABLE d (id int PRIMARY KEY, v vector(2))");
    migrate(&source2, &target2, &["--no-follow"]);
    target2.psql("postgres", "CREATE DATABASE shadow");
    assert_eq!(target2.psql("shadow", "SELECT count(*) FROM pg_extension WHERE extname = 'vector'"), "0");
}
