//! pgshift's CPU embedder against vectors computed independently by
//! sentence-transformers (PyTorch) from the original model files:
//! tests/data/reference.json, made by scripts/reference_vectors.py.

use pgshift_embed::batch::embed_bucketed;
use pgshift_embed::onnx::{OnnxConfig, OnnxEmbedder};
use pgshift_embed::Embedder;

fn embedder() -> OnnxEmbedder {
    let embed = pgshift_testkit::cache_dir().join("embed");
    let config = OnnxConfig {
        model_dir: Some(embed.join("all-MiniLM-L6-v2")),
        runtime: Some(embed.join("onnxruntime/libonnxruntime.so.1.31.1")),
        threads: None,
        gpu: false,
    };
    OnnxEmbedder::load(&config).expect("the model from scripts/fetch_model.sh (run by scripts/bootstrap.sh)")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn vectors_match_sentence_transformers() {
    let reference: serde_json::Value = serde_json::from_str(include_str!("data/reference.json")).unwrap();
    let sentences: Vec<&str> = reference["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let expected: Vec<Vec<f32>> = reference["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    let model = embedder();
    assert_eq!((model.model(), model.dims()), ("all-MiniLM-L6-v2", 384));

    // Once as one batch, once bucketed by length: padding must not change a vector.
    for vectors in [model.embed(&sentences).unwrap(), embed_bucketed(&model, &sentences, 4).unwrap()] {
        assert_eq!(vectors.len(), sentences.len());
        let lowest = vectors.iter().zip(&expected).map(|(g, w)| cosine(g, w)).fold(1.0, f64::min);
        eprintln!("lowest cosine with sentence-transformers: {lowest:.7}");
        for ((text, got), want) in sentences.iter().zip(&vectors).zip(&expected) {
            assert_eq!(got.len(), 384);
            let c = cosine(got, want);
            assert!(c > 0.999, "{text:?}: cosine {c} with sentence-transformers");
            let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{text:?}: not normalised ({norm})");
        }
    }
    // Similar sentences are near, different ones far: the model is not just "some" model.
    let v = model.embed(&["A man is eating food.", "A man is eating a piece of bread.", "A woman is playing violin."]).unwrap();
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.3);
}

#[test]
fn a_missing_model_says_how_to_get_it() {
    let config = OnnxConfig { model_dir: Some("/nonexistent/model".into()), ..OnnxConfig::default() };
    let runtime = pgshift_testkit::cache_dir().join("embed/onnxruntime/libonnxruntime.so.1.31.1");
    let err = OnnxEmbedder::load(&OnnxConfig { runtime: Some(runtime), ..config }).err().expect("no model there");
    let text = err.to_string();
    assert!(text.contains("/nonexistent/model/tokenizer.json") && text.contains("scripts/fetch_model.sh"), "{text}");
}
