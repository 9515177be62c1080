//! What the control API does: one background migrate (load, then follow) at a time,
//! cutovers on request, and status read from the target's `pgshift` schema.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pgshift_pipeline::cutover::CutoverOptions;
use pgshift_pipeline::catchup::FollowOptions;
use pgshift_pipeline::plan::MigrateOptions;
use pgshift_pipeline::source::postgres::PostgresSource;
use pgshift_pipeline::progress::Progress;
use pgshift_postgres::ConnInfo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// An HTTP error with a JSON body `{"error": "..."}`. Messages come from pgshift's
/// errors, which name servers by their redacted endpoint only.
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// The pipeline error's kind (as `pgshift_errors_total` labels it).
    kind: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: String) -> ApiError {
        ApiError { status, message, kind: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.kind {
            Some(kind) => json!({ "error": self.message, "kind": kind }),
            None => json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}

/// A pipeline error: `{"error": ..., "kind": ...}`, with a status that says whose move
/// it is (the request's, the run's, pgshift's, or a server's behind it).
impl From<pgshift_pipeline::error::Error> for ApiError {
    fn from(e: pgshift_pipeline::error::Error) -> Self {
        pgshift_pipeline::metrics::count_error(&e);
        let kind = e.kind();
        let status = match kind {
            "bad_setting" | "bad_url" => StatusCode::BAD_REQUEST,
            "preflight" => StatusCode::UNPROCESSABLE_ENTITY,
            "run_state" => StatusCode::CONFLICT,
            "internal" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError { status, message: e.to_string(), kind: Some(kind) }
    }
}

/// `POST /api/migrate` body; every field may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrateRequest {
    /// Continue the target's unfinished run.
    pub resume: bool,
    /// Stop after the load, keeping the slot (`--load-only`).
    pub load_only: bool,
}

/// `POST /api/cutover` body; every field may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CutoverRequest {
    pub dry_run: bool,
    pub reverse: bool,
    pub keep_source_writable: bool,
}

/// An empty body means the defaults.
pub fn parse_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

/// What a background job does (as `GET /api/status` shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Migrate,
    Resume,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobKind::Migrate => "migrate",
            JobKind::Resume => "resume",
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: u64,
    pub kind: JobKind,
    pub state: JobState,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub error: Option<String>,
}

pub struct Control {
    pub source: ConnInfo,
    pub target: ConnInfo,
    pub token: Option<String>,
    pub migrate: MigrateOptions,
    pub follow: FollowOptions,
    pub cutover: CutoverOptions,
    pub progress: Arc<dyn Progress>,
    job: Mutex<Option<Job>>,
    cutover_running: tokio::sync::Mutex<()>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

impl Control {
    pub fn new(
        (source, target): (ConnInfo, ConnInfo),
        token: Option<String>,
        (migrate, follow, cutover): (MigrateOptions, FollowOptions, CutoverOptions),
        progress: Arc<dyn Progress>,
    ) -> Control {
        Control {
            source,
            target,
            token,
            migrate,
            follow,
            cutover,
            progress,
            job: Mutex::new(None),
            cutover_running: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn status(&self) -> Result<Value, ApiError> {
        let run = pgshift_pipeline::run::status::status(Some(&self.source), &self.target).await?;
        let job = self.job.lock().unwrap().clone();
        let control_api = self.token.is_some();
        Ok(json!({ "source": self.source.endpoint(), "target": self.target.endpoint(), "job": job, "run": run, "control_api": control_api }))
    }

    pub async fn plan(&self) -> Result<Value, ApiError> {
        let options = MigrateOptions { dry_run: true, ..self.migrate.clone() };
        let silent: Arc<dyn Progress> = Arc::new(pgshift_pipeline::progress::Silent);
        let report = pgshift_pipeline::load::load(&PostgresSource::new(self.source.clone()), &self.target, &options, silent).await?;
        Ok(serde_json::to_value(report).expect("reports serialize"))
    }

    /// Starts the load (and then catch-up) in the background; refused while a job runs.
    pub fn start_migrate(self: &Arc<Self>, request: MigrateRequest) -> Result<Job, ApiError> {
        let job = {
            let mut slot = self.job.lock().unwrap();
            if let Some(running) = slot.as_ref().filter(|j| j.state == JobState::Running) {
                return Err(ApiError::new(StatusCode::CONFLICT, format!("job {} ({}) is still running", running.id, running.kind)));
            }
            let job = Job {
                id: slot.as_ref().map_or(1, |j| j.id + 1),
                kind: if request.resume { JobKind::Resume } else { JobKind::Migrate },
                state: JobState::Running,
                started_at: now(),
                finished_at: None,
                error: None,
            };
            *slot = Some(job.clone());
            job
        };
        let control = self.clone();
        tokio::spawn(async move {
            let result = control.run_migrate(&request).await;
            if let Err(e) = &result {
                pgshift_pipeline::metrics::count_error(e);
                tracing::error!("job failed: {e}");
            }
            if let Some(job) = control.job.lock().unwrap().as_mut() {
                job.state = if result.is_ok() { JobState::Succeeded } else { JobState::Failed };
                job.finished_at = Some(now());
                job.error = result.err().map(|e| e.to_string());
            }
        });
        Ok(job)
    }

    async fn run_migrate(&self, request: &MigrateRequest) -> pgshift_pipeline::error::Result<()> {
        let options = MigrateOptions { resume: request.resume, dry_run: false, ..self.migrate.clone() };
        pgshift_pipeline::load::load(&PostgresSource::new(self.source.clone()), &self.target, &options, self.progress.clone()).await?;
        if options.follow && !request.load_only {
            pgshift_pipeline::catchup::follow(&self.source, &self.target, &self.follow, self.progress.clone()).await?;
        }
        Ok(())
    }

    /// Runs a cutover now and answers with its report; one at a time.
    pub async fn cutover(&self, request: CutoverRequest) -> Result<Value, ApiError> {
        let Ok(_guard) = self.cutover_running.try_lock() else {
            return Err(ApiError::new(StatusCode::CONFLICT, "a cutover is already running".into()));
        };
        let options = CutoverOptions {
            dry_run: request.dry_run,
            reverse: request.reverse,
            keep_source_writable: request.keep_source_writable,
            ..self.cutover.clone()
        };
        let report = pgshift_pipeline::cutover::cutover(&self.source, &self.target, &options).await?;
        Ok(serde_json::to_value(report).expect("reports serialize"))
    }
}
