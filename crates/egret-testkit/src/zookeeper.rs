//! A real ZooKeeper server for tests: Debian's `zookeeper` package (its server jar run with `java`, on a free
//! loopback port, with its own config and data directory, killed when the test ends). Without java or the package
//! a test that starts one fails and says what to install (`scripts/install-test-deps` installs it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// Optional: gives the server's log a binding (without it the server logs nothing, which is harmless).
const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";

/// A standalone ZooKeeper server on a free loopback port with its own config and data directory. Started with
///
/// ```text
/// java -cp <dir>/conf:/usr/share/java/zookeeper.jar[:/usr/share/java/slf4j-simple.jar] \
///      org.apache.zookeeper.server.ZooKeeperServerMain <dir>/conf/zoo.cfg
/// ```
///
/// (the jar's manifest lists the jars it needs from /usr/share/java), under a `sh` that kills it (SIGKILL) when its
/// stdin closes: on [`ZkServer::stop`], on drop, and also if the test process dies without unwinding.
pub struct ZkServer {
    dir: tempfile::TempDir,
    /// The address it listens on (127.0.0.1, or a test host's).
    host: String,
    /// The network namespace it runs in (a test host), if not this process's.
    netns: Option<String>,
    port: u16,
    process: Option<Child>,
}

impl ZkServer {
    pub fn start() -> ZkServer {
        ZkServer::start_on(None, "127.0.0.1")
    }

    /// A server in network namespace `netns` (a test host; `None`: this process's), listening on `host`.
    pub fn start_on(netns: Option<&str>, host: &str) -> ZkServer {
        assert!(
            Path::new(ZOOKEEPER_JAR).exists(),
            "ZooKeeper is not installed ({ZOOKEEPER_JAR} is missing): run `apt-get install -y zookeeper` \
             (or scripts/install-test-deps)"
        );
        let java = Command::new("java").arg("-version").output();
        assert!(
            java.as_ref().is_ok_and(|out| out.status.success()),
            "`java -version` failed ({java:?}): install a JRE (`apt-get install -y default-jre-headless`)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(&conf).expect("conf dir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        // A short tick so sessions expire close to their timeout; sessions from 0.4 s to 30 s allowed.
        let cfg = format!(
            "tickTime=200\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\nclientPortAddress={host}\n\
             minSessionTimeout=400\nmaxSessionTimeout=30000\nadmin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr\npreAllocSize=1024\n",
            dir.path().join("data").display()
        );
        std::fs::write(conf.join("zoo.cfg"), cfg).expect("zoo.cfg");
        let mut server = ZkServer {
            dir,
            host: host.to_string(),
            netns: netns.map(String::from),
            port,
            process: None,
        };
        server.resume();
        server
    }

    pub fn connection(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Starts the server (again: same port, same data directory) and waits until it answers `ruok`.
    pub fn resume(&mut self) {
        assert!(self.process.is_none(), "already running");
        let conf = self.dir.path().join("conf");
        let mut classpath = format!("{}:{ZOOKEEPER_JAR}", conf.display());
        if Path::new(SLF4J_SIMPLE_JAR).exists() {
            classpath.push(':');
            classpath.push_str(SLF4J_SIMPLE_JAR);
        }
        let script = r#"java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.forceSync=no \
            -cp "$1" org.apache.zookeeper.server.ZooKeeperServerMain "$2" >>"$3" 2>&1 &
            pid=$!
            read -r _ || true
            kill -9 "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            exit 0"#;
        let log = self.log_path();
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "sh"]);
                c
            }
            None => Command::new("sh"),
        };
        let child = command
            .arg("-c")
            .arg(script)
            .arg("zk-server")
            .arg(&classpath)
            .arg(conf.join("zoo.cfg"))
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sh for the zookeeper server");
        self.process = Some(child);
        let start = Instant::now();
        while !ruok_at(&self.host, self.port) {
            if start.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "zookeeper did not answer ruok on port {} within 30 s; its log:\n{log}",
                    self.port
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (SIGKILL, as a crash) and waits until it is gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.process.take() else {
            return;
        };
        drop(child.stdin.take()); // the wrapper's `read` ends: it kills java and waits for it
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if start.elapsed() > Duration::from_secs(10) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
            }
        }
        assert!(
            !ruok_at(&self.host, self.port),
            "zookeeper still answers after being killed"
        );
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A directory of the server's own, removed with it (tests keep an egret home there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Whether a server on `port` answers the four-letter word `ruok` with `imok`.
pub fn ruok(port: u16) -> bool {
    ruok_at("127.0.0.1", port)
}

/// Whether a server at `host:port` answers `ruok` with `imok`.
pub fn ruok_at(host: &str, port: u16) -> bool {
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return false;
    };
    let addr = (ip, port).into();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = String::new();
    stream.write_all(b"ruok").is_ok() && stream.read_to_string(&mut answer).is_ok() && answer == "imok"
}
