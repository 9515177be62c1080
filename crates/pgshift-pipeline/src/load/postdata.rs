//! Post-data: keys, constraints and indexes in parallel after the load, then foreign
//! keys NOT VALID (instant) and VALIDATE (a scan that does not block writes).
//! Steps whose object already exists are skipped, so a resumed run picks up where
//! the last one stopped.

use std::sync::Arc;

use pgshift_postgres::Session;
use pgshift_postgres::ddl::{PostDataKind, PostDataStep};
use pgshift_postgres::error::Context;
use pgshift_postgres::ConnInfo;

use crate::error::Result;
use crate::progress::Progress;
use crate::workers::run_workers;

pub struct PostDataOptions {
    pub jobs: usize,
    /// Per index-building session; PostgreSQL's default of 64MB makes big sorts spill.
    pub maintenance_work_mem: String,
}

pub async fn run(target: &ConnInfo, steps: &[PostDataStep], options: &PostDataOptions, progress: Arc<dyn Progress>) -> Result<()> {
    let settings = format!(
        "SET maintenance_work_mem = '{}'; SET max_parallel_maintenance_workers = 2",
        options.maintenance_work_mem.replace('\'', "")
    );
    crate::metrics::INDEX_STEPS_TOTAL.set(steps.len() as i64);
    crate::metrics::INDEX_STEPS_DONE.set(0);
    for kind in [PostDataKind::Index, PostDataKind::ForeignKey, PostDataKind::Validate, PostDataKind::Comment] {
        let batch: Vec<PostDataStep> = steps.iter().filter(|s| s.kind == kind).cloned().collect();
        // Foreign keys take locks on two tables each: one at a time avoids deadlocks.
        let jobs = if kind == PostDataKind::ForeignKey { 1 } else { options.jobs };
        run_workers(jobs, batch, |queue| {
            let (target, progress, settings) = (target.clone(), progress.clone(), settings.clone());
            async move {
                let client = target.session().await?;
                client.batch_execute(&settings).await.context(&target.endpoint(), || "configure index session".into())?;
                while let Some(step) = queue.pop() {
                    if !already_done(&client, &step).await? {
                        progress.step(&format!("{}: {}", step.table, first_words(&step.sql)));
                        client.batch_execute(&step.sql).await.context(&target.endpoint(), || step.sql.clone())?;
                    }
                    crate::metrics::INDEX_STEPS_DONE.inc();
                }
                Ok(())
            }
        })
        .await?;
    }
    Ok(())
}

async fn already_done(client: &Session, step: &PostDataStep) -> Result<bool> {
    let endpoint = client.endpoint();
    let sql = match step.kind {
        PostDataKind::Comment => return Ok(false),
        PostDataKind::Validate => {
            "SELECT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = $1 AND t.relname = $2 \
             AND c.conname = $3 AND c.convalidated)"
        }
        PostDataKind::Index | PostDataKind::ForeignKey => {
            "SELECT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = $1 AND t.relname = $2 AND c.conname = $3) \
             OR EXISTS (SELECT 1 FROM pg_class i JOIN pg_namespace n ON n.oid = i.relnamespace \
             WHERE n.nspname = $1 AND i.relname = $3 AND i.relkind IN ('i', 'I'))"
        }
    };
    let row = client.query_one(sql, &[&step.schema, &step.relname, &step.object]).await.context(&endpoint, || "check post-data state".into())?;
    Ok(row.get(0))
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
}
