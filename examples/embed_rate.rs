//! pgshift's embedder alone, for benches/embed.sh: reads texts (one per line) from
//! stdin, embeds them with length bucketing, prints `pgshift KIND BATCH THREADS texts/s`.
//! usage: embed_rate KIND BATCH THREADS < texts

use std::io::BufRead;
use std::time::Instant;

use pgshift_embed::batch::embed_bucketed;
use pgshift_embed::onnx::{OnnxConfig, OnnxEmbedder};
use pgshift_embed::Embedder;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (kind, batch, threads): (&str, usize, usize) = (&args[1], args[2].parse().unwrap(), args[3].parse().unwrap());
    let texts: Vec<String> = std::io::stdin().lock().lines().map(|l| l.unwrap()).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let model = OnnxEmbedder::load(&OnnxConfig { threads: Some(threads), ..OnnxConfig::default() }).expect("model (PGSHIFT_MODEL_DIR, ORT_DYLIB_PATH)");
    model.embed(&refs[..batch.min(refs.len())]).unwrap(); // warm-up
    let started = Instant::now();
    let vectors = embed_bucketed(&model, &refs, batch).unwrap();
    assert_eq!(vectors.len(), refs.len());
    println!("pgshift {kind} {batch} {threads} {:.2}", refs.len() as f64 / started.elapsed().as_secs_f64());
}
