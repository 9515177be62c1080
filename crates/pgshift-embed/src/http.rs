//! Remote embedding servers: OpenAI-compatible `POST .../v1/embeddings` and
//! text-embeddings-inference `POST .../embed`, one or a fleet of them serving the same
//! model. Texts go in batches, several at once; each batch goes to the endpoint with
//! the fewest requests in flight, within each endpoint's own concurrency limit. A
//! request that fails (connection error, timeout, 429, 5xx) rests its endpoint for a
//! while (longer each time in a row, or the server's Retry-After) and its batch goes
//! to another; a batch's result is used once, so nothing is embedded twice or lost.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{normalize, EmbedError, Embedder, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `{"model", "input": [...]}` -> `{"data": [{"index", "embedding"}]}`
    OpenAi,
    /// `{"inputs": [...]}` -> `[[...], ...]`
    Tei,
}

/// Told about every request, e.g. to count them per endpoint in metrics.
pub trait Observer: Send + Sync {
    /// `endpoint` is shown without credentials; `ok` is false for a failed request.
    fn request(&self, endpoint: &str, texts: usize, seconds: f64, ok: bool);
    /// The endpoint had requests in flight for `seconds` without a pause (its busy time).
    fn busy(&self, _endpoint: &str, _seconds: f64) {}
}

#[derive(Clone)]
pub struct HttpConfig {
    /// The endpoints, serving the same model, e.g. http://tei:8080/embed or
    /// https://api.openai.com/v1/embeddings.
    pub urls: Vec<String>,
    /// The model name sent to OpenAI-compatible servers and used in cache keys.
    pub model: String,
    pub dims: usize,
    /// Sent as `Authorization: Bearer`; never logged or shown.
    pub api_key: Option<String>,
    pub batch_size: usize,
    /// Requests in flight at once per endpoint, over all callers.
    pub concurrency: usize,
    /// Attempts after the first one, per batch (each may go to another endpoint).
    pub retries: u32,
    pub timeout: Duration,
    pub observer: Option<Arc<dyn Observer>>,
}

impl HttpConfig {
    pub fn new(url: &str, model: &str, dims: usize) -> HttpConfig {
        HttpConfig::fleet(&[url.to_string()], model, dims)
    }

    /// Several endpoints serving the same model.
    pub fn fleet(urls: &[String], model: &str, dims: usize) -> HttpConfig {
        HttpConfig {
            urls: urls.to_vec(),
            model: model.to_string(),
            dims,
            api_key: None,
            batch_size: 64,
            concurrency: 4,
            retries: 5,
            timeout: Duration::from_secs(60),
            observer: None,
        }
    }
}

/// Which API a URL speaks: a path ending in `/embed` is TEI, anything else OpenAI.
pub fn api_of(url: &str) -> Api {
    let path = url.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
    if path.ends_with("/embed") {
        Api::Tei
    } else {
        Api::OpenAi
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
    endpoints: Vec<Endpoint>,
    /// Built on first use, on an embedding thread: reqwest's blocking client starts a
    /// runtime of its own, which cannot be made (or dropped) inside pgshift's async one.
    client: OnceLock<std::result::Result<reqwest::blocking::Client, String>>,
    load: Mutex<Vec<Load>>,
    freed: Condvar,
}

struct Endpoint {
    url: String,
    /// Without credentials or query: safe to show.
    shown: String,
    api: Api,
    /// What the server says of its limits, asked once on first use.
    limits: OnceLock<Limits>,
}

/// A server's stated limits per request (TEI's `GET /info`); OpenAI-compatible servers
/// and infinity state none, and then `batch_size` rows is the only limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_texts: Option<usize>,
    pub max_tokens: Option<usize>,
    /// Longer texts are truncated to this many tokens by the server.
    pub max_input_tokens: Option<usize>,
}

impl Limits {
    /// TEI's `/info` answer.
    pub fn from_tei_info(info: &Value) -> Limits {
        let number = |key: &str| info[key].as_u64().map(|n| n as usize).filter(|&n| n > 0);
        Limits { max_texts: number("max_client_batch_size"), max_tokens: number("max_batch_tokens"), max_input_tokens: number("max_input_length") }
    }

    /// How many of `texts`, from the first, one request may carry (at least one: a
    /// single text over the token budget is the server's to truncate).
    pub fn fitting(&self, texts: &[&str], batch_size: usize) -> usize {
        let rows = batch_size.max(1).min(self.max_texts.unwrap_or(usize::MAX)).min(texts.len());
        let Some(budget) = self.max_tokens else { return rows };
        let mut used = 0;
        for (n, text) in texts[..rows].iter().enumerate() {
            used += self.estimated_tokens(text);
            if used > budget {
                return n.max(1);
            }
        }
        rows
    }

