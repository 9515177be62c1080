//! Checks that run before anything is written, each problem with its fix. All
//! problems are collected so a user fixes them in one round.

use pgshift_postgres::Session;
use pgshift_postgres::catalog::{relation_exists, Catalog, Table};
use pgshift_postgres::error::Context;

use crate::error::{Error, Result};

pub struct Checks {
    /// A logical slot will be created (catch-up follows the load).
    pub needs_slot: bool,
    /// Continuing an earlier run: target tables are expected to exist.
    pub resume: bool,
    /// Catch-up will replicate changes: every table needs a replica identity.
    pub follow: bool,
}

/// A table without a primary key or replica identity up to this size is not followed
/// (the source would refuse its updates once published): the cutover copies it again
/// inside its write pause, which grows with it (about 0.1 s per MiB here).
pub const FENCE_COPY_MAX_BYTES: i64 = 8 << 20;

/// Whether catch-up leaves `t` to the cutover's pause: it has no replica identity and is small.
pub fn copied_in_the_fence(t: &Table) -> bool {
    t.holds_rows() && !t.has_replica_identity() && t.size_bytes <= FENCE_COPY_MAX_BYTES
}

/// Tables whose updates and deletes logical replication cannot carry. Errors when
/// the run follows the source, warnings for a plain copy.
pub fn identity_problems(tables: &[&Table]) -> Vec<String> {
    tables
        .iter()
        .filter(|t| t.holds_rows() && !t.has_replica_identity())
        .map(|t| {
            format!(
                "table {} has no primary key or replica identity: updates and deletes cannot be replicated; \
                 run on the source: ALTER TABLE {} REPLICA IDENTITY FULL (or add a primary key)",
                t.display_name(),
                t.qualified()
            )
        })
        .collect()
}

pub async fn check(
    source: &Session,
    target: &Session,
    catalog: &Catalog,
    (tables, target_tables): (&[&Table], &[&Table]),
    checks: &Checks,
) -> Result<()> {
    let mut problems = Vec::new();
    if checks.needs_slot {
        source_replication(source, &mut problems).await?;
    }
    problems.extend(extension_problems(target, catalog).await?);
    if checks.follow {
        let large: Vec<&Table> = tables.iter().copied().filter(|t| !copied_in_the_fence(t)).collect();
        problems.extend(identity_problems(&large).into_iter().map(|p| {
            p + &format!(
                ", or copy without catch-up (--no-follow); tables up to {} MiB without one are copied again inside the cutover's write pause instead",
                FENCE_COPY_MAX_BYTES >> 20
            )
        }));
    }
    if !checks.resume {
        target_tables_absent(target, target_tables, &mut problems).await?;
    }
    problems.extend(collation_problems(target, target_tables).await?);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Preflight(problems))
    }
}

