//! The local-file state manager: each message is one file under `<egret_home>/state/<cluster>/` (see
//! [`crate::paths`]), written atomically and read whole.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use egret_proto::Message;
use egret_proto::api::Topology;
use egret_proto::egret::{ContainerStatus, ExecutionState, Location, PackingPlan, PhysicalPlan, StatefulCheckpoints};

use crate::error::StateError;
use crate::manager::{StateManager, TmanagerLease};
use crate::paths::{self, Node};

/// Numbers this process's temporary files, so two writes of one target at once (two threads, two managers) never
/// open the same temporary file.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// State of one cluster kept in local files. Cheap to create; holds no open file and no lock, so any number of
/// processes may use the same tree at once (each write is atomic; the last writer of a file wins).
#[derive(Debug, Clone)]
pub struct LocalStateManager {
    root: PathBuf,
    /// Overrides `<egret_home>/checkpoints` as the root of the checkpoint stores.
    checkpoints_root: Option<PathBuf>,
    egret_home: PathBuf,
    cluster: String,
}

impl LocalStateManager {
    /// The state of `cluster` under `egret_home` (its root is `<egret_home>/state/<cluster>/`). Nothing is created
    /// until the first write. `cluster` becomes a path component, so it must be a valid name like a topology's.
    pub fn new(egret_home: &Path, cluster: &str) -> Result<Self, StateError> {
        check_name("cluster", cluster)?;
        Ok(LocalStateManager {
            root: paths::root(egret_home, cluster),
            checkpoints_root: None,
            egret_home: egret_home.to_path_buf(),
            cluster: cluster.to_string(),
        })
    }

    /// Keeps checkpoints under `root` (`<root>/<cluster>/<topology>`) instead of the egret home.
    pub fn with_checkpoints_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.checkpoints_root = Some(root.into());
        self
    }

    /// `<egret_home>/state/<cluster>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The physical plan with the modification time of the file it was read from. Both come from one open file, so
    /// they belong together even if the plan is replaced meanwhile; a poller that keeps the time and later sees
    /// [`Self::physical_plan_mtime`] differ knows there is a newer plan.
    pub fn get_physical_plan_with_mtime(&self, name: &str) -> Result<Option<(PhysicalPlan, SystemTime)>, StateError> {
        self.get_with_mtime(Node::PhysicalPlan, name)
    }

    /// When the physical plan was last written, or `None` if there is none. Polled by the processes that follow
    /// the plan, since local files have no watches.
    pub fn physical_plan_mtime(&self, name: &str) -> Result<Option<SystemTime>, StateError> {
        self.modified(name, Node::PhysicalPlan)
    }

    /// When `node` of topology `name` was last written, or `None` if it does not exist. Compare for inequality,
    /// not order: a rewrite within the file system's timestamp granularity can keep the same time, so a poller that
    /// must not miss a change also compares what it read.
    pub fn modified(&self, name: &str, node: Node) -> Result<Option<SystemTime>, StateError> {
        check_name("topology", name)?;
        let path = paths::node(&self.root, node, name);
        match fs::metadata(&path) {
            Ok(meta) => meta.modified().map(Some).map_err(|e| StateError::io(path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::io(path, e)),
        }
    }

    fn put<M: Message>(&self, node: Node, name: &str, message: &M) -> Result<(), StateError> {
        check_name("topology", name)?;
        write_atomic(&paths::node(&self.root, node, name), &message.encode_to_vec())
    }

    fn get<M: Message + Default>(&self, node: Node, name: &str) -> Result<Option<M>, StateError> {
        Ok(self.get_with_mtime(node, name)?.map(|(message, _)| message))
    }

    fn get_with_mtime<M: Message + Default>(
        &self,
        node: Node,
        name: &str,
    ) -> Result<Option<(M, SystemTime)>, StateError> {
        check_name("topology", name)?;
        read_message(&paths::node(&self.root, node, name))
    }
}

impl StateManager for LocalStateManager {
    fn cluster(&self) -> &str {
        &self.cluster
    }

    fn describe(&self) -> String {
        format!("local files under {}", self.root.display())
    }

    fn watch(&self, name: &str, node: Node) -> Result<tokio::sync::watch::Receiver<u64>, StateError> {
        check_name("topology", name)?;
        Ok(watch_file(paths::node(&self.root, node, name)))
    }

