//! The ZooKeeper state manager: each message is the data of one znode under `<root>/<cluster>/`, with Heron's
//! directory names (the same as the local files', see [`crate::paths`]):
//!
//! ```text
//! <root>/<cluster>/
//!   topologies/<topology>  packingplans/<topology>  pplans/<topology>  executionstate/<topology>
//!   statefulcheckpoints/<topology>
//!   locations/<topology>/<process>    EPHEMERAL for the process "tmanager", persistent for every other one
//!   containers/<topology>/<id>
//! ```
//!
//! # Threads
//! The client (`zookeeper-client`) is async, the [`StateManager`] trait is sync, and it is called from plain threads
//! and from inside tokio runtimes alike. So the client lives on a thread of its own running a current-thread tokio
//! runtime; a call sends a job there over a channel and blocks on a std channel for the answer. The caller's runtime
//! (if any) is never entered, so no `block_on` can nest or starve it.
//!
//! # Failures
//! On a lost connection the client reconnects by itself; a call that fails meanwhile is retried transparently
//! until the retry bound (the session timeout) has passed, then it fails with [`StateError::ZooKeeperUnavailable`].
//! When the session expires (the servers were out of reach for longer than the session timeout), a new session is
//! opened. Every ephemeral node of the old session is gone then: the tmanager must learn it
//! ([`ZkStateManager::session_expired_count`], [`ZkStateManager::session_expirations`]), stop acting as the
//! tmanager, and register its location again (a newer tmanager may have taken over meanwhile).
//!
//! # The tmanager's location
//! `locations/<topology>/tmanager` is ephemeral, owned by the session of the manager that wrote it, so it disappears
//! when that tmanager's process dies (after the session timeout) or drops its manager (at once). A put replaces it
//! like any put replaces a message: a node of another session (a tmanager that died and whose session has not
//! expired yet) is deleted and created again, owned by the writer. The tmanager itself does not put it: it claims
//! it ([`StateManager::claim_tmanager`]), which never takes the node from a live session, so that two tmanagers
//! never act at once; its lease is lost when its session expires.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use egret_proto::Message;
use egret_proto::api::Topology;
use egret_proto::egret::{ContainerStatus, ExecutionState, Location, PackingPlan, PhysicalPlan, StatefulCheckpoints};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use zookeeper_client::{Acls, AddWatchMode, Client, CreateMode, CreateOptions, EventType, PersistentWatcher};

use crate::error::StateError;
use crate::local::check_name;
use crate::manager::{StateManager, TmanagerLease};
use crate::paths::{self, Node};

/// The process whose location is an ephemeral node (Heron's `tmasters/<name>` is ephemeral): stmgrs find a live
/// tmanager there, or none.
pub const EPHEMERAL_PROCESS: &str = "tmanager";

/// The largest message stored. A ZooKeeper server refuses (by dropping the connection) a request larger than its
/// `jute.maxbuffer`, 1 MiB by default; checking first gives a clear error instead of retries until the bound.
pub const MAX_NODE_BYTES: usize = 1_000_000;

const PERSISTENT: CreateOptions<'static> = CreateMode::Persistent.with_acls(Acls::anyone_all());
const EPHEMERAL: CreateOptions<'static> = CreateMode::Ephemeral.with_acls(Acls::anyone_all());

/// How often a tmanager that waits for another one's claim to end looks again.
const CLAIM_POLL: Duration = Duration::from_millis(200);
/// How long to wait between two tries of an operation while the client reconnects.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between two tries to open a new session after one expired.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(2);
/// How long a dropped manager waits for ZooKeeper to confirm that its session is closed (and its ephemeral nodes
/// gone). Past this the server expires the session by itself after the session timeout.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// State of one cluster kept in ZooKeeper. Holds one ZooKeeper session (on its own thread) for its whole life;
/// dropping it closes the session, which removes its ephemeral node (the tmanager location) at once.
pub struct ZkStateManager {
    cluster: String,
    servers: String,
    /// `<root>/<cluster>`: every node of this cluster is under it.
    base: String,
    /// Where checkpoints are kept: local files like the local state manager's, under this egret home.
    egret_home: Option<PathBuf>,
    /// Overrides `<egret_home>/checkpoints` as the root of the checkpoint stores.
    checkpoints_root: Option<PathBuf>,
    commands: mpsc::UnboundedSender<Command>,
    status: Arc<SessionStatus>,
    worker: Option<thread::JoinHandle<()>>,
}

