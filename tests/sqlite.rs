//! SQLite to PostgreSQL: a database built here with the sqlite3 library (JSON
//! metadata, 0/1 booleans, ISO and epoch timestamps, an FTS5 table, blobs) moves with
//! mapped types, keys and search; verify compares across engines; bad files and bad
//! values fail with where and why.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use pgshift_testkit::{Cluster, PgVersion};
use pgshift_embed::Embedder;
use rusqlite::Connection;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgshift-sqlite-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("app.db")
}

fn build_app_db(path: &Path) {
    let db = Connection::open(path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = DELETE;
         CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, active BOOLEAN NOT NULL DEFAULT 1,
                             created_at DATETIME, score REAL, avatar BLOB);
         CREATE TABLE messages (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                                body TEXT, meta TEXT, sent_at INTEGER, flagged INTEGER);
         CREATE INDEX messages_user ON messages(user_id);
         CREATE VIRTUAL TABLE message_search USING fts5(title, body);
         CREATE TABLE settings (k TEXT PRIMARY KEY, v) WITHOUT ROWID;",
    )
    .unwrap();
    let tx = db.unchecked_transaction().unwrap();
    for i in 1..=50i64 {
        let created = if i % 2 == 0 { format!("2024-03-{:02} 08:30:00", i % 28 + 1) } else { format!("2024-03-{:02}T08:30:00.25Z", i % 28 + 1) };
        tx.execute(
            "INSERT INTO users (id, email, active, created_at, score, avatar) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![i, format!("user{i}@example.com"), i % 3 != 0, created, i as f64 / 3.0, vec![0u8, i as u8, 255]],
        )
        .unwrap();
    }
    for i in 1..=200i64 {
        let meta = format!(r#"{{"lang": "{}", "tags": ["t{}", "x"], "n": {i}}}"#, if i % 2 == 0 { "en" } else { "de" }, i % 5);
        tx.execute(
            "INSERT INTO messages (id, user_id, body, meta, sent_at, flagged) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![i, 1 + i % 50, format!("message {i}: naïve café 🐘"), meta, 1_700_000_000 + i * 60, i % 7 == 0],
        )
        .unwrap();
    }
    for i in 1..=30 {
        let body = if i % 3 == 0 { "the needle is here" } else { "only hay" };
        tx.execute("INSERT INTO message_search (title, body) VALUES (?1, ?2)", rusqlite::params![format!("doc {i}"), body]).unwrap();
    }
    tx.execute_batch("INSERT INTO settings VALUES ('theme', 'dark'), ('limit', 10), ('ratio', 0.5);").unwrap();
    tx.commit().unwrap();
}

fn migrate_args<'a>(db: &'a str, target: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["migrate", "--source", db, "--target", target, "--sqlite-type", "messages.sent_at=timestamptz", "--sqlite-type", "messages.flagged=boolean"];
    a.extend_from_slice(extra);
    a
}

