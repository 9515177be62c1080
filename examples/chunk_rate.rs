//! What cutting documents into chunks costs beside embedding them, for benches/chunks.sh:
//! cuts a generated document of MB megabytes with all-MiniLM-L6-v2's tokenizer, then
//! embeds a sample of its chunks, and prints
//! `chunking MB chunks seconds MB/s per-chunk-ms embed-per-chunk-ms cost% peak-RSS-MiB`.
//! usage: chunk_rate MB (PGSHIFT_MODEL_DIR, ORT_DYLIB_PATH as for pgshift)

use std::time::Instant;

use pgshift_embed::chunk::{chunk, Chunking};
use pgshift_embed::onnx::{OnnxConfig, OnnxEmbedder};
use pgshift_embed::tokens::ModelTokens;
use pgshift_embed::Embedder;

fn document(bytes: usize) -> String {
    let words = ["replication", "slot", "keeps", "the", "write-ahead", "log", "until", "subscriber", "confirms", "every", "change", "café"];
    let mut text = String::with_capacity(bytes + 64);
    let mut i = 0usize;
    while text.len() < bytes {
        text.push_str(words[(i * 7 + i / 13) % words.len()]);
        i += 1;
        text.push_str(if i % 97 == 0 { ".\n\n" } else if i % 17 == 0 { ". " } else { " " });
    }
    text
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

fn main() {
    let mb: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let text = document((mb * 1024.0 * 1024.0) as usize);
    let tokens = ModelTokens::minilm(&OnnxConfig::default()).expect("the model's tokenizer (PGSHIFT_MODEL_DIR)");
    let started = Instant::now();
    let ranges = chunk(&text, &tokens, Chunking { tokens: 256, overlap: 32 }, 0).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let rss = peak_rss_mib();
    let model = OnnxEmbedder::load(&OnnxConfig::default()).expect("model (PGSHIFT_MODEL_DIR, ORT_DYLIB_PATH)");
    let sample: Vec<&str> = ranges.iter().take(64).map(|r| &text[r.clone()]).collect();
    model.embed(&sample[..8]).unwrap(); // warm-up
    let embed_started = Instant::now();
    for batch in sample.chunks(32) {
        model.embed(batch).unwrap();
    }
    let embed_ms = embed_started.elapsed().as_secs_f64() * 1000.0 / sample.len() as f64;
    let chunk_ms = seconds * 1000.0 / ranges.len() as f64;
    println!(
        "chunking {mb} MB: {} chunks in {seconds:.2} s ({:.2} MB/s, {chunk_ms:.3} ms per chunk); embedding {embed_ms:.1} ms per chunk; \
         chunking costs {:.2}% of embedding; peak RSS while chunking {rss:.0} MiB",
        ranges.len(),
        mb / seconds,
        100.0 * chunk_ms / embed_ms
    );
}
