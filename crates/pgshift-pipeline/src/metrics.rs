//! Every Prometheus metric pgshift exports, in one place. Labels carry table names,
//! phases, operation kinds and embedding endpoints without credentials or query:
//! never connection strings or values.

use std::sync::LazyLock;

use prometheus::{
    register_counter_vec_with_registry, register_gauge_with_registry, register_histogram_vec_with_registry, register_histogram_with_registry, register_int_counter_vec_with_registry,
    register_int_counter_with_registry, register_int_gauge_vec_with_registry, register_int_gauge_with_registry, core::Collector, Encoder, Gauge,
    CounterVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

macro_rules! metric {
    ($name:ident: $ty:ty = $register:ident($($arg:expr),+)) => {
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $register!($($arg),+, &*REGISTRY).expect(concat!("register ", stringify!($name))));
    };
}

/// What a pgshift process is doing: the `phase` label of `pgshift_phase` (the current
/// one is 1, the others 0) and the phase progress reports show. Not a run's phase
/// (`run::Phase`, recorded on the target), which moves only forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Inspect,
    Schema,
    Copy,
    PostData,
    CatchUp,
    Cutover,
    Done,
}

impl Stage {
    pub const ALL: [Stage; 7] = [Stage::Inspect, Stage::Schema, Stage::Copy, Stage::PostData, Stage::CatchUp, Stage::Cutover, Stage::Done];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Inspect => "inspect",
            Stage::Schema => "schema",
            Stage::Copy => "copy",
            Stage::PostData => "post-data",
            Stage::CatchUp => "catch-up",
            Stage::Cutover => "cutover",
            Stage::Done => "done",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

metric!(PHASE: IntGaugeVec = register_int_gauge_vec_with_registry("pgshift_phase", "1 for the phase pgshift is in", &["phase"]));
metric!(ROWS_COPIED: IntCounterVec = register_int_counter_vec_with_registry("pgshift_rows_copied_total", "Rows copied by the bulk load", &["table"]));
metric!(BYTES_COPIED: IntCounterVec = register_int_counter_vec_with_registry("pgshift_bytes_copied_total", "COPY bytes streamed by the bulk load", &["table"]));
metric!(CHUNKS_TOTAL: IntGauge = register_int_gauge_with_registry("pgshift_chunks_total", "Chunks this run copies"));
metric!(CHUNKS_DONE: IntGauge = register_int_gauge_with_registry("pgshift_chunks_done", "Chunks copied and checkpointed"));
metric!(COPY_WORKERS: IntGauge = register_int_gauge_with_registry("pgshift_copy_workers", "Processes copying the run's chunks (this one and pgshift worker processes seen in the last 30 s)"));
metric!(INDEX_STEPS_TOTAL: IntGauge = register_int_gauge_with_registry("pgshift_index_builds_total", "Indexes and constraints to build after the load"));
metric!(INDEX_STEPS_DONE: IntGauge = register_int_gauge_with_registry("pgshift_index_builds_done", "Indexes and constraints built"));
metric!(VECTOR_INDEX_PROGRESS: Gauge = register_gauge_with_registry(
    "pgshift_vector_index_build_ratio",
    "Share of the current vector index build done (0 to 1), from pg_stat_progress_create_index"
));
metric!(LAG_BYTES: IntGauge = register_int_gauge_with_registry("pgshift_replication_lag_bytes", "WAL the target has not applied yet"));
metric!(LAG_SECONDS: Gauge = register_gauge_with_registry("pgshift_replication_lag_seconds", "Age of the newest applied change while behind"));
metric!(APPLIED: IntCounterVec = register_int_counter_vec_with_registry(
    "pgshift_applied_changes_total",
    "Row changes applied by catch-up",
    &["op"]
));
metric!(APPLY_FALLBACKS: IntCounter = register_int_counter_with_registry(
    "pgshift_apply_fallbacks_total",
    "Catch-up batches re-applied change by change in source order after a set-based statement collided (unique or exclusion constraints)"
));
metric!(SCHEMA_CHANGES: IntCounter = register_int_counter_with_registry(
    "pgshift_schema_changes_total",
    "Schema changes on the source that catch-up made on the target too"
));
metric!(RECONNECTS: IntCounter = register_int_counter_with_registry(
    "pgshift_reconnects_total",
    "Times catch-up lost a connection to the source or target and reconnected"
));
metric!(APPLY_BATCH_SECONDS: Histogram = register_histogram_with_registry(
    "pgshift_apply_batch_seconds",
    "Time to write and commit one catch-up batch on the target",
    vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
));
metric!(EMBEDDINGS: IntCounter = register_int_counter_with_registry("pgshift_embeddings_total", "Vectors computed by the embedding stage"));
metric!(EMBEDDING_CACHE_HITS: IntCounter = register_int_counter_with_registry(
    "pgshift_embedding_cache_hits_total",
    "Vectors reused instead of computed: from the content-hash cache or a text repeated in the same batch"
));
metric!(EMBEDDING_TRUNCATED: IntCounter = register_int_counter_with_registry(
    "pgshift_embedding_truncated_texts_total",
    "Texts longer than the model's window, so embedded from their start only (a chunk table embeds them whole)"
));
metric!(EMBEDDING_LONGEST_TOKENS: IntGauge = register_int_gauge_with_registry(
    "pgshift_embedding_longest_text_tokens",
    "Tokens of the longest text embedded into a column (beyond the model's window it was cut)"
));
metric!(EMBEDDING_BATCH_SECONDS: Histogram = register_histogram_with_registry(
    "pgshift_embedding_batch_seconds",
    "Time to embed one batch",
    vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
));
metric!(EMBEDDING_QUEUE: IntGauge = register_int_gauge_with_registry("pgshift_embedding_queue_depth", "Rows waiting for the embedding workers"));
metric!(EMBEDDING_REQUESTS: IntCounterVec = register_int_counter_vec_with_registry(
    "pgshift_embedding_requests_total",
    "Requests to embedding servers, by endpoint (shown without credentials) and outcome (ok, error)",
    &["endpoint", "outcome"]
));
metric!(EMBEDDING_REQUEST_TEXTS: IntCounterVec = register_int_counter_vec_with_registry(
    "pgshift_embedding_request_texts_total",
    "Texts embedded by each embedding server (rate() is its texts/s)",
    &["endpoint"]
));
metric!(EMBEDDING_REQUEST_SECONDS: HistogramVec = register_histogram_vec_with_registry(
    "pgshift_embedding_request_seconds",
    "Time of one request to an embedding server",
    &["endpoint"],
    vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
));
metric!(EMBEDDING_ENDPOINT_BUSY: CounterVec = register_counter_vec_with_registry(
    "pgshift_embedding_endpoint_busy_seconds_total",
    "Time each embedding server had requests in flight (rate() is its utilisation, 0 to 1)",
    &["endpoint"]
));
metric!(VECTORIZE_BACKLOG: IntGaugeVec = register_int_gauge_vec_with_registry(
    "pgshift_vectorize_backlog_rows",
    "Rows whose text has no vector yet (or whose chunks are stale), by table, as vectorize last counted them",
    &["table"]
));
metric!(VECTORIZE_LAG: Gauge = register_gauge_with_registry(
    "pgshift_vectorize_lag_seconds",
    "Age of the oldest text vectorize has not embedded yet (0 with no backlog; texts written before it started count from its start)"
));
metric!(VECTORIZE_ROWS: IntCounterVec = register_int_counter_vec_with_registry(
    "pgshift_vectorize_rows_total",
    "Rows vectorize embedded (or re-chunked), by table (rate() is rows per second)",
    &["table"]
));
metric!(ERRORS: IntCounterVec = register_int_counter_vec_with_registry("pgshift_errors_total", "Errors that stopped a command, by kind", &["kind"]));

/// Every metric, registered on first use.
fn all() -> [&'static dyn Collector; 30] {
    [
        &*PHASE,
        &*ROWS_COPIED,
        &*BYTES_COPIED,
        &*CHUNKS_TOTAL,
        &*CHUNKS_DONE,
        &*COPY_WORKERS,
        &*INDEX_STEPS_TOTAL,
        &*INDEX_STEPS_DONE,
        &*VECTOR_INDEX_PROGRESS,
        &*LAG_BYTES,
        &*LAG_SECONDS,
        &*APPLIED,
        &*APPLY_FALLBACKS,
        &*SCHEMA_CHANGES,
        &*RECONNECTS,
        &*APPLY_BATCH_SECONDS,
        &*EMBEDDINGS,
        &*EMBEDDING_CACHE_HITS,
        &*EMBEDDING_TRUNCATED,
        &*EMBEDDING_LONGEST_TOKENS,
        &*EMBEDDING_BATCH_SECONDS,
        &*EMBEDDING_QUEUE,
        &*EMBEDDING_REQUESTS,
        &*EMBEDDING_REQUEST_TEXTS,
        &*EMBEDDING_REQUEST_SECONDS,
        &*EMBEDDING_ENDPOINT_BUSY,
        &*VECTORIZE_BACKLOG,
        &*VECTORIZE_LAG,
        &*VECTORIZE_ROWS,
        &*ERRORS,
    ]
}

/// Registers every metric, and the label values known in advance, so /metrics
/// shows them from the start (tables appear once their copy begins).
pub fn init() {
    all();
    for stage in Stage::ALL {
        PHASE.with_label_values(&[stage.as_str()]).set(0);
    }
    for op in ["insert", "update", "delete", "truncate"] {
        APPLIED.with_label_values(&[op]);
    }
}

pub fn set_phase(now: Stage) {
    for stage in Stage::ALL {
        PHASE.with_label_values(&[stage.as_str()]).set((stage == now) as i64);
    }
}

/// The text exposition format for /metrics.
pub fn render() -> String {
    let mut out = Vec::new();
    TextEncoder::new().encode(&REGISTRY.gather(), &mut out).expect("text encoding");
    String::from_utf8(out).expect("metrics are UTF-8")
}

/// Names of every exported metric (the dashboard test checks against them).
pub fn names() -> Vec<String> {
    all().iter().flat_map(|c| c.desc()).map(|d| d.fq_name.clone()).collect()
}

/// Counts every request to an embedding server, per endpoint.
pub struct EmbeddingRequests;

impl pgshift_embed::http::Observer for EmbeddingRequests {
    fn request(&self, endpoint: &str, texts: usize, seconds: f64, ok: bool) {
        EMBEDDING_REQUESTS.with_label_values(&[endpoint, if ok { "ok" } else { "error" }]).inc();
        EMBEDDING_REQUEST_SECONDS.with_label_values(&[endpoint]).observe(seconds);
        if ok {
            EMBEDDING_REQUEST_TEXTS.with_label_values(&[endpoint]).inc_by(texts as u64);
        }
    }

