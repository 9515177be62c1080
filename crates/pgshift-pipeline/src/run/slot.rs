//! A run's replication channel: the logical slot on the source, the publication that
//! names the run's tables for pgoutput, and the replication origin on the target that
//! makes the apply exactly-once. All three share one name, made here and only here;
//! here too they are created, checked and dropped, for migrate, follow, cutover,
//! reverse replication and rollback alike.
//!
//! A lost slot is recognised by the catalog (`pg_replication_slots.wal_status`,
//! or the slot missing), never by the server's message text, which depends on
//! `lc_messages`.

use pgshift_postgres::Session;
use pgshift_postgres::error::Context;
use pgshift_postgres::replication::{CreatedSlot, ReplicationConn};
use pgshift_postgres::catalog::Table;
use pgshift_postgres::sql::{column_list, quote_ident, quote_literal};
use pgshift_postgres::lsn::Lsn;
use pgshift_postgres::{ConnInfo, PgError};

use crate::error::{Error, Result};

/// Every name pgshift gives a slot, publication or origin starts with this.
const PREFIX: &str = "pgshift_";

/// The slot of a forward run; the process id keeps names unique when an earlier
/// target with the same run ids was dropped but its slots were not.
pub fn slot_name(run_id: i64) -> String {
    format!("{PREFIX}{run_id}_{:x}", std::process::id())
}

/// The slot on the new database that carries changes back after a cutover (--reverse).
pub fn reverse_slot_name(run_id: i64) -> String {
    format!("{PREFIX}rev_{run_id}")
}

/// The publication of a run's slot.
pub fn publication_name(slot: &str) -> &str {
    slot
}

/// The replication origin that records how far the target applied a run's slot.
pub fn origin_name(slot: &str) -> &str {
    slot
}

/// Whether changes with this replication origin were applied by pgshift (and so must
/// not travel back through the reverse direction).
pub fn is_pgshift_origin(origin: &str) -> bool {
    origin.starts_with(PREFIX)
}

/// A publication's entry for `table`: its name, with a column list that leaves out
/// `left_out` where the server has column lists (PostgreSQL 15+) and the columns are
/// not part of what identifies a row (REPLICA IDENTITY FULL publishes them all);
/// otherwise the applier drops them. Generated columns are never listed.
pub fn publication_entry(table: &Table, left_out: &[String], server_version_num: i32) -> String {
    if left_out.is_empty() || server_version_num < 150000 || table.replica_identity == "f" {
        return table.qualified();
    }
    let kept = table.copy_columns().filter(|c| !left_out.contains(&c.name)).map(|c| c.name.as_str());
    format!("{} ({})", table.qualified(), column_list(kept))
}

/// `DROP` + `CREATE PUBLICATION` for `tables` (qualified names, maybe with a column list).
pub fn publication_sql(slot: &str, tables: &[String]) -> String {
    let name = quote_ident(publication_name(slot));
    let scope = if tables.is_empty() { String::new() } else { format!(" FOR TABLE {}", tables.join(", ")) };
    format!("DROP PUBLICATION IF EXISTS {name}; CREATE PUBLICATION {name}{scope}")
}

/// Creates the run's publication, then its slot, whose exported snapshot the copy
/// reads. pgoutput reads publications as of each change's position: the publication
/// must exist before the slot's consistent point, or changes right after L0 fail.
/// A slot left by a run that died before recording L0 cannot be trusted: it is remade.
/// The returned connection must stay open while the snapshot is in use.
pub async fn create_with_snapshot(source: &ConnInfo, src: &Session, slot: &str, tables: &[String]) -> Result<(ReplicationConn, CreatedSlot)> {
    let src_name = source.endpoint();
    drop_if_inactive(src, slot).await?;
    let publication = publication_sql(slot, tables);
    src.batch_execute(&publication).await.context(&src_name, || publication.clone())?;
    let mut conn = ReplicationConn::connect(source).await?;
    let created = conn.create_slot_with_snapshot(slot).await?;
    tracing::info!(slot = %slot, lsn = %created.consistent_point, "created replication slot");
    Ok((conn, created))
}

/// Creates publication and slot on a database that nobody writes to yet (the new
/// database inside a cutover's fence); returns the slot's consistent point.
pub async fn create_without_snapshot(client: &Session, slot: &str, tables: &[String]) -> Result<String> {
    let endpoint = client.endpoint();
    let publication = publication_sql(slot, tables);
    client.batch_execute(&publication).await.context(&endpoint, || publication.clone())?;
    drop_if_inactive(client, slot).await?;
    Ok(client
        .query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
        .context(&endpoint, || format!("create slot {slot}"))?
        .get(0))
}

/// Drops a slot nobody streams from (left over from an aborted attempt).
async fn drop_if_inactive(client: &Session, slot: &str) -> Result<()> {
    let endpoint = client.endpoint();
    client
        .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", &[&slot])
        .await
        .context(&endpoint, || format!("drop stale slot {slot}"))?;
    Ok(())
}

