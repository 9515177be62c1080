//! Which tables get vectors: an [`EmbeddingSpec`] per table (text expression, vector
//! column, dimensions, index, model), matched to the tables of any kind of source
//! once, by [`match_specs`]; and [`EmbeddingSetup`], the specs with the embedder that
//! computes them. The stages that compute vectors are in `embed`.

use std::collections::HashMap;
use std::sync::Arc;

use pgshift_embed::Embedder;
use pgshift_postgres::catalog::Table;
use pgshift_postgres::sql::quote_ident;
use serde::{Deserialize, Serialize};

use super::select::table_matches;
use crate::error::{Error, Result};

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
    /// The vectors go to a chunk table, one row per chunk of the text, instead of a
    /// column of the table (`column` is then the chunk table's vector column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunkSpec>,
}

/// Where a spec's chunks go, and how its texts are cut.
///
/// The chunk table holds the parent's key columns (same names and types), then
/// [`CHUNK_SEQ`], [`CHUNK_TEXT`] and the spec's vector column; its key is (parent key,
/// chunk_seq), and a foreign key to the parent deletes a row's chunks with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkSpec {
    /// `schema.table`, or `table` in the parent's schema.
    pub table: String,
    /// The most tokens of a chunk as the model reads it (special tokens and context included).
    pub tokens: usize,
    /// Tokens each chunk repeats from the one before.
    pub overlap: usize,
    /// SQL over the parent row put before each chunk when it is embedded (a title, say);
    /// its tokens count against the window, and the stored chunk stays the text's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The application's own chunk table (it exists on the source): which of its
    /// columns take what. None: pgshift makes the chunk table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<ChunkColumns>,
}

/// The columns of an application's chunk table that pgshift fills; its other columns
/// take their defaults. Its source rows (the old model's chunks) are not carried.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkColumns {
    /// The columns that take the parent's primary key, in the key's order.
    #[serde(deserialize_with = "one_or_many")]
    pub key: Vec<String>,
    /// The column that takes the chunk's text.
    pub text: String,
    /// The column that takes the chunk's position (0, 1, ...), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<String>,
    /// Columns that take a value from the parent row: column -> SQL over the parent
    /// row (e.g. `user_id = "user_id"`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub values: std::collections::BTreeMap<String, String>,
}

/// The chunk table's position column (0, 1, ... in the text's order).
pub const CHUNK_SEQ: &str = "chunk_seq";
/// The chunk table's text column: the piece of the text that was embedded.
pub const CHUNK_TEXT: &str = "chunk";

impl ChunkSpec {
    /// The chunk table's schema and name: its own schema, else the parent's (as the target has it).
    pub fn schema_and_name<'a>(&'a self, parent_schema: &'a str) -> (&'a str, &'a str) {
        self.table.split_once('.').unwrap_or((parent_schema, &self.table))
    }
}

/// What a copy worker needs of a table's chunk table (decided by the plan).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkCopy {
    /// The chunk table, qualified.
    pub table: String,
    /// `COPY chunk_table (key, chunk_seq, chunk, vector) FROM STDIN (FORMAT binary)`.
    pub copy_in: String,
    /// Fields after the parent's row besides the text: key, values and context.
    pub tail: usize,
    /// Of those, the values from the parent row (after the key); the chunk table's
    /// COPY takes the key, the position (when `seq`), the text, the vector, the values.
    #[serde(default)]
    pub values: usize,
    #[serde(default = "yes")]
    pub seq: bool,
    /// The parent, qualified, and its key columns: a resumed range's chunks are found
    /// through the parent's rows of that range.
    #[serde(default)]
    pub parent: String,
    #[serde(default)]
    pub parent_key: Vec<String>,
    /// The chunk table's columns for the parent's key.
    #[serde(default)]
    pub key: Vec<String>,
    /// The types of the chunk table's value columns, which the source's COPY casts to.
    #[serde(default)]
    pub value_types: Vec<String>,
}

fn yes() -> bool {
    true
}

