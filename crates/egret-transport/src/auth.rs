//! Only a topology's own processes get in: every connection to a daemon of a topology (its stmgrs, tmanager and
//! metrics managers' publisher ports) starts with a challenge that only a holder of the topology's secret answers.
//!
//! The secret is 32 random bytes made at submit ([`TopologySecret::generate`]), kept in
//! `$EGRET_HOME/secrets/<cluster>/<topology>` (mode 0600) for the processes of this machine and the CLI and tracker,
//! and given to processes elsewhere (pods) as `EGRET_TOPOLOGY_SECRET` (hex). The handshake, before any frame:
//!
//! ```text
//! server → client   "EGRA" 1 nonce[32]                 (a fresh random nonce per connection)
//! client → server   "EGRP" HMAC-SHA256(secret, "egret-auth-v1" nonce)[32]
//! ```
//!
//! The server checks the proof in constant time and, if it is wrong or late, closes the connection without a word
//! (nothing about the topology is said to a stranger). The secret never crosses the network. It does not encrypt
//! the traffic: a peer that can read the network sees the tuples (use a private network, or a service mesh with
//! mutual TLS, for that).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The environment variable that carries a topology's secret (hex) to processes that do not share the home.
pub const SECRET_ENV: &str = "EGRET_TOPOLOGY_SECRET";
/// How long a server waits for a client's proof before it gives up on the connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const CHALLENGE_MAGIC: &[u8; 4] = b"EGRA";
const PROOF_MAGIC: &[u8; 4] = b"EGRP";
const VERSION: u8 = 1;
const CONTEXT: &[u8] = b"egret-auth-v1";
const NONCE_LEN: usize = 32;
const CHALLENGE_LEN: usize = 4 + 1 + NONCE_LEN;
const PROOF_LEN: usize = 4 + 32;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the peer did not prove it belongs to the topology")]
    Refused,
    #[error("the peer is not an Egret daemon of this version (unexpected handshake bytes)")]
    NotEgret,
    #[error("handshake i/o: {0}")]
    Io(#[from] io::Error),
    #[error("no secret for topology {topology}: {reason}")]
    NoSecret { topology: String, reason: String },
}

/// A topology's shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TopologySecret([u8; 32]);

impl std::fmt::Debug for TopologySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopologySecret(..)")
    }
}

fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

impl TopologySecret {
    /// A new random secret.
    pub fn generate() -> io::Result<TopologySecret> {
        random().map(TopologySecret)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Option<TopologySecret> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(TopologySecret(out))
    }

    /// `<egret_home>/secrets/<cluster>/<topology>`.
    pub fn path(egret_home: &Path, cluster: &str, topology: &str) -> PathBuf {
        egret_home.join("secrets").join(cluster).join(topology)
    }

