//! Embedding specs as users write them (a config `[[embedding]]` section, a JSON
//! object in `--embed`/`PGSHIFT_EMBED`, or the short `TABLE.COLUMN=EXPR`), checked
//! and turned into the pipeline's [`EmbeddingSetup`] with a loaded embedder.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use pgshift_embed::http::{HttpConfig, HttpEmbedder};
use pgshift_embed::onnx::{OnnxConfig, OnnxEmbedder};
use pgshift_embed::{Embedder, MINILM, MINILM_DIMS};
use pgshift_pipeline::plan::embedding::{ChunkColumns, ChunkSpec, EmbeddingSetup, EmbeddingSpec, VectorIndex};
use pgshift_postgres::ConnInfo;
use serde::{Deserialize, Serialize};

/// One table's vectors: a config `[[embedding]]` section, an `--embed` value, and
/// the flags of `pgshift reembed`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct EmbedSpecArg {
    /// The table (schema.table or table); for reembed it needs a primary key.
    #[arg(long)]
    pub table: String,
    /// SQL expression over the row that yields the text, e.g. "title || ' ' || body".
    #[arg(long)]
    pub text: String,
    /// The vector column to fill: created when missing (reembed replaces one that exists, atomically).
    #[arg(long)]
    pub column: String,
    /// all-MiniLM-L6-v2 (local), or the model name an embedding server (--url) expects.
    #[serde(default = "default_model")]
    #[arg(long, default_value = MINILM)]
    pub model: String,
    /// An OpenAI-compatible (.../v1/embeddings) or TEI (.../embed) embedding server; several (a list, or the
    /// flag repeated) serving the same model share the work: each batch goes to the least busy one, and a
    /// failing one rests while its batches go to the others.
    #[serde(default, deserialize_with = "pgshift_pipeline::plan::embedding::one_or_many", skip_serializing_if = "Vec::is_empty")]
    #[arg(long)]
    pub url: Vec<String>,
    /// Dimensions of the vectors (the model's; may differ from an old column's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub dims: Option<usize>,
    /// Store as halfvec.
    #[serde(default)]
    #[arg(long)]
    pub halfvec: bool,
    /// Index for the column: hnsw, ivfflat or none.
    #[serde(default = "default_index")]
    #[arg(long, default_value = "hnsw")]
    pub index: String,
    /// Embed blank text (empty or only whitespace) too; by default it gets no vector (NULL), like NULL text.
    #[serde(default)]
    #[arg(long)]
    pub embed_blank: bool,
    /// Send the vectors to a chunk table (created on the target: the table's key, chunk_seq, chunk, and
    /// the vector column), one row per chunk of the text, so long texts are embedded whole. For reembed:
    /// the chunk table to make again (every text cut and embedded anew, then swapped in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub chunk_table: Option<String>,
    /// The most tokens of a chunk as the model reads it (default: the model's window, 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub chunk_tokens: Option<usize>,
    /// Tokens each chunk repeats from the one before (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub chunk_overlap: Option<usize>,
    /// SQL over the row put before every chunk when it is embedded, e.g. "title || E'\\n\\n'" (not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub chunk_context: Option<String>,
    /// The chunk table is the application's own (it exists on the source): which of its columns take the
    /// parent's key (key, in the key's order), the chunk's text (text), its position (seq, optional), and
    /// values from the parent row (values = { user_id = "user_id" }); `column` is its vector column. Its
    /// source rows (the old vectors) are not copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(skip)]
    pub chunk_columns: Option<ChunkColumns>,
}

/// Chunk tables' defaults for all-MiniLM-L6-v2: its whole window, and an overlap of
/// an eighth so a sentence cut at a chunk's end is whole in the next.
const DEFAULT_CHUNK_TOKENS: usize = pgshift_embed::onnx::MAX_TOKENS;
const DEFAULT_CHUNK_OVERLAP: usize = 32;
/// The vector column of a chunk table made by the short form.
const CHUNK_VECTOR_COLUMN: &str = "embedding";

fn default_model() -> String {
    MINILM.into()
}

fn default_index() -> String {
    "hnsw".into()
}

