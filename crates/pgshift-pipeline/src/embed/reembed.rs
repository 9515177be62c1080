//! `pgshift reembed`: recompute a live table's vectors with a (new) model, without
//! downtime. A shadow column is added and filled in key order with checkpoints; a
//! trigger clears a shadow vector whenever its row's text changes, so rows changed
//! meanwhile are caught by the next pass; the index is built CONCURRENTLY on the
//! shadow; then one short transaction swaps column and index names and drops the
//! old ones. Readers see the old column and index until the swap commits, the new
//! ones after: never a missing index or a half-filled column.

use std::time::Instant;

use pgshift_postgres::Session;
use pgshift_postgres::catalog::{self, Table};
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::{quote_ident, quote_literal};
use pgshift_postgres::ConnInfo;
use serde::Serialize;
use tokio_postgres::types::ToSql;

use super::catchup::{self as embed_catchup, VectorColumn};
use super::{has_text_sql, vector_literal, vectors_for, Cache, EmbedPool, Keeper};
use crate::embed::vector_index::hnsw_memory_mb;
use crate::error::{Error, Result};
use crate::plan::embedding::{EmbeddingSetup, EmbeddingSpec, VectorIndex};
use crate::progress::Progress;
use crate::run::store::Store;

pub struct ReembedOptions {
    pub setup: EmbeddingSetup,
    /// Rows per backfill transaction.
    pub batch_rows: i64,
    pub dry_run: bool,
    /// Longest wait for the table lock of the swap.
    pub lock_timeout_ms: u64,
    pub index_memory_mb: u64,
    /// Always replace the column (shadow, index, swap), even when its vectors are the
    /// same model's and only changed rows would be embedded again in place.
    pub full: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ReembedReport {
    pub table: String,
    pub column: String,
    pub model: String,
    pub dry_run: bool,
    /// What it does (or, with --dry-run, would do), in order.
    pub steps: Vec<String>,
    pub resumed: bool,
    /// `in-place` (the column holds this model's vectors: only rows whose text
    /// changed are embedded again) or `swap` (shadow column, new index, swap).
    pub mode: String,
    /// In place: the rows compared, of which `rows_embedded` differed.
    pub rows_checked: u64,
    /// In place: how long the comparing scan took.
    pub scan_seconds: f64,
    pub rows_embedded: u64,
    pub passes: u32,
    pub index: Option<String>,
    /// How long the swap held the table's lock.
    pub swap_ms: f64,
    pub seconds: f64,
}

struct Names {
    table: String,
    column: String,
    shadow: String,
    new_index: String,
}

fn names(t: &Table, spec: &EmbeddingSpec) -> Names {
    let short = |s: String| pgshift_postgres::sql::name_tail(&s);
    Names {
        table: t.qualified(),
        column: quote_ident(&spec.column),
        shadow: quote_ident(&short(format!("{}__pgshift_new", spec.column))),
        new_index: short(format!("{}_{}_pgshift_new_idx", t.name, spec.column)),
    }
}

pub async fn reembed(target: &ConnInfo, options: &ReembedOptions, progress: std::sync::Arc<dyn Progress>) -> Result<ReembedReport> {
    let started = Instant::now();
    let endpoint = target.endpoint();
    let spec = options.setup.specs.first().ok_or_else(|| Error::Setting("reembed: name the table, text and column".into()))?;
    let client = target.session().await?;
    let catalog = catalog::inspect(&client).await?;
    // The catalog is read with search_path = pg_catalog; the text expression and the
    // vector type resolve as the application's own queries do.
    client.batch_execute("RESET search_path").await.context(&endpoint, || "reset search_path".into())?;
    let table = catalog
        .tables
        .iter()
        .find(|t| crate::plan::select::table_matches(t, &spec.table) && t.partition_of.is_none())
        .ok_or_else(|| Error::Setting(format!("reembed: no table {} in {endpoint}", spec.table)))?;
    let key = table.primary_key.as_ref().ok_or_else(|| {
        Error::Setting(format!("reembed: table {} has no primary key, which the backfill walks in order: add one", table.display_name()))
    })?;
    options.setup.check_dims(spec, "reembed")?;
    let probe = format!("SELECT ({})::text FROM ONLY {} LIMIT 0", spec.text, table.qualified());
    client.batch_execute(&probe).await.map_err(|e| {
        Error::Setting(format!("reembed: the text expression {:?} fails on {}: {}", spec.text, table.display_name(), pgshift_postgres::error::describe(&e)))
    })?;
    let Some(vector_schema) = catalog::installed_extensions(&client).await?.remove("vector") else {
        return Err(Error::Setting(format!("reembed: {endpoint} has no pgvector extension: CREATE EXTENSION vector first")));
    };
    if spec.chunks.is_some() {
        let report = ReembedReport {
            table: table.display_name(),
            column: spec.column.clone(),
            model: options.setup.embedder.model().to_string(),
            dry_run: options.dry_run,
            ..Default::default()
        };
        return super::reembed_chunks::reembed_chunks(&client, table, spec, options, report, (&vector_schema, progress, started)).await;
    }
    let n = names(table, spec);
    let old_exists = table.columns.iter().any(|c| c.name == spec.column);
    let mut report = ReembedReport {
        table: table.display_name(),
        column: spec.column.clone(),
        model: options.setup.embedder.model().to_string(),
        dry_run: options.dry_run,
        mode: "swap".into(),
        ..Default::default()
    };
    if !options.full && same_model_in_column(&client, table, spec, &report.model).await? {
        return in_place(&client, table, spec, options, report, &vector_schema, progress, started).await;
    }
    report.steps = vec![
        format!("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}", n.table, n.shadow, spec.column_type(&vector_schema)),
        format!("trigger: clear {} when the text changes", n.shadow),
        format!("fill {} in key order ({}), {} rows per transaction, passes until no row is left", n.shadow, key.columns.join(", "), options.batch_rows),
    ];
    let shadow_spec = EmbeddingSpec { column: unquoted(&n.shadow), ..spec.clone() };
    if let Some(sql) = shadow_spec.index_sql(&n.table, &n.new_index, true, &vector_schema) {
        report.steps.push(sql);
    }
    report.steps.push(format!(
        "one transaction: lock {} against writes, fill what is left, {}rename {} to {}, rename the index, drop the trigger",
        n.table,
        if old_exists { format!("drop the old {} and its indexes, ", n.column) } else { String::new() },
        n.shadow,
        n.column
    ));
    if options.dry_run {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    let store = Store::new(&client);
    store.ensure_schema().await?;
    let mut last_key: Option<Vec<String>> = None;
    match store.reembed(&report.table, &spec.column).await? {
        Some(existing) if !existing.finished => {
            if existing.spec.as_ref() != Some(spec) || existing.model != report.model {
                return Err(Error::RunState(format!(
                    "an unfinished re-embed of {}.{} with other settings exists: run it again with those settings, \
                     or remove it (DELETE FROM pgshift.reembeds WHERE table_name = {}; ALTER TABLE {} DROP COLUMN {})",
                    report.table,
                    spec.column,
                    quote_literal(&report.table),
                    n.table,
                    n.shadow
                )));
            }
            report.resumed = true;
            last_key = existing.last_key;
        }
        _ => store.start_reembed(&report.table, spec, &report.model).await?,
    }
    let add = format!("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}", n.table, n.shadow, spec.column_type(&vector_schema));
    client.batch_execute(&add).await.context(&endpoint, || add.clone())?;
    for sql in embed_catchup::trigger_ddl(table, &shadow_spec, Keeper::CatchUp) {
        client.batch_execute(&sql).await.context(&endpoint, || sql.clone())?;
    }

    let pool = EmbedPool::start(options.setup.embedder.clone(), options.setup.threads, options.setup.batch_size);
    let backfill = Backfill {
        client: &client,
        table,
        spec: &shadow_spec,
        column: &spec.column,
        key: &key.columns,
        pool: &pool,
        batch: options.batch_rows,
        progress: &*progress,
        vector_schema: &vector_schema,
    };
    // Pass 1 starts at the checkpoint; later passes start over for rows changed meanwhile.
    loop {
        report.passes += 1;
        let done = backfill.pass(last_key.take()).await?;
        report.rows_embedded += done;
        if done == 0 || report.passes >= 10 {
            break;
        }
    }

    if let Some(sql) = shadow_spec.index_sql(&n.table, &n.new_index, true, &vector_schema) {
        let invalid: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace s ON s.oid = c.relnamespace \
                 WHERE s.nspname = $1 AND c.relname = $2 AND NOT i.indisvalid)",
                &[&table.schema, &n.new_index],
            )
            .await
            .context(&endpoint, || "look for an interrupted index build".into())?
            .get(0);
        if invalid {
            let drop = format!("DROP INDEX CONCURRENTLY {}.{}", quote_ident(&table.schema), quote_ident(&n.new_index));
            client.batch_execute(&drop).await.context(&endpoint, || drop.clone())?;
        }
        let rows = report.rows_embedded.max(table.row_estimate.max(0) as u64);
        let memory = hnsw_memory_mb(rows, spec.dims, spec.halfvec).clamp(64, options.index_memory_mb.max(64));
        client
            .batch_execute(&format!("SET maintenance_work_mem = '{memory}MB'; SET max_parallel_maintenance_workers = 2"))
            .await
            .context(&endpoint, || "configure the index session".into())?;
        progress.step(&format!("{}: building {} CONCURRENTLY", report.table, n.new_index));
        client.batch_execute(&sql).await.context(&endpoint, || sql.clone())?;
        report.index = Some(n.new_index.clone());
    }

