//! Applies decoded changes to the target in batches: per table, the net effect of a
//! batch goes in with a few set-based statements (plain COPY for new rows; a staging
//! table joined for updates and deletes), not row by row. Every target transaction
//! advances a replication origin, which makes the apply exactly-once across restarts.
//!
//! A set-based statement applies its rows in no particular order, so on a table with
//! unique or exclusion constraints besides its key it can collide where the source's
//! order did not (two rows swapping a value through a temporary one). Such tables'
//! batches run under a savepoint and keep their changes in source order too; when a
//! batch fails with a constraint violation it is rolled back to the savepoint and
//! applied change by change in source order, in the same transaction (so
//! exactly-once holds). The next batch takes the fast path again. A change that
//! fails in source order too is a real conflict: the error names the table, the
//! change and its key.
//!
//! The [`Applier`] gathers a batch; its [`Writer`] owns the target session and
//! writes. A batch that ends on a commit can be written and committed in the
//! background ([`Applier::commit_in_background`]) while the next one gathers, so the
//! target works while pgshift decodes; anything that must write waits for it first.

mod encode;
mod net;
mod table;

use std::collections::{HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use futures_util::{pin_mut, SinkExt};
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::copy::CopyFormat;
use crate::error::{Context, PgError};
use crate::lsn::Lsn;
use crate::pgoutput::{OldKind, Relation, Tuple};
use crate::sql::quote_literal;
use encode::{put_row, Field, BINARY_HEADER, BINARY_TRAILER};
use net::{Key, Net, NetChanges};
pub use table::ApplyTable;
use table::RowParam;

/// Changes to a table without a key, kept in order and applied one by one.
enum RowOp {
    Insert(Tuple),
    Update(Tuple, Tuple),
    Delete(Tuple),
}

/// A keyed table's changes in source order: what the fallback replays.
enum KeyedOp {
    Insert(Tuple),
    /// The key the row had, and its new values.
    Update(Key, Tuple),
    Delete(Key),
}

enum Pending {
    /// The net effect, and (for order-sensitive tables) the changes in source order.
    Keyed(NetChanges, Option<Vec<KeyedOp>>),
    Ordered(Vec<RowOp>),
}

/// A table's part of a batch as the writer gets it: a keyed table's net effect already
/// encoded (by the Applier, while the writer may still be busy with the batch before).
enum Batch {
    Keyed(EncodedKeyed, Option<Vec<KeyedOp>>),
    Ordered(Vec<RowOp>),
}

/// A keyed table's net effect for the target: rows for its staging table (with op and
/// mask), rows for a plain COPY (new keys), the set-based statements, and the counts.
struct EncodedKeyed {
    stage: BytesMut,
    direct: BytesMut,
    statements: Vec<String>,
    inserts: u64,
    updates: u64,
    deletes: u64,
}

/// A keyed table's net effect, encoded for [`Writer::flush_keyed`].
fn encode_keyed(table: &ApplyTable, format: CopyFormat, converge: bool, changes: NetChanges) -> Result<EncodedKeyed, PgError> {
    let (mut stage, mut direct) = (BytesMut::new(), BytesMut::new());
    let mut masks: Vec<String> = Vec::new();
    let (mut sets, mut patches, mut deletes, mut inserts) = (0u64, 0u64, 0u64, 0u64);
    // In key order: the target then walks its key index (and a heap loaded in key
    // order) in order instead of at random, and new keys append at the index's right
    // edge. Measured: the random-key mix's set-based updates took a third less time.
    let mut states: Vec<(Key, Net)> = changes.states.into_iter().collect();
    states.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (key, net) in states {
        let (op, tuple, mask) = match net {
            Net::Absent => continue,
            Net::Insert(t) => {
                inserts += 1;
                put_row(&mut direct, format, &t.iter().map(Field::Datum).collect::<Vec<_>>()).map_err(|e| table.error(e))?;
                continue;
            }
            Net::Set(t) => {
                sets += 1;
                ("s", t, String::new())
            }
            Net::Patch(t) => {
                patches += 1;
                let mask = table.mask(&t);
                if !masks.contains(&mask) {
                    masks.push(mask.clone());
                }
                ("p", t, mask)
            }
            Net::Delete => {
                deletes += 1;
                ("d", table.key_row(&key, format), String::new())
            }
        };
        let mut fields: Vec<Field> = tuple.iter().map(Field::Datum).collect();
        fields.push(Field::Own(op));
        fields.push(Field::Own(&mask));
        put_row(&mut stage, format, &fields).map_err(|e| table.error(e))?;
    }
    let mut statements = Vec::new();
    if deletes > 0 {
        statements.push(Some(table.delete_sql()));
    }
    if sets > 0 {
        statements.push(if converge { table.upsert_sql() } else { table.set_sql() });
    }
    statements.extend(masks.iter().map(|m| table.patch_sql(m)));
    let statements: Vec<String> = statements.into_iter().flatten().collect();
    Ok(EncodedKeyed { stage, direct, statements, inserts, updates: sets + patches, deletes })
}

/// SQLSTATEs a set-based batch may hit where source order would not: unique and
/// exclusion violations, and foreign keys within a table when they are checked.
const ORDER_SENSITIVE_STATES: &[&str] = &["23505", "23P01", "23503"];

/// Counts of what one flush wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct Applied {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub truncates: u64,
    /// Batches re-applied in source order after a set-based statement collided.
    pub fallbacks: u64,
}

