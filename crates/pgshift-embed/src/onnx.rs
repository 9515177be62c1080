//! all-MiniLM-L6-v2 on ONNX Runtime, through fastembed's user-defined model API:
//! the model files come from a directory (scripts/fetch_model.sh makes it) and the
//! runtime library is loaded at run time, so nothing is downloaded.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use fastembed::{InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel};

use crate::{EmbedError, Embedder, Result, MINILM, MINILM_DIMS};

/// Where the model and the runtime are; `None` = from the environment.
#[derive(Clone, Debug, Default)]
pub struct OnnxConfig {
    /// A directory with model.onnx, tokenizer.json, config.json,
    /// special_tokens_map.json, tokenizer_config.json (default: $PGSHIFT_MODEL_DIR).
    pub model_dir: Option<PathBuf>,
    /// libonnxruntime.so (default: $ORT_DYLIB_PATH).
    pub runtime: Option<PathBuf>,
    /// Threads ONNX Runtime uses inside one batch (default: every core).
    pub threads: Option<usize>,
    /// Run on the GPU through the CUDA execution provider (the `cuda` feature).
    pub gpu: bool,
}

/// sentence-transformers' max_seq_length for this model: longer texts are truncated.
const MAX_TOKENS: usize = 256;
const SETUP_HINT: &str = "run scripts/fetch_model.sh DIR, then set PGSHIFT_MODEL_DIR=DIR/all-MiniLM-L6-v2 and \
     ORT_DYLIB_PATH=DIR/onnxruntime/libonnxruntime.so.1.31.1";

pub struct OnnxEmbedder {
    // fastembed's embed() takes &mut self; one session already uses every core.
    model: Mutex<TextEmbedding>,
}

impl OnnxEmbedder {
    pub fn load(config: &OnnxConfig) -> Result<OnnxEmbedder> {
        let dir = config
            .model_dir
            .clone()
            .or_else(|| std::env::var_os("PGSHIFT_MODEL_DIR").map(PathBuf::from))
            .ok_or_else(|| EmbedError::Setup(format!("no model directory for {MINILM}: {SETUP_HINT}")))?;
        let runtime = config
            .runtime
            .clone()
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
            .ok_or_else(|| EmbedError::Setup(format!("no ONNX Runtime library: {SETUP_HINT}")))?;
        init_runtime(&runtime)?;
        let read = |name: &str| -> Result<Vec<u8>> {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| EmbedError::Setup(format!("cannot read {}: {e}; {SETUP_HINT}", path.display())))
        };
        let tokenizer = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let model = UserDefinedEmbeddingModel::new(read("model.onnx")?, tokenizer).with_pooling(Pooling::Mean);
        let mut options = InitOptionsUserDefined::new().with_max_length(MAX_TOKENS);
        if let Some(n) = config.threads {
            options = options.with_intra_threads(n.max(1));
        }
        if config.gpu {
            options = options.with_execution_providers(gpu_providers()?);
        }
        let model = TextEmbedding::try_new_from_user_defined(model, options)
            .map_err(|e| EmbedError::Setup(format!("cannot load {} as {MINILM}: {e}", dir.display())))?;
        Ok(OnnxEmbedder { model: Mutex::new(model) })
    }
}

/// ONNX Runtime is loaded once per process.
fn init_runtime(path: &Path) -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            if !path.is_file() {
                return Err(format!("ONNX Runtime library {} does not exist; {SETUP_HINT}", path.display()));
            }
            // Loading the library is what matters; sessions use ort's default environment.
            let _default_environment =
                ort::init_from(path).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
            Ok(())
        })
        .clone()
        .map_err(EmbedError::Setup)
}

#[cfg(feature = "cuda")]
fn gpu_providers() -> Result<Vec<fastembed::ExecutionProviderDispatch>> {
    Ok(vec![ort::ep::CUDA::default().build().error_on_failure()])
}

#[cfg(not(feature = "cuda"))]
fn gpu_providers() -> Result<Vec<fastembed::ExecutionProviderDispatch>> {
    Err(EmbedError::Setup("this pgshift was built without GPU support: rebuild with `cargo build --features cuda`".into()))
}

impl Embedder for OnnxEmbedder {
    fn model(&self) -> &str {
        MINILM
    }

    fn dims(&self) -> usize {
        MINILM_DIMS
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut model = self.model.lock().unwrap_or_else(|p| p.into_inner());
        let vectors = model.embed(texts, Some(texts.len())).map_err(|e| EmbedError::Model(e.to_string()))?;
        if let Some(v) = vectors.iter().find(|v| v.len() != MINILM_DIMS) {
            return Err(EmbedError::Dimensions { model: MINILM.into(), expected: MINILM_DIMS, actual: v.len() });
        }
        Ok(vectors)
    }
}