    let swap_started = Instant::now();
    let final_index = swap(&backfill, &n, spec, old_exists, options.lock_timeout_ms).await?;
    report.swap_ms = swap_started.elapsed().as_secs_f64() * 1000.0;
    report.index = final_index.or(report.index);
    store.finish_reembed(&report.table, &spec.column).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Whether the column holds vectors of this model in this type, as pgshift recorded
/// it (a finished re-embed of the column, or a run that computed it): then only rows
/// whose text changed need their vectors again. halfvec columns are always swapped
/// (the cache's digests are of full-precision vectors).
async fn same_model_in_column(client: &Session, table: &Table, spec: &EmbeddingSpec, model: &str) -> Result<bool> {
    let Some(column) = table.columns.iter().find(|c| c.name == spec.column) else { return Ok(false) };
    if spec.halfvec || !spec.holds_its_vectors(&column.type_name) {
        return Ok(false);
    }
    let same = |s: &EmbeddingSpec, m: &str| m == model && s.column == spec.column && s.dims == spec.dims && !s.halfvec && s.chunks.is_none();
    let store = Store::new(client);
    if !store.exists().await? {
        return Ok(false);
    }
    if let Some(r) = store.reembed(&table.display_name(), &spec.column).await? {
        // The newest record of the column decides: an unfinished swap with another model is not this model's.
        return Ok(r.finished && r.spec.as_ref().is_some_and(|s| same(s, &r.model)));
    }
    let recorded = crate::run::specs_on_target(client).await?;
    Ok(recorded.iter().any(|(_, s)| crate::plan::select::table_matches(table, &s.table) && same(s, &s.model)))
}

/// Re-embeds in place only the rows whose vector is not their current text's: one scan
/// compares each row's vector (`md5(vector_send(v))`) with the digest the cache
/// keeps for its text (by the same content hash the cache is keyed by), keeping the
/// differing rows' ctids in a temporary table; then those rows are embedded in
/// batches, each stored only where the row still has the text embedded (a row changed
/// meanwhile is left for the next run). No shadow column, no new index.
#[allow(clippy::too_many_arguments)]
async fn in_place(
    client: &Session,
    table: &Table,
    spec: &EmbeddingSpec,
    options: &ReembedOptions,
    mut report: ReembedReport,
    vector_schema: &str,
    progress: std::sync::Arc<dyn Progress>,
    started: Instant,
) -> Result<ReembedReport> {
    let endpoint = client.endpoint();
    let (name, qualified, col) = (table.display_name(), table.qualified(), quote_ident(&spec.column));
    report.mode = "in-place".into();
    report.steps = vec![
        format!("compare every row of {qualified}: its {col} with the cached vector of its current text (model {})", report.model),
        format!("embed again, in place, the rows that differ, {} per statement (no shadow column, no new index)", options.batch_rows),
    ];
    if options.dry_run {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let text = format!("(({})::text)", spec.text);
    let scan = format!(
        "CREATE TEMP TABLE IF NOT EXISTS pgshift_reembed_differs (n bigint GENERATED ALWAYS AS IDENTITY, id tid); \
         TRUNCATE pgshift_reembed_differs RESTART IDENTITY"
    );
    client.batch_execute(&scan).await.context(&endpoint, || scan.clone())?;
    let compare = format!(
        "WITH rows AS ( \
           SELECT t.ctid AS id, CASE WHEN coalesce({has_text}, false) \
             THEN t.{col} IS NULL OR c.digest IS DISTINCT FROM decode(md5({vs}.vector_send(t.{col})), 'hex') \
             ELSE t.{col} IS NOT NULL END AS differs \
           FROM ONLY {qualified} AS t LEFT JOIN pgshift.embedding_cache AS c \
             ON c.model = $1 AND c.hash = sha256(convert_to($1, 'UTF8') || '\\x00'::bytea || convert_to({text}, 'UTF8'))), \
         kept AS (INSERT INTO pgshift_reembed_differs (id) SELECT id FROM rows WHERE differs) \
         SELECT count(*), count(*) FILTER (WHERE differs) FROM rows",
        has_text = has_text_sql(spec),
        vs = quote_ident(vector_schema),
    );
    progress.step(&format!("{name}: comparing vectors with texts"));
    let scan_started = Instant::now();
    let row = client.query_one(&compare, &[&report.model]).await.context(&endpoint, || format!("compare the vectors of {qualified} with their texts"))?;
    report.scan_seconds = scan_started.elapsed().as_secs_f64();
    report.rows_checked = row.get::<_, i64>(0) as u64;
    let differing: i64 = row.get(1);
    let pool = EmbedPool::start(options.setup.embedder.clone(), options.setup.threads, options.setup.batch_size);
    let column = VectorColumn { table, spec, vector_schema };
    let unchanged = format!("{text} IS NOT DISTINCT FROM ($3::text[])[array_position($1::text[]::tid[], ctid)]");
    let update = column.store_by_ctid_sql(Some(&unchanged));
    let cache = Cache { store: Store::new(client) };
    let mut after = 0i64;
    while after < differing {
        let batch = client
            .query(
                &format!("SELECT t.ctid::text, {text} FROM ONLY {qualified} AS t WHERE t.ctid = ANY(ARRAY(SELECT id FROM pgshift_reembed_differs WHERE n > $1 ORDER BY n LIMIT $2))"),
                &[&after, &options.batch_rows],
            )
            .await
            .context(&endpoint, || format!("read the rows of {qualified} that differ"))?;
        after += options.batch_rows;
        if batch.is_empty() {
            continue;
        }
        let ids: Vec<String> = batch.iter().map(|r| r.get(0)).collect();
        let texts: Vec<Option<String>> = batch.iter().map(|r| r.get(1)).collect();
        let vectors: Vec<Option<String>> = vectors_for(&pool, &cache, spec, &texts).await?.into_iter().map(vector_literal).collect();
        let written = client.execute(&update, &[&ids, &vectors, &texts]).await.context(&endpoint, || format!("store vectors of {qualified}"))?;
        report.rows_embedded += written;
        progress.step(&format!("{name}: {} of {differing} differing rows embedded again", report.rows_embedded));
    }
    let store = Store::new(client);
    store.start_reembed(&name, spec, &report.model).await?;
    store.finish_reembed(&name, &spec.column).await?;
    report.passes = 1;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn unquoted(ident: &str) -> String {
    ident.trim_matches('"').replace("\"\"", "\"")
}

struct Backfill<'a> {
    client: &'a Session,
    table: &'a Table,
    /// The spec with the shadow column as its column.
    spec: &'a EmbeddingSpec,
    /// The column being re-embedded (its row in pgshift.reembeds).
    column: &'a str,
    key: &'a [String],
    pool: &'a EmbedPool,
    batch: i64,
    progress: &'a dyn Progress,
    vector_schema: &'a str,
}

impl Backfill<'_> {
    fn shadow(&self) -> VectorColumn<'_> {
        VectorColumn { table: self.table, spec: self.spec, vector_schema: self.vector_schema }
    }
}

