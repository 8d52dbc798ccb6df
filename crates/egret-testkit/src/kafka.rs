//! A private Kafka-protocol broker for the Kafka connector tests: `tansu` 0.6.0 (a Kafka-compatible broker written
//! in Rust, installed by `scripts/install-test-deps` with `cargo install --root /opt/egret-tools tansu --features
//! dynostore,postgres`), found as `$EGRET_TANSU`, on `PATH`, at `/opt/egret-tools/bin/tansu` or
//! `~/.egret-tools/bin/tansu`. It listens on 127.0.0.1 on a free port. Killed on drop.
//!
//! Storage: in memory (`memory://tansu/`, [`TansuServer::start`]: a restart loses the records), or in a PostgreSQL
//! database (`postgres://`, [`TansuServer::start_on_postgres`]: a restart keeps them). tansu's PostgreSQL engine
//! expects its schema to exist; the schema is tansu's own `etc/initdb.d/010-schema.sql` of the v0.6.0 tag (it is not
//! in the crate, and CI reaches only package registries), kept here as `tansu/010-schema.sql` (Apache-2.0, its header
//! unchanged; sha256 e4941efd…626e), or the file `$EGRET_TANSU_SCHEMA` names.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres::PgServer;
use crate::zookeeper::free_port;

/// Where `scripts/install-test-deps` installs tansu.
pub const TANSU_ROOT: &str = "/opt/egret-tools";

pub struct TansuServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The storage engine URL (`--storage-engine`).
    storage: String,
    child: Option<Child>,
}

/// The tansu binary, if installed.
pub fn tansu_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EGRET_TANSU") {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("tansu");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let p = Path::new(TANSU_ROOT).join("bin/tansu");
    if p.is_file() {
        return Some(p);
    }
    let home = PathBuf::from(std::env::var_os("HOME")?).join(".egret-tools/bin/tansu");
    home.is_file().then_some(home)
}

/// tansu's PostgreSQL schema (see the module documentation).
pub fn tansu_schema() -> PathBuf {
    match std::env::var_os("EGRET_TANSU_SCHEMA") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tansu/010-schema.sql"),
    }
}

impl TansuServer {
    /// Starts a broker with in-memory storage; panics with its log if it does not listen within 30 s.
    pub fn start() -> TansuServer {
        TansuServer::with_storage("memory://tansu/".into())
    }

    /// Starts a broker whose records live in database `tansu` of `pg` (created here, with tansu's schema), so that
    /// [`stop`](Self::stop) and [`resume`](Self::resume) keep them, as a restarted Kafka broker keeps its log.
    pub fn start_on_postgres(pg: &PgServer) -> TansuServer {
        let schema = tansu_schema();
        let sql = std::fs::read_to_string(&schema)
            .unwrap_or_else(|e| panic!("reading tansu's schema {}: {e}", schema.display()));
        pg.psql("postgres", "CREATE DATABASE tansu");
        pg.psql_script("tansu", &sql);
        TansuServer::with_storage(format!(
            "postgres://{}:{}@127.0.0.1:{}/tansu",
            PgServer::USER,
            PgServer::PASSWORD,
            pg.port
        ))
    }

    fn with_storage(storage: String) -> TansuServer {
        let bin = tansu_bin()
            .expect("the tansu broker is not installed (PATH, /opt/egret-tools/bin): run scripts/install-test-deps");
        let dir = tempfile::Builder::new()
            .prefix("egret-tansu-")
            .tempdir()
            .expect("temp dir");
        let mut server = TansuServer {
            bin,
            dir,
            port: free_port(),
            storage,
            child: None,
        };
        server.resume();
        server
    }

    /// `host:port` for clients.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    /// Starts the broker (again, on the same port and storage; in-memory storage starts empty).
    pub fn resume(&mut self) {
        if self.child.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("tansu log file");
        let child = Command::new(&self.bin)
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &self.url(),
                "--advertised-listener-url",
                &self.url(),
            ])
            .args(["--storage-engine", &self.storage])
            .env_remove("STORAGE_ENGINE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("tansu log file"))
            .stderr(log)
            .spawn()
            .expect("spawning tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                panic!(
                    "tansu did not listen on {}: {}",
                    self.port,
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Creates a topic with `partitions` partitions (`tansu topic create`); panics with tansu's output on failure.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.bin)
            .current_dir(self.dir.path())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
                "--broker",
                &self.url(),
            ])
            .output()
            .expect("running tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TansuServer {
    fn drop(&mut self) {
        self.stop();
    }
}