    fn busy(&self, endpoint: &str, seconds: f64) {
        EMBEDDING_ENDPOINT_BUSY.with_label_values(&[endpoint]).inc_by(seconds);
    }
}

/// What each embedding server did for this process, as the load reports it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EndpointUse {
    pub endpoint: String,
    pub requests: u64,
    pub failed: u64,
    pub texts: u64,
    /// Time spent in its successful and failed requests, summed over concurrent ones.
    pub request_seconds: f64,
    /// Time it had at least one request in flight.
    pub busy_seconds: f64,
}

/// Every embedding endpoint used so far, from the counters above.
pub fn embedding_endpoints() -> Vec<EndpointUse> {
    let mut by_endpoint: std::collections::BTreeMap<String, EndpointUse> = Default::default();
    let mut each = |metric: &dyn Collector, add: &dyn Fn(&mut EndpointUse, &prometheus::proto::Metric)| {
        for m in metric.collect().iter().flat_map(|family| family.get_metric()) {
            add(by_endpoint.entry(label(m, "endpoint")).or_default(), m);
        }
    };
    each(&*EMBEDDING_REQUESTS, &|e, m| {
        let n = m.get_counter().get_value() as u64;
        e.requests += n;
        if label(m, "outcome") == "error" {
            e.failed += n;
        }
    });
    each(&*EMBEDDING_REQUEST_TEXTS, &|e, m| e.texts += m.get_counter().get_value() as u64);
    each(&*EMBEDDING_REQUEST_SECONDS, &|e, m| e.request_seconds += m.get_histogram().get_sample_sum());
    each(&*EMBEDDING_ENDPOINT_BUSY, &|e, m| e.busy_seconds += m.get_counter().get_value());
    by_endpoint.into_iter().map(|(endpoint, e)| EndpointUse { endpoint, ..e }).collect()
}

/// A sample's value of label `name` ("" without it).
fn label(m: &prometheus::proto::Metric, name: &str) -> String {
    m.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_string()).unwrap_or_default()
}

/// Counts an error that stopped a command.
pub fn count_error(e: &crate::error::Error) {
    ERRORS.with_label_values(&[e.kind()]).inc();
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_listed_from_the_start_with_the_prefix() {
        let names = super::names();
        for expected in ["pgshift_rows_copied_total", "pgshift_replication_lag_bytes", "pgshift_apply_batch_seconds", "pgshift_errors_total"] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        assert!(names.iter().all(|n| n.starts_with("pgshift_")), "{names:?}");
    }
}