impl EmbedSpecArg {
    /// `--embed` values: a JSON array or object, `TABLE.COLUMN=EXPR` (a vector column),
    /// or `TABLE->CHUNK_TABLE=EXPR` (a chunk table).
    pub fn parse(value: &str) -> Result<Vec<EmbedSpecArg>, String> {
        let v = value.trim();
        if v.starts_with('[') {
            return serde_json::from_str(v).map_err(|e| format!("--embed / PGSHIFT_EMBED: {e}"));
        }
        if v.starts_with('{') {
            return serde_json::from_str(v).map(|s| vec![s]).map_err(|e| format!("--embed: {e}"));
        }
        let (target, text) =
            v.split_once('=').ok_or_else(|| format!("--embed {v:?}: write TABLE.COLUMN=EXPRESSION or TABLE->CHUNK_TABLE=EXPRESSION"))?;
        let spec = |table: &str, column: &str, chunk_table: Option<String>| EmbedSpecArg {
            table: table.trim().into(),
            text: text.trim().into(),
            column: column.into(),
            model: default_model(),
            url: Vec::new(),
            dims: None,
            halfvec: false,
            index: default_index(),
            embed_blank: false,
            chunk_table,
            chunk_tokens: None,
            chunk_overlap: None,
            chunk_context: None,
            chunk_columns: None,
        };
        if let Some((table, chunks)) = target.split_once("->") {
            if table.trim().is_empty() || chunks.trim().is_empty() {
                return Err(format!("--embed {v:?}: write TABLE->CHUNK_TABLE=EXPRESSION, e.g. public.pages->public.page_chunks=body"));
            }
            return Ok(vec![spec(table, CHUNK_VECTOR_COLUMN, Some(chunks.trim().into()))]);
        }
        let (table, column) =
            target.trim().rsplit_once('.').ok_or_else(|| format!("--embed {v:?}: name the column as TABLE.COLUMN"))?;
        Ok(vec![spec(table, column, None)])
    }

    /// A spec that only names a model (`pgshift embed`).
    pub fn for_texts(model: &str, url: Vec<String>, dims: Option<usize>) -> EmbedSpecArg {
        EmbedSpecArg {
            table: "-".into(),
            text: "-".into(),
            column: "-".into(),
            model: model.into(),
            url,
            dims,
            halfvec: false,
            index: "none".into(),
            embed_blank: false,
            chunk_table: None,
            chunk_tokens: None,
            chunk_overlap: None,
            chunk_context: None,
            chunk_columns: None,
        }
    }

    fn local(&self) -> bool {
        self.url.is_empty()
    }

