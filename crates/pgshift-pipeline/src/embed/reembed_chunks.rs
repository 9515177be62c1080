//! `pgshift reembed` of a chunk table (pgshift's own kind): every text cut and
//! embedded again with the spec's model into a shadow chunk table, kept current by a
//! trigger on the parent while it fills, indexed, then swapped for the old chunk table
//! in one short transaction. Readers search the old chunks until the swap commits and
//! the new ones after: never a mix of two models' vectors in one index.
//!
//! The fill is the queue vectorize uses: every parent row with text is queued for the
//! shadow table, and rounds pop rows, make their chunks and commit, so a killed
//! re-embed resumes where it was (rows without chunks in the shadow are queued again).

use std::sync::Arc;
use std::time::Instant;

use pgshift_postgres::catalog::Table;
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::quote_ident;
use pgshift_postgres::Session;

use super::chunks::{self, ChunkTable, Cutter};
use super::reembed::{ReembedOptions, ReembedReport};
use super::{EmbedPool, Keeper};
use crate::error::{Error, Result};
use crate::plan::embedding::{ChunkSpec, EmbeddingSpec};
use crate::progress::Progress;
use crate::run::store::Store;

/// Re-embeds the chunk table of `spec` (whose `chunks` names it) for `parent`.
pub async fn reembed_chunks(
    client: &Session,
    parent: &Table,
    spec: &EmbeddingSpec,
    options: &ReembedOptions,
    mut report: ReembedReport,
    (vector_schema, progress, started): (&str, std::sync::Arc<dyn Progress>, Instant),
) -> Result<ReembedReport> {
    let endpoint = client.endpoint();
    let old = ChunkTable::of(parent, spec).expect("a chunk spec");
    if old.application().is_some() {
        return Err(Error::Setting(format!(
            "reembed: {} is the application's own chunk table: re-embedding it is not supported yet (its rows are the application's to replace)",
            old.qualified()
        )));
    }
    let (schema, name) = old.schema_and_name();
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&old.qualified()])
        .await
        .context(&endpoint, || "look for the chunk table".into())?
        .get(0);
    if !exists {
        return Err(Error::Setting(format!("reembed: {endpoint} has no chunk table {schema}.{name}: make it with migrate or vectorize first")));
    }
    let shadow_name = pgshift_postgres::sql::name_tail(&format!("{name}__pgshift_new"));
    let shadow_chunks = ChunkSpec { table: format!("{schema}.{shadow_name}"), ..spec.chunks.clone().expect("a chunk spec") };
    let shadow_spec = EmbeddingSpec { chunks: Some(shadow_chunks), ..spec.clone() };
    let shadow = ChunkTable::of(parent, &shadow_spec).expect("a chunk spec");
    let index = super::vector_index::index_name(&shadow_name, spec);
    let mut setup: Vec<String> = vec![shadow.create_sql(vector_schema).replacen("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)];
    setup.extend(shadow.stale_ddl(Keeper::Reembed));
    setup.push(shadow.queue_missing_sql());
    report.mode = "swap".into();
    report.steps = setup.clone();
    report.steps.push(format!("make the chunks of every queued row of {} in {} (200 rows a transaction)", parent.qualified(), shadow.qualified()));
    report.steps.extend(shadow.post_data().into_iter().map(|s| s.sql));
    report.steps.extend(spec.index_sql(&shadow.qualified(), &index, true, vector_schema));
    report.steps.push(format!(
        "one transaction: lock {} against writes, make the chunks still queued, drop {}, rename {} to {name} (and its keys and index)",
        parent.qualified(),
        old.qualified(),
        shadow.qualified()
    ));
    if options.dry_run {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let store = Store::new(client);
    store.ensure_schema().await?;
    store.start_reembed(&report.table, spec, &report.model).await?;
    for sql in &setup {
        client.batch_execute(sql).await.context(&endpoint, || sql.clone())?;
    }
    let pool = EmbedPool::start(options.setup.embedder.clone(), options.setup.threads, options.setup.batch_size);
    let cutter = Arc::new(Cutter::new(&pool, shadow.chunks));
    loop {
        client.batch_execute("BEGIN").await.context(&endpoint, || "begin".into())?;
        let n = chunks::embed_round(client, &pool, &shadow, &cutter, vector_schema).await?;
        client.batch_execute("COMMIT").await.context(&endpoint, || "commit the chunks".into())?;
        if n == 0 {
            break;
        }
        report.rows_embedded += n;
        progress.step(&format!("{}: {} rows cut and embedded again", report.table, report.rows_embedded));
    }
    report.passes = 1;
    for step in shadow.post_data() {
        // A resumed re-embed may have added them already.
        if let Err(e) = client.batch_execute(&step.sql).await {
            if !matches!(e.code().map(|c| c.code()), Some("42P07" | "42710" | "42P16")) {
                return Err(pgshift_postgres::error::query_error(&e, &endpoint, step.sql.clone()).into());
            }
        }
    }
    if let Some(sql) = spec.index_sql(&shadow.qualified(), &index, true, vector_schema) {
        progress.step(&format!("{}: building {index} CONCURRENTLY", report.table));
        client.batch_execute(&sql).await.context(&endpoint, || sql.clone())?;
    }
    let swap_started = Instant::now();
    let lock_timeout = options.lock_timeout_ms;
    let final_index = super::vector_index::index_name(name, spec);
    let work = async {
        client
            .batch_execute(&format!("SET LOCAL lock_timeout = {lock_timeout}; LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", parent.qualified()))
            .await
            .context(&endpoint, || format!("lock {} for the swap (writers were busy for longer than the lock timeout: try again)", parent.qualified()))?;
        chunks::embed_pending(client, &pool, &shadow, &cutter, vector_schema).await?;
        let mut sql = shadow.drop_stale_ddl(Keeper::Reembed);
        sql.push(format!("DROP TABLE {}", old.qualified()));
        sql.push(format!("ALTER TABLE {} RENAME TO {}", shadow.qualified(), quote_ident(name)));
        // Keys and index take the names the old table's had (made from its name).
        for what in ["pkey", "parent_fkey"] {
            let (from, to) = (pgshift_postgres::sql::name_tail(&format!("{shadow_name}_{what}")), pgshift_postgres::sql::name_tail(&format!("{name}_{what}")));
            sql.push(format!("ALTER TABLE {} RENAME CONSTRAINT {} TO {}", old.qualified(), quote_ident(&from), quote_ident(&to)));
        }
        if spec.index_sql(&shadow.qualified(), &index, true, vector_schema).is_some() {
            sql.push(format!("ALTER INDEX {}.{} RENAME TO {}", quote_ident(schema), quote_ident(&index), quote_ident(&final_index)));
        }
        for s in &sql {
            client.batch_execute(s).await.context(&endpoint, || s.clone())?;
        }
        Ok::<_, Error>(())
    };
    pgshift_postgres::conn::in_transaction(client, "the swap", work).await?;
    report.swap_ms = swap_started.elapsed().as_secs_f64() * 1000.0;
    report.index = (spec.index != crate::plan::embedding::VectorIndex::None).then(|| final_index.clone());
    store.finish_reembed(&report.table, &spec.column).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
