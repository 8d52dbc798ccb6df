//! The ZooKeeper state manager against a real ZooKeeper server: Debian's `zookeeper` package (its server jar run with
//! `java`, on a free loopback port, with its own config and data directory, killed when the test ends). Without java
//! or the package these tests fail and say what to install (`scripts/install-test-deps` installs it).
//!
//! The same conformance checks run against the local-file state manager, so both backends are held to one behaviour.

use std::io::{BufRead, BufReader, Write};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use egret_proto::api;
use egret_proto::egret::{ExecutionState, StatefulCheckpoints};
use egret_statemgr::{LocalStateManager, Node, StateError, StateManager, ZkStateManager};
use egret_testkit::fixtures::{container_status, execution_state, location, packing_plan, physical_plan, topology};
use egret_testkit::zookeeper::{ZkServer, free_port};

const ROOT: &str = "/egret";
const CLUSTER: &str = "test";
/// For tests that do not exercise expiry: long enough that a busy 2-core machine never expires a session by
/// accident.
const LONG_SESSION: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------------------
// A ZooKeeper server for one test (egret_testkit::zookeeper).

fn manager(server: &ZkServer, session_timeout: Duration) -> ZkStateManager {
    ZkStateManager::connect(&server.connection(), ROOT, CLUSTER, session_timeout)
        .expect("connect to the test zookeeper")
        .with_egret_home(server.dir().join("home"))
}

/// Polls `done` every 50 ms until it holds, or panics after `limit` naming `what`.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// A small runtime for waiting on watch receivers from a test thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Waits (bounded) for `rx` to report a change; returns the new count.
fn next_change(rt: &tokio::runtime::Runtime, rx: &mut tokio::sync::watch::Receiver<u64>, what: &str) -> u64 {
    rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(10), rx.changed()).await {
            Ok(Ok(())) => *rx.borrow_and_update(),
            Ok(Err(e)) => panic!("{what}: watch closed: {e}"),
            Err(_) => panic!("{what}: no change reported within 10 s"),
        }
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Messages.

fn checkpoints(epoch: u32) -> StatefulCheckpoints {
    StatefulCheckpoints {
        complete: vec![3, 2, 1],
        epoch,
        ..Default::default()
    }
}

/// Writes every kind of state of topology `name` (locations and containers out of order, so listings must sort).
fn fill(sm: &dyn StateManager, name: &str) {
    sm.create_topology(name, &topology(name)).unwrap();
    sm.put_packing_plan(name, &packing_plan(name, 2)).unwrap();
    sm.put_physical_plan(name, &physical_plan(name)).unwrap();
    sm.put_execution_state(name, &execution_state(name, CLUSTER)).unwrap();
    sm.put_stateful_checkpoints(name, &checkpoints(7)).unwrap();
    sm.put_location(name, &location("tmanager", 0, 4100)).unwrap();
    sm.put_location(name, &location("stmgr-1", 1, 4200)).unwrap();
    sm.put_location(name, &location("metricsmgr-1", 1, 4300)).unwrap();
    for id in [10, 2, 0] {
        sm.put_container_status(name, &container_status(id)).unwrap();
    }
}

/// Checks that everything [`fill`] wrote reads back.
fn check_filled(sm: &dyn StateManager, name: &str) {
    assert_eq!(sm.get_topology(name).unwrap(), Some(topology(name)));
    assert_eq!(sm.get_packing_plan(name).unwrap(), Some(packing_plan(name, 2)));
    assert_eq!(sm.get_physical_plan(name).unwrap(), Some(physical_plan(name)));
    assert_eq!(
        sm.get_execution_state(name).unwrap(),
        Some(execution_state(name, CLUSTER))
    );
    assert_eq!(sm.get_stateful_checkpoints(name).unwrap(), Some(checkpoints(7)));
    assert_eq!(
        sm.get_location(name, "stmgr-1").unwrap(),
        Some(location("stmgr-1", 1, 4200))
    );
    assert_eq!(
        sm.locations(name).unwrap(),
        vec![
            location("metricsmgr-1", 1, 4300),
            location("stmgr-1", 1, 4200),
            location("tmanager", 0, 4100)
        ],
        "sorted by process name"
    );
    assert_eq!(
        sm.container_statuses(name).unwrap(),
        vec![container_status(0), container_status(2), container_status(10)],
        "sorted by container id, as numbers"
    );
    assert!(sm.exists(name).unwrap());
}

