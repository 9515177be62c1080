//! `pgshift.embedding_cache`: vectors by model and content hash.

use super::Store;
use crate::error::Result;

impl Store<'_> {
    /// (hash, vector, whether its digest is recorded) of the cached ones among `hashes`.
    pub async fn cached_vectors(&self, model: &str, hashes: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Vec<u8>, bool)>> {
        let rows = self
            .query(
                "SELECT hash, vector, digest IS NOT NULL FROM pgshift.embedding_cache WHERE model = $1 AND hash = ANY($2)",
                &[&model, &hashes],
                "read the embedding cache",
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Caches vectors with their digests; an entry cached before digests were kept gets its digest.
    pub async fn cache_vectors(&self, model: &str, hashes: &[&Vec<u8>], vectors: &[Vec<u8>], digests: &[Vec<u8>]) -> Result<()> {
        self.execute(
            "INSERT INTO pgshift.embedding_cache (model, hash, vector, digest) SELECT $1, h, v, d FROM unnest($2::bytea[], $3::bytea[], $4::bytea[]) AS u(h, v, d) \
             ON CONFLICT (model, hash) DO UPDATE SET digest = EXCLUDED.digest WHERE embedding_cache.digest IS NULL",
            &[&model, &hashes, &vectors, &digests],
            || "write the embedding cache".into(),
        )
        .await?;
        Ok(())
    }
}