/// The target session: everything that writes. Owned by the [`Applier`], or by the
/// task that writes and commits a batch in the background.
struct Writer {
    client: crate::conn::Session,
    format: CopyFormat,
    /// The tables as the Applier knows them (kept in step: a new Relation waits for
    /// the writer first).
    tables: HashMap<u32, ApplyTable>,
    converge: bool,
    in_transaction: bool,
    staged: HashSet<u32>,
    staging_made: HashSet<u32>,
    applied: Applied,
}

enum Session {
    Ready(Box<Writer>),
    /// Writing (and committing) a batch; gives the writer back with the LSN committed,
    /// if it committed.
    Busy(JoinHandle<(Box<Writer>, Result<Option<Lsn>, PgError>)>),
    /// The background task failed and took the session with it.
    Lost,
}

pub struct Applier {
    session: Session,
    endpoint: String,
    format: CopyFormat,
    target: Catalog,
    tables: HashMap<u32, ApplyTable>,
    pending: HashMap<u32, Pending>,
    pending_rows: usize,
    converge: bool,
    /// Changes of different tables may be applied out of order only when the target
    /// fires no foreign-key triggers (session_replication_role = replica).
    reorder: bool,
    last_table: Option<u32>,
    /// A background commit finished at this source position (see [`Applier::take_committed`]).
    committed: Option<Lsn>,
    /// What the writer had applied when last seen.
    applied: Applied,
}

impl Applier {
    /// `origin` names the replication origin the target's transactions advance.
    /// Returns the applier and the origin's progress (where streaming should resume).
    pub async fn new(client: crate::conn::Session, format: CopyFormat, target: Catalog, origin: &str) -> Result<(Applier, Lsn), PgError> {
        let ep = client.endpoint().to_string();
        client
            .batch_execute(&format!(
                "SELECT pg_replication_origin_create({o}) WHERE NOT EXISTS \
                 (SELECT 1 FROM pg_replication_origin WHERE roname = {o}); \
                 SELECT pg_replication_origin_session_setup({o}); \
                 SET default_transaction_read_only = off",
                o = quote_literal(origin)
            ))
            .await
            .context(&ep, || format!("set up replication origin {origin} (needs superuser or EXECUTE on the pg_replication_origin_* functions)"))?;
        let progress: Option<String> = client
            .query_one("SELECT pg_replication_origin_progress($1, true)::text", &[&origin])
            .await
            .context(&ep, || "read the replication origin's progress".into())?
            .get(0);
        let reorder = client.batch_execute("SET session_replication_role = replica").await.is_ok();
        if !reorder {
            tracing::warn!("{ep}: cannot set session_replication_role = replica; changes are applied in source order per table switch (slower)");
        }
        let lsn = progress.and_then(|p| p.parse().ok()).unwrap_or_default();
        let writer = Writer {
            client,
            format,
            tables: HashMap::new(),
            converge: false,
            in_transaction: false,
            staged: HashSet::new(),
            staging_made: HashSet::new(),
            applied: Applied::default(),
        };
        let applier = Applier {
            session: Session::Ready(Box::new(writer)),
            endpoint: ep,
            format,
            target,
            tables: HashMap::new(),
            pending: HashMap::new(),
            pending_rows: 0,
            converge: false,
            reorder,
            last_table: None,
            committed: None,
            applied: Applied::default(),
        };
        Ok((applier, lsn))
    }

