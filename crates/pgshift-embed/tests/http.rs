//! The remote backend against a small embedding server this test runs on loopback:
//! both APIs, batching, retries, the concurrency limit, and errors without the key.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgshift_embed::http::{HttpConfig, HttpEmbedder};
use pgshift_embed::Embedder;
use serde_json::{json, Value};

const KEY: &str = "sk-test-key-never-shown";

/// What the server saw and how it should answer.
#[derive(Default)]
struct Script {
    /// Answer this many requests with 503 (then 429 once) before serving.
    failures: AtomicUsize,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    batch_sizes: Mutex<Vec<usize>>,
    authorized: AtomicUsize,
    /// Vector length to answer with.
    dims: usize,
    /// Answer 400 to every request.
    refuse: bool,
    /// TEI's `GET /info` answer (404 without).
    info: Option<Value>,
    stopped: std::sync::atomic::AtomicBool,
}

/// A deterministic "embedding": the text's length and its first byte, then ones.
fn vector_of(text: &str, dims: usize) -> Vec<f64> {
    let mut v = vec![1.0; dims];
    v[0] = text.len() as f64 + 1.0;
    v[1] = text.bytes().next().unwrap_or(0) as f64;
    v
}

fn serve(script: Arc<Script>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(false).unwrap();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            if script.stopped.load(Ordering::SeqCst) {
                break;
            }
            let script = script.clone();
            std::thread::spawn(move || handle(stream, &script));
        }
    });
    (format!("http://{addr}"), handle)
}

