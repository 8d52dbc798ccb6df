//! `topology.droptuples.upon.backpressure=true` on a running stmgr: a bolt instance that never reads its socket
//! (the slowest bolt there is) does not stop the spout. The stmgr keeps reading the spout's socket however much it
//! sends, drops what the congested bolt cannot take and counts the tuples in `__dropped-tuples-count`, and never
//! announces or holds back pressure.

use std::io::Write;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use egret_api::{Bolt, BoltCollector, OutputDeclarer, Spout, SpoutCollector, Topology, TopologyBuilder, Tuple, keys};
use egret_runtime::batch::BatchBuilder;
use egret_stmgr::Opts;
use egret_testkit::{CLUSTER, InProcessMetricsmgr, TempHome, register_instance, store_topology};
use egret_transport::data_frame;

const NAME: &str = "droptuples";
const DEADLINE: Duration = Duration::from_secs(10);
/// Far more than the watermarks, the backstop and every socket buffer on the way could hold: with back pressure
/// the spout's writes would stall long before this.
const SENT_BYTES: usize = 96 * 1024 * 1024;
const FRAME_VALUES: usize = 4096;

struct Source;
impl Spout for Source {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["v"]);
    }
    fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
}

struct Sink;
impl Bolt for Sink {
    fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
}

/// sink (task 1) <- source (task 2), one container, small watermarks, dropping instead of back pressure.
fn topology() -> Topology {
    let mut b = TopologyBuilder::new(NAME);
    b.config()
        .set(keys::DROPTUPLES_UPON_BACKPRESSURE, true)
        .set(keys::BACKPRESSURE_HIGH_BYTES, 256 * 1024)
        .set(keys::BACKPRESSURE_LOW_BYTES, 128 * 1024);
    b.set_spout("source", 1, || Source);
    b.set_bolt("sink", 1, || Sink).shuffle_grouping("source");
    b.build().expect("a valid topology")
}

#[test]
fn droptuples_drops_and_counts_for_a_bolt_that_does_not_read_and_never_clamps_the_spout() {
    let home = TempHome::new("egret-droptuples-stmgr");
    let state = home.state();
    let t = topology();
    let definition = store_topology(&*state, NAME, &t, 1);
    let task = |name: &str| t.tasks_of(t.component_index(name).unwrap()).next().unwrap();
    let (sink, source) = (task("sink"), task("source"));
    let stream = t.stream_index("source", "default").unwrap();
    let metrics = InProcessMetricsmgr::start(&*state, NAME, 1);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let opts = Opts {
        egret_home: home.0.clone(),
        cluster: CLUSTER.into(),
        topology: NAME.into(),
        container: 1,
        host: "127.0.0.1".into(),
        secret: egret_testkit::test_secret(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stmgr_state = state.clone();
    let stmgr = thread::spawn(move || {
        egret_stmgr::serve(listener, stmgr_state, opts, async move {
            let _ = stopped.await;
        })
    });

    let _sink_conn = register_instance(port, &definition.id, &t, sink, DEADLINE);
    let source_conn = register_instance(port, &definition.id, &t, source, DEADLINE);
    let mut batch = BatchBuilder::new();
    batch.push_data(Instant::now(), sink, source, stream, 0, &[], &[7u8; FRAME_VALUES]);
    let frame = data_frame(sink.0, &batch.take());
    let frames = SENT_BYTES / frame.len();
    let started = Instant::now();
    for i in 0..frames {
        // A write that stalls for DEADLINE fails: the stmgr stopped reading the spout.
        if let Err(e) = (&source_conn).write_all(&frame) {
            panic!("the spout was held back after {i} of {frames} frames: {e}");
        }
    }
    eprintln!("sent {frames} frames in {:?}", started.elapsed());

    let stmgr_value = |name: &str| metrics.value(name, "component", egret_stmgr::METRICS_COMPONENT);
    let deadline = Instant::now() + DEADLINE;
    let dropped = loop {
        match stmgr_value("egret_dropped_tuples_count") {
            Some(v) if v > 0.0 => break v,
            v => assert!(Instant::now() < deadline, "egret_dropped_tuples_count is {v:?}"),
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(dropped <= frames as f64, "{dropped} dropped of {frames} sent");
    assert_eq!(stmgr_value("egret_back_pressure_active"), Some(0.0));
    assert_eq!(
        stmgr_value("egret_time_spent_back_pressure"),
        Some(0.0),
        "the spout was clamped"
    );
    assert_eq!(stmgr_value("egret_time_spent_back_pressure_initiated"), Some(0.0));

    let _ = stop.send(());
    stmgr.join().expect("the stmgr thread").expect("the stmgr ends cleanly");
}
