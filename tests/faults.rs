//! Catch-up survives what a migration that runs for days meets: the target
//! restarted, the source restarted, the walsender and the apply session terminated,
//! all while the application writes. It reconnects, resumes from the replication
//! origin, and the databases end identical. Without a way back it gives up after
//! --reconnect-timeout, saying what failed.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pgshift_testkit::{Cluster, PgVersion};

/// Inserts (and updates) on the source until told to stop; failed writes (source
/// down) are retried by the next round, as an application would. A write can commit
/// and still fail for the client (the server went down before the reply): the retry
/// then finds its row there already.
fn writer(source: Arc<Cluster>, stop: Arc<AtomicBool>, written: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let sql = format!("INSERT INTO events (id, body) VALUES ({n}, 'event {n}') ON CONFLICT (id) DO NOTHING; UPDATE counters SET hits = hits + 1 WHERE id = {}", n % 5);
            if source.try_psql("app", &sql).is_some() {
                n += 1;
                written.store(n, Ordering::SeqCst);
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })
}

#[test]
fn follow_reconnects_through_restarts_and_terminated_sessions_while_the_app_writes() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", "CREATE TABLE events (id bigint PRIMARY KEY, body text); CREATE TABLE counters (id int PRIMARY KEY, hits int);
                        INSERT INTO counters SELECT i, 0 FROM generate_series(0, 4) i;");
    migrate(&source, &target, &[]);
    let (s, t) = (source.url("app"), target.url("app"));
    let addr = format!("127.0.0.1:{}", pgshift_testkit::free_port());
    let follow = Background::pgshift(&["follow", "--source", &s, "--target", &t, "--metrics-addr", &addr, "--commit-delay-ms", "20"]);
    let source = Arc::new(source);
    let (stop, written) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let app = writer(source.clone(), stop.clone(), written.clone());
    let applied = |target: &Cluster| target.try_psql("app", "SELECT count(*) FROM events").and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
    // Each fault while rows keep arriving; catch-up must get past it to the rows written after it.
    let progress_past = |what: &str| {
        let goal = written.load(Ordering::SeqCst) + 5;
        wait_until(&format!("catch-up to go on after {what}"), Duration::from_secs(60), || applied(&target) >= goal);
        assert!(!follow.printed().1.contains("pgshift: error"), "follow stopped: {:?}", follow.printed());
    };
    progress_past("the start");
    target.stop();
    std::thread::sleep(Duration::from_millis(500));
    target.start_again();
    progress_past("a target restart");
    source.psql("app", "SELECT pg_terminate_backend(pid) FROM pg_stat_replication");
    progress_past("the walsender was terminated");
    target.psql("app", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgshift' AND pid <> pg_backend_pid()");
    progress_past("the apply session was terminated");
    source.stop();
    std::thread::sleep(Duration::from_millis(500));
    source.start_again();
    progress_past("a source restart");

    stop.store(true, Ordering::SeqCst);
    app.join().unwrap();
    let total = written.load(Ordering::SeqCst);
    wait_until("the last rows", Duration::from_secs(60), || applied(&target) == total);
    let metrics = common::http::get(&format!("http://{addr}/metrics"), None).body;
    let reconnects = common::http::sample(&metrics, "pgshift_reconnects_total").unwrap();
    assert!(reconnects >= 4.0, "reconnects: {reconnects}\n{metrics}");
    let out = follow.stop();
    assert!(!stderr(&out).contains("pgshift: error"), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT sum(hits) FROM counters"), source.psql("app", "SELECT sum(hits) FROM counters"));
    assert_verified(&source, &target);
}

#[test]
fn follow_gives_up_after_the_reconnect_timeout_and_says_why() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", "CREATE TABLE events (id bigint PRIMARY KEY, body text)");
    migrate(&source, &target, &[]);
    let (s, t) = (source.url("app"), target.url("app"));
    let follow = Background::pgshift(&["follow", "--source", &s, "--target", &t, "--reconnect-timeout", "3s"]);
    std::thread::sleep(Duration::from_secs(1));
    source.stop();
    let out = follow.wait(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("gave up after") && err.contains("--reconnect-timeout") && err.contains("resumes from the last applied transaction"), "{err}");
    assert!(!err.contains("unexpected message"), "a shutdown reads as what it is: {err}");
    source.start_again();
    source.psql("app", "INSERT INTO events VALUES (1, 'after')");
    follow_until_caught_up(&source, &target);
    assert_eq!(target.psql("app", "SELECT body FROM events"), "after");
}

fn follow_until_caught_up(source: &Cluster, target: &Cluster) {
    follow(source, target, &[]);
}
