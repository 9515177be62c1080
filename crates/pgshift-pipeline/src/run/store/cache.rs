//! `pgshift.embedding_cache`: vectors by model and content hash.

use super::Store;
use crate::error::Result;

impl Store<'_> {
    pub async fn cached_vectors(&self, model: &str, hashes: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = self
            .query(
                "SELECT hash, vector FROM pgshift.embedding_cache WHERE model = $1 AND hash = ANY($2)",
                &[&model, &hashes],
                "read the embedding cache",
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn cache_vectors(&self, model: &str, hashes: &[&Vec<u8>], vectors: &[Vec<u8>]) -> Result<()> {
        self.execute(
            "INSERT INTO pgshift.embedding_cache (model, hash, vector) SELECT $1, h, v FROM unnest($2::bytea[], $3::bytea[]) AS u(h, v) \
             ON CONFLICT DO NOTHING",
            &[&model, &hashes, &vectors],
            || "write the embedding cache".into(),
        )
        .await?;
        Ok(())
    }
}
