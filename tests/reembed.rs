//! `pgshift reembed` on a live table: writers and readers go on while the vectors
//! are recomputed with another model (and dimension), a killed run resumes, and the
//! swap leaves exactly one column and one index.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use pgshift_embed::Embedder;
use pgshift_testkit::{Cluster, PgVersion};

const TABLE: &str = "
CREATE EXTENSION vector;
CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, body text, embedding vector(3));
INSERT INTO docs SELECT i, 'title ' || i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'body ' || (i % 50) END, ARRAY[i, 1, 0]::vector
  FROM generate_series(1, 400) i;
CREATE INDEX docs_embedding_idx ON docs USING hnsw (embedding vector_cosine_ops);
";
const TEXT: &str = "title || coalesce(' ' || body, '')";

/// `pgshift reembed` of docs.embedding; `extra` may replace --table or --text.
fn args(target: &Cluster, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["reembed".into(), "--target".into(), target.url("app"), "--column".into(), "embedding".into()];
    for (flag, default) in [("--table", "docs"), ("--text", TEXT)] {
        if !extra.contains(&flag) {
            a.extend([flag.to_string(), default.to_string()]);
        }
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn reembed(target: &Cluster, extra: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift")).args(args(target, extra)).envs(model_env()).output().unwrap();
    assert!(!format!("{}{}", stdout(&out), stderr(&out)).contains(pgshift_testkit::PASSWORD));
    out
}

#[test]
fn reembed_swaps_in_new_vectors_while_the_table_is_in_use() {
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    target.psql("app", TABLE);

    // Dry run: the plan, and nothing written.
    let out = reembed(&target, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("CREATE INDEX CONCURRENTLY"), "{}", stdout(&out));
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift'"), "0");

    // Kill a run part-way; the next one resumes from its checkpoint.
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(args(&target, &["--batch", "10"]))
        .envs(model_env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a few checkpoints", Duration::from_secs(60), || {
        target.psql("app", "SELECT to_regclass('pgshift.reembeds') IS NOT NULL") == "t"
            && target.psql("app", "SELECT coalesce(max(rows_done), 0) >= 30 FROM pgshift.reembeds") == "t"
    });
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(target.psql("app", "SELECT rows_done FROM pgshift.reembeds").parse::<i64>().unwrap() < 340, "killed before the end");

    // Writers and readers keep going during the resumed run.
    let stop = AtomicBool::new(false);
    let (writes, reads, last_insert) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut n = 0;
            // Until the new index is built (then the swap comes) or the shadow column is
            // gone (the swap happened): rows the application inserts after the swap get
            // their vectors from the application, not from pgshift. The one write in
            // flight when it comes is allowed for below.
            let swap_next = || {
                target.psql(
                    "app",
                    "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'docs_embedding_pgshift_new_idx' AND i.indisvalid) \
                     OR NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'embedding__pgshift_new' AND NOT attisdropped)",
                ) == "t"
            };
            while !stop.load(Ordering::SeqCst) && n < 400 && !swap_next() {
                n += 1;
                last_insert.store(10_000 + n, Ordering::SeqCst);
                target.psql(
                    "app",
                    &format!(
                        "UPDATE docs SET title = 'A man is riding a horse {n}.' WHERE id = {}; INSERT INTO docs (id, title) VALUES ({}, 'A cat sleeps on the sofa {n}.')",
                        1 + n % 400,
                        10_000 + n
                    ),
                );
                writes.fetch_add(1, Ordering::SeqCst);
            }
        });
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                // Must never fail: the column and an index are there all the time.
                target.psql("app", "SET enable_seqscan = off; SELECT id FROM docs ORDER BY embedding <=> (SELECT embedding FROM docs WHERE id = 2) LIMIT 3");
                reads.fetch_add(1, Ordering::SeqCst);
            }
        });
        let out = reembed(&target, &["--batch", "50", "--json"]);
        stop.store(true, Ordering::SeqCst);
        out
    });
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(writes.load(Ordering::SeqCst) > 0 && reads.load(Ordering::SeqCst) > 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(report["index"], "docs_embedding_idx", "{report}");

    // One column, the new type, every row with text has its own text's vector.
    assert_eq!(target.psql("app", "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attnum > 0 AND NOT attisdropped"), "id,title,body,embedding");
    assert_eq!(target.psql("app", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'embedding'"), "vector(384)");
    let in_flight = last_insert.load(Ordering::SeqCst);
    assert_eq!(target.psql("app", &format!("SELECT count(*) FROM docs WHERE embedding IS NULL AND id <> {in_flight}")), "0");
    let indexes = target.psql("app", "SELECT string_agg(indexname || ':' || indexdef, E'\\n') FROM pg_indexes WHERE tablename = 'docs'");
    assert!(indexes.contains("docs_embedding_idx:") && indexes.contains("USING hnsw (embedding vector_cosine_ops)"), "{indexes}");
    assert_eq!(indexes.lines().count(), 2, "primary key and the vector index: {indexes}");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs'::regclass"), "0");
    assert_eq!(target.psql("app", "SELECT phase FROM pgshift.reembeds"), "done");

    let model = local_model();
    let sample = target.psql("app", &format!("SELECT string_agg(id || E'\\t' || {TEXT} || E'\\t' || embedding::text, E'\\n') FROM ((SELECT * FROM docs ORDER BY id DESC LIMIT 3) UNION ALL (SELECT * FROM docs WHERE id IN (2, 3, 14))) d"));
    for line in sample.lines() {
        let mut parts = line.splitn(3, '\t');
        let (id, text, stored) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let stored: Vec<f32> = stored.trim_matches(['[', ']']).split(',').map(|x| x.parse().unwrap()).collect();
        let want = &model.embed(&[text]).unwrap()[0];
        let dot: f32 = stored.iter().zip(want).map(|(a, b)| a * b).sum();
        assert!(dot > 0.9999, "row {id} ({text:?}): cosine {dot}");
    }
}

#[test]
fn reembed_refuses_bad_input_before_writing() {
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    target.psql("app", TABLE);
    target.psql("app", "CREATE TABLE nokey (title text)");
    for (extra, message) in [
        (vec!["--text", "nosuch || title"], "fails on public.docs"),
        (vec!["--dims", "1536"], "makes 384 dimensions"),
        (vec!["--table", "nokey"], "has no primary key"),
        (vec!["--table", "missing"], "no table missing"),
    ] {
        let out = reembed(&target, &extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{extra:?}: {}", stderr(&out));
    }
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift'"), "0");
}

/// A scheduled re-index with the same model costs only what changed: in place, no
/// shadow column, no new index; rows whose text changed (or that lack a vector, or
/// whose text became NULL) are the only ones embedded again.
#[test]
fn reembed_with_the_same_model_embeds_only_what_changed_in_place() {
    let target = Cluster::start(PgVersion::V16);
    target.create_database("app");
    target.psql("app", TABLE);
    let out = reembed(&target, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["mode"], "swap", "another model's 3-d vectors are replaced: {first}");

    let shape = "SELECT string_agg(c.relname || ':' || c.oid, ',' ORDER BY c.relname) FROM pg_class c WHERE c.relname LIKE 'docs%'";
    let before = target.psql("app", shape);
    let out = reembed(&target, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let unchanged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((unchanged["mode"].as_str(), unchanged["rows_checked"].as_u64(), unchanged["rows_embedded"].as_u64()), (Some("in-place"), Some(400), Some(0)), "{unchanged}");

    // The application changes 10 texts, empties one, adds a row without a vector.
    target.psql(
        "app",
        "UPDATE docs SET body = 'rewritten body ' || id WHERE id BETWEEN 101 AND 110;
         UPDATE docs SET title = '', body = NULL WHERE id = 200;
         INSERT INTO docs (id, title, body) VALUES (5000, 'a new row', 'written without a vector')",
    );
    let untouched = target.psql("app", "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM docs WHERE id BETWEEN 300 AND 310");
    let out = reembed(&target, &["--dry-run"]);
    assert!(stdout(&out).contains("in place"), "{}", stdout(&out));
    let out = reembed(&target, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let changed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((changed["mode"].as_str(), changed["rows_embedded"].as_u64()), (Some("in-place"), Some(12)), "{changed}");
    assert_eq!(target.psql("app", shape), before, "no new column, index or table");
    assert_eq!(target.psql("app", "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM docs WHERE id BETWEEN 300 AND 310"), untouched, "rows that did not change were not rewritten");
    let model = local_model();
    for id in [101, 110, 5000] {
        let row = target.psql("app", &format!("SELECT {TEXT} || E'\\t' || embedding::text FROM docs WHERE id = {id}"));
        let (text, stored) = row.split_once('\t').unwrap();
        let c = cosine(&parse_vector(stored), &model.embed(&[text]).unwrap()[0]);
        assert!(c > 0.9999, "row {id}: cosine {c}");
    }
    assert_eq!(target.psql("app", "SELECT embedding IS NULL FROM docs WHERE id = 200"), "t", "a text that became blank has no vector");

    // --full replaces the column anyway.
    let out = reembed(&target, &["--full", "--json"]);
    let full: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((full["mode"].as_str(), full["rows_embedded"].as_u64()), (Some("swap"), Some(400)), "every row with text, cached or not: {full}");
}
