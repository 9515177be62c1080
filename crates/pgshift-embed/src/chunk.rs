//! Documents longer than the model's window, cut into chunks that each fit it.
//!
//! Tokens are counted as the model counts them ([`Tokens`]: the model's own
//! tokenizer, special tokens included). A chunk ends where the text breaks best within
//! the budget: a paragraph break, else a sentence end, else a space; a word is split
//! only when it alone exceeds a chunk. Consecutive chunks overlap by about `overlap`
//! tokens, starting at a word. Every word of the text is in at least one chunk.
//!
//! The text is tokenized a window at a time (a few times the chunk's length), never
//! whole, so a 10 MB document costs the memory of one chunk's tokens.

use std::ops::Range;

use crate::{EmbedError, Result};

/// How a model reads text: where each token lies, and how many tokens fit.
pub trait Tokens: Send + Sync {
    /// The byte range of each token of `text` (special tokens left out), in order.
    fn spans(&self, text: &str) -> Result<Vec<Range<usize>>>;
    /// Tokens the model adds to every text (for BERT models: `[CLS]` and `[SEP]`).
    fn specials(&self) -> usize;
    /// The most tokens the model reads, special tokens included.
    fn window(&self) -> usize;

    /// How many tokens the model reads for `text`, special tokens included.
    fn count(&self, text: &str) -> Result<usize> {
        Ok(self.spans(text)?.len() + self.specials())
    }
}

/// How a spec cuts its texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunking {
    /// The most tokens of one chunk as the model reads it: special tokens and the
    /// context prefix included.
    pub tokens: usize,
    /// Tokens each chunk repeats from the end of the one before.
    pub overlap: usize,
}

/// The fewest tokens left for a chunk's own text (below this, a prefix or a chunk
/// size leaves no room to say anything).
const MIN_BUDGET: usize = 8;

/// Bytes of text per token of the budget tokenized at first when looking for a chunk's
/// end (English averages 4 to 5 per word piece); the window doubles while it holds fewer
/// tokens than a chunk (text of long words, or mostly spaces).
const FIRST_WINDOW_BYTES_PER_TOKEN: usize = 8;

/// The byte ranges of `text`'s chunks, in order. `prefix_tokens`: tokens of the
/// context put before every chunk when it is embedded (they count against the
/// window). Text without a token (empty, blank) has no chunk.
pub fn chunk(text: &str, tokens: &dyn Tokens, chunking: Chunking, prefix_tokens: usize) -> Result<Vec<Range<usize>>> {
    let window = chunking.tokens.min(tokens.window());
    let budget = window.saturating_sub(tokens.specials() + prefix_tokens);
    if budget < MIN_BUDGET {
        return Err(EmbedError::Setup(format!(
            "chunks of {window} tokens leave {budget} for the text after {} special and {prefix_tokens} context tokens: \
             make chunk_tokens larger or the context shorter",
            tokens.specials()
        )));
    }
    let overlap = chunking.overlap.min(budget / 2);
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let (spans, at_end) = spans_from(text, start, budget, tokens)?;
        let Some(first) = spans.first() else { break };
        if at_end && spans.len() <= budget {
            out.push(first.start..spans[spans.len() - 1].end);
            break;
        }
        let mut last = break_before(text, &spans, budget);
        // Re-counted as the model reads the chunk alone: a word split in two may
        // tokenize into more pieces than it had inside the word.
        while last > 0 && tokens.spans(&text[first.start..spans[last].end])?.len() > budget {
            last -= 1;
        }
        out.push(first.start..spans[last].end);
        start = next_start(text, &spans, last, overlap);
    }
    Ok(out)
}

/// The spans of the tokens from byte `start` on: at least `budget + 1` of them unless
/// the text ends first (then `true`). Offsets are into `text`.
fn spans_from(text: &str, start: usize, budget: usize, tokens: &dyn Tokens) -> Result<(Vec<Range<usize>>, bool)> {
    let mut len = (budget * FIRST_WINDOW_BYTES_PER_TOKEN).max(256);
    loop {
        let mut end = (start + len).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let at_end = end == text.len();
        let mut spans = tokens.spans(&text[start..end])?;
        if !at_end {
            // The window may end inside a word: its last token is not to be trusted.
            spans.pop();
        }
        if at_end || spans.len() > budget {
            return Ok((spans.into_iter().map(|s| s.start + start..s.end + start).collect(), at_end));
        }
        len *= 2;
    }
}

/// The index of the chunk's last token, among the first `budget`: the text breaks
/// after it at a paragraph, else at a sentence end, else at a space (a paragraph or
/// sentence only in the chunk's second half, so chunks stay long); the budget's last
/// token when one word fills the chunk.
fn break_before(text: &str, spans: &[Range<usize>], budget: usize) -> usize {
    let gap = |k: usize| &text[spans[k].end..spans[k + 1].start];
    let candidates = || (0..budget.min(spans.len() - 1)).rev();
    let half = budget / 2;
    candidates()
        .filter(|&k| k >= half)
        .find(|&k| gap(k).contains("\n\n") || gap(k).contains("\r\n\r\n"))
        .or_else(|| candidates().filter(|&k| k >= half).find(|&k| ends_sentence(&text[spans[k].clone()]) && !gap(k).is_empty()))
        .or_else(|| candidates().find(|&k| gap(k).chars().any(char::is_whitespace)))
        .unwrap_or(budget.min(spans.len()) - 1)
}

fn ends_sentence(token: &str) -> bool {
    token.ends_with(['.', '!', '?', '。', '！', '？'])
}

