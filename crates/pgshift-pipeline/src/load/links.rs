//! Foreign keys that could not exist while the data lived in two databases,
//! declared by the user and added on the target once both tables are there:
//! NOT VALID first (instant: new rows are checked from then on), then VALIDATE.
//!
//! A key across two sources can only be judged once both are at a common point:
//! each source's rows arrive as of its own snapshot, then catch up on their own, so
//! a row of one may name a row of the other that has not arrived yet. Such a key is
//! validated when every run it spans is done (at the cutover of the last one, or at
//! once when the loads do not follow their sources); until then it stays NOT VALID.
//! When rows break it, they are listed (and the key is dropped at a load, where the
//! error stops the run, or left NOT VALID at a cutover, which already happened).

use pgshift_postgres::Session;
use pgshift_postgres::catalog::relation_exists;
use pgshift_postgres::error::Context;
use pgshift_postgres::ddl::{add_foreign_key_sql, foreign_key_definition, validate_sql, StepOwner};
use pgshift_postgres::sql::quote_ident;

use crate::error::{Error, Result};
use crate::plan::links::{qualified, split_table, DeclaredForeignKey};
use crate::run::Phase;
use crate::run::store::Store;

/// How many offending rows an error shows.
const SHOWN: usize = 10;

/// The runs whose tables a key joins, and whether they are all done.
async fn spanned_runs(store: &Store<'_>, fk: &DeclaredForeignKey) -> Result<(Vec<i64>, bool)> {
    let mut runs = Vec::new();
    let mut all_done = true;
    for t in [&fk.table, &fk.references] {
        let (s, n) = split_table(t);
        for run in store.runs_owning(&format!("{s}.{n}")).await? {
            all_done &= run.phase == Phase::Done;
            if !runs.contains(&run.run_id) {
                runs.push(run.run_id);
            }
        }
    }
    Ok((runs, all_done))
}

/// Adds each declared key whose two tables exist (NOT VALID), and validates it when
/// every run it spans is done; returns notes on the rest. At a load (`at_load`), a
/// key the data breaks is an error listing offending rows, and is dropped again.
pub async fn add_declared(client: &Session, keys: &[DeclaredForeignKey], at_load: bool) -> Result<Vec<String>> {
    let endpoint = client.endpoint();
    let store = Store::new(client);
    let mut notes = Vec::new();
    for fk in keys {
        let mut missing = Vec::new();
        for t in [&fk.table, &fk.references] {
            let (s, n) = split_table(t);
            if !relation_exists(client, &s, &n).await? {
                missing.push(t.clone());
            }
        }
        if !missing.is_empty() {
            notes.push(format!("foreign key {} waits for {} (added by the migration that brings it)", fk.describe(), missing.join(", ")));
            continue;
        }
        let (schema, table) = split_table(&fk.table);
        let validated: Option<bool> = client
            .query_opt(
                "SELECT c.convalidated FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE n.nspname = $1 AND t.relname = $2 AND c.conname = $3",
                &[&schema, &table, &fk.name()],
            )
            .await
            .context(&endpoint, || "look for the declared foreign key".into())?
            .map(|r| r.get(0));
        if validated == Some(true) {
            continue;
        }
        let owner = StepOwner { schema: &schema, relname: &table };
        let definition = foreign_key_definition(&fk.columns, &qualified(&fk.references), &fk.ref_columns, None);
        let add = add_foreign_key_sql(owner, &fk.name(), &definition);
        if validated.is_none() {
            client.batch_execute(&add).await.context(&endpoint, || add.clone())?;
        }
        let (runs, all_done) = spanned_runs(&store, fk).await?;
        if !all_done {
            let runs: Vec<String> = runs.iter().map(|r| r.to_string()).collect();
            notes.push(format!(
                "foreign key {} added NOT VALID (new rows are checked); the rows already there are checked once every source it \
                 spans is cut over (runs {}), when both are at the same point",
                fk.describe(),
                runs.join(", ")
            ));
            continue;
        }
        let validate = validate_sql(owner, &fk.name());
        if let Err(e) = client.batch_execute(&validate).await {
            let offending = offending_rows(client, fk).await?;
            let rows = format!(
                "foreign key {} does not hold ({}); rows of {} whose ({}) have no match: {}",
                fk.describe(),
                pgshift_postgres::error::describe(&e),
                fk.table,
                fk.columns.join(", "),
                offending.join("; ")
            );
            if !at_load {
                notes.push(format!("{rows}. The key stays NOT VALID (new rows are checked): fix or delete those rows, then {validate}"));
                continue;
            }
            let drop = format!("ALTER TABLE {} DROP CONSTRAINT {}", qualified(&fk.table), quote_ident(&fk.name()));
            client.batch_execute(&drop).await.context(&endpoint, || drop.clone())?;
            return Err(Error::Data(format!(
                "{rows}. The data is loaded; fix or delete those rows on the source (catch-up carries the fix), then add the key on the target: {add}; {validate}"
            )));
        }
        notes.push(format!("foreign key {} added and validated", fk.describe()));
    }
    Ok(notes)
}

/// At a cutover: every key declared by any run on the target, validated where every
/// run it spans is now done. Returns what happened to each.
pub async fn validate_declared(client: &Session) -> Result<Vec<String>> {
    let keys = Store::new(client).declared_foreign_keys().await?;
    add_declared(client, &keys, false).await
}

/// Up to [`SHOWN`] referencing values without a referenced row, as text.
async fn offending_rows(client: &Session, fk: &DeclaredForeignKey) -> Result<Vec<String>> {
    let endpoint = client.endpoint();
    let cols: Vec<String> = fk.columns.iter().map(|c| format!("c.{}", quote_ident(c))).collect();
    let matches: Vec<String> =
        fk.columns.iter().zip(&fk.ref_columns).map(|(c, r)| format!("p.{} = c.{}", quote_ident(r), quote_ident(c))).collect();
    let sql = format!(
        "SELECT DISTINCT ROW({cols})::text FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {}) LIMIT {SHOWN}",
        qualified(&fk.table),
        cols.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND "),
        qualified(&fk.references),
        matches.join(" AND "),
        cols = cols.join(", ")
    );
    let rows = client.query(&sql, &[]).await.context(&endpoint, || "list rows breaking the foreign key".into())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

