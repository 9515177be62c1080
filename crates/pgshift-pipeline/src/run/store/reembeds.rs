//! `pgshift.reembeds`: each re-embed of a column, with its backfill checkpoint.

use super::Store;
use crate::error::Result;
use crate::plan::embedding::EmbeddingSpec;

/// A re-embed as `pgshift.reembeds` records it.
#[derive(Clone, Debug)]
pub struct ReembedState {
    pub spec: Option<EmbeddingSpec>,
    pub model: String,
    pub finished: bool,
    pub last_key: Option<Vec<String>>,
}

impl Store<'_> {
    pub async fn reembed(&self, table: &str, column: &str) -> Result<Option<ReembedState>> {
        let rows = self
            .query(
                "SELECT spec::text, model, phase = 'done', last_key FROM pgshift.reembeds WHERE table_name = $1 AND column_name = $2",
                &[&table, &column],
                "read pgshift.reembeds",
            )
            .await?;
        Ok(rows.first().map(|r| ReembedState {
            spec: serde_json::from_str(r.get(0)).ok(),
            model: r.get(1),
            finished: r.get(2),
            last_key: r.get(3),
        }))
    }

    /// Records a re-embed from its start (replacing a finished one of the same column).
    pub async fn start_reembed(&self, table: &str, spec: &EmbeddingSpec, model: &str) -> Result<()> {
        let spec_json = serde_json::to_string(spec).expect("spec serializes");
        self.execute(
            "INSERT INTO pgshift.reembeds (table_name, column_name, spec, model, phase) VALUES ($1, $2, $3::text::jsonb, $4, 'backfill') \
             ON CONFLICT (table_name, column_name) DO UPDATE SET spec = EXCLUDED.spec, model = EXCLUDED.model, phase = 'backfill', \
             last_key = NULL, rows_done = 0, started_at = now(), updated_at = now()",
            &[&table, &spec.column, &spec_json, &model],
            || "record the re-embed".into(),
        )
        .await?;
        Ok(())
    }

    /// The backfill's checkpoint; call in the transaction that wrote the batch.
    pub async fn checkpoint_reembed(&self, table: &str, column: &str, last_key: &[String], rows: u64) -> Result<()> {
        self.execute(
            "UPDATE pgshift.reembeds SET last_key = $3, rows_done = rows_done + $4, updated_at = now() WHERE table_name = $1 AND column_name = $2",
            &[&table, &column, &last_key, &(rows as i64)],
            || "checkpoint the backfill".into(),
        )
        .await?;
        Ok(())
    }

    pub async fn finish_reembed(&self, table: &str, column: &str) -> Result<()> {
        self.execute(
            "UPDATE pgshift.reembeds SET phase = 'done', updated_at = now() WHERE table_name = $1 AND column_name = $2",
            &[&table, &column],
            || "finish the re-embed".into(),
        )
        .await?;
        Ok(())
    }
}