    /// Without the model's tokenizer: about a token per three bytes (WordPiece and BPE
    /// average nearer four on prose), plus the special tokens; at most the input limit.
    fn estimated_tokens(&self, text: &str) -> usize {
        (text.len().div_ceil(3) + 2).min(self.max_input_tokens.unwrap_or(usize::MAX))
    }
}

/// An endpoint's state, under [`HttpEmbedder::load`].
#[derive(Default)]
struct Load {
    in_flight: usize,
    /// Failures in a row: each one rests the endpoint longer.
    failures: u32,
    resting_until: Option<Instant>,
    /// Since when requests have been in flight without a pause.
    busy_since: Option<Instant>,
}

/// How long an endpoint rests after failing `failures` times in a row.
fn rest(failures: u32) -> Duration {
    Duration::from_millis(200 * 2u64.pow(failures.saturating_sub(1).min(7)))
}

impl HttpEmbedder {
    pub fn new(config: HttpConfig) -> Result<HttpEmbedder> {
        if config.urls.is_empty() {
            return Err(EmbedError::Setup("embedding server: no URL given".into()));
        }
        let endpoints: Vec<Endpoint> =
            config.urls.iter().map(|url| Endpoint { url: url.clone(), shown: redact(url), api: api_of(url), limits: OnceLock::new() }).collect();
        let load = Mutex::new(endpoints.iter().map(|_| Load::default()).collect());
        Ok(HttpEmbedder { config, endpoints, client: OnceLock::new(), load, freed: Condvar::new() })
    }

    fn client(&self) -> Result<&reqwest::blocking::Client> {
        let built = self.client.get_or_init(|| reqwest::blocking::Client::builder().timeout(self.config.timeout).build().map_err(|e| e.to_string()));
        built.as_ref().map_err(|e| EmbedError::Setup(format!("embedding server {}: {e}", self.endpoints[0].shown)))
    }

    /// One batch: each request to the least busy endpoint that is not resting, sized to
    /// what that endpoint says it takes; a failure rests that endpoint and the rest of
    /// the batch tries another (or the same, once rested). Vectors already received are
    /// kept, so nothing is asked twice after a success.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        let mut attempt = 0;
        while out.len() < texts.len() {
            let i = self.acquire();
            let endpoint = &self.endpoints[i];
            let left = &texts[out.len()..];
            let piece = &left[..self.limits(endpoint).fitting(left, self.config.batch_size)];
            let started = Instant::now();
            let result = self.request(endpoint, piece);
            if let Some(observer) = &self.config.observer {
                observer.request(&endpoint.shown, piece.len(), started.elapsed().as_secs_f64(), result.is_ok());
            }
            self.release(i, match &result {
                Err(Failure::Retry(_, wait)) => Some(*wait),
                _ => None,
            });
            match result {
                Ok(v) => {
                    out.extend(v);
                    attempt = 0;
                }
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(e, _)) if attempt >= self.config.retries => {
                    return Err(remote(endpoint, format!("{e} (gave up after {} attempts)", attempt + 1)));
                }
                Err(Failure::Retry(e, _)) => {
                    let elsewhere = if self.endpoints.len() > 1 { ", the batch goes to another endpoint" } else { "" };
                    tracing::warn!(endpoint = %endpoint.shown, attempt, "embedding request failed{elsewhere}: {e}");
                    attempt += 1;
                }
            }
        }
        Ok(out)
    }

    /// The endpoint's limits: asked of a TEI server once (`GET .../info` beside its
    /// `/embed`); unknown (none) when it does not answer or speaks another API.
    fn limits(&self, endpoint: &Endpoint) -> Limits {
        *endpoint.limits.get_or_init(|| {
            let (Api::Tei, Ok(client)) = (endpoint.api, self.client()) else { return Limits::default() };
            let base = endpoint.url.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
            let info = format!("{}/info", base.strip_suffix("/embed").unwrap_or(base));
            let mut request = client.get(&info).timeout(Duration::from_secs(10));
            if let Some(key) = &self.config.api_key {
                request = request.bearer_auth(key);
            }
            match request.send().and_then(|r| r.error_for_status()).and_then(|r| r.json::<Value>()) {
                Ok(value) => Limits::from_tei_info(&value),
                Err(e) => {
                    tracing::info!(endpoint = %endpoint.shown, "no limits from its /info ({}): batches of --embed-batch rows", describe(&e));
                    Limits::default()
                }
            }
        })
    }

    /// Waits for an endpoint with a free slot that is not resting; takes the slot.
    fn acquire(&self) -> usize {
        let limit = self.config.concurrency.max(1);
        let mut load = self.load.lock().unwrap();
        loop {
            let now = Instant::now();
            let free = (0..load.len())
                .filter(|&i| load[i].in_flight < limit && load[i].resting_until.is_none_or(|t| t <= now))
                .min_by_key(|&i| load[i].in_flight);
            if let Some(i) = free {
                load[i].in_flight += 1;
                load[i].busy_since.get_or_insert(now);
                return i;
            }
            // Every endpoint is busy or resting: wait for a slot, or the first rest to end.
            load = match load.iter().filter_map(|l| l.resting_until).filter(|t| *t > now).min() {
                Some(until) => self.freed.wait_timeout(load, until - now).unwrap().0,
                None => self.freed.wait(load).unwrap(),
            };
        }
    }

    /// Gives the slot back; `failed` (with the server's Retry-After, if any) rests the endpoint.
    fn release(&self, i: usize, failed: Option<Option<Duration>>) {
        let mut load = self.load.lock().unwrap();
        let l = &mut load[i];
        l.in_flight -= 1;
        let idle = if l.in_flight == 0 { l.busy_since.take() } else { None };
        match failed {
            None => {
                l.failures = 0;
                l.resting_until = None;
            }
            Some(retry_after) => {
                l.failures += 1;
                l.resting_until = Some(Instant::now() + retry_after.unwrap_or_else(|| rest(l.failures)));
            }
        }
        drop(load);
        self.freed.notify_all();
        if let (Some(since), Some(observer)) = (idle, &self.config.observer) {
            observer.busy(&self.endpoints[i].shown, since.elapsed().as_secs_f64());
        }
    }

    fn request(&self, endpoint: &Endpoint, texts: &[&str]) -> std::result::Result<Vec<Vec<f32>>, Failure> {
        let body = match endpoint.api {
            Api::OpenAi => json!({ "model": self.config.model, "input": texts }),
            Api::Tei => json!({ "inputs": texts, "normalize": true, "truncate": true }),
        };
        let mut request = self.client().map_err(Failure::Final)?.post(&endpoint.url).json(&body);
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
            return Err(Failure::Final(remote(endpoint, format!("HTTP {status}: {snippet}"))));
        }
        let value: Value = serde_json::from_str(&text).map_err(|e| Failure::Final(remote(endpoint, format!("answer is not JSON: {e}"))))?;
        let mut vectors = parse(endpoint.api, &value, texts.len()).map_err(|m| Failure::Final(remote(endpoint, m)))?;
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

}