fn handle(stream: TcpStream, script: &Script) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if header.trim() == format!("authorization: Bearer {KEY}") || header.trim() == format!("Authorization: Bearer {KEY}") {
            script.authorized.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    if path.ends_with("/info") {
        let (status, body) = match &script.info {
            Some(info) => (200, info.to_string()),
            None => (404, "{}".to_string()),
        };
        let mut stream = stream;
        let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        return;
    }
    let request: Value = serde_json::from_slice(&body).unwrap();
    script.requests.fetch_add(1, Ordering::SeqCst);
    let now = script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    script.max_in_flight.fetch_max(now, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(30));
    script.in_flight.fetch_sub(1, Ordering::SeqCst);

    // Take one planned failure, if any are left (two requests may ask at once).
    let failure = script.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    let (status, extra, answer) = if script.refuse {
        (400, "", json!({ "error": "bad model" }))
    } else if let Ok(left) = failure {
        if left == 1 {
            (429, "Retry-After: 0\r\n", json!({ "error": "slow down" }))
        } else {
            (503, "", json!({ "error": "loading" }))
        }
    } else if path.ends_with("/embed") {
        let texts: Vec<&str> = request["inputs"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        script.batch_sizes.lock().unwrap().push(texts.len());
        (200, "", json!(texts.iter().map(|t| vector_of(t, script.dims)).collect::<Vec<_>>()))
    } else {
        assert_eq!(request["model"], "test-model");
        let texts: Vec<&str> = request["input"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        script.batch_sizes.lock().unwrap().push(texts.len());
        // Answer in reverse order: the client must use "index".
        let data: Vec<Value> =
            texts.iter().enumerate().rev().map(|(i, t)| json!({ "index": i, "embedding": vector_of(t, script.dims) })).collect();
        (200, "", json!({ "data": data, "model": "test-model" }))
    };
    let body = answer.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Ends the server's accept loop (one last connection wakes it) and waits for it.
fn stop(url: &str, script: &Script, handle: std::thread::JoinHandle<()>) {
    script.stopped.store(true, Ordering::SeqCst);
    drop(TcpStream::connect(url.trim_start_matches("http://")).unwrap());
    handle.join().unwrap();
}

fn config(url: &str) -> HttpConfig {
    let mut c = HttpConfig::new(url, "test-model", 8);
    c.api_key = Some(KEY.into());
    c.batch_size = 5;
    c.concurrency = 2;
    c.retries = 4;
    c
}

fn texts() -> Vec<String> {
    (0..23).map(|i| format!("{}text {i}", "x".repeat(i % 7))).collect()
}

fn check(vectors: &[Vec<f32>], texts: &[String]) {
    assert_eq!(vectors.len(), texts.len());
    for (v, t) in vectors.iter().zip(texts) {
        let mut want: Vec<f32> = vector_of(t, 8).into_iter().map(|x| x as f32).collect();
        pgshift_embed::normalize(&mut want);
        assert_eq!(v, &want, "vector of {t:?}");
    }
}

#[test]
fn openai_api_batches_in_parallel_within_the_limit_and_retries() {
    let script = Arc::new(Script { dims: 8, failures: AtomicUsize::new(3), ..Script::default() });
    let (url, handle) = serve(script.clone());
    let embedder = HttpEmbedder::new(config(&format!("{url}/v1/embeddings"))).unwrap();
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    check(&embedder.embed(&refs).unwrap(), &texts);

    let mut sizes = script.batch_sizes.lock().unwrap().clone();
    sizes.sort();
    assert_eq!(sizes, [3, 5, 5, 5, 5], "23 texts in batches of 5");
    assert_eq!(script.requests.load(Ordering::SeqCst), 5 + 3, "three failed requests were retried");
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 2, "never more than 2 requests at once");
    assert_eq!(script.authorized.load(Ordering::SeqCst), 8, "every request carries the key");
    stop(&url, &script, handle);
}

#[test]
fn tei_api_is_chosen_by_its_path() {
    let script = Arc::new(Script { dims: 8, ..Script::default() });
    let (url, handle) = serve(script.clone());
    let embedder = HttpEmbedder::new(config(&format!("{url}/embed"))).unwrap();
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    check(&embedder.embed(&refs).unwrap(), &texts);
    stop(&url, &script, handle);
}

#[test]
fn tei_requests_fit_the_limits_its_info_states() {
    let info = json!({ "max_client_batch_size": 3, "max_batch_tokens": 20, "max_input_length": 512 });
    let script = Arc::new(Script { dims: 8, info: Some(info), ..Script::default() });
    let (url, handle) = serve(script.clone());
    let embedder = HttpEmbedder::new(config(&format!("{url}/embed"))).unwrap();
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    check(&embedder.embed(&refs).unwrap(), &texts);
    let sizes = script.batch_sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), texts.len(), "each text once: {sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 3), "never more rows than the server takes: {sizes:?}");
    assert!(sizes.len() > texts.len().div_ceil(5), "the token budget cut batches of 5 further: {sizes:?}");
    stop(&url, &script, handle);
}

#[test]
fn errors_name_the_server_but_never_the_key() {
    let script = Arc::new(Script { dims: 8, refuse: true, ..Script::default() });
    let (url, handle) = serve(script.clone());
    let embedder = HttpEmbedder::new(config(&format!("{url}/v1/embeddings?api_key={KEY}"))).unwrap();
    let err = embedder.embed(&["a"]).unwrap_err().to_string();
    assert!(err.contains("400") && err.contains("bad model") && err.contains("/v1/embeddings"), "{err}");
    assert!(!err.contains(KEY), "{err}");
    assert_eq!(script.requests.load(Ordering::SeqCst), 1, "a 400 is not retried");
    stop(&url, &script, handle);

    // Wrong dimensions are an error, not a silently different vector.
    let script = Arc::new(Script { dims: 6, ..Script::default() });
    let (url, handle) = serve(script.clone());
    let err = HttpEmbedder::new(config(&format!("{url}/embed"))).unwrap().embed(&["a"]).unwrap_err().to_string();
    assert!(err.contains("makes 6") && err.contains("8 were asked"), "{err}");
    stop(&url, &script, handle);

    // Nobody listening: retried, then a clear error.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut c = config(&format!("http://{closed}/embed"));
    c.retries = 1;
    let err = HttpEmbedder::new(c).unwrap().embed(&["a"]).unwrap_err().to_string();
    assert!(err.contains("cannot connect") && err.contains("gave up after 2 attempts"), "{err}");
}