    /// What is wrong, each line starting with `key.field`.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.text.trim().is_empty() {
            out.push(format!("{key}.text: give the SQL expression that yields the text, e.g. title || ' ' || body"));
        }
        if self.column.trim().is_empty() {
            out.push(format!("{key}.column: name the vector column to fill"));
        }
        if self.local() && !self.model.eq_ignore_ascii_case(MINILM) {
            out.push(format!("{key}.model: {:?} does not run locally: use {MINILM}, or give url = the embedding server", self.model));
        }
        if self.local() && self.dims.is_some_and(|d| d != MINILM_DIMS) {
            out.push(format!("{key}.dims: {MINILM} makes {MINILM_DIMS} dimensions, not {}", self.dims.unwrap_or_default()));
        }
        if !self.local() && self.dims.is_none() {
            out.push(format!("{key}.dims: give the dimensions the server's model {} makes", self.model));
        }
        for url in &self.url {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                out.push(format!("{key}.url: {} is not an http(s) URL", pgshift_embed::http::redact(url)));
            }
        }
        if self.chunk_table.is_none()
            && (self.chunk_tokens.is_some() || self.chunk_overlap.is_some() || self.chunk_context.is_some() || self.chunk_columns.is_some())
        {
            out.push(format!("{key}.chunk_table: chunk_tokens, chunk_overlap, chunk_context and chunk_columns are for a chunk table: name it"));
        }
        if let Some(columns) = &self.chunk_columns {
            if columns.key.is_empty() || columns.key.iter().any(|c| c.trim().is_empty()) {
                out.push(format!("{key}.chunk_columns.key: name the chunk table's column(s) that take the parent's key"));
            }
            if columns.text.trim().is_empty() {
                out.push(format!("{key}.chunk_columns.text: name the chunk table's column that takes the chunk's text"));
            }
        }
        if let Some(tokens) = self.chunk_tokens {
            let overlap = self.chunk_overlap.unwrap_or(DEFAULT_CHUNK_OVERLAP);
            if tokens < 16 || overlap * 2 > tokens {
                out.push(format!("{key}.chunk_tokens: {tokens} tokens with an overlap of {overlap}: use at least 16, and at least twice the overlap"));
            }
            if self.local() && tokens > DEFAULT_CHUNK_TOKENS {
                out.push(format!("{key}.chunk_tokens: {MINILM} reads {DEFAULT_CHUNK_TOKENS} tokens at most, not {tokens}"));
            }
        }
        if self.chunk_table.is_some() && !self.local() && self.chunk_tokens.is_none() {
            out.push(format!("{key}.chunk_tokens: give the most tokens the server's model {} reads", self.model));
        }
        if !["hnsw", "ivfflat", "none"].contains(&self.index.as_str()) {
            out.push(format!("{key}.index: {:?}: use hnsw, ivfflat or none", self.index));
        }
        // pgvector's HNSW indexes vector up to 2,000 dimensions and halfvec up to 4,000.
        match (self.dims.unwrap_or(MINILM_DIMS), self.halfvec) {
            (d, false) if d > 2000 && self.index != "none" => {
                out.push(format!("{key}.dims: pgvector indexes vector up to 2000 dimensions: set halfvec = true"))
            }
            (d, true) if d > 4000 && self.index != "none" => {
                out.push(format!("{key}.dims: pgvector indexes halfvec up to 4000 dimensions"))
            }
            _ => {}
        }
        out
    }

    pub fn spec(&self) -> EmbeddingSpec {
        EmbeddingSpec {
            table: self.table.clone(),
            text: self.text.clone(),
            column: self.column.clone(),
            dims: self.dims.unwrap_or(MINILM_DIMS),
            halfvec: self.halfvec,
            index: VectorIndex::parse(&self.index),
            embed_blank: self.embed_blank,
            model: self.model.clone(),
            url: self.url.iter().map(|u| pgshift_embed::http::redact(u)).collect(),
            chunks: self.chunk_table.as_ref().map(|table| ChunkSpec {
                table: table.clone(),
                tokens: self.chunk_tokens.unwrap_or(DEFAULT_CHUNK_TOKENS),
                overlap: self.chunk_overlap.unwrap_or(DEFAULT_CHUNK_OVERLAP),
                context: self.chunk_context.clone(),
                columns: self.chunk_columns.clone(),
            }),
        }
    }

    /// The flags a recorded spec was given with (a recorded URL has lost its
    /// credentials: PGSHIFT_EMBED_API_KEY still applies).
    pub fn from_spec(spec: &EmbeddingSpec) -> EmbedSpecArg {
        EmbedSpecArg {
            table: spec.table.clone(),
            text: spec.text.clone(),
            column: spec.column.clone(),
            model: spec.model.clone(),
            url: spec.url.clone(),
            dims: Some(spec.dims),
            halfvec: spec.halfvec,
            index: spec.index.name().into(),
            embed_blank: spec.embed_blank,
            chunk_table: spec.chunks.as_ref().map(|c| c.table.clone()),
            chunk_tokens: spec.chunks.as_ref().map(|c| c.tokens),
            chunk_overlap: spec.chunks.as_ref().map(|c| c.overlap),
            chunk_context: spec.chunks.as_ref().and_then(|c| c.context.clone()),
            chunk_columns: spec.chunks.as_ref().and_then(|c| c.columns.clone()),
        }
    }
}

/// Which tables get vectors, and how the embedder runs (migrate, follow, cutover, serve).
#[derive(clap::Args, Clone)]
pub struct EmbedSettings {
    /// Compute vectors while copying: TABLE.COLUMN=EXPRESSION (e.g. 'docs.embedding=title || body'), or
    /// TABLE->CHUNK_TABLE=EXPRESSION (e.g. 'pages->page_chunks=body': long texts cut into chunks that fit the
    /// model, one vector each, in a chunk table pgshift creates), or a JSON object / array with table, text,
    /// column, model, url, dims, halfvec, index, chunk_table, chunk_tokens, chunk_overlap, chunk_context.
    /// Repeatable. A column the source already has is recomputed in place (catch-up leaves its old values
    /// out). follow and cutover take the run's own specs when none are given.
    #[arg(long, env = "PGSHIFT_EMBED")]
    pub embed: Vec<String>,
    #[command(flatten)]
    pub runtime: EmbedRuntime,
}

