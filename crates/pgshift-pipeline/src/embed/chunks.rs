//! Chunk tables: a spec whose vectors go to a table of their own, one row per chunk
//! of the text, so that a document longer than the model's window is embedded whole.
//!
//! The chunk table holds the parent's key columns (same names and types), the
//! chunk's position, its text and its vector; its primary key and its foreign key to
//! the parent (ON DELETE CASCADE, ON UPDATE CASCADE) come with the parent's keys after
//! the load, and its vector index with the others.
//!
//! During the load the parent's COPY carries, after the row, its key, the context and
//! the text; each batch of rows is written to the parent and its chunks to the chunk
//! table, both in the chunk's one transaction, so a resumed load (which clears a
//! chunk's range, chunks included) never duplicates a chunk.

use std::ops::Range;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use pgshift_embed::chunk::{chunk, Chunking, Tokens};
use pgshift_postgres::catalog::Table;
use pgshift_postgres::error::Context;
use pgshift_postgres::Session;
use pgshift_postgres::copy_binary::{put_field, put_kept, vector_value, SplitRow};
use pgshift_postgres::ddl::{foreign_key_definition, foreign_key_steps, PostDataKind, PostDataStep, StepOwner};
use pgshift_postgres::sql::{column_list, name_head, name_tail, qualified, quote_ident};

use super::{vectors_for, Cache, EmbedPool};
use crate::error::{Error, Result};
use crate::plan::embedding::{ChunkCopy, ChunkSpec, EmbeddingSpec, CHUNK_SEQ, CHUNK_TEXT};

/// A spec's chunk table beside its parent (the target's table).
pub struct ChunkTable<'a> {
    pub parent: &'a Table,
    pub spec: &'a EmbeddingSpec,
    pub chunks: &'a ChunkSpec,
}

impl<'a> ChunkTable<'a> {
    /// None for a spec that fills a column.
    pub fn of(parent: &'a Table, spec: &'a EmbeddingSpec) -> Option<ChunkTable<'a>> {
        spec.chunks.as_ref().map(|chunks| ChunkTable { parent, spec, chunks })
    }

    /// The parent's primary key columns: a chunk table needs them (checked before the load).
    pub fn key(&self) -> &'a [String] {
        self.parent.primary_key.as_ref().map_or(&[], |k| k.columns.as_slice())
    }

    pub fn schema_and_name(&self) -> (&'a str, &'a str) {
        self.chunks.schema_and_name(&self.parent.schema)
    }

    pub fn qualified(&self) -> String {
        let (schema, name) = self.schema_and_name();
        qualified(schema, name)
    }

    /// `CREATE TABLE` for the chunk table (its keys come after the load).
    pub fn create_sql(&self, vector_schema: &str) -> String {
        let keys = self.key().iter().map(|k| {
            let c = self.parent.columns.iter().find(|c| &c.name == k).expect("key columns are columns");
            format!("{} {} NOT NULL", quote_ident(&c.name), c.target_type())
        });
        let columns: Vec<String> = keys
            .chain([
                format!("{} integer NOT NULL", quote_ident(CHUNK_SEQ)),
                format!("{} text NOT NULL", quote_ident(CHUNK_TEXT)),
                format!("{} {}", quote_ident(&self.spec.column), self.spec.column_type(vector_schema)),
            ])
            .collect();
        format!("CREATE TABLE {} ({})", self.qualified(), columns.join(", "))
    }

    /// The chunk table's primary key, then its foreign key to the parent (NOT VALID, then validated).
    pub fn post_data(&self) -> Vec<PostDataStep> {
        let (schema, name) = self.schema_and_name();
        let owner = StepOwner { schema, relname: name };
        let key = column_list(self.key().iter().map(String::as_str));
        let pk_name = constraint_name(name, "pkey");
        let pk = PostDataStep {
            table: format!("{schema}.{name}"),
            schema: schema.to_string(),
            relname: name.to_string(),
            object: pk_name.clone(),
            kind: PostDataKind::Index,
            sql: format!("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({key}, {})", self.qualified(), quote_ident(&pk_name), quote_ident(CHUNK_SEQ)),
        };
        let definition = foreign_key_definition(self.key(), &self.parent.qualified(), self.key(), Some("CASCADE ON UPDATE CASCADE"));
        let mut steps = vec![pk];
        steps.extend(foreign_key_steps(owner, &constraint_name(name, "parent_fkey"), &definition, true));
        steps
    }

    /// What the source's COPY reads for the parent: its columns, then the key (cast
    /// as the target has it, like the columns), the context and the text.
    pub fn copy_out_sql(&self, source: &Table, predicate: Option<&str>) -> String {
        let select = |c: &pgshift_postgres::catalog::Column| c.select_expr();
        let mut fields: Vec<String> = source.copy_columns().map(select).collect();
        fields.extend(self.key().iter().filter_map(|k| source.columns.iter().find(|c| &c.name == k)).map(select));
        fields.push(format!("({})::text", self.chunks.context.as_deref().unwrap_or("NULL")));
        fields.push(format!("({})::text", self.spec.text));
        let filter = predicate.map(|p| format!(" WHERE {p}")).unwrap_or_default();
        format!("COPY (SELECT {} FROM ONLY {}{filter}) TO STDOUT (FORMAT binary)", fields.join(", "), source.qualified())
    }

    /// The fields after the parent's row in [`ChunkTable::copy_out_sql`]: key and context (the text is last).
    pub fn tail_fields(&self) -> usize {
        self.key().len() + 1
    }

    /// What a copy worker needs of the chunk table (recorded with the copy's tables).
    pub fn copy(&self) -> ChunkCopy {
        ChunkCopy { table: self.qualified(), copy_in: self.copy_in_sql(), tail: self.tail_fields() }
    }

    pub fn copy_in_sql(&self) -> String {
        let cols = column_list(self.key().iter().map(String::as_str).chain([CHUNK_SEQ, CHUNK_TEXT, self.spec.column.as_str()]));
        format!("COPY {} ({cols}) FROM STDIN (FORMAT binary)", self.qualified())
    }
}

