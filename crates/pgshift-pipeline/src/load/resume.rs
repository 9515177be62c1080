//! Which chunks a run still copies, and how. A fresh run copies every chunk into
//! empty tables. A resumed run (some chunk done, or no snapshot shared with the
//! first attempt) copies only unfinished chunks, each clearing its key range first;
//! a table split by block ranges is copied whole again when partly done, because
//! updates move rows between blocks (see docs/ARCHITECTURE.md, "Resuming is correct").

use pgshift_postgres::conn::in_transaction;
use pgshift_postgres::error::Context;

use crate::error::Result;
use crate::plan::chunks::SplitKind;
use crate::run::Run;
use crate::run::store::{ChunkState, ChunkWork, CopyTable, Store};
use crate::source::{LoadPlan, LoadSource};

/// What to do with one table's chunks.
#[derive(Debug, PartialEq, Eq)]
pub struct TableResume {
    /// Empty the table (and forget its checkpoints) before copying.
    pub truncate: bool,
    /// Chunks to copy, each with whether to clear its range first.
    pub todo: Vec<(i32, bool)>,
}

/// For one table's recorded chunks: what is left. `resumed`: chunks may have been
/// read under another snapshot than the one now in use.
///
/// A resumed key-range chunk clears its range. A block (ctid) range means nothing on
/// the target, whose rows sit in other blocks, so a resumed ctid-split table is never
/// cleared by range: with some chunks done it is emptied and copied whole, otherwise
/// it is still empty and its chunks just run.
pub fn resume_table(chunks: &[&ChunkState], resumed: bool) -> TableResume {
    let pending = chunks.iter().filter(|c| !c.done).count();
    if pending == 0 {
        return TableResume { truncate: false, todo: Vec::new() };
    }
    if resumed && chunks[0].split == SplitKind::Ctid {
        return TableResume { truncate: pending < chunks.len(), todo: chunks.iter().map(|c| (c.chunk_no, false)).collect() };
    }
    TableResume { truncate: false, todo: chunks.iter().filter(|c| !c.done).map(|c| (c.chunk_no, resumed)).collect() }
}

/// Opens the run's copy to workers (this process's and `pgshift worker`s): the
/// chunks still to copy, tables in the plan's order (largest first), each with the
/// statement that reads it and whether it clears its range first. Returns how many.
pub async fn open_copy<S: LoadSource>(store: &Store<'_>, run: &Run, plan: &LoadPlan<S::Table>, source: &S, snapshot: Option<&str>) -> Result<usize> {
    let states = store.chunks(run.run_id).await?;
    let resumed = states.iter().any(|c| c.done) || snapshot.is_none();
    let (mut tables, mut work) = (Vec::new(), Vec::new());
    for table in &plan.tables {
        let mine: Vec<&ChunkState> = states.iter().filter(|c| c.table_name == table.name).collect();
        let what = resume_table(&mine, resumed);
        if what.truncate {
            let client = store.connection();
            let endpoint = client.endpoint();
            // A chunk table goes with its parent (no foreign key joins them during the load).
            let sql = match &table.chunk_table {
                Some(chunks) => format!("TRUNCATE ONLY {}; {}", table.target, chunks.clear_sql(None)),
                None => format!("TRUNCATE ONLY {}", table.target),
            };
            let work = async {
                client.batch_execute(&sql).await.context(&endpoint, || format!("clear {} for a whole re-copy", table.name))?;
                store.reset_table_chunks(run.run_id, &table.name).await
            };
            in_transaction(client, &format!("the re-copy of {}", table.name), work).await?;
        }
        tables.push(CopyTable {
            table_name: table.name.clone(),
            target: table.target.clone(),
            copy_in: table.copy_in.clone(),
            embedding: table.embedding.clone(),
            chunk_table: table.chunk_table.clone(),
        });
        for (chunk_no, clear_first) in what.todo {
            let predicate = mine.iter().find(|c| c.chunk_no == chunk_no).and_then(|c| c.predicate.clone());
            let copy_out = source.copy_out(table, predicate.as_deref());
            work.push(ChunkWork { table_name: table.name.clone(), chunk_no, copy_out, clear_first });
        }
    }
    store.open_copy(run.run_id, snapshot, &tables, &work).await?;
    Ok(work.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(no: i32, split: SplitKind, done: bool) -> ChunkState {
        let predicate = Some(format!("range {no}"));
        ChunkState { table_name: "public.t".into(), chunk_no: no, split, predicate, done }
    }

    fn resume(chunks: &[ChunkState], resumed: bool) -> (bool, Vec<(i32, bool)>) {
        let refs: Vec<&ChunkState> = chunks.iter().collect();
        let r = resume_table(&refs, resumed);
        (r.truncate, r.todo)
    }

    #[test]
    fn a_fresh_run_copies_every_chunk_without_clearing() {
        let chunks = [chunk(0, SplitKind::Ctid, false), chunk(1, SplitKind::Ctid, false)];
        assert_eq!(resume(&chunks, false), (false, vec![(0, false), (1, false)]));
    }

    #[test]
    fn resumed_key_ranges_clear_and_recopy_only_unfinished_chunks() {
        let chunks = [chunk(0, SplitKind::IntKey, true), chunk(1, SplitKind::IntKey, false), chunk(2, SplitKind::IntKey, false)];
        assert_eq!(resume(&chunks, true), (false, vec![(1, true), (2, true)]));
    }

    #[test]
    fn resumed_block_ranges_are_never_cleared_by_range() {
        // Partly done: empty the table, copy it whole.
        let chunks = [chunk(0, SplitKind::Ctid, true), chunk(1, SplitKind::Ctid, false)];
        assert_eq!(resume(&chunks, true), (true, vec![(0, false), (1, false)]));
        // Not started: a DELETE by block range would hit rows another chunk just wrote.
        let chunks = [chunk(0, SplitKind::Ctid, false), chunk(1, SplitKind::Ctid, false)];
        assert_eq!(resume(&chunks, true), (false, vec![(0, false), (1, false)]));
    }

    #[test]
    fn a_finished_table_has_nothing_to_do() {
        let chunks = [chunk(0, SplitKind::Whole, true)];
        assert_eq!(resume(&chunks, true), (false, vec![]));
    }
}
