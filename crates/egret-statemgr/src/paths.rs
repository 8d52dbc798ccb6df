//! Every path the local state manager reads or writes, and the rule for the names in them. Nothing else in the
//! crate joins a path, so this is the whole layout:
//!
//! ```text
//! <egret_home>/state/<cluster>/
//!   topologies/<topology>             heron.proto.api.Topology (the definition)
//!   packingplans/<topology>           egret.PackingPlan
//!   pplans/<topology>                 egret.PhysicalPlan
//!   executionstate/<topology>         egret.ExecutionState
//!   locations/<topology>/<process>    egret.Location, one per daemon ("tmanager", "stmgr-1", "metricsmgr-2", ...)
//!   containers/<topology>/<id>        egret.ContainerStatus, one per executor (container id in decimal)
//!   statefulcheckpoints/<topology>    egret.StatefulCheckpoints (effectively-once: complete checkpoints, epoch)
//! <egret_home>/checkpoints/<cluster>/<topology>/   the checkpoint store (egret-checkpoint's LocalStore)
//! ```
//!
//! Directory names follow Heron's state manager (`topologies`, `packingplans`, `pplans`, `executionstate`), so
//! someone who knows Heron's tree finds their way in this one. The ZooKeeper state manager uses the same names (these
//! constants) for its nodes under `<root>/<cluster>/`; only its node paths are built in `zookeeper.rs`.
//!
//! Names become path components, so they are checked before any path is built: [`valid_name`] admits no
//! separator and neither `.` nor `..`. Temporary files carry a `~`, which no valid name contains, so a listing
//! never mistakes a half-written file for a topology, process or container.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Under `egret_home`: the directory holding every cluster's state.
pub const STATE_DIR: &str = "state";
pub const TOPOLOGIES_DIR: &str = "topologies";
pub const PACKING_PLANS_DIR: &str = "packingplans";
pub const PHYSICAL_PLANS_DIR: &str = "pplans";
pub const EXECUTION_STATE_DIR: &str = "executionstate";
pub const LOCATIONS_DIR: &str = "locations";
pub const CONTAINERS_DIR: &str = "containers";
pub const STATEFUL_CHECKPOINTS_DIR: &str = "statefulcheckpoints";
/// Under `egret_home`: every cluster's checkpoint stores.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Longest topology, process or cluster name (Heron's and egret-api's limit for topology names).
pub const MAX_NAME_LEN: usize = 100;

/// The per-topology files that hold exactly one message each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// `topologies/<name>`: the topology definition.
    Topology,
    /// `packingplans/<name>`.
    PackingPlan,
    /// `pplans/<name>`.
    PhysicalPlan,
    /// `executionstate/<name>`.
    ExecutionState,
    /// `statefulcheckpoints/<name>`: the complete checkpoints of an effectively-once topology.
    StatefulCheckpoints,
}

impl Node {
    pub const ALL: [Node; 5] = [
        Node::Topology,
        Node::PackingPlan,
        Node::PhysicalPlan,
        Node::ExecutionState,
        Node::StatefulCheckpoints,
    ];

    /// The directory (under the cluster root) that holds this node of every topology.
    pub fn dir(self) -> &'static str {
        match self {
            Node::Topology => TOPOLOGIES_DIR,
            Node::PackingPlan => PACKING_PLANS_DIR,
            Node::PhysicalPlan => PHYSICAL_PLANS_DIR,
            Node::ExecutionState => EXECUTION_STATE_DIR,
            Node::StatefulCheckpoints => STATEFUL_CHECKPOINTS_DIR,
        }
    }
}

/// Whether `name` is safe as one path component: 1-100 of `A-Z a-z 0-9 _ . -`, and not `.` or `..` (which the
/// character set alone would let through, and which would climb out of the state tree).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `<egret_home>/state/<cluster>`. The caller has checked `cluster` with [`valid_name`].
pub fn root(egret_home: &Path, cluster: &str) -> PathBuf {
    egret_home.join(STATE_DIR).join(cluster)
}

/// `<egret_home>/checkpoints/<cluster>/<name>`: topology `name`'s checkpoint store. Kept when the topology is
/// killed, so that `egret submit --restore-checkpoint` can start a new run from it.
pub fn checkpoints_dir(egret_home: &Path, cluster: &str, name: &str) -> PathBuf {
    egret_home.join(CHECKPOINTS_DIR).join(cluster).join(name)
}

/// The directory holding `node` of every topology.
pub fn node_dir(root: &Path, node: Node) -> PathBuf {
    root.join(node.dir())
}

/// The file holding `node` of topology `name`.
pub fn node(root: &Path, node: Node, name: &str) -> PathBuf {
    node_dir(root, node).join(name)
}

/// `locations/<name>`: one file per daemon of the topology.
pub fn locations_dir(root: &Path, name: &str) -> PathBuf {
    root.join(LOCATIONS_DIR).join(name)
}

/// `locations/<name>/<process>`.
pub fn location(root: &Path, name: &str, process: &str) -> PathBuf {
    locations_dir(root, name).join(process)
}

/// `containers/<name>`: one file per executor of the topology.
pub fn containers_dir(root: &Path, name: &str) -> PathBuf {
    root.join(CONTAINERS_DIR).join(name)
}

/// `containers/<name>/<container>`.
pub fn container(root: &Path, name: &str, container: u32) -> PathBuf {
    containers_dir(root, name).join(container_file_name(container))
}

/// A container status file's name: the id in decimal, without leading zeros.
pub fn container_file_name(container: u32) -> String {
    container.to_string()
}

/// The container id a file name under `containers/<name>/` stands for; `None` for anything else (a temporary
/// file, a stray file someone put there).
pub fn parse_container_file_name(file_name: &str) -> Option<u32> {
    let id: u32 = file_name.parse().ok()?;
    // "+1" and "01" parse too; only the canonical spelling is a container file.
    (container_file_name(id) == file_name).then_some(id)
}

/// A temporary sibling of `target` to write before renaming over it. Unique per process (`pid`) and per write
/// (`seq`), so concurrent writers never share one; in the same directory, so the rename stays within one file system
/// and is atomic.
pub fn temp_for(target: &Path, pid: u32, seq: u64) -> PathBuf {
    let mut file_name = target.file_name().map(OsString::from).unwrap_or_default();
    file_name.push(format!("~{pid}~{seq}.tmp"));
    target.with_file_name(file_name)
}

/// Whether a file name is a temporary file of [`temp_for`].
pub fn is_temp(file_name: &str) -> bool {
    file_name.contains('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["wordcount", "a", "A-b_c.9", "..a", ".hidden", &"x".repeat(100)] {
            assert!(valid_name(ok), "{ok:?} should be valid");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é", "a\0", "a~1", &"x".repeat(101)] {
            assert!(!valid_name(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn container_file_names_are_canonical() {
        assert_eq!(parse_container_file_name("0"), Some(0));
        assert_eq!(parse_container_file_name("12"), Some(12));
        for bad in ["", "01", "+1", "-1", "1~7~3.tmp", "x"] {
            assert_eq!(parse_container_file_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn temp_files_are_siblings_no_name_can_collide_with() {
        let t = temp_for(Path::new("/s/pplans/wc"), 42, 7);
        assert_eq!(t, Path::new("/s/pplans/wc~42~7.tmp"));
        let name = t.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(is_temp(name));
        assert!(!valid_name(name));
    }
}