    /// The writer, once a background commit (if any) finished.
    async fn writer(&mut self) -> Result<&mut Writer, PgError> {
        self.settle().await?;
        match &mut self.session {
            Session::Ready(w) => Ok(w),
            _ => Err(PgError::Protocol { endpoint: self.endpoint.clone(), message: "the apply session was lost with a failed batch".into() }),
        }
    }

    /// Waits for a background commit; its position is then in [`Applier::take_committed`].
    pub async fn settle(&mut self) -> Result<(), PgError> {
        if !matches!(self.session, Session::Busy(_)) {
            return Ok(());
        }
        let Session::Busy(task) = std::mem::replace(&mut self.session, Session::Lost) else { unreachable!("checked") };
        let (writer, result) = task.await.map_err(|e| PgError::Protocol { endpoint: self.endpoint.clone(), message: format!("apply task: {e}") })?;
        self.applied = writer.applied;
        self.session = Session::Ready(writer);
        if let Some(lsn) = result? {
            self.committed = Some(lsn);
        }
        Ok(())
    }

    /// Settles a background commit only if it already finished.
    pub async fn settle_if_done(&mut self) -> Result<(), PgError> {
        match &self.session {
            Session::Busy(task) if task.is_finished() => self.settle().await,
            _ => Ok(()),
        }
    }

    /// Where the last background commit that finished left the target (once).
    pub fn take_committed(&mut self) -> Option<Lsn> {
        self.committed.take()
    }

    /// A background write or commit is on its way.
    pub fn committing(&self) -> bool {
        matches!(self.session, Session::Busy(_))
    }