/// Columns whose collation (other than their type's) is a system one the target
/// lacks (those of the user schemas are created with them): locales differ between
/// servers (ICU versions, libc locales installed).
async fn collation_problems(client: &Session, target_tables: &[&Table]) -> Result<Vec<String>> {
    let endpoint = client.endpoint();
    let mut wanted: Vec<(&str, String)> = Vec::new();
    for t in target_tables {
        for c in t.columns.iter().filter(|c| c.cast_to.is_none()) {
            match &c.collation {
                Some(collation) if collation.starts_with("pg_catalog.") => wanted.push((collation, format!("{}.{}", t.display_name(), c.name))),
                _ => {}
            }
        }
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = wanted.iter().map(|(collation, _)| *collation).collect();
    let missing: Vec<String> = client
        .query("SELECT c FROM unnest($1::text[]) c WHERE to_regcollation(c) IS NULL", &[&names])
        .await
        .context(&endpoint, || "look for the columns' collations".into())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(wanted
        .iter()
        .filter(|(collation, _)| missing.iter().any(|m| m == collation))
        .map(|(collation, column)| {
            format!(
                "column {column} uses collation {collation}, which target {endpoint} does not have: create it there \
                 (CREATE COLLATION, or install the locale) before migrating"
            )
        })
        .collect())
}

async fn source_replication(client: &Session, problems: &mut Vec<String>) -> Result<()> {
    let endpoint = client.endpoint();
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, \
             (SELECT count(*)::int FROM pg_replication_slots), current_setting('max_wal_senders')::int, \
             (SELECT count(*)::int FROM pg_stat_replication), \
             (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user), current_user::text",
            &[],
        )
        .await
        .context(&endpoint, || "read replication settings".into())?;
    let (wal_level, max_slots, used_slots, max_senders, senders): (String, i32, i32, i32, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let (can_replicate, user): (bool, String) = (row.get(5), row.get(6));
    if wal_level != "logical" {
        problems.push(format!(
            "source {endpoint} has wal_level = {wal_level}; logical replication needs wal_level = logical: \
             run ALTER SYSTEM SET wal_level = logical and restart the server (or pass --no-follow to copy without catch-up)"
        ));
    }
    if used_slots >= max_slots {
        problems.push(format!(
            "source {endpoint} uses {used_slots} of max_replication_slots = {max_slots}; pgshift needs one more: \
             raise max_replication_slots (ALTER SYSTEM SET max_replication_slots = {}) and restart, or drop an unused slot",
            used_slots + 1
        ));
    }
    if senders >= max_senders {
        problems.push(format!(
            "source {endpoint} uses {senders} of max_wal_senders = {max_senders}; raise max_wal_senders and restart"
        ));
    }
    if !can_replicate {
        problems.push(format!(
            "source user {user} may not replicate: run ALTER ROLE {user} WITH REPLICATION (on managed services, grant the provider's replication role)"
        ));
    }
    Ok(())
}

/// Extensions the source uses that the target cannot create.
pub async fn extension_problems(client: &Session, catalog: &Catalog) -> Result<Vec<String>> {
    let endpoint = client.endpoint();
    let mut problems = Vec::new();
    let rows = client
        .query("SELECT name FROM pg_available_extensions", &[])
        .await
        .context(&endpoint, || "list available extensions".into())?;
    let available: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for e in &catalog.extensions {
        if available.contains(&e.name) {
            continue;
        }
        if e.name == "vector" {
            problems.push(format!(
                "target {endpoint} has no pgvector, which the source's vector columns need: use a server with the \
                 extension installed (e.g. the pgvector/pgvector:pg16 image, or your provider's \"vector\" extension)"
            ));
        } else {
            problems.push(format!(
                "target {endpoint} cannot create extension {} (used by the source): install it on the target server",
                e.name
            ));
        }
    }
    Ok(problems)
}

async fn target_tables_absent(client: &Session, tables: &[&Table], problems: &mut Vec<String>) -> Result<()> {
    let endpoint = client.endpoint();
    for t in tables {
        let exists = relation_exists(client, &t.schema, &t.name).await?;
        if !exists {
            continue;
        }
        let has_rows: bool = client
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {})", t.qualified()), &[])
            .await
            .context(&endpoint, || format!("look into {}", t.display_name()))?
            .get(0);
        problems.push(if has_rows {
            format!(
                "target table {} already holds rows; pgshift will not write over data: drop or empty it \
                 (DROP TABLE {} CASCADE), pass --resume to continue an earlier run, or, when it came from another \
                 database, move this source's tables to a schema of their own (--map-schema public=NAME)",
                t.display_name(),
                t.qualified()
            )
        } else {
            format!(
                "target table {} already exists; pgshift creates the schema itself: drop it (DROP TABLE {} CASCADE) \
                 or pass --resume to continue an earlier run",
                t.display_name(),
                t.qualified()
            )
        });
    }
    Ok(())
}