fn remote(endpoint: &Endpoint, message: String) -> EmbedError {
    EmbedError::Remote { endpoint: endpoint.shown.clone(), message }
}

fn parse(api: Api, value: &Value, count: usize) -> std::result::Result<Vec<Vec<f32>>, String> {
    let floats = |v: &Value| -> Option<Vec<f32>> { v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect() };
    let vectors: Option<Vec<Vec<f32>>> = match api {
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
        None => Err(format!("unexpected answer shape for the {api:?} API")),
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

impl Embedder for HttpEmbedder {
    fn model(&self) -> &str {
        &self.config.model
    }

    fn dims(&self) -> usize {
        self.config.dims
    }

    fn parallel_batches(&self) -> usize {
        self.config.concurrency.max(1) * self.endpoints.len()
    }

    /// Batches go out in parallel (up to the concurrency limit); results keep input order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let batches: Vec<&[&str]> = texts.chunks(self.config.batch_size.max(1)).collect();
        let results: Vec<Mutex<Option<BatchResult>>> = batches.iter().map(|_| Mutex::new(None)).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let senders = (self.config.concurrency.max(1) * self.endpoints.len()).clamp(1, batches.len().max(1));
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
        assert_eq!(api_of("http://tei:8080/embed"), Api::Tei);
        assert_eq!(api_of("http://x/v1/embeddings"), Api::OpenAi);
    }

    #[test]
    fn requests_fit_the_servers_stated_limits() {
        let texts = ["a".repeat(30), "b".repeat(30), "c".repeat(30), "d".repeat(300)];
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let none = Limits::default();
        assert_eq!(none.fitting(&refs, 3), 3, "rows only");
        let tei = Limits::from_tei_info(&json!({ "max_client_batch_size": 2, "max_batch_tokens": 1000, "max_input_length": 512 }));
        assert_eq!(tei.fitting(&refs, 32), 2, "the server's row limit");
        // 30 bytes ~ 12 tokens each: two fit in 25, the third does not.
        let tokens = Limits { max_tokens: Some(25), ..Limits::default() };
        assert_eq!(tokens.fitting(&refs, 32), 2);
        assert_eq!(tokens.fitting(&refs[3..], 32), 1, "one long text still goes (the server truncates it)");
        let truncated = Limits { max_tokens: Some(40), max_input_tokens: Some(10), ..Limits::default() };
        assert_eq!(truncated.fitting(&refs, 32), 4, "a text counts at most the input limit");
    }

    #[test]
    fn an_endpoint_rests_longer_after_each_failure_in_a_row() {
        assert_eq!(rest(1), Duration::from_millis(200));
        assert_eq!(rest(3), Duration::from_millis(800));
        assert_eq!(rest(50), rest(8), "capped");
    }
}