fn assert_empty(sm: &dyn StateManager, name: &str) {
    assert_eq!(sm.get_topology(name).unwrap(), None);
    assert_eq!(sm.get_packing_plan(name).unwrap(), None);
    assert_eq!(sm.get_physical_plan(name).unwrap(), None);
    assert_eq!(sm.get_execution_state(name).unwrap(), None);
    assert_eq!(sm.get_stateful_checkpoints(name).unwrap(), None);
    assert_eq!(sm.get_location(name, "tmanager").unwrap(), None);
    assert!(sm.locations(name).unwrap().is_empty());
    assert!(sm.container_statuses(name).unwrap().is_empty());
    assert!(!sm.exists(name).unwrap());
}

/// What every state manager must do, through the trait only. Starts from an empty cluster.
fn conformance(sm: &dyn StateManager) {
    // Nothing there: gets are None, listings empty, deletes fine.
    assert!(sm.list_topologies().unwrap().is_empty());
    assert_empty(sm, "alpha");
    sm.delete_topology("alpha").unwrap();

    // Everything round-trips.
    fill(sm, "alpha");
    check_filled(sm, "alpha");
    assert_eq!(sm.list_topologies().unwrap(), vec!["alpha".to_string()]);
    let dir = sm.checkpoints_dir("alpha").unwrap();
    assert!(
        dir.ends_with(Path::new("checkpoints").join(sm.cluster()).join("alpha")),
        "{dir:?}"
    );

    // A name is created once: the first definition stays.
    let again = sm.create_topology("alpha", &topology("other"));
    assert!(
        matches!(&again, Err(StateError::TopologyExists(name)) if name == "alpha"),
        "{again:?}"
    );
    assert_eq!(sm.get_topology("alpha").unwrap(), Some(topology("alpha")));

    // Puts replace, the tmanager's location and another daemon's alike; an empty message round-trips.
    sm.put_packing_plan("alpha", &packing_plan("alpha", 3)).unwrap();
    sm.put_packing_plan("alpha", &packing_plan("alpha", 1)).unwrap();
    assert_eq!(sm.get_packing_plan("alpha").unwrap(), Some(packing_plan("alpha", 1)));
    sm.put_location("alpha", &location("tmanager", 0, 1)).unwrap();
    sm.put_location("alpha", &location("tmanager", 0, 2)).unwrap();
    sm.put_location("alpha", &location("stmgr-1", 1, 3)).unwrap();
    assert_eq!(
        sm.get_location("alpha", "tmanager").unwrap(),
        Some(location("tmanager", 0, 2))
    );
    assert_eq!(
        sm.get_location("alpha", "stmgr-1").unwrap(),
        Some(location("stmgr-1", 1, 3))
    );
    sm.put_container_status("alpha", &container_status(2)).unwrap();
    sm.put_stateful_checkpoints("alpha", &checkpoints(8)).unwrap();
    assert_eq!(sm.get_stateful_checkpoints("alpha").unwrap(), Some(checkpoints(8)));
    sm.put_execution_state("alpha", &ExecutionState::default()).unwrap();
    assert_eq!(
        sm.get_execution_state("alpha").unwrap(),
        Some(ExecutionState::default())
    );
    sm.put_topology("alpha", &topology("replaced")).unwrap();
    assert_eq!(sm.get_topology("alpha").unwrap(), Some(topology("replaced")));

    // Topologies side by side are independent; the listing is sorted.
    sm.put_topology("beta", &topology("beta")).unwrap();
    sm.put_location("beta", &location("stmgr-3", 3, 9)).unwrap();
    sm.put_container_status("beta", &container_status(4)).unwrap();
    sm.create_topology("Gamma", &topology("Gamma")).unwrap();
    assert_eq!(sm.list_topologies().unwrap(), ["Gamma", "alpha", "beta"]);
    assert_eq!(sm.locations("beta").unwrap(), vec![location("stmgr-3", 3, 9)]);
    assert_eq!(sm.container_statuses("beta").unwrap(), vec![container_status(4)]);
    assert_eq!(sm.get_packing_plan("beta").unwrap(), None);
    sm.delete_topology("beta").unwrap();
    sm.delete_topology("Gamma").unwrap();
    assert_eq!(sm.list_topologies().unwrap(), ["alpha"]);
    assert_eq!(sm.locations("alpha").unwrap().len(), 3);
    assert_eq!(sm.container_statuses("alpha").unwrap().len(), 3);

    // Delete removes everything, can be repeated, and frees the name.
    sm.delete_topology("alpha").unwrap();
    assert_empty(sm, "alpha");
    assert!(sm.list_topologies().unwrap().is_empty());
    sm.delete_topology("alpha").unwrap();
    sm.create_topology("alpha", &topology("again")).unwrap();
    assert_eq!(sm.get_topology("alpha").unwrap(), Some(topology("again")));
    sm.delete_topology("alpha").unwrap();

    // Invalid names are rejected, naming what was wrong.
    let long = "x".repeat(101);
    for bad in [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        "/abs",
        "a b",
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
        is_invalid(sm.create_topology(bad, &topology("x")), "topology");
        is_invalid(sm.put_topology(bad, &topology("x")), "topology");
        is_invalid(sm.get_topology(bad).map(drop), "topology");
        is_invalid(sm.put_packing_plan(bad, &packing_plan("x", 1)), "topology");
        is_invalid(sm.get_packing_plan(bad).map(drop), "topology");
        is_invalid(sm.put_physical_plan(bad, &physical_plan("x")), "topology");
        is_invalid(sm.get_physical_plan(bad).map(drop), "topology");
        is_invalid(sm.put_execution_state(bad, &execution_state("x", CLUSTER)), "topology");
        is_invalid(sm.get_execution_state(bad).map(drop), "topology");
        is_invalid(sm.put_stateful_checkpoints(bad, &checkpoints(1)), "topology");
        is_invalid(sm.get_stateful_checkpoints(bad).map(drop), "topology");
        is_invalid(sm.checkpoints_dir(bad).map(drop), "topology");
        is_invalid(sm.put_location(bad, &location("tmanager", 0, 1)), "topology");
        is_invalid(sm.put_location("wc", &location(bad, 0, 1)), "process");
        is_invalid(sm.get_location(bad, "tmanager").map(drop), "topology");
        is_invalid(sm.get_location("wc", bad).map(drop), "process");
        is_invalid(sm.locations(bad).map(drop), "topology");
        is_invalid(sm.put_container_status(bad, &container_status(1)), "topology");
        is_invalid(sm.container_statuses(bad).map(drop), "topology");
        is_invalid(sm.exists(bad).map(drop), "topology");
        is_invalid(sm.delete_topology(bad), "topology");
    }
    assert!(matches!(
        sm.put_container_status("wc", &container_status(-1)),
        Err(StateError::InvalidContainer(-1))
    ));
    assert!(sm.list_topologies().unwrap().is_empty(), "nothing was written");
}

