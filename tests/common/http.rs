//! A blocking HTTP client for the tests of pgshift's HTTP side.
#![allow(dead_code)]

use std::time::Duration;

pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// `GET url`, with a bearer token when given. Connection errors come back as status 0.
pub fn get(url: &str, token: Option<&str>) -> Reply {
    send(client().get(url), token)
}

pub fn post(url: &str, token: Option<&str>, body: serde_json::Value) -> Reply {
    send(client().post(url).json(&body), token)
}

fn send(mut request: reqwest::blocking::RequestBuilder, token: Option<&str>) -> Reply {
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    match request.send() {
        Ok(r) => Reply { status: r.status().as_u16(), body: r.text().unwrap_or_default() },
        Err(e) => Reply { status: 0, body: e.to_string() },
    }
}

/// The value of a sample in Prometheus text format, e.g. `pgshift_phase{phase="copy"}`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
