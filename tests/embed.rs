//! Vectors computed on the way: the load embeds a table's text into a pgvector
//! column (cache for repeated texts, HNSW after the load), and bad specs fail
//! before anything is written.

mod common;

use common::*;
use common::http;
use pgshift_embed::Embedder;
use pgshift_testkit::{cache_dir, PgVersion};

const DOCS: &str = "
CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, body text, tags text[]);
INSERT INTO docs SELECT i, 'title ' || (i % 40), CASE WHEN i % 10 = 0 THEN NULL ELSE 'body of document ' || (i % 40) END, ARRAY['t' || i]
  FROM generate_series(1, 240) i;
INSERT INTO docs VALUES (1000, 'A man is eating food.', NULL, NULL), (1001, 'A man is eating a piece of bread.', NULL, NULL),
  (1002, 'A woman is playing violin.', NULL, NULL);
CREATE TABLE plain (id int PRIMARY KEY, v text);
INSERT INTO plain SELECT i, 'v' || i FROM generate_series(1, 50) i;
";
const TEXT: &str = "title || coalesce(' ' || body, '')";

fn run(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift")).args(args).envs(model_env()).output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains(pgshift_testkit::PASSWORD), "password in output: {text}");
    out
}

fn vector_of(target: &pgshift_testkit::Cluster, id: i64) -> Vec<f32> {
    parse_vector(&target.psql("app", &format!("SELECT embedding::text FROM docs WHERE id = {id}")))
}

