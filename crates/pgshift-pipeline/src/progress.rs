//! How stages report what they do. The CLI draws bars on a terminal and plain log
//! lines elsewhere; tests use [`Silent`].

use std::time::Duration;

use crate::metrics::Stage;

pub trait Progress: Send + Sync {
    fn phase(&self, _stage: Stage) {}
    /// A table's copy begins; its size on the source sizes its bar.
    fn table_started(&self, _table: &str, _size_bytes: u64) {}
    /// More bytes of a table went through.
    fn table_bytes(&self, _table: &str, _delta: u64) {}
    fn table_done(&self, _table: &str, _rows: u64, _bytes: u64, _elapsed: Duration) {}
    fn step(&self, _message: &str) {}
    /// A vector index build: `done` of `total` tuples (or blocks).
    fn index_progress(&self, _index: &str, _done: u64, _total: u64) {}
}

pub struct Silent;
impl Progress for Silent {}

/// A reporter whose messages say which source they are about (several sources at
/// once: `consolidate`). Tables keep their names; steps and phases get the prefix.
pub struct OfSource {
    pub inner: std::sync::Arc<dyn Progress>,
    pub source: String,
}

impl Progress for OfSource {
    fn phase(&self, stage: Stage) {
        self.inner.step(&format!("{}: phase {stage}", self.source));
    }
    fn table_started(&self, table: &str, size_bytes: u64) {
        self.inner.table_started(table, size_bytes)
    }
    fn table_bytes(&self, table: &str, delta: u64) {
        self.inner.table_bytes(table, delta)
    }
    fn table_done(&self, table: &str, rows: u64, bytes: u64, elapsed: Duration) {
        self.inner.table_done(table, rows, bytes, elapsed)
    }
    fn step(&self, message: &str) {
        self.inner.step(&format!("{}: {message}", self.source))
    }
    fn index_progress(&self, index: &str, done: u64, total: u64) {
        self.inner.index_progress(index, done, total)
    }
}

/// Enters a phase: tells the reporter and the `pgshift_phase` metric.
pub fn enter(progress: &dyn Progress, stage: Stage) {
    crate::metrics::set_phase(stage);
    progress.phase(stage);
}