/// `<table>_<what>`, cut to PostgreSQL's 63 bytes from the front of the table's name.
fn constraint_name(table: &str, what: &str) -> String {
    name_tail(&format!("{table}_{what}"))
}

/// How one row's text is cut and embedded.
pub struct Cutter {
    pub tokens: Arc<dyn Tokens>,
    pub chunking: Chunking,
}

impl Cutter {
    /// Texts cut as `chunks` says, tokens counted as the pool's model counts them.
    pub fn new(pool: &EmbedPool, chunks: &ChunkSpec) -> Cutter {
        Cutter { tokens: pool.tokens(), chunking: Chunking { tokens: chunks.tokens, overlap: chunks.overlap } }
    }
}

/// One row's chunks: the ranges of its text and the texts embedded for them (the
/// context before each; a row without text has none).
fn cut(cutter: &Cutter, context: Option<&str>, text: &str, embed_blank: bool) -> Result<(Vec<Range<usize>>, Vec<String>)> {
    if !embed_blank && super::is_blank(text) {
        return Ok((Vec::new(), Vec::new()));
    }
    let prefix = context.filter(|c| !c.is_empty());
    let prefix_tokens = match prefix {
        Some(p) => cutter.tokens.spans(p)?.len(),
        None => 0,
    };
    let ranges = chunk(text, &*cutter.tokens, cutter.chunking, prefix_tokens)?;
    let texts = ranges.iter().map(|r| format!("{}{}", prefix.unwrap_or_default(), &text[r.clone()])).collect();
    Ok((ranges, texts))
}

/// A batch of parent rows as two COPY payloads: the rows as the parent takes them,
/// and their chunks for the chunk table (key, position, text, vector).
pub struct ChunkedBatch {
    pub parents: Bytes,
    pub chunks: Bytes,
}

