//! `egret update` end to end, as a user runs it: the `egret` binary against a topology stored in a temporary
//! EGRET_HOME, and (for the real rescale) a stand-in tmanager on a real socket that checks the topology secret, reads
//! the `UpdateTopology`, answers with a `Status` and publishes the physical plan the rescale leads to. The tmanager's
//! own handling of `UpdateTopology` is tested in its crate.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use egret_api::{
    Bolt, BoltCollector, Config, OutputDeclarer, Spout, SpoutCollector, Topology, TopologyBuilder, Tuple, keys,
};
use egret_packing::update::{Update, plan_update};
use egret_packing::{Algorithm, pack};
use egret_proto::egret::{ContainerStatus, Location, PhysicalPlan, ProcessStatus, Status, UpdateTopology, control};
use egret_statemgr::StateManager;
use egret_testkit::{CLUSTER, TempHome, store_topology};
use egret_transport::auth::TopologySecret;
use egret_transport::{Frame, split};

struct S;
impl Spout for S {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["line"]);
    }
    fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
}
struct B;
impl Bolt for B {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }
    fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
}

/// A word count stored as `wc` with a round-robin plan over 3 containers. Components by name: count 1-2,
/// sentence 3, split 4-5; container 1 runs 1 and 4, container 2 runs 2 and 5, container 3 runs 3.
fn stored_word_count(home: &TempHome) -> Topology {
    let mut b = TopologyBuilder::new("wc");
    b.set_config(Config::new().with(keys::STMGRS, 3));
    b.set_spout("sentence", 1, || S);
    b.set_bolt("split", 2, || B).shuffle_grouping("sentence");
    b.set_bolt("count", 2, || B).fields_grouping("split", ["word"]);
    let t = b.build().unwrap();
    let state = home.state();
    store_topology(&*state, "wc", &t, 3);
    // The plan `egret submit` would have stored.
    state
        .put_packing_plan("wc", &pack(&t, Algorithm::RoundRobin).unwrap())
        .unwrap();
    t
}

fn egret(home: &TempHome, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_egret"))
        .arg("--home")
        .arg(&home.0)
        .args(args)
        .output()
        .expect("run egret");
    eprintln!(
        "egret {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn rescale_dry_run_prints_the_new_packing_plan_and_changes_nothing() {
    let home = TempHome::new("egret-update-dry-run");
    stored_word_count(&home);
    let state = home.state();
    let (plan, definition) = (state.get_packing_plan("wc").unwrap(), state.get_topology("wc").unwrap());

    let out = egret(
        &home,
        &[
            "update",
            CLUSTER,
            "wc",
            "--component-parallelism",
            "count:5",
            "--dry-run",
        ],
    );
    assert!(out.status.success());
    // count 2 → 5 adds tasks 6, 7, 8, each to the container with the fewest instances: 6 → c3, 7 → c1, 8 → c2.
    assert_eq!(
        stdout(&out),
        [
            "rescale of wc: count 2→5 (dry run: nothing is changed)",
            "new packing plan (round-robin):",
            "  container 1",
            "        1 count",
            "        4 split",
            "  +     7 count",
            "  container 2",
            "        2 count",
            "        5 split",
            "  +     8 count",
            "  container 3",
            "        3 sentence",
            "  +     6 count",
            "3 instance(s) added, 0 removed; 0 container(s) added, 0 removed",
            "",
        ]
        .join("\n")
    );
    // Nothing was contacted or written.
    assert_eq!(state.get_packing_plan("wc").unwrap(), plan);
    assert_eq!(state.get_topology("wc").unwrap(), definition);

    // Shrinking marks what goes, container 2 with it when it empties.
    let out = egret(
        &home,
        &[
            "update",
            CLUSTER,
            "wc",
            "--component-parallelism",
            "count:1",
            "--component-parallelism",
            "split:1",
            "--dry-run",
        ],
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with("rescale of wc: count 2→1, split 2→1 (dry run"),
        "{text}"
    );
    for line in [
        "- container 2",
        "  -     2 count",
        "  -     5 split",
        "        1 count",
        "        4 split",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }
    assert!(
        text.ends_with("0 instance(s) added, 2 removed; 0 container(s) added, 1 removed\n"),
        "{text}"
    );
}

#[test]
fn rescale_refusals_name_the_problem() {
    let home = TempHome::new("egret-update-refusals");
    stored_word_count(&home);
    let check = |args: &[&str], code: i32, expect: &str| {
        let mut all = vec!["update", CLUSTER];
        all.extend_from_slice(args);
        let out = egret(&home, &all);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    };
    let dry = |change: &'static str| ["wc", "--component-parallelism", change, "--dry-run"];
    check(
        &dry("nope:3"),
        1,
        "cannot rescale topology wc: the topology has no component \"nope\"",
    );
    check(&dry("count:0"), 1, "component \"count\" cannot have parallelism 0");
    check(&dry("count:2"), 1, "nothing to change: count already has parallelism 2");
    // Bad syntax is refused by the argument parser (status 2), naming the value.
    check(&dry("count=3"), 2, "\"count=3\" is not NAME:N");
    check(&dry("count:"), 2, "\"count:\" is not NAME:N");
    check(&["wc", "--dry-run"], 2, "--component-parallelism <NAME:N>");
    check(
        &["other", "--component-parallelism", "count:3", "--dry-run"],
        1,
        "no topology other on cluster local",
    );
    // Not a dry run, and no physical plan yet: not running.
    check(
        &["wc", "--component-parallelism", "count:3"],
        1,
        "topology wc is not running yet",
    );
}

/// What the stand-in tmanager does with an `UpdateTopology`.
enum Tmanager {
    /// Accepts, then publishes the physical plan of the new definition and packing plan after a while.
    Rescales,
    /// Accepts and never gets there.
    Stalls,
    /// Refuses with this message.
    Refuses(&'static str),
}

/// Publishes the physical plan of `wc` running the definition and the tasks of the packing plan of `u`.
fn publish(state: &dyn StateManager, u: &UpdateTopology) {
    let instances = u.packing_plan.as_ref().map(|p| p.instance_infos()).unwrap_or_default();
    let plan = PhysicalPlan {
        topology: u.topology.clone(),
        instances,
        ..Default::default()
    };
    state.put_physical_plan("wc", &plan).unwrap();
    // What the executors record: an instance process running per task of the container.
    for c in u.packing_plan.iter().flat_map(|p| &p.containers) {
        let status = ContainerStatus {
            container: c.id,
            executor_pid: 1,
            processes: c
                .instances
                .iter()
                .map(|i| ProcessStatus {
                    name: format!("instance-{}-{}", i.task_id, i.component),
                    container: c.id,
                    pid: 1,
                    state: "running".into(),
                    ..Default::default()
                })
                .collect(),
        };
        state.put_container_status("wc", &status).unwrap();
    }
}

/// A tmanager for `wc` listening on a real socket, announced in the state manager; answers one connection as
/// `behaviour` says and returns the `UpdateTopology` it read.
fn tmanager(home: &TempHome, behaviour: Tmanager) -> JoinHandle<UpdateTopology> {
    let secret = TopologySecret::generate().unwrap();
    secret.store(&home.0, CLUSTER, "wc").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let state = home.state();
    state
        .put_location(
            "wc",
            &Location {
                process: "tmanager".into(),
                container: 0,
                host: "127.0.0.1".into(),
                port: listener.local_addr().unwrap().port() as i32,
                pid: std::process::id() as i32,
                http_port: 0,
            },
        )
        .unwrap();
    // The topology runs under its stored definition and plan.
    let definition = state.get_topology("wc").unwrap();
    let packing_plan = state.get_packing_plan("wc").unwrap();
    publish(
        &*state,
        &UpdateTopology {
            topology_id: "wc-1".into(),
            topology: definition,
            packing_plan,
        },
    );
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        secret.accept(&mut stream).expect("the CLI proves the topology secret");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (mut reader, mut writer) = split(stream, 1 << 20).unwrap();
        let Frame::Control(control::Msg::UpdateTopology(u)) = reader.read().unwrap() else {
            panic!("expected an UpdateTopology");
        };
        let (ok, message) = match behaviour {
            Tmanager::Refuses(why) => (false, why.to_string()),
            _ => (true, "rescaling at the next checkpoint".to_string()),
        };
        writer
            .send_control(control::Msg::Status(Status { ok, message }))
            .unwrap();
        writer.flush().unwrap();
        if let Tmanager::Rescales = behaviour {
            thread::sleep(Duration::from_millis(300));
            publish(&*state, &u);
        }
        *u
    })
}

