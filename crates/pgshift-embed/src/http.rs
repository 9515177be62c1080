//! Remote embedding servers: OpenAI-compatible `POST .../v1/embeddings` and
//! text-embeddings-inference `POST .../embed`. Texts go in batches, several batches
//! at once up to a concurrency limit shared by every caller, and failed requests
//! (connection errors, 429, 5xx) are retried with exponential backoff.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{normalize, EmbedError, Embedder, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `{"model", "input": [...]}` -> `{"data": [{"index", "embedding"}]}`
    OpenAi,
    /// `{"inputs": [...]}` -> `[[...], ...]`
    Tei,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The endpoint, e.g. http://tei:8080/embed or https://api.openai.com/v1/embeddings.
    pub url: String,
    /// The model name sent to OpenAI-compatible servers and used in cache keys.
    pub model: String,
    pub dims: usize,
    /// Sent as `Authorization: Bearer`; never logged or shown.
    pub api_key: Option<String>,
    pub batch_size: usize,
    /// Requests in flight at once, over all callers.
    pub concurrency: usize,
    /// Attempts after the first one.
    pub retries: u32,
    pub timeout: Duration,
}

impl HttpConfig {
    pub fn new(url: &str, model: &str, dims: usize) -> HttpConfig {
        HttpConfig {
            url: url.to_string(),
            model: model.to_string(),
            dims,
            api_key: None,
            batch_size: 64,
            concurrency: 4,
            retries: 5,
            timeout: Duration::from_secs(60),
        }
    }

    /// Which API the URL speaks: a path ending in `/embed` is TEI, anything else OpenAI.
    pub fn api(&self) -> Api {
        let path = self.url.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
        if path.ends_with("/embed") {
            Api::Tei
        } else {
            Api::OpenAi
        }
    }
}

/// `scheme://host[:port]/path` without user info or query: safe to show.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{rest}")
}

pub struct HttpEmbedder {
    config: HttpConfig,
    endpoint: String,
    client: reqwest::blocking::Client,
    in_flight: Mutex<usize>,
    freed: Condvar,
}

