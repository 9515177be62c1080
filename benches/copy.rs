//! Criterion bench of the COPY pipe between two real clusters (PG15 -> PG16), against
//! the raw `psql | psql` binary pipe measured in the same run.
//! `cargo bench --bench copy`; BENCH_COPY_ROWS sizes the table (default 200000).

use std::process::{Command, Stdio};

use criterion::{criterion_group, criterion_main, Criterion};
use pgshift_postgres::catalog;
use pgshift_postgres::copy::{copy_in_received, copy_in_sql, copy_out_batched, copy_out_sql, CopyFormat};
use pgshift_postgres::ConnInfo;
use pgshift_testkit::{Cluster, PgVersion, PASSWORD};

fn bench_copy(c: &mut Criterion) {
    let rows: u64 = std::env::var("BENCH_COPY_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let source = Cluster::start(PgVersion::V15);
    let target = Cluster::start(PgVersion::V16);
    let ddl = "CREATE TABLE docs (id bigint, ident uuid, body text, meta jsonb, at timestamptz)";
    source.psql("postgres", ddl);
    target.psql("postgres", ddl);
    source.psql(
        "postgres",
        &format!(
            "INSERT INTO docs SELECT i, md5(i::text)::uuid, repeat(md5(i::text), 20), jsonb_build_object('n', i), now() \
             FROM generate_series(1, {rows}) i"
        ),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (src_info, dst_info) =
        (ConnInfo::parse(&source.url("postgres"), "source").unwrap(), ConnInfo::parse(&target.url("postgres"), "target").unwrap());
    let (src, dst, table) = rt.block_on(async {
        let src = src_info.session().await.unwrap();
        let dst = dst_info.session().await.unwrap();
        let cat = catalog::inspect(&src).await.unwrap();
        let table = cat.table("public", "docs").unwrap().clone();
        (src, dst, table)
    });
    let (out_sql, in_sql) = (copy_out_sql(&table, None, CopyFormat::Binary), copy_in_sql(&table, CopyFormat::Binary));

    let mut group = c.benchmark_group(format!("copy {rows} rows"));
    group.sample_size(10);
    group.bench_function("raw psql binary pipe", |b| {
        b.iter(|| {
            target.psql("postgres", "TRUNCATE docs");
            let psql = source.bin_dir().join("psql");
            let mut out = Command::new(&psql)
                .args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-p", &source.port.to_string(), "-c", "COPY docs TO STDOUT (FORMAT binary)"])
                .env("PGPASSWORD", PASSWORD)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let status = Command::new(&psql)
                .args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-p", &target.port.to_string(), "-c", "COPY docs FROM STDIN (FORMAT binary)"])
                .env("PGPASSWORD", PASSWORD)
                .stdin(out.stdout.take().unwrap())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success() && out.wait().unwrap().success());
        })
    });
    group.bench_function("pgshift pipe", |b| {
        b.iter(|| {
            rt.block_on(async {
                dst.batch_execute("TRUNCATE public.docs").await.unwrap();
                // As the load does it: the reader batches into a bounded queue the writer drains.
                let (out, mut received) = tokio::sync::mpsc::channel(4);
                let (src, out_sql) = (&src, &out_sql);
                let read = async move { copy_out_batched(src, out_sql, &out).await };
                let write = copy_in_received(&dst, &in_sql, &mut received, |_| {});
                let (sent, stats) = tokio::try_join!(read, write).unwrap();
                assert!(sent);
                assert_eq!(stats.rows, rows);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_copy);
criterion_main!(benches);
