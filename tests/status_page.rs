//! The status page as a person sees it: headless Chromium (driven by chromedriver over
//! WebDriver) opens `pgshift serve`, enters the token and reads the rendered progress.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http::{get, post};
use common::*;
use pgshift_testkit::{free_port, PgVersion};
use serde_json::{json, Value};

const TOKEN: &str = "page-token-0123456789abcdef";
/// The W3C WebDriver key under which an element reference comes back.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and one browser session; both end when this is dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: std::path::PathBuf,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver, installed by scripts/bootstrap.sh)");
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver", Duration::from_secs(20), || get(&format!("{base}/status"), None).status == 200);
        let profile = std::env::temp_dir().join(format!("pgshift-chromium-{}", std::process::id()));
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let mut browser = Browser { driver, base, session: String::new(), profile };
        let created = browser.call("POST", "/session", capabilities);
        browser.session = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let reply = if method == "GET" { get(&url, None) } else { post(&url, None, body) };
        assert_eq!(reply.status, 200, "WebDriver {method} {path}: {}", reply.body);
        reply.json()["value"].clone()
    }

    fn session(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn find(&self, css: &str) -> String {
        let found = self.session("POST", "/element", json!({ "using": "css selector", "value": css }));
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("{css}: {found}")).to_string()
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.session("GET", &format!("/element/{id}/text"), json!({})).as_str().unwrap_or_default().to_string()
    }

    /// The text of each element `css` selects, whitespace collapsed.
    fn rows(&self, css: &str) -> Vec<String> {
        let found = self.session("POST", "/elements", json!({ "using": "css selector", "value": css }));
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let id = e[ELEMENT].as_str().unwrap();
                let text = self.session("GET", &format!("/element/{id}/text"), json!({}));
                text.as_str().unwrap().split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = reqwest::blocking::Client::new().delete(format!("{}/session/{}", self.base, self.session)).send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[test]
fn the_status_page_shows_the_runs_progress() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql(
        "app",
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text);
         INSERT INTO orders SELECT i, 'order ' || i FROM generate_series(1, 900) i;
         CREATE TABLE users (id int PRIMARY KEY, name text);
         INSERT INTO users SELECT i, 'user ' || i FROM generate_series(1, 40) i;",
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (s, t) = (source.url("app"), target.url("app"));
    let env = [("PGSHIFT_LOG", "warn"), ("PGSHIFT_API_TOKEN", TOKEN), ("PGSHIFT_SOURCE", s.as_str()), ("PGSHIFT_TARGET", t.as_str())];
    let server = Background::pgshift_with_env(&["serve", "--addr", &format!("127.0.0.1:{port}"), "--split-rows", "300"], &env);
    wait_until("pgshift serve", Duration::from_secs(20), || get(&format!("{base}/health"), None).status == 200);
    let started = post(&format!("{base}/api/migrate"), Some(TOKEN), json!({ "load_only": true }));
    assert_eq!(started.status, 202, "{}", started.body);
    wait_until("the load to end", Duration::from_secs(60), || {
        get(&format!("{base}/api/status"), Some(TOKEN)).json()["job"]["state"] != "running"
    });

    // Progress is shown without a token (the token guards only the control API).
    let browser = Browser::start();
    browser.session("POST", "/url", json!({ "url": format!("{base}/") }));
    wait_until("the page to render the run", Duration::from_secs(20), || browser.text("#phase") == "loaded");
    assert!(browser.text("#control").starts_with("Control API on"), "{}", browser.text("#control"));

    assert_eq!(browser.text("#chunks"), "4 / 4", "orders in 3 ranges, users whole");
    assert!(browser.text("#job").contains("succeeded"), "{}", browser.text("#job"));
    assert_eq!(browser.rows("#tables tr"), ["public.orders 3 / 3 900", "public.users 1 / 1 40"]);
    assert_eq!(browser.rows("#runs tr"), [format!("1 postgres@127.0.0.1:{}/app loaded", source.port)]);
    let url = browser.session("GET", "/url", json!({}));
    assert!(!url.as_str().unwrap().contains(TOKEN), "the token stays out of the URL: {url}");

    // A screenshot for people reviewing the page (target/ is not committed).
    let png = browser.session("GET", "/screenshot", json!({}));
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status_page.png");
    std::fs::write(&shot, base64_decode(png.as_str().unwrap())).unwrap();
    server.stop();

    // Without a token the page still shows the run, and says how to turn the control API on.
    let env = [("PGSHIFT_LOG", "warn"), ("PGSHIFT_SOURCE", s.as_str()), ("PGSHIFT_TARGET", t.as_str())];
    let server = Background::pgshift_with_env(&["serve", "--addr", &format!("127.0.0.1:{port}")], &env);
    wait_until("pgshift serve without a token", Duration::from_secs(20), || get(&format!("{base}/health"), None).status == 200);
    browser.session("POST", "/url", json!({ "url": format!("{base}/") }));
    wait_until("the page to render the run", Duration::from_secs(20), || browser.text("#phase") == "loaded");
    assert_eq!(browser.rows("#tables tr"), ["public.orders 3 / 3 900", "public.users 1 / 1 40"]);
    let control = browser.text("#control");
    assert!(control.starts_with("Control API off") && control.contains("PGSHIFT_API_TOKEN"), "{control}");
    drop(browser);
    server.stop();
}

/// Standard base64, as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).map(value).collect();
    digits
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().enumerate().fold(0u32, |n, (i, &d)| n | (d as u32) << (18 - 6 * i));
            n.to_be_bytes()[1..c.len()].to_vec()
        })
        .collect()
}