#[test]
fn the_load_computes_vectors_and_builds_hnsw() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", DOCS);
    let (s, t) = (source.url("app"), target.url("app"));
    let spec = format!("docs.embedding={TEXT}");
    let port = pgshift_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = ["migrate", "--source", &s, "--target", &t, "--embed", &spec, "--split-rows", "100", "--json", "--metrics-addr", &addr];
    let env: Vec<(String, String)> = model_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let migrate = Background::pgshift_with_env(&args, &env);
    let metrics_url = format!("http://{addr}/metrics");
    wait_until("the load to end", std::time::Duration::from_secs(120), || {
        http::sample(&http::get(&metrics_url, None).body, "pgshift_phase{phase=\"catch-up\"}") == Some(1.0)
    });
    let metrics = http::get(&metrics_url, None).body;
    let out = migrate.stop();

    assert_eq!(target.psql("app", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'embedding'"), "vector(384)");
    assert_eq!(target.psql("app", "SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'vector'"), "public", "where applications look for it");
    assert_eq!(target.psql("app", "SELECT count(*), count(embedding) FROM docs"), "243|243");
    assert!(target.psql("app", "SELECT indexdef FROM pg_indexes WHERE tablename = 'docs'").contains("USING hnsw (embedding vector_cosine_ops)"));
    // 40 distinct titles x (body or not) + 3 sentences: each text embedded once, the rest from the cache.
    let distinct = target.psql("app", &format!("SELECT count(DISTINCT {TEXT}) FROM docs"));
    assert_eq!(target.psql("app", "SELECT count(*) FROM pgshift.embedding_cache"), distinct);
    // The embedding metrics moved with the run: every distinct text computed once,
    // every repeat reused.
    let computed = http::sample(&metrics, "pgshift_embeddings_total").unwrap();
    let hits = http::sample(&metrics, "pgshift_embedding_cache_hits_total").unwrap();
    assert_eq!(computed, distinct.parse::<f64>().unwrap(), "{metrics}");
    assert_eq!(computed + hits, 243.0, "{metrics}");
    assert!(http::sample(&metrics, "pgshift_embedding_batch_seconds_count").unwrap() >= 1.0, "{metrics}");
    assert_eq!(http::sample(&metrics, "pgshift_embedding_queue_depth"), Some(0.0), "{metrics}");
    assert_eq!(http::sample(&metrics, "pgshift_vector_index_build_ratio").map(|_| ()), Some(()), "{metrics}");

    // The stored vectors are the model's, for each row's own text.
    let model = local_model();
    let expected = model.embed(&["title 7 body of document 7", "title 10", "A man is eating food."]).unwrap();
    for (id, want) in [(7, &expected[0]), (10, &expected[1]), (1000, &expected[2])] {
        let c = cosine(&vector_of(&target, id), want);
        assert!(c > 0.9999, "row {id}: cosine {c}");
    }
    // Nearest neighbour through the index: bread is closer to food than the violin is.
    let nearest = target.psql(
        "app",
        "SET enable_seqscan = off; SELECT id FROM docs WHERE id IN (1001, 1002) ORDER BY embedding <=> (SELECT embedding FROM docs WHERE id = 1000) LIMIT 1",
    );
    assert!(nearest.ends_with("1001"), "{nearest}");

    // The rest of the row came through untouched, and verify compares the source's columns.
    assert_eq!(md5(&source, "SELECT id, title, body, tags FROM docs"), md5(&target, "SELECT id, title, body, tags FROM docs"));
    assert_verified(&source, &target);
    let report: serde_json::Value = serde_json::Deserializer::from_slice(&out.stdout).into_iter().next().unwrap().unwrap();
    assert_eq!(report["embeddings"][0]["column"], "embedding", "{report}");
}

fn md5(c: &pgshift_testkit::Cluster, sql: &str) -> String {
    c.psql("app", &format!("SELECT md5(string_agg(q::text, ',' ORDER BY q::text)) FROM ({sql}) q"))
}

#[test]
fn bad_embedding_specs_fail_before_any_write() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", DOCS);
    let (s, t) = (source.url("app"), target.url("app"));
    let untouched = || target.psql("app", "SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'pgshift')");

    let cases: [(String, &str); 4] = [
        ("docs.embedding=titel || body".into(), "\"titel\" does not exist"),
        ("nosuch.embedding=title".into(), "embedding for nosuch: no such table"),
        (r#"{"table": "docs", "text": "title", "column": "e", "dims": 1536}"#.into(), "all-MiniLM-L6-v2 makes 384 dimensions"),
        (r#"{"table": "docs", "text": "title", "column": "e", "index": "btree"}"#.into(), "use hnsw, ivfflat or none"),
    ];
    for (spec, message) in cases {
        let out = run(&["migrate", "--source", &s, "--target", &t, "--embed", &spec, "--load-only"]);
        assert_eq!(out.status.code(), Some(2), "{spec}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{spec}: {}", stderr(&out));
        assert_eq!(untouched(), "0", "{spec} wrote to the target");
    }

    // A target without pgvector is refused up front.
    let plain = pgshift_testkit::Cluster::start(PgVersion::V15);
    plain.create_database("app");
    let out = run(&["migrate", "--source", &s, "--target", &plain.url("app"), "--embed", "docs.embedding=title", "--load-only"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("has no pgvector"), "{}", stderr(&out));

    // The model files missing: the error says how to get them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["migrate", "--source", &s, "--target", &t, "--embed", "docs.embedding=title", "--dry-run"])
        .env("PGSHIFT_MODEL_DIR", "/nonexistent")
        .env("ORT_DYLIB_PATH", cache_dir().join("embed/onnxruntime/libonnxruntime.so.1.31.1"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("scripts/fetch_model.sh"), "{}", stderr(&out));
}

#[test]
fn catch_up_embeds_new_and_changed_text_and_keeps_the_rest() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", DOCS);
    let (s, t) = (source.url("app"), target.url("app"));
    let spec = format!("docs.embedding={TEXT}");
    // Into another schema (--map-schema): the spec still names the table as the source has it.
    let out = run(&["migrate", "--source", &s, "--target", &t, "--embed", &spec, "--load-only", "--map-schema", "public=vec"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT count(*) FROM vec.docs WHERE embedding IS NOT NULL"), source.psql("app", "SELECT count(*) FROM docs"));
    // As an application would, find the tables through search_path.
    target.psql("app", "ALTER DATABASE app SET search_path = vec, public");
    let kept_before = vector_of(&target, 8);
    let row_of_tags = target.psql("app", "SELECT ctid FROM docs WHERE id = 8");

    source.psql(
        "app",
        "INSERT INTO docs VALUES (2000, 'A cat sleeps on the sofa.', NULL, NULL), (2001, 'title 3', 'body of document 3', NULL);
         UPDATE docs SET title = 'A man is riding a horse.', body = NULL WHERE id = 7;
         UPDATE docs SET tags = ARRAY['changed'] WHERE id = 8;
         DELETE FROM docs WHERE id = 9;",
    );
    let other = format!("docs.embedding=title");
    let out = run(&["follow", "--source", &s, "--target", &t, "--until-caught-up", "--embed", &other]);
    assert_eq!(out.status.code(), Some(2), "follow with other embedding settings refuses: {}", stderr(&out));
    assert!(stderr(&out).contains("computes vectors") && stderr(&out).contains("docs.embedding="), "{}", stderr(&out));
    // Without --embed, follow takes the run's own settings.
    let out = run(&["follow", "--source", &s, "--target", &t, "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    assert_eq!(target.psql("app", "SELECT count(*) FILTER (WHERE embedding IS NULL), count(*) FROM docs"), "0|244");
    assert_eq!(target.psql("app", "SELECT tags[1] FROM docs WHERE id = 8"), "changed");
    assert_ne!(target.psql("app", "SELECT ctid FROM docs WHERE id = 8"), row_of_tags, "row 8 was really updated");
    assert_eq!(vector_of(&target, 8), kept_before, "a change that leaves the text alone keeps the vector");
    let model = local_model();
    let want = model.embed(&["A cat sleeps on the sofa.", "A man is riding a horse.", "title 3 body of document 3"]).unwrap();
    for (id, want) in [(2000, &want[0]), (7, &want[1]), (2001, &want[2])] {
        let c = cosine(&vector_of(&target, id), want);
        assert!(c > 0.9999, "row {id}: cosine {c}");
    }
    assert_verified(&source, &target);

    // After the cutover the application owns the vectors: the catch-up trigger is gone.
    let out = run(&["cutover", "--source", &s, "--target", &t]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_trigger WHERE tgname = 'pgshift_embedding_stale'"), "0");
}

#[test]
fn a_source_column_replaced_by_vectors_is_left_out_of_verify() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", DOCS);
    // Old vectors of another model, replaced by the load (without catch-up, which would stream the old ones).
    source.psql("app", "ALTER TABLE docs ADD COLUMN embedding real[]; UPDATE docs SET embedding = ARRAY[id, 0.5]");
    let (s, t) = (source.url("app"), target.url("app"));
    let spec = format!("docs.embedding={TEXT}");
    let out = run(&["migrate", "--source", &s, "--target", &t, "--embed", &spec, "--no-follow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'embedding'"), "vector(384)");
    let out = pgshift_expect(0, &["verify", "--source", &s, "--target", &t, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let docs = report["tables"].as_array().unwrap().iter().find(|t| t["table"] == "public.docs").unwrap();
    assert_eq!(docs["not_compared"], serde_json::json!(["embedding"]), "{report}");
    // The other columns are still compared.
    target.psql("app", "UPDATE docs SET title = 'changed' WHERE id = 1");
    let out = verify(&source, &target, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

#[test]
fn halfvec_columns_with_an_ivfflat_index_hold_the_models_vectors() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", DOCS);
    let (s, t) = (source.url("app"), target.url("app"));
    let spec = format!(r#"{{"table": "docs", "text": "{TEXT}", "column": "embedding", "halfvec": true, "index": "ivfflat"}}"#);
    let out = run(&["migrate", "--source", &s, "--target", &t, "--embed", &spec, "--no-follow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'embedding'"), "halfvec(384)");
    let index = target.psql("app", "SELECT indexdef FROM pg_indexes WHERE tablename = 'docs' AND indexdef LIKE '%ivfflat%'");
    assert!(index.contains("USING ivfflat (embedding halfvec_cosine_ops) WITH (lists="), "{index}");

    // Half precision keeps the model's direction to about three decimals.
    let model = local_model();
    let want = model.embed(&["A man is eating food.", "title 7 body of document 7"]).unwrap();
    for (id, want) in [(1000, &want[0]), (7, &want[1])] {
        let c = cosine(&vector_of(&target, id), want);
        assert!(c > 0.999, "row {id}: cosine {c}");
    }
    // Nearest neighbour through the index: bread is closer to food than the violin is.
    let nearest = target.psql(
        "app",
        "SET enable_seqscan = off; SET ivfflat.probes = 10; \
         SELECT id FROM docs WHERE id IN (1001, 1002) ORDER BY embedding <=> (SELECT embedding FROM docs WHERE id = 1000) LIMIT 1",
    );
    assert!(nearest.ends_with("1001"), "{nearest}");
}

#[test]
fn blank_text_gets_no_vector_in_the_load_and_in_catch_up() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql(
        "app",
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes VALUES (1, 'A man is eating food.'), (2, ''), (3, E'  \\t\\n '), (4, NULL), (5, E'\\u00a0');",
    );
    let (s, t) = (source.url("app"), target.url("app"));
    let spec = "notes.embedding=body";
    let out = run(&["migrate", "--source", &s, "--target", &t, "--embed", spec, "--load-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Blank and NULL text: no vector (a shared "empty input" vector would match them all);
    // a no-break space is not ASCII whitespace, so it is text and gets one.
    assert_eq!(target.psql("app", "SELECT string_agg(id::text, ',' ORDER BY id) FROM notes WHERE embedding IS NOT NULL"), "1,5");

    source.psql("app", "INSERT INTO notes VALUES (6, ' '), (7, 'A woman is playing violin.'); UPDATE notes SET body = '' WHERE id = 1; UPDATE notes SET body = 'now text' WHERE id = 2;");
    let out = run(&["follow", "--source", &s, "--target", &t, "--until-caught-up", "--embed", spec]);
    assert_eq!(out.status.code(), Some(0), "catch-up ends although blank rows keep no vector: {}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT string_agg(id::text, ',' ORDER BY id) FROM notes WHERE embedding IS NOT NULL"), "2,5,7");
    assert_verified(&source, &target);
}

#[test]
fn the_model_is_found_where_fetch_model_put_it_or_the_error_says_how_to_fetch_it() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, 'hello')");
    // An installed binary outside the checkout, with nothing in the environment.
    let dir = tempfile_dir("installed");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let exe = dir.join("bin/pgshift");
    std::fs::copy(env!("CARGO_BIN_EXE_pgshift"), &exe).unwrap();
    let (s, t) = (source.url("app"), target.url("app"));
    let dry_run = || {
        std::process::Command::new(&exe)
            .args(["migrate", "--source", &s, "--target", &t, "--embed", "notes.embedding=body", "--dry-run"])
            .env_remove("PGSHIFT_MODEL_DIR")
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("XDG_DATA_HOME")
            .env("HOME", dir.join("home"))
            .output()
            .unwrap()
    };
    let out = dry_run();
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("not found") && err.contains("scripts/fetch_model.sh") && err.contains(".local/share/pgshift"), "{err}");
    // `share/pgshift` beside the binary's directory, as `make install`-style layouts have it.
    std::fs::create_dir_all(dir.join("share")).unwrap();
    std::os::unix::fs::symlink(cache_dir().join("embed"), dir.join("share/pgshift")).unwrap();
    let out = dry_run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory outside the checkout (a binary inside it finds the checkout's model).
fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgshift-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_index_on_a_replaced_vector_column_is_built_once_on_the_new_vectors() {
    let (source, target) = pair(PgVersion::V16, PgVersion::V16);
    source.psql("app", DOCS);
    // Another model's vectors with their HNSW index: replaced by the load's.
    source.psql(
        "app",
        "CREATE EXTENSION vector; ALTER TABLE docs ADD COLUMN embedding vector(2); UPDATE docs SET embedding = ARRAY[id, 0.5]::vector;
         CREATE INDEX docs_semantic ON docs USING hnsw (embedding vector_l2_ops);",
    );
    let (s, t) = (source.url("app"), target.url("app"));
    let spec = format!("docs.embedding={TEXT}");
    let out = run(&["migrate", "--source", &s, "--target", &t, "--embed", &spec, "--no-follow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let indexes = target.psql("app", "SELECT string_agg(indexname || ': ' || indexdef, E'\\n' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'docs' AND indexdef LIKE '%embedding%'");
    assert_eq!(indexes.lines().count(), 1, "one index on the new vectors: {indexes}");
    assert!(indexes.starts_with("docs_semantic: ") && indexes.contains("hnsw (embedding vector_cosine_ops)"), "the source's name, the spec's settings: {indexes}");
}

/// The Supabase -> RDS journey with a new model: the source keeps another model's
/// vectors (pgvector in schema `extensions`, HNSW); the target gets the local model's
/// in the same column, computed during the load and for every change during
/// catch-up, while the application keeps writing (its own vectors into the old
/// column). One table has a key (its publication leaves the column out), one
/// REPLICA IDENTITY FULL (the applier drops the column). follow and cutover need no
/// repeated --embed; reverse replication leaves the column out and says so.
#[test]
fn vectors_replaced_in_place_while_the_app_keeps_writing() {
    let (source, target) = pair(PgVersion::V16, PgVersion::V18);
    let old_vector = "array_fill(0.5::real, ARRAY[1536])::extensions.vector";
    source.psql(
        "app",
        &format!(
            "CREATE SCHEMA extensions; CREATE EXTENSION vector SCHEMA extensions;
             CREATE TABLE documents (id bigint PRIMARY KEY, content text, embedding extensions.vector(1536));
             INSERT INTO documents SELECT i, 'document number ' || i, {old_vector} FROM generate_series(1, 60) i;
             CREATE INDEX documents_embedding ON documents USING hnsw (embedding extensions.vector_cosine_ops);
             CREATE TABLE snippets (id bigint PRIMARY KEY, body text, embedding extensions.vector(1536));
             ALTER TABLE snippets REPLICA IDENTITY FULL;
             INSERT INTO snippets SELECT i, 'snippet ' || i, {old_vector} FROM generate_series(1, 20) i;"
        ),
    );
    let (s, t) = (source.url("app"), target.url("app"));
    let specs = "[{\"table\": \"documents\", \"column\": \"embedding\", \"text\": \"content\"}, {\"table\": \"snippets\", \"column\": \"embedding\", \"text\": \"body\"}]";
    let out = run(&["migrate", "--source", &s, "--target", &t, "--embed", specs, "--load-only", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(r#""public"."documents" ("id", "content"), "public"."snippets""#), "the publication leaves the column out: {}", stdout(&out));
    let out = run(&["migrate", "--source", &s, "--target", &t, "--embed", specs, "--load-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The application goes on: new rows (with the old model's vectors), edits, deletes, a NULL text.
    source.psql(
        "app",
        &format!(
            "INSERT INTO documents VALUES (100, 'A cat sleeps on the sofa.', {old_vector}), (101, NULL, {old_vector});
             UPDATE documents SET content = 'A man is riding a horse.', embedding = {old_vector} WHERE id = 7;
             UPDATE documents SET content = NULL WHERE id = 8;
             DELETE FROM documents WHERE id = 9;
             INSERT INTO snippets VALUES (100, 'A woman is playing violin.', {old_vector});
             UPDATE snippets SET body = 'A man is eating food.' WHERE id = 3;
             DELETE FROM snippets WHERE id = 4;"
        ),
    );
    let out = run(&["follow", "--source", &s, "--target", &t, "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(0), "follow takes the run's embedding settings: {}", stderr(&out));
    source.psql("app", &format!("INSERT INTO documents VALUES (102, 'Just before the switch.', {old_vector})"));
    let out = run(&["cutover", "--source", &s, "--target", &t, "--reverse", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("leaving out public.documents.embedding, public.snippets.embedding"), "{}", stdout(&out));

    // Every row as on the source, but for the vectors, which are the model's.
    for (table, text) in [("documents", "content"), ("snippets", "body")] {
        let rows = format!("SELECT md5(string_agg(format('%s:%s', id, {text}), ',' ORDER BY id)) FROM {table}");
        assert_eq!(target.psql("app", &rows), source.psql("app", &rows), "{table}");
        let pairs = target.psql("app", &format!("SET search_path = public, extensions; SELECT id, {text}, embedding IS NULL, vector_dims(embedding) FROM {table} ORDER BY id"));
        let model = local_model();
        for line in pairs.lines() {
            let f: Vec<&str> = line.split('|').collect();
            match f[1] {
                "" => assert_eq!(f[2], "t", "{table} {}: NULL text, no vector", f[0]),
                text => {
                    assert_eq!(f[3], "384", "{table} {}", f[0]);
                    let got: Vec<f32> = target
                        .psql("app", &format!("SELECT embedding::text FROM {table} WHERE id = {}", f[0]))
                        .trim_matches(['[', ']'])
                        .split(',')
                        .map(|x| x.parse().unwrap())
                        .collect();
                    let c = cosine(&got, &model.embed(&[text]).unwrap()[0]);
                    assert!(c > 0.9999, "{table} {}: cosine {c}", f[0]);
                }
            }
        }
    }
    let indexes = target.psql("app", "SELECT string_agg(indexname, ',') FROM pg_indexes WHERE tablename = 'documents' AND indexdef LIKE '%embedding%'");
    assert_eq!(indexes, "documents_embedding", "one HNSW index, the source's, on the new vectors");

    // The application now writes to the new database, with 384-d vectors; they do not go back.
    target.psql("app", "INSERT INTO documents VALUES (200, 'Written after the switch.', array_fill(0.1::real, ARRAY[384])::extensions.vector)");
    let out = run(&["follow", "--source", &t, "--target", &s, "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(source.psql("app", "SELECT content, embedding IS NULL FROM documents WHERE id = 200"), "Written after the switch.|t");
    assert_eq!(source.psql("app", "SELECT extensions.vector_dims(embedding) FROM documents WHERE id = 1"), "1536", "the old column keeps its vectors");
}