impl fmt::Debug for ZkStateManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkStateManager")
            .field("servers", &self.servers)
            .field("base", &self.base)
            .field("session_id", &self.session_id())
            .finish_non_exhaustive()
    }
}

impl ZkStateManager {
    /// Opens a session with the ZooKeeper servers of `connection` (`host:port[,host:port...][/chroot]`) for the state
    /// of `cluster` under `root` (an absolute path such as `/egret`; created with the first write). Fails if no
    /// session opens within `session_timeout`, which is also how long a call keeps retrying while the connection is
    /// lost. Nothing is created until the first write.
    pub fn connect(connection: &str, root: &str, cluster: &str, session_timeout: Duration) -> Result<Self, StateError> {
        check_name("cluster", cluster)?;
        let base = base_path(root, cluster)?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let status = Arc::new(SessionStatus {
            id: AtomicI64::new(0),
            expirations: watch::channel(0).0,
            leases: Mutex::new(Vec::new()),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let config = SessionConfig {
            servers: connection.to_string(),
            session_timeout,
            retry_for: session_timeout,
        };
        let worker_status = status.clone();
        let worker = thread::Builder::new()
            .name(format!("egret-zk-{cluster}"))
            .spawn(move || run_worker(config, worker_status, ready_tx, receiver))
            .map_err(|e| StateError::ZooKeeperConnect {
                servers: connection.to_string(),
                reason: format!("cannot start the client thread: {e}"),
            })?;
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(StateError::ZooKeeperConnect {
                servers: connection.to_string(),
                reason: "the client thread stopped".into(),
            })
        });
        if let Err(e) = ready {
            // The thread has returned or is about to: it sent its last message.
            let _ = worker.join();
            return Err(e);
        }
        Ok(ZkStateManager {
            cluster: cluster.to_string(),
            servers: connection.to_string(),
            base,
            egret_home: None,
            checkpoints_root: None,
            commands,
            status,
            worker: Some(worker),
        })
    }

    /// Keeps checkpoints under `<egret_home>/checkpoints/<cluster>/<topology>`, as the local state manager does:
    /// ZooKeeper holds only the list of complete checkpoints, the checkpoint store is local files.
    pub fn with_egret_home(mut self, egret_home: impl Into<PathBuf>) -> Self {
        self.egret_home = Some(egret_home.into());
        self
    }

    /// Keeps checkpoints under `root` (`<root>/<cluster>/<topology>`, a directory every host shares) instead of
    /// the egret home.
    pub fn with_checkpoints_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.checkpoints_root = Some(root.into());
        self
    }

    /// `<root>/<cluster>`, the node every other node of this cluster is under.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The id of the current ZooKeeper session, or `None` while a new one is being opened after an expiry.
    pub fn session_id(&self) -> Option<i64> {
        match self.status.id.load(Ordering::SeqCst) {
            0 => None,
            id => Some(id),
        }
    }

    /// How many times this manager's session has expired (each time a new one is opened). When it grows, the
    /// ephemeral tmanager location this manager wrote is gone: the tmanager must stop acting and register again.
    pub fn session_expired_count(&self) -> u64 {
        *self.status.expirations.borrow()
    }

    /// [`Self::session_expired_count`] as a watch, for an async owner that waits for an expiry instead of polling.
    pub fn session_expirations(&self) -> watch::Receiver<u64> {
        self.status.expirations.subscribe()
    }

    fn watch_path(&self, path: String) -> Result<watch::Receiver<u64>, StateError> {
        self.call(move |session| async move {
            let watcher = session
                .run(&path, |client, _| {
                    let path = &path;
                    async move { client.watch(path, AddWatchMode::Persistent).await }
                })
                .await?;
            let (changes, receiver) = watch::channel(0);
            session.spawn(follow(session.clone(), path, watcher, changes));
            Ok(receiver)
        })
    }

    /// Runs `job` on the client thread and waits for its answer.
    fn call<T, F, Fut>(&self, job: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Session>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StateError>> + Send + 'static,
    {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |session| {
            Box::pin(async move {
                // The caller waits for this; if it is gone there is no one to tell.
                let _ = reply.send(job(session).await);
            })
        });
        let stopped = || StateError::ZooKeeper {
            path: self.base.clone(),
            reason: "the state manager's client thread has stopped".into(),
        };
        self.commands.send(Command::Run(job)).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    fn node_path(&self, node: Node, name: &str) -> String {
        format!("{}/{}/{name}", self.base, node.dir())
    }

    fn locations_path(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.base, paths::LOCATIONS_DIR)
    }

    fn location_path(&self, name: &str, process: &str) -> String {
        format!("{}/{process}", self.locations_path(name))
    }

    fn containers_path(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.base, paths::CONTAINERS_DIR)
    }

    fn put<M: Message>(&self, node: Node, name: &str, message: &M) -> Result<(), StateError> {
        check_name("topology", name)?;
        self.put_path(self.node_path(node, name), message.encode_to_vec(), false)
    }

    fn get<M: Message + Default>(&self, node: Node, name: &str) -> Result<Option<M>, StateError> {
        check_name("topology", name)?;
        let path = self.node_path(node, name);
        let data = self.call({
            let path = path.clone();
            move |session| async move { session.get(&path).await }
        })?;
        data.map(|bytes| decode(&path, &bytes)).transpose()
    }

    /// Replaces (or creates) the node at `path`, as an ephemeral node of this session if `ephemeral`.
    fn put_path(&self, path: String, data: Vec<u8>, ephemeral: bool) -> Result<(), StateError> {
        check_size(&path, &data)?;
        self.call(move |session| async move {
            session
                .run(&path, |client, _| {
                    let (path, data) = (&path, &data);
                    async move {
                        if ephemeral {
                            put_ephemeral(&client, path, data).await
                        } else {
                            put_persistent(&client, path, data).await
                        }
                    }
                })
                .await
        })
    }

    /// The data of every child of `dir` whose name `keep` accepts (none if `dir` does not exist), decoded, sorted by
    /// the key `keep` gives.
    fn children<K: Ord, M: Message + Default>(
        &self,
        dir: String,
        keep: impl Fn(&str) -> Option<K>,
    ) -> Result<Vec<M>, StateError> {
        let children = self.call({
            let dir = dir.clone();
            move |session| async move { session.children_data(&dir).await }
        })?;
        let mut out = Vec::new();
        for (child, bytes) in children {
            if let Some(key) = keep(&child) {
                out.push((key, decode(&format!("{dir}/{child}"), &bytes)?));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, message)| message).collect())
    }
}

