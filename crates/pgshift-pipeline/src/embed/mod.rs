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
pub mod copy;
pub mod reembed;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pgshift_embed::hash::content_hash;
use pgshift_embed::{batch::embed_bucketed, Embedder};
use pgshift_postgres::sql::quote_ident;
use serde::{Deserialize, Serialize};

use crate::run::store::Store;

use crate::error::{Error, Result};
use crate::metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorIndex {
    Hnsw,
    IvfFlat,
    None,
}

impl VectorIndex {
    /// As specs and pgvector write it (`USING hnsw`).
    pub fn name(self) -> &'static str {
        match self {
            VectorIndex::Hnsw => "hnsw",
            VectorIndex::IvfFlat => "ivfflat",
            VectorIndex::None => "none",
        }
    }

    /// A spec's `index` (hnsw unless it says ivfflat or none).
    pub fn parse(name: &str) -> VectorIndex {
        match name {
            "ivfflat" => VectorIndex::IvfFlat,
            "none" => VectorIndex::None,
            _ => VectorIndex::Hnsw,
        }
    }
}

/// One table whose rows get a vector computed from a SQL expression over the row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    /// `schema.table` or `table`, as in --tables.
    pub table: String,
    /// SQL over the row's columns, e.g. `title || ' ' || body`; NULL = no vector.
    pub text: String,
    pub column: String,
    pub dims: usize,
    pub halfvec: bool,
    pub index: VectorIndex,
    /// Embed blank text too (the model's vector for empty input) instead of NULL.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub embed_blank: bool,
    /// The model, and the embedding servers that run it (none: the local model).
    /// Recorded with the run, so follow and cutover need no repeated flags; the URLs
    /// without credentials or query, which are never stored.
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub url: Vec<String>,
}

fn default_model() -> String {
    pgshift_embed::MINILM.into()
}

/// `url = "http://a/..."` or `url = ["http://a/...", "http://b/..."]` (a fleet).
pub fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    })
}

impl EmbeddingSpec {
    /// The column's type, qualified with the schema pgvector lives in (pgshift's
    /// sessions run with `search_path = pg_catalog`).
    pub fn column_type(&self, vector_schema: &str) -> String {
        format!("{}.{}({})", quote_ident(vector_schema), if self.halfvec { "halfvec" } else { "vector" }, self.dims)
    }

    /// The operator class for cosine distance (the model's vectors are normalised).
    fn opclass(&self, vector_schema: &str) -> String {
        format!("{}.{}", quote_ident(vector_schema), if self.halfvec { "halfvec_cosine_ops" } else { "vector_cosine_ops" })
    }

    /// `CREATE INDEX` for the vector column, or None when no index is wanted.
    pub fn index_sql(&self, qualified_table: &str, index_name: &str, concurrently: bool, vector_schema: &str) -> Option<String> {
        if self.index == VectorIndex::None {
            return None;
        }
        let method = self.index.name();
        Some(format!(
            "CREATE INDEX {}IF NOT EXISTS {} ON {qualified_table} USING {method} ({} {})",
            if concurrently { "CONCURRENTLY " } else { "" },
            quote_ident(index_name),
            quote_ident(&self.column),
            self.opclass(vector_schema)
        ))
    }
}

/// Threads that run the embedder, fed by a bounded channel: the async copy workers
/// wait for their batch without blocking the runtime.
pub struct EmbedPool {
    sender: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    model: String,
    dims: usize,
}

struct Job {
    texts: Vec<String>,
    reply: tokio::sync::oneshot::Sender<pgshift_embed::Result<Vec<Vec<f32>>>>,
}

