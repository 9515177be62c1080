//! Large objects (`pg_largeobject`). Logical decoding does not carry them, so they
//! are copied after the tables and brought up to date inside the cutover's fence
//! (and rollback's), by one piece of code: each object's size, content digest (an
//! md5 per MiB), owner, privileges and comment are read on both sides, only the
//! objects that differ are written, and those gone from the source are removed.
//! Contents move in 1 MiB pieces, so memory stays bounded whatever an object's size.
//! A copy cut short leaves an object that differs, which the next sync rewrites.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::conn::Session;
use crate::error::{Context, PgError};
use crate::objects::Grant;
use crate::sql::{quote_ident, quote_literal};

const PIECE: i32 = 1 << 20;

/// What besides the contents is carried (`--no-owner`, `--no-privileges` leave them out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carry {
    pub owners: bool,
    pub privileges: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Synced {
    /// Objects written (new or changed).
    pub copied: u64,
    /// Objects removed from the target (gone from the source).
    pub removed: u64,
    pub bytes: u64,
}

#[derive(PartialEq)]
struct State {
    size: i64,
    digest: String,
    owner: String,
    grants: Vec<String>,
    comment: Option<String>,
}

/// How many large objects the server holds.
pub async fn count(db: &Session) -> Result<i64, PgError> {
    let endpoint = db.endpoint();
    Ok(db
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .context(&endpoint, || "count the large objects".into())?
        .get(0))
}

/// Why this session cannot read every large object (None: it can): reading needs
/// SELECT on each, which their owners or a superuser have.
pub async fn unreadable(db: &Session) -> Result<Option<String>, PgError> {
    let endpoint = db.endpoint();
    match db.batch_execute("SELECT lo_get(oid, 0, 1) FROM pg_largeobject_metadata").await {
        Err(e) if e.as_db_error().is_some() => Ok(Some(format!(
            "{endpoint}: cannot read the large objects ({}): connect as their owner or a superuser, or GRANT SELECT ON LARGE OBJECT to this user",
            crate::error::describe(&e)
        ))),
        other => other.context(&endpoint, || "read the large objects".into()).map(|()| None),
    }
}

/// The roles large objects' owners and privileges name (never PUBLIC).
pub async fn roles(db: &Session) -> Result<(Vec<String>, Vec<String>), PgError> {
    let endpoint = db.endpoint();
    let row = db
        .query_one(
            "SELECT ARRAY(SELECT DISTINCT pg_get_userbyid(lomowner)::text FROM pg_largeobject_metadata), \
               ARRAY(SELECT DISTINCT pg_get_userbyid(a.grantee)::text FROM pg_largeobject_metadata m, aclexplode(m.lomacl) a \
                     WHERE a.grantee NOT IN (0, m.lomowner))",
            &[],
        )
        .await
        .context(&endpoint, || "read the large objects' owners and privileges".into())?;
    Ok((row.get(0), row.get(1)))
}

async fn states(client: &Client, endpoint: &str) -> Result<BTreeMap<u32, State>, PgError> {
    // lo_open's descriptor lives until the statement's transaction ends; 262144 is INV_READ.
    let rows = client
        .query(
            &format!(
                "SELECT m.oid, s.size, \
                   (SELECT coalesce(string_agg(md5(lo_get(m.oid, o, {PIECE})), '' ORDER BY o), '') FROM generate_series(0::int8, s.size - 1, {PIECE}) o), \
                   pg_get_userbyid(m.lomowner)::text, {}, obj_description(m.oid, 'pg_largeobject') \
                 FROM pg_largeobject_metadata m, LATERAL (SELECT lo_lseek64(lo_open(m.oid, 262144), 0, 2) AS size) s ORDER BY m.oid",
                crate::objects::grants_of("m.lomacl", "m.lomowner")
            ),
            &[],
        )
        .await
        .context(&endpoint, || "read the large objects (size, digest, owner, privileges)".into())?;
    Ok(rows.iter().map(|r| (r.get(0), State { size: r.get(1), digest: r.get(2), owner: r.get(3), grants: r.get(4), comment: r.get(5) })).collect())
}

/// Makes the target's large objects the same as the source's.
pub async fn sync(src: &Session, dst: &Session, carry: Carry) -> Result<Synced, PgError> {
    let (src_name, dst_name) = (src.endpoint(), dst.endpoint());
    let (wanted, present) = (states(src, src_name).await?, states(dst, dst_name).await?);
    let mut out = Synced::default();
    let write = |sql: String| async move { dst.batch_execute(&sql).await.context(&dst_name, || sql.clone()) };
    for oid in present.keys().filter(|o| !wanted.contains_key(o)) {
        write(format!("SELECT lo_unlink({oid})")).await?;
        out.removed += 1;
    }
    for (oid, want) in &wanted {
        let have = present.get(oid);
        if have == Some(want) {
            continue;
        }
        let fresh = have.is_none_or(|h| h.size != want.size || h.digest != want.digest);
        if fresh {
            if have.is_some() {
                write(format!("SELECT lo_unlink({oid})")).await?;
            }
            write(format!("SELECT lo_create({oid})")).await?;
            let mut offset = 0i64;
            while offset < want.size {
                let piece: Vec<u8> = src
                    .query_one("SELECT lo_get($1, $2, $3)", &[oid, &offset, &PIECE])
                    .await
                    .context(&src_name, || format!("read large object {oid}"))?
                    .get(0);
                if piece.is_empty() {
                    break;
                }
                dst.execute("SELECT lo_put($1, $2, $3)", &[oid, &offset, &piece]).await.context(&dst_name, || format!("write large object {oid}"))?;
                offset += piece.len() as i64;
                out.bytes += piece.len() as u64;
            }
            out.copied += 1;
        }
        if carry.owners && (fresh || have.is_some_and(|h| h.owner != want.owner)) {
            write(format!("ALTER LARGE OBJECT {oid} OWNER TO {}", quote_ident(&want.owner))).await?;
        }
        if carry.privileges && (fresh || have.is_some_and(|h| h.grants != want.grants)) {
            let on = format!("LARGE OBJECT {oid}");
            let mut sql = vec![format!("REVOKE ALL ON {on} FROM PUBLIC")];
            for g in have.map(|h| h.grants.as_slice()).unwrap_or_default().iter().filter_map(|g| Grant::parse(g)) {
                if g.grantee != "PUBLIC" {
                    sql.push(format!("REVOKE ALL ON {on} FROM {}", g.role()));
                }
            }
            sql.extend(want.grants.iter().filter_map(|g| Grant::parse(g)).map(|g| g.sql(&on)));
            write(sql.join("; ")).await?;
        }
        if fresh || have.is_some_and(|h| h.comment != want.comment) {
            if let Some(text) = &want.comment {
                write(format!("COMMENT ON LARGE OBJECT {oid} IS {}", quote_literal(text))).await?;
            } else if have.is_some_and(|h| h.comment.is_some()) {
                write(format!("COMMENT ON LARGE OBJECT {oid} IS NULL")).await?;
            }
        }
    }
    Ok(out)
}