/// How the embedder runs (also for reembed).
#[derive(clap::Args, Clone)]
pub struct EmbedRuntime {
    /// Directory with all-MiniLM-L6-v2 as ONNX (made by scripts/fetch_model.sh).
    #[arg(long, env = "PGSHIFT_MODEL_DIR")]
    pub model_dir: Option<std::path::PathBuf>,
    /// Threads that run the embedder (one local model already uses every core).
    #[arg(long, env = "PGSHIFT_EMBED_THREADS", default_value_t = 1)]
    pub embed_threads: usize,
    /// Texts per model call (grouped by length to cut padding).
    #[arg(long, env = "PGSHIFT_EMBED_BATCH", default_value_t = 32)]
    pub embed_batch: usize,
    /// Requests in flight at once per embedding server (a GPU server may take more).
    #[arg(long, env = "PGSHIFT_EMBED_CONCURRENCY", default_value_t = 4)]
    pub embed_concurrency: usize,
    /// Run the local model on the GPU (CUDA; needs a build with --features cuda).
    #[arg(long, env = "PGSHIFT_GPU")]
    pub gpu: bool,
    /// Ceiling for maintenance_work_mem of HNSW builds, in MiB (sized to the data up to this).
    #[arg(long, env = "PGSHIFT_VECTOR_INDEX_MEMORY", default_value_t = 2048)]
    pub vector_index_memory: u64,
}

impl EmbedSettings {
    pub fn specs(&self) -> anyhow::Result<Vec<EmbedSpecArg>> {
        let mut specs = Vec::new();
        for value in &self.embed {
            specs.extend(EmbedSpecArg::parse(value).map_err(anyhow::Error::msg)?);
        }
        Ok(specs)
    }

    /// The pipeline's setup with a loaded embedder; None without specs.
    pub fn setup(&self) -> anyhow::Result<Option<EmbeddingSetup>> {
        self.runtime.setup_for(self.specs()?)
    }

    /// For follow and cutover: the specs given, else those the run to follow was
    /// started with (recorded in the target), so no flags need repeating.
    pub async fn setup_for_run(&self, source: &ConnInfo, target: &ConnInfo) -> anyhow::Result<Option<EmbeddingSetup>> {
        if !self.embed.is_empty() {
            return self.setup();
        }
        let recorded = pgshift_pipeline::run::recorded_embeddings(source, target).await?;
        self.runtime.setup_for(recorded.iter().map(EmbedSpecArg::from_spec).collect())
    }
}

