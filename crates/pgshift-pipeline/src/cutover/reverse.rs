//! The way back after a cutover: replication from the new database to the old one,
//! so the old one stays a warm copy, and `pgshift rollback` can switch back with the
//! same fence as the cutover.
//!
//! The reverse slot is created inside the cutover's fence, when both databases hold
//! the same rows and nobody writes to the new one yet: its consistent point is where
//! the old database stands. The reverse run is recorded in the old database's
//! `pgshift` schema, so `pgshift follow --source NEW --target OLD` and
//! `pgshift rollback` find it like any loaded run.

use pgshift_postgres::Session;
use pgshift_postgres::catalog::Table;
use pgshift_postgres::error::Context;
use pgshift_postgres::large_objects::Carry;
use pgshift_postgres::schema_map::SchemaMap;

use crate::error::{Error, Result};
use crate::plan::LeftOut;
use crate::run::slot;
use crate::run::store::Store;

/// What must hold on the new database before a cutover promises a way back.
pub async fn check_possible(new: &Session) -> Result<()> {
    let new_name = new.endpoint();
    let row = new
        .query_one(
            "SELECT current_setting('wal_level'), \
             current_setting('max_replication_slots')::int - (SELECT count(*)::int FROM pg_replication_slots), \
             (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .context(&new_name, || "check the target for reverse replication".into())?;
    let mut problems = Vec::new();
    let wal_level: String = row.get(0);
    if wal_level != "logical" {
        problems.push(format!("--reverse: target {new_name} has wal_level = {wal_level}; set wal_level = logical and restart it"));
    }
    if row.get::<_, i32>(1) < 1 {
        problems.push(format!("--reverse: target {new_name} has no free replication slot; raise max_replication_slots"));
    }
    if !row.get::<_, bool>(2) {
        problems.push("--reverse: the target's user needs the REPLICATION attribute (ALTER ROLE ... REPLICATION)".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Preflight(problems))
    }
}

/// What the reverse run takes from the forward one.
pub struct Forward<'a> {
    pub run_id: i64,
    /// Whose inverse leads the changes back.
    pub schema_map: &'a SchemaMap,
    /// Rollback brings large objects back the same way.
    pub large_objects: Option<Carry>,
    /// Vector columns recomputed in place (by the new database's table names): their
    /// vectors do not fit the old columns, so they are left out on the way back too.
    pub left_out: &'a LeftOut,
}

/// Creates publication and slot on the new database and records the reverse run in
/// the old one. `tables` are the new database's (`version`: its server_version_num).
/// Runs while the old database is fenced.
pub async fn set_up(old: &Session, new: &Session, (tables, version): (&[&Table], i32), forward: &Forward<'_>) -> Result<String> {
    let new_name = new.endpoint();
    let slot = slot::reverse_slot_name(forward.run_id);
    let left_out = |t: &Table| forward.left_out.get(&t.display_name()).cloned().unwrap_or_default();
    // A table without a key is left out (published, the new database would refuse the
    // application's updates of it): a rollback copies it again in its pause, as the cutover did.
    let entries: Vec<String> =
        tables.iter().filter(|t| !t.holds_rows() || t.has_replica_identity()).map(|t| slot::publication_entry(t, &left_out(t), version)).collect();
    // A slot left over from an aborted cutover is remade: nothing streams from it yet.
    let lsn = slot::create_without_snapshot(new, &slot, &entries).await?;
    let names: Vec<String> = tables.iter().map(|t| t.display_name()).collect();
    let back = forward.schema_map.inverse();
    let left_out_back: LeftOut = forward.left_out.iter().map(|(table, columns)| (back.target_display(table), columns.clone())).collect();
    Store::new(old).create_loaded_run(new_name, (&slot, &lsn), &names, &back, (forward.large_objects, &left_out_back)).await?;
    Ok(slot)
}
