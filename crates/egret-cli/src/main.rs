//! `egret`: the one binary of an Egret install. User commands (`submit`, `kill`, `activate`, `deactivate`,
//! `restart`, `update`, `list`, `explain`, `checkpoints`, `prometheus-config`), the `tracker` service, and the daemon
//! roles (hidden from `--help`): `supervisor` (started by `submit`), `executor` (started by the supervisor), and
//! `tmanager`, `stmgr`, `metricsmgr` (started by the executors). Exit status 0 on success; otherwise a one-line reason
//! on stderr. The daemons log to stderr (their executor sends it to their log file) in the format of
//! `egret_scheduler::logging`.

mod commands;
mod prometheus_config;
mod submit;
mod update;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "egret",
    version,
    about = "Egret: real-time stream processing with Heron's model"
)]
struct Cli {
    /// Egret's state, packages and logs.
    #[arg(long, global = true, env = "EGRET_HOME", default_value_os_t = default_home())]
    home: PathBuf,
    #[command(subcommand)]
    command: Command,
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".egret")
}

#[derive(Subcommand)]
enum Command {
    /// Validate, pack, upload and start a topology; returns once it runs.
    Submit(submit::SubmitArgs),
    /// Stop every process of a topology and remove its state.
    Kill(commands::TopologyArgs),
    /// Let the spouts of a topology emit.
    Activate(commands::TopologyArgs),
    /// Stop the spouts of a topology from emitting (in-flight tuples still drain).
    Deactivate(commands::TopologyArgs),
    /// Restart one container of a topology, or all of them.
    Restart(commands::RestartArgs),
    /// Rescale a running topology: change the parallelism of some of its components (stable task ids; only the
    /// instances that change start or stop).
    Update(update::UpdateArgs),
    /// List the topologies of a cluster.
    List(commands::ListArgs),
    /// Show a topology's logical plan, packing plan, physical plan and processes.
    Explain(commands::ExplainArgs),
    /// List an effectively-once topology's kept checkpoints (also after kill, for submit --restore-checkpoint).
    Checkpoints(commands::CheckpointsArgs),
    /// Serve the tracker: a JSON REST API (under /api/v1) over the cluster's topologies, metrics and logs.
    Tracker(commands::TrackerArgs),
    /// Print (or write) a Prometheus scrape configuration for the metrics managers of the running topologies.
    PrometheusConfig(prometheus_config::PrometheusConfigArgs),
    #[command(hide = true)]
    Supervisor(commands::SupervisorArgs),
    #[command(hide = true)]
    Executor(commands::DaemonArgs),
    #[command(hide = true)]
    Tmanager(commands::DaemonArgs),
    #[command(hide = true)]
    Stmgr(commands::DaemonArgs),
    #[command(hide = true)]
    Metricsmgr(commands::DaemonArgs),
}

fn main() {
    let cli = Cli::parse();
    let home = cli.home;
    // A daemon's fatal error goes to its log like everything else it says; a user command's goes to the user.
    let daemon = matches!(
        cli.command,
        Command::Tracker(_)
            | Command::Supervisor(_)
            | Command::Executor(_)
            | Command::Tmanager(_)
            | Command::Stmgr(_)
            | Command::Metricsmgr(_)
    );
    // Like other Unix tools, a user command stops quietly when the reader of its output goes away (`egret explain
    // ... | head`) instead of panicking on a broken pipe. A daemon keeps SIGPIPE ignored: a peer that dies while it
    // writes to the peer's socket is an error it handles, not a reason to die.
    if !daemon {
        // SAFETY: restoring the default action of SIGPIPE before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Submit(a) => submit::submit(&home, a),
        Command::Kill(a) => commands::kill(&home, a),
        Command::Activate(a) => commands::set_active(&home, a, true),
        Command::Deactivate(a) => commands::set_active(&home, a, false),
        Command::Restart(a) => commands::restart(&home, a),
        Command::Update(a) => update::update(&home, a),
        Command::List(a) => commands::list(&home, a),
        Command::Explain(a) => commands::explain(&home, a),
        Command::Checkpoints(a) => commands::checkpoints(&home, a),
        Command::Tracker(a) => commands::tracker(&home, a),
        Command::PrometheusConfig(a) => prometheus_config::prometheus_config(&home, a),
        Command::Supervisor(a) => commands::supervisor(&home, a),
        Command::Executor(a) => commands::executor(&home, a),
        Command::Tmanager(a) => commands::tmanager(&home, a),
        Command::Stmgr(a) => commands::stmgr(&home, a),
        Command::Metricsmgr(a) => commands::metricsmgr(&home, a),
    };
    if let Err(e) = result {
        if daemon {
            tracing::error!(error = %format_args!("{e:#}"), "exiting");
        } else {
            eprintln!("egret: {e:#}");
        }
        std::process::exit(1);
    }
}
