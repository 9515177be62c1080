//! Two databases into one: a "main" database without pgvector and a "vector"
//! database, loaded into one pgvector target by two runs that follow their own
//! sources at the same time; a key between them is declared and validated.

mod common;

use std::time::Duration;

use common::*;
use pgshift_testkit::{Cluster, PgVersion};

const MAIN: &str = "
CREATE TABLE assets (id uuid PRIMARY KEY, name text NOT NULL);
INSERT INTO assets SELECT md5('a' || i)::uuid, 'asset ' || i FROM generate_series(1, 40) i;
CREATE TABLE users (id int PRIMARY KEY, email text);
INSERT INTO users SELECT i, 'u' || i || '@example.com' FROM generate_series(1, 20) i;
";
const VECTORS: &str = "
CREATE EXTENSION vector;
CREATE TABLE documents (id bigint PRIMARY KEY, asset_id uuid NOT NULL, body text, embedding vector(3));
INSERT INTO documents SELECT i, md5('a' || (1 + i % 40))::uuid, 'doc ' || i, ARRAY[i, 1, 0]::vector FROM generate_series(1, 120) i;
";
const LINK: &str = "documents(asset_id) -> assets(id)";

fn clusters() -> (Cluster, Cluster, Cluster) {
    let (main, vectors) = pair(PgVersion::V15, PgVersion::V16);
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    main.psql("app", MAIN);
    vectors.psql("app", VECTORS);
    (main, vectors, target)
}

