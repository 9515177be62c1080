//! A model's own tokenizer (its `tokenizer.json`), to count texts and cut them into
//! chunks exactly as the model reads them.

use std::ops::Range;
use std::path::Path;

use tokenizers::{PostProcessor, Tokenizer};

use crate::chunk::Tokens;
use crate::onnx::{model_dir, OnnxConfig, MAX_TOKENS};
use crate::{EmbedError, Result};

pub struct ModelTokens {
    tokenizer: Tokenizer,
    specials: usize,
    window: usize,
}

impl ModelTokens {
    /// The tokenizer in `dir` (its `tokenizer.json`), for a model that reads `window`
    /// tokens at most.
    pub fn load(dir: &Path, window: usize) -> Result<ModelTokens> {
        let path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&path).map_err(|e| EmbedError::Setup(format!("cannot read the tokenizer {}: {e}", path.display())))?;
        // The file's own truncation (128 for all-MiniLM-L6-v2) would hide the rest of a text.
        tokenizer.with_truncation(None).map_err(|e| EmbedError::Setup(format!("tokenizer {}: {e}", path.display())))?;
        tokenizer.with_padding(None);
        let specials = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));
        Ok(ModelTokens { tokenizer, specials, window })
    }

    /// all-MiniLM-L6-v2's tokenizer, from where its model is installed.
    pub fn minilm(config: &OnnxConfig) -> Result<ModelTokens> {
        ModelTokens::load(&model_dir(config)?, MAX_TOKENS)
    }
}

impl Tokens for ModelTokens {
    fn spans(&self, text: &str) -> Result<Vec<Range<usize>>> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| EmbedError::Model(format!("tokenize: {e}")))?;
        Ok(encoding.get_offsets().iter().map(|&(s, e)| s..e).collect())
    }

    fn specials(&self) -> usize {
        self.specials
    }

    fn window(&self) -> usize {
        self.window
    }
}
