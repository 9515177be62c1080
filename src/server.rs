//! pgshift over HTTP: `/metrics` and `/health` for any command run with
//! `--metrics-addr`, and for `pgshift serve` also the status page, read-only progress
//! (`GET /api/status`: what `/metrics` already publishes, by run and table) and the
//! control API under `/api` (plan, migrate, cutover), which is off unless a token is
//! configured.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::jobs::{ApiError, Control};

/// `/metrics` and `/health`: never authenticated, never carry a secret (metric
/// labels are table names, phases and error kinds only).
pub fn metrics_routes() -> Router {
    Router::new()
        .route("/metrics", get(|| async { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], pgshift_pipeline::metrics::render()) }))
        .route("/health", get(|| async { Json(json!({ "ok": true })) }))
}

/// Everything `pgshift serve` answers.
pub fn serve_routes(control: Arc<Control>) -> Router {
    let controls = Router::new()
        .route("/plan", get(plan))
        .route("/migrate", post(start_migrate))
        .route("/cutover", post(cutover))
        .route_layer(middleware::from_fn_with_state(control.clone(), require_token));
    let api = Router::new().route("/status", get(status)).merge(controls).with_state(control);
    metrics_routes()
        .route("/", get(|| async { Html(include_str!("status_page.html")) }))
        .nest("/api", api)
}

/// Binds first (so a taken port is an error the user sees at once), then serves in
/// the background until the process ends.
pub async fn spawn(addr: &str, what: &str, router: Router) -> anyhow::Result<SocketAddr> {
    let listener = bind(addr, what).await?;
    let local = listener.local_addr()?;
    let what = what.to_string();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("{what} server stopped: {e}");
        }
    });
    Ok(local)
}

pub async fn bind(addr: &str, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let parsed: SocketAddr = addr.parse().with_context(|| format!("{what} address {addr:?}: write host:port, e.g. 127.0.0.1:9187"))?;
    tokio::net::TcpListener::bind(parsed).await.with_context(|| format!("cannot listen on {parsed} for {what}"))
}

/// The bearer token, compared in constant time. A failure says only "unauthorized",
/// whichever part was wrong.
async fn require_token(State(control): State<Arc<Control>>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let Some(token) = control.token.as_deref() else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the control API is off: set PGSHIFT_API_TOKEN (or [api] token_file in the config) and restart pgshift serve".into(),
        )
        .into_response();
    };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token).unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        next.run(request).await
    } else {
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized".into()).into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        response
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme is
/// case-insensitive (RFC 9110), the token is not.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start())
}

async fn status(State(control): State<Arc<Control>>) -> Result<Json<serde_json::Value>, ApiError> {
    control.status().await.map(Json)
}

async fn plan(State(control): State<Arc<Control>>) -> Result<Json<serde_json::Value>, ApiError> {
    control.plan().await.map(Json)
}

async fn start_migrate(State(control): State<Arc<Control>>, body: axum::body::Bytes) -> Result<impl IntoResponse, ApiError> {
    let request = crate::jobs::parse_body(&body)?;
    let job = control.start_migrate(request)?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

async fn cutover(State(control): State<Arc<Control>>, body: axum::body::Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let request = crate::jobs::parse_body(&body)?;
    control.cutover(request).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
