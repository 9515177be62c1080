//! Documents longer than the model's window, embedded whole into a chunk table: the
//! load, catch-up (insert, an edit in the middle of a document, an unrelated update,
//! a delete), the cutover and a resumed load; and texts cut short in a column counted.
//! Token counts are the model's as its reference tokenizer (Python, from the infinity
//! environment that bootstrap makes) reads them; vectors the local model's.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use pgshift_embed::Embedder;
use pgshift_testkit::{cache_dir, Cluster, PgVersion};

const SPEC: &str = "public.pages->public.page_chunks=body";
const NOTES: &str = "notes->note_chunks=body";

/// A document of `paragraphs` paragraphs, different for every `seed`: sentences of
/// varied length, some punctuation, a few non-ASCII words.
fn document(seed: u64, paragraphs: usize) -> String {
    let words = [
        "replication", "slot", "keeps", "the", "write-ahead", "log", "until", "subscriber", "confirms", "every", "change", "vector",
        "index", "search", "finds", "nearest", "neighbours", "quickly", "café", "naïve", "résumé", "database", "moves", "without",
        "downtime", "while", "application", "writes", "chunk", "window", "tokens", "model", "reads", "paragraph", "sentence",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = |n: usize| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) as usize % n
    };
    let mut text = String::new();
    for p in 0..paragraphs {
        for _ in 0..(2 + next(5)) {
            let len = 4 + next(22);
            let sentence: Vec<&str> = (0..len).map(|_| words[next(words.len())]).collect();
            text.push_str(&format!("{}{} (§{p}). ", &sentence.join(" ")[..1].to_uppercase(), &sentence.join(" ")[1..]));
        }
        text.push_str("\n\n");
    }
    text.trim_end().to_string()
}

