//! Cutover through a real PgBouncer (Debian's) while pgbench writes through it:
//! clients wait a moment instead of failing, every transaction after the switch lands
//! on the new server, and a cutover that cannot finish leaves the pool as it was.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use pgshift_testkit::{Cluster, PgBouncer, PgVersion, PASSWORD};

fn pgbench_through(bouncer: &PgBouncer, bin: &Cluster, dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin.bin_dir().join("pgbench"));
    cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p", &bouncer.port.to_string()])
        .args(args)
        .arg("app")
        .env("PGPASSWORD", PASSWORD)
        .current_dir(dir);
    cmd
}

fn loaded_behind_a_pool() -> (Cluster, Cluster, PgBouncer) {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    let init = Command::new(source.bin_dir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p", &source.port.to_string(), "-i", "-s", "1", "-q", "app"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    source.psql("app", "ALTER TABLE pgbench_history REPLICA IDENTITY FULL");
    migrate(&source, &target, &[]);
    let bouncer = PgBouncer::start(&[("app", &source, "app")]);
    (source, target, bouncer)
}

#[test]
fn clients_of_the_pool_move_to_the_new_server_without_a_failed_transaction() {
    let (source, target, bouncer) = loaded_behind_a_pool();
    let dir = std::env::temp_dir().join(format!("pgshift-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bench = pgbench_through(&bouncer, &source, &dir, &["-n", "-c", "4", "-j", "2", "-T", "12", "-R", "300", "-l"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let (s, t) = (source.url("app"), target.url("app"));
    let admin = bouncer.url("pgbouncer");
    let out = pgshift_expect(0, &["cutover", "--source", &s, "--target", &t, "--pgbouncer", &admin, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["pgbouncer"]["database"], "app", "{report}");
    assert!(std::fs::read_to_string(bouncer.ini()).unwrap().contains(&format!("port={}", target.port)), "the pool points at the new server");

    let bench = bench.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&bench.stdout), String::from_utf8_lossy(&bench.stderr));
    assert!(bench.status.success() && !text.contains("aborted"), "pgbench clients failed:\n{text}");
    let processed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{text}"));
    if let Some(failed) = text.lines().find_map(|l| l.strip_prefix("number of failed transactions: ")) {
        assert!(failed.starts_with("0 "), "failed transactions: {failed}");
    }
    // Each transaction wrote one history row: all of them are on the new server, and
    // the old one holds only those from before the switch.
    let on_target: u64 = target.psql("app", "SELECT count(*) FROM pgbench_history").parse().unwrap();
    let on_source: u64 = source.psql("app", "SELECT count(*) FROM pgbench_history").parse().unwrap();
    assert_eq!(on_target, processed, "every transaction landed on the new server");
    assert!(on_source < processed, "writes after the switch went to the new server: {on_source} on the old one of {processed}");
    assert_eq!(
        target.psql("app", "SELECT sum(abalance) FROM pgbench_accounts"),
        target.psql("app", "SELECT sum(delta) FROM pgbench_history"),
        "balances agree with the history on the new server"
    );
    // The longest client wait, from pgbench's per-transaction log (microseconds).
    let longest = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .flat_map(|f| std::fs::read_to_string(f.path()).unwrap_or_default().lines().filter_map(|l| l.split(' ').nth(2)?.parse::<u64>().ok()).collect::<Vec<_>>())
        .max()
        .unwrap_or(0);
    eprintln!("pgbench through PgBouncer: {processed} transactions, longest {} ms; clients held {} ms", longest / 1000, report["pgbouncer"]["client_wait_ms"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cutover_that_cannot_finish_leaves_the_pool_on_the_old_server() {
    let (source, target, bouncer) = loaded_behind_a_pool();
    let before = std::fs::read_to_string(bouncer.ini()).unwrap();
    let (s, t) = (source.url("app"), target.url("app"));
    // A transaction through the pool that does not end: PAUSE cannot finish.
    let mut open = Command::new(source.bin_dir().join("psql"))
        .args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-p", &bouncer.port.to_string(), "app"])
        .env("PGPASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(open.stdin.as_mut().unwrap(), "BEGIN; UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1;").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = pgshift_expect(2, &["cutover", "--source", &s, "--target", &t, "--pgbouncer", &bouncer.url("pgbouncer"), "--timeout", "1s"]);
    assert!(stderr(&out).contains("nothing was switched") && stderr(&out).contains("PAUSE app"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(bouncer.ini()).unwrap(), before, "the pool's configuration is as it was");
    writeln!(open.stdin.as_mut().unwrap(), "COMMIT;").unwrap();
    drop(open.stdin.take());
    open.wait().unwrap();
    // The pool serves the old server again.
    let q = Command::new(source.bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-p", &bouncer.port.to_string(), "-d", "app", "-c", "SELECT inet_server_port()"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&q.stdout).trim(), source.port.to_string(), "{}", String::from_utf8_lossy(&q.stderr));
}

#[test]
fn rollback_through_the_pool_brings_its_clients_back_to_the_old_server() {
    let (source, target, bouncer) = loaded_behind_a_pool();
    let (s, t, admin) = (source.url("app"), target.url("app"), bouncer.url("pgbouncer"));
    let through_pool = |sql: &str| {
        let out = Command::new(source.bin_dir().join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-p", &bouncer.port.to_string(), "-d", "app", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    pgshift_expect(0, &["cutover", "--source", &s, "--target", &t, "--pgbouncer", &admin, "--reverse"]);
    assert_eq!(through_pool("SELECT inet_server_port()"), target.port.to_string());
    through_pool("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 4242, now())");
    // The old database follows the new one, then the pool switches back.
    pgshift_expect(0, &["rollback", "--source", &s, "--target", &t, "--pgbouncer", &admin]);
    assert_eq!(through_pool("SELECT inet_server_port()"), source.port.to_string(), "the pool serves the old server again");
    assert_eq!(through_pool("SELECT count(*) FROM pgbench_history WHERE delta = 4242"), "1", "the write made on the new server came back");
    through_pool("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 4343, now())");
    assert_eq!(source.psql("app", "SELECT count(*) FROM pgbench_history WHERE delta = 4343"), "1", "and the old server takes writes again");
}

#[test]
fn the_api_cutover_switches_the_pool_too() {
    let (source, target, bouncer) = loaded_behind_a_pool();
    let (s, t, admin) = (source.url("app"), target.url("app"), bouncer.url("pgbouncer"));
    let port = pgshift_testkit::free_port();
    let (addr, base) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{port}"));
    const TOKEN: &str = "pool-switch-token-0123456789";
    let env = [("PGSHIFT_API_TOKEN", TOKEN), ("PGSHIFT_SOURCE", s.as_str()), ("PGSHIFT_TARGET", t.as_str()), ("PGSHIFT_PGBOUNCER", admin.as_str())];
    let _server = Background::pgshift_with_env(&["serve", "--addr", &addr], &env);
    wait_until("pgshift serve to listen", Duration::from_secs(20), || common::http::get(&format!("{base}/health"), None).status == 200);
    let cut = common::http::post(&format!("{base}/api/cutover"), Some(TOKEN), serde_json::json!({}));
    assert_eq!(cut.status, 200, "{}", cut.body);
    assert_eq!(cut.json()["pgbouncer"]["database"], "app", "{}", cut.body);
    assert!(std::fs::read_to_string(bouncer.ini()).unwrap().contains(&format!("port={}", target.port)));
}