/// Cuts, embeds (cache first) and encodes a batch of rows read by [`ChunkTable::copy_out_sql`].
pub async fn encode(pool: &EmbedPool, cache: &Cache<'_>, spec: &EmbeddingSpec, cutter: Arc<Cutter>, rows: Vec<SplitRow>) -> Result<ChunkedBatch> {
    // Tokenizing is CPU work: off the runtime's threads.
    let embed_blank = spec.embed_blank;
    let (rows, cuts) = tokio::task::spawn_blocking(move || {
        let cuts = rows
            .iter()
            .map(|r| {
                let text = r.last.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                let context = r.tail.last().cloned().flatten().map(|b| String::from_utf8_lossy(&b).into_owned());
                cut(&cutter, context.as_deref(), &text, embed_blank).map(|(ranges, texts)| (text, ranges, texts))
            })
            .collect::<Result<Vec<_>>>();
        (rows, cuts)
    })
    .await
    .map_err(|e| Error::Internal(format!("cutting texts into chunks: {e}")))?;
    let cuts = cuts?;
    let texts: Vec<Option<String>> = cuts.iter().flat_map(|(_, _, texts)| texts.iter().cloned().map(Some)).collect();
    let mut vectors = vectors_for(pool, cache, spec, &texts).await?.into_iter();
    let mut parents = BytesMut::new();
    let mut chunks = BytesMut::new();
    for (row, (text, ranges, _)) in rows.iter().zip(&cuts) {
        put_kept(&mut parents, row);
        let key = &row.tail[..row.tail.len() - 1];
        for (seq, range) in ranges.iter().enumerate() {
            let vector = vectors.next().flatten().map(|v| vector_value(&v, spec.halfvec));
            chunks.put_i16((key.len() + 3) as i16);
            for field in key {
                put_field(&mut chunks, field.as_deref());
            }
            put_field(&mut chunks, Some(&(seq as i32).to_be_bytes()));
            put_field(&mut chunks, Some(text[range.clone()].as_bytes()));
            put_field(&mut chunks, vector.as_deref());
        }
    }
    Ok(ChunkedBatch { parents: parents.freeze(), chunks: chunks.freeze() })
}

/// The trigger that marks a row's chunks stale during catch-up.
pub const TRIGGER: &str = "pgshift_chunks_stale";