impl Drop for ZkStateManager {
    // Closes the session (its ephemeral nodes go at once) and stops the client thread. Waits at most about
    // CLOSE_WAIT for ZooKeeper's answer.
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl StateManager for ZkStateManager {
    fn cluster(&self) -> &str {
        &self.cluster
    }

    fn describe(&self) -> String {
        format!("zookeeper at {} under {}", self.servers, self.base)
    }

    // A ZooKeeper `create`, which fails with NodeExists if the node is there: of two submits at once exactly one
    // succeeds. If the create is retried after a lost connection and then finds the node, the first try may have
    // created it: the node holding exactly this definition counts as created by this call.
    fn create_topology(&self, name: &str, topology: &Topology) -> Result<(), StateError> {
        check_name("topology", name)?;
        let path = self.node_path(Node::Topology, name);
        let data = topology.encode_to_vec();
        check_size(&path, &data)?;
        let created = self.call(move |session| async move {
            session
                .run(&path, |client, interrupted| {
                    let (path, data) = (&path, &data);
                    async move { create_once(&client, path, data, interrupted).await }
                })
                .await
        })?;
        if created {
            Ok(())
        } else {
            Err(StateError::TopologyExists(name.to_string()))
        }
    }

    fn put_topology(&self, name: &str, topology: &Topology) -> Result<(), StateError> {
        self.put(Node::Topology, name, topology)
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

    fn put_execution_state(&self, name: &str, state: &ExecutionState) -> Result<(), StateError> {
        self.put(Node::ExecutionState, name, state)
    }

    fn get_execution_state(&self, name: &str) -> Result<Option<ExecutionState>, StateError> {
        self.get(Node::ExecutionState, name)
    }

    fn put_stateful_checkpoints(&self, name: &str, checkpoints: &StatefulCheckpoints) -> Result<(), StateError> {
        self.put(Node::StatefulCheckpoints, name, checkpoints)
    }

    fn get_stateful_checkpoints(&self, name: &str) -> Result<Option<StatefulCheckpoints>, StateError> {
        self.get(Node::StatefulCheckpoints, name)
    }

    // The checkpoint store is local files, as with the local state manager: `<egret_home>/checkpoints/<cluster>/<name>`
    // (see [`ZkStateManager::with_egret_home`]).
    fn checkpoints_dir(&self, name: &str) -> Result<PathBuf, StateError> {
        check_name("topology", name)?;
        if let Some(root) = &self.checkpoints_root {
            return Ok(root.join(&self.cluster).join(name));
        }
        match &self.egret_home {
            Some(home) => Ok(paths::checkpoints_dir(home, &self.cluster, name)),
            None => Err(StateError::NoCheckpointsDir {
                cluster: self.cluster.clone(),
            }),
        }
    }

    // An ephemeral node created only if there is none, or set if this session owns it already; while another
    // session holds it, this waits (polling, the wait is rare and short) up to `wait`.
    fn claim_tmanager(&self, name: &str, location: &Location, wait: Duration) -> Result<TmanagerLease, StateError> {
        check_name("topology", name)?;
        let path = self.location_path(name, EPHEMERAL_PROCESS);
        let data = location.encode_to_vec();
        check_size(&path, &data)?;
        let started = std::time::Instant::now();
        let mut logged = false;
        loop {
            let (session_id, holder) = self.call({
                let (path, data) = (path.clone(), data.clone());
                move |session| async move {
                    session
                        .run(&path, |client, _| {
                            let (path, data) = (&path, &data);
                            async move {
                                let me = client.session_id().0;
                                claim_ephemeral(&client, path, data).await.map(|holder| (me, holder))
                            }
                        })
                        .await
                }
            })?;
            let Some(holder) = holder else {
                let lease = TmanagerLease::default();
                self.status
                    .leases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(lease.clone());
                // The session may have ended between the claim and the line above: then the claim is gone too.
                if self.status.id.load(Ordering::SeqCst) != session_id {
                    lease.mark_lost();
                }
                return Ok(lease);
            };
            let holder = decode::<Location>(&path, &holder)
                .map(|l| format!("pid {} at {}:{}", l.pid, l.host, l.port))
                .unwrap_or_else(|_| "unreadable location".into());
            if started.elapsed() >= wait {
                return Err(StateError::TmanagerExists {
                    topology: name.to_string(),
                    holder,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            if !logged {
                tracing::info!(topology = %name, %holder, ?wait, "another tmanager holds the claim; waiting for its session to end");
                logged = true;
            }
            thread::sleep(CLAIM_POLL);
        }
    }

    // A persistent ZooKeeper watch, registered again on a new session.
    fn watch(&self, name: &str, node: Node) -> Result<watch::Receiver<u64>, StateError> {
        check_name("topology", name)?;
        self.watch_path(self.node_path(node, name))
    }

    fn watch_location(&self, name: &str, process: &str) -> Result<watch::Receiver<u64>, StateError> {
        check_name("topology", name)?;
        check_name("process", process)?;
        self.watch_path(self.location_path(name, process))
    }

    // The tmanager's location is ephemeral (see the module doc), every other one persistent.
    fn put_location(&self, name: &str, location: &Location) -> Result<(), StateError> {
        check_name("topology", name)?;
        check_name("process", &location.process)?;
        let path = self.location_path(name, &location.process);
        self.put_path(path, location.encode_to_vec(), location.process == EPHEMERAL_PROCESS)
    }

    fn get_location(&self, name: &str, process: &str) -> Result<Option<Location>, StateError> {
        check_name("topology", name)?;
        check_name("process", process)?;
        let path = self.location_path(name, process);
        let data = self.call({
            let path = path.clone();
            move |session| async move { session.get(&path).await }
        })?;
        data.map(|bytes| decode(&path, &bytes)).transpose()
    }

    fn locations(&self, name: &str) -> Result<Vec<Location>, StateError> {
        check_name("topology", name)?;
        self.children(self.locations_path(name), |child| {
            paths::valid_name(child).then(|| child.to_string())
        })
    }

    fn put_container_status(&self, name: &str, status: &ContainerStatus) -> Result<(), StateError> {
        check_name("topology", name)?;
        let container = u32::try_from(status.container).map_err(|_| StateError::InvalidContainer(status.container))?;
        let path = format!(
            "{}/{}",
            self.containers_path(name),
            paths::container_file_name(container)
        );
        self.put_path(path, status.encode_to_vec(), false)
    }

    fn container_statuses(&self, name: &str) -> Result<Vec<ContainerStatus>, StateError> {
        check_name("topology", name)?;
        self.children(self.containers_path(name), paths::parse_container_file_name)
    }

    fn list_topologies(&self) -> Result<Vec<String>, StateError> {
        let dir = format!("{}/{}", self.base, paths::TOPOLOGIES_DIR);
        let mut names = self.call(move |session| async move {
            session
                .run(&dir, |client, _| {
                    let dir = &dir;
                    async move { list_children(&client, dir).await }
                })
                .await
        })?;
        names.retain(|n| paths::valid_name(n));
        names.sort();
        Ok(names)
    }

    fn exists(&self, name: &str) -> Result<bool, StateError> {
        check_name("topology", name)?;
        let path = self.node_path(Node::Topology, name);
        self.call(move |session| async move {
            session
                .run(&path, |client, _| {
                    let path = &path;
                    async move { client.check_stat(path).await.map(|stat| stat.is_some()) }
                })
                .await
        })
    }

    // Removes the locations and containers subtrees, then each single node, the definition last (so until
    // everything else is gone the topology is still listed). Missing nodes are fine, so it can be repeated.
    fn delete_topology(&self, name: &str) -> Result<(), StateError> {
        check_name("topology", name)?;
        let mut order = vec![self.locations_path(name), self.containers_path(name)];
        for node in [
            Node::StatefulCheckpoints,
            Node::PhysicalPlan,
            Node::PackingPlan,
            Node::ExecutionState,
            Node::Topology,
        ] {
            order.push(self.node_path(node, name));
        }
        self.call(move |session| async move {
            for path in &order {
                session
                    .run(path, |client, _| async move { delete_tree(&client, path).await })
                    .await?;
            }
            Ok(())
        })
    }
}

/// `<root>/<cluster>`, with `root` checked: `/` or `/a/b...` of valid names.
fn base_path(root: &str, cluster: &str) -> Result<String, StateError> {
    if root == "/" {
        return Ok(format!("/{cluster}"));
    }
    let valid = root
        .strip_prefix('/')
        .is_some_and(|rest| rest.split('/').all(paths::valid_name));
    if valid {
        Ok(format!("{root}/{cluster}"))
    } else {
        Err(StateError::InvalidRoot(root.to_string()))
    }
}

fn check_size(path: &str, data: &[u8]) -> Result<(), StateError> {
    if data.len() <= MAX_NODE_BYTES {
        Ok(())
    } else {
        Err(StateError::ZooKeeper {
            path: path.to_string(),
            reason: format!(
                "{} bytes is more than a node may hold here ({MAX_NODE_BYTES}; ZooKeeper's jute.maxbuffer is 1 MiB by \
                 default)",
                data.len()
            ),
        })
    }
}

fn decode<M: Message + Default>(path: &str, bytes: &[u8]) -> Result<M, StateError> {
    M::decode(bytes).map_err(|e| StateError::Corrupt {
        path: PathBuf::from(path),
        reason: e.to_string(),
    })
}

/// `/a/b` of `/a/b/c`.
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Errors that say nothing about the node, only that the request did not get an answer from this session: the
/// connection was lost (the client reconnects), or the session ended (a new one is being opened). The request is
/// tried again.
fn is_transient(e: &zookeeper_client::Error) -> bool {
    use zookeeper_client::Error as E;
    matches!(
        e,
        E::ConnectionLoss
            | E::SessionExpired
            | E::SessionMoved
            | E::ClientClosed
            | E::Timeout
            | E::NoHosts
            | E::Throttled
            | E::Custom(_)
    )
}

// The operations below each take one client (one session) and are retried whole by [`Session::run`] on a
// transient error, so each is written to be repeatable.

/// Creates `path` (and its missing parents, persistent) with `data`.
async fn create_with_parents(
    client: &Client,
    path: &str,
    data: &[u8],
    options: &CreateOptions<'_>,
) -> Result<(), zookeeper_client::Error> {
    loop {
        match client.create(path, data, options).await {
            Err(zookeeper_client::Error::NoNode) => client.mkdir(parent(path), &PERSISTENT).await?,
            other => return other.map(drop),
        }
    }
}

/// Sets the data of persistent node `path`, or creates it. A node created by someone else between the two is set.
async fn put_persistent(client: &Client, path: &str, data: &[u8]) -> Result<(), zookeeper_client::Error> {
    loop {
        match client.set_data(path, data, None).await {
            Ok(_) => return Ok(()),
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        match create_with_parents(client, path, data, &PERSISTENT).await {
            Err(zookeeper_client::Error::NodeExists) => continue,
            other => return other,
        }
    }
}

/// Makes `path` an ephemeral node of this client's session holding `data`: creates it, sets it if this session
/// already owns it, or deletes a node of another session (or a persistent one) and creates it again.
async fn put_ephemeral(client: &Client, path: &str, data: &[u8]) -> Result<(), zookeeper_client::Error> {
    use zookeeper_client::Error as E;
    let me = client.session_id().0;
    loop {
        match create_with_parents(client, path, data, &EPHEMERAL).await {
            Err(E::NodeExists) => {}
            other => return other,
        }
        let Some(stat) = client.check_stat(path).await? else {
            continue; // deleted meanwhile: create it
        };
        let done = if stat.ephemeral_owner == me {
            client.set_data(path, data, Some(stat.version)).await.map(drop)
        } else {
            match client.delete(path, Some(stat.version)).await {
                Ok(()) => continue,
                Err(e) => Err(e),
            }
        };
        match done {
            Ok(()) => return Ok(()),
            // Changed or deleted meanwhile: look again.
            Err(E::NoNode | E::BadVersion) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes `path` an ephemeral node of this session holding `data` unless another session holds it: `Ok(None)` when
/// this session holds it now, `Ok(Some(holder's data))` when another does.
async fn claim_ephemeral(client: &Client, path: &str, data: &[u8]) -> Result<Option<Vec<u8>>, zookeeper_client::Error> {
    use zookeeper_client::Error as E;
    let me = client.session_id().0;
    loop {
        match create_with_parents(client, path, data, &EPHEMERAL).await {
            Err(E::NodeExists) => {}
            other => return other.map(|()| None),
        }
        let (holder, stat) = match client.get_data(path).await {
            Ok(found) => found,
            Err(E::NoNode) => continue, // deleted meanwhile: create it
            Err(e) => return Err(e),
        };
        if stat.ephemeral_owner != me {
            return Ok(Some(holder));
        }
        match client.set_data(path, data, Some(stat.version)).await {
            Ok(_) => return Ok(None),
            Err(E::NoNode | E::BadVersion) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Creates `path` with `data`; `Ok(false)` if it exists. After an interrupted try (`interrupted`), a node holding
/// exactly `data` is taken as the one that try created.
async fn create_once(
    client: &Client,
    path: &str,
    data: &[u8],
    interrupted: bool,
) -> Result<bool, zookeeper_client::Error> {
    loop {
        match create_with_parents(client, path, data, &PERSISTENT).await {
            Ok(()) => return Ok(true),
            Err(zookeeper_client::Error::NodeExists) if interrupted => match client.get_data(path).await {
                Ok((existing, _)) => return Ok(existing == data),
                Err(zookeeper_client::Error::NoNode) => continue,
                Err(e) => return Err(e),
            },
            Err(zookeeper_client::Error::NodeExists) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// The children of `dir`; none if it does not exist.
async fn list_children(client: &Client, dir: &str) -> Result<Vec<String>, zookeeper_client::Error> {
    match client.list_children(dir).await {
        Err(zookeeper_client::Error::NoNode) => Ok(Vec::new()),
        other => other,
    }
}

/// Deletes `root` and everything under it; fine if it does not exist. Starts over if a child appears meanwhile.
async fn delete_tree(client: &Client, root: &str) -> Result<(), zookeeper_client::Error> {
    use zookeeper_client::Error as E;
    'again: loop {
        let mut all = vec![root.to_string()];
        let mut i = 0;
        while i < all.len() {
            let children = list_children(client, &all[i]).await?;
            let dir = all[i].clone();
            all.extend(children.into_iter().map(|child| format!("{dir}/{child}")));
            i += 1;
        }
        // Deepest first: a node is listed after its parent.
        for path in all.iter().rev() {
            match client.delete(path, None).await {
                Ok(()) | Err(E::NoNode) => {}
                Err(E::NotEmpty) => continue 'again,
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
}

/// Shared by the manager and its client thread: what the owner may ask about the session without a round trip.
struct SessionStatus {
    /// The current session's id; 0 while a new session is being opened.
    id: AtomicI64,
    /// Counts expired sessions.
    expirations: watch::Sender<u64>,
    /// The tmanager claims made in the current session: lost when it ends.
    leases: Mutex<Vec<TmanagerLease>>,
}

struct SessionConfig {
    servers: String,
    session_timeout: Duration,
    /// How long an operation is retried while the client is disconnected or reopening a session.
    retry_for: Duration,
}

type Job = Box<dyn FnOnce(Arc<Session>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

enum Command {
    Run(Job),
    Shutdown,
}

/// The client thread's state: the current client (one per session) and every task using it.
struct Session {
    config: SessionConfig,
    status: Arc<SessionStatus>,
    /// The client of the current session; `None` while a new session is being opened.
    client: watch::Sender<Option<Client>>,
    /// Jobs, watch followers and the session supervisor: aborted together on shutdown, so that no clone of the
    /// client outlives the manager (the session closes when the last one is dropped).
    tasks: Mutex<JoinSet<()>>,
}

/// The client thread: opens the first session (answering `ready`), then runs jobs until told to stop.
fn run_worker(
    config: SessionConfig,
    status: Arc<SessionStatus>,
    ready: std::sync::mpsc::Sender<Result<(), StateError>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(StateError::ZooKeeperConnect {
                servers: config.servers.clone(),
                reason: format!("cannot start the client's runtime: {e}"),
            }));
            return;
        }
    };
    runtime.block_on(async move {
        let client = match open_session(&config).await {
            Ok(client) => client,
            Err(e) => {
                let _ = ready.send(Err(StateError::ZooKeeperConnect {
                    servers: config.servers.clone(),
                    reason: e.to_string(),
                }));
                return;
            }
        };
        status.id.store(client.session_id().0, Ordering::SeqCst);
        tracing::info!(servers = %config.servers, session = %client.session_id(), "zookeeper session opened");
        let session = Arc::new(Session {
            config,
            status,
            client: watch::channel(Some(client)).0,
            tasks: Mutex::new(JoinSet::new()),
        });
        session.spawn(supervise(session.clone()));
        let _ = ready.send(Ok(()));
        while let Some(command) = commands.recv().await {
            match command {
                Command::Run(job) => session.spawn(job(session.clone())),
                Command::Shutdown => break,
            }
        }
        session.close().await;
    });
}

async fn open_session(config: &SessionConfig) -> Result<Client, zookeeper_client::Error> {
    Client::connector()
        .with_session_timeout(config.session_timeout)
        .connect(&config.servers)
        .await
}

/// Follows the session's state; when it ends (expired), counts it and opens a new session, until shut down.
async fn supervise(session: Arc<Session>) {
    loop {
        let Some(client) = session.current() else {
            return;
        };
        let old = client.session_id();
        let mut states = client.state_watcher();
        drop(client);
        let mut state = states.peek_state();
        while !state.is_terminated() {
            state = states.changed().await;
            tracing::debug!(session = %old, %state, "zookeeper session state");
        }
        session.client.send_replace(None);
        session.status.id.store(0, Ordering::SeqCst);
        session.status.expirations.send_modify(|n| *n += 1);
        for lease in session
            .status
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            lease.mark_lost();
        }
        tracing::warn!(
            session = %old, %state,
            "zookeeper session ended: its ephemeral nodes (the tmanager location) are gone; opening a new session"
        );
        let mut pause = Duration::from_millis(100);
        loop {
            match open_session(&session.config).await {
                Ok(client) => {
                    tracing::info!(session = %client.session_id(), "new zookeeper session opened");
                    session.status.id.store(client.session_id().0, Ordering::SeqCst);
                    session.client.send_replace(Some(client));
                    break;
                }
                Err(e) => {
                    tracing::warn!(servers = %session.config.servers, error = %e, "cannot open a zookeeper session yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
                }
            }
        }
    }
}

/// Forwards the events of a persistent watch on `path` to `changes` (as a growing count) until the receiver is
/// dropped. Registers the watch again on each new session.
async fn follow(session: Arc<Session>, path: String, mut watcher: PersistentWatcher, changes: watch::Sender<u64>) {
    use zookeeper_client::SessionState;
    loop {
        let event = tokio::select! {
            _ = changes.closed() => return,
            event = watcher.changed() => event,
        };
        match (event.event_type, event.session_state) {
            // The watch ended with the session (polling it again would panic): register it on the next session.
            // Anything may have changed meanwhile, so count a change.
            (EventType::Session, state) if state.is_terminated() => {
                watcher = tokio::select! {
                    _ = changes.closed() => return,
                    watcher = session.watch_again(&path) => watcher,
                };
                changes.send_modify(|n| *n += 1);
            }
            // Back after a disconnection. zookeeper-client 0.11.2 does not restore persistent watches on the new
            // connection (its `resend_watches` never sends them: SetWatches2 is never chosen), so add the watch again;
            // the old watcher is dropped only after, so the client does not ask the server to remove the new one.
            // Events in between are lost anyway (ZOOKEEPER-4698), so count a change: the reader looks again.
            (EventType::Session, SessionState::SyncConnected) => {
                watcher = tokio::select! {
                    _ = changes.closed() => return,
                    watcher = session.watch_again(&path) => watcher,
                };
                changes.send_modify(|n| *n += 1);
            }
            (EventType::Session, _) => {}
            _ => changes.send_modify(|n| *n += 1),
        }
    }
}

impl Session {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget finished tasks, so the set holds only running ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    fn current(&self) -> Option<Client> {
        self.client.borrow().clone()
    }

    /// The current client, unless its session has ended (the supervisor is about to replace it).
    fn usable(&self) -> Option<Client> {
        self.current().filter(|client| !client.state().is_terminated())
    }

    /// Runs `op` with the current client, again on a transient error (see [`is_transient`]) until the retry bound.
    /// `op` learns whether an earlier try was interrupted (it may have taken effect). Other errors are final.
    async fn run<T, F, Fut>(&self, path: &str, mut op: F) -> Result<T, StateError>
    where
        F: FnMut(Client, bool) -> Fut,
        Fut: Future<Output = Result<T, zookeeper_client::Error>>,
    {
        let start = Instant::now();
        let deadline = start + self.config.retry_for;
        let mut interrupted = false;
        let mut last = String::from("no session");
        loop {
            if let Some(client) = self.usable() {
                match tokio::time::timeout_at(deadline, op(client, interrupted)).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(e)) if is_transient(&e) => {
                        tracing::debug!(path, error = %e, "zookeeper request interrupted; trying again");
                        interrupted = true;
                        last = e.to_string();
                    }
                    Ok(Err(e)) => {
                        let reason = if e == zookeeper_client::Error::NoNode {
                            // The operations handle a missing node themselves; one left is a parent that could not be
                            // created, under a chroot that does not exist.
                            format!("{e} (does the connection string's chroot exist?)")
                        } else {
                            e.to_string()
                        };
                        return Err(StateError::ZooKeeper {
                            path: path.to_string(),
                            reason,
                        });
                    }
                    Err(_) => {
                        last = format!("{last}; no answer yet");
                        break;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep_until((now + RETRY_PAUSE).min(deadline)).await;
        }
        Err(StateError::ZooKeeperUnavailable {
            servers: self.config.servers.clone(),
            path: path.to_string(),
            waited: start.elapsed(),
            reason: last,
        })
    }

    /// The data of node `path`, `None` if it does not exist.
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.run(path, |client, _| async move {
            match client.get_data(path).await {
                Ok((data, _)) => Ok(Some(data)),
                Err(zookeeper_client::Error::NoNode) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Every child of `dir` with its data (none if `dir` does not exist); a child deleted between the listing and
    /// its read is left out.
    async fn children_data(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        self.run(dir, |client, _| async move {
            let mut out = Vec::new();
            for child in list_children(&client, dir).await? {
                match client.get_data(&format!("{dir}/{child}")).await {
                    Ok((data, _)) => out.push((child, data)),
                    Err(zookeeper_client::Error::NoNode) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
        .await
    }

    /// A persistent watch on `path` with the current session, waiting (without bound) for a session to take it.
    async fn watch_again(&self, path: &str) -> PersistentWatcher {
        loop {
            if let Some(client) = self.usable() {
                match client.watch(path, AddWatchMode::Persistent).await {
                    Ok(watcher) => return watcher,
                    Err(e) => tracing::debug!(path, error = %e, "cannot watch yet"),
                }
            }
            tokio::time::sleep(RETRY_PAUSE * 4).await;
        }
    }

    /// Stops every task, then drops the last client, which closes the session; waits (bounded) for the close.
    async fn close(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let Some(client) = self.client.send_replace(None) else {
            return;
        };
        let mut states = client.state_watcher();
        drop(client);
        let closed = tokio::time::timeout(CLOSE_WAIT, async {
            while !states.peek_state().is_terminated() {
                states.changed().await;
            }
        })
        .await;
        if closed.is_err() {
            tracing::warn!(servers = %self.config.servers, "zookeeper did not confirm the session's close in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_become_the_cluster_base() {
        assert_eq!(base_path("/", "c").unwrap(), "/c");
        assert_eq!(base_path("/egret", "c").unwrap(), "/egret/c");
        assert_eq!(base_path("/heron/state", "c").unwrap(), "/heron/state/c");
        for bad in ["", "egret", "/egret/", "//", "/a//b", "/..", "/a/./b", "/a b"] {
            assert!(
                matches!(base_path(bad, "c"), Err(StateError::InvalidRoot(r)) if r == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parents() {
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "/");
    }

    #[test]
    fn too_large_a_message_is_refused_before_it_is_sent() {
        assert!(check_size("/x", &vec![0; MAX_NODE_BYTES]).is_ok());
        let e = check_size("/x", &vec![0; MAX_NODE_BYTES + 1]);
        assert!(matches!(e, Err(StateError::ZooKeeper { path, .. }) if path == "/x"));
    }
}