impl HttpEmbedder {
    pub fn new(config: HttpConfig) -> Result<HttpEmbedder> {
        let endpoint = redact(&config.url);
        let client = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| EmbedError::Setup(format!("embedding server {endpoint}: {e}")))?;
        Ok(HttpEmbedder { config, endpoint, client, in_flight: Mutex::new(0), freed: Condvar::new() })
    }

    fn remote(&self, message: String) -> EmbedError {
        EmbedError::Remote { endpoint: self.endpoint.clone(), message }
    }

    /// One batch, retried; holds one of the concurrency slots while it runs.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let _slot = self.acquire();
        let mut attempt = 0;
        loop {
            match self.request(texts) {
                Ok(v) => return Ok(v),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(e, _)) if attempt >= self.config.retries => {
                    return Err(self.remote(format!("{e} (gave up after {} attempts)", attempt + 1)));
                }
                Err(Failure::Retry(e, wait)) => {
                    let backoff = wait.unwrap_or_else(|| Duration::from_millis(200 * 2u64.pow(attempt.min(6))));
                    tracing::warn!(endpoint = %self.endpoint, attempt, "embedding request failed, retrying in {backoff:?}: {e}");
                    std::thread::sleep(backoff);
                    attempt += 1;
                }
            }
        }
    }

    fn request(&self, texts: &[&str]) -> std::result::Result<Vec<Vec<f32>>, Failure> {
        let body = match self.config.api() {
            Api::OpenAi => json!({ "model": self.config.model, "input": texts }),
            Api::Tei => json!({ "inputs": texts, "normalize": true, "truncate": true }),
        };
        let mut request = self.client.post(&self.config.url).json(&body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().map_err(|e| Failure::Retry(describe(&e), None))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().map_err(|e| Failure::Retry(describe(&e), None))?;
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Failure::Retry(format!("HTTP {status}"), retry_after));
        }
        if !status.is_success() {
            let snippet: String = text.chars().take(300).collect();
            return Err(Failure::Final(self.remote(format!("HTTP {status}: {snippet}"))));
        }
        let value: Value = serde_json::from_str(&text).map_err(|e| Failure::Final(self.remote(format!("answer is not JSON: {e}"))))?;
        let mut vectors = self.parse(&value, texts.len()).map_err(|m| Failure::Final(self.remote(m)))?;
        for v in &mut vectors {
            if v.len() != self.config.dims {
                return Err(Failure::Final(EmbedError::Dimensions {
                    model: self.config.model.clone(),
                    expected: self.config.dims,
                    actual: v.len(),
                }));
            }
            normalize(v);
        }
        Ok(vectors)
    }

    fn parse(&self, value: &Value, count: usize) -> std::result::Result<Vec<Vec<f32>>, String> {
        let floats = |v: &Value| -> Option<Vec<f32>> { v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect() };
        let vectors: Option<Vec<Vec<f32>>> = match self.config.api() {
            Api::Tei => value.as_array().and_then(|a| a.iter().map(floats).collect()),
            Api::OpenAi => value["data"].as_array().and_then(|data| {
                let mut out = vec![Vec::new(); data.len()];
                for item in data {
                    let i = item["index"].as_u64()? as usize;
                    *out.get_mut(i)? = floats(&item["embedding"])?;
                }
                Some(out)
            }),
        };
        match vectors {
            Some(v) if v.len() == count => Ok(v),
            Some(v) => Err(format!("asked for {count} vectors, got {}", v.len())),
            None => Err(format!("unexpected answer shape for the {:?} API", self.config.api())),
        }
    }

    fn acquire(&self) -> Slot<'_> {
        let mut n = self.in_flight.lock().unwrap();
        while *n >= self.config.concurrency.max(1) {
            n = self.freed.wait(n).unwrap();
        }
        *n += 1;
        Slot(self)
    }
}

type BatchResult = Result<Vec<Vec<f32>>>;

enum Failure {
    /// Worth another try, after the server's Retry-After if it gave one.
    Retry(String, Option<Duration>),
    Final(EmbedError),
}

/// reqwest's error text without the URL (which may carry a key in its query).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_string(),
    }
}

struct Slot<'a>(&'a HttpEmbedder);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.in_flight.lock().unwrap() -= 1;
        self.0.freed.notify_one();
    }
}

impl Embedder for HttpEmbedder {
    fn model(&self) -> &str {
        &self.config.model
    }

    fn dims(&self) -> usize {
        self.config.dims
    }

    /// Batches go out in parallel (up to the concurrency limit); results keep input order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let batches: Vec<&[&str]> = texts.chunks(self.config.batch_size.max(1)).collect();
        let results: Vec<Mutex<Option<BatchResult>>> = batches.iter().map(|_| Mutex::new(None)).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let senders = self.config.concurrency.clamp(1, batches.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..senders {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else { break };
                    let result = self.embed_batch(batch);
                    let failed = result.is_err();
                    *results[i].lock().unwrap() = Some(result);
                    if failed {
                        // The call fails anyway: stop taking new batches.
                        next.store(batches.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        let mut out = Vec::with_capacity(texts.len());
        // A batch left undone (None) only follows a failed one, whose error is returned.
        for r in results.into_iter().filter_map(|r| r.into_inner().unwrap()) {
            out.extend(r?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials_and_select_the_api() {
        assert_eq!(redact("https://user:key@api.example.com/v1/embeddings?key=s3cret"), "https://api.example.com/v1/embeddings");
        assert_eq!(HttpConfig::new("http://tei:8080/embed", "m", 3).api(), Api::Tei);
        assert_eq!(HttpConfig::new("http://x/v1/embeddings", "m", 3).api(), Api::OpenAi);
    }
}