/// Where the next chunk starts: `overlap` tokens before the end of the one that ends
/// with token `last`, moved forward to the start of a word, always after the start of
/// the chunk before.
fn next_start(text: &str, spans: &[Range<usize>], last: usize, overlap: usize) -> usize {
    let starts_word = |k: usize| k == 0 || text[spans[k - 1].end..spans[k].start].chars().any(char::is_whitespace);
    let from = (last + 1).saturating_sub(overlap).max(1);
    (from..=last).find(|&k| starts_word(k)).map_or(spans[last].end, |k| spans[k].start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words and punctuation marks as tokens, a word of more than 5 letters as one
    /// token per 5 letters (like word pieces); two special tokens.
    struct Words(usize);
    impl Tokens for Words {
        fn spans(&self, text: &str) -> Result<Vec<Range<usize>>> {
            let mut out = Vec::new();
            let mut i = 0;
            let b = text.as_bytes();
            while i < b.len() {
                if b[i].is_ascii_whitespace() {
                    i += 1;
                } else if b[i].is_ascii_punctuation() {
                    out.push(i..i + 1);
                    i += 1;
                } else {
                    let s = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && !b[i].is_ascii_punctuation() {
                        i += 1;
                    }
                    let mut p = s;
                    while p < i {
                        out.push(p..(p + 5).min(i));
                        p += 5;
                    }
                }
            }
            Ok(out)
        }
        fn specials(&self) -> usize {
            2
        }
        fn window(&self) -> usize {
            self.0
        }
    }

    fn chunks(text: &str, tokens: usize, overlap: usize, prefix: usize) -> Vec<&str> {
        chunk(text, &Words(256), Chunking { tokens, overlap }, prefix).unwrap().into_iter().map(|r| &text[r]).collect()
    }

    fn words(text: &str) -> Vec<&str> {
        text.split(|c: char| c.is_whitespace() || c.is_ascii_punctuation()).filter(|w| !w.is_empty()).collect()
    }

    #[test]
    fn every_chunk_fits_and_every_word_is_covered() {
        let text: String = (0..400).map(|i| format!("word{i} ")).collect::<String>() + "end.";
        for (size, overlap) in [(20, 0), (20, 5), (64, 16), (12, 3)] {
            let parts = chunks(&text, size, overlap, 0);
            for p in &parts {
                assert!(Words(256).count(p).unwrap() <= size, "{size}/{overlap}: {p:?}");
            }
            let mut covered: Vec<&str> = parts.iter().flat_map(|p| words(p)).collect();
            covered.sort();
            covered.dedup();
            let mut all = words(&text);
            all.sort();
            all.dedup();
            assert_eq!(covered, all, "{size}/{overlap}");
        }
    }

    #[test]
    fn chunks_break_at_paragraphs_then_sentences_then_spaces() {
        let para = "one two three four five six seven eight nine ten.\n\nafter the break come more words here";
        assert_eq!(chunks(para, 16, 0, 0)[0], "one two three four five six seven eight nine ten.");
        let sentences = "one two three four five six seven. eight nine ten eleven twelve thirteen";
        assert_eq!(chunks(sentences, 14, 0, 0)[0], "one two three four five six seven.");
        let spaces = "one two three four five six seven eight nine ten eleven twelve";
        assert_eq!(chunks(spaces, 12, 0, 0)[0], "one two three four five six seven eight nine ten");
    }

    #[test]
    fn consecutive_chunks_overlap_from_a_word() {
        let text = "a b c d e f g h i j k l m n o p q r s t u v w x y z";
        let parts = chunks(text, 12, 3, 0);
        assert_eq!(parts[0], "a b c d e f g h i j");
        assert_eq!(parts[1], "h i j k l m n o p q");
        assert_eq!(parts.last().unwrap().split(' ').next_back(), Some("z"));
    }

    #[test]
    fn a_word_longer_than_a_chunk_is_split() {
        let text = format!("short {} tail", "x".repeat(200));
        let parts = chunks(&text, 12, 0, 0);
        assert!(parts.len() > 3, "{parts:?}");
        for p in &parts {
            assert!(Words(256).count(p).unwrap() <= 12, "{p:?}");
        }
        assert_eq!(parts.iter().map(|p| p.matches('x').count()).sum::<usize>(), 200, "{parts:?}");
    }

    #[test]
    fn the_prefix_counts_and_blank_text_has_no_chunk() {
        let text = "one two three four five six seven eight nine ten eleven twelve";
        assert_eq!(chunks(text, 16, 0, 4)[0], "one two three four five six seven eight nine ten");
        assert!(chunks("", 12, 0, 0).is_empty());
        assert!(chunks(" \n\t ", 12, 0, 0).is_empty());
        let err = chunk(text, &Words(256), Chunking { tokens: 12, overlap: 0 }, 6).unwrap_err().to_string();
        assert!(err.contains("make chunk_tokens larger or the context shorter"), "{err}");
    }

    #[test]
    fn long_documents_are_read_a_window_at_a_time() {
        // More text than the first tokenizer window per chunk: all spaces between words.
        let text = format!("first {} second third", " ".repeat(20_000));
        assert_eq!(chunks(&text, 256, 0, 0), [text.as_str().trim()]);
        let long: String = (0..50_000).map(|i| format!("w{i} ")).collect();
        let parts = chunks(&long, 128, 16, 0);
        assert!(parts.len() > 50_000 / 126, "{}", parts.len());
        assert!(parts.last().unwrap().ends_with("w49999"));
    }
}