    fn watch_location(&self, name: &str, process: &str) -> Result<tokio::sync::watch::Receiver<u64>, StateError> {
        check_name("topology", name)?;
        check_name("process", process)?;
        Ok(watch_file(paths::location(&self.root, name, process)))
    }

    fn claim_tmanager(
        &self,
        name: &str,
        location: &Location,
        _wait: std::time::Duration,
    ) -> Result<TmanagerLease, StateError> {
        self.put_location(name, location)?;
        Ok(TmanagerLease::default())
    }

    fn put_topology(&self, name: &str, topology: &Topology) -> Result<(), StateError> {
        self.put(Node::Topology, name, topology)
    }

    // Writes the definition of a new topology, or fails with [`StateError::TopologyExists`] if `name` already has
    // one. The check and the write are one step (a hard link, which the kernel refuses over an existing file), so
    // of two submits of one name at once exactly one succeeds: this is how a submit claims its name before it
    // writes or starts anything else. [`Self::delete_topology`] releases the name.
    fn create_topology(&self, name: &str, topology: &Topology) -> Result<(), StateError> {
        check_name("topology", name)?;
        create_exclusive(
            &paths::node(&self.root, Node::Topology, name),
            &topology.encode_to_vec(),
        )
        .map_err(|e| match e {
            StateError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists => {
                StateError::TopologyExists(name.to_string())
            }
            other => other,
        })
    }

    fn get_topology(&self, name: &str) -> Result<Option<Topology>, StateError> {
        self.get(Node::Topology, name)
    }

    fn put_packing_plan(&self, name: &str, plan: &PackingPlan) -> Result<(), StateError> {
        self.put(Node::PackingPlan, name, plan)
    }

    fn get_packing_plan(&self, name: &str) -> Result<Option<PackingPlan>, StateError> {
        self.get(Node::PackingPlan, name)
    }

    fn put_physical_plan(&self, name: &str, plan: &PhysicalPlan) -> Result<(), StateError> {
        self.put(Node::PhysicalPlan, name, plan)
    }

    fn get_physical_plan(&self, name: &str) -> Result<Option<PhysicalPlan>, StateError> {
        self.get(Node::PhysicalPlan, name)
    }

    // Effectively-once: the complete checkpoints and the last epoch, written by the tmanager. Removed by
    // [`Self::delete_topology`] (a new submit starts clean), unlike the checkpoints themselves.
    fn put_stateful_checkpoints(&self, name: &str, c: &StatefulCheckpoints) -> Result<(), StateError> {
        self.put(Node::StatefulCheckpoints, name, c)
    }

    fn get_stateful_checkpoints(&self, name: &str) -> Result<Option<StatefulCheckpoints>, StateError> {
        self.get(Node::StatefulCheckpoints, name)
    }

    // Where topology `name`'s checkpoints are stored: `<egret_home>/checkpoints/<cluster>/<name>`.
    fn checkpoints_dir(&self, name: &str) -> Result<PathBuf, StateError> {
        check_name("topology", name)?;
        Ok(match &self.checkpoints_root {
            Some(root) => root.join(&self.cluster).join(name),
            None => paths::checkpoints_dir(&self.egret_home, &self.cluster, name),
        })
    }

    fn put_execution_state(&self, name: &str, state: &ExecutionState) -> Result<(), StateError> {
        self.put(Node::ExecutionState, name, state)
    }

    fn get_execution_state(&self, name: &str) -> Result<Option<ExecutionState>, StateError> {
        self.get(Node::ExecutionState, name)
    }

    // Records where a daemon of topology `name` listens, in a file named by `location.process`.
    fn put_location(&self, name: &str, location: &Location) -> Result<(), StateError> {
        check_name("topology", name)?;
        check_name("process", &location.process)?;
        write_atomic(
            &paths::location(&self.root, name, &location.process),
            &location.encode_to_vec(),
        )
    }

    fn get_location(&self, name: &str, process: &str) -> Result<Option<Location>, StateError> {
        check_name("topology", name)?;
        check_name("process", process)?;
        let path = paths::location(&self.root, name, process);
        read_message(&path).map(|m| m.map(|(location, _)| location))
    }

