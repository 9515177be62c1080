//! Shared helpers for the end-to-end tests: run the real binary against real clusters.
#![allow(dead_code)]

pub mod http;

use std::process::{Command, Output};

use pgshift_testkit::{Cluster, PASSWORD};

pub fn pgshift(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift")).args(args).env("PGSHIFT_LOG", "warn").output().expect("run pgshift");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains(PASSWORD), "the password leaked into pgshift's output:\n{text}");
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs pgshift and panics with its output unless it exits with `code`.
pub fn pgshift_expect(code: i32, args: &[&str]) -> Output {
    let out = pgshift(args);
    assert_eq!(out.status.code(), Some(code), "pgshift {args:?}\nstdout:\n{}\nstderr:\n{}", stdout(&out), stderr(&out));
    out
}

/// `pgshift migrate` that stops after the load (unless it copies without a slot).
pub fn migrate(source: &Cluster, target: &Cluster, extra: &[&str]) -> Output {
    let (s, t) = (source.url("app"), target.url("app"));
    let mut args = vec!["migrate", "--source", &s, "--target", &t];
    args.extend_from_slice(extra);
    if !extra.contains(&"--no-follow") {
        args.push("--load-only");
    }
    pgshift_expect(0, &args)
}

/// `pgshift follow --until-caught-up`.
pub fn follow(source: &Cluster, target: &Cluster, extra: &[&str]) -> Output {
    let (s, t) = (source.url("app"), target.url("app"));
    let mut args = vec!["follow", "--source", &s, "--target", &t, "--until-caught-up"];
    args.extend_from_slice(extra);
    pgshift_expect(0, &args)
}

/// Verify must pass; the panic shows what differs.
pub fn assert_verified(source: &Cluster, target: &Cluster) {
    let out = verify(source, target, &[]);
    assert_eq!(out.status.code(), Some(0), "verify failed:\n{}{}", stdout(&out), stderr(&out));
}

pub fn verify(source: &Cluster, target: &Cluster, extra: &[&str]) -> Output {
    let (s, t) = (source.url("app"), target.url("app"));
    let mut args = vec!["verify", "--source", &s, "--target", &t];
    args.extend_from_slice(extra);
    pgshift(&args)
}

/// A source and an empty target, each with an `app` database.
pub fn pair(source: pgshift_testkit::PgVersion, target: pgshift_testkit::PgVersion) -> (Cluster, Cluster) {
    let (s, t) = std::thread::scope(|scope| {
        let s = scope.spawn(|| Cluster::start(source));
        let t = scope.spawn(|| Cluster::start(target));
        (s.join().unwrap(), t.join().unwrap())
    });
    s.create_database("app");
    t.create_database("app");
    (s, t)
}

/// Every kind of column and table that binary COPY must carry.
pub const TYPES_FIXTURE: &str = r#"
CREATE SCHEMA sales;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE TYPE money_pair AS (amount numeric(12,2), currency text);
CREATE TABLE kinds (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    amount numeric(20,6),
    big_amount numeric,
    at timestamptz,
    local_at timestamp,
    day date,
    span interval,
    doc jsonb,
    plain_json json,
    tags text[],
    matrix int[][],
    ident uuid UNIQUE,
    blob bytea,
    feeling mood,
    feelings mood[],
    qty positive_int,
    price money_pair,
    note text,
    ratio double precision,
    small real,
    flag boolean,
    addr inet,
    total numeric GENERATED ALWAYS AS (amount * 2) STORED,
    CONSTRAINT amount_not_negative CHECK (amount >= 0)
);
COMMENT ON TABLE kinds IS 'every type we carry';
COMMENT ON COLUMN kinds.note IS 'free text, unicode';
INSERT INTO kinds (amount, big_amount, at, local_at, day, span, doc, plain_json, tags, matrix, ident, blob, feeling, feelings, qty, price, note, ratio, small, flag, addr)
SELECT i * 1.5, (10::numeric ^ 30) + i, '2024-02-29 12:34:56.789+05:30'::timestamptz + i * interval '1 hour',
       '2001-01-01 00:00:00'::timestamp + i * interval '1 minute', '1999-12-31'::date + i,
       make_interval(days => i, secs => i * 1.25), jsonb_build_object('i', i, 'nested', jsonb_build_array(i, 'x', null)),
       '{"raw": true}', ARRAY['a', 'b''c', NULL, 'Grüße ' || i], ARRAY[[i, i + 1], [i + 2, i + 3]],
       md5(i::text)::uuid, decode(md5(i::text), 'hex'), (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::mood,
       ARRAY['ok', 'happy']::mood[], i, ROW(i * 0.5, 'EUR')::money_pair,
       'naïve café — 日本語 — emoji 🐘 ' || i, pi() * i, 1.5 * i, i % 2 = 0, ('10.0.0.' || i % 250)::inet
FROM generate_series(1, 500) i;
INSERT INTO kinds (note) VALUES (NULL), ('');
CREATE INDEX kinds_at_idx ON kinds (at DESC);
CREATE INDEX kinds_doc_idx ON kinds USING gin (doc);
CREATE TABLE wide AS SELECT i AS id, repeat(md5(i::text), 300) AS big_text, repeat('x', 100) AS c1, repeat('y', 100) AS c2 FROM generate_series(1, 40) i;
ALTER TABLE wide ADD PRIMARY KEY (id);
CREATE TABLE toasty (id serial PRIMARY KEY, payload text, data jsonb);
INSERT INTO toasty (payload, data) SELECT string_agg(md5(random()::text), '') , jsonb_build_object('k', string_agg(md5(g::text), ''))
FROM generate_series(1, 4000) g, generate_series(1, 3) r GROUP BY r;
CREATE TABLE empty_one (id int PRIMARY KEY, v text);
CREATE TABLE no_pk (a int, b text);
INSERT INTO no_pk SELECT i, 'row ' || i FROM generate_series(1, 300) i;
INSERT INTO no_pk SELECT 1, 'row 1';
CREATE TABLE sales.customers (id uuid PRIMARY KEY DEFAULT md5(random()::text)::uuid, name text NOT NULL);
INSERT INTO sales.customers (id, name) SELECT md5('c' || i)::uuid, 'customer ' || i FROM generate_series(1, 50) i;
CREATE TABLE sales.orders (
    id bigserial,
    customer_id uuid NOT NULL REFERENCES sales.customers (id),
    placed_at timestamptz NOT NULL,
    amount numeric(10,2) NOT NULL,
    PRIMARY KEY (id, placed_at)
) PARTITION BY RANGE (placed_at);
CREATE TABLE sales.orders_2023 PARTITION OF sales.orders FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE sales.orders_2024 PARTITION OF sales.orders FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE INDEX orders_placed_idx ON sales.orders (placed_at);
INSERT INTO sales.orders (customer_id, placed_at, amount)
SELECT md5('c' || (1 + i % 50))::uuid, '2023-06-01'::timestamptz + i * interval '1 day', i * 3.33 FROM generate_series(1, 400) i;
CREATE TABLE sales.notes (id int PRIMARY KEY, customer_id uuid REFERENCES sales.customers (id) ON DELETE CASCADE, body text);
INSERT INTO sales.notes SELECT i, md5('c' || (1 + i % 50))::uuid, 'note ' || i FROM generate_series(1, 100) i;
CREATE TABLE bookings (id int PRIMARY KEY, during tsrange NOT NULL, EXCLUDE USING gist (during WITH &&));
INSERT INTO bookings SELECT i, tsrange('2024-01-01'::timestamp + i * interval '1 hour', '2024-01-01'::timestamp + (i + 1) * interval '1 hour') FROM generate_series(1, 50) i;
CREATE SEQUENCE standalone_seq START 100 INCREMENT 5;
SELECT nextval('standalone_seq'), nextval('standalone_seq');
"#;

/// Lets the fixture's key-less table take part in catch-up.
pub const NO_PK_FULL: &str = "ALTER TABLE no_pk REPLICA IDENTITY FULL";

/// The environment that points pgshift at the model from scripts/fetch_model.sh.
pub fn model_env() -> Vec<(String, String)> {
    let embed = pgshift_testkit::cache_dir().join("embed");
    vec![
        ("PGSHIFT_MODEL_DIR".into(), embed.join("all-MiniLM-L6-v2").display().to_string()),
        ("ORT_DYLIB_PATH".into(), embed.join("onnxruntime/libonnxruntime.so.1.31.1").display().to_string()),
        ("PGSHIFT_LOG".into(), "warn".into()),
    ]
}

/// pgvector's text form, `[0.1,0.2,...]`.
pub fn parse_vector(text: &str) -> Vec<f32> {
    text.trim_matches(['[', ']']).split(',').map(|x| x.parse().unwrap()).collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
}

/// The same model in the test process, to compute the vectors pgshift should store.
pub fn local_model() -> pgshift_embed::onnx::OnnxEmbedder {
    let embed = pgshift_testkit::cache_dir().join("embed");
    pgshift_embed::onnx::OnnxEmbedder::load(&pgshift_embed::onnx::OnnxConfig {
        model_dir: Some(embed.join("all-MiniLM-L6-v2")),
        runtime: Some(embed.join("onnxruntime/libonnxruntime.so.1.31.1")),
        ..Default::default()
    })
    .expect("the model from scripts/fetch_model.sh")
}

/// pgshift with the local model's environment (commands that embed); no password in what it prints.
pub fn pgshift_env(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift")).args(args).envs(model_env()).output().unwrap();
    assert!(!format!("{}{}", stdout(&out), stderr(&out)).contains(pgshift_testkit::PASSWORD));
    out
}

/// `pgshift migrate` with `args` (and the local model's environment) in the background,
/// returned once its load is done and catch-up follows; its metrics tell when.
pub fn migrate_until_catch_up(args: &[&str], timeout: std::time::Duration) -> Background {
    let addr = format!("127.0.0.1:{}", pgshift_testkit::free_port());
    let env = model_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut args = args.to_vec();
    args.extend(["--metrics-addr", &addr]);
    let mut migrate = Background::pgshift_with_env(&args, &env);
    let metrics_url = format!("http://{addr}/metrics");
    wait_until("the load to end", timeout, || {
        !migrate.running() || http::sample(&http::get(&metrics_url, None).body, "pgshift_phase{phase=\"catch-up\"}") == Some(1.0)
    });
    assert!(migrate.running(), "migrate ended: {:?}", migrate.printed());
    migrate
}

/// A background process (pgshift, pgbench) killed when the test ends, pass or fail.
/// pgshift's output goes to files, so a chatty process never blocks on a full pipe.
pub struct Background {
    child: std::process::Child,
    logs: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Background {
    pub fn adopt(child: std::process::Child) -> Background {
        Background { child, logs: None }
    }

    pub fn pgshift(args: &[&str]) -> Background {
        Background::pgshift_with_env(args, &[("PGSHIFT_LOG", "warn")])
    }

    pub fn pgshift_with_env(args: &[&str], env: &[(&str, &str)]) -> Background {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let base = std::env::temp_dir().join(format!("pgshift-bg-{}-{n}", std::process::id()));
        let (out, err) = (base.with_extension("out"), base.with_extension("err"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start pgshift");
        Background { child, logs: Some((out, err)) }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to end by itself and returns its output.
    pub fn wait(mut self, timeout: std::time::Duration) -> Output {
        let deadline = std::time::Instant::now() + timeout;
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "background process did not end within {timeout:?}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.output()
    }

    /// Stops the process now and returns what it printed.
    pub fn stop(mut self) -> Output {
        let _ = self.child.kill();
        self.output()
    }

    /// What the process printed so far (stdout, stderr).
    pub fn printed(&self) -> (String, String) {
        let read = |p: &std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        self.logs.as_ref().map(|(o, e)| (read(o), read(e))).unwrap_or_default()
    }

    fn output(&mut self) -> Output {
        let status = self.child.wait().unwrap();
        let (stdout, stderr) = self.printed();
        let text = format!("{stdout}{stderr}");
        assert!(!text.contains(PASSWORD), "the password leaked into pgshift's output:\n{text}");
        Output { status, stdout: stdout.into_bytes(), stderr: stderr.into_bytes() }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((out, err)) = &self.logs {
            let _ = std::fs::remove_file(out);
            let _ = std::fs::remove_file(err);
        }
    }
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