/// Token counts of `texts` by the model's reference tokenizer (special tokens included).
fn reference_token_counts(texts: &[String]) -> Vec<usize> {
    let infinity = cache_dir().join("infinity-0.0.78");
    let mut child = std::process::Command::new(infinity.join("venv/bin/python"))
        .args([
            "-c",
            "import sys, json; from transformers import AutoTokenizer; \
             t = AutoTokenizer.from_pretrained(sys.argv[1]); \
             print(json.dumps([len(t(x)['input_ids']) for x in json.load(sys.stdin)]))",
        ])
        .arg(infinity.join("all-MiniLM-L6-v2"))
        .envs([("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("DO_NOT_TRACK", "1")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the infinity environment's Python (scripts/fetch_infinity.sh)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(serde_json::to_string(texts).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The chunks of every page: id -> [(chunk_seq, chunk)].
fn chunks_of(target: &Cluster) -> BTreeMap<i64, Vec<(i32, String)>> {
    let json = target.psql("app", "SELECT coalesce(json_agg(json_build_array(id, chunk_seq, chunk) ORDER BY id, chunk_seq), '[]') FROM page_chunks");
    let rows: Vec<(i64, i32, String)> = serde_json::from_str(&json).unwrap();
    let mut out: BTreeMap<i64, Vec<(i32, String)>> = BTreeMap::new();
    for (id, seq, chunk) in rows {
        out.entry(id).or_default().push((seq, chunk));
    }
    out
}

/// Each chunk is a piece of the body, in order, consecutive pieces touching or
/// overlapping, the first at the body's start and the last at its end: every word is in one.
fn assert_covers(id: i64, body: &str, chunks: &[(i32, String)]) {
    let mut end_before = 0;
    let mut start_before = None;
    for (i, (seq, chunk)) in chunks.iter().enumerate() {
        assert_eq!(*seq, i as i32, "page {id}: positions 0, 1, ...");
        let from = start_before.map_or(0, |s: usize| s + 1);
        let at = body[from..].find(chunk.as_str()).map(|p| p + from).unwrap_or_else(|| panic!("page {id} chunk {seq} is not a piece of the body after the one before"));
        assert!(at <= end_before || body[end_before..at].trim().is_empty(), "page {id}: text between chunk {} and {seq} is in neither", seq - 1);
        start_before = Some(at);
        end_before = at + chunk.len();
    }
    assert_eq!(start_before.map(|_| end_before), Some(body.trim_end().len()), "page {id}: the last chunk ends the body");
    assert!(body.starts_with(chunks[0].1.as_str()), "page {id}: the first chunk starts the body");
}

#[test]
fn long_documents_go_to_a_chunk_table_through_load_catch_up_and_cutover() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", "CREATE TABLE pages (id bigint PRIMARY KEY, title text NOT NULL, body text)");
    // A second chunked table, for a key that changes and a truncate during catch-up.
    source.psql("app", "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, 'first note. It has two sentences.'), (2, 'second note')");
    let mut bodies: BTreeMap<i64, Option<String>> = BTreeMap::new();
    for id in 1..=6 {
        bodies.insert(id, Some(document(id as u64, 10 + 4 * id as usize)));
    }
    // One word of 2,700 letters: all-MiniLM-L6-v2's tokenizer reads a word over 100
    // characters as one unknown token, so it fits one chunk.
    bodies.insert(7, Some(format!("A short page. {} and the end.", "Pneumonoultramicroscopicsilicovolcanoconiosis".repeat(60))));
    bodies.insert(8, Some("One line only.".into()));
    bodies.insert(9, Some("  \n ".into()));
    bodies.insert(10, None);
    for (id, body) in &bodies {
        let body = body.as_ref().map_or("NULL".to_string(), |b| format!("$b${b}$b$"));
        source.psql("app", &format!("INSERT INTO pages VALUES ({id}, 'page {id}', {body})"));
    }
    let (s, t) = (source.url("app"), target.url("app"));
    let migrate = migrate_until_catch_up(&["migrate", "--source", &s, "--target", &t, "--embed", SPEC, "--embed", NOTES, "--split-rows", "3"], Duration::from_secs(300));

    // The chunk table as the spec makes it.
    let columns = target.psql("app", "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'page_chunks'::regclass AND attnum > 0");
    assert_eq!(columns, "id bigint, chunk_seq integer, chunk text, embedding vector(384)");
    let keys = target.psql("app", "SELECT string_agg(pg_get_constraintdef(oid), '; ' ORDER BY contype) FROM pg_constraint WHERE conrelid = 'page_chunks'::regclass");
    assert_eq!(keys, "FOREIGN KEY (id) REFERENCES pages(id) ON UPDATE CASCADE ON DELETE CASCADE; PRIMARY KEY (id, chunk_seq)");
    assert!(target.psql("app", "SELECT indexdef FROM pg_indexes WHERE tablename = 'page_chunks'").contains("USING hnsw (embedding vector_cosine_ops)"));

    let loaded = chunks_of(&target);
    assert_eq!(loaded.keys().copied().collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>(), "blank and NULL bodies have no chunks");
    assert!(loaded[&6].len() > 10, "a long document has many chunks: {}", loaded[&6].len());
    assert_eq!(loaded[&8], [(0, "One line only.".to_string())]);
    for (id, chunks) in &loaded {
        assert_covers(*id, bodies[id].as_deref().unwrap(), chunks);
    }

    // During catch-up: a new long page, an edit in the middle of one, an update of
    // another column, a delete.
    let new_body = document(99, 12);
    let edited = {
        let body = bodies[&3].clone().unwrap();
        let middle = body.len() / 2;
        let at = body[middle..].find(". ").unwrap() + middle + 2;
        format!("{}Zanzibar lighthouse keepers archive their logbooks. {}", &body[..at], &body[at..])
    };
    let untouched = target.psql("app", "SELECT string_agg(xmin::text, ',' ORDER BY chunk_seq) FROM page_chunks WHERE id = 4");
    source.psql(
        "app",
        &format!(
            "INSERT INTO pages VALUES (11, 'page 11', $b${new_body}$b$);
             UPDATE pages SET body = $b${edited}$b$ WHERE id = 3;
             UPDATE pages SET title = 'renamed' WHERE id = 4;
             DELETE FROM pages WHERE id = 5;"
        ),
    );
    wait_until("catch-up to apply them", Duration::from_secs(120), || target.psql("app", "SELECT count(*) FROM pages WHERE title = 'renamed'") == "1");
    assert_verified(&source, &target);
    // A changed key takes its chunks along; a truncate takes them all (the foreign key
    // neither cascades nor refuses while catch-up applies as a replica).
    assert_eq!(target.psql("app", "SELECT string_agg(id::text, ',' ORDER BY id) FROM note_chunks"), "1,2");
    source.psql("app", "UPDATE notes SET id = 101 WHERE id = 1");
    wait_until("the new key", Duration::from_secs(60), || target.psql("app", "SELECT count(*) FROM notes WHERE id = 101") == "1");
    assert_eq!(target.psql("app", "SELECT string_agg(id || ':' || chunk, ',' ORDER BY id) FROM note_chunks"), "2:second note,101:first note. It has two sentences.");
    source.psql("app", "TRUNCATE notes; INSERT INTO notes VALUES (7, 'after the truncate')");
    wait_until("the truncate", Duration::from_secs(60), || target.psql("app", "SELECT count(*) FROM notes WHERE id = 7") == "1");
    assert_eq!(target.psql("app", "SELECT string_agg(id || ':' || chunk, ',') FROM note_chunks"), "7:after the truncate");
    let out = pgshift_env(&["cutover", "--source", &s, "--target", &t]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    migrate.wait(Duration::from_secs(60));

    let after = chunks_of(&target);
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 6, 7, 8, 11], "page 5's chunks went with it");
    assert_covers(11, &new_body, &after[&11]);
    assert_covers(3, &edited, &after[&3]);
    assert!(after[&3].iter().any(|(_, c)| c.contains("Zanzibar lighthouse")), "the edited text is in the chunks");
    assert_eq!(after[&4], loaded[&4], "an update that leaves the text alone keeps the chunks");
    assert_eq!(target.psql("app", "SELECT string_agg(xmin::text, ',' ORDER BY chunk_seq) FROM page_chunks WHERE id = 4"), untouched, "not even rewritten");
    assert_eq!(after[&1], loaded[&1]);
    assert_eq!(target.psql("app", "SELECT count(*) FROM page_chunks WHERE chunk_seq < 0 OR embedding IS NULL"), "0");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_trigger WHERE tgname = 'pgshift_chunks_stale'"), "0", "the application owns the chunks after the cutover");

    // Every chunk fits the model's window, as the model's own tokenizer counts it.
    let all: Vec<String> = after.values().flatten().map(|(_, c)| c.clone()).collect();
    let counts = reference_token_counts(&all);
    let longest = counts.iter().max().copied().unwrap();
    assert!(longest <= 256, "a chunk of {longest} tokens");
    assert!(longest > 200, "chunks use the window: the longest has {longest} tokens");

    // Each stored vector is the local model's embedding of its chunk.
    let model = local_model();
    for (id, seq) in [(1, 0), (6, 3), (3, after[&3].iter().find(|(_, c)| c.contains("Zanzibar")).unwrap().0), (7, 0), (11, 2)] {
        let chunk = &after[&id][seq as usize].1;
        let want = model.embed(&[chunk.as_str()]).unwrap().remove(0);
        let got = parse_vector(&target.psql("app", &format!("SELECT embedding::text FROM page_chunks WHERE id = {id} AND chunk_seq = {seq}")));
        let c = cosine(&got, &want);
        assert!(c > 0.9999, "page {id} chunk {seq}: cosine {c}");
    }
    // A passage deep inside a long document is found by what it says, with the model the run recorded.
    let out = pgshift_env(&["search", "--target", &t, "--table", "pages", "lighthouse keepers in Zanzibar keep logbooks", "--limit", "3", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<&String> = found.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["hits", "key", "model", "table"], "as docs/JSON.md shows it");
    assert_eq!(found["table"], "public.page_chunks", "{found}");
    assert_eq!(found["hits"].as_array().unwrap().len(), 3, "{found}");
    let first = &found["hits"][0];
    assert_eq!(first["key"], serde_json::json!(["3"]), "{found}");
    assert!(first["text"].as_str().unwrap().contains("Zanzibar lighthouse"), "{found}");
    let out = pgshift_env(&["search", "--target", &t, "--table", "pages", "lighthouse keepers"]);
    assert!(stdout(&out).contains("nearest in public.page_chunks (all-MiniLM-L6-v2)"), "{}", stdout(&out));
    assert!(stdout(&out).contains("id = 3, chunk ") && stdout(&out).contains("Zanzibar lighthouse keepers"), "the passage is shown: {}", stdout(&out));
    let out = pgshift_env(&["search", "--target", &t, "--table", "nothing", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tables with vectors: public.notes, public.pages"), "{}", stderr(&out));
}

#[test]
fn a_killed_chunked_load_resumes_without_duplicate_chunks_and_workers_copy_chunk_tables() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    let other = Cluster::start(PgVersion::V16);
    other.create_database("app");
    source.psql("app", "CREATE TABLE pages (id bigint PRIMARY KEY, title text NOT NULL, body text)");
    for id in 1..=24 {
        source.psql("app", &format!("INSERT INTO pages VALUES ({id}, 'page {id}', $b${}$b$)", document(id, 6)));
    }
    let s = source.url("app");
    let (t, o) = (target.url("app"), other.url("app"));
    let env = model_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = |t: &str| ["migrate", "--source", &s, "--target", t, "--embed", SPEC, "--split-rows", "4", "--jobs", "1", "--no-follow"].map(String::from);
    let first = args(&t);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let mut doomed = Background::pgshift_with_env(&first, &env);
    wait_until("the run to be recorded", Duration::from_secs(60), || target.psql("app", "SELECT to_regclass('pgshift.chunks') IS NOT NULL") == "t");
    wait_until("a chunk of the load to be done", Duration::from_secs(120), || {
        target.psql("app", "SELECT count(*) FROM pgshift.chunks WHERE done_at IS NOT NULL").parse::<i64>().unwrap_or(0) >= 2 || !doomed.running()
    });
    assert!(doomed.running(), "the load was still copying when killed");
    let _ = doomed.stop();
    let done: i64 = target.psql("app", "SELECT count(*) FROM pgshift.chunks WHERE done_at IS NOT NULL").parse().unwrap();
    assert!((2..6).contains(&done), "killed midway: {done} of 6 chunks done");

    let mut resume = args(&t).to_vec();
    resume.push("--resume".into());
    let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
    let out = pgshift_env(&resume);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The same chunks as a load that was never interrupted, each once (the primary key holds).
    let whole = args(&o);
    let whole: Vec<&str> = whole.iter().map(String::as_str).collect();
    let out = pgshift_env(&whole);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listing = "SELECT md5(string_agg(id || ':' || chunk_seq || ':' || chunk, '|' ORDER BY id, chunk_seq)), count(*) FROM page_chunks";
    assert_eq!(target.psql("app", listing), other.psql("app", listing));
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_constraint WHERE conrelid = 'page_chunks'::regclass AND contype = 'p'"), "1");

    // The same load through a `pgshift worker` (the coordinator copies nothing itself).
    target.create_database("viaworkers");
    let w = target.url("viaworkers");
    let coordinator = ["migrate", "--source", &s, "--target", &w, "--embed", SPEC, "--split-rows", "4", "--jobs", "0", "--no-follow"];
    let coordinator = Background::pgshift_with_env(&coordinator, &env);
    let worker = Background::pgshift_with_env(&["worker", "--source", &s, "--target", &w, "--jobs", "2", "--wait", "60"], &env);
    let out = coordinator.wait(Duration::from_secs(300));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = worker.wait(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(target.psql("viaworkers", listing), other.psql("app", listing), "the worker wrote the same chunks");
    assert_eq!(target.psql("viaworkers", "SELECT count(*) FROM page_chunks WHERE embedding IS NULL"), "0");
}

#[test]
fn texts_a_column_cuts_short_are_counted() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", "CREATE TABLE pages (id bigint PRIMARY KEY, body text)");
    let bodies: Vec<String> = (1..=6).map(|i| if i % 2 == 0 { document(i, 8) } else { format!("short page {i}") }).collect();
    for (i, b) in bodies.iter().enumerate() {
        source.psql("app", &format!("INSERT INTO pages VALUES ({i}, $b${b}$b$)"));
    }
    let (s, t) = (source.url("app"), target.url("app"));
    // The plan samples the texts and says which would be cut.
    let out = pgshift_env(&["migrate", "--source", &s, "--target", &t, "--embed", "pages.embedding=body", "--no-follow", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("3 of 6 sampled texts are longer than the model's 256-token window") && said.contains("--embed 'public.pages->public.pages_chunks=body'"), "{said}");
    let out = pgshift_env(&["migrate", "--source", &s, "--target", &t, "--embed", "pages.embedding=body", "--no-follow", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts = reference_token_counts(&bodies);
    let longer = counts.iter().filter(|&&n| n > 256).count();
    assert!(longer >= 2, "the fixture has long pages: {counts:?}");
    assert_eq!(report["truncated_texts"], longer as u64, "{report}");
    assert_eq!(report["longest_text_tokens"], *counts.iter().max().unwrap() as u64, "{report}");
    let out = pgshift_env(&["migrate", "--source", &s, "--target", &target.url("postgres"), "--embed", "pages.embedding=body", "--no-follow"]);
    assert!(stdout(&out).contains("embedded from their start only"), "{}", stdout(&out));
}

/// The seed journey: an application keeps `documents` and its own chunk table
/// `vector_embeddings` (1536-d vectors of another model, filled by its indexDocument);
/// on the new database the same tables hold 384-d chunks of every document, made by
/// pgshift, through the load and catch-up (while the old application still writes its
/// own chunks, which are not carried), and verify and the cutover know the table.
#[test]
fn the_applications_own_chunk_table_gets_the_new_models_chunks() {
    let (source, target) = pair(PgVersion::V16, PgVersion::V16);
    source.psql(
        "app",
        "CREATE EXTENSION vector;
         CREATE TABLE documents (id serial PRIMARY KEY, user_id int NOT NULL, title text, content text);
         CREATE TABLE vector_embeddings (id serial PRIMARY KEY, document_id int NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
             user_id int NOT NULL, content text NOT NULL, embedding vector(1536));
         CREATE INDEX vector_embeddings_embedding_idx ON vector_embeddings USING hnsw (embedding vector_cosine_ops);",
    );
    let mut contents: BTreeMap<i64, String> = BTreeMap::new();
    for id in 1..=6i64 {
        let content = document(100 + id as u64, 3 + 3 * id as usize);
        source.psql("app", &format!("INSERT INTO documents (user_id, title, content) VALUES ({}, 'doc {id}', $b${content}$b$)", 10 + id % 3));
        contents.insert(id, content);
    }
    source.psql("app", "INSERT INTO documents (user_id, title, content) VALUES (10, 'empty', NULL)");
    // The old model's chunks: two per document.
    let old_chunks = "INSERT INTO vector_embeddings (document_id, user_id, content, embedding) \
         SELECT d.id, d.user_id, 'old model chunk ' || n, array_fill(0.01, ARRAY[1536])::vector FROM documents d, generate_series(1, 2) n";
    source.psql("app", old_chunks);
    let spec = serde_json::json!({
        "table": "documents", "text": "content", "column": "embedding", "chunk_table": "vector_embeddings",
        "chunk_columns": {"key": "document_id", "text": "content", "values": {"user_id": "user_id"}},
    })
    .to_string();
    let (s, t) = (source.url("app"), target.url("app"));

    let out = pgshift_env(&["migrate", "--source", &s, "--target", &t, "--embed", &spec, "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("not copied: the rows of public.vector_embeddings on the source"),
        "the dry run says the old chunks stay behind: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let bad = spec.replace("\"user_id\":\"user_id\"", "\"owner\":\"user_id\"");
    let out = pgshift_env(&["migrate", "--source", &s, "--target", &t, "--embed", &bad, "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("chunk_columns.values names owner, which public.vector_embeddings does not have"), "{}", stderr(&out));
    assert!(stderr(&out).contains("column user_id of public.vector_embeddings is NOT NULL without a default"), "{}", stderr(&out));

    let migrate = migrate_until_catch_up(&["migrate", "--source", &s, "--target", &t, "--embed", &spec, "--split-rows", "3"], Duration::from_secs(300));
    assert_eq!(target.psql("app", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'vector_embeddings'::regclass AND attname = 'embedding'"), "vector(384)");
    assert_eq!(target.psql("app", "SELECT count(*) FROM vector_embeddings WHERE content LIKE 'old model chunk%'"), "0", "the old vectors are not carried");
    let indexes = target.psql("app", "SELECT string_agg(indexname || ' ' || indexdef, '; ') FROM pg_indexes WHERE tablename = 'vector_embeddings' AND indexdef LIKE '%(embedding %'");
    assert!(indexes.starts_with("vector_embeddings_embedding_idx ") && indexes.contains("USING hnsw") && !indexes.contains(";"), "one vector index, the source's: {indexes}");

    // During catch-up: a new document, an edit in the middle of one, a new owner for
    // another, an unrelated update, a delete; and the old application indexing with
    // its old model (those rows stay on the source).
    let new_content = document(999, 8);
    let edited = format!("{} The lighthouse of Zanzibar keeps a logbook of ships.", contents[&2]);
    source.psql(
        "app",
        &format!(
            "INSERT INTO documents (id, user_id, title, content) VALUES (50, 12, 'new', $b${new_content}$b$);
             UPDATE documents SET content = $b${edited}$b$ WHERE id = 2;
             UPDATE documents SET user_id = 99 WHERE id = 3;
             UPDATE documents SET title = 'renamed' WHERE id = 4;
             DELETE FROM documents WHERE id = 5;
             INSERT INTO vector_embeddings (document_id, user_id, content, embedding) SELECT 50, 12, 'old model chunk', array_fill(0.02, ARRAY[1536])::vector;"
        ),
    );
    contents.insert(50, new_content);
    contents.insert(2, edited);
    contents.remove(&5);
    let untouched = target.psql("app", "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM vector_embeddings WHERE document_id = 4");
    wait_until("catch-up to apply them", Duration::from_secs(120), || target.psql("app", "SELECT count(*) FROM documents WHERE title = 'renamed'") == "1");
    let out = verify(&source, &target, &[]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("public.vector_embeddings: not compared"), "{}", stdout(&out));
    let out = pgshift_env(&["cutover", "--source", &s, "--target", &t]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    migrate.wait(Duration::from_secs(60));

    // Every document's chunks cover it, in order, with its owner; nothing of the old model.
    let json = target.psql(
        "app",
        "SELECT json_agg(json_build_array(document_id, user_id, content) ORDER BY document_id, id) FROM vector_embeddings",
    );
    let rows: Vec<(i64, i64, String)> = serde_json::from_str(&json).unwrap();
    let mut chunks: BTreeMap<i64, Vec<(i32, String)>> = BTreeMap::new();
    for (document, user, content) in rows {
        let owner: i64 = target.psql("app", &format!("SELECT user_id FROM documents WHERE id = {document}")).parse().unwrap();
        assert_eq!(user, owner, "document {document}'s chunks carry its user_id");
        let seq = chunks.get(&document).map_or(0, |c| c.len() as i32);
        chunks.entry(document).or_default().push((seq, content));
    }
    assert_eq!(chunks.keys().copied().collect::<Vec<_>>(), contents.keys().copied().collect::<Vec<_>>(), "NULL content has no chunks, a deleted document none");
    for (id, content) in &contents {
        assert_covers(*id, content, &chunks[id]);
    }
    assert!(chunks[&6].len() > 1, "a long document has several chunks");
    assert_eq!(target.psql("app", "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM vector_embeddings WHERE document_id = 4"), untouched, "an unrelated update rewrites nothing");
    assert_eq!(target.psql("app", "SELECT count(*) FROM vector_embeddings WHERE embedding IS NULL"), "0");
    let model = local_model();
    let (id, chunk) = (2, chunks[&2].last().unwrap().1.clone());
    let got = parse_vector(&target.psql("app", &format!("SELECT embedding::text FROM vector_embeddings WHERE document_id = {id} ORDER BY id DESC LIMIT 1")));
    let c = cosine(&got, &model.embed(&[chunk.as_str()]).unwrap().remove(0));
    assert!(c > 0.9999, "the edited document's last chunk: cosine {c}");
    // The source keeps its own chunks, the old application's write during catch-up too.
    assert_eq!(source.psql("app", "SELECT count(*) FROM vector_embeddings WHERE content LIKE 'old model chunk%'"), "13");
    // The application's next write after the cutover gets a fresh id: pgshift's rows
    // moved the target's sequence, and it was not set back to the source's.
    target.psql("app", "INSERT INTO vector_embeddings (document_id, user_id, content) VALUES (1, 11, 'written by the application')");
    let out = pgshift_env(&["search", "--target", &t, "--table", "documents", "lighthouse of Zanzibar logbook", "--limit", "1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["table"], "public.vector_embeddings", "{found}");
    assert_eq!(found["hits"][0]["key"], serde_json::json!(["2"]), "{found}");
}

/// `reembed` of a chunk table: every document cut and embedded again (here with a
/// smaller window) into a shadow chunk table, then swapped in with the old one's
/// names; nothing of the shadow is left.
#[test]
fn a_chunk_table_is_made_again_by_reembed_and_swapped_in() {
    let db = Cluster::start(PgVersion::V16);
    db.create_database("app");
    db.psql("app", "CREATE EXTENSION vector; CREATE TABLE pages (id bigint PRIMARY KEY, title text NOT NULL, body text)");
    for id in 1..=5 {
        db.psql("app", &format!("INSERT INTO pages VALUES ({id}, 'page {id}', $b${}$b$)", document(200 + id as u64, 6 + 2 * id as usize)));
    }
    db.psql("app", "INSERT INTO pages VALUES (6, 'empty', NULL)");
    let u = db.url("app");
    let out = pgshift_env(&["vectorize", "--target", &u, "--embed", SPEC, "--until-done"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before: i64 = db.psql("app", "SELECT count(*) FROM page_chunks").parse().unwrap();
    let names = "SELECT string_agg(name, ',' ORDER BY name) FROM (SELECT conname::text AS name FROM pg_constraint WHERE conrelid = 'page_chunks'::regclass \
                 UNION ALL SELECT indexname FROM pg_indexes WHERE tablename = 'page_chunks') n";
    let names_before = db.psql("app", names);

    let reembed = ["reembed", "--target", &u, "--table", "pages", "--text", "body", "--column", "embedding", "--chunk-table", "page_chunks", "--chunk-tokens", "128"];
    let mut dry = reembed.to_vec();
    dry.push("--dry-run");
    let out = pgshift_env(&dry);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("page_chunks__pgshift_new"), "{}", stdout(&out));
    assert_eq!(db.psql("app", "SELECT to_regclass('page_chunks__pgshift_new') IS NULL"), "t", "a dry run writes nothing");
    let mut json = reembed.to_vec();
    json.push("--json");
    let out = pgshift_env(&json);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["mode"].as_str(), report["rows_embedded"].as_u64()), (Some("swap"), Some(5)), "{report}");

    let after = chunks_of(&db);
    assert!(after.values().map(Vec::len).sum::<usize>() as i64 > before, "a smaller window makes more chunks: {before} before");
    let bodies: BTreeMap<i64, String> = serde_json::from_str::<Vec<(i64, String)>>(&db.psql("app", "SELECT json_agg(json_build_array(id, body) ORDER BY id) FROM pages WHERE body IS NOT NULL")).unwrap().into_iter().collect();
    assert_eq!(after.keys().collect::<Vec<_>>(), bodies.keys().collect::<Vec<_>>());
    for (id, chunks) in &after {
        assert_covers(*id, &bodies[id], chunks);
    }
    let all: Vec<String> = after.values().flatten().map(|(_, c)| c.clone()).collect();
    assert!(reference_token_counts(&all).into_iter().max().unwrap() <= 128, "every chunk within the new window");
    assert_eq!(db.psql("app", names), names_before, "keys and index keep their names");
    assert_eq!(db.psql("app", "SELECT count(*) FROM pg_class WHERE relname LIKE '%pgshift_new%'"), "0");
    assert_eq!(db.psql("app", "SELECT count(*) FROM pg_trigger WHERE tgname = 'pgshift_reembed_chunks'"), "0");
    let (chunk, stored) = db.psql("app", "SELECT chunk || E'\\t' || embedding::text FROM page_chunks WHERE id = 3 AND chunk_seq = 1").split_once('\t').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
    let c = cosine(&parse_vector(&stored), &local_model().embed(&[chunk.as_str()]).unwrap()[0]);
    assert!(c > 0.9999, "cosine {c}");
}
