//! Several "hosts" on this machine for multi-host tests: each a network namespace with its own address on a
//! bridge that the test creates (and removes when dropped). The bridge has an address in this process's own
//! namespace too, so the test (and the `egret` commands it runs) reach every host, as an operator's machine on the
//! same network would. Needs root and iproute2 (`ip`). Traffic goes only to those addresses and to loopback.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Hosts {
    /// Prefix of every interface and namespace name (short: interface names have at most 15 bytes).
    tag: String,
    /// `10.<a>.<b>`: the hosts are `.1` to `.n`, this machine's side of the bridge `.254`.
    subnet: String,
    n: usize,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): multi-host tests need iproute2 and root"));
    assert!(
        out.status.success(),
        "ip {args:?} failed (multi-host tests need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    /// `n` hosts, `0..n`.
    pub fn new(n: usize) -> Hosts {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let (pid, seq) = (std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let tag = format!("eg{}{seq}", pid % 100_000);
        let subnet = format!("10.{}.{}", 200 + pid % 50, (pid / 50 + seq) % 250);
        let hosts = Hosts { tag, subnet, n };
        let br = hosts.bridge();
        ip(&["link", "add", &br, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}.254/24", hosts.subnet), "dev", &br]);
        ip(&["link", "set", &br, "up"]);
        for i in 0..n {
            let (ns, veth) = (hosts.netns(i), hosts.veth(i));
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &veth, "master", &br, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", hosts.addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        hosts
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("{}v{i}", self.tag)
    }

    /// Host `i`'s network namespace.
    pub fn netns(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Which host has address `addr`, if one does.
    pub fn host_of(&self, addr: &str) -> Option<usize> {
        (0..self.n).find(|&i| self.addr(i) == addr)
    }

    /// Takes host `i`'s link down (it is cut off from every other host) or up again.
    pub fn set_link(&self, i: usize, up: bool) {
        ip(&["link", "set", &self.veth(i), if up { "up" } else { "down" }]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Best effort: deleting a namespace removes its end of the veth pair, and with it ours.
        for i in 0..self.n {
            let _ = Command::new("ip").args(["netns", "del", &self.netns(i)]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge()]).output();
    }
}
