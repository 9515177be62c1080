//! Passwords stay off the command line: pgshift completes connection strings the way
//! psql does (PGPASSWORD, the password file, service files, PG* variables), and warns
//! when a password is written into a flag, where `ps` shows it to every user.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use pgshift_testkit::{PgVersion, PASSWORD};

/// Runs pgshift with exactly these PG* variables (the test process's own are removed).
fn run_with(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgshift"));
    cmd.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PG") && !k.starts_with("PGSHIFT")) {
        cmd.env_remove(k);
    }
    cmd.env("HOME", std::env::temp_dir().join("pgshift-no-home"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!format!("{}{}", stdout(&out), stderr(&out)).contains(PASSWORD), "password in output");
    out
}

#[test]
fn passwords_come_from_the_environment_the_password_file_and_service_files() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)");
    let (sp, tp) = (source.port.to_string(), target.port.to_string());
    let bare = |p: &str| format!("postgresql://postgres@127.0.0.1:{p}/app");
    let dir = std::env::temp_dir().join(format!("pgshift-passwords-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Without any: authentication fails, and the message says where a password can come from.
    let out = run_with(&["inspect", "--source", &bare(&sp)], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("authentication failed"), "{}", stderr(&out));

    // PGPASSWORD, with key=value settings and PGPORT for the rest.
    let out = run_with(&["inspect", "--source", "host=127.0.0.1 user=postgres dbname=app"], &[("PGPASSWORD", PASSWORD.into()), ("PGPORT", sp.clone())]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("public.t"), "{}", stdout(&out));
    assert!(!stderr(&out).contains("visible to every user"), "no password on the command line: {}", stderr(&out));

    // A password file (PGPASSFILE), which must be private.
    let passfile = dir.join("pgpass");
    std::fs::write(&passfile, format!("127.0.0.1:{sp}:*:postgres:{PASSWORD}\n127.0.0.1:{tp}:app:postgres:{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let passfile_env = [("PGPASSFILE", passfile.display().to_string())];
    let out = run_with(&["migrate", "--source", &bare(&sp), "--target", &bare(&tp), "--no-follow"], &passfile_env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(target.psql("app", "SELECT count(*) FROM t"), "2");

    // A service file names both databases; the password still comes from the file.
    let services = dir.join("services.conf");
    std::fs::write(&services, format!("[old]\nhost=127.0.0.1\nport={sp}\ndbname=app\nuser=postgres\n[new]\nhost=127.0.0.1\nport={tp}\ndbname=app\nuser=postgres\n")).unwrap();
    let env = [("PGSERVICEFILE", services.display().to_string()), passfile_env[0].clone()];
    let out = run_with(&["verify", "--source", "service=old", "--target", "service=new"], &env);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let out = run_with(&["verify", "--source", "service=gone", "--target", "service=new"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("service \"gone\" is not defined") && stderr(&out).contains("--source"), "{}", stderr(&out));

    // Written into a flag, the password works, with a warning about ps.
    let out = run_with(&["inspect", "--source", &source.url("app")], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("visible to every user of this machine"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}
