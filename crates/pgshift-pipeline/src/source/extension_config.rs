//! Extensions' configuration: the tables and sequences an extension marks with
//! `pg_extension_config_dump` hold the user's settings (pg_partman's `part_config`,
//! pg_cron's jobs, PostGIS's own `spatial_ref_sys` rows), which `CREATE EXTENSION` on
//! the target does not bring. Carried as pg_dump carries them: only the rows the
//! extension's filter selects, after the load and again inside the cutover's pause
//! (catch-up does not follow extension members).

use pgshift_postgres::error::Context;
use pgshift_postgres::sql::quote_literal;
use pgshift_postgres::Session;

use crate::error::{Error, Result};

/// One configuration relation of an extension.
#[derive(Clone, Debug)]
pub struct ConfigRelation {
    pub extension: String,
    /// `schema.name`, quoted.
    pub relation: String,
    pub sequence: bool,
    /// The extension's filter (`WHERE ...`), empty for every row.
    pub condition: String,
}

/// The configuration relations of the source's extensions.
pub async fn of_source(src: &Session) -> Result<Vec<ConfigRelation>> {
    let rows = src
        .query(
            "SELECT e.extname::text, format('%I.%I', n.nspname, c.relname), c.relkind = 'S', coalesce(e.extcondition[u.i], '') \
             FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS u(oid, i) \
             JOIN pg_class c ON c.oid = u.oid JOIN pg_namespace n ON n.oid = c.relnamespace \
             ORDER BY e.extname, u.i",
            &[],
        )
        .await
        .context(&src.endpoint(), || "read the extensions' configuration tables".into())?;
    Ok(rows.iter().map(|r| ConfigRelation { extension: r.get(0), relation: r.get(1), sequence: r.get(2), condition: r.get(3) }).collect())
}

/// Makes the target's configuration rows the source's (the rows the filter selects:
/// the extension's own defaults stay) and its configuration sequences' values. One
/// target transaction per relation; a relation the target lacks, or whose columns
/// differ (another version of the extension), is left with a note. Returns notes.
pub async fn carry(src: &Session, dst: &Session, relations: &[ConfigRelation]) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for r in relations {
        let exists: bool = dst
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&r.relation])
            .await
            .context(&dst.endpoint(), || format!("look for {}", r.relation))?
            .get(0);
        if !exists {
            notes.push(format!("not carried: {} of extension {} (the target lacks it)", r.relation, r.extension));
            continue;
        }
        let result = match r.sequence {
            true => carry_sequence(src, dst, &r.relation).await,
            false => carry_rows(src, dst, r).await,
        };
        match result {
            Ok(Some(note)) => notes.push(note),
            Ok(None) => {}
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => notes.push(format!("not carried: {} of extension {}: {e}", r.relation, r.extension)),
        }
    }
    Ok(notes)
}

async fn carry_rows(src: &Session, dst: &Session, r: &ConfigRelation) -> Result<Option<String>> {
    let out_sql = format!("COPY (SELECT * FROM ONLY {} {}) TO STDOUT", r.relation, r.condition);
    let in_sql = format!("COPY {} FROM STDIN", r.relation);
    let clear = format!("DELETE FROM ONLY {} {}", r.relation, r.condition);
    let work = async {
        dst.batch_execute(&clear).await.context(&dst.endpoint(), || clear.clone())?;
        Ok::<_, Error>(pgshift_postgres::copy::pipe(src, &out_sql, dst, &in_sql).await?)
    };
    let stats = pgshift_postgres::conn::in_transaction(dst, "carry an extension's configuration", work).await?;
    Ok((stats.rows > 0).then(|| format!("extension {}: {} configuration row(s) of {} carried", r.extension, stats.rows, r.relation)))
}

async fn carry_sequence(src: &Session, dst: &Session, sequence: &str) -> Result<Option<String>> {
    let row = src
        .query_one(&format!("SELECT last_value, is_called FROM {sequence}"), &[])
        .await
        .context(&src.endpoint(), || format!("read {sequence}"))?;
    let (value, called): (i64, bool) = (row.get(0), row.get(1));
    let sql = format!("SELECT setval({}::regclass, {value}, {called})", quote_literal(sequence));
    dst.batch_execute(&sql).await.context(&dst.endpoint(), || sql.clone())?;
    Ok(None)
}
