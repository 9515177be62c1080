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

use super::{vectors_for, Cache, EmbedPool, Keeper};
use crate::error::{Error, Result};
use crate::plan::embedding::{ChunkColumns, ChunkCopy, ChunkSpec, EmbeddingSpec, CHUNK_SEQ, CHUNK_TEXT};

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

    /// The application's own chunk table, when the spec names one.
    pub fn application(&self) -> Option<&'a ChunkColumns> {
        self.chunks.columns.as_ref()
    }

    /// The chunk table's columns that take the parent's key.
    pub fn chunk_key(&self) -> &'a [String] {
        self.application().map_or(self.key(), |c| c.key.as_slice())
    }

    /// The chunk table's position column, if it has one.
    pub fn seq_column(&self) -> Option<&'a str> {
        match self.application() {
            Some(c) => c.seq.as_deref(),
            None => Some(CHUNK_SEQ),
        }
    }

    /// The chunk table's text column.
    pub fn text_column(&self) -> &'a str {
        self.application().map_or(CHUNK_TEXT, |c| c.text.as_str())
    }

    /// Columns of the chunk table that take a value from the parent row, and the SQL for it.
    pub fn values(&self) -> Vec<(&'a str, &'a str)> {
        self.application().map(|c| c.values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).unwrap_or_default()
    }

    /// Makes the chunk table on the target: pgshift's own is created (its keys come
    /// after the load); the application's comes with the schema, and its vector column
    /// takes the spec's type (its source rows, the old model's vectors, are not carried).
    pub fn create_sql(&self, vector_schema: &str) -> String {
        let column_type = self.spec.column_type(vector_schema);
        if self.application().is_some() {
            return format!(
                "ALTER TABLE {} ALTER COLUMN {} TYPE {column_type} USING NULL::{column_type}",
                self.qualified(),
                quote_ident(&self.spec.column)
            );
        }
        let keys = self.key().iter().map(|k| {
            let c = self.parent.columns.iter().find(|c| &c.name == k).expect("key columns are columns");
            format!("{} {} NOT NULL", quote_ident(&c.name), c.target_type())
        });
        let columns: Vec<String> = keys
            .chain([
                format!("{} integer NOT NULL", quote_ident(CHUNK_SEQ)),
                format!("{} text NOT NULL", quote_ident(CHUNK_TEXT)),
                format!("{} {column_type}", quote_ident(&self.spec.column)),
            ])
            .collect();
        format!("CREATE TABLE {} ({})", self.qualified(), columns.join(", "))
    }

    /// pgshift's chunk table's primary key, then its foreign key to the parent (NOT
    /// VALID, then validated); an application's table keeps its own.
    pub fn post_data(&self) -> Vec<PostDataStep> {
        if self.application().is_some() {
            return Vec::new();
        }
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
    /// as the target has it, like the columns), the values for the chunk table (in
    /// its columns' types, `copy.value_types`), the context and the text.
    pub fn copy_out_sql(&self, source: &Table, copy: &ChunkCopy, predicate: Option<&str>) -> String {
        let select = |c: &pgshift_postgres::catalog::Column| c.select_expr();
        let mut fields: Vec<String> = source.copy_columns().map(select).collect();
        fields.extend(self.key().iter().filter_map(|k| source.columns.iter().find(|c| &c.name == k)).map(select));
        fields.extend(self.values().iter().zip(&copy.value_types).map(|((_, expr), t)| format!("({expr})::{t}")));
        fields.push(format!("({})::text", self.chunks.context.as_deref().unwrap_or("NULL")));
        fields.push(format!("({})::text", self.spec.text));
        let filter = predicate.map(|p| format!(" WHERE {p}")).unwrap_or_default();
        format!("COPY (SELECT {} FROM ONLY {}{filter}) TO STDOUT (FORMAT binary)", fields.join(", "), source.qualified())
    }

    /// What the load needs of the chunk table (recorded with the copy's tables for
    /// workers); `chunk_table` is the application's, as the target has it.
    pub fn copy(&self, chunk_table: Option<&Table>) -> ChunkCopy {
        let values = self.values();
        let value_types = values
            .iter()
            .map(|(name, _)| {
                chunk_table.and_then(|t| t.columns.iter().find(|c| &c.name == name)).map(|c| c.target_type().to_string()).unwrap_or_else(|| "text".into())
            })
            .collect();
        ChunkCopy {
            table: self.qualified(),
            copy_in: self.copy_in_sql(),
            tail: self.key().len() + values.len() + 1,
            values: values.len(),
            seq: self.seq_column().is_some(),
            parent: self.parent.qualified(),
            parent_key: self.key().to_vec(),
            key: self.chunk_key().to_vec(),
            value_types,
        }
    }

    fn copy_in_sql(&self) -> String {
        let values = self.values();
        let cols = self
            .chunk_key()
            .iter()
            .map(String::as_str)
            .chain(self.seq_column())
            .chain([self.text_column(), self.spec.column.as_str()])
            .chain(values.iter().map(|(c, _)| *c));
        format!("COPY {} ({}) FROM STDIN (FORMAT binary)", self.qualified(), column_list(cols))
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

/// Cuts, embeds (cache first) and encodes a batch of rows read by [`ChunkTable::copy_out_sql`]
/// into the columns of `copy.copy_in`.
pub async fn encode(pool: &EmbedPool, cache: &Cache<'_>, spec: &EmbeddingSpec, copy: &ChunkCopy, cutter: Arc<Cutter>, rows: Vec<SplitRow>) -> Result<ChunkedBatch> {
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
        let (key, values) = row.tail[..row.tail.len() - 1].split_at(row.tail.len() - 1 - copy.values);
        for (seq, range) in ranges.iter().enumerate() {
            let vector = vectors.next().flatten().map(|v| vector_value(&v, spec.halfvec));
            chunks.put_i16((key.len() + usize::from(copy.seq) + 2 + values.len()) as i16);
            for field in key {
                put_field(&mut chunks, field.as_deref());
            }
            if copy.seq {
                put_field(&mut chunks, Some(&(seq as i32).to_be_bytes()));
            }
            put_field(&mut chunks, Some(text[range.clone()].as_bytes()));
            put_field(&mut chunks, vector.as_deref());
            for field in values {
                put_field(&mut chunks, field.as_deref());
            }
        }
    }
    Ok(ChunkedBatch { parents: parents.freeze(), chunks: chunks.freeze() })
}

/// Rows whose chunks are to be made again, by chunk table (the parent's key as text);
/// the catch-up triggers fill it, [`embed_pending`] empties it before each commit.
const STALE: &str = "pgshift.stale_chunks";

impl ChunkTable<'_> {
    fn function_name(&self, keeper: Keeper) -> String {
        let (_, name) = self.schema_and_name();
        let word = match keeper {
            Keeper::CatchUp => "chunks",
            Keeper::Vectorize => "vectorize_chunks",
            Keeper::Reembed => "reembed_chunks",
        };
        let function = name_head(&format!("{word}_{}_{}_{name}", self.parent.schema, self.parent.name));
        format!("pgshift.{}", quote_ident(&function))
    }

    /// For catch-up: a trigger on the parent (fired by replication sessions too: ENABLE
    /// ALWAYS) that queues an inserted row, or one whose text, context or values for
    /// the chunk table changed, in [`STALE`]; [`embed_pending`] makes its chunks before
    /// the transaction commits. A deleted row's chunks go with it, and a changed key's
    /// chunks are made again under the new key: catch-up applies changes as a replica
    /// (`session_replication_role`), where foreign keys do not cascade. The queue is
    /// a table of its own, not placeholder rows in the chunk table: an application's
    /// chunk table may have columns no placeholder could fill.
    pub fn stale_ddl(&self, keeper: Keeper) -> Vec<String> {
        let (table, chunks, function, trigger) = (self.parent.qualified(), self.qualified(), self.function_name(keeper), keeper.chunks_trigger());
        let value_of = |expr: &str, row: &str| format!("(SELECT ({expr})::text FROM (SELECT {row}.*) AS r)");
        let unchanged: Vec<String> = [self.spec.text.as_str(), self.chunks.context.as_deref().unwrap_or("NULL")]
            .into_iter()
            .chain(self.values().iter().map(|(_, expr)| *expr))
            .map(|expr| format!("{} IS NOT DISTINCT FROM {}", value_of(expr, "NEW"), value_of(expr, "OLD")))
            .collect();
        let key_of = |row: &str| self.key().iter().map(|k| format!("{row}.{}", quote_ident(k))).collect::<Vec<_>>().join(", ");
        let key_text = self.key().iter().map(|k| format!("NEW.{}::text", quote_ident(k))).collect::<Vec<_>>().join(", ");
        let chunk_key = column_list(self.chunk_key().iter().map(String::as_str));
        vec![
            format!("CREATE TABLE IF NOT EXISTS {STALE} (chunk_table text NOT NULL, key text[] NOT NULL)"),
            format!(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgshift$ BEGIN \
                 IF TG_OP IN ('UPDATE', 'DELETE') AND (TG_OP = 'DELETE' OR ({old}) IS DISTINCT FROM ({new})) THEN \
                   DELETE FROM {chunks} WHERE ({chunk_key}) = ({old}); \
                 ELSIF TG_OP = 'UPDATE' AND {} THEN RETURN NULL; \
                 END IF; \
                 IF TG_OP = 'DELETE' THEN RETURN NULL; END IF; \
                 INSERT INTO {STALE} VALUES ({}, ARRAY[{key_text}]); \
                 RETURN NULL; END $pgshift$",
                unchanged.join(" AND "),
                pgshift_postgres::sql::quote_literal(&chunks),
                old = key_of("OLD"),
                new = key_of("NEW"),
            ),
            format!("DROP TRIGGER IF EXISTS {trigger} ON {table}"),
            format!("CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()"),
            format!("ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger}"),
        ]
    }

    /// Queues every row of the parent that has text but no chunk at all (rows written
    /// before any trigger queued them: a chunk table made just now, or a parent written
    /// between the cutover and the first vectorize).
    pub fn queue_missing_sql(&self) -> String {
        let key_text = self.key().iter().map(|k| format!("p.{}::text", quote_ident(k))).collect::<Vec<_>>().join(", ");
        let joined = self.chunk_key().iter().zip(self.key()).map(|(c, k)| format!("c.{} = p.{}", quote_ident(c), quote_ident(k))).collect::<Vec<_>>().join(" AND ");
        format!(
            "INSERT INTO {STALE} SELECT {}, ARRAY[{key_text}] FROM ONLY {} AS p WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS c WHERE {joined})",
            pgshift_postgres::sql::quote_literal(&self.qualified()),
            self.parent.qualified(),
            super::has_text_sql(self.spec),
            self.qualified()
        )
    }

    /// Catch-up's [`ChunkTable::stale_ddl`].
    pub fn catchup_ddl(&self) -> Vec<String> {
        self.stale_ddl(Keeper::CatchUp)
    }

    /// Undoes [`ChunkTable::stale_ddl`] (catch-up's at the cutover; the queue is empty after every commit).
    pub fn drop_stale_ddl(&self, keeper: Keeper) -> Vec<String> {
        vec![
            format!("DROP TRIGGER IF EXISTS {} ON {}", keeper.chunks_trigger(), self.parent.qualified()),
            format!("DROP FUNCTION IF EXISTS {}()", self.function_name(keeper)),
        ]
    }
}