    // Every daemon location of topology `name`, sorted by process name.
    fn locations(&self, name: &str) -> Result<Vec<Location>, StateError> {
        check_name("topology", name)?;
        let dir = paths::locations_dir(&self.root, name);
        let mut out = Vec::new();
        for file_name in list_dir(&dir)? {
            if !paths::valid_name(&file_name) {
                continue;
            }
            // Gone since the listing (deleted meanwhile): not an error, just not there any more.
            if let Some((location, _)) = read_message::<Location>(&dir.join(&file_name))? {
                out.push((file_name, location));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, location)| location).collect())
    }

    // Records the status an executor reports for its container, in a file named by `status.container`.
    fn put_container_status(&self, name: &str, status: &ContainerStatus) -> Result<(), StateError> {
        check_name("topology", name)?;
        let container = u32::try_from(status.container).map_err(|_| StateError::InvalidContainer(status.container))?;
        write_atomic(&paths::container(&self.root, name, container), &status.encode_to_vec())
    }

    // The status of every container of topology `name` that has reported one, sorted by container id.
    fn container_statuses(&self, name: &str) -> Result<Vec<ContainerStatus>, StateError> {
        check_name("topology", name)?;
        let dir = paths::containers_dir(&self.root, name);
        let mut out = Vec::new();
        for file_name in list_dir(&dir)? {
            let Some(id) = paths::parse_container_file_name(&file_name) else {
                continue;
            };
            if let Some((status, _)) = read_message::<ContainerStatus>(&dir.join(&file_name))? {
                out.push((id, status));
            }
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out.into_iter().map(|(_, status)| status).collect())
    }

    // Names of the topologies that have a definition (`topologies/<name>`), sorted.
    fn list_topologies(&self) -> Result<Vec<String>, StateError> {
        let mut names: Vec<String> = list_dir(&paths::node_dir(&self.root, Node::Topology))?
            .into_iter()
            .filter(|n| paths::valid_name(n))
            .collect();
        names.sort();
        Ok(names)
    }

    // Whether topology `name` has a definition.
    fn exists(&self, name: &str) -> Result<bool, StateError> {
        check_name("topology", name)?;
        let path = paths::node(&self.root, Node::Topology, name);
        path.try_exists().map_err(|e| StateError::io(path, e))
    }

    // Removes every file and directory of topology `name`; missing ones are fine, so a delete that was interrupted
    // can simply be repeated. The definition goes last: until everything else is gone the topology is still
    // listed, and a repeated `kill` finds it. Stop the topology's processes first, or a daemon still running may
    // write its location or status again.
    fn delete_topology(&self, name: &str) -> Result<(), StateError> {
        check_name("topology", name)?;
        for dir in [
            paths::locations_dir(&self.root, name),
            paths::containers_dir(&self.root, name),
        ] {
            ignore_missing(fs::remove_dir_all(&dir)).map_err(|e| StateError::io(dir, e))?;
        }
        for node in [
            Node::StatefulCheckpoints,
            Node::PhysicalPlan,
            Node::PackingPlan,
            Node::ExecutionState,
            Node::Topology,
        ] {
            let path = paths::node(&self.root, node, name);
            ignore_missing(fs::remove_file(&path)).map_err(|e| StateError::io(path, e))?;
        }
        Ok(())
    }
}

