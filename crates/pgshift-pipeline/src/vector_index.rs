//! Vector indexes (HNSW, IVFFlat) after the load, one at a time with the whole
//! machine: maintenance_work_mem sized so the graph fits, parallel workers, and
//! progress read from pg_stat_progress_create_index.

use std::sync::Arc;
use std::time::Duration;

use pgshift_postgres::catalog::Table;
use pgshift_postgres::error::Context;
use pgshift_postgres::sql::quote_ident;
use pgshift_postgres::ConnInfo;

use crate::embedding::{EmbeddingSpec, VectorIndex};
use crate::error::Result;
use crate::progress::Progress;

pub struct VectorIndexOptions {
    /// The floor (the post-data setting) and the ceiling for maintenance_work_mem, in MiB.
    pub min_memory_mb: u64,
    pub max_memory_mb: u64,
    pub parallel_workers: usize,
    /// Where pgvector's operator classes are.
    pub vector_schema: String,
}

/// Index name: `<table>_<column>_<method>_idx`, cut to PostgreSQL's 63 bytes.
pub fn index_name(table: &str, spec: &EmbeddingSpec) -> String {
    let method = if spec.index == VectorIndex::IvfFlat { "ivfflat" } else { "hnsw" };
    let mut name = format!("{table}_{}_{method}_idx", spec.column);
    while name.len() > 63 {
        name.remove(0);
    }
    name
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

/// A table whose vector column gets an index.
pub struct IndexTarget<'a> {
    pub schema: &'a str,
    pub name: &'a str,
    pub spec: &'a EmbeddingSpec,
}

impl<'a> IndexTarget<'a> {
    pub fn of(t: &'a Table, spec: &'a EmbeddingSpec) -> IndexTarget<'a> {
        IndexTarget { schema: &t.schema, name: &t.name, spec }
    }
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
    let client = target.connect().await?;
    for w in work {
        let (spec, display) = (w.spec, format!("{}.{}", w.schema, w.name));
        let name = index_name(w.name, spec);
        let qualified = format!("{}.{}", quote_ident(w.schema), quote_ident(w.name));
        let Some(mut sql) = spec.index_sql(&qualified, &name, false, &options.vector_schema) else { continue };
        client.batch_execute(&format!("ANALYZE {qualified}")).await.context(&endpoint, || format!("analyze {qualified}"))?;
        let rows: i64 = client
            .query_one("SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = $1::text::regclass", &[&qualified])
            .await
            .context(&endpoint, || format!("size of {qualified}"))?
            .get(0);
        if spec.index == VectorIndex::IvfFlat {
            sql.push_str(&format!(" WITH (lists = {})", ivfflat_lists(rows as u64)));
        }
        let wanted = hnsw_memory_mb(rows as u64, spec.dims, spec.halfvec);
        let memory = wanted.clamp(options.min_memory_mb, options.max_memory_mb.max(options.min_memory_mb));
        if spec.index == VectorIndex::Hnsw && wanted > memory {
            warnings.push(format!(
                "the HNSW graph of {} (~{rows} rows) wants about {wanted} MB of maintenance_work_mem, more than the \
                 {memory} MB allowed (--vector-index-memory): the build is slower once the graph no longer fits",
                display
            ));
        }
        client
            .batch_execute(&format!(
                "SET maintenance_work_mem = '{memory}MB'; SET max_parallel_maintenance_workers = {}",
                options.parallel_workers
            ))
            .await
            .context(&endpoint, || "configure the vector index session".into())?;
        progress.step(&format!("{display}: building {name} ({memory} MB, {} workers)", options.parallel_workers));
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
    let Ok(client) = target.connect().await else { return };
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
}
