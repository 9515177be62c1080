//! Content hashes for the embedding cache: the same model and the same text give the
//! same key, so a vector is computed once however often its text appears.

use sha2::{Digest, Sha256};

/// SHA-256 over the model name, a separator no name contains, and the text.
pub fn content_hash(model: &str, text: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0u8]);
    h.update(text.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_and_text_both_count() {
        assert_eq!(content_hash("m", "a b"), content_hash("m", "a b"));
        assert_ne!(content_hash("m", "a b"), content_hash("n", "a b"));
        assert_ne!(content_hash("m", "ab"), content_hash("ma", "b"));
    }
}