    /// The target session, once nothing is being written in the background.
    pub async fn client(&mut self) -> Result<&crate::conn::Session, PgError> {
        Ok(&self.writer().await?.client)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What was applied, as of the last time the writer was here.
    pub fn applied(&self) -> Applied {
        match &self.session {
            Session::Ready(w) => w.applied,
            _ => self.applied,
        }
    }

    /// A target transaction is open (something was flushed and not yet committed).
    pub fn in_transaction(&self) -> bool {
        match &self.session {
            Session::Ready(w) => w.in_transaction,
            _ => true,
        }
    }

    /// Rows waiting in memory for the next flush.
    pub fn pending_rows(&self) -> usize {
        self.pending_rows
    }

    /// Idempotent apply (inserts as upserts) while the target may hold rows newer
    /// than the stream.
    pub async fn set_converge(&mut self, converge: bool) -> Result<(), PgError> {
        if converge != self.converge {
            self.flush().await?;
            self.converge = converge;
            self.writer().await?.converge = converge;
        }
        Ok(())
    }

    pub async fn relation(&mut self, rel: Relation) -> Result<(), PgError> {
        if self.tables.get(&rel.oid).is_some_and(|t| t.relation == rel) {
            return Ok(());
        }
        self.flush().await?;
        let table = ApplyTable::new(rel, &self.target)?;
        let oid = table.relation.oid;
        let writer = self.writer().await?;
        writer.staging_made.remove(&oid);
        writer.tables.insert(oid, table.clone());
        self.tables.insert(oid, table);
        Ok(())
    }
    fn table(&self, oid: u32) -> Result<&ApplyTable, PgError> {
        self.tables
            .get(&oid)
            .ok_or_else(|| PgError::Protocol { endpoint: self.endpoint.clone(), message: format!("change for relation {oid} before its Relation message") })
    }

    async fn pending_for(&mut self, oid: u32) -> Result<&mut Pending, PgError> {
        if !self.reorder && self.last_table.is_some_and(|t| t != oid) {
            self.flush().await?;
        }
        self.last_table = Some(oid);
        self.pending_rows += 1;
        let table = self.table(oid)?;
        let keyed = table.key.is_some();
        let converge = self.converge;
        if converge && !keyed {
            return Err(table.error(
                "has no key, and rows copied after a resumed load may already hold the changes now arriving, which \
                 cannot be told apart without a key: add a primary key (or REPLICA IDENTITY USING INDEX) on the source, \
                 then copy the table again"
                    .into(),
            ));
        }
        // Without the replica role, foreign keys are checked: any table may be order-sensitive.
        let ordered = table.order_sensitive || !self.reorder;
        Ok(self.pending.entry(oid).or_insert_with(|| match keyed {
            true => Pending::Keyed(NetChanges::new(converge), ordered.then(Vec::new)),
            false => Pending::Ordered(Vec::new()),
        }))
    }

    pub async fn insert(&mut self, oid: u32, new: Tuple) -> Result<(), PgError> {
        let key = self.table(oid)?.key_of(&new);
        match self.pending_for(oid).await? {
            Pending::Keyed(n, ops) => {
                if let Some(ops) = ops {
                    ops.push(KeyedOp::Insert(new.clone()));
                }
                n.insert(key.expect("keyed table"), new)
            }
            Pending::Ordered(ops) => ops.push(RowOp::Insert(new)),
        }
        Ok(())
    }

    pub async fn update(&mut self, oid: u32, old: Option<(OldKind, Tuple)>, new: Tuple) -> Result<(), PgError> {
        let table = self.table(oid)?;
        let new_key = table.key_of(&new);
        let old_key = old.as_ref().and_then(|(_, t)| table.key_of(t)).or_else(|| new_key.clone());
        let moved = match self.pending_for(oid).await? {
            Pending::Keyed(n, ops) => {
                if let Some(ops) = ops {
                    ops.push(KeyedOp::Update(old_key.clone().expect("keyed"), new.clone()));
                }
                n.update(old_key.clone().expect("keyed"), new_key.expect("keyed"), new).err()
            }
            Pending::Ordered(ops) => {
                let (_, old) = old.ok_or_else(|| PgError::Protocol {
                    endpoint: String::new(),
                    message: format!("update without old row for relation {oid}, which has no key"),
                })?;
                ops.push(RowOp::Update(old, new));
                None
            }
        };
        if let Some(new) = moved {
            // A key change whose unchanged TOAST values only the target knows.
            self.flush().await?;
            let statement = self.table(oid)?.move_row(old_key.expect("keyed"), &new, self.format);
            let writer = self.writer().await?;
            writer.exec_row(statement).await?;
            writer.applied.updates += 1;
        }
        Ok(())
    }

    pub async fn delete(&mut self, oid: u32, old: Tuple) -> Result<(), PgError> {
        let key = self.table(oid)?.key_of(&old);
        match self.pending_for(oid).await? {
            Pending::Keyed(n, ops) => {
                if let Some(ops) = ops {
                    ops.push(KeyedOp::Delete(key.clone().expect("keyed")));
                }
                n.delete(key.expect("keyed"))
            }
            Pending::Ordered(ops) => ops.push(RowOp::Delete(old)),
        }
        Ok(())
    }

    /// The target table a relation of the stream is applied to (`schema.table`, quoted).
    pub fn qualified(&self, relation: u32) -> Option<&str> {
        self.tables.get(&relation).map(|t| t.qualified.as_str())
    }

    pub async fn truncate(&mut self, oids: &[u32], cascade: bool, restart_identity: bool) -> Result<(), PgError> {
        let names: Vec<String> = oids.iter().map(|o| self.table(*o).map(|t| t.qualified.clone())).collect::<Result<_, _>>()?;
        let sql = format!(
            "TRUNCATE ONLY {}{}{}",
            names.join(", "),
            if restart_identity { " RESTART IDENTITY" } else { "" },
            if cascade { " CASCADE" } else { "" }
        );
        self.execute(&sql).await?;
        self.writer().await?.applied.truncates += names.len() as u64;
        Ok(())
    }

    /// Runs a statement (a truncate, a schema change) in the open target transaction,
    /// after everything pending.
    pub async fn execute(&mut self, sql: &str) -> Result<(), PgError> {
        self.flush().await?;
        let writer = self.writer().await?;
        writer.begin().await?;
        writer.client.batch_execute(sql).await.context(&writer.client.endpoint(), || sql.to_string())
    }

    /// The target's catalog after a schema change: tables are rebuilt from it at their
    /// next Relation message.
    pub fn set_target(&mut self, target: Catalog) {
        self.target = target;
    }

    /// Writes everything pending into the open target transaction.
    pub async fn flush(&mut self) -> Result<(), PgError> {
        let batches = self.take_batches()?;
        self.settle().await?;
        if batches.is_empty() {
            return Ok(());
        }
        self.writer().await?.write(batches).await
    }

    fn take_pending(&mut self) -> HashMap<u32, Pending> {
        self.pending_rows = 0;
        self.last_table = None;
        std::mem::take(&mut self.pending)
    }

    /// What is pending, encoded for the writer: done here, while the writer may still
    /// be busy with the batch before, so the target does not wait for the encoding.
    fn take_batches(&mut self) -> Result<Vec<(u32, Batch)>, PgError> {
        let pending = self.take_pending();
        let mut batches = Vec::with_capacity(pending.len());
        for (oid, p) in pending {
            batches.push((oid, match p {
                Pending::Keyed(changes, ops) => Batch::Keyed(encode_keyed(self.table(oid)?, self.format, self.converge, changes)?, ops),
                Pending::Ordered(ops) => Batch::Ordered(ops),
            }));
        }
        Ok(batches)
    }

    /// Flushes and commits, recording `end_lsn` as the origin's progress in the same
    /// transaction: the target holds a change exactly when the origin says so.
    pub async fn commit(&mut self, end_lsn: Lsn) -> Result<(), PgError> {
        self.flush().await?;
        self.writer().await?.commit(end_lsn).await
    }

    /// Like [`Applier::commit`], but written and committed by a task of its own
    /// while the caller gathers the next batch; [`Applier::take_committed`] tells when
    /// it is done. Anything else that writes waits for it first.
    pub async fn commit_in_background(&mut self, end_lsn: Lsn) -> Result<(), PgError> {
        self.in_background(Some(end_lsn)).await
    }

    /// Like [`Applier::flush`] (a large source transaction, written in parts), but
    /// written by a task of its own while the caller gathers the next part.
    pub async fn flush_in_background(&mut self) -> Result<(), PgError> {
        self.in_background(None).await
    }

    async fn in_background(&mut self, commit: Option<Lsn>) -> Result<(), PgError> {
        let batches = self.take_batches()?;
        self.settle().await?;
        let Session::Ready(mut writer) = std::mem::replace(&mut self.session, Session::Lost) else {
            return Err(PgError::Protocol { endpoint: self.endpoint.clone(), message: "the apply session was lost with a failed batch".into() });
        };
        self.session = Session::Busy(tokio::spawn(async move {
            let result = match (writer.write(batches).await, commit) {
                (Ok(()), Some(end_lsn)) => writer.commit(end_lsn).await.map(|()| Some(end_lsn)),
                (Ok(()), None) => Ok(None),
                (Err(e), _) => Err(e),
            };
            (writer, result)
        }));
        Ok(())
    }
}

impl Writer {
    async fn begin(&mut self) -> Result<(), PgError> {
        if !self.in_transaction {
            self.client.batch_execute("BEGIN").await.context(&self.client.endpoint(), || "begin apply transaction".into())?;
            self.in_transaction = true;
        }
        Ok(())
    }