/// What the catalog says of a slot.
#[derive(Clone, Debug, PartialEq)]
pub enum SlotState {
    Missing,
    /// WAL it needed was removed (`wal_status = 'lost'`): following it would skip changes.
    Lost,
    Usable { active: bool, confirmed: Option<String> },
}

pub async fn state(src: &Session, slot: &str) -> Result<SlotState> {
    let src_name = src.endpoint();
    let row = src
        .query_opt("SELECT wal_status, active, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .context(&src_name, || format!("read slot {slot}"))?;
    Ok(match row {
        None => SlotState::Missing,
        Some(r) if r.get::<_, Option<String>>(0).as_deref() == Some("lost") => SlotState::Lost,
        Some(r) => SlotState::Usable { active: r.get(1), confirmed: r.get(2) },
    })
}

/// Refuses a slot that is gone or lost WAL it needed; returns its state otherwise.
pub async fn check(src: &Session, slot: &str) -> Result<SlotState> {
    match state(src, slot).await? {
        SlotState::Missing => Err(missing(slot)),
        SlotState::Lost => Err(lost(slot)),
        usable => Ok(usable),
    }
}

fn missing(slot: &str) -> Error {
    Error::SlotLost(format!(
        "slot {slot} no longer exists on the source, so changes since the load began are lost: \
         drop the migrated tables and the pgshift schema on the target and run pgshift migrate again"
    ))
}

fn lost(slot: &str) -> Error {
    Error::SlotLost(format!(
        "slot {slot} was invalidated on the source (WAL it needed was removed, see max_slot_wal_keep_size): \
         changes since the load are lost. Drop the migrated tables and the pgshift schema on the target and run \
         pgshift migrate again (or only the affected tables with --tables)"
    ))
}

/// Explains a streaming error: when the catalog says the slot is gone or lost, that
/// is the error (with what to do); otherwise the server's own error stands.
pub async fn explain_stream_error(e: PgError, src: &Session, slot: &str) -> Error {
    match state(src, slot).await {
        Ok(SlotState::Missing) => missing(slot),
        Ok(SlotState::Lost) => lost(slot),
        _ => e.into(),
    }
}

/// Ends any stream from the slot, then drops publication and slot on `src`.
/// A slot that cannot be dropped is reported, not fatal: the switch already happened.
pub async fn drop(src: &Session, slot: &str) -> Result<()> {
    let src_name = src.endpoint();
    let sql = format!(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = {s} AND active_pid IS NOT NULL; \
         DROP PUBLICATION IF EXISTS {p}",
        s = quote_literal(slot),
        p = quote_ident(publication_name(slot))
    );
    src.batch_execute(&sql).await.context(&src_name, || "stop streaming from the slot".into())?;
    for _ in 0..100 {
        let dropped = src
            .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", &[&slot])
            .await;
        if dropped.is_ok_and(|n| n > 0) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tracing::warn!("{src_name}: could not drop slot {slot}; drop it yourself: SELECT pg_drop_replication_slot('{slot}')");
    Ok(())
}

/// Drops the run's replication origin on the target once nothing applies from the
/// slot any more; left in place (with a note) if a session still uses it.
pub async fn drop_origin(dst: &Session, slot: &str) {
    let dst_name = dst.endpoint();
    let origin = origin_name(slot);
    let sql = "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1";
    for _ in 0..50 {
        match dst.execute(sql, &[&origin]).await {
            Ok(_) => return,
            // 55006 object_in_use: the follower's session has not ended yet.
            Err(e) if e.code().is_some_and(|c| c.code() == "55006") => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            Err(e) => {
                tracing::warn!("{dst_name}: replication origin {origin} stays ({}): drop it with SELECT pg_replication_origin_drop('{origin}')", pgshift_postgres::error::describe(&e));
                return;
            }
        }
    }
    tracing::warn!("{dst_name}: replication origin {origin} is still in use: drop it later with SELECT pg_replication_origin_drop('{origin}')");
}

/// How many bytes of WAL the source has written past `confirmed` (a slot's position).
pub async fn lag_bytes(src: &Session, confirmed: Lsn) -> Result<u64> {
    let src_name = src.endpoint();
    let current: String = src
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .context(&src_name, || "read the source's WAL position".into())?
        .get(0);
    Ok(current.parse::<Lsn>().map_err(Error::Internal)?.bytes_after(confirmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_finds_slot_publication_and_origin() {
        let slot = slot_name(7);
        assert!(slot.starts_with("pgshift_7_"));
        assert_eq!(publication_name(&slot), slot);
        assert_eq!(origin_name(&slot), slot);
        assert!(is_pgshift_origin(origin_name(&slot)) && is_pgshift_origin(&reverse_slot_name(7)));
        assert!(!is_pgshift_origin("pg_16384") && !is_pgshift_origin("sub_app"));
        assert_eq!(publication_sql("s", &["public.a".into()]), r#"DROP PUBLICATION IF EXISTS "s"; CREATE PUBLICATION "s" FOR TABLE public.a"#);
    }
}