    /// Writes the secret where this machine's processes of the topology find it (readable by its owner only).
    pub fn store(&self, egret_home: &Path, cluster: &str, topology: &str) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(egret_home, cluster, topology);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(self.to_hex().as_bytes())?;
        f.sync_all()
    }

    /// The topology's secret: `EGRET_TOPOLOGY_SECRET` if set, else the home's file.
    pub fn load(egret_home: &Path, cluster: &str, topology: &str) -> Result<TopologySecret, AuthError> {
        let no = |reason: String| AuthError::NoSecret {
            topology: topology.to_string(),
            reason,
        };
        if let Some(hex) = std::env::var_os(SECRET_ENV) {
            return TopologySecret::from_hex(&hex.to_string_lossy())
                .ok_or_else(|| no(format!("{SECRET_ENV} is not 64 hex digits")));
        }
        let path = Self::path(egret_home, cluster, topology);
        let hex = std::fs::read_to_string(&path).map_err(|e| no(format!("{}: {e}", path.display())))?;
        TopologySecret::from_hex(&hex).ok_or_else(|| no(format!("{}: not 64 hex digits", path.display())))
    }

    /// Removes the home's copy (at kill).
    pub fn remove(egret_home: &Path, cluster: &str, topology: &str) -> io::Result<()> {
        match std::fs::remove_file(Self::path(egret_home, cluster, topology)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// The proof for `nonce`.
    fn proof(&self, nonce: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(CONTEXT);
        mac.update(nonce);
        mac.finalize().into_bytes().into()
    }

    /// Whether `proof` answers `nonce` (constant time).
    fn verify(&self, nonce: &[u8], proof: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(CONTEXT);
        mac.update(nonce);
        mac.verify_slice(proof).is_ok()
    }

    fn challenge() -> io::Result<([u8; CHALLENGE_LEN], [u8; NONCE_LEN])> {
        let nonce: [u8; NONCE_LEN] = random()?;
        let mut c = [0; CHALLENGE_LEN];
        c[..4].copy_from_slice(CHALLENGE_MAGIC);
        c[4] = VERSION;
        c[5..].copy_from_slice(&nonce);
        Ok((c, nonce))
    }

    fn answer(&self, challenge: &[u8; CHALLENGE_LEN]) -> Result<[u8; PROOF_LEN], AuthError> {
        if &challenge[..4] != CHALLENGE_MAGIC || challenge[4] != VERSION {
            return Err(AuthError::NotEgret);
        }
        let mut p = [0; PROOF_LEN];
        p[..4].copy_from_slice(PROOF_MAGIC);
        p[4..].copy_from_slice(&self.proof(&challenge[5..]));
        Ok(p)
    }

    fn check(&self, nonce: &[u8], proof: &[u8; PROOF_LEN]) -> Result<(), AuthError> {
        if &proof[..4] != PROOF_MAGIC {
            return Err(AuthError::Refused);
        }
        if self.verify(nonce, &proof[4..]) {
            Ok(())
        } else {
            Err(AuthError::Refused)
        }
    }

    /// The server's side on a blocking stream: challenge, then check the proof (within [`HANDSHAKE_TIMEOUT`]).
    /// The stream's read timeout is restored after.
    pub fn accept(&self, stream: &mut std::net::TcpStream) -> Result<(), AuthError> {
        let before = stream.read_timeout()?;
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let result = (|| {
            let (challenge, nonce) = Self::challenge()?;
            stream.write_all(&challenge)?;
            let mut proof = [0; PROOF_LEN];
            stream.read_exact(&mut proof)?;
            self.check(&nonce, &proof)
        })();
        stream.set_read_timeout(before)?;
        result
    }

    /// The client's side on a blocking stream: answer the server's challenge.
    pub fn connect(&self, stream: &mut std::net::TcpStream) -> Result<(), AuthError> {
        let before = stream.read_timeout()?;
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let result = (|| {
            let mut challenge = [0; CHALLENGE_LEN];
            stream.read_exact(&mut challenge)?;
            stream.write_all(&self.answer(&challenge)?)?;
            Ok(())
        })();
        stream.set_read_timeout(before)?;
        result
    }

    /// Connects to `host:port` and proves the topology's secret: a stream ready for frames.
    pub fn connect_to(&self, host: &str, port: u16) -> Result<std::net::TcpStream, AuthError> {
        let mut stream = std::net::TcpStream::connect((host, port))?;
        self.connect(&mut stream)?;
        Ok(stream)
    }

    /// The server's side on an async stream.
    pub async fn accept_async<S>(&self, stream: &mut S) -> Result<(), AuthError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (challenge, nonce) = Self::challenge()?;
        stream.write_all(&challenge).await?;
        let mut proof = [0; PROOF_LEN];
        tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut proof))
            .await
            .map_err(|_| AuthError::Refused)??;
        self.check(&nonce, &proof)
    }

    /// The client's side on an async stream.
    pub async fn connect_async<S>(&self, stream: &mut S) -> Result<(), AuthError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut challenge = [0; CHALLENGE_LEN];
        tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut challenge))
            .await
            .map_err(|_| AuthError::Io(io::ErrorKind::TimedOut.into()))??;
        stream.write_all(&self.answer(&challenge)?).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (s, c)
    }

    #[test]
    fn the_right_secret_gets_in_and_a_wrong_one_or_none_does_not() {
        let secret = TopologySecret::generate().unwrap();
        let (mut s, mut c) = pair();
        let server = {
            let secret = secret.clone();
            std::thread::spawn(move || secret.accept(&mut s))
        };
        secret.connect(&mut c).unwrap();
        server.join().unwrap().unwrap();

        let other = TopologySecret::generate().unwrap();
        let (mut s, mut c) = pair();
        let server = {
            let secret = secret.clone();
            std::thread::spawn(move || secret.accept(&mut s))
        };
        other.connect(&mut c).unwrap();
        assert!(matches!(server.join().unwrap(), Err(AuthError::Refused)));

        // A client that sends a frame instead of a proof is refused too.
        let (mut s, mut c) = pair();
        let server = {
            let secret = secret.clone();
            std::thread::spawn(move || secret.accept(&mut s))
        };
        c.write_all(&[0u8; PROOF_LEN]).unwrap();
        assert!(matches!(server.join().unwrap(), Err(AuthError::Refused)));
    }

    #[test]
    fn a_secret_round_trips_through_hex_and_its_file() {
        let secret = TopologySecret::generate().unwrap();
        assert_eq!(TopologySecret::from_hex(&secret.to_hex()), Some(secret.clone()));
        assert_eq!(TopologySecret::from_hex("abc"), None);
        let home = std::env::temp_dir().join(format!("egret-secret-{}", std::process::id()));
        secret.store(&home, "local", "wc").unwrap();
        let path = TopologySecret::path(&home, "local", "wc");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(TopologySecret::load(&home, "local", "wc").unwrap(), secret);
        TopologySecret::remove(&home, "local", "wc").unwrap();
        assert!(TopologySecret::load(&home, "local", "wc").is_err());
        let _ = std::fs::remove_dir_all(home);
    }
}