#[test]
fn an_app_database_moves_with_mapped_types_keys_and_search() {
    let path = temp_db("app");
    build_app_db(&path);
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    let (db, t) = (format!("sqlite://{}", path.display()), target.url("app"));

    let out = pgshift_expect(0, &["inspect", "--source", &db, "--json"]);
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let messages = inspected.as_array().unwrap().iter().find(|t| t["name"] == "messages").unwrap();
    let meta = messages["columns"].as_array().unwrap().iter().find(|c| c["name"] == "meta").unwrap();
    assert_eq!((meta["declared"].as_str(), meta["pg"].as_str()), (Some("TEXT"), Some("jsonb")), "{meta}");
    // With migrate's overrides, the preview shows the types the load will use.
    let out = pgshift_expect(0, &["inspect", "--source", &db, "--sqlite-type", "messages.sent_at=timestamptz", "--json"]);
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let messages = inspected.as_array().unwrap().iter().find(|t| t["name"] == "messages").unwrap();
    let sent = messages["columns"].as_array().unwrap().iter().find(|c| c["name"] == "sent_at").unwrap();
    assert_eq!(sent["pg"].as_str(), Some("timestamptz"), "{sent}");

    let out = pgshift_expect(0, &migrate_args(&db, &t, &["--dry-run", "--json"]));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables: Vec<&str> = plan["plan"].as_array().unwrap().iter().map(|p| p["table"].as_str().unwrap()).collect();
    assert_eq!(tables, ["public.message_search", "public.messages", "public.settings", "public.users"], "FTS5 shadow tables are skipped");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0", "dry run writes nothing");

    let out = pgshift_expect(0, &migrate_args(&db, &t, &["--jobs", "2"]));
    assert!(stdout(&out).contains("users"), "{}", stdout(&out));
    let types = target.psql(
        "app",
        "SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ',' ORDER BY table_name, ordinal_position) \
         FROM information_schema.columns WHERE table_schema = 'public'",
    );
    for expected in [
        "users.id:bigint",
        "users.active:boolean",
        "users.created_at:timestamp with time zone",
        "users.score:double precision",
        "users.avatar:bytea",
        "messages.meta:jsonb",
        "messages.sent_at:timestamp with time zone",
        "messages.flagged:boolean",
        "message_search.rowid:bigint",
        "message_search.search:tsvector",
        "settings.v:text",
    ] {
        assert!(types.contains(expected), "{expected} in {types}");
    }
    assert_eq!(target.psql("app", "SELECT created_at = '2024-03-02 08:30:00.25+00' FROM users WHERE id = 1"), "t");
    assert_eq!(target.psql("app", "SELECT sent_at = to_timestamp(1700000060) FROM messages WHERE id = 1"), "t");
    assert_eq!(target.psql("app", "SELECT count(*) FROM messages WHERE meta->>'lang' = 'en' AND meta->'tags' ? 'x'"), "100");
    assert_eq!(target.psql("app", "SELECT count(*) FILTER (WHERE flagged), count(*) FILTER (WHERE NOT active) FROM messages JOIN users ON users.id = user_id"), "28|64");
    assert_eq!(target.psql("app", "SELECT encode(avatar, 'hex') FROM users WHERE id = 7"), "0007ff");
    assert_eq!(target.psql("app", "SELECT body FROM messages WHERE id = 3"), "message 3: naïve café 🐘");
    assert_eq!(target.psql("app", "SELECT count(*) FROM message_search WHERE search @@ to_tsquery('simple', 'needle')"), "10");
    let indexes = target.psql("app", "SELECT string_agg(indexdef, E'\\n') FROM pg_indexes WHERE schemaname = 'public'");
    assert!(indexes.contains("USING gin (search)") && indexes.contains("UNIQUE INDEX") && indexes.contains("messages_user"), "{indexes}");
    assert_eq!(target.psql("app", "SELECT convalidated FROM pg_constraint WHERE contype = 'f' AND conrelid = 'messages'::regclass"), "t");
    assert_eq!(target.psql("app", "INSERT INTO users (email) VALUES ('new@example.com') RETURNING id"), "51", "identity continues past max");
    target.psql("app", "DELETE FROM users WHERE id = 51");

    let verify = |expect: i32| pgshift_expect(expect, &["verify", "--source", &db, "--target", &t, "--sqlite-type", "messages.sent_at=timestamptz,messages.flagged=boolean"]);
    verify(0);
    target.psql("app", "UPDATE messages SET meta = meta || '{\"n\": 0}' WHERE id = 5");
    let out = verify(1);
    assert!(stdout(&out).contains("different content"), "{}", stdout(&out));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn bad_files_and_bad_values_fail_with_where_and_why() {
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    let t = target.url("app");
    let nothing_written = || assert_eq!(target.psql("app", "SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'pgshift')"), "0");

    // Not a SQLite file.
    let path = temp_db("notsqlite");
    std::fs::write(&path, "this is a text file, not a database, and it is long enough to have a header").unwrap();
    let db = format!("sqlite://{}", path.display());
    let out = pgshift_expect(2, &["migrate", "--source", &db, "--target", &t]);
    assert!(stderr(&out).contains("is not a SQLite database"), "{}", stderr(&out));
    nothing_written();

    // Locked by another process's write transaction.
    let path = temp_db("locked");
    build_app_db(&path);
    let db = format!("sqlite://{}", path.display());
    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE; UPDATE users SET score = 0 WHERE id = 1;").unwrap();
    let out = pgshift_expect(2, &["migrate", "--source", &db, "--target", &t]);
    assert!(stderr(&out).contains("locked by another process"), "{}", stderr(&out));
    holder.execute_batch("ROLLBACK").unwrap();
    nothing_written();

    // Invalid UTF-8 in a TEXT column and a non-JSON value in a JSON column.
    let raw = Connection::open(&path).unwrap();
    raw.execute("UPDATE messages SET body = CAST(X'6869FF21' AS TEXT) WHERE id = 17", []).unwrap();
    let out = pgshift_expect(2, &migrate_args(&db, &t, &[]));
    assert!(stderr(&out).contains("table messages, row id=17, column body: invalid UTF-8 at byte 2"), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT count(*) FROM pgshift.chunks WHERE table_name = 'public.messages' AND done_at IS NOT NULL"), "0");

    // With a reject file the rest goes through and the bad row is listed.
    let rejects = path.with_extension("rejects.jsonl");
    target.psql("app", "DROP SCHEMA pgshift CASCADE; DROP TABLE message_search, messages, settings, users CASCADE");
    let reject_arg = rejects.display().to_string();
    pgshift_expect(0, &migrate_args(&db, &t, &["--reject-file", &reject_arg]));
    assert_eq!(target.psql("app", "SELECT count(*) FROM messages"), "199");
    let line = std::fs::read_to_string(&rejects).unwrap();
    assert!(line.contains(r#""table":"messages","key":"id=17","column":"body""#), "{line}");

    // A declared JSON column holding something else names table, row and column.
    let path = temp_db("json");
    let db = format!("sqlite://{}", path.display());
    Connection::open(&path).unwrap().execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, payload JSON); INSERT INTO events VALUES (1, '{\"a\": 1}'), (2, '{oops');").unwrap();
    let target2 = Cluster::start(PgVersion::V16);
    target2.create_database("app");
    let out = pgshift_expect(2, &["migrate", "--source", &db, "--target", &target2.url("app")]);
    assert!(stderr(&out).contains("table events, row id=2, column payload: not JSON"), "{}", stderr(&out));
    for name in ["notsqlite", "locked", "json"] {
        let _ = std::fs::remove_dir_all(temp_db(name).parent().unwrap());
    }
}

#[test]
fn embedding_specs_work_for_sqlite_sources() {
    let path = temp_db("embed");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, title TEXT NOT NULL, body TEXT, embedding BLOB);
             INSERT INTO notes (title, body, embedding) VALUES ('A man is eating food.', NULL, x'00112233'),
               ('A man is eating a piece of bread.', '', NULL), ('A woman is playing violin.', 'music', x'ff'), ('x', NULL, NULL);",
        )
        .unwrap();
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    let db = format!("sqlite://{}", path.display());
    let spec = "notes.embedding=title || coalesce(' ' || body, '')";
    let t = target.url("app");
    let run = |extra: &[&str]| {
        let mut args = vec!["migrate", "--source", db.as_str(), "--target", t.as_str()];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_pgshift")).args(&args).envs(model_env()).output().unwrap()
    };
    let out = run(&["--embed", "notes.embedding=titel || body"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("fails in SQLite") && stderr(&out).contains("titel"), "{}", stderr(&out));

    let out = run(&["--embed", spec]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT count(embedding) FROM notes"), "4");
    assert!(target.psql("app", "SELECT indexdef FROM pg_indexes WHERE tablename = 'notes'").contains("hnsw"));
    let want = local_model().embed(&["A woman is playing violin. music"]).unwrap().remove(0);
    let stored: Vec<f32> = target
        .psql("app", "SELECT embedding::text FROM notes WHERE id = 3")
        .trim_matches(['[', ']'])
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    let dot: f32 = stored.iter().zip(&want).map(|(a, b)| a * b).sum();
    assert!(dot > 0.9999, "cosine {dot}");
    // The old BLOB vectors were replaced by computed ones: verify leaves that column out and says so.
    let out = pgshift_expect(0, &["verify", "--source", &db, "--target", &t, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tables"][0]["not_compared"], serde_json::json!(["embedding"]), "{report}");
    // The other columns are still compared.
    target.psql("app", "UPDATE notes SET body = 'changed' WHERE id = 3");
    pgshift_expect(1, &["verify", "--source", &db, "--target", &t]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn a_load_killed_midway_resumes_without_copying_finished_tables_again() {
    let path = temp_db("resume");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO small SELECT i, 'v' || i FROM n;
             CREATE TABLE big (id INTEGER PRIMARY KEY, body TEXT, at TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400000)
               INSERT INTO big SELECT i, hex(randomblob(40)), '2024-01-01 00:00:00' FROM n;",
        )
        .unwrap();
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    let (db, t) = (format!("sqlite://{}", path.display()), target.url("app"));
    let args = ["migrate", "--source", &db, "--target", &t, "--jobs", "2"];
    let child = Background::pgshift(&args);
    wait_until("the small table's checkpoint", std::time::Duration::from_secs(120), || {
        target.psql("app", "SELECT to_regclass('pgshift.chunks') IS NOT NULL") == "t"
            && target.psql("app", "SELECT count(done_at) FROM pgshift.chunks WHERE table_name = 'public.small'") == "1"
    });
    child.stop();
    assert_eq!(target.psql("app", "SELECT count(done_at) FROM pgshift.chunks WHERE table_name = 'public.big'"), "0", "the kill came too late to test anything");
    let small_done = target.psql("app", "SELECT done_at FROM pgshift.chunks WHERE table_name = 'public.small'");

    let out = pgshift_expect(2, &args);
    assert!(stderr(&out).contains("pass --resume"), "{}", stderr(&out));
    pgshift_expect(0, &[&args[..], &["--resume"]].concat());
    assert_eq!(target.psql("app", "SELECT done_at FROM pgshift.chunks WHERE table_name = 'public.small'"), small_done, "the finished table was not copied again");
    assert_eq!(target.psql("app", "SELECT count(*) FROM big"), "400000");
    assert_eq!(target.psql("app", "SELECT phase FROM pgshift.runs"), "done");
    pgshift_expect(0, &["verify", "--source", &db, "--target", &t]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn f32_blob(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|f| f.to_le_bytes()).collect()
}

#[test]
fn libsql_vector_columns_and_float_blobs_become_pgvector() {
    let path = temp_db("vectors");
    let conn = Connection::open(&path).unwrap();
    // libSQL declares native vectors as F32_BLOB(n) and stores little-endian float32s;
    // other apps keep raw float BLOBs or JSON arrays, which an override maps.
    conn.execute_batch("CREATE TABLE chunks (id INTEGER PRIMARY KEY, body TEXT, embedding F32_BLOB(3), raw BLOB, listed TEXT)").unwrap();
    let rows = [
        (1, Some(f32_blob(&[1.0, 2.5, -3.0])), f32_blob(&[0.5, 0.25]), "[0.5, 0.25]"),
        (2, Some(f32_blob(&[0.1, 1e-7, 123456.79])), f32_blob(&[-1.0, 0.0]), "[1e-3, -2]"),
        (3, None, f32_blob(&[0.0, 1.0]), "[0, 1]"),
    ];
    for (id, embedding, raw, listed) in &rows {
        conn.execute("INSERT INTO chunks VALUES (?1, 'chunk', ?2, ?3, ?4)", rusqlite::params![id, embedding, raw, listed]).unwrap();
    }
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    let (db, t) = (format!("sqlite://{}", path.display()), target.url("app"));
    let overrides = ["--sqlite-type", "chunks.raw=vector(2)", "--sqlite-type", "chunks.listed=vector(2)"];
    let out = pgshift_expect(2, &["migrate", "--source", &db, "--target", &t, "--sqlite-type", "chunks.raw=vector(x)"]);
    assert!(stderr(&out).contains("vector(N)"), "{}", stderr(&out));

    pgshift_expect(0, &[&["migrate", "--source", &db, "--target", &t][..], &overrides].concat());
    let types = target.psql(
        "app",
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute \
         WHERE attrelid = 'chunks'::regclass AND attnum > 2",
    );
    assert_eq!(types, "embedding vector(3), raw vector(2), listed vector(2)");
    assert_eq!(target.psql("app", "SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'vector'"), "public");
    assert_eq!(target.psql("app", "SELECT embedding::text || ' ' || raw::text || ' ' || listed::text FROM chunks WHERE id = 1"), "[1,2.5,-3] [0.5,0.25] [0.5,0.25]");
    assert_eq!(target.psql("app", "SELECT count(*) FROM chunks WHERE embedding IS NULL"), "1");
    // Every float arrives as the same float4: verify compares them value by value.
    pgshift_expect(0, &[&["verify", "--source", &db, "--target", &t][..], &overrides].concat());
    target.psql("app", "UPDATE chunks SET embedding = '[0.1,1e-7,123456.8]' WHERE id = 2");
    pgshift_expect(1, &[&["verify", "--source", &db, "--target", &t][..], &overrides].concat());

    // A BLOB of the wrong size names table, row and column; the table's copy is rolled back.
    conn.execute("INSERT INTO chunks VALUES (4, 'short', X'0000803F00', NULL, NULL)", []).unwrap();
    target.create_database("second");
    let out = pgshift_expect(2, &["migrate", "--source", &db, "--target", &target.url("second")]);
    assert!(stderr(&out).contains("table chunks, row id=4, column embedding: a BLOB of 5 bytes is not a vector of 3"), "{}", stderr(&out));
    assert_eq!(target.psql("second", "SELECT count(*) FROM chunks"), "0");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn a_sqlite_database_goes_to_a_schema_of_its_own_beside_a_postgresql_one() {
    // The PostgreSQL app already has users in public; the SQLite app's users go to `app`.
    let (postgres, target) = pair(PgVersion::V15, PgVersion::V16);
    postgres.psql("app", "CREATE TABLE users (id bigint PRIMARY KEY, email text); INSERT INTO users VALUES (1, 'pg@example.com')");
    migrate(&postgres, &target, &[]);
    let path = temp_db("schema");
    build_app_db(&path);
    let (db, t) = (format!("sqlite://{}", path.display()), target.url("app"));

    let out = pgshift_expect(2, &migrate_args(&db, &t, &["--map-schema", "public=app"]));
    assert!(stderr(&out).contains("write --map-schema main=NAME"), "{}", stderr(&out));
    let out = pgshift_expect(2, &migrate_args(&db, &t, &[]));
    assert!(stderr(&out).contains("public.users"), "the collision is named: {}", stderr(&out));

    let sources = format!(r#"[{{"url": "{db}"}}]"#);
    let out = pgshift_expect(2, &["consolidate", "--sources", &sources, "--target", &t, "--dry-run"]);
    assert!(stderr(&out).contains("migrate --source sqlite://... --map-schema main=NAME"), "{}", stderr(&out));
    pgshift_expect(0, &migrate_args(&db, &t, &["--map-schema", "main=app"]));
    let users = Connection::open(&path).unwrap().query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(target.psql("app", "SELECT count(*) FROM app.users"), users.to_string());
    assert_eq!(target.psql("app", "SELECT email FROM public.users"), "pg@example.com");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_constraint WHERE connamespace = 'app'::regnamespace AND contype = 'f'"), "1", "keys within app");
    // verify finds the tables where the run put them; the PostgreSQL source still verifies too.
    let mut verify_args = migrate_args(&db, &t, &[]);
    verify_args[0] = "verify";
    pgshift_expect(0, &verify_args);
    assert_verified(&postgres, &target);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn integer_flag_columns_become_booleans_when_a_check_or_their_name_says_so() {
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    let path = temp_db("flags");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, is_admin INTEGER NOT NULL DEFAULT 0, active INTEGER DEFAULT 1,
           status INTEGER CHECK (status IN (0, 1)), retries INTEGER, has_card INTEGER);
         INSERT INTO accounts (is_admin, active, status, retries, has_card) VALUES (1, 1, 0, 0, 1), (0, NULL, 1, 1, 2), (0, 0, NULL, 1, 0);",
    )
    .unwrap();
    drop(conn);
    let (db, t) = (format!("sqlite://{}", path.display()), target.url("app"));
    let out = pgshift_expect(0, &["inspect", "--source", &db, "--json"]);
    assert!(stdout(&out).contains("reads as a flag"), "inspect says why: {}", stdout(&out));
    pgshift_expect(0, &["migrate", "--source", &db, "--target", &t]);
    let types = target.psql(
        "app",
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attnum > 0",
    );
    // retries holds only 0 and 1 too, but nothing says it is a flag; has_card holds a 2.
    assert_eq!(types, "id bigint, is_admin boolean, active boolean, status boolean, retries bigint, has_card bigint");
    assert_eq!(target.psql("app", "SELECT count(*) FILTER (WHERE is_admin), count(*) FILTER (WHERE active IS NULL) FROM accounts"), "1|1");
    assert!(target.psql("app", "SELECT column_default FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'is_admin'").contains("false"));
    pgshift_expect(0, &["verify", "--source", &db, "--target", &t]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn decimal_columns_stay_exact_when_every_value_fits() {
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    let path = temp_db("numeric");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE products (id INTEGER PRIMARY KEY, price NUMERIC(10,2), weight REAL, ratio DECIMAL(4,2), code TEXT);
         INSERT INTO products (price, weight, ratio, code) VALUES (19.99, 1.25, 0.5, 'a'), (0.1, 2.5, 12.345, 'b'), ('1000000.5', 0.125, 1, 'c'), (3, NULL, NULL, 'd'), (NULL, 7, 2, 'e');",
    )
    .unwrap();
    drop(conn);
    let (db, t) = (format!("sqlite://{}", path.display()), target.url("app"));
    // A comma inside the type's parentheses is part of it.
    pgshift_expect(0, &["migrate", "--source", &db, "--target", &t, "--sqlite-type", "products.weight=numeric(8,3),products.code=text"]);
    let types = target.psql(
        "app",
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'products'::regclass AND attnum > 0",
    );
    // ratio holds 12.345, which numeric(4,2) cannot: double precision, said in the warnings.
    assert_eq!(types, "id bigint, price numeric(10,2), weight numeric(8,3), ratio double precision, code text");
    // Money stays exact: the sum is the decimal sum, not a float's.
    assert_eq!(target.psql("app", "SELECT sum(price), sum(weight) FROM products"), "1000023.59|10.875");
    assert_eq!(target.psql("app", "SELECT price FROM products WHERE id = 2"), "0.10");
    pgshift_expect(0, &["verify", "--source", &db, "--target", &t, "--sqlite-type", "products.weight=numeric(8,3)"]);
    let out = pgshift_expect(2, &["migrate", "--source", &db, "--target", &t, "--dry-run", "--sqlite-type", "products.price=numeric(10"]);
    assert!(stderr(&out).contains("unknown type \"numeric(10\""), "the bad part is named: {}", stderr(&out));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