impl ChunkCopy {
    /// Clears the chunks of a range of the load copied again, before its rows: the
    /// range's predicate is over the parent's key, which pgshift's own chunk table has
    /// by the same names; an application's is reached through the parent's rows (every
    /// chunk is written in the transaction of its parent row). A whole table (no
    /// predicate) goes whole.
    pub fn clear_sql(&self, predicate: Option<&str>) -> String {
        match predicate {
            None => format!("TRUNCATE {}", self.table),
            Some(p) if self.key == self.parent_key || self.key.is_empty() => format!("DELETE FROM {} WHERE {p}", self.table),
            Some(p) => {
                let list = |cols: &[String]| cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
                format!("DELETE FROM {} WHERE ({}) IN (SELECT {} FROM ONLY {} WHERE {p})", self.table, list(&self.key), list(&self.parent_key), self.parent)
            }
        }
    }
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
        format!("{}.{}", quote_ident(vector_schema), self.type_name())
    }

    /// The column's type unqualified, as `format_type` shows it: `vector(384)`, `halfvec(384)`.
    pub fn type_name(&self) -> String {
        format!("{}({})", if self.halfvec { "halfvec" } else { "vector" }, self.dims)
    }

    /// Whether a column of `type_name` (as the catalog states it, maybe qualified) holds this spec's vectors.
    pub fn holds_its_vectors(&self, type_name: &str) -> bool {
        let wanted = self.type_name();
        type_name == wanted || type_name.ends_with(&format!(".{wanted}"))
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
    /// Whether these are the specs a run recorded, in whatever order they were given.
    pub fn same_specs(&self, recorded: &[EmbeddingSpec]) -> bool {
        self.specs.len() == recorded.len() && self.specs.iter().all(|s| recorded.contains(s))
    }

    /// The spec must ask for the dimensions the model makes; `what` starts the error.
    pub fn check_dims(&self, spec: &EmbeddingSpec, what: &str) -> Result<()> {
        if spec.dims == self.embedder.dims() {
            return Ok(());
        }
        Err(Error::Setting(format!(
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
            [] => return Err(Error::Setting(format!("embedding for {}: no such table among those {among}", spec.table))),
            many => {
                let names: Vec<&str> = many.iter().map(|t| t.key.as_str()).collect();
                return Err(Error::Setting(format!("embedding for {}: matches {}; name one table", spec.table, names.join(", "))));
            }
        };
        setup.check_dims(spec, &format!("embedding for {}", table.key))?;
        for c in candidates.iter().filter(|c| c.key == table.key || c.parent.as_deref() == Some(table.key.as_str())) {
            out.insert(c.key.clone(), spec.clone());
        }
    }
    Ok(out)
}

/// PostgreSQL tables as spec candidates (a partition names its parent).
pub fn table_candidates<'a>(tables: impl IntoIterator<Item = &'a Table>) -> Vec<SpecCandidate<'a>> {
    tables
        .into_iter()
        .map(|t| SpecCandidate {
            key: t.display_name(),
            parent: t.partition_of.as_ref().map(|(s, n, _)| format!("{s}.{n}")),
            matches: Box::new(move |pattern: &str| table_matches(t, pattern)),
        })
        .collect()
}

/// The embedding spec of each table (partitions take their parent's); every spec
/// must name exactly one table being copied.
pub fn specs_by_table(setup: &EmbeddingSetup, tables: &[&Table]) -> Result<HashMap<String, EmbeddingSpec>> {
    match_specs(setup, &table_candidates(tables.iter().copied()), "being copied (check the name and --tables)")
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
            chunks: None,
        };
        EmbeddingSetup { specs: tables.iter().map(spec).collect(), embedder: Arc::new(Dims(384)), threads: 1, batch_size: 8 }
    }

    fn candidates() -> Vec<SpecCandidate<'static>> {
        let table = |key: &'static str, parent: Option<&str>| SpecCandidate {
            key: key.into(),
            parent: parent.map(String::from),
            matches: Box::new(move |p: &str| crate::plan::select::name_matches(p, key.split('.').next().unwrap(), key.split('.').nth(1).unwrap())),
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
}