impl EmbedPool {
    /// `threads` embedding threads; each call is split into batches of `batch_size`
    /// texts of similar length.
    pub fn start(embedder: Arc<dyn Embedder>, threads: usize, batch_size: usize) -> EmbedPool {
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(threads.max(1) * 2);
        let threads = (0..threads.max(1))
            .map(|i| {
                let (embedder, receiver) = (embedder.clone(), receiver.clone());
                std::thread::Builder::new()
                    .name(format!("pgshift-embed-{i}"))
                    .spawn(move || {
                        for job in receiver {
                            metrics::EMBEDDING_QUEUE.sub(job.texts.len() as i64);
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
        EmbedPool { sender: Some(sender), threads, model: embedder.model().to_string(), dims: embedder.dims() }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        metrics::EMBEDDING_QUEUE.add(texts.len() as i64);
        let sender = self.sender.clone().expect("pool is running");
        // The channel is bounded: wait for room on a blocking thread, not the runtime.
        tokio::task::spawn_blocking(move || sender.send(Job { texts, reply }))
            .await
            .map_err(|e| Error::State(format!("embedding queue: {e}")))?
            .map_err(|_| Error::State("the embedding threads stopped".into()))?;
        Ok(answer.await.map_err(|_| Error::State("an embedding thread stopped".into()))??)
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
    pub async fn get(&self, model: &str, hashes: &[Vec<u8>]) -> Result<HashMap<Vec<u8>, Vec<f32>>> {
        Ok(self.store.cached_vectors(model, hashes).await?.into_iter().map(|(h, v)| (h, from_le_bytes(&v))).collect())
    }

    pub async fn put(&self, model: &str, entries: &[(Vec<u8>, Vec<f32>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let hashes: Vec<&Vec<u8>> = entries.iter().map(|(h, _)| h).collect();
        let vectors: Vec<Vec<u8>> = entries.iter().map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
        self.store.cache_vectors(model, &hashes, &vectors).await
    }
}

/// A vector as pgvector's text input, `[0.1,0.2,...]`; None (no text) stays NULL.
pub fn vector_literal(v: Option<Vec<f32>>) -> Option<String> {
    v.map(|v| format!("[{}]", v.iter().map(f32::to_string).collect::<Vec<_>>().join(",")))
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
    let mut known = cache.get(pool.model(), &unique).await?;
    let mut missing: Vec<(Vec<u8>, String)> = Vec::new();
    let mut queued = std::collections::HashSet::new();
    for (hash, text) in hashes.iter().zip(&texts) {
        if let (Some(h), Some(t)) = (hash, text) {
            if !known.contains_key(h) && queued.insert(h) {
                missing.push((h.clone(), (*t).clone()));
            }
        }
    }
    let computed = pool.embed(missing.iter().map(|(_, t)| t.clone()).collect()).await?;
    metrics::EMBEDDING_CACHE_HITS.inc_by((hashes.iter().flatten().count() - missing.len()) as u64);
    let fresh: Vec<(Vec<u8>, Vec<f32>)> = missing.into_iter().map(|(h, _)| h).zip(computed).collect();
    cache.put(pool.model(), &fresh).await?;
    known.extend(fresh);
    Ok(hashes.into_iter().map(|h| h.map(|h| known[&h].clone())).collect())
}

/// What `migrate` needs to compute vectors: the specs and the embedder for them.
#[derive(Clone)]
pub struct EmbeddingSetup {
    pub specs: Vec<EmbeddingSpec>,
    pub embedder: Arc<dyn Embedder>,
    /// Threads running the embedder (one ONNX session already uses every core).
    pub threads: usize,
    /// Texts per model call.
    pub batch_size: usize,
}

impl EmbeddingSetup {
    /// The spec must ask for the dimensions the model makes; `what` starts the error.
    pub fn check_dims(&self, spec: &EmbeddingSpec, what: &str) -> Result<()> {
        if spec.dims == self.embedder.dims() {
            return Ok(());
        }
        Err(Error::Input(format!(
            "{what}: dims = {}, but the model {} makes {}-dimensional vectors",
            spec.dims,
            self.embedder.model(),
            self.embedder.dims()
        )))
    }
}

impl std::fmt::Debug for EmbeddingSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingSetup").field("specs", &self.specs).field("model", &self.embedder.model()).finish()
    }
}

/// A table an embedding spec may name, as any kind of source describes it.
pub struct SpecCandidate<'a> {
    /// The name the load knows the table by (`schema.table`).
    pub key: String,
    /// The partitioned parent's key: a partition takes its parent's spec.
    pub parent: Option<String>,
    /// Whether a `--embed`/`--tables` style pattern names this table.
    pub matches: Box<dyn Fn(&str) -> bool + 'a>,
}

/// The spec of each table, by key (a partition gets its parent's); every spec must
/// name exactly one table that is not a partition, and ask for the model's
/// dimensions. `among` ends "no such table among those ..." errors.
pub fn match_specs(setup: &EmbeddingSetup, candidates: &[SpecCandidate<'_>], among: &str) -> Result<HashMap<String, EmbeddingSpec>> {
    let mut out = HashMap::new();
    for spec in &setup.specs {
        let matching: Vec<&SpecCandidate> = candidates.iter().filter(|c| c.parent.is_none() && (c.matches)(&spec.table)).collect();
        let table = match matching.as_slice() {
            [t] => t,
            [] => return Err(Error::Input(format!("embedding for {}: no such table among those {among}", spec.table))),
            many => {
                let names: Vec<&str> = many.iter().map(|t| t.key.as_str()).collect();
                return Err(Error::Input(format!("embedding for {}: matches {}; name one table", spec.table, names.join(", "))));
            }
        };
        setup.check_dims(spec, &format!("embedding for {}", table.key))?;
        for c in candidates.iter().filter(|c| c.key == table.key || c.parent.as_deref() == Some(table.key.as_str())) {
            out.insert(c.key.clone(), spec.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only its name and dimensions matter to spec matching; it never embeds.
    struct Dims(usize);
    impl Embedder for Dims {
        fn model(&self) -> &str {
            "m"
        }
        fn dims(&self) -> usize {
            self.0
        }
        fn embed(&self, _: &[&str]) -> pgshift_embed::Result<Vec<Vec<f32>>> {
            unreachable!("matching never embeds")
        }
    }

    fn setup(tables: &[&str], dims: usize) -> EmbeddingSetup {
        let spec = |t: &&str| EmbeddingSpec {
            table: t.to_string(),
            text: "body".into(),
            column: "v".into(),
            dims,
            halfvec: false,
            index: VectorIndex::Hnsw,
            embed_blank: false,
            model: default_model(),
            url: Vec::new(),
        };
        EmbeddingSetup { specs: tables.iter().map(spec).collect(), embedder: Arc::new(Dims(384)), threads: 1, batch_size: 8 }
    }

    fn candidates() -> Vec<SpecCandidate<'static>> {
        let table = |key: &'static str, parent: Option<&str>| SpecCandidate {
            key: key.into(),
            parent: parent.map(String::from),
            matches: Box::new(move |p: &str| crate::source::select::name_matches(p, key.split('.').next().unwrap(), key.split('.').nth(1).unwrap())),
        };
        vec![table("public.docs", None), table("sales.docs", None), table("public.orders", None), table("public.orders_2024", Some("public.orders"))]
    }

    #[test]
    fn specs_name_one_table_and_partitions_take_their_parents() {
        let by_table = match_specs(&setup(&["public.orders"], 384), &candidates(), "being copied").unwrap();
        let mut keys: Vec<&String> = by_table.keys().collect();
        keys.sort();
        assert_eq!(keys, ["public.orders", "public.orders_2024"]);
        let err = match_specs(&setup(&["docs"], 384), &candidates(), "being copied").unwrap_err().to_string();
        assert!(err.contains("matches public.docs, sales.docs; name one table"), "{err}");
        let err = match_specs(&setup(&["orders_2024"], 384), &candidates(), "being copied").unwrap_err().to_string();
        assert!(err.contains("no such table among those being copied"), "a partition is embedded through its parent: {err}");
        let err = match_specs(&setup(&["public.docs"], 1536), &candidates(), "being copied").unwrap_err().to_string();
        assert!(err.contains("dims = 1536") && err.contains("384"), "{err}");
    }

    #[test]
    fn blank_text_is_the_same_in_rust_and_sql() {
        for blank in ["", " ", "\t\n", "\r\x0c  "] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for text in ["a", " a ", "\u{a0}", "\x0b"] {
            assert!(!is_blank(text), "{text:?}");
        }
        let mut spec = setup(&["docs"], 384).specs.remove(0);
        assert_eq!(has_text_sql(&spec), r"((body)::text) ~ '[^ \t\n\r\f]'");
        spec.embed_blank = true;
        assert_eq!(has_text_sql(&spec), "((body)::text) IS NOT NULL");
    }
}
