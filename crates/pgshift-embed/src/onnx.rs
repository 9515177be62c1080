//! all-MiniLM-L6-v2 on ONNX Runtime, through fastembed's user-defined model API:
//! the model files come from a directory (scripts/fetch_model.sh makes it) and the
//! runtime library is loaded at run time, so nothing is downloaded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use fastembed::{InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel};

use crate::chunk::Tokens;
use crate::tokens::ModelTokens;
use crate::{EmbedError, Embedder, Result, MINILM, MINILM_DIMS};

/// Where the model and the runtime are; `None` = from the environment, else from the
/// first of [`install_dirs`] that holds them.
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
pub const MAX_TOKENS: usize = 256;
const SETUP_HINT: &str = "fetch them with scripts/fetch_model.sh ~/.local/share/pgshift (from PyPI, pinned), \
     or point PGSHIFT_MODEL_DIR at a model directory and ORT_DYLIB_PATH at libonnxruntime.so";
/// The model's directory inside an install directory.
const MODEL_SUBDIR: &str = "all-MiniLM-L6-v2";
/// The runtime library inside an install directory (fetch_model.sh's layout).
const RUNTIME_FILE: &str = "onnxruntime/libonnxruntime.so.1.31.1";

/// Where scripts/fetch_model.sh installs may be, in the order they are tried:
/// `$XDG_DATA_HOME/pgshift` (or `~/.local/share/pgshift`), `/usr/local/share/pgshift`,
/// `/usr/share/pgshift`, `/opt/pgshift` (the container image), `share/pgshift` beside
/// the binary's directory, and the `.cache/embed` of a checkout the binary was built in
/// (where `make bootstrap` puts them).
pub fn install_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => dirs.push(PathBuf::from(d).join("pgshift")),
        _ => dirs.extend(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/pgshift"))),
    }
    dirs.extend(["/usr/local/share/pgshift", "/usr/share/pgshift", "/opt/pgshift"].map(PathBuf::from));
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        dirs.extend(exe_dir.parent().map(|p| p.join("share/pgshift")));
        dirs.extend(exe_dir.ancestors().map(|a| a.join(".cache/embed")));
    }
    dirs
}

/// The first install directory where `relative` exists.
fn installed(relative: &str) -> Option<PathBuf> {
    install_dirs().into_iter().map(|d| d.join(relative)).find(|p| p.exists())
}

/// Why nothing was found, with where pgshift looked.
fn not_found(what: &str) -> EmbedError {
    let looked: Vec<String> = install_dirs().iter().map(|d| d.display().to_string()).collect();
    EmbedError::Setup(format!("{what} not found (looked in {}); {SETUP_HINT}", looked.join(", ")))
}

pub struct OnnxEmbedder {
    // fastembed's embed() takes &mut self; one session already uses every core.
    model: Mutex<TextEmbedding>,
    tokens: Arc<ModelTokens>,
}

/// The model's directory: the configured one, `$PGSHIFT_MODEL_DIR`, or the first install directory holding it.
pub fn model_dir(config: &OnnxConfig) -> Result<PathBuf> {
    config
        .model_dir
        .clone()
        .or_else(|| std::env::var_os("PGSHIFT_MODEL_DIR").map(PathBuf::from))
        .or_else(|| installed(&format!("{MODEL_SUBDIR}/model.onnx")).and_then(|m| m.parent().map(Path::to_path_buf)))
        .ok_or_else(|| not_found(&format!("the {MINILM} model")))
}

impl OnnxEmbedder {
    pub fn load(config: &OnnxConfig) -> Result<OnnxEmbedder> {
        let dir = model_dir(config)?;
        let runtime = config
            .runtime
            .clone()
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
            .or_else(|| installed(RUNTIME_FILE))
            .ok_or_else(|| not_found("the ONNX Runtime library"))?;
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
        let model = TextEmbedding::try_new_from_user_defined(model, options).map_err(|e| {
            // error_on_failure: a missing CUDA stops here, before anything is written.
            let gpu = if config.gpu {
                " (--gpu needs an NVIDIA driver with a CUDA device and a CUDA build of ONNX Runtime at ORT_DYLIB_PATH; \
                 without them, leave --gpu out to run on the CPU)"
            } else {
                ""
            };
            EmbedError::Setup(format!("cannot load {} as {MINILM}: {e}{gpu}", dir.display()))
        })?;
        Ok(OnnxEmbedder { model: Mutex::new(model), tokens: Arc::new(ModelTokens::load(&dir, MAX_TOKENS)?) })
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

    fn tokens(&self) -> Option<Arc<dyn Tokens>> {
        Some(self.tokens.clone())
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
