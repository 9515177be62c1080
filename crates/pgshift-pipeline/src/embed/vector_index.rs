//! Vector indexes (HNSW, IVFFlat) after the load, one at a time with the whole
//! server: maintenance_work_mem sized from the rows and dimensions so the graph fits
//! (never above `--vector-index-memory`), parallel workers as PostgreSQL would plan
//! them for the table's size within the server's `max_parallel_workers` (the
//! server's core count is not visible over SQL; that setting is what its DBA says it
//! has), and progress read from pg_stat_progress_create_index.

use std::sync::Arc;
use std::time::Duration;

use pgshift_postgres::error::Context;
use pgshift_postgres::sql::quote_ident;
use pgshift_postgres::ConnInfo;

use crate::error::Result;
use crate::plan::embedding::{EmbeddingSpec, VectorIndex};
use crate::progress::Progress;

pub struct VectorIndexOptions {
    /// The ceiling for maintenance_work_mem, in MiB.
    pub max_memory_mb: u64,
    /// The most parallel workers pgshift asks for (`--jobs`).
    pub max_workers: usize,
    /// Where pgvector's operator classes are.
    pub vector_schema: String,
}

/// Index name: `<table>_<column>_<method>_idx`, cut to PostgreSQL's 63 bytes.
pub fn index_name(table: &str, spec: &EmbeddingSpec) -> String {
    let method = if spec.index == VectorIndex::IvfFlat { "ivfflat" } else { "hnsw" };
    pgshift_postgres::sql::name_tail(&format!("{table}_{}_{method}_idx", spec.column))
}

/// Memory an HNSW build wants to keep its graph in memory: per row the vector, the
/// layer-0 neighbour list (2 x m = 32 item pointers) and bookkeeping (pgvector's
/// element header), plus a margin.
pub fn hnsw_memory_mb(rows: u64, dims: usize, halfvec: bool) -> u64 {
    let per_row = dims as u64 * if halfvec { 2 } else { 4 } + 32 * 8 + 96;
    (rows * per_row * 5 / 4).div_ceil(1024 * 1024)
}

/// pgvector's advice for IVFFlat: rows / 1000 lists up to a million rows, sqrt(rows) beyond.
pub fn ivfflat_lists(rows: u64) -> u64 {
    if rows <= 1_000_000 {
        (rows / 1000).max(1)
    } else {
        (rows as f64).sqrt() as u64
    }
}

/// PostgreSQL's default maintenance_work_mem: never asked for less.
const MIN_MEMORY_MB: u64 = 64;

/// The parallel workers PostgreSQL plans for an index build on a heap of `heap_pages`
/// (its compute_parallel_worker rule: none below `min_parallel_table_scan_size`,
/// then one more each time the table triples), within `cap`.
pub fn parallel_workers(heap_pages: i64, min_scan_pages: i64, cap: i64) -> i64 {
    let min_scan_pages = min_scan_pages.max(1);
    if heap_pages < min_scan_pages || cap <= 0 {
        return 0;
    }
    let (mut workers, mut threshold) = (1, min_scan_pages);
    while heap_pages >= threshold.saturating_mul(3) && workers < cap {
        workers += 1;
        threshold = threshold.saturating_mul(3);
    }
    workers.min(cap)
}

/// A table whose vector column gets an index.
pub struct IndexTarget<'a> {
    pub schema: &'a str,
    pub name: &'a str,
    pub spec: &'a EmbeddingSpec,
    /// The index's name; default [`index_name`].
    pub index: Option<&'a str>,
}