#[test]
fn two_sources_load_and_follow_into_one_target() {
    let (main, vectors, target) = clusters();
    let out = migrate(&main, &target, &["--json", "--foreign-key", LINK]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["foreign_keys"][0].as_str().unwrap().contains("waits for documents"), "{report}");
    let out = migrate(&vectors, &target, &["--json", "--foreign-key", LINK]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Both sources are followed: the key is judged at the last cutover (see below).
    assert!(report["foreign_keys"][0].as_str().unwrap().contains("added NOT VALID"), "{report}");
    assert_eq!(target.psql("app", "SELECT convalidated FROM pg_constraint WHERE conname = 'documents_asset_id_fkey'"), "f");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pgshift.runs WHERE phase = 'loaded'"), "2");
    let out = pgshift_expect(0, &["status", "--target", &target.url("app"), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sources: Vec<&str> = status["runs"].as_array().unwrap().iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(sources, [format!("postgres@127.0.0.1:{}/app", vectors.port), format!("postgres@127.0.0.1:{}/app", main.port)], "{status}");

    // Both change; both runs follow at once, each from its own slot.
    main.psql("app", "INSERT INTO assets VALUES (md5('new')::uuid, 'new asset'); UPDATE users SET email = 'changed' WHERE id < 5");
    vectors.psql("app", "INSERT INTO documents VALUES (500, md5('new')::uuid, 'about the new asset', '[1,2,3]'); DELETE FROM documents WHERE id > 100 AND id < 500");
    let follower = |source: &Cluster| {
        let (s, t) = (source.url("app"), target.url("app"));
        Background::pgshift(&["follow", "--source", &s, "--target", &t, "--until-caught-up"])
    };
    let (a, b) = (follower(&main), follower(&vectors));
    for run in [a, b] {
        let out = run.wait(Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_verified(&main, &target);
    assert_verified(&vectors, &target);
    assert_eq!(target.psql("app", "SELECT a.name FROM documents d JOIN assets a ON a.id = d.asset_id WHERE d.id = 500"), "new asset");

    // A follow that cannot tell which run it means says so.
    let other = Cluster::start(PgVersion::V15);
    other.create_database("app");
    let out = pgshift_expect(2, &["follow", "--source", &other.url("app"), "--target", &target.url("app"), "--until-caught-up"]);
    assert!(stderr(&out).contains("several loaded runs"), "{}", stderr(&out));
}

#[test]
fn a_declared_key_the_data_breaks_lists_the_rows() {
    let (main, vectors, target) = clusters();
    vectors.psql("app", "INSERT INTO documents VALUES (900, md5('missing')::uuid, 'orphan', NULL)");
    migrate(&main, &target, &["--no-follow"]);
    let (s, t) = (vectors.url("app"), target.url("app"));
    let out = pgshift_expect(2, &["migrate", "--source", &s, "--target", &t, "--no-follow", "--foreign-key", LINK]);
    let missing = main.psql("app", "SELECT md5('missing')::uuid");
    assert!(stderr(&out).contains(&format!("({missing})")) && stderr(&out).contains("does not hold"), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_constraint WHERE conname = 'documents_asset_id_fkey'"), "0", "no half-made key");
    assert_eq!(target.psql("app", "SELECT count(*) FROM documents"), "121", "the data is loaded");
}

#[test]
fn a_text_key_becomes_uuid_on_the_way() {
    let (main, vectors) = pair(PgVersion::V15, PgVersion::V16);
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    // The main database keeps asset ids as text (some in upper case); the vector one as uuid.
    main.psql(
        "app",
        "CREATE TABLE assets (id text PRIMARY KEY, name text NOT NULL);
         INSERT INTO assets SELECT CASE WHEN i % 2 = 0 THEN upper(md5('a' || i)::uuid::text) ELSE md5('a' || i)::uuid::text END, 'asset ' || i
           FROM generate_series(1, 40) i;",
    );
    vectors.psql("app", VECTORS);
    let (m, t) = (main.url("app"), target.url("app"));

    main.psql("app", "INSERT INTO assets VALUES ('not-a-uuid', 'broken')");
    let out = pgshift_expect(2, &["migrate", "--source", &m, "--target", &t, "--load-only", "--cast", "assets.id=uuid"]);
    assert!(stderr(&out).contains(r#"key (not-a-uuid) = "not-a-uuid""#), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'pgshift')"), "0", "nothing written");
    main.psql("app", "DELETE FROM assets WHERE id = 'not-a-uuid'");

    migrate(&main, &target, &["--cast", "assets.id=uuid"]);
    migrate(&vectors, &target, &["--foreign-key", LINK]);
    assert_eq!(target.psql("app", "SELECT data_type FROM information_schema.columns WHERE table_name = 'assets' AND column_name = 'id'"), "uuid");
    assert_eq!(target.psql("app", "SELECT convalidated FROM pg_constraint WHERE conname = 'documents_asset_id_fkey'"), "f", "judged at the last cutover");

    // Catch-up carries new text keys into the uuid column.
    main.psql("app", &format!("INSERT INTO assets VALUES ('{}', 'late asset')", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"));
    follow(&main, &target, &[]);
    assert_eq!(target.psql("app", "SELECT name FROM assets WHERE id = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"), "late asset");
    assert_verified(&main, &target);
}

#[test]
fn one_command_consolidates_the_sources_of_a_config_file() {
    let (main, vectors, target) = clusters();
    let dir = std::env::temp_dir().join(format!("pgshift-consolidate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgshift.toml");
    std::fs::write(
        &file,
        format!(
            "target = \"{}\"\nforeign_keys = [\"{LINK}\"]\n\n[[sources]]\nurl = \"{}\"\ntables = [\"assets\"]\n\n[[sources]]\nurl = \"{}\"\n",
            target.url("app"),
            main.url("app"),
            vectors.url("app")
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    pgshift_expect(0, &["config", "check", f]);
    let out = pgshift_expect(0, &["consolidate", "--config", f, "--load-only", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["loads"].as_array().unwrap().len(), 2, "{report}");
    assert!(report["loads"][1]["foreign_keys"][0].as_str().unwrap().contains("added NOT VALID"), "{report}");

    // Run again: the loaded sources are not loaded twice; both are followed.
    main.psql("app", "INSERT INTO assets VALUES (md5('late')::uuid, 'late')");
    let out = pgshift_expect(0, &["consolidate", "--config", f, "--until-caught-up", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["loads"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["follows"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_tables WHERE tablename = 'users'"), "0", "only the tables listed for main");
    assert_eq!(target.psql("app", "SELECT count(*) FROM assets"), "41");
    let out = verify(&main, &target, &["--tables", "assets"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_verified(&vectors, &target);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The vector database has its own `users`, a serial, an enum, a key between its
/// tables and an expression index: all of it moves to schema `vec`, while the
/// extension's type stays `public.vector`.
const VECTORS_WITH_USERS: &str = "
CREATE EXTENSION vector;
CREATE TYPE kind AS ENUM ('note', 'page');
CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE);
INSERT INTO users (email) SELECT 'v' || i || '@example.com' FROM generate_series(1, 30) i;
CREATE TABLE documents (id bigint PRIMARY KEY, user_id int NOT NULL REFERENCES users(id), kind kind NOT NULL DEFAULT 'note',
                        body text, embedding vector(3));
CREATE INDEX documents_body ON documents (lower(body));
INSERT INTO documents SELECT i, 1 + i % 30, 'page', 'doc ' || i, ARRAY[i, 1, 0]::vector FROM generate_series(1, 60) i;
";

#[test]
fn same_named_tables_of_two_sources_go_to_schemas_of_their_own() {
    let (main, vectors) = pair(PgVersion::V15, PgVersion::V16);
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    main.psql("app", MAIN);
    vectors.psql("app", VECTORS_WITH_USERS);
    let dir = std::env::temp_dir().join(format!("pgshift-schemas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgshift.toml");
    let config = format!(
        "target = \"{}\"\n\n[[sources]]\nurl = \"{}\"\n\n[[sources]]\nurl = \"{}\"\nmap_schema = {{ public = \"vec\" }}\n",
        target.url("app"),
        main.url("app"),
        vectors.url("app")
    );
    std::fs::write(&file, config).unwrap();
    let f = file.to_str().unwrap();
    pgshift_expect(0, &["config", "check", f]);
    // A map set for all sources at once would be ignored: refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["consolidate", "--config", f, "--dry-run"])
        .env("PGSHIFT_MAP_SCHEMA", "public=elsewhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("move it into the [[sources]] section"), "{}", stderr(&out));

    // Without the map the second source's users would land on the first one's.
    let (v, t) = (vectors.url("app"), target.url("app"));
    migrate(&main, &target, &[]);
    let out = pgshift_expect(2, &["migrate", "--source", &v, "--target", &t, "--dry-run"]);
    assert!(stderr(&out).contains("target table public.users already holds rows") && stderr(&out).contains("--map-schema"), "{}", stderr(&out));
    let out = pgshift_expect(2, &["migrate", "--source", &v, "--target", &t, "--map-schema", "public"]);
    assert!(stderr(&out).contains("SOURCE_SCHEMA=TARGET_SCHEMA"), "{}", stderr(&out));

    pgshift_expect(0, &["consolidate", "--config", f, "--load-only"]);
    assert_eq!(target.psql("app", "SELECT count(*) FROM public.users"), "20");
    assert_eq!(target.psql("app", "SELECT count(*) FROM vec.users"), "30");
    let column = |table: &str, col: &str| {
        target.psql(
            "app",
            &format!(
                "SELECT n.nspname || '.' || format_type(a.atttypid, a.atttypmod) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 JOIN pg_namespace n ON n.oid = t.typnamespace WHERE a.attrelid = '{table}'::regclass AND a.attname = '{col}'"
            ),
        )
    };
    assert_eq!(column("vec.documents", "embedding"), "public.vector(3)", "the extension's type stays where the extension is");
    assert_eq!(column("vec.documents", "kind"), "vec.vec.kind");
    assert_eq!(target.psql("app", "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'vec.users'::regclass"), "nextval('vec.users_id_seq'::regclass)");
    assert_eq!(target.psql("app", "SELECT confrelid::regclass::text FROM pg_constraint WHERE conrelid = 'vec.documents'::regclass AND contype = 'f'"), "vec.users");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_indexes WHERE schemaname = 'vec' AND indexname = 'documents_body'"), "1");
    let out = pgshift_expect(0, &["status", "--target", &t, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["runs"][0]["schema_map"], serde_json::json!({"public": "vec"}), "{status}");
    assert_eq!(status["runs"][1]["schema_map"], serde_json::json!({}), "{status}");

    // inspect compares each table with its counterpart in the mapped schema.
    let out = pgshift_expect(0, &["inspect", "--source", &v, "--target", &t, "--map-schema", "public=vec", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for table in report["tables"].as_array().unwrap() {
        assert_eq!(table["in_target"], true, "{table}");
        assert_eq!(table["target_differences"], serde_json::json!([]), "{table}");
    }

    // Both follow at once; the second one's changes land in vec.
    main.psql("app", "UPDATE users SET email = 'main changed' WHERE id = 1");
    vectors.psql(
        "app",
        "INSERT INTO users (email) VALUES ('late@example.com');
         UPDATE users SET email = 'vec changed' WHERE id = 1;
         INSERT INTO documents VALUES (100, 31, 'note', 'late doc', '[1,2,3]');
         DELETE FROM documents WHERE id < 5;",
    );
    pgshift_expect(0, &["consolidate", "--config", f, "--until-caught-up"]);
    assert_eq!(target.psql("app", "SELECT email FROM public.users WHERE id = 1"), "main changed");
    assert_eq!(target.psql("app", "SELECT email FROM vec.users WHERE id = 1"), "vec changed");
    assert_eq!(target.psql("app", "SELECT body FROM vec.documents WHERE user_id = 31"), "late doc");
    assert_verified(&main, &target);
    assert_verified(&vectors, &target);

    // Cutover of the vector database: sequences and counts are compared across the
    // map, and with --reverse the changes on the target flow back into public.
    let out = pgshift_expect(0, &["cutover", "--source", &v, "--target", &t, "--reverse", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sequences_synced"], 1, "{report}");
    let id: i64 = target.psql("app", "INSERT INTO vec.users (email) VALUES ('after the cutover') RETURNING id").parse().unwrap();
    assert_eq!(id, 32, "the target's sequence continues the source's");
    pgshift_expect(0, &["follow", "--source", &t, "--target", &v, "--until-caught-up"]);
    assert_eq!(vectors.psql("app", "SELECT email FROM public.users WHERE id = 32"), "after the cutover");
    // And back: the rollback fences vec on the target and continues public's sequence.
    target.psql("app", "INSERT INTO vec.users (email) VALUES ('last before the rollback')");
    pgshift_expect(0, &["rollback", "--source", &v, "--target", &t]);
    let id: i64 = vectors.psql("app", "INSERT INTO users (email) VALUES ('back home') RETURNING id").parse().unwrap();
    assert_eq!(id, 34, "the old database's sequence continues the target's");
    assert_eq!(vectors.psql("app", "SELECT count(*) FROM users"), "34");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pgvector_kept_in_another_schema_on_the_source_lands_where_the_target_has_it() {
    // Supabase keeps extensions in schema `extensions`; the target has pgvector in public.
    let (source, target) = pair(PgVersion::V16, PgVersion::V16);
    source.psql(
        "app",
        "CREATE SCHEMA extensions; CREATE EXTENSION vector WITH SCHEMA extensions;
         CREATE TABLE items (id bigint PRIMARY KEY, embedding extensions.vector(3) NOT NULL,
                             norm double precision GENERATED ALWAYS AS (extensions.vector_norm(embedding)) STORED);
         CREATE INDEX items_embedding ON items USING hnsw (embedding extensions.vector_cosine_ops);
         INSERT INTO items SELECT i, ARRAY[i, 1, 2]::extensions.vector FROM generate_series(1, 50) i;",
    );
    target.psql("app", "CREATE EXTENSION vector");
    migrate(&source, &target, &[]);
    let type_of = "SELECT n.nspname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace \
                   WHERE a.attrelid = 'items'::regclass AND a.attname = 'embedding'";
    assert_eq!(target.psql("app", type_of), "public");
    assert!(target.psql("app", "SELECT indexdef FROM pg_indexes WHERE indexname = 'items_embedding'").contains("hnsw (embedding vector_cosine_ops)"));
    assert_eq!(target.psql("app", "SELECT round(norm::numeric, 3) FROM items WHERE id = 2"), "3.000");
    let out = pgshift_expect(0, &["inspect", "--source", &source.url("app"), "--target", &target.url("app"), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tables"][0]["target_differences"], serde_json::json!([]), "{report}");

    source.psql("app", "INSERT INTO items VALUES (100, '[3,4,0]'); UPDATE items SET embedding = '[0,0,1]' WHERE id = 1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["follow", "--source", &source.url("app"), "--target", &target.url("app"), "--until-caught-up"])
        .env("PGSHIFT_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("format=Binary"), "the same type in another schema streams binary: {}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT round(norm::numeric, 3) FROM items WHERE id = 100"), "5.000");
    assert_verified(&source, &target);
}

#[test]
fn every_source_is_checked_before_anything_is_written_to_any() {
    let (main, vectors, target) = clusters();
    // The second source's text key does not all convert to uuid.
    vectors.psql("app", "CREATE TABLE notes (id int PRIMARY KEY, asset_id text); INSERT INTO notes VALUES (1, 'not-a-uuid')");
    let sources = format!(
        r#"[{{"url": "{}", "tables": ["assets"]}}, {{"url": "{}", "casts": ["notes.asset_id=uuid"]}}]"#,
        main.url("app"),
        vectors.url("app")
    );
    let out = pgshift_expect(2, &["consolidate", "--sources", &sources, "--target", &target.url("app"), "--load-only"]);
    let err = stderr(&out);
    assert!(err.contains(&format!("127.0.0.1:{}/app", vectors.port)) && err.contains("not-a-uuid"), "the problem names its source: {err}");
    // Nothing was written: no slot or publication on the first source, no run on the target.
    assert_eq!(main.psql("app", "SELECT count(*) FROM pg_replication_slots"), "0");
    assert_eq!(main.psql("app", "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift'"), "0");

    // The cast check writes nothing: it works against a read-only source (PostgreSQL 16+).
    vectors.psql("app", "UPDATE notes SET asset_id = md5('a1')::uuid::text; ALTER DATABASE app SET default_transaction_read_only = on");
    let (s, t) = (vectors.url("app"), target.url("app"));
    pgshift_expect(0, &["migrate", "--source", &s, "--target", &t, "--no-follow", "--tables", "notes", "--cast", "notes.asset_id=uuid"]);
    assert_eq!(target.psql("app", "SELECT pg_typeof(asset_id) FROM notes"), "uuid");
    // And before PostgreSQL 16 (main is 15), where it tries each value in a DO block.
    main.psql(
        "app",
        "CREATE TABLE tags (id int PRIMARY KEY, asset_id text); INSERT INTO tags VALUES (1, md5('a1')::uuid::text), (2, 'nope'), (3, NULL);
         ALTER DATABASE app SET default_transaction_read_only = on",
    );
    let m = main.url("app");
    let out = pgshift_expect(2, &["migrate", "--source", &m, "--target", &t, "--no-follow", "--tables", "tags", "--cast", "tags.asset_id=uuid", "--dry-run"]);
    assert!(stderr(&out).contains(r#"key (2) = "nope""#) && !stderr(&out).contains("(1)"), "{}", stderr(&out));
}

#[test]
fn a_key_across_sources_is_judged_once_both_are_at_the_same_point() {
    let (main, vectors, target) = clusters();
    let (m, v, t) = (main.url("app"), vectors.url("app"), target.url("app"));
    migrate(&main, &target, &["--foreign-key", LINK]);
    // The application writes to both while the second load runs: a new asset on main
    // (not on the target yet) and a document about it on the vector database.
    main.psql("app", "INSERT INTO assets VALUES (md5('fresh')::uuid, 'fresh asset')");
    vectors.psql("app", "INSERT INTO documents VALUES (700, md5('fresh')::uuid, 'about the fresh asset', NULL)");
    // A truly orphaned row too.
    vectors.psql("app", "INSERT INTO documents VALUES (701, md5('gone')::uuid, 'orphan', NULL)");
    let out = migrate(&vectors, &target, &["--json", "--foreign-key", LINK]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["foreign_keys"][0].as_str().unwrap().contains("NOT VALID"), "not judged yet: {report}");
    assert_eq!(target.psql("app", "SELECT convalidated FROM pg_constraint WHERE conname = 'documents_asset_id_fkey'"), "f");
    // The orphan goes away on the source before the end; the fresh asset arrives by catch-up.
    vectors.psql("app", "DELETE FROM documents WHERE id = 701");
    let out = pgshift_expect(0, &["cutover", "--source", &m, "--target", &t, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["foreign_keys"].to_string().contains("NOT VALID"), "the vector database is still live: {report}");
    let out = pgshift_expect(0, &["cutover", "--source", &v, "--target", &t, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["foreign_keys"].to_string().contains("added and validated"), "{report}");
    assert_eq!(target.psql("app", "SELECT convalidated FROM pg_constraint WHERE conname = 'documents_asset_id_fkey'"), "t");
}

/// The merge journey end to end: the vector database keeps asset ids as text (cast to
/// uuid on the way) and the application writes to both databases between the loads,
/// during catch-up and between the two cutovers. The declared key is judged at the
/// last cutover, when both are at the same point: it names the one row that is truly
/// orphaned, and nothing else; every table ends identical to its source.
#[test]
fn the_merge_names_only_the_truly_orphaned_row_and_every_table_matches() {
    let (main, vectors) = pair(PgVersion::V15, PgVersion::V16);
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    main.psql("app", MAIN);
    vectors.psql(
        "app",
        "CREATE EXTENSION vector;
         CREATE TABLE documents (id bigint PRIMARY KEY, asset_id text NOT NULL, body text, embedding vector(3));
         INSERT INTO documents SELECT i, md5('a' || (1 + i % 40))::uuid::text, 'doc ' || i, ARRAY[i, 1, 0]::vector FROM generate_series(1, 120) i;
         CREATE INDEX documents_embedding ON documents USING hnsw (embedding vector_l2_ops);",
    );
    let (m, v, t) = (main.url("app"), vectors.url("app"), target.url("app"));
    migrate(&main, &target, &["--foreign-key", LINK]);
    // Between the loads: a new asset on main (the target learns of it only by catch-up),
    // a document about it, and a document about an asset that exists nowhere.
    main.psql("app", "INSERT INTO assets VALUES (md5('fresh')::uuid, 'fresh asset')");
    vectors.psql(
        "app",
        "INSERT INTO documents VALUES (700, md5('fresh')::uuid::text, 'about the fresh asset', NULL), (701, md5('gone')::uuid::text, 'orphan', NULL)",
    );
    migrate(&vectors, &target, &["--cast", "documents.asset_id=uuid", "--foreign-key", LINK]);
    // During catch-up, on both.
    main.psql("app", "UPDATE users SET email = 'changed' WHERE id < 5; INSERT INTO assets VALUES (md5('later')::uuid, 'later asset')");
    vectors.psql("app", "INSERT INTO documents VALUES (702, md5('later')::uuid::text, 'about the later asset', '[1,1,1]'); DELETE FROM documents WHERE id = 5");
    let out = pgshift_expect(0, &["cutover", "--source", &m, "--target", &t, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["foreign_keys"].to_string().contains("NOT VALID"), "the vector database is still live: {report}");
    // Between the cutovers the application writes on the new database and the vector one.
    target.psql("app", "INSERT INTO assets VALUES (md5('newest')::uuid, 'newest asset')");
    vectors.psql("app", "UPDATE documents SET body = 'edited' WHERE id = 10");
    let out = pgshift_expect(0, &["cutover", "--source", &v, "--target", &t, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = report["foreign_keys"].to_string();
    let orphan = main.psql("app", "SELECT md5('gone')::uuid");
    let fresh = main.psql("app", "SELECT md5('fresh')::uuid");
    assert!(keys.contains("does not hold") && keys.contains(&orphan), "the orphan is named: {keys}");
    assert!(!keys.contains(&fresh) && !keys.contains(&main.psql("app", "SELECT md5('later')::uuid")), "nothing else is: {keys}");
    assert_eq!(target.psql("app", "SELECT convalidated FROM pg_constraint WHERE conname = 'documents_asset_id_fkey'"), "f", "it stays NOT VALID");
    // Independent checksums of every table against its source.
    for (sql, source) in [
        ("SELECT md5(string_agg(format('%s:%s', id, name), ',' ORDER BY id)) FROM assets WHERE name <> 'newest asset'", &main),
        ("SELECT md5(string_agg(format('%s:%s', id, email), ',' ORDER BY id)) FROM users", &main),
        ("SELECT md5(string_agg(format('%s:%s:%s:%s', id, asset_id, body, embedding), ',' ORDER BY id)) FROM documents", &vectors),
    ] {
        assert_eq!(target.psql("app", sql), source.psql("app", sql), "{sql}");
    }
}