    async fn write(&mut self, batches: Vec<(u32, Batch)>) -> Result<(), PgError> {
        if batches.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        for (oid, batch) in batches {
            match batch {
                Batch::Keyed(encoded, ops) => self.flush_keyed(oid, encoded, ops).await?,
                Batch::Ordered(ops) => self.flush_ordered(oid, ops).await?,
            }
        }
        Ok(())
    }

    async fn commit(&mut self, end_lsn: Lsn) -> Result<(), PgError> {
        if !self.in_transaction {
            return Ok(());
        }
        let sql = format!("SELECT pg_replication_origin_xact_setup('{end_lsn}', now()); COMMIT");
        self.client.batch_execute(&sql).await.context(&self.client.endpoint(), || format!("commit applied changes up to {end_lsn}"))?;
        self.in_transaction = false;
        self.staged.clear();
        Ok(())
    }

    async fn flush_keyed(&mut self, oid: u32, encoded: EncodedKeyed, ops: Option<Vec<KeyedOp>>) -> Result<(), PgError> {
        let EncodedKeyed { stage, direct, statements, inserts, updates, deletes } = encoded;
        let Some(ops) = ops else {
            self.write_keyed(oid, (stage, direct), &statements).await?;
            self.count(inserts, updates, deletes);
            return Ok(());
        };
        self.savepoint("SAVEPOINT pgshift_batch").await?;
        match self.write_keyed(oid, (stage, direct), &statements).await {
            Ok(()) => self.count(inserts, updates, deletes),
            Err(e) if e.sqlstate().is_some_and(|c| ORDER_SENSITIVE_STATES.contains(&c)) => {
                tracing::info!("{}: a set-based batch of {} collided ({}); applying it in source order", self.client.endpoint(), self.tables[&oid].qualified, e);
                self.savepoint("ROLLBACK TO SAVEPOINT pgshift_batch").await?;
                // The staging table may have been made, or filled, after the savepoint.
                self.staging_made.remove(&oid);
                self.staged.remove(&oid);
                self.replay(oid, ops).await?;
                self.applied.fallbacks += 1;
            }
            Err(e) => return Err(e),
        }
        self.savepoint("RELEASE SAVEPOINT pgshift_batch").await
    }