/// Builds each table's vector index; returns warnings (e.g. memory too small).
pub async fn build(
    target: &ConnInfo,
    work: &[IndexTarget<'_>],
    options: &VectorIndexOptions,
    progress: Arc<dyn Progress>,
) -> Result<Vec<String>> {
    let endpoint = target.endpoint().to_string();
    let mut warnings = Vec::new();
    if work.iter().all(|w| w.spec.index == VectorIndex::None) {
        return Ok(warnings);
    }
    let client = target.session().await?;
    for w in work {
        let (spec, display) = (w.spec, format!("{}.{}", w.schema, w.name));
        let name = w.index.map_or_else(|| index_name(w.name, spec), str::to_string);
        let qualified = format!("{}.{}", quote_ident(w.schema), quote_ident(w.name));
        let Some(mut sql) = spec.index_sql(&qualified, &name, false, &options.vector_schema) else { continue };
        client.batch_execute(&format!("ANALYZE {qualified}")).await.context(&endpoint, || format!("analyze {qualified}"))?;
        let row = client
            .query_one(
                "SELECT greatest(reltuples, 0)::int8, pg_relation_size(oid) / current_setting('block_size')::int8, \
                 pg_size_bytes(current_setting('min_parallel_table_scan_size')) / current_setting('block_size')::int8, \
                 current_setting('max_parallel_workers')::int8 FROM pg_class WHERE oid = $1::text::regclass",
                &[&qualified],
            )
            .await
            .context(&endpoint, || format!("size of {qualified}"))?;
        let (rows, pages, min_scan_pages, server_workers): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        if spec.index == VectorIndex::IvfFlat {
            sql.push_str(&format!(" WITH (lists = {})", ivfflat_lists(rows as u64)));
        }
        let wanted = hnsw_memory_mb(rows as u64, spec.dims, spec.halfvec);
        let memory = wanted.clamp(MIN_MEMORY_MB, options.max_memory_mb.max(MIN_MEMORY_MB));
        if spec.index == VectorIndex::Hnsw && wanted > memory {
            warnings.push(format!(
                "the HNSW graph of {} (~{rows} rows) wants about {wanted} MB of maintenance_work_mem, more than the \
                 {memory} MB allowed (--vector-index-memory): the build is slower once the graph no longer fits",
                display
            ));
        }
        let workers = parallel_workers(pages, min_scan_pages, server_workers.min(options.max_workers as i64));
        client
            .batch_execute(&format!("SET maintenance_work_mem = '{memory}MB'; SET max_parallel_maintenance_workers = {workers}"))
            .await
            .context(&endpoint, || "configure the vector index session".into())?;
        progress.step(&format!("{display}: building {name} ({memory} MB, {workers} parallel workers)"));
        let watcher = tokio::spawn(watch(target.clone(), qualified.clone(), name.clone(), progress.clone()));
        let result = client.batch_execute(&sql).await.context(&endpoint, || sql.clone());
        watcher.abort();
        result?;
        progress.index_progress(&name, 1, 1);
        crate::metrics::INDEX_STEPS_DONE.inc();
    }
    Ok(warnings)
}

/// Polls the build's progress view until aborted.
async fn watch(target: ConnInfo, table: String, name: String, progress: Arc<dyn Progress>) {
    let Ok(client) = target.session().await else { return };
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let row = client
            .query_opt(
                "SELECT tuples_done, tuples_total, blocks_done, blocks_total FROM pg_stat_progress_create_index \
                 WHERE relid = $1::text::regclass",
                &[&table],
            )
            .await;
        if let Ok(Some(row)) = row {
            let (tuples_done, tuples_total, blocks_done, blocks_total): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
            let (done, total) = if tuples_total > 0 { (tuples_done, tuples_total) } else { (blocks_done, blocks_total) };
            crate::metrics::VECTOR_INDEX_PROGRESS.set(if total > 0 { done as f64 / total as f64 } else { 0.0 });
            progress.index_progress(&name, done.max(0) as u64, total.max(0) as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hnsw_memory_grows_with_rows_and_dims() {
        // 100k x 384 float4: ~1.5 KB of vector + ~350 B of graph per row.
        assert_eq!(hnsw_memory_mb(100_000, 384, false), 226);
        assert!(hnsw_memory_mb(100_000, 384, true) < hnsw_memory_mb(100_000, 384, false));
        assert_eq!(hnsw_memory_mb(0, 384, false), 0);
        assert_eq!((ivfflat_lists(500), ivfflat_lists(200_000), ivfflat_lists(4_000_000)), (1, 200, 2000));
    }

    #[test]
    fn workers_follow_the_table_size_and_the_server() {
        // 8 MB = 1024 pages is PostgreSQL's default min_parallel_table_scan_size.
        assert_eq!(parallel_workers(90, 1024, 8), 0, "a 700 KB table builds alone");
        assert_eq!(parallel_workers(1024, 1024, 8), 1);
        assert_eq!(parallel_workers(3 * 1024, 1024, 8), 2);
        assert_eq!(parallel_workers(81 * 1024, 1024, 8), 5);
        assert_eq!(parallel_workers(10_000_000, 1024, 2), 2, "never more than the server allows");
        assert_eq!(parallel_workers(10_000_000, 1024, 0), 0);
    }
}