impl EmbedRuntime {
    /// The setup for these specs with a loaded embedder; None without specs.
    pub fn setup_for(&self, specs: Vec<EmbedSpecArg>) -> anyhow::Result<Option<EmbeddingSetup>> {
        let problems: Vec<String> = specs.iter().flat_map(|s| s.problems(&format!("embedding ({})", s.table))).collect();
        if !problems.is_empty() {
            bail!("{}", problems.join("\n  "));
        }
        let Some(first) = specs.first() else { return Ok(None) };
        if let Some(other) = specs.iter().find(|s| (&s.model, &s.url) != (&first.model, &first.url)) {
            bail!("embedding for {} uses another model than {}: one run uses one model", other.table, first.table);
        }
        let embedder: Arc<dyn Embedder> = match first.url.is_empty() {
            false => {
                let mut config = HttpConfig::fleet(&first.url, &first.model, first.dims.unwrap_or(MINILM_DIMS));
                config.observer = Some(Arc::new(pgshift_pipeline::metrics::EmbeddingRequests));
                config.api_key = std::env::var("PGSHIFT_EMBED_API_KEY").ok();
                config.batch_size = self.embed_batch;
                config.concurrency = self.embed_concurrency.max(1);
                Arc::new(HttpEmbedder::new(config)?)
            }
            true => {
                let config = OnnxConfig { model_dir: self.model_dir.clone(), runtime: None, threads: None, gpu: self.gpu };
                Arc::new(OnnxEmbedder::load(&config).context("loading the embedding model")?)
            }
        };
        Ok(Some(EmbeddingSetup {
            specs: specs.iter().map(EmbedSpecArg::spec).collect(),
            embedder,
            threads: self.embed_threads.max(1),
            batch_size: self.embed_batch.max(1),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_json_forms() {
        let s = EmbedSpecArg::parse("public.docs.embedding = title || ' ' || body").unwrap();
        assert_eq!((s[0].table.as_str(), s[0].column.as_str(), s[0].text.as_str()), ("public.docs", "embedding", "title || ' ' || body"));
        let s = EmbedSpecArg::parse(r#"[{"table": "docs", "text": "body", "column": "v", "halfvec": true}]"#).unwrap();
        assert!(s[0].halfvec && s[0].index == "hnsw");
        assert!(EmbedSpecArg::parse("docs=body").unwrap_err().contains("TABLE.COLUMN"));
        // One server, or a fleet.
        let one = EmbedSpecArg::parse(r#"{"table": "d", "text": "b", "column": "v", "dims": 8, "url": "http://a/embed"}"#).unwrap();
        assert_eq!(one[0].url, ["http://a/embed"]);
        let fleet = EmbedSpecArg::parse(r#"{"table": "d", "text": "b", "column": "v", "dims": 8, "url": ["http://a/embed", "http://b/embed"]}"#).unwrap();
        assert_eq!(fleet[0].spec().url, ["http://a/embed", "http://b/embed"]);
        assert!(EmbedSpecArg::parse(r#"{"table": "docs", "txt": "body", "column": "v"}"#).unwrap_err().contains("txt"));
    }

    #[test]
    fn chunk_tables_in_the_short_and_json_forms() {
        let s = EmbedSpecArg::parse("public.pages->public.page_chunks = title || body").unwrap().remove(0).spec();
        assert_eq!((s.table.as_str(), s.column.as_str(), s.text.as_str()), ("public.pages", "embedding", "title || body"));
        assert_eq!(s.chunks, Some(ChunkSpec { table: "public.page_chunks".into(), tokens: 256, overlap: 32, context: None, columns: None }));
        let json = r#"{"table": "pages", "text": "body", "column": "v", "chunk_table": "chunks", "chunk_tokens": 128, "chunk_overlap": 0, "chunk_context": "title"}"#;
        let s = EmbedSpecArg::parse(json).unwrap().remove(0);
        assert!(s.problems("e").is_empty(), "{:?}", s.problems("e"));
        assert_eq!(s.spec().chunks.unwrap(), ChunkSpec { table: "chunks".into(), tokens: 128, overlap: 0, context: Some("title".into()), columns: None });
        assert_eq!(EmbedSpecArg::from_spec(&s.spec()).spec(), s.spec(), "a recorded spec gives back its flags");
        assert!(EmbedSpecArg::parse("pages->=body").unwrap_err().contains("TABLE->CHUNK_TABLE"));
        let mut s = EmbedSpecArg::parse("pages->chunks=body").unwrap().remove(0);
        s.chunk_tokens = Some(512);
        assert!(s.problems("e")[0].contains("reads 256 tokens at most"), "{:?}", s.problems("e"));
        s.chunk_table = None;
        assert!(s.problems("e")[0].contains("chunk_table"), "{:?}", s.problems("e"));
    }

    #[test]
    fn an_applications_chunk_table_names_its_columns() {
        let toml = r#"
            table = "documents"
            text = "content"
            column = "embedding"
            chunk_table = "vector_embeddings"
            chunk_columns = { key = "document_id", text = "content", values = { user_id = "user_id" } }
        "#;
        let s: EmbedSpecArg = toml::from_str(toml).unwrap();
        assert!(s.problems("e").is_empty(), "{:?}", s.problems("e"));
        let columns = s.spec().chunks.unwrap().columns.unwrap();
        assert_eq!((columns.key, columns.text.as_str(), columns.seq), (vec!["document_id".to_string()], "content", None));
        assert_eq!(columns.values["user_id"], "user_id");
        assert_eq!(EmbedSpecArg::from_spec(&s.spec()).spec(), s.spec(), "a recorded spec gives back its columns");
        let bad = r#"{"table": "d", "text": "c", "column": "e", "chunk_table": "ve", "chunk_columns": {"key": [], "text": " "}}"#;
        let problems = EmbedSpecArg::parse(bad).unwrap().remove(0).problems("e");
        assert!(problems.iter().any(|p| p.contains("chunk_columns.key")) && problems.iter().any(|p| p.contains("chunk_columns.text")), "{problems:?}");
        let unknown = r#"{"table": "d", "text": "c", "column": "e", "chunk_table": "ve", "chunk_columns": {"key": "id", "text": "t", "sequence": "n"}}"#;
        assert!(EmbedSpecArg::parse(unknown).unwrap_err().contains("sequence"));
    }

    #[test]
    fn problems_name_the_field() {
        let mut s = EmbedSpecArg::parse("docs.v=body").unwrap().remove(0);
        assert!(s.problems("e").is_empty());
        s.dims = Some(1536);
        assert!(s.problems("e")[0].starts_with("e.dims: all-MiniLM-L6-v2 makes 384"), "{:?}", s.problems("e"));
        s.url = vec!["https://key@api.example.com/v1/embeddings".into()];
        s.model = "text-embedding-3-small".into();
        assert!(s.problems("e").is_empty(), "{:?}", s.problems("e"));
        s.dims = Some(3072);
        assert!(s.problems("e")[0].contains("halfvec"), "{:?}", s.problems("e"));
    }
}