    fn count(&mut self, inserts: u64, updates: u64, deletes: u64) {
        self.applied.inserts += inserts;
        self.applied.updates += updates;
        self.applied.deletes += deletes;
    }

    async fn savepoint(&self, sql: &str) -> Result<(), PgError> {
        self.client.batch_execute(sql).await.context(&self.client.endpoint(), || sql.to_string())
    }

    /// The set-based statements of one keyed table's batch.
    async fn write_keyed(&mut self, oid: u32, (stage, direct): (BytesMut, BytesMut), statements: &[String]) -> Result<(), PgError> {
        let table = &self.tables[&oid];
        let (in_direct, in_stage) = (table.copy_in_sql(self.format), table.stage_copy_sql(self.format));
        if !stage.is_empty() {
            self.prepare_stage(oid).await?;
            self.copy_in(&in_stage, stage).await?;
            for sql in statements {
                self.client.batch_execute(sql).await.context(&self.client.endpoint(), || sql.clone())?;
            }
            self.staged.insert(oid);
        }
        if !direct.is_empty() {
            self.copy_in(&in_direct, direct).await?;
        }
        Ok(())
    }

    /// A keyed table's batch, change by change in source order. A change that fails
    /// here too is a real conflict with the target: the error says which.
    async fn replay(&mut self, oid: u32, ops: Vec<KeyedOp>) -> Result<(), PgError> {
        let (format, upsert) = (self.format, self.converge);
        let total = ops.len();
        for (n, op) in ops.into_iter().enumerate() {
            let table = &self.tables[&oid];
            let (what, key) = match &op {
                KeyedOp::Insert(t) => ("insert", table.key_of(t).expect("keyed")),
                KeyedOp::Update(k, _) => ("update", k.clone()),
                KeyedOp::Delete(k) => ("delete", k.clone()),
            };
            let result = match &op {
                KeyedOp::Insert(t) => self.exec_row(table.insert_row(t, format, upsert)).await.map(|_| ()),
                KeyedOp::Update(k, t) => match self.exec_row(table.move_row(k.clone(), t, format)).await {
                    // Catching up after a resumed load: a row the target does not have yet.
                    Ok(0) if upsert && !net::is_partial(t) => self.exec_row(table.insert_row(t, format, true)).await.map(|_| ()),
                    other => other.map(|_| ()),
                },
                KeyedOp::Delete(k) => self.exec_row(table.delete_by_key(k.clone(), format)).await.map(|_| ()),
            };
            if let Err(e) = result {
                let table = &self.tables[&oid];
                return Err(PgError::Query {
                    endpoint: self.client.endpoint().to_string(),
                    context: format!(
                        "table {}: the {what} of key {} (change {} of {total} in this batch) fails in the source's order too, so the \
                         target holds something the source does not (a row, constraint or trigger of its own): compare them \
                         (pgshift inspect --target, pgshift verify), fix the target, and run pgshift follow again, which resumes \
                         at the last applied transaction",
                        table.qualified,
                        table.describe_key(&key, format),
                        n + 1
                    ),
                    detail: match &e {
                        PgError::Query { detail, .. } => detail.clone(),
                        other => other.to_string(),
                    },
                    code: e.sqlstate().map(str::to_string),
                });
            }
            match op {
                KeyedOp::Insert(_) => self.applied.inserts += 1,
                KeyedOp::Update(..) => self.applied.updates += 1,
                KeyedOp::Delete(_) => self.applied.deletes += 1,
            }
        }
        Ok(())
    }