/// The target must offer pgvector for embedding columns.
pub async fn pgvector_problem(dst: &Session) -> Result<Option<String>> {
    let dst_name = dst.endpoint();
    let has_vector: bool = dst
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')", &[])
        .await
        .context(&dst_name, || "look for pgvector".into())?
        .get(0);
    Ok((!has_vector).then(|| {
        format!(
            "target {dst_name} has no pgvector, which the embedding columns need: use a server with the extension \
             (e.g. the pgvector/pgvector:pg16 image, or your provider's \"vector\" extension)"
        )
    }))
}

/// What stops the embedding stage: a text expression the source rejects, a table
/// that must be copied as text, or no pgvector on the target. (A vector column the
/// source already has is recomputed in place: catch-up leaves its old values out.)
pub async fn embedding_problems(
    src: &Session,
    dst: &Session,
    tables: &[&Table],
    specs: &std::collections::HashMap<String, crate::plan::embedding::EmbeddingSpec>,
) -> Result<Vec<String>> {
    let src_name = src.endpoint();
    let mut problems = Vec::new();
    if specs.is_empty() {
        return Ok(problems);
    }
    problems.extend(pgvector_problem(dst).await?);
    for t in tables.iter().filter(|t| specs.contains_key(&t.display_name()) && t.partition_of.is_none()) {
        let spec = &specs[&t.display_name()];
        let probe = format!("SELECT ({})::text FROM ONLY {} LIMIT 0", spec.text, t.qualified());
        if let Err(e) = src.batch_execute(&probe).await {
            problems.push(format!(
                "embedding for {}: the text expression {:?} fails on the source {src_name}: {}",
                t.display_name(),
                spec.text,
                pgshift_postgres::error::describe(&e)
            ));
        }
        if let Some(chunks) = &spec.chunks {
            if t.primary_key.is_none() {
                problems.push(format!(
                    "embedding for {}: a chunk table holds its parent's key, and {} has no primary key: add one on the source, or embed into a column",
                    t.display_name(),
                    t.display_name()
                ));
            }
            if !t.holds_rows() {
                problems.push(format!("embedding for {}: chunk tables of partitioned tables are not supported yet: embed into a column", t.display_name()));
            }
            if let Some(context) = &chunks.context {
                let probe = format!("SELECT ({context})::text FROM ONLY {} LIMIT 0", t.qualified());
                if let Err(e) = src.batch_execute(&probe).await {
                    problems.push(format!(
                        "embedding for {}: the chunk context {context:?} fails on the source {src_name}: {}",
                        t.display_name(),
                        pgshift_postgres::error::describe(&e)
                    ));
                }
            }
        }
        if pgshift_postgres::copy::CopyFormat::for_table(t) != pgshift_postgres::copy::CopyFormat::Binary {
            problems.push(format!(
                "embedding for {}: the table has columns that binary COPY cannot carry between clusters \
                 (arrays of user types, composites): computing vectors for it is not supported yet",
                t.display_name()
            ));
        }
    }
    Ok(problems)
}

