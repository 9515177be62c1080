//! A model's own tokenizer (its `tokenizer.json`), to count texts and cut them into
//! chunks exactly as the model reads them; and, for a server's model whose tokenizer
//! this process lacks, [`ApproxTokens`], an estimate that errs towards more tokens.

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

/// Tokens estimated without the model's tokenizer: every word (a run without
/// whitespace) as pieces of at most [`APPROX_BYTES_PER_TOKEN`] bytes. Real tokenizers
/// average four or more bytes per token on prose, so chunks cut by this estimate fit
/// the server's window, a little shorter than they could be.
pub struct ApproxTokens {
    pub window: usize,
}

pub const APPROX_BYTES_PER_TOKEN: usize = 3;

impl Tokens for ApproxTokens {
    fn spans(&self, text: &str) -> Result<Vec<Range<usize>>> {
        let mut out = Vec::new();
        let mut word: Option<usize> = None;
        for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
            match (c.is_whitespace(), word) {
                (false, None) => word = Some(i),
                (true, Some(start)) => {
                    let mut p = start;
                    while p < i {
                        let mut end = (p + APPROX_BYTES_PER_TOKEN).min(i);
                        while !text.is_char_boundary(end) {
                            end += 1;
                        }
                        out.push(p..end);
                        p = end;
                    }
                    word = None;
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn specials(&self) -> usize {
        2
    }

    fn window(&self) -> usize {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_cuts_words_into_small_pieces() {
        let t = ApproxTokens { window: 512 };
        let text = "a bb ccccccc  dé\u{301}f";
        let pieces: Vec<&str> = t.spans(text).unwrap().into_iter().map(|r| &text[r]).collect();
        assert_eq!(pieces, ["a", "bb", "ccc", "ccc", "c", "dé", "\u{301}f"]);
        assert_eq!(t.count("").unwrap(), 2);
    }
}