    /// Creates the table's staging table once per session, and empties it when an
    /// earlier flush of this transaction used it.
    async fn prepare_stage(&mut self, oid: u32) -> Result<(), PgError> {
        let table = &self.tables[&oid];
        let sql = if !self.staging_made.contains(&oid) {
            table.create_stage_sql()
        } else if self.staged.contains(&oid) {
            format!("DELETE FROM {}", table.stage)
        } else {
            return Ok(());
        };
        self.client.batch_execute(&sql).await.context(&self.client.endpoint(), || sql.clone())?;
        self.staging_made.insert(oid);
        Ok(())
    }

    async fn flush_ordered(&mut self, oid: u32, ops: Vec<RowOp>) -> Result<(), PgError> {
        let format = self.format;
        let mut direct = BytesMut::new();
        for op in ops {
            let table = &self.tables[&oid];
            if let RowOp::Insert(t) = &op {
                put_row(&mut direct, format, &t.iter().map(Field::Datum).collect::<Vec<_>>()).map_err(|e| table.error(e))?;
                self.applied.inserts += 1;
                continue;
            }
            let in_direct = table.copy_in_sql(format);
            let statement = match &op {
                RowOp::Update(old, new) => table.update_by_row(old, new, format),
                RowOp::Delete(old) => table.delete_by_row(old, format),
                RowOp::Insert(_) => unreachable!(),
            };
            if !direct.is_empty() {
                self.copy_in(&in_direct, direct.split()).await?;
            }
            if let Some(statement) = statement {
                self.exec_row(statement).await?;
            }
            match op {
                RowOp::Update(..) => self.applied.updates += 1,
                _ => self.applied.deletes += 1,
            }
        }
        if !direct.is_empty() {
            let in_direct = self.tables[&oid].copy_in_sql(format);
            self.copy_in(&in_direct, direct).await?;
        }
        Ok(())
    }

    /// One statement with its row's values; returns the rows it touched.
    async fn exec_row(&self, (sql, params): (String, Vec<RowParam>)) -> Result<u64, PgError> {
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.client.execute(&sql, &refs).await.context(&self.client.endpoint(), || sql.clone())
    }

    async fn copy_in(&self, sql: &str, rows: BytesMut) -> Result<(), PgError> {
        let sink = self.client.copy_in::<_, Bytes>(sql).await.context(&self.client.endpoint(), || sql.to_string())?;
        pin_mut!(sink);
        if self.format == CopyFormat::Binary {
            sink.send(Bytes::from_static(BINARY_HEADER)).await.context(&self.client.endpoint(), || sql.to_string())?;
        }
        sink.send(rows.freeze()).await.context(&self.client.endpoint(), || sql.to_string())?;
        if self.format == CopyFormat::Binary {
            sink.send(Bytes::from_static(BINARY_TRAILER)).await.context(&self.client.endpoint(), || sql.to_string())?;
        }
        sink.finish().await.context(&self.client.endpoint(), || sql.to_string())?;
        Ok(())
    }
}
