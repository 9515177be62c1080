//! Vectors computed on the way. Here: which tables get vectors ([`EmbeddingSpec`],
//! matched to tables once for every source by [`match_specs`]), the threads that
//! compute them ([`EmbedPool`], fed through a bounded channel), and the content-hash
//! cache in the target's run store ([`Cache`]). Then by stage: [`copy`] during the
//! load, [`catchup`] for changed rows during catch-up, [`reembed`] for live tables.
//!
//! Blank text (empty or only ASCII whitespace) gets no vector (NULL), like NULL
//! text: the model's vector for empty input would be shared by every such row and
//! find them all as "similar". [`is_blank`] and [`has_text_sql`] say the same thing
//! in Rust and in SQL, so a row skipped by one is never picked up again by the other.

pub mod catchup;
pub mod chunks;
pub mod copy;
pub mod reembed;
pub mod reembed_chunks;
pub mod search;
pub mod vector_index;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pgshift_embed::chunk::Tokens;
use pgshift_embed::hash::content_hash;
use pgshift_embed::tokens::{ApproxTokens, ModelTokens};
use pgshift_postgres::catalog::Table;
use pgshift_postgres::error::Context;
use pgshift_postgres::Session;
use pgshift_embed::{batch::embed_bucketed, Embedder};

use crate::error::{Error, Result};
use crate::metrics;
use crate::plan::embedding::EmbeddingSpec;
use crate::run::store::Store;

/// Threads that run the embedder, fed by a bounded channel: the async copy workers
/// wait for their batch without blocking the runtime.
pub struct EmbedPool {
    sender: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    model: String,
    dims: usize,
    tokens: Arc<dyn Tokens>,
}

struct Job {
    texts: Vec<String>,
    /// Count the texts the model cuts short (a column's texts; chunks fit by construction).
    check_window: bool,
    reply: tokio::sync::oneshot::Sender<pgshift_embed::Result<Vec<Vec<f32>>>>,
}

/// How the embedder's model reads text: its own tokenizer when this process has it
/// (the local model; all-MiniLM-L6-v2 served elsewhere, when its files are installed
/// here), else an estimate that errs towards more tokens (chunks then a little shorter).
pub fn tokens_of(embedder: &dyn Embedder) -> Arc<dyn Tokens> {
    embedder
        .tokens()
        .or_else(|| {
            (embedder.model().eq_ignore_ascii_case(pgshift_embed::MINILM))
                .then(|| ModelTokens::minilm(&Default::default()).ok())
                .flatten()
                .map(|t| Arc::new(t) as Arc<dyn Tokens>)
        })
        .unwrap_or_else(|| Arc::new(ApproxTokens { window: usize::MAX }))
}

/// Rows a plan reads to estimate how many texts a column would cut short, and the
/// characters of each it tokenizes (far past any model's window, and a plan's cost
/// stays bounded whatever the texts' size).
const SAMPLE_ROWS: i64 = 200;
const SAMPLE_CHARS: i64 = 16_384;

/// For a spec that fills a column: how many of a sample of the table's texts are
/// longer than the model's window, as a warning that suggests a chunk table (None when
/// none are, or the spec already has one).
pub async fn window_warning(src: &Session, table: &Table, spec: &EmbeddingSpec, tokens: &Arc<dyn Tokens>) -> Result<Option<String>> {
    if spec.chunks.is_some() || tokens.window() == usize::MAX {
        return Ok(None);
    }
    // About SAMPLE_ROWS rows from across the table (every row of a small one).
    let percent = (100.0 * SAMPLE_ROWS as f64 / table.row_estimate.max(1) as f64).clamp(0.01, 100.0);
    let sql = format!(
        "SELECT left(({})::text, {SAMPLE_CHARS}) FROM ONLY {} TABLESAMPLE SYSTEM ({percent}) WHERE ({}) IS NOT NULL LIMIT {SAMPLE_ROWS}",
        spec.text,
        table.qualified(),
        spec.text
    );
    let texts: Vec<String> = src.query(&sql, &[]).await.context(&src.endpoint(), || format!("sample the texts of {}", table.display_name()))?.iter().map(|r| r.get(0)).collect();
    let capped = texts.iter().any(|t| t.chars().count() as i64 >= SAMPLE_CHARS);
    let (tokens, window) = (tokens.clone(), tokens.window());
    let counts = tokio::task::spawn_blocking(move || texts.iter().map(|t| tokens.count(t)).collect::<pgshift_embed::Result<Vec<usize>>>())
        .await
        .map_err(|e| Error::Internal(format!("counting tokens: {e}")))??;
    let longer = counts.iter().filter(|&&n| n > window).count();
    Ok((longer > 0).then(|| {
        format!(
            "embedding for {}: {longer} of {} sampled texts are longer than the model's {window}-token window (the longest {}{} tokens) \
             and would be embedded from their start only: a chunk table embeds them whole (--embed '{}->{}_chunks={}')",
            table.display_name(),
            counts.len(),
            if capped { "over " } else { "" },
            counts.iter().max().unwrap_or(&0),
            table.display_name(),
            table.display_name(),
            spec.text
        )
    }))
}