/// How often a local watch looks at its file.
pub const LOCAL_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// A counter that grows when `path`'s modification time (or existence) changes, kept by a thread that looks every
/// [`LOCAL_WATCH_INTERVAL`] and ends when the receiver is dropped.
fn watch_file(path: PathBuf) -> tokio::sync::watch::Receiver<u64> {
    let (changes, receiver) = tokio::sync::watch::channel(0);
    let seen = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut last = seen(&path);
    // Without a thread the sender is dropped: the reader's `changed()` fails at once and it reads on its own.
    let _ = std::thread::Builder::new()
        .name("statemgr-watch".into())
        .spawn(move || {
            while !changes.is_closed() {
                std::thread::sleep(LOCAL_WATCH_INTERVAL);
                let now = seen(&path);
                if now != last {
                    last = now;
                    changes.send_modify(|n| *n += 1);
                }
            }
        });
    receiver
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), StateError> {
    if paths::valid_name(name) {
        Ok(())
    } else {
        Err(StateError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The file names (UTF-8 ones only; the state manager writes no other) in `dir`; empty if `dir` does not exist.
fn list_dir(dir: &Path) -> Result<Vec<String>, StateError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StateError::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StateError::io(dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Reads and decodes one message, with the modification time of the very file read (taken from the open handle,
/// so an atomic replacement in between cannot pair the old time with the new content). `None` if it does not
/// exist.
fn read_message<M: Message + Default>(path: &Path) -> Result<Option<(M, SystemTime)>, StateError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::io(path, e)),
    };
    let mtime = file
        .metadata()
        .and_then(|meta| meta.modified())
        .map_err(|e| StateError::io(path, e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| StateError::io(path, e))?;
    let message = M::decode(bytes.as_slice()).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Some((message, mtime)))
}

/// Replaces `target` with `bytes` so that a reader (or a crash) sees the old content or the new, never a part:
/// write a temporary file beside it, fsync it, rename it over the target, fsync the directory so the rename
/// itself survives a crash. Creates missing parent directories.
fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let (dir, temp) = write_temp(target, bytes)?;
    if let Err(e) = fs::rename(&temp, target) {
        // Best effort: the write already failed, and a leftover temporary file is skipped by every listing.
        let _ = fs::remove_file(&temp);
        return Err(StateError::io(target, e));
    }
    sync_dir(dir)
}

/// Creates `target` with `bytes`, complete, or fails with an `AlreadyExists` I/O error if it exists: the content
/// goes to a temporary file (fsynced), which is then hard-linked as `target` (link(2) never replaces a file, so
/// two creators race safely and a reader never sees a part), and the temporary name is removed.
fn create_exclusive(target: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let (dir, temp) = write_temp(target, bytes)?;
    let linked = fs::hard_link(&temp, target).map_err(|e| StateError::io(target, e));
    // Best effort either way: the target (if created) holds the content, and a leftover temporary file is skipped
    // by every listing.
    let _ = fs::remove_file(&temp);
    linked?;
    sync_dir(dir)
}

/// Writes `bytes` to a new temporary file beside `target` and fsyncs it; returns the directory and the file.
/// Creates missing parent directories.
fn write_temp<'a>(target: &'a Path, bytes: &[u8]) -> Result<(&'a Path, PathBuf), StateError> {
    let Some(dir) = target.parent() else {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "no parent directory");
        return Err(StateError::io(target, source));
    };
    fs::create_dir_all(dir).map_err(|e| StateError::io(dir, e))?;
    let temp = paths::temp_for(target, std::process::id(), TEMP_SEQ.fetch_add(1, Ordering::Relaxed));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(StateError::io(&temp, e));
    }
    Ok((dir, temp))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StateError::io(dir, e))
}