impl ChunkTable<'_> {
    fn function_name(&self) -> String {
        let (_, name) = self.schema_and_name();
        let function = name_head(&format!("chunks_{}_{}_{name}", self.parent.schema, self.parent.name));
        format!("pgshift.{}", quote_ident(&function))
    }

    fn pending_index(&self) -> String {
        let (_, name) = self.schema_and_name();
        constraint_name(name, "pending_idx")
    }

    /// For catch-up: a trigger on the parent (fired by replication sessions too: ENABLE
    /// ALWAYS) that replaces an inserted row's chunks, or those of a row whose text or
    /// context changed, with one placeholder (chunk_seq -1) that [`embed_pending`]
    /// turns into the row's chunks before the transaction commits; a partial index
    /// finds the placeholders. A deleted row's chunks go with it, and a changed key's
    /// chunks are made again under the new key: catch-up applies changes as a replica
    /// (`session_replication_role`), where foreign keys do not cascade.
    pub fn catchup_ddl(&self) -> Vec<String> {
        let (table, chunks, function) = (self.parent.qualified(), self.qualified(), self.function_name());
        let value_of = |expr: &str, row: &str| format!("(SELECT ({expr})::text FROM (SELECT {row}.*) AS r)");
        let context = self.chunks.context.as_deref().unwrap_or("NULL");
        let keys: Vec<String> = self.key().iter().map(|k| quote_ident(k)).collect();
        let key_of = |row: &str| keys.iter().map(|k| format!("{row}.{k}")).collect::<Vec<_>>().join(", ");
        let key = keys.join(", ");
        vec![
            format!(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgshift$ BEGIN \
                 IF TG_OP IN ('UPDATE', 'DELETE') AND (TG_OP = 'DELETE' OR ({old}) IS DISTINCT FROM ({new})) THEN \
                   DELETE FROM {chunks} WHERE ({key}) = ({old}); \
                 ELSIF TG_OP = 'UPDATE' AND {} IS NOT DISTINCT FROM {} AND {} IS NOT DISTINCT FROM {} THEN RETURN NULL; \
                 END IF; \
                 IF TG_OP = 'DELETE' THEN RETURN NULL; END IF; \
                 DELETE FROM {chunks} WHERE ({key}) = ({new}); \
                 INSERT INTO {chunks} ({key}, {}, {}) VALUES ({new}, -1, ''); \
                 RETURN NULL; END $pgshift$",
                value_of(&self.spec.text, "NEW"),
                value_of(&self.spec.text, "OLD"),
                value_of(context, "NEW"),
                value_of(context, "OLD"),
                quote_ident(CHUNK_SEQ),
                quote_ident(CHUNK_TEXT),
                old = key_of("OLD"),
                new = key_of("NEW"),
            ),
            format!("DROP TRIGGER IF EXISTS {TRIGGER} ON {table}"),
            format!("CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()"),
            format!("ALTER TABLE {table} ENABLE ALWAYS TRIGGER {TRIGGER}"),
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {chunks} ({}) WHERE {} < 0",
                quote_ident(&self.pending_index()),
                quote_ident(CHUNK_SEQ),
                quote_ident(CHUNK_SEQ)
            ),
        ]
    }

    /// Undoes [`ChunkTable::catchup_ddl`] (at the cutover).
    pub fn drop_catchup_ddl(&self) -> Vec<String> {
        let (schema, _) = self.schema_and_name();
        vec![
            format!("DROP TRIGGER IF EXISTS {TRIGGER} ON {}", self.parent.qualified()),
            format!("DROP FUNCTION IF EXISTS {}()", self.function_name()),
            format!("DROP INDEX IF EXISTS {}.{}", quote_ident(schema), quote_ident(&self.pending_index())),
        ]
    }
}

/// Rows whose chunks are made per statement while a catch-up transaction commits.
const ROWS_PER_ROUND: i64 = 200;