/// Counts the texts longer than the model's window (it embeds their start only).
fn count_truncated(tokens: &dyn Tokens, texts: &[String]) {
    for text in texts {
        if let Ok(n) = tokens.count(text) {
            if n > tokens.window() {
                metrics::EMBEDDING_TRUNCATED.inc();
            }
            if n as i64 > metrics::EMBEDDING_LONGEST_TOKENS.get() {
                metrics::EMBEDDING_LONGEST_TOKENS.set(n as i64);
            }
        }
    }
}

impl EmbedPool {
    /// `threads` embedding threads; each call is split into batches of `batch_size`
    /// texts of similar length.
    pub fn start(embedder: Arc<dyn Embedder>, threads: usize, batch_size: usize) -> EmbedPool {
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(threads.max(1) * 2);
        let tokens = tokens_of(&*embedder);
        let threads = (0..threads.max(1))
            .map(|i| {
                let (embedder, receiver, tokens) = (embedder.clone(), receiver.clone(), tokens.clone());
                std::thread::Builder::new()
                    .name(format!("pgshift-embed-{i}"))
                    .spawn(move || {
                        for job in receiver {
                            metrics::EMBEDDING_QUEUE.sub(job.texts.len() as i64);
                            if job.check_window {
                                count_truncated(&*tokens, &job.texts);
                            }
                            let started = Instant::now();
                            let refs: Vec<&str> = job.texts.iter().map(String::as_str).collect();
                            let result = embed_bucketed(&*embedder, &refs, batch_size);
                            metrics::EMBEDDING_BATCH_SECONDS.observe(started.elapsed().as_secs_f64());
                            if result.is_ok() {
                                metrics::EMBEDDINGS.inc_by(refs.len() as u64);
                            }
                            let _ = job.reply.send(result);
                        }
                    })
                    .expect("start an embedding thread")
            })
            .collect();
        EmbedPool { sender: Some(sender), threads, model: embedder.model().to_string(), dims: embedder.dims(), tokens }
    }

    /// How the model reads text (see [`tokens_of`]).
    pub fn tokens(&self) -> Arc<dyn Tokens> {
        self.tokens.clone()
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Vectors for `texts`; `check_window`: count those the model cuts short.
    pub async fn embed(&self, texts: Vec<String>, check_window: bool) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        metrics::EMBEDDING_QUEUE.add(texts.len() as i64);
        let sender = self.sender.clone().expect("pool is running");
        // The channel is bounded: wait for room on a blocking thread, not the runtime.
        tokio::task::spawn_blocking(move || sender.send(Job { texts, check_window, reply }))
            .await
            .map_err(|e| Error::Internal(format!("embedding queue: {e}")))?
            .map_err(|_| Error::Internal("the embedding threads stopped".into()))?;
        Ok(answer.await.map_err(|_| Error::Internal("an embedding thread stopped".into()))??)
    }
}

impl Drop for EmbedPool {
    fn drop(&mut self) {
        self.sender.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The content-hash cache, kept in the target's run store.
pub struct Cache<'a> {
    pub store: Store<'a>,
}

impl Cache<'_> {
    /// The cached vectors among `hashes`, and those cached before their digest was kept.
    pub async fn get(&self, model: &str, hashes: &[Vec<u8>]) -> Result<(HashMap<Vec<u8>, Vec<f32>>, Vec<Vec<u8>>)> {
        let rows = self.store.cached_vectors(model, hashes).await?;
        let undigested = rows.iter().filter(|(_, _, digested)| !digested).map(|(h, _, _)| h.clone()).collect();
        Ok((rows.into_iter().map(|(h, v, _)| (h, from_le_bytes(&v))).collect(), undigested))
    }

    pub async fn put(&self, model: &str, entries: &[(Vec<u8>, Vec<f32>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let hashes: Vec<&Vec<u8>> = entries.iter().map(|(h, _)| h).collect();
        let vectors: Vec<Vec<u8>> = entries.iter().map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
        let digests: Vec<Vec<u8>> = entries.iter().map(|(_, v)| vector_digest(v).to_vec()).collect();
        self.store.cache_vectors(model, &hashes, &vectors, &digests).await
    }
}

/// MD5 of a vector as pgvector sends it (`vector_send`: dimensions, a zero, the floats
/// big-endian), so SQL can tell whether a stored vector is the one cached for a text:
/// `decode(md5(vector_send(column)), 'hex') = digest`. MD5, not SHA-256: it tells a
/// changed vector from the cached one (no adversary here) at a third of the cost in
/// the scan of every row (0.75 s against 1.6 s on 100,000 rows).
pub fn vector_digest(v: &[f32]) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(pgshift_postgres::copy_binary::vector_value(v, false)).into()
}

/// A vector as pgvector's text input, `[0.1,0.2,...]`; None (no text) stays NULL.
pub fn vector_literal(v: Option<Vec<f32>>) -> Option<String> {
    v.map(|v| format!("[{}]", v.iter().map(f32::to_string).collect::<Vec<_>>().join(",")))
}

/// Who keeps a table's vectors current with triggers on it: catch-up (on a target,
/// until the cutover) or `vectorize` (after it, or on any database). Each has its own
/// triggers, functions and indexes, so one can start before the other's are gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keeper {
    CatchUp,
    Vectorize,
    /// A chunk table's re-embed keeps its shadow chunk table current.
    Reembed,
}

