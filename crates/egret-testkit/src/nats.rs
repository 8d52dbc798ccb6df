//! A private NATS server with JetStream for the connector tests: Debian's `nats-server` (installed by
//! `scripts/install-test-deps`) on 127.0.0.1 and a free port, `-js` with its store in a temporary directory (file
//! storage survives a restart). Stopped on drop.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::zookeeper::free_port;

pub struct NatsServer {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

/// Debian installs the server in /usr/sbin, which may not be on a user's PATH.
fn binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/nats-server");
    if sbin.exists() {
        sbin.to_path_buf()
    } else {
        PathBuf::from("nats-server")
    }
}

impl NatsServer {
    /// Starts a server; panics with its log if it does not greet a client within 10 s.
    pub fn start() -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("egret-nats-")
            .tempdir()
            .expect("temp dir");
        let mut server = NatsServer {
            dir,
            port: free_port(),
            child: None,
        };
        server.resume();
        server
    }

    /// Starts the server (again, on the same port and store).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the nats server is running");
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.path().join("jetstream"))
            .arg("-l")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is not installed: run scripts/install-test-deps");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.greets() {
            if Instant::now() > deadline {
                panic!(
                    "nats-server did not answer on port {}; log: {}",
                    self.port,
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server at once (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Whether the server sends its `INFO` greeting to a new connection.
    fn greets(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).is_ok() && &buf == b"INFO "
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