/// The application's own chunk tables that `embedded` name (found in the source's
/// catalog), and what is wrong with them: each must exist, hold a column for each of
/// the parent's key columns, the text, the position and every value named, and give
/// every other NOT NULL column a default (pgshift writes only the columns named).
pub fn application_chunk_tables<'a>(catalog: &'a Catalog, embedded: &[(&Table, &crate::plan::embedding::EmbeddingSpec)]) -> (Vec<&'a Table>, Vec<String>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for (t, spec) in embedded {
        let Some(chunks) = crate::embed::chunks::ChunkTable::of(t, spec) else { continue };
        let (schema, name) = chunks.schema_and_name();
        let what = format!("embedding for {}", t.display_name());
        let existing = catalog.table(schema, name);
        let Some(columns) = chunks.application() else {
            if existing.is_some() {
                problems.push(format!(
                    "{what}: the chunk table {schema}.{name} is a table of the source: to fill it as the application's own chunk table, \
                     say which of its columns take what (chunk_columns = {{ key = \"...\", text = \"...\" }}), or name another chunk table \
                     for pgshift to make"
                ));
            }
            continue;
        };
        let Some(table) = existing else {
            problems.push(format!(
                "{what}: chunk_columns name the application's chunk table {schema}.{name}, which the source lacks: \
                 leave chunk_columns out for pgshift to make the chunk table"
            ));
            continue;
        };
        if columns.key.len() != chunks.key().len() {
            problems.push(format!(
                "{what}: chunk_columns.key names {} column(s) of {schema}.{name} for the key of {}, which has {} ({})",
                columns.key.len(),
                t.display_name(),
                chunks.key().len(),
                chunks.key().join(", ")
            ));
        }
        let named: Vec<(&str, &str)> = columns
            .key
            .iter()
            .map(|c| ("chunk_columns.key", c.as_str()))
            .chain([("chunk_columns.text", columns.text.as_str()), ("column", spec.column.as_str())])
            .chain(columns.seq.iter().map(|c| ("chunk_columns.seq", c.as_str())))
            .chain(columns.values.keys().map(|c| ("chunk_columns.values", c.as_str())))
            .collect();
        for (setting, column) in &named {
            if !table.columns.iter().any(|c| c.name == *column) {
                problems.push(format!("{what}: {setting} names {column}, which {schema}.{name} does not have"));
            }
        }
        if let Some(c) = table.columns.iter().find(|c| c.name == spec.column).filter(|c| !c.type_name.contains("vector")) {
            problems.push(format!("{what}: column {} of {schema}.{name} is {}, not a vector column", c.name, c.type_name));
        }
        for c in table.columns.iter().filter(|c| c.not_null && c.default.is_none() && c.generated.is_none() && c.identity.is_empty()) {
            if !named.iter().any(|(_, n)| *n == c.name) {
                problems.push(format!(
                    "{what}: column {} of {schema}.{name} is NOT NULL without a default: give it a value from the parent row \
                     (chunk_columns.values = {{ {} = \"...\" }})",
                    c.name, c.name
                ));
            }
        }
        if !found.iter().any(|f: &&Table| f.oid == table.oid) {
            found.push(table);
        }
    }
    (found, problems)
}

/// Of `roles` (which owners, grants and policies name), those the target lacks.
pub async fn missing_roles(client: &Session, roles: &std::collections::BTreeSet<String>) -> Result<Vec<String>> {
    let endpoint = client.endpoint();
    let roles: Vec<&String> = roles.iter().collect();
    let rows = client
        .query("SELECT r FROM unnest($1::text[]) r WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) ORDER BY 1", &[&roles])
        .await
        .context(&endpoint, || "look for roles".into())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What to do about roles the target lacks.
pub fn roles_problem(endpoint: &str, missing: &[String]) -> String {
    let create: Vec<String> = missing.iter().map(|r| format!("CREATE ROLE {};", pgshift_postgres::sql::quote_ident(r))).collect();
    format!(
        "the target {endpoint} lacks roles that owners, grants or policies of the source name: {}. Create them there \
         ({}), or pass --roles to have pgshift create them (NOLOGIN, without passwords, which cannot be read), \
         or leave owners and grants out (--no-owner, --no-privileges)",
        missing.join(", "),
        create.join(" ")
    )
}

/// Owners the target's user cannot give objects to (it must be a superuser or a member).
pub async fn owner_problems(client: &Session, owners: &std::collections::BTreeSet<String>) -> Result<Vec<String>> {
    let endpoint = client.endpoint();
    let owners: Vec<&String> = owners.iter().collect();
    let rows = client
        .query(
            "SELECT r FROM unnest($1::text[]) r WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \
             AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AND NOT pg_has_role(current_user, r, 'MEMBER') ORDER BY 1",
            &[&owners],
        )
        .await
        .context(&endpoint, || "check who may own the objects".into())?;
    Ok(rows
        .iter()
        .map(|r| {
            let role: String = r.get(0);
            format!(
                "the target's user may not give objects to {role}, which owns them on the source: GRANT {} TO the migrating user, or pass --no-owner",
                pgshift_postgres::sql::quote_ident(&role)
            )
        })
        .collect())
}