/// The update `egret update wc --component-parallelism count:5` plans, computed as the bench and tests do.
fn count_to_5(home: &TempHome) -> Update {
    let state = home.state();
    plan_update(
        &state.get_topology("wc").unwrap().unwrap(),
        &state.get_packing_plan("wc").unwrap().unwrap(),
        &[("count".into(), 5)],
    )
    .unwrap()
}

#[test]
fn rescale_sends_the_update_to_the_tmanager_and_waits_for_the_new_physical_plan() {
    let home = TempHome::new("egret-update-rescale");
    stored_word_count(&home);
    let expected = count_to_5(&home);
    let tm = tmanager(&home, Tmanager::Rescales);
    let out = egret(
        &home,
        &[
            "update",
            CLUSTER,
            "wc",
            "--component-parallelism",
            "count:5",
            "--wait-secs",
            "30",
        ],
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with("topology wc: rescaling at the next checkpoint\nrescaled wc: count 2→5 in "),
        "{text}"
    );
    assert!(stderr(&out).contains("waiting: the physical plan does not have the new task layout yet"));
    let sent = tm.join().unwrap();
    assert_eq!(sent, expected.message(egret_proto::api::TopologyState::Running));
    assert_eq!(sent.topology_id, "wc-1");
}

#[test]
fn rescale_fails_when_the_tmanager_refuses_or_the_plan_never_changes() {
    let home = TempHome::new("egret-update-refused");
    stored_word_count(&home);
    let tm = tmanager(&home, Tmanager::Refuses("a rescale is already under way"));
    let out = egret(&home, &["update", CLUSTER, "wc", "--component-parallelism", "count:5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the tmanager refused to rescale topology wc: a rescale is already under way"),
        "{}",
        stderr(&out)
    );
    tm.join().unwrap();

    let tm = tmanager(&home, Tmanager::Stalls);
    let out = egret(
        &home,
        &[
            "update",
            CLUSTER,
            "wc",
            "--component-parallelism",
            "count:5",
            "--wait-secs",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains(
            "topology wc is not running at the new parallelism (count 2→5) after 1 s: the physical plan does not \
             have the new task layout yet; task(s) [6, 7, 8] not in the physical plan yet"
        ),
        "{e}"
    );
    tm.join().unwrap();
}