// ---------------------------------------------------------------------------------------------------------------
// Tests.

/// The conformance checks hold for the local backend (the reference the ZooKeeper one must match).
#[test]
fn zookeeper_conformance_reference_on_local_files() {
    let home = tempfile::tempdir().expect("temp dir");
    let sm = LocalStateManager::new(home.path(), CLUSTER).expect("local state manager");
    conformance(&sm);
}

#[test]
fn zookeeper_conformance() {
    let server = ZkServer::start();
    let sm = manager(&server, LONG_SESSION);
    conformance(&sm);
    assert!(sm.describe().contains("zookeeper"), "{}", sm.describe());
    assert_eq!(sm.cluster(), CLUSTER);
    assert_eq!(sm.base(), "/egret/test");

    // A message larger than a node may hold fails at once, naming the node.
    let huge = api::Topology {
        name: "x".repeat(egret_statemgr::MAX_NODE_BYTES + 1),
        ..Default::default()
    };
    match sm.put_topology("huge", &huge) {
        Err(StateError::ZooKeeper { path, reason }) => {
            assert_eq!(path, "/egret/test/topologies/huge");
            assert!(reason.contains("bytes"), "{reason}");
        }
        other => panic!("expected a ZooKeeper error, got {other:?}"),
    }

    // Without an egret home there is no checkpoint directory, and the error says so.
    let bare = ZkStateManager::connect(&server.connection(), "/", "bare", LONG_SESSION).expect("connect");
    assert!(matches!(
        bare.checkpoints_dir("wc"),
        Err(StateError::NoCheckpointsDir { .. })
    ));
    assert_eq!(bare.base(), "/bare");
    bare.put_topology("wc", &topology("wc")).unwrap();
    assert_eq!(sm.list_topologies().unwrap(), Vec::<String>::new(), "other cluster");
}