impl Backfill<'_> {
    fn key_types(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|k| self.table.columns.iter().find(|c| &c.name == k).map_or("text".into(), |c| c.type_name.clone()))
            .collect()
    }

    /// One walk over the table in key order from `from`, embedding rows whose shadow
    /// is empty. Each batch commits with its checkpoint. Returns the rows embedded.
    async fn pass(&self, mut from: Option<Vec<String>>) -> Result<u64> {
        let name = self.table.display_name();
        let (table, shadow) = (self.table.qualified(), quote_ident(&self.spec.column));
        let keys: Vec<String> = self.key.iter().map(|k| quote_ident(k)).collect();
        let key_text: Vec<String> = keys.iter().map(|k| format!("{k}::text")).collect();
        let types = self.key_types();
        let bound: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("${}::text::{t}", i + 1)).collect();
        let mut total = 0;
        loop {
            let after = if from.is_some() { format!(" AND ({}) > ({})", keys.join(", "), bound.join(", ")) } else { String::new() };
            let select = format!(
                "SELECT ctid::text, ({text})::text, ARRAY[{}] FROM ONLY {table} WHERE {shadow} IS NULL AND {has_text}{after} \
                 ORDER BY {} LIMIT {}",
                key_text.join(", "),
                keys.join(", "),
                self.batch,
                text = self.spec.text,
                has_text = has_text_sql(self.spec)
            );
            let params: Vec<&(dyn ToSql + Sync)> = from.iter().flatten().map(|v| v as &(dyn ToSql + Sync)).collect();
            let rows = self.client.query(&select, &params).await.context(&self.client.endpoint(), || format!("read {table}"))?;
            let Some(last) = rows.last() else { return Ok(total) };
            let next: Vec<String> = last.get(2);
            let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let texts: Vec<Option<String>> = rows.iter().map(|r| r.get(1)).collect();
            let written = self.store(&ids, &texts, &next).await?;
            total += written;
            self.progress.step(&format!("{name}: {total} rows re-embedded in this pass"));
            from = Some(next);
        }
    }

    /// Writes the vectors of `texts` into the shadow column of rows `ids` whose text is
    /// still the one embedded (a row changed meanwhile waits for the next pass), with
    /// the checkpoint in the same transaction.
    async fn store(&self, ids: &[String], texts: &[Option<String>], checkpoint: &[String]) -> Result<u64> {
        let store = Store::new(self.client);
        let cache = Cache { store };
        let vectors: Vec<Option<String>> = vectors_for(self.pool, &cache, self.spec, texts)
            .await?
            .into_iter()
            .map(vector_literal)
            .collect();
        let plain: Vec<String> = texts.iter().map(|t| t.clone().unwrap_or_default()).collect();
        let unchanged = format!("({})::text = ($3::text[])[array_position($1::text[]::tid[], ctid)]", self.spec.text);
        let update = self.shadow().store_by_ctid_sql(Some(&unchanged));
        let write = async {
            let written = self.client.execute(&update, &[&ids, &vectors, &plain]).await.context(&self.client.endpoint(), || "store vectors".into())?;
            store.checkpoint_reembed(&self.table.display_name(), self.column, checkpoint, written).await?;
            Ok::<_, Error>(written)
        };
        pgshift_postgres::conn::in_transaction(self.client, "a backfill batch", write).await
    }
}

