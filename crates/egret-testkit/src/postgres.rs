//! A private PostgreSQL server for the connector tests: Debian's `postgresql` binaries (`/usr/lib/postgresql/<v>/bin`,
//! installed by `scripts/install-test-deps`), a fresh cluster in a temporary directory, listening on 127.0.0.1 on a
//! free port with its unix socket in that directory, `max_prepared_transactions` for two-phase commit. PostgreSQL
//! refuses to run as root, so as root the cluster belongs to the `postgres` user and its commands run through
//! `runuser`. TCP connections need the password ([`PgServer::PASSWORD`]), so wrong credentials can be tested.
//! Stopped (immediately) and removed on drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::zookeeper::free_port;

pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
    running: bool,
}

impl PgServer {
    pub const USER: &str = "postgres";
    pub const PASSWORD: &str = "egret-test-password";

    /// Creates and starts a cluster; panics with the server's output if it cannot.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("egret-pg-")
            .tempdir()
            .expect("temp dir");
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc_geteuid() } == 0;
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, Self::PASSWORD).expect("password file");
        if as_postgres {
            run_ok(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()));
        }
        let mut server = PgServer {
            bin,
            dir,
            port: free_port(),
            as_postgres,
            running: false,
        };
        let data = server.data_dir();
        let mut initdb = server.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                Self::USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run_ok(&mut initdb);
        server.resume();
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `program` from PostgreSQL's bin directory, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Starts the server (again, on the same port and data).
    pub fn resume(&mut self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_prepared_transactions=16 \
             -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "30", "-o", &options, "start"]);
        let out = start.output().expect("running pg_ctl start");
        if !out.status.success() {
            panic!(
                "PostgreSQL did not start: {}{}\nlog: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
        }
        self.running = true;
    }

    /// Stops the server at once (`immediate`: as a crash of the server would; what was committed or prepared
    /// survives, since commits wait for the WAL to reach the operating system, `fsync=off` only skips the disk).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        let _ = stop.output();
        self.running = false;
    }

    /// A libpq-style connection string for a TCP client as the superuser, to database `db`.
    pub fn connection(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname={db} connect_timeout=5",
            self.port,
            Self::USER,
            Self::PASSWORD
        )
    }

    /// Runs SQL with `psql` over the unix socket (no password) in database `db`; returns its unaligned, tuples-only
    /// output (`|` between columns). Panics with psql's error if the SQL fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.try_psql(db, sql);
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a script of several statements (given on psql's standard input) in database `db`; panics with psql's
    /// error if one fails.
    pub fn psql_script(&self, db: &str, sql: &str) {
        let mut c = self.command("psql");
        c.arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", Self::USER, "-d", db])
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("running psql");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes()).expect("writing to psql");
        }
        let out = child.wait_with_output().expect("running psql");
        assert!(
            out.status.success(),
            "psql failed on a script: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn try_psql(&self, db: &str, sql: &str) -> Output {
        let mut c = self.command("psql");
        c.arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", Self::USER, "-d", db])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        c.output().expect("running psql")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest installed PostgreSQL's bin directory.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (/usr/lib/postgresql): run scripts/install-test-deps")
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("no PostgreSQL with initdb under /usr/lib/postgresql")
        .1
}

fn run_ok(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