#[test]
fn zookeeper_rejects_bad_roots_and_reports_an_unreachable_server() {
    for bad in ["", "egret", "/egret/", "/a//b", "/..", "/a b"] {
        let r = ZkStateManager::connect("127.0.0.1:1", bad, CLUSTER, LONG_SESSION);
        assert!(
            matches!(&r, Err(StateError::InvalidRoot(root)) if root == bad),
            "{bad:?}: {r:?}"
        );
    }
    let r = ZkStateManager::connect("127.0.0.1:1", ROOT, "a/b", LONG_SESSION);
    assert!(
        matches!(r, Err(StateError::InvalidName { what: "cluster", .. })),
        "{r:?}"
    );

    // Nothing listens there: the connect fails after about the session timeout, with the servers in the message.
    let port = free_port();
    let start = Instant::now();
    let r = ZkStateManager::connect(&format!("127.0.0.1:{port}"), ROOT, CLUSTER, Duration::from_secs(1));
    match r {
        Err(e @ StateError::ZooKeeperConnect { .. }) => {
            assert!(e.to_string().contains(&port.to_string()), "{e}")
        }
        other => panic!("expected ZooKeeperConnect, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
}

/// Two managers (two sessions), four threads each, create the same names at once: each name is won exactly once.
#[test]
fn zookeeper_concurrent_create_from_two_managers_exactly_one_wins() {
    let server = ZkServer::start();
    let managers = [manager(&server, LONG_SESSION), manager(&server, LONG_SESSION)];
    for round in 0..5 {
        let name = format!("race-{round}");
        let barrier = Barrier::new(8);
        let winners: Vec<String> = thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (sm, barrier, name) = (&managers[i % 2], &barrier, &name);
                    s.spawn(move || {
                        barrier.wait();
                        let copy = format!("copy{i}");
                        match sm.create_topology(name, &topology(&copy)) {
                            Ok(()) => Some(copy),
                            Err(StateError::TopologyExists(_)) => None,
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().expect("creator thread"))
                .collect()
        });
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        for sm in &managers {
            assert_eq!(sm.get_topology(&name).unwrap(), Some(topology(&winners[0])));
        }
    }
}

/// The tmanager's location is ephemeral: it goes when the manager that wrote it is dropped (its session closes),
/// while every persistent node stays; a watch on it reports the deletion.
#[test]
fn zookeeper_ephemeral_tmanager_location_vanishes_when_its_manager_is_dropped() {
    let server = ZkServer::start();
    let reader = manager(&server, LONG_SESSION);
    let writer = manager(&server, LONG_SESSION);
    fill(&writer, "wc");
    check_filled(&reader, "wc");
    let rt = runtime();
    let mut tmanager = reader.watch_location("wc", "tmanager").unwrap();

    drop(writer);
    next_change(&rt, &mut tmanager, "tmanager location deleted");
    assert_eq!(reader.get_location("wc", "tmanager").unwrap(), None);
    assert_eq!(
        reader.locations("wc").unwrap(),
        vec![location("metricsmgr-1", 1, 4300), location("stmgr-1", 1, 4200)],
        "persistent locations stay"
    );
    assert_eq!(reader.get_topology("wc").unwrap(), Some(topology("wc")));
    assert_eq!(reader.container_statuses("wc").unwrap().len(), 3);

    // A new tmanager registers again.
    let writer = manager(&server, LONG_SESSION);
    writer.put_location("wc", &location("tmanager", 0, 4101)).unwrap();
    next_change(&rt, &mut tmanager, "tmanager location created");
    assert_eq!(
        reader.get_location("wc", "tmanager").unwrap(),
        Some(location("tmanager", 0, 4101))
    );
}

/// Env var that turns [`zookeeper_helper_process_holding_a_tmanager_location`] into a helper process.
const HELPER_ENV: &str = "EGRET_ZK_TEST_HELPER";

/// Not a test on its own: when run as a child process with [`HELPER_ENV`] set (`<connection> <port>`), it writes a
/// tmanager location with a 2 s session, says `HELPER-READY`, and waits to be killed.
#[test]
#[ignore = "a helper process that the SIGKILL test starts"]
fn zookeeper_helper_process_holding_a_tmanager_location() {
    let Ok(args) = std::env::var(HELPER_ENV) else {
        return;
    };
    let (connection, port) = args.split_once(' ').expect("helper args");
    let sm = ZkStateManager::connect(connection, ROOT, CLUSTER, Duration::from_secs(2)).expect("helper connect");
    let port: i32 = port.parse().expect("helper port");
    sm.put_location("wc", &location("tmanager", 0, port))
        .expect("helper put");
    println!("HELPER-READY");
    std::io::stdout().flush().expect("flush");
    thread::sleep(Duration::from_secs(60));
    panic!("helper was not killed");
}

/// Starts this test binary as a helper process holding the tmanager location (port `port`); returns it once the
/// location is written.
fn spawn_tmanager_process(server: &ZkServer, port: i32) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "zookeeper_helper_process_holding_a_tmanager_location",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, format!("{} {port}", server.connection()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn helper");
    let stdout = child.stdout.take().expect("helper stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("HELPER-READY") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the helper process did not write the tmanager location within 20 s");
    }
    child
}

/// A tmanager process that dies (SIGKILL, no goodbye to ZooKeeper) loses its location when its session expires,
/// while persistent nodes stay; and a new tmanager can register at once, taking the node over from the dead one's
/// still-open session, without losing it when that session expires.
#[test]
fn zookeeper_ephemeral_tmanager_location_vanishes_when_its_process_is_killed() {
    let server = ZkServer::start();
    let sm = manager(&server, LONG_SESSION);
    sm.put_topology("wc", &topology("wc")).unwrap();
    sm.put_location("wc", &location("stmgr-1", 1, 4200)).unwrap();

    let mut tmanager = spawn_tmanager_process(&server, 4100);
    assert_eq!(
        sm.get_location("wc", "tmanager").unwrap(),
        Some(location("tmanager", 0, 4100))
    );
    tmanager.kill().expect("kill the helper");
    let killed = Instant::now();
    let _ = tmanager.wait();
    let still_there = sm.get_location("wc", "tmanager").unwrap().is_some();
    // Only meaningful well within the 2 s session timeout (a loaded machine may take longer to get here).
    if killed.elapsed() < Duration::from_secs(1) {
        assert!(still_there, "the session outlives its process until it times out");
    }
    let gone = wait_until("the dead tmanager's location goes", Duration::from_secs(15), || {
        sm.get_location("wc", "tmanager").unwrap().is_none()
    });
    eprintln!("ephemeral location gone {gone:?} after the kill (session timeout 2 s)");
    assert_eq!(
        sm.get_location("wc", "stmgr-1").unwrap(),
        Some(location("stmgr-1", 1, 4200))
    );
    assert_eq!(sm.get_topology("wc").unwrap(), Some(topology("wc")));

    // Again, but a new tmanager registers right after the kill, while the dead one's session is still open.
    let mut tmanager = spawn_tmanager_process(&server, 4101);
    tmanager.kill().expect("kill the helper");
    let _ = tmanager.wait();
    let successor = manager(&server, LONG_SESSION);
    successor.put_location("wc", &location("tmanager", 0, 4102)).unwrap();
    thread::sleep(Duration::from_secs(4)); // past the dead session's expiry
    assert_eq!(
        sm.get_location("wc", "tmanager").unwrap(),
        Some(location("tmanager", 0, 4102)),
        "the successor's node outlives the dead session"
    );
    drop(successor);
    wait_until("the successor's location goes with it", Duration::from_secs(5), || {
        sm.get_location("wc", "tmanager").unwrap().is_none()
    });
}

/// A watch reports creation, every change and deletion of a node, written by another manager.
#[test]
fn zookeeper_watch_fires_on_create_change_and_delete() {
    let server = ZkServer::start();
    let watcher = manager(&server, LONG_SESSION);
    let writer = manager(&server, LONG_SESSION);
    let rt = runtime();
    let mut plan = watcher.watch("wc", Node::PhysicalPlan).unwrap();
    let mut other = watcher.watch("other", Node::PhysicalPlan).unwrap();
    assert_eq!(*plan.borrow(), 0);

    writer.put_physical_plan("wc", &physical_plan("wc")).unwrap();
    let first = next_change(&rt, &mut plan, "created");
    assert_eq!(watcher.get_physical_plan("wc").unwrap(), Some(physical_plan("wc")));

    let mut changed = physical_plan("wc");
    changed.stmgrs[0].data_port = 4001;
    writer.put_physical_plan("wc", &changed).unwrap();
    let second = next_change(&rt, &mut plan, "changed");
    assert!(second > first);
    assert_eq!(watcher.get_physical_plan("wc").unwrap(), Some(changed));

    writer.delete_topology("wc").unwrap();
    next_change(&rt, &mut plan, "deleted");
    assert_eq!(watcher.get_physical_plan("wc").unwrap(), None);

    assert!(!other.has_changed().unwrap(), "a watch on another topology saw nothing");
    assert!(matches!(
        watcher.watch("a/b", Node::Topology),
        Err(StateError::InvalidName { .. })
    ));

    // The receiver learns that the manager is gone.
    drop(watcher);
    assert!(rt.block_on(other.changed()).is_err());
}

/// ZooKeeper killed under a client and started again on the same port and data: a call during the outage waits
/// and succeeds once the server is back (or fails within the bound); afterwards the same session goes on, with the
/// data and the ephemeral node intact.
#[test]
fn zookeeper_restarted_under_a_client_keeps_session_and_data() {
    let mut server = ZkServer::start();
    let sm = Arc::new(manager(&server, LONG_SESSION));
    fill(&*sm, "wc");
    let session = sm.session_id().expect("a session");
    let rt = runtime();
    let mut plan = sm.watch("wc", Node::PhysicalPlan).unwrap();

    server.stop();
    let writer = {
        let sm = sm.clone();
        thread::spawn(move || {
            let start = Instant::now();
            let r = sm.put_packing_plan("wc", &packing_plan("wc", 5));
            (r, start.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(500));
    server.resume();
    let (put, took) = writer.join().expect("writer thread");
    eprintln!("put during the outage: {put:?} after {took:?}");
    assert!(took < LONG_SESSION + Duration::from_secs(3), "{took:?}");
    let expected_plan = match put {
        Ok(()) => packing_plan("wc", 5),
        Err(StateError::ZooKeeperUnavailable { .. }) => packing_plan("wc", 2),
        Err(e) => panic!("unexpected error during the outage: {e}"),
    };

    // Works again, same session, everything still there (the tmanager's ephemeral node too).
    assert_eq!(sm.get_packing_plan("wc").unwrap(), Some(expected_plan));
    sm.put_packing_plan("wc", &packing_plan("wc", 2)).unwrap();
    check_filled(&*sm, "wc");
    assert_eq!(sm.session_expired_count(), 0);
    assert_eq!(sm.session_id(), Some(session));
    let fresh = manager(&server, LONG_SESSION);
    check_filled(&fresh, "wc");

    // The watch followed the reconnection: it reports a change made by another session.
    let _ = plan.borrow_and_update();
    let mut changed = physical_plan("wc");
    changed.stmgrs[0].data_port = 4001;
    fresh.put_physical_plan("wc", &changed).unwrap();
    next_change(&rt, &mut plan, "physical plan changed after the restart");
}

/// ZooKeeper gone for longer than the session timeout: calls fail within the bound, the session expires and is
/// reported, a new one opens when the server is back, the persistent data is intact and the old session's
/// ephemeral node is gone (the owner registers again).
#[test]
fn zookeeper_session_expiry_opens_a_new_session_and_reports_it() {
    let timeout = Duration::from_secs(2);
    let mut server = ZkServer::start();
    let sm = manager(&server, timeout);
    fill(&sm, "wc");
    let old = sm.session_id().expect("a session");
    let lease = sm
        .claim_tmanager("wc", &location("tmanager", 0, 4100), Duration::ZERO)
        .expect("this session holds the tmanager location already: the claim is its own");
    assert!(!lease.is_lost());
    let mut expirations = sm.session_expirations();
    let rt = runtime();
    let mut plan = sm.watch("wc", Node::PhysicalPlan).unwrap();
    assert_eq!(sm.session_expired_count(), 0);

    server.stop();
    let start = Instant::now();
    let r = sm.get_topology("wc");
    let took = start.elapsed();
    match &r {
        Err(e @ StateError::ZooKeeperUnavailable { path, .. }) => {
            assert_eq!(path, "/egret/test/topologies/wc");
            assert!(e.to_string().contains(&server.connection()), "{e}");
        }
        other => panic!("expected ZooKeeperUnavailable during the outage, got {other:?}"),
    }
    assert!(
        took >= timeout - Duration::from_millis(100) && took < timeout * 3,
        "{took:?}"
    );

    wait_until(
        "the client declares the session expired",
        Duration::from_secs(10),
        || sm.session_expired_count() == 1,
    );
    assert!(expirations.has_changed().unwrap());
    assert_eq!(*expirations.borrow_and_update(), 1);
    assert!(lease.is_lost(), "a tmanager's claim ends with its session");
    server.resume();
    wait_until("a new session opens", Duration::from_secs(15), || {
        sm.session_id().is_some_and(|id| id != old)
    });
    assert_eq!(sm.get_topology("wc").unwrap(), Some(topology("wc")));
    // The server restored the old session at restart and expires it a session timeout later.
    wait_until("the old session's ephemeral node goes", Duration::from_secs(15), || {
        sm.get_location("wc", "tmanager").unwrap().is_none()
    });
    assert_eq!(sm.locations("wc").unwrap().len(), 2, "persistent locations stay");
    sm.put_location("wc", &location("tmanager", 0, 4100)).unwrap();
    check_filled(&sm, "wc");
    assert_eq!(sm.session_expired_count(), 1);

    // The watch was registered again on the new session: it reports a change made by another session.
    let other = manager(&server, LONG_SESSION);
    let _ = plan.borrow_and_update();
    let mut changed = physical_plan("wc");
    changed.stmgrs[0].data_port = 4001;
    other.put_physical_plan("wc", &changed).unwrap();
    next_change(&rt, &mut plan, "physical plan changed on the new session");
    assert_eq!(sm.get_physical_plan("wc").unwrap(), Some(changed));
}

/// The sync calls work from inside a tokio runtime (even a current-thread one, as in the daemons): the client has
/// its own thread and runtime, so nothing blocks on or nests into the caller's. Connect, watch and drop too.
#[test]
fn zookeeper_usable_from_inside_a_tokio_runtime() {
    let server = ZkServer::start();
    let rt = runtime();
    rt.block_on(async {
        let sm = manager(&server, LONG_SESSION);
        sm.create_topology("wc", &topology("wc")).unwrap();
        assert_eq!(sm.get_topology("wc").unwrap(), Some(topology("wc")));
        let mut plan = sm.watch("wc", Node::PhysicalPlan).unwrap();
        sm.put_physical_plan("wc", &physical_plan("wc")).unwrap();
        tokio::time::timeout(Duration::from_secs(10), plan.changed())
            .await
            .expect("a change within 10 s")
            .expect("watch open");
        let writer = manager(&server, LONG_SESSION);
        writer.put_location("wc", &location("tmanager", 0, 1)).unwrap();
        drop(writer);
        assert_eq!(sm.get_location("wc", "tmanager").unwrap(), None);
        drop(sm);
    });
}

/// A node that does not decode is Corrupt, naming the node.
#[test]
fn zookeeper_garbage_is_corrupt() {
    let server = ZkServer::start();
    let sm = manager(&server, LONG_SESSION);
    fill(&sm, "wc");
    let rt = runtime();
    rt.block_on(async {
        let client = zookeeper_client::Client::connect(&server.connection())
            .await
            .expect("raw client");
        for path in [
            "/egret/test/topologies/wc",
            "/egret/test/locations/wc/tmanager",
            "/egret/test/containers/wc/2",
        ] {
            client
                .set_data(path, b"not a protobuf", None)
                .await
                .expect("write garbage");
        }
    });
    let check = |r: Result<(), StateError>, node: &str| match r {
        Err(StateError::Corrupt { path, reason }) => {
            assert_eq!(path, Path::new(node));
            assert!(!reason.is_empty());
        }
        other => panic!("{node}: expected Corrupt, got {other:?}"),
    };
    check(sm.get_topology("wc").map(drop), "/egret/test/topologies/wc");
    check(
        sm.get_location("wc", "tmanager").map(drop),
        "/egret/test/locations/wc/tmanager",
    );
    check(sm.locations("wc").map(drop), "/egret/test/locations/wc/tmanager");
    check(sm.container_statuses("wc").map(drop), "/egret/test/containers/wc/2");
    // Deleting a topology with corrupt nodes still works.
    sm.delete_topology("wc").unwrap();
    assert!(!sm.exists("wc").unwrap());
}

/// Only one tmanager holds a topology's claim: a second one waits while the first one's session lives, and gets the
/// claim once that session ends; a claim is never taken from a live session.
#[test]
fn zookeeper_one_tmanager_claim_at_a_time() {
    let server = ZkServer::start();
    let first = manager(&server, LONG_SESSION);
    let second = manager(&server, LONG_SESSION);
    let lease = first
        .claim_tmanager("wc", &location("tmanager", 0, 4100), Duration::ZERO)
        .unwrap();
    let refused = second.claim_tmanager("wc", &location("tmanager", 0, 4200), Duration::from_millis(500));
    match refused {
        Err(e @ StateError::TmanagerExists { .. }) => assert!(e.to_string().contains(":4100"), "{e}"),
        other => panic!("expected TmanagerExists, got {other:?}"),
    }
    assert_eq!(
        second.get_location("wc", "tmanager").unwrap(),
        Some(location("tmanager", 0, 4100))
    );
    assert!(!lease.is_lost());
    // The first one goes (its manager closes the session): the waiting one gets the claim.
    let waiting = std::thread::spawn(move || {
        let lease = second.claim_tmanager("wc", &location("tmanager", 0, 4200), Duration::from_secs(20));
        (second, lease)
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(first);
    let (second, lease) = waiting.join().unwrap();
    let lease = lease.expect("the claim once the first session ended");
    assert!(!lease.is_lost());
    assert_eq!(
        second.get_location("wc", "tmanager").unwrap(),
        Some(location("tmanager", 0, 4200))
    );
}