/// Rows whose chunks are made per statement while a catch-up transaction commits.
const ROWS_PER_ROUND: i64 = 200;

/// Makes the chunks of every row queued for the chunk table (see
/// [`ChunkTable::stale_ddl`]), inside the caller's open transaction on `client`:
/// the queue's entries, the rows' old chunks and their new ones change together.
/// Returns how many rows got their chunks.
pub async fn embed_pending(client: &Session, pool: &EmbedPool, table: &ChunkTable<'_>, cutter: &Arc<Cutter>, vector_schema: &str) -> Result<u64> {
    make_chunks(client, pool, table, cutter, vector_schema, false).await
}

/// One round of [`embed_pending`] (up to [`ROWS_PER_ROUND`] rows), for a caller that
/// commits after each.
pub async fn embed_round(client: &Session, pool: &EmbedPool, table: &ChunkTable<'_>, cutter: &Arc<Cutter>, vector_schema: &str) -> Result<u64> {
    make_chunks(client, pool, table, cutter, vector_schema, true).await
}

async fn make_chunks(client: &Session, pool: &EmbedPool, table: &ChunkTable<'_>, cutter: &Arc<Cutter>, vector_schema: &str, once: bool) -> Result<u64> {
    let endpoint = client.endpoint();
    let (chunks, parent) = (table.qualified(), table.parent.qualified());
    let key = column_list(table.key().iter().map(String::as_str));
    let chunk_key = column_list(table.chunk_key().iter().map(String::as_str));
    let key_types: Vec<String> = table
        .key()
        .iter()
        .map(|k| table.parent.columns.iter().find(|c| &c.name == k).map(|c| c.target_type().to_string()).unwrap_or_default())
        .collect();
    let as_text = table.key().iter().map(|k| format!("{}::text", quote_ident(k))).collect::<Vec<_>>().join(", ");
    let pop = format!(
        "DELETE FROM {STALE} WHERE ctid IN (SELECT ctid FROM {STALE} WHERE chunk_table = $1 LIMIT {ROWS_PER_ROUND}) RETURNING key"
    );
    // Keys travel as text arrays, one per key column, cast back to the key's type.
    let n = key_types.len();
    let arrays: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
    let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let keys_cast = key_types.iter().enumerate().map(|(i, t)| format!("u.k{i}::{t}")).collect::<Vec<_>>().join(", ");
    let keys_from = format!("unnest({}) AS u({})", arrays.join(", "), names.join(", "));
    let context = table.chunks.context.as_deref().unwrap_or("NULL");
    let rows_sql = format!(
        "SELECT {as_text}, ({context})::text, ({})::text FROM ONLY {parent} WHERE ({key}) IN (SELECT {keys_cast} FROM {keys_from})",
        table.spec.text
    );
    let delete = format!("DELETE FROM {chunks} WHERE ({chunk_key}) IN (SELECT {keys_cast} FROM {keys_from})");
    let all_from = format!(
        "unnest({}, ${}::int[], ${}::text[], ${}::text[]) AS u({}, seq, chunk, v)",
        arrays.join(", "),
        n + 1,
        n + 2,
        n + 3,
        names.join(", ")
    );
    // Values from the parent row are read beside each chunk (the parent's own columns
    // are the nearest names inside the lateral query).
    let values = table.values();
    let value_select = match values.is_empty() {
        true => String::new(),
        false => {
            let exprs: Vec<String> = values.iter().enumerate().map(|(i, (_, expr))| format!("({expr}) AS pgshift_v{i}")).collect();
            format!(" CROSS JOIN LATERAL (SELECT {} FROM ONLY {parent} WHERE ({key}) = ({keys_cast})) AS p", exprs.join(", "))
        }
    };
    let columns = column_list(
        table.chunk_key().iter().map(String::as_str).chain(table.seq_column()).chain([table.text_column(), table.spec.column.as_str()]).chain(values.iter().map(|(c, _)| *c)),
    );
    let selected: Vec<String> = [keys_cast.clone()]
        .into_iter()
        .chain(table.seq_column().map(|_| "u.seq".to_string()))
        .chain(["u.chunk".to_string(), format!("u.v::{}", table.spec.column_type(vector_schema))])
        .chain((0..values.len()).map(|i| format!("p.pgshift_v{i}")))
        .collect();
    let insert = format!("INSERT INTO {chunks} ({columns}) SELECT {} FROM {all_from}{value_select}", selected.join(", "));
    let cache = Cache { store: crate::run::store::Store::new(client) };
    let mut total = 0;
    loop {
        let popped = client.query(&pop, &[&chunks]).await.context(&endpoint, || format!("find rows of {parent} whose chunks are stale"))?;
        if popped.is_empty() || (once && total > 0) {
            return Ok(total);
        }
        let mut keys: Vec<Vec<String>> = popped.iter().map(|r| r.get::<_, Vec<String>>(0)).collect();
        keys.sort();
        keys.dedup();
        let key_arrays: Vec<Vec<String>> = (0..n).map(|i| keys.iter().map(|k| k[i].clone()).collect()).collect();
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
