//! Embedders: text in, vectors out. [`onnx::OnnxEmbedder`] runs all-MiniLM-L6-v2 on
//! ONNX Runtime on this machine; [`http::HttpEmbedder`] calls an OpenAI-compatible
//! or text-embeddings-inference server. Both are blocking: the pipeline calls them
//! from its own embedding threads.

pub mod batch;
pub mod chunk;
pub mod hash;
pub mod http;
pub mod onnx;
pub mod tokens;

/// The one model pgshift ships, and the dimensions it produces.
pub const MINILM: &str = "all-MiniLM-L6-v2";
pub const MINILM_DIMS: usize = 384;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model or runtime files are missing or unusable; the message says where they go.
    #[error("{0}")]
    Setup(String),
    #[error("embedding failed: {0}")]
    Model(String),
    /// The embedding server failed (after retries); never carries the API key.
    #[error("embedding server {endpoint}: {message}")]
    Remote { endpoint: String, message: String },
    #[error("embedding dimensions: the model {model} makes {actual}, but {expected} were asked for")]
    Dimensions { model: String, expected: usize, actual: usize },
}

pub type Result<T, E = EmbedError> = std::result::Result<T, E>;

pub trait Embedder: Send + Sync {
    /// Names the model in cache keys and errors (same name + same text = same vector).
    fn model(&self) -> &str;
    fn dims(&self) -> usize;
    /// One vector per text, in order, L2-normalised.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Batches one [`Embedder::embed`] call runs at once (a fleet of servers: many),
    /// so callers hand it that many batches' texts per call.
    fn parallel_batches(&self) -> usize {
        1
    }
    /// How the model reads text (its tokenizer and window), when this process has it:
    /// to cut documents into chunks that fit, and to count texts the model cuts short.
    fn tokens(&self) -> Option<std::sync::Arc<dyn chunk::Tokens>> {
        None
    }
}

/// Scales a vector to unit length (a zero vector stays zero), as sentence-transformers'
/// Normalize module does.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}
