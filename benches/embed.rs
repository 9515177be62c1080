//! Criterion bench of the CPU embedder on texts of mixed length: batches taken in
//! input order (each padded to its longest text) against pgshift's length buckets,
//! measured in the same run. `cargo bench --bench embed` (after scripts/bootstrap.sh).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgshift_embed::batch::embed_bucketed;
use pgshift_embed::onnx::{OnnxConfig, OnnxEmbedder};
use pgshift_embed::Embedder;

/// Mostly short texts with a long one in every eight, as in a table of notes.
fn texts() -> Vec<String> {
    (0..64)
        .map(|i| {
            let words = if i % 8 == 0 { 120 } else { 6 + i % 9 };
            (0..words).map(|w| ["vector", "index", "replica", "table", "query", "model"][(i + w) % 6]).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn bench_embed(c: &mut Criterion) {
    let cache = pgshift_testkit::cache_dir().join("embed");
    let model = OnnxEmbedder::load(&OnnxConfig {
        model_dir: Some(cache.join("all-MiniLM-L6-v2")),
        runtime: Some(cache.join("onnxruntime/libonnxruntime.so.1.31.1")),
        ..OnnxConfig::default()
    })
    .expect("model files from scripts/fetch_model.sh");
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("embed_64_mixed_texts");
    group.sample_size(10).throughput(Throughput::Elements(refs.len() as u64));
    group.bench_function("input_order_batch_16", |b| {
        b.iter(|| refs.chunks(16).map(|batch| model.embed(batch).unwrap().len()).sum::<usize>())
    });
    group.bench_function("length_buckets_batch_16", |b| b.iter(|| embed_bucketed(&model, &refs, 16).unwrap().len()));
    group.finish();
}

criterion_group!(benches, bench_embed);
criterion_main!(benches);