/// Directories cannot be opened for fsync outside Unix; the rename is still atomic, only its durability across a
/// power loss is weaker.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StateError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_testkit::fixtures::{container_status, execution_state, location, packing_plan, physical_plan, topology};

    fn manager() -> (tempfile::TempDir, LocalStateManager) {
        let home = tempfile::tempdir().expect("temp dir");
        let sm = LocalStateManager::new(home.path(), "local").expect("valid cluster");
        (home, sm)
    }

    /// Every file under `dir`, relative to it.
    fn files(dir: &Path) -> Vec<PathBuf> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(base, &path, out);
                } else if let Ok(rel) = path.strip_prefix(base) {
                    out.push(rel.to_path_buf());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    /// Every file and directory under `dir` whose path has a component equal to `name`.
    fn paths_of(dir: &Path, name: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
            let Ok(entries) = fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_name() == name {
                    out.push(path.clone());
                }
                if path.is_dir() {
                    walk(&path, name, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, name, &mut out);
        out
    }

    fn fill(sm: &LocalStateManager, name: &str) {
        sm.put_topology(name, &topology(name)).unwrap();
        sm.put_packing_plan(name, &packing_plan(name, 2)).unwrap();
        sm.put_physical_plan(name, &physical_plan(name)).unwrap();
        sm.put_execution_state(name, &execution_state(name, "local")).unwrap();
        sm.put_stateful_checkpoints(
            name,
            &StatefulCheckpoints {
                complete: vec![3, 4],
                epoch: 2,
                ..Default::default()
            },
        )
        .unwrap();
        sm.put_location(name, &location("tmanager", 0, 4100)).unwrap();
        sm.put_location(name, &location("stmgr-1", 1, 4200)).unwrap();
        sm.put_container_status(name, &container_status(0)).unwrap();
        sm.put_container_status(name, &container_status(1)).unwrap();
    }

    #[test]
    fn every_kind_round_trips() {
        let (home, sm) = manager();
        assert_eq!(sm.root(), home.path().join("state").join("local"));
        fill(&sm, "wc");
        assert_eq!(sm.get_topology("wc").unwrap(), Some(topology("wc")));
        assert_eq!(sm.get_packing_plan("wc").unwrap(), Some(packing_plan("wc", 2)));
        assert_eq!(sm.get_physical_plan("wc").unwrap(), Some(physical_plan("wc")));
        assert_eq!(
            sm.get_execution_state("wc").unwrap(),
            Some(execution_state("wc", "local"))
        );
        assert_eq!(
            sm.get_location("wc", "stmgr-1").unwrap(),
            Some(location("stmgr-1", 1, 4200))
        );
        assert_eq!(
            sm.locations("wc").unwrap(),
            vec![location("stmgr-1", 1, 4200), location("tmanager", 0, 4100)]
        );
        assert_eq!(
            sm.container_statuses("wc").unwrap(),
            vec![container_status(0), container_status(1)]
        );
        assert!(sm.exists("wc").unwrap());
        assert_eq!(sm.list_topologies().unwrap(), vec!["wc".to_string()]);
        assert_eq!(
            files(sm.root()),
            [
                "containers/wc/0",
                "containers/wc/1",
                "executionstate/wc",
                "locations/wc/stmgr-1",
                "locations/wc/tmanager",
                "packingplans/wc",
                "pplans/wc",
                "statefulcheckpoints/wc",
                "topologies/wc",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_put_replaces_the_previous_message() {
        let (_home, sm) = manager();
        sm.put_packing_plan("wc", &packing_plan("wc", 3)).unwrap();
        sm.put_packing_plan("wc", &packing_plan("wc", 1)).unwrap();
        assert_eq!(sm.get_packing_plan("wc").unwrap(), Some(packing_plan("wc", 1)));
        sm.put_location("wc", &location("tmanager", 0, 1)).unwrap();
        sm.put_location("wc", &location("tmanager", 0, 2)).unwrap();
        assert_eq!(sm.locations("wc").unwrap(), vec![location("tmanager", 0, 2)]);
    }

    #[test]
    fn missing_is_none_or_empty() {
        let (_home, sm) = manager();
        assert_eq!(sm.get_topology("wc").unwrap(), None);
        assert_eq!(sm.get_packing_plan("wc").unwrap(), None);
        assert_eq!(sm.get_physical_plan("wc").unwrap(), None);
        assert_eq!(sm.get_physical_plan_with_mtime("wc").unwrap(), None);
        assert_eq!(sm.get_execution_state("wc").unwrap(), None);
        assert_eq!(sm.get_location("wc", "tmanager").unwrap(), None);
        assert_eq!(sm.physical_plan_mtime("wc").unwrap(), None);
        assert!(sm.locations("wc").unwrap().is_empty());
        assert!(sm.container_statuses("wc").unwrap().is_empty());
        assert!(sm.list_topologies().unwrap().is_empty());
        assert!(!sm.exists("wc").unwrap());
        // Deleting what is not there is not an error.
        sm.delete_topology("wc").unwrap();
        assert!(!sm.root().exists(), "reads and deletes create nothing");
    }

    #[test]
    fn garbage_is_corrupt_and_names_the_file() {
        let (_home, sm) = manager();
        fill(&sm, "wc");
        // 0x6e is field 13 with wire type 6, which does not exist: no message decodes from this.
        let garbage = b"not a protobuf";
        for node in Node::ALL {
            fs::write(paths::node(sm.root(), node, "wc"), garbage).unwrap();
        }
        fs::write(paths::location(sm.root(), "wc", "tmanager"), garbage).unwrap();
        fs::write(paths::container(sm.root(), "wc", 1), garbage).unwrap();

        let check = |r: Result<(), StateError>, file: &str| match r {
            Err(StateError::Corrupt { path, reason }) => {
                assert!(path.ends_with(file), "{path:?} should end with {file}");
                assert!(!reason.is_empty());
            }
            other => panic!("{file}: expected Corrupt, got {other:?}"),
        };
        check(sm.get_topology("wc").map(drop), "topologies/wc");
        check(sm.get_packing_plan("wc").map(drop), "packingplans/wc");
        check(sm.get_physical_plan("wc").map(drop), "pplans/wc");
        check(sm.get_stateful_checkpoints("wc").map(drop), "statefulcheckpoints/wc");
        check(sm.get_execution_state("wc").map(drop), "executionstate/wc");
        check(sm.get_location("wc", "tmanager").map(drop), "locations/wc/tmanager");
        check(sm.locations("wc").map(drop), "locations/wc/tmanager");
        check(sm.container_statuses("wc").map(drop), "containers/wc/1");
    }

    #[test]
    fn topologies_side_by_side_are_independent() {
        let (_home, sm) = manager();
        fill(&sm, "alpha");
        sm.put_topology("beta", &topology("beta")).unwrap();
        sm.put_packing_plan("beta", &packing_plan("beta", 5)).unwrap();
        sm.put_location("beta", &location("stmgr-3", 3, 9)).unwrap();
        sm.put_container_status("beta", &container_status(4)).unwrap();

        assert_eq!(
            sm.list_topologies().unwrap(),
            vec!["alpha".to_string(), "beta".to_string()]
        );
        assert_eq!(sm.get_packing_plan("alpha").unwrap(), Some(packing_plan("alpha", 2)));
        assert_eq!(sm.get_packing_plan("beta").unwrap(), Some(packing_plan("beta", 5)));
        assert_eq!(sm.get_physical_plan("beta").unwrap(), None);
        assert_eq!(sm.locations("beta").unwrap(), vec![location("stmgr-3", 3, 9)]);
        assert_eq!(sm.container_statuses("beta").unwrap(), vec![container_status(4)]);

        sm.delete_topology("beta").unwrap();
        assert_eq!(sm.list_topologies().unwrap(), vec!["alpha".to_string()]);
        assert_eq!(sm.get_topology("alpha").unwrap(), Some(topology("alpha")));
        assert_eq!(sm.locations("alpha").unwrap().len(), 2);
        assert_eq!(sm.container_statuses("alpha").unwrap().len(), 2);
    }

    #[test]
    fn delete_removes_every_file_and_directory_of_the_topology() {
        let (_home, sm) = manager();
        fill(&sm, "wc");
        fill(&sm, "other");
        let before = files(sm.root()).len();
        sm.delete_topology("wc").unwrap();
        assert_eq!(paths_of(sm.root(), "wc"), Vec::<PathBuf>::new());
        assert!(!sm.exists("wc").unwrap());
        assert_eq!(
            files(sm.root()).len(),
            before / 2,
            "the other topology keeps all its files"
        );
        // Again, with everything already gone.
        sm.delete_topology("wc").unwrap();
    }

    #[test]
    fn a_topology_is_created_once_until_it_is_deleted() {
        let (_home, sm) = manager();
        sm.create_topology("wc", &topology("wc")).unwrap();
        let second = sm.create_topology("wc", &topology("other"));
        assert!(
            matches!(&second, Err(StateError::TopologyExists(name)) if name == "wc"),
            "{second:?}"
        );
        assert_eq!(
            sm.get_topology("wc").unwrap(),
            Some(topology("wc")),
            "the first definition stays"
        );
        assert_eq!(
            files(sm.root()),
            vec![PathBuf::from("topologies/wc")],
            "no temporary file left"
        );
        sm.delete_topology("wc").unwrap();
        sm.create_topology("wc", &topology("again")).unwrap();
        assert_eq!(sm.get_topology("wc").unwrap(), Some(topology("again")));
    }

    #[test]
    fn of_many_creators_at_once_exactly_one_wins() {
        let (_home, sm) = manager();
        let barrier = std::sync::Barrier::new(8);
        let wins: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (sm, barrier) = (&sm, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        match sm.create_topology("wc", &topology(&format!("copy{i}"))) {
                            Ok(()) => 1,
                            Err(StateError::TopologyExists(_)) => 0,
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("creator thread")).sum()
        });
        assert_eq!(wins, 1);
        assert_eq!(files(sm.root()), vec![PathBuf::from("topologies/wc")]);
    }

    #[test]
    fn writes_leave_no_temporary_files() {
        let (_home, sm) = manager();
        for _ in 0..3 {
            fill(&sm, "wc");
        }
        let all = files(sm.root());
        assert_eq!(all.len(), 9);
        for f in &all {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            assert!(!paths::is_temp(name), "temporary file left behind: {f:?}");
        }
    }

    #[test]
    fn listings_skip_temporary_and_stray_files() {
        let (_home, sm) = manager();
        fill(&sm, "wc");
        // What a writer that crashed between create and rename leaves behind, and files nobody should have put there.
        fs::write(paths::temp_for(&paths::node(sm.root(), Node::Topology, "x"), 1, 1), b"").unwrap();
        fs::write(
            paths::temp_for(&paths::location(sm.root(), "wc", "tmanager"), 1, 2),
            b"junk",
        )
        .unwrap();
        fs::write(paths::containers_dir(sm.root(), "wc").join("01"), b"junk").unwrap();
        fs::write(paths::containers_dir(sm.root(), "wc").join("notes"), b"junk").unwrap();
        assert_eq!(sm.list_topologies().unwrap(), vec!["wc".to_string()]);
        assert_eq!(sm.locations("wc").unwrap().len(), 2);
        assert_eq!(sm.container_statuses("wc").unwrap().len(), 2);
    }

    #[test]
    fn physical_plan_mtime_follows_the_file() {
        let (_home, sm) = manager();
        sm.put_physical_plan("wc", &physical_plan("wc")).unwrap();
        let mtime = sm.physical_plan_mtime("wc").unwrap();
        let on_disk = fs::metadata(paths::node(sm.root(), Node::PhysicalPlan, "wc"))
            .and_then(|m| m.modified())
            .unwrap();
        assert_eq!(mtime, Some(on_disk));
        assert_eq!(sm.modified("wc", Node::PhysicalPlan).unwrap(), Some(on_disk));
        assert_eq!(sm.modified("wc", Node::PackingPlan).unwrap(), None);
        let (plan, read_mtime) = sm.get_physical_plan_with_mtime("wc").unwrap().unwrap();
        assert_eq!(plan, physical_plan("wc"));
        assert_eq!(read_mtime, on_disk);
    }

    #[test]
    fn invalid_names_are_rejected_before_any_path_is_built() {
        let (home, sm) = manager();
        let long = "x".repeat(101);
        for bad in [
            "",
            ".",
            "..",
            "../escape",
            "a/b",
            "/abs",
            "a b",
            "tab\t",
            "é",
            "a~1",
            long.as_str(),
        ] {
            let is_invalid = |r: Result<(), StateError>, what: &str| {
                assert!(
                    matches!(&r, Err(StateError::InvalidName { what: w, name }) if *w == what && name == bad),
                    "{bad:?} as {what}: {r:?}"
                )
            };
            is_invalid(sm.put_topology(bad, &topology("x")), "topology");
            is_invalid(sm.get_topology(bad).map(drop), "topology");
            is_invalid(sm.create_topology(bad, &topology("x")), "topology");
            is_invalid(sm.put_packing_plan(bad, &packing_plan("x", 1)), "topology");
            is_invalid(sm.get_physical_plan(bad).map(drop), "topology");
            is_invalid(sm.put_execution_state(bad, &execution_state("x", "local")), "topology");
            is_invalid(sm.physical_plan_mtime(bad).map(drop), "topology");
            is_invalid(sm.exists(bad).map(drop), "topology");
            is_invalid(sm.delete_topology(bad), "topology");
            is_invalid(sm.locations(bad).map(drop), "topology");
            is_invalid(sm.container_statuses(bad).map(drop), "topology");
            is_invalid(sm.put_container_status(bad, &container_status(1)), "topology");
            is_invalid(sm.put_location(bad, &location("tmanager", 0, 1)), "topology");
            is_invalid(sm.put_location("wc", &location(bad, 0, 1)), "process");
            is_invalid(sm.get_location("wc", bad).map(drop), "process");
            is_invalid(LocalStateManager::new(home.path(), bad).map(drop), "cluster");
        }
        assert!(matches!(
            sm.put_container_status("wc", &container_status(-1)),
            Err(StateError::InvalidContainer(-1))
        ));
        assert!(!home.path().join("state").exists(), "nothing was written");
    }

    #[test]
    fn a_local_watch_sees_a_write_and_a_delete() {
        let home = tempfile::tempdir().expect("temp dir");
        let sm = LocalStateManager::new(home.path(), "local").expect("valid cluster");
        let mut w = sm.watch("wc", Node::PhysicalPlan).expect("a watch");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let next = |w: &mut tokio::sync::watch::Receiver<u64>| {
            runtime
                .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(5), w.changed()).await })
                .expect("a change within 5 s")
                .expect("the watch lives")
        };
        sm.put_physical_plan("wc", &PhysicalPlan::default()).unwrap();
        next(&mut w);
        sm.delete_topology("wc").unwrap();
        next(&mut w);
    }
}
