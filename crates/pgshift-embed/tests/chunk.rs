//! Chunks of real text, cut with all-MiniLM-L6-v2's own tokenizer (from
//! scripts/fetch_model.sh, as `make bootstrap` installs it).

use pgshift_embed::chunk::{chunk, Chunking, Tokens};
use pgshift_embed::tokens::ModelTokens;

fn tokens() -> ModelTokens {
    ModelTokens::load(&pgshift_testkit::cache_dir().join("embed/all-MiniLM-L6-v2"), 256).expect("the model's tokenizer (make bootstrap)")
}

/// A document of paragraphs with long and short sentences, a URL, accents and a word
/// longer than any chunk.
fn document() -> String {
    let mut text = String::new();
    for p in 0..40 {
        for s in 0..(3 + p % 5) {
            text.push_str(&format!(
                "Paragraph {p}, sentence {s}: the replication slot keeps WAL until the subscriber confirms it (see https://www.postgresql.org/docs/current/logicaldecoding.html); café naïve résumé. "
            ));
        }
        text.push_str("\n\n");
    }
    text.push_str(&"Supercalifragilistic".repeat(100));
    text.push_str(" and the end.");
    text
}

#[test]
fn chunks_of_real_text_fit_the_model_and_cover_every_word() {
    let tokens = tokens();
    assert_eq!((tokens.specials(), tokens.window()), (2, 256), "[CLS] and [SEP]; the model reads 256");
    let text = document();
    assert!(tokens.count(&text).unwrap() > 20 * 256, "the document is many windows long");
    let parts = chunk(&text, &tokens, Chunking { tokens: 256, overlap: 32 }, 0).unwrap();
    for p in &parts {
        let n = tokens.count(&text[p.clone()]).unwrap();
        assert!(n <= 256, "{n} tokens: {:?}", &text[p.clone()]);
    }
    // Consecutive chunks touch or overlap: every byte of text between the first and last
    // word is in some chunk.
    for w in parts.windows(2) {
        assert!(w[1].start <= w[0].end && w[1].start > w[0].start, "{:?} then {:?}", w[0], w[1]);
    }
    assert_eq!((parts[0].start, parts.last().unwrap().end), (0, text.trim_end().len()));
    // Most chunks end at a paragraph or a sentence.
    let clean = parts.iter().filter(|p| text[(*p).clone()].ends_with(['.', ')'])).count();
    assert!(clean * 10 >= parts.len() * 7, "{clean} of {} chunks end a sentence", parts.len());
}

#[test]
fn a_context_prefix_leaves_room_for_itself() {
    let tokens = tokens();
    let text = document();
    let prefix = "PostgreSQL manual: Logical Decoding\n\n";
    let prefix_tokens = tokens.spans(prefix).unwrap().len();
    let parts = chunk(&text, &tokens, Chunking { tokens: 128, overlap: 0 }, prefix_tokens).unwrap();
    for p in &parts {
        let n = tokens.count(&format!("{prefix}{}", &text[p.clone()])).unwrap();
        assert!(n <= 128, "{n} tokens with the prefix");
    }
}
