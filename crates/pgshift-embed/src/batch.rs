//! Length bucketing: a batch is padded to its longest text, so texts of similar
//! length are embedded together and the vectors are put back in input order.

use crate::{Embedder, Result};

/// Embeds `texts` in batches of up to `batch_size`, grouped by length; the result is
/// in the order of `texts`.
pub fn embed_bucketed(embedder: &dyn Embedder, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    // An embedder that runs several batches at once gets them in one call (still
    // sorted, so each of its batches holds texts of similar length).
    for group in order.chunks(batch_size.max(1) * embedder.parallel_batches().max(1)) {
        let batch: Vec<&str> = group.iter().map(|&i| texts[i]).collect();
        for (&i, v) in group.iter().zip(embedder.embed(&batch)?) {
            out[i] = v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the batches it is given; its "vector" is the text's length.
    struct Recorder(Mutex<Vec<Vec<String>>>);
    impl Embedder for Recorder {
        fn model(&self) -> &str {
            "recorder"
        }
        fn dims(&self) -> usize {
            1
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
            self.0.lock().unwrap().push(texts.iter().map(|t| t.to_string()).collect());
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    #[test]
    fn batches_hold_similar_lengths_and_results_keep_input_order() {
        let texts = ["aaaaaa", "a", "aaaaa", "aa", "aaaa", "aaa"];
        let r = Recorder(Mutex::new(Vec::new()));
        let out = embed_bucketed(&r, &texts, 2).unwrap();
        assert_eq!(out, texts.iter().map(|t| vec![t.len() as f32]).collect::<Vec<_>>());
        assert_eq!(*r.0.lock().unwrap(), [vec!["a", "aa"], vec!["aaa", "aaaa"], vec!["aaaaa", "aaaaaa"]]);
    }
}