/// Turns every placeholder of the chunk table into its row's chunks, inside the
/// caller's open transaction on `client` (see [`ChunkTable::catchup_ddl`]). Returns how
/// many rows got their chunks.
pub async fn embed_pending(client: &Session, pool: &EmbedPool, table: &ChunkTable<'_>, cutter: &Arc<Cutter>, vector_schema: &str) -> Result<u64> {
    let endpoint = client.endpoint();
    let (chunks, parent) = (table.qualified(), table.parent.qualified());
    let key = column_list(table.key().iter().map(String::as_str));
    let key_types: Vec<String> = table
        .key()
        .iter()
        .map(|k| table.parent.columns.iter().find(|c| &c.name == k).map(|c| c.target_type().to_string()).unwrap_or_default())
        .collect();
    let as_text = table.key().iter().map(|k| format!("{}::text", quote_ident(k))).collect::<Vec<_>>().join(", ");
    let pending = format!("SELECT {as_text} FROM {chunks} WHERE {} < 0 LIMIT {ROWS_PER_ROUND}", quote_ident(CHUNK_SEQ));
    // Keys travel as text arrays, one per key column, cast back to the key's type.
    let unnest = |first_param: usize, extra: &[(&str, &str)]| {
        let arrays: Vec<String> = (0..key_types.len()).map(|i| format!("${}::text[]", first_param + i)).chain(extra.iter().map(|(p, _)| p.to_string())).collect();
        let names: Vec<String> = (0..key_types.len()).map(|i| format!("k{i}")).chain(extra.iter().map(|(_, n)| n.to_string())).collect();
        let keys: Vec<String> = key_types.iter().enumerate().map(|(i, t)| format!("u.k{i}::{t}")).collect();
        (format!("unnest({}) AS u({})", arrays.join(", "), names.join(", ")), keys.join(", "))
    };
    let (keys_from, keys_cast) = unnest(1, &[]);
    let context = table.chunks.context.as_deref().unwrap_or("NULL");
    let rows_sql = format!(
        "SELECT {as_text}, ({context})::text, ({})::text FROM ONLY {parent} WHERE ({key}) IN (SELECT {keys_cast} FROM {keys_from})",
        table.spec.text
    );
    let delete = format!("DELETE FROM {chunks} WHERE ({key}) IN (SELECT {keys_cast} FROM {keys_from})");
    let n = key_types.len();
    let extra = [
        (format!("${}::int[]", n + 1), "seq"),
        (format!("${}::text[]", n + 2), "chunk"),
        (format!("${}::text[]", n + 3), "v"),
    ];
    let extra_refs: Vec<(&str, &str)> = extra.iter().map(|(p, name)| (p.as_str(), *name)).collect();
    let (all_from, all_keys) = unnest(1, &extra_refs);
    let insert = format!(
        "INSERT INTO {chunks} ({key}, {}, {}, {}) SELECT {all_keys}, u.seq, u.chunk, u.v::{} FROM {all_from}",
        quote_ident(CHUNK_SEQ),
        quote_ident(CHUNK_TEXT),
        quote_ident(&table.spec.column),
        table.spec.column_type(vector_schema)
    );
    let cache = Cache { store: crate::run::store::Store::new(client) };
    let mut total = 0;
    loop {
        let keys = client.query(&pending, &[]).await.context(&endpoint, || format!("find rows of {parent} whose chunks are stale"))?;
        if keys.is_empty() {
            return Ok(total);
        }
        let key_arrays: Vec<Vec<String>> = (0..n).map(|i| keys.iter().map(|r| r.get::<_, String>(i)).collect()).collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = key_arrays.iter().map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let rows = client.query(&rows_sql, &params).await.context(&endpoint, || format!("read the texts of {parent}"))?;
        let cuts: Vec<(Vec<String>, Vec<Range<usize>>, String, Vec<String>)> = {
            let cutter = cutter.clone();
            let embed_blank = table.spec.embed_blank;
            let texts: Vec<(Vec<String>, Option<String>, Option<String>)> =
                rows.iter().map(|r| ((0..n).map(|i| r.get::<_, String>(i)).collect(), r.get(n), r.get(n + 1))).collect();
            tokio::task::spawn_blocking(move || {
                texts
                    .into_iter()
                    .map(|(key, context, text)| {
                        let text = text.unwrap_or_default();
                        cut(&cutter, context.as_deref(), &text, embed_blank).map(|(ranges, embedded)| (key, ranges, text, embedded))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .await
            .map_err(|e| Error::Internal(format!("cutting texts into chunks: {e}")))??
        };
        let embedded: Vec<Option<String>> = cuts.iter().flat_map(|(_, _, _, e)| e.iter().cloned().map(Some)).collect();
        let mut vectors = vectors_for(pool, &cache, table.spec, &embedded).await?.into_iter().map(super::vector_literal);
        let (mut new_keys, mut seqs, mut texts, mut literals): (Vec<Vec<String>>, Vec<i32>, Vec<String>, Vec<Option<String>>) =
            (vec![Vec::new(); n], Vec::new(), Vec::new(), Vec::new());
        for (key, ranges, text, _) in &cuts {
            for (seq, range) in ranges.iter().enumerate() {
                for (i, k) in key.iter().enumerate() {
                    new_keys[i].push(k.clone());
                }
                seqs.push(seq as i32);
                texts.push(text[range.clone()].to_string());
                literals.push(vectors.next().flatten());
            }
        }
        client.execute(&delete, &params).await.context(&endpoint, || format!("remove the stale chunks of {parent}"))?;
        let mut insert_params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            new_keys.iter().map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        insert_params.push(&seqs);
        insert_params.push(&texts);
        insert_params.push(&literals);
        client.execute(&insert, &insert_params).await.context(&endpoint, || format!("write the chunks of {parent}"))?;
        total += keys.len() as u64;
    }
}