impl Keeper {
    /// The first word of its functions' names.
    fn word(self) -> &'static str {
        match self {
            Keeper::CatchUp => "stale",
            Keeper::Vectorize => "vectorize",
            Keeper::Reembed => "reembed",
        }
    }

    /// Its partial index's last word.
    fn index_suffix(self) -> &'static str {
        match self {
            Keeper::CatchUp => "pending_idx",
            Keeper::Vectorize => "vectorize_idx",
            Keeper::Reembed => "reembed_idx",
        }
    }

    /// The trigger that clears a vector column's stale vectors.
    pub fn column_trigger(self) -> &'static str {
        match self {
            Keeper::CatchUp => "pgshift_embedding_stale",
            Keeper::Vectorize => "pgshift_vectorize_stale",
            Keeper::Reembed => "pgshift_reembed_stale",
        }
    }

    /// The trigger that queues a chunk table's stale rows.
    pub fn chunks_trigger(self) -> &'static str {
        match self {
            Keeper::CatchUp => "pgshift_chunks_stale",
            Keeper::Vectorize => "pgshift_vectorize_chunks",
            Keeper::Reembed => "pgshift_reembed_chunks",
        }
    }
}

/// Whether a text gets no vector: empty, or only ASCII whitespace.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii_whitespace())
}

/// SQL for "the spec's text expression has text to embed": not NULL and, unless the
/// spec embeds blank text, not blank, exactly as [`is_blank`] (the same five ASCII
/// whitespace characters).
pub fn has_text_sql(spec: &EmbeddingSpec) -> String {
    match spec.embed_blank {
        true => format!("(({})::text) IS NOT NULL", spec.text),
        false => format!("(({})::text) ~ '[^ \\t\\n\\r\\f]'", spec.text),
    }
}

fn from_le_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Vectors for `texts` (None = NULL text, or blank text unless `spec` embeds it: no
/// vector): duplicates are embedded once, cached texts not at all, and new vectors
/// go into the cache.
pub async fn vectors_for(pool: &EmbedPool, cache: &Cache<'_>, spec: &EmbeddingSpec, texts: &[Option<String>]) -> Result<Vec<Option<Vec<f32>>>> {
    let texts: Vec<Option<&String>> = texts.iter().map(|t| t.as_ref().filter(|t| spec.embed_blank || !is_blank(t))).collect();
    let hashes: Vec<Option<Vec<u8>>> = texts.iter().map(|t| t.map(|t| content_hash(pool.model(), t).to_vec())).collect();
    let mut unique: Vec<Vec<u8>> = hashes.iter().flatten().cloned().collect();
    unique.sort();
    unique.dedup();
    let (mut known, undigested) = cache.get(pool.model(), &unique).await?;
    let mut missing: Vec<(Vec<u8>, String)> = Vec::new();
    let mut queued = std::collections::HashSet::new();
    for (hash, text) in hashes.iter().zip(&texts) {
        if let (Some(h), Some(t)) = (hash, text) {
            if !known.contains_key(h) && queued.insert(h) {
                missing.push((h.clone(), (*t).clone()));
            }
        }
    }
    let computed = pool.embed(missing.iter().map(|(_, t)| t.clone()).collect(), spec.chunks.is_none()).await?;
    metrics::EMBEDDING_CACHE_HITS.inc_by((hashes.iter().flatten().count() - missing.len()) as u64);
    let mut fresh: Vec<(Vec<u8>, Vec<f32>)> = missing.into_iter().map(|(h, _)| h).zip(computed).collect();
    let computed_now = fresh.len();
    // Entries cached before digests were kept get theirs now (reembed compares with them).
    fresh.extend(undigested.into_iter().map(|h| {
        let v = known[&h].clone();
        (h, v)
    }));
    cache.put(pool.model(), &fresh).await?;
    fresh.truncate(computed_now);
    known.extend(fresh);
    Ok(hashes.into_iter().map(|h| h.map(|h| known[&h].clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::embedding::VectorIndex;

    #[test]
    fn blank_text_is_the_same_in_rust_and_sql() {
        for blank in ["", " ", "\t\n", "\r\x0c  "] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for text in ["a", " a ", "\u{a0}", "\x0b"] {
            assert!(!is_blank(text), "{text:?}");
        }
        let mut spec = EmbeddingSpec {
            table: "docs".into(),
            text: "body".into(),
            column: "v".into(),
            dims: 384,
            halfvec: false,
            index: VectorIndex::Hnsw,
            embed_blank: false,
            model: pgshift_embed::MINILM.into(),
            url: Vec::new(),
            chunks: None,
        };
        assert_eq!(has_text_sql(&spec), r"((body)::text) ~ '[^ \t\n\r\f]'");
        spec.embed_blank = true;
        assert_eq!(has_text_sql(&spec), "((body)::text) IS NOT NULL");
    }
}
