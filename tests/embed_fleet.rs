//! A fleet of real embedding servers: two infinity instances (from PyPI, serving the
//! same all-MiniLM-L6-v2 files as the local model) share a load's texts; one is killed
//! mid-run and the load still finishes, every text embedded once, every vector equal
//! to the local model's.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http;
use common::*;
use pgshift_embed::Embedder;
use pgshift_testkit::{cache_dir, free_port, PgVersion};

/// One infinity server on loopback, one CPU thread (two of them share this machine).
struct Infinity {
    child: Child,
    port: u16,
}

impl Infinity {
    fn start() -> Infinity {
        let dir = cache_dir().join("infinity-0.0.78");
        let bin = dir.join("venv/bin/infinity_emb");
        assert!(bin.exists(), "{} is missing: run scripts/bootstrap.sh (it runs scripts/fetch_infinity.sh)", bin.display());
        let port = free_port();
        let child = Command::new(bin)
            .args(["v2", "--model-id"])
            .arg(dir.join("all-MiniLM-L6-v2"))
            .args(["--served-model-name", "all-MiniLM-L6-v2", "--engine", "torch", "--device", "cpu", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--url-prefix", "/v1", "--no-model-warmup"])
            .envs([("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("DO_NOT_TRACK", "1"), ("INFINITY_ANONYMOUS_USAGE_STATS", "0")])
            .envs([("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start infinity_emb");
        Infinity { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/embeddings", self.port)
    }

    fn wait_ready(&mut self) {
        wait_until("infinity to answer /health", Duration::from_secs(180), || {
            assert!(self.child.try_wait().unwrap().is_none(), "infinity on port {} exited", self.port);
            http::get(&format!("http://127.0.0.1:{}/health", self.port), None).status == 200
        });
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Infinity {
    fn drop(&mut self) {
        self.kill();
    }
}

const ROWS: i64 = 3000;

#[test]
fn two_infinity_servers_share_the_load_and_losing_one_loses_nothing() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    // Distinct texts (nothing comes from the cache), and a NULL text.
    source.psql(
        "app",
        &format!(
            "CREATE TABLE docs (id bigint PRIMARY KEY, body text); \
             INSERT INTO docs SELECT i, 'note ' || i || ' is about ' || (ARRAY['cats', 'the sea', 'mountains', 'jazz', 'bread'])[1 + i % 5] \
             FROM generate_series(1, {ROWS}) i; INSERT INTO docs VALUES (0, NULL)"
        ),
    );
    let (mut a, mut b) = (Infinity::start(), Infinity::start());
    a.wait_ready();
    b.wait_ready();
    let (s, t) = (source.url("app"), target.url("app"));
    let spec = serde_json::json!({ "table": "docs", "text": "body", "column": "embedding", "dims": 384, "url": [a.url(), b.url()] }).to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let env = model_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = ["migrate", "--source", &s, "--target", &t, "--embed", &spec, "--no-follow", "--split-rows", "500", "--embed-batch", "16", "--json"];
    let mut load = Background::pgshift_with_env(&[&args[..], &["--metrics-addr", &addr]].concat(), &env);

    // Both servers get work; then one dies mid-run.
    let metrics = || http::get(&format!("http://{addr}/metrics"), None).body;
    let texts = |m: &str, i: &Infinity| http::sample(m, &format!("pgshift_embedding_request_texts_total{{endpoint=\"{}\"}}", i.url())).unwrap_or(0.0);
    wait_until("both servers to embed texts", Duration::from_secs(120), || {
        assert!(load.running(), "the load ended early: {:?}", load.printed());
        let m = metrics();
        texts(&m, &a) > 0.0 && texts(&m, &b) > 0.0
    });
    let before = metrics();
    assert!(texts(&before, &a) + texts(&before, &b) < ROWS as f64 / 2.0, "the kill came too late to test anything");
    a.kill();

    let out = load.wait(Duration::from_secs(600));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("the batch goes to another endpoint"), "the failed requests were retried elsewhere: {}", stderr(&out));
    // Each text was embedded by exactly one server (none twice, none lost); the dead one failed.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let used = report["embedding_endpoints"].as_array().unwrap();
    let of = |i: &Infinity| used.iter().find(|e| e["endpoint"] == i.url().as_str()).unwrap_or_else(|| panic!("{} not reported: {report}", i.url())).clone();
    let (dead, alive) = (of(&a), of(&b));
    assert_eq!(dead["texts"].as_u64().unwrap() + alive["texts"].as_u64().unwrap(), ROWS as u64, "{report}");
    assert!(dead["failed"].as_u64().unwrap() >= 1 && alive["failed"] == 0, "{report}");
    assert!(alive["texts"].as_u64().unwrap() > dead["texts"].as_u64().unwrap(), "{report}");

    // Every vector is the local model's.
    let model = local_model();
    let rows = target.psql("app", "SELECT id || '|' || coalesce(body, '') || '|' || coalesce(embedding::text, 'NULL') FROM docs ORDER BY id");
    let mut checked = 0;
    for line in rows.lines() {
        let mut parts = line.splitn(3, '|');
        let (id, body, vector) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        if id == "0" {
            assert_eq!(vector, "NULL", "NULL text gets no vector");
            continue;
        }
        let want = &model.embed(&[body]).unwrap()[0];
        let c = cosine(&parse_vector(vector), want);
        assert!(c > 0.999, "row {id} ({body}): cosine {c}");
        checked += 1;
    }
    assert_eq!(checked, ROWS);
}