/// The swap: writers wait (readers do not) while the last changed rows get their
/// vectors, then column and index names change and the old ones go, in one transaction.
async fn swap(b: &Backfill<'_>, n: &Names, spec: &EmbeddingSpec, old_exists: bool, lock_timeout_ms: u64) -> Result<Option<String>> {
    let (client, endpoint) = (b.client, b.client.endpoint());
    let work = async {
        client
            .batch_execute(&format!("SET LOCAL lock_timeout = {lock_timeout_ms}; LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", n.table))
            .await
            .context(&endpoint, || format!("lock {} for the swap (writers were busy for longer than the lock timeout: try again)", n.table))?;
        // Rows changed since the last pass; no writer can change them again under the lock.
        embed_catchup::embed_pending(client, b.pool, b.shadow()).await?;
        // The index of the old column keeps its name for the new one.
        let old_index: Option<String> = if old_exists {
            client
                .query_opt(
                    "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_attribute a \
                     ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::text::regclass AND a.attname = $2 \
                     AND c.relname <> $3 ORDER BY c.oid LIMIT 1",
                    &[&n.table, &spec.column, &n.new_index],
                )
                .await
                .context(&endpoint, || "find the old column's index".into())?
                .map(|r| r.get(0))
        } else {
            None
        };
        let schema = quote_ident(&b.table.schema);
        let mut sql = Vec::new();
        if old_exists {
            sql.push(format!("ALTER TABLE {} DROP COLUMN {}", n.table, n.column));
        }
        sql.push(format!("ALTER TABLE {} RENAME COLUMN {} TO {}", n.table, n.shadow, n.column));
        sql.extend(embed_catchup::drop_trigger_ddl(b.table, b.spec, Keeper::CatchUp));
        let final_index = if spec.index == VectorIndex::None {
            None
        } else {
            let name = old_index.unwrap_or_else(|| crate::embed::vector_index::index_name(&b.table.name, spec));
            sql.push(format!("ALTER INDEX {schema}.{} RENAME TO {}", quote_ident(&n.new_index), quote_ident(&name)));
            Some(name)
        };
        for s in &sql {
            client.batch_execute(s).await.context(&endpoint, || s.clone())?;
        }
        Ok::<_, Error>(final_index)
    };
    pgshift_postgres::conn::in_transaction(client, "the swap", work).await
}
