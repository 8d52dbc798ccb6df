//! Packing: which container runs each instance (task) of a topology, and what each container needs. The submitter
//! packs once and stores the [`PackingPlan`] in the state manager; executors start what the plan gives their
//! container, and the tmanager builds the physical plan from it. The plan fixes placement; nobody else places.
//!
//! Two algorithms, as in Heron ([`Algorithm`]):
//! - **round robin** (the default): `topology.stmgrs` containers, tasks dealt to them in turn;
//! - **first-fit decreasing**: the algorithm chooses the number of containers, filling each up to a maximum size.
//!
//! Packing is a pure function of the topology (its components, their requested resources and the topology config):
//! the same topology always packs into the same plan, so any process can recompute and compare it. Containers are
//! numbered from 1 (container 0 is the tmanager's and holds no instance), each lists its instances by task id, and
//! its `required` resources are the sum of its instances' requests. There is no padding yet: the stmgr and
//! metricsmgr each container also runs are not counted.
//!
//! A rescale (`egret update --component-parallelism`) does not pack again: [`repack`] changes only what changes
//! (instances of removed tasks leave, new tasks join, containers left empty go), so every remaining instance keeps
//! its container and keeps running. [`update`] computes a whole rescale from what the state manager stores.

mod first_fit_decreasing;
mod round_robin;
pub mod update;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use egret_api::{ConfigError, TaskId, Topology, keys};
use egret_proto::egret::{ContainerPlan, InstancePlan, PackingPlan, Resource};

/// What an instance gets when its component requests nothing, and what sizes a first-fit-decreasing container by
/// default. Kept here, in one place; the algorithms read nothing else.
pub mod defaults {
    /// CPU cores per instance (Heron's default too).
    pub const INSTANCE_CPU: f64 = 1.0;
    /// RAM per instance: 256 MiB. Heron's default is 1 GiB because each Heron instance is a JVM with its heap;
    /// an Egret instance is a native process whose footprint is its queues and the user's state, far smaller.
    pub const INSTANCE_RAM_BYTES: u64 = 256 * 1024 * 1024;
    /// Disk per instance: 1 GiB, Heron's default (logs and the unpacked topology binary).
    pub const INSTANCE_DISK_BYTES: u64 = 1024 * 1024 * 1024;
    /// `topology.container.max.instances` when unset (Heron's default): the largest first-fit-decreasing
    /// container is this many default instances, unless `topology.container.{cpu,ram,disk}` say otherwise.
    pub const CONTAINER_MAX_INSTANCES: u64 = 10;
}

/// A packing algorithm, chosen at submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// `topology.stmgrs` containers (default 1); tasks dealt to containers 1..=N in turn, in task id order.
    #[default]
    RoundRobin,
    /// Instances sorted by RAM, then CPU (largest first), each into the first container with room; the number of
    /// containers follows from the maximum container size.
    FirstFitDecreasing,
}

impl Algorithm {
    /// The name recorded in [`PackingPlan::algorithm`] and accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::FirstFitDecreasing => "first-fit-decreasing",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A packing algorithm name that is none of the known spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown packing algorithm {0:?}: use round-robin (rr) or first-fit-decreasing (ffd)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Accepts `round-robin`, `roundrobin`, `rr`, `first-fit-decreasing`, `firstfitdecreasing` and `ffd`, in any
    /// case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "round-robin" | "roundrobin" | "rr" => Ok(Algorithm::RoundRobin),
            "first-fit-decreasing" | "firstfitdecreasing" | "ffd" => Ok(Algorithm::FirstFitDecreasing),
            _ => Err(UnknownAlgorithm(s.to_string())),
        }
    }
}

/// Why a topology cannot be packed. Each variant names the value at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PackingError {
    /// A packing config value (`topology.stmgrs`, `topology.container.*`) that does not parse or is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "round robin cannot pack {instances} instance(s) into {requested} container(s): \
         set {} between 1 and {instances}",
        keys::STMGRS
    )]
    ContainerCount { requested: u64, instances: u64 },
    /// One instance asks for more than a whole first-fit-decreasing container may hold.
    #[error(
        "an instance of component {component:?} requests {requested} {resource}{}, more than the maximum container \
         size of {max}: raise {} or lower the component's request",
        unit(resource),
        container_key(resource)
    )]
    InstanceTooLarge {
        component: String,
        resource: &'static str,
        requested: f64,
        max: f64,
    },
    #[error("component {component:?} requests {cpu} cpu; a request must be a positive number of cores")]
    InvalidCpu { component: String, cpu: f64 },
    /// A container's resources exceed what the plan's int64 fields can hold (only reachable with absurd requests).
    #[error(
        "container {container} needs more {resource} than a packing plan can record ({} bytes)",
        i64::MAX
    )]
    ResourceOverflow { container: u32, resource: &'static str },
    #[error("the topology has {0} instances; a packing plan holds at most {max}", max = i32::MAX)]
    TooManyInstances(u32),
    /// A rescale of a plan made by an algorithm this build does not know.
    #[error("cannot repack: {0}")]
    UnknownAlgorithm(#[from] UnknownAlgorithm),
    /// A rescale of a packing plan that is not the plan of the topology it is said to place.
    #[error("the packing plan does not place the topology being rescaled: {0}")]
    PlanMismatch(String),
}

fn unit(resource: &str) -> &'static str {
    if resource == "cpu" { "" } else { " bytes" }
}

/// The config key that sets the maximum container size for `resource` ("cpu", "ram" or "disk").
fn container_key(resource: &str) -> &'static str {
    match resource {
        "cpu" => keys::CONTAINER_CPU,
        "ram" => keys::CONTAINER_RAM,
        _ => keys::CONTAINER_DISK,
    }
}

/// One task to place, with the resources it requests (its component's, or the [`defaults`]).
#[derive(Debug, Clone, PartialEq)]
struct Instance {
    task: TaskId,
    /// Index in [`Topology::components`].
    component: usize,
    /// Index of the task within its component.
    index: u32,
    cpu: f64,
    ram: u64,
    disk: u64,
}

/// Packs `topology` with `algorithm`. Deterministic: the same topology and algorithm give the same plan.
///
/// Round robin uses `topology.stmgrs` containers. First-fit decreasing ignores `topology.stmgrs` and opens as many
/// containers as the instances need under the maximum container size (`topology.container.{cpu,ram,disk}`, each
/// defaulting to the per-instance default × `topology.container.max.instances`).
pub fn pack(topology: &Topology, algorithm: Algorithm) -> Result<PackingPlan, PackingError> {
    let instances = instances(topology)?;
    let containers = match algorithm {
        Algorithm::RoundRobin => round_robin::pack(topology.config(), instances)?,
        Algorithm::FirstFitDecreasing => first_fit_decreasing::pack(topology, instances)?,
    };
    let containers = containers
        .into_iter()
        .zip(1u32..)
        .map(|(instances, id)| container_plan(topology, id, instances))
        .collect::<Result<_, _>>()?;
    Ok(PackingPlan {
        id: topology.name().to_string(),
        algorithm: algorithm.as_str().to_string(),
        containers,
    })
}

/// The packing plan of `new`, a rescale of `old` ([`Topology::rescaled`]), which `current` places. Only what changes
/// changes:
/// - every task of `new` that `current` places stays in its container, with the same [`InstancePlan`] (a rescale
///   keeps a remaining task's component, its index within the component and its request);
/// - the instances of tasks `new` no longer has leave;
/// - each new task is placed as `current.algorithm` would: round robin gives it to the container with the fewest
///   instances (the lowest id on a tie) and never opens one (nothing bounds a round-robin container); first-fit
///   decreasing puts it, largest first, into the first container (lowest id) with room under the maximum container
///   size, or else opens a container numbered after the highest id of `current`;
/// - containers left empty are removed, and each container's `required` is summed again as [`pack`] does.
///
/// `topology.stmgrs` is not read: after a rescale, the container count follows from the containers kept.
pub fn repack(current: &PackingPlan, old: &Topology, new: &Topology) -> Result<PackingPlan, PackingError> {
    let algorithm: Algorithm = current.algorithm.parse()?;
    let mismatch = PackingError::PlanMismatch;
    // Where `current` puts each task, checked against `old`: each of its tasks placed once, nothing else placed.
    let mut placed: BTreeMap<u32, u32> = BTreeMap::new();
    let mut ids = Vec::with_capacity(current.containers.len());
    for c in &current.containers {
        let id = u32::try_from(c.id)
            .ok()
            .filter(|&id| id > 0)
            .ok_or_else(|| mismatch(format!("container id {} (ids start at 1)", c.id)))?;
        ids.push(id);
        for i in &c.instances {
            let task = u32::try_from(i.task_id).map_err(|_| mismatch(format!("task id {}", i.task_id)))?;
            let component = old
                .task_component(TaskId(task))
                .map(|(ci, _)| &old.components()[ci].name);
            if component != Some(&i.component) {
                return Err(mismatch(format!(
                    "container {id} runs task {task} of component {:?}, which {} does not have",
                    i.component,
                    old.name()
                )));
            }
            if placed.insert(task, id).is_some() {
                return Err(mismatch(format!("task {task} is in two containers")));
            }
        }
    }
    let unplaced: Vec<u32> = old
        .tasks()
        .map(|(t, _, _)| t.0)
        .filter(|t| !placed.contains_key(t))
        .collect();
    if !unplaced.is_empty() {
        return Err(mismatch(format!("no container runs task(s) {unplaced:?}")));
    }
    if BTreeSet::from_iter(ids.iter().copied()).len() != ids.len() {
        return Err(mismatch(format!("container ids {ids:?} repeat")));
    }
    ids.sort_unstable();
    let next_id = ids.last().map_or(1, |max| max + 1);

    let mut kept: BTreeMap<u32, Vec<Instance>> = ids.iter().map(|&id| (id, Vec::new())).collect();
    let mut added = Vec::new();
    for instance in instances(new)? {
        match placed.get(&instance.task.0) {
            Some(id) => {
                // A task id `new` shares with `old` must be the same task: a rescale never renumbers.
                let was = old
                    .task_component(instance.task)
                    .map(|(ci, _)| &old.components()[ci].name);
                let is = &new.components()[instance.component].name;
                if was != Some(is) {
                    return Err(mismatch(format!(
                        "task {} is of component {was:?} before the rescale and {is:?} after",
                        instance.task.0
                    )));
                }
                kept.entry(*id).or_default().push(instance);
            }
            None => added.push(instance),
        }
    }
    let kept: Vec<(u32, Vec<Instance>)> = kept.into_iter().collect();
    let containers = match algorithm {
        Algorithm::RoundRobin => round_robin::repack(kept, added, next_id),
        Algorithm::FirstFitDecreasing => first_fit_decreasing::repack(new, kept, added, next_id)?,
    };
    let containers = containers
        .into_iter()
        .filter(|(_, instances)| !instances.is_empty())
        .map(|(id, instances)| container_plan(new, id, instances))
        .collect::<Result<_, _>>()?;
    Ok(PackingPlan {
        id: current.id.clone(),
        algorithm: current.algorithm.clone(),
        containers,
    })
}

/// Every task of the topology in task id order, with its resolved request.
fn instances(topology: &Topology) -> Result<Vec<Instance>, PackingError> {
    let count = topology.max_task_id();
    if i32::try_from(count).is_err() {
        return Err(PackingError::TooManyInstances(count));
    }
    let components = topology.components();
    for c in components {
        if let Some(cpu) = c.resources.cpu
            && !(cpu.is_finite() && cpu > 0.0)
        {
            return Err(PackingError::InvalidCpu {
                component: c.name.clone(),
                cpu,
            });
        }
    }
    let mut out: Vec<Instance> = topology
        .tasks()
        .map(|(task, ci, index)| {
            let r = &components[ci].resources;
            Instance {
                task,
                component: ci,
                index,
                cpu: r.cpu.unwrap_or(defaults::INSTANCE_CPU),
                ram: r.ram_bytes.unwrap_or(defaults::INSTANCE_RAM_BYTES),
                disk: r.disk_bytes.unwrap_or(defaults::INSTANCE_DISK_BYTES),
            }
        })
        .collect();
    out.sort_by_key(|i| i.task);
    Ok(out)
}

/// The plan of container `id`: its instances by task id, and their summed request.
fn container_plan(topology: &Topology, id: u32, mut instances: Vec<Instance>) -> Result<ContainerPlan, PackingError> {
    instances.sort_by_key(|i| i.task);
    let overflow = |resource| PackingError::ResourceOverflow {
        container: id,
        resource,
    };
    let bytes = |value: u64, resource| i64::try_from(value).map_err(|_| overflow(resource));
    let (mut cpu, mut ram, mut disk) = (0.0f64, 0u64, 0u64);
    let mut plans = Vec::with_capacity(instances.len());
    for i in &instances {
        cpu += i.cpu;
        ram = ram.checked_add(i.ram).ok_or_else(|| overflow("ram"))?;
        disk = disk.checked_add(i.disk).ok_or_else(|| overflow("disk"))?;
        plans.push(InstancePlan {
            component: topology.components()[i.component].name.clone(),
            // Task ids, and so indices within a component, were checked to fit an i32 in `instances`.
            task_id: i.task.0 as i32,
            component_index: i.index as i32,
            resource: Some(Resource {
                cpu: i.cpu,
                ram_bytes: bytes(i.ram, "ram")?,
                disk_bytes: bytes(i.disk, "disk")?,
            }),
        });
    }
    Ok(ContainerPlan {
        // At most one container per instance, so ids fit an i32 too.
        id: id as i32,
        instances: plans,
        required: Some(Resource {
            cpu,
            ram_bytes: bytes(ram, "ram")?,
            disk_bytes: bytes(disk, "disk")?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_api::{Bolt, BoltCollector, Config, OutputDeclarer, Spout, SpoutCollector, TopologyBuilder, Tuple};

    const MIB: u64 = 1024 * 1024;

    struct S;
    impl Spout for S {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["x"]);
        }
        fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
    }
    struct B;
    impl Bolt for B {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["x"]);
        }
        fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
    }

    /// A spout "a-spout" with `spouts` tasks feeding a bolt "b" with `bolts` tasks.
    fn spout_bolt(spouts: u32, bolts: u32, config: Config) -> Topology {
        let mut b = TopologyBuilder::new("t");
        b.set_config(config);
        b.set_spout("a-spout", spouts, || S);
        b.set_bolt("b", bolts, || B).shuffle_grouping("a-spout");
        b.build().unwrap()
    }

    /// (container id, task ids) of every container.
    fn layout(plan: &PackingPlan) -> Vec<(i32, Vec<i32>)> {
        plan.containers
            .iter()
            .map(|c| (c.id, c.instances.iter().map(|i| i.task_id).collect()))
            .collect()
    }

    fn required(plan: &PackingPlan, container: usize) -> Resource {
        plan.containers[container].required.unwrap_or_default()
    }

    #[test]
    fn algorithm_names() {
        let check = |s: &str, expect: Option<Algorithm>| assert_eq!(s.parse().ok(), expect, "{s:?}");
        for s in ["round-robin", "RoundRobin", "rr", "RR"] {
            check(s, Some(Algorithm::RoundRobin));
        }
        for s in ["first-fit-decreasing", "FFD", "ffd", "FirstFitDecreasing"] {
            check(s, Some(Algorithm::FirstFitDecreasing));
        }
        for s in ["", "round robin", "ff", "best-fit"] {
            check(s, None);
        }
        for a in [Algorithm::RoundRobin, Algorithm::FirstFitDecreasing] {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
            assert_eq!(a.to_string(), a.as_str());
        }
        assert_eq!(Algorithm::default(), Algorithm::RoundRobin);
        assert_eq!("x".parse::<Algorithm>(), Err(UnknownAlgorithm("x".into())));
    }

    #[test]
    fn round_robin_deals_tasks_in_turn() {
        // Components sort by name: a-spout gets tasks 1-2, b gets 3-4; dealt 1→1, 2→2, 3→1, 4→2.
        let t = spout_bolt(2, 2, Config::new().with(keys::STMGRS, 2));
        let plan = pack(&t, Algorithm::RoundRobin).unwrap();
        assert_eq!(plan.id, "t");
        assert_eq!(plan.algorithm, "round-robin");
        assert_eq!(layout(&plan), vec![(1, vec![1, 3]), (2, vec![2, 4])]);
        let c1 = &plan.containers[0].instances;
        assert_eq!((c1[0].component.as_str(), c1[0].component_index), ("a-spout", 0));
        assert_eq!((c1[1].component.as_str(), c1[1].component_index), ("b", 0));
        let c2 = &plan.containers[1].instances;
        assert_eq!((c2[0].component.as_str(), c2[0].component_index), ("a-spout", 1));
        assert_eq!((c2[1].component.as_str(), c2[1].component_index), ("b", 1));
        let default = Resource {
            cpu: defaults::INSTANCE_CPU,
            ram_bytes: defaults::INSTANCE_RAM_BYTES as i64,
            disk_bytes: defaults::INSTANCE_DISK_BYTES as i64,
        };
        assert_eq!(c1[0].resource, Some(default));
        for c in 0..2 {
            assert_eq!(
                required(&plan, c),
                Resource {
                    cpu: 2.0,
                    ram_bytes: 2 * default.ram_bytes,
                    disk_bytes: 2 * default.disk_bytes,
                }
            );
        }
    }

    #[test]
    fn round_robin_defaults_to_one_container_and_uneven_deals() {
        let plan = pack(&spout_bolt(2, 3, Config::new()), Algorithm::RoundRobin).unwrap();
        assert_eq!(layout(&plan), vec![(1, vec![1, 2, 3, 4, 5])]);
        let plan = pack(
            &spout_bolt(2, 3, Config::new().with(keys::STMGRS, 3)),
            Algorithm::RoundRobin,
        )
        .unwrap();
        assert_eq!(layout(&plan), vec![(1, vec![1, 4]), (2, vec![2, 5]), (3, vec![3])]);
    }

    #[test]
    fn round_robin_rejects_container_counts_it_cannot_fill() {
        for (stmgrs, ok) in [(0, false), (1, true), (4, true), (5, false), (1000, false)] {
            let r = pack(
                &spout_bolt(2, 2, Config::new().with(keys::STMGRS, stmgrs)),
                Algorithm::RoundRobin,
            );
            if ok {
                assert_eq!(r.map(|p| p.containers.len()), Ok(stmgrs as usize));
            } else {
                assert_eq!(
                    r,
                    Err(PackingError::ContainerCount {
                        requested: stmgrs,
                        instances: 4
                    })
                );
            }
        }
        // Validation already rejects an unparsable topology.stmgrs; one set afterwards (submit overrides) still fails.
        let t = spout_bolt(1, 1, Config::new());
        let t = t.with_config(Config::new().with(keys::STMGRS, "two"));
        assert!(matches!(
            pack(&t, Algorithm::RoundRobin),
            Err(PackingError::Config(ConfigError { key, value, .. })) if key == keys::STMGRS && value == "two"
        ));
    }

    /// "big" (spout) 2 × 600 MiB, "mid" 2 × 400 MiB, "small" 3 × 100 MiB; task ids 1-2, 3-4, 5-7.
    fn heterogeneous(config: Config) -> Topology {
        let mut b = TopologyBuilder::new("het");
        b.set_config(config);
        b.set_bolt("small", 3, || B)
            .shuffle_grouping("mid")
            .ram_mb(100)
            .cpu(0.5);
        b.set_bolt("mid", 2, || B).shuffle_grouping("big").ram_mb(400);
        b.set_spout("big", 2, || S).ram_mb(600).cpu(2.0);
        b.build().unwrap()
    }

    #[test]
    fn first_fit_decreasing_packs_by_ram() {
        let t = heterogeneous(
            Config::new()
                .with(keys::CONTAINER_RAM, 1000 * MIB)
                .with(keys::STMGRS, 7),
        );
        let plan = pack(&t, Algorithm::FirstFitDecreasing).unwrap();
        assert_eq!(plan.algorithm, "first-fit-decreasing");
        // 600 → c1, 600 → c2, 400 → c1 (1000), 400 → c2 (1000), then the 100s no longer fit: c3.
        // topology.stmgrs (7) is ignored.
        assert_eq!(
            layout(&plan),
            vec![(1, vec![1, 3]), (2, vec![2, 4]), (3, vec![5, 6, 7])]
        );
        assert_eq!(
            required(&plan, 0),
            Resource {
                cpu: 3.0,
                ram_bytes: (1000 * MIB) as i64,
                disk_bytes: 2 * defaults::INSTANCE_DISK_BYTES as i64,
            }
        );
        assert_eq!(required(&plan, 2).cpu, 1.5);
        assert_eq!(required(&plan, 2).ram_bytes, (300 * MIB) as i64);
        let big = &plan.containers[1].instances[0];
        assert_eq!(
            (big.component.as_str(), big.task_id, big.component_index),
            ("big", 2, 1)
        );
        assert_eq!(
            big.resource.as_ref().map(|r| (r.cpu, r.ram_bytes)),
            Some((2.0, (600 * MIB) as i64))
        );
    }

    #[test]
    fn first_fit_decreasing_respects_cpu_and_smaller_instances_fill_gaps() {
        // Room for 900 MiB and 3 cores: the CPU limit, not only RAM, decides where the last small instance goes.
        let t = heterogeneous(
            Config::new()
                .with(keys::CONTAINER_RAM, 900 * MIB)
                .with(keys::CONTAINER_CPU, 3),
        );
        let plan = pack(&t, Algorithm::FirstFitDecreasing).unwrap();
        // Order: 1 (600), 2 (600), 3 (400), 4 (400), 5, 6, 7 (100 each).
        // c1: 1 (600, 2 cpu); c2: 2 (600, 2 cpu); 3 cannot join either (1000 MiB) → c3; 4 → c3 (800 MiB, 2 cpu);
        // 5 → c1 (700, 2.5 cpu); 6 → c1 (800, 3 cpu); 7 has RAM left in c1 (900) but no CPU (3.5) → c2.
        assert_eq!(
            layout(&plan),
            vec![(1, vec![1, 5, 6]), (2, vec![2, 7]), (3, vec![3, 4])]
        );
        assert_eq!(required(&plan, 0).cpu, 3.0);
    }

    #[test]
    fn first_fit_decreasing_sorts_by_cpu_first_when_asked() {
        let topology = |strategy: Option<&str>| {
            let mut b = TopologyBuilder::new("sorted");
            b.config()
                .set(keys::CONTAINER_RAM, 1000 * MIB)
                .set(keys::CONTAINER_CPU, 4);
            if let Some(s) = strategy {
                b.config().set(keys::PACKING_FFD_SORTING_STRATEGY, s);
            }
            b.set_spout("a", 2, || S).ram_mb(500).cpu(1.0);
            b.set_bolt("b", 1, || B).shuffle_grouping("a").ram_mb(400).cpu(2.0);
            b.set_bolt("c", 1, || B).shuffle_grouping("a").ram_mb(100).cpu(2.0);
            b.build().unwrap()
        };
        // RAM first: 1, 2 (500 MiB each) fill c1; 3 and 4 share c2.
        let ram_first = vec![(1, vec![1, 2]), (2, vec![3, 4])];
        for strategy in [None, Some("RAM_FIRST")] {
            let plan = pack(&topology(strategy), Algorithm::FirstFitDecreasing).unwrap();
            assert_eq!(layout(&plan), ram_first, "{strategy:?}");
        }
        // CPU first: 3 and 4 (2 cores each) fill c1's CPU; 1 and 2 share c2.
        let plan = pack(&topology(Some("CPU_FIRST")), Algorithm::FirstFitDecreasing).unwrap();
        assert_eq!(layout(&plan), vec![(1, vec![3, 4]), (2, vec![1, 2])]);
    }

    #[test]
    fn first_fit_decreasing_opens_new_containers_when_full() {
        // Default container: 10 default instances. 25 default instances → 10, 10, 5, in task id order.
        let plan = pack(&spout_bolt(12, 13, Config::new()), Algorithm::FirstFitDecreasing).unwrap();
        assert_eq!(
            layout(&plan),
            vec![
                (1, (1..=10).collect()),
                (2, (11..=20).collect()),
                (3, (21..=25).collect())
            ]
        );
        assert_eq!(required(&plan, 0).cpu, 10.0);
        assert_eq!(required(&plan, 2).ram_bytes, 5 * defaults::INSTANCE_RAM_BYTES as i64);
        // A smaller maximum container count packs tighter.
        let plan = pack(
            &spout_bolt(2, 2, Config::new().with(keys::CONTAINER_MAX_INSTANCES, 1)),
            Algorithm::FirstFitDecreasing,
        )
        .unwrap();
        assert_eq!(plan.containers.len(), 4);
    }

    #[test]
    fn first_fit_decreasing_rejects_an_oversized_instance() {
        let mut b = TopologyBuilder::new("fat");
        b.set_spout("s", 1, || S);
        b.set_bolt("huge", 1, || B).shuffle_grouping("s").ram_mb(4096);
        let t = b.build().unwrap();
        let err = pack(&t, Algorithm::FirstFitDecreasing).unwrap_err();
        assert_eq!(
            err,
            PackingError::InstanceTooLarge {
                component: "huge".into(),
                resource: "ram",
                requested: (4096 * MIB) as f64,
                max: (10 * defaults::INSTANCE_RAM_BYTES) as f64,
            }
        );
        assert!(err.to_string().contains(keys::CONTAINER_RAM), "{err}");
        // Round robin has no maximum container size, so it packs the same topology.
        assert!(pack(&t, Algorithm::RoundRobin).is_ok());

        let t = spout_bolt(1, 1, Config::new().with(keys::CONTAINER_CPU, 0.5));
        assert!(matches!(
            pack(&t, Algorithm::FirstFitDecreasing),
            Err(PackingError::InstanceTooLarge { resource: "cpu", .. })
        ));
    }

    #[test]
    fn bad_values_are_named() {
        for (key, value) in [
            (keys::CONTAINER_RAM, "lots"),
            (keys::CONTAINER_CPU, "many"),
            (keys::CONTAINER_CPU, "-1"),
            (keys::CONTAINER_CPU, "NaN"),
            (keys::CONTAINER_DISK, "1.5"),
            (keys::CONTAINER_MAX_INSTANCES, "0"),
        ] {
            let t = spout_bolt(1, 1, Config::new().with(key, value));
            match pack(&t, Algorithm::FirstFitDecreasing) {
                Err(PackingError::Config(e)) => assert_eq!((e.key.as_str(), e.value.as_str()), (key, value)),
                other => panic!("{key}={value}: expected a config error, got {other:?}"),
            }
        }
        let mut b = TopologyBuilder::new("t");
        b.set_spout("s", 1, || S).cpu(-1.0);
        let t = b.build().unwrap();
        for algorithm in [Algorithm::RoundRobin, Algorithm::FirstFitDecreasing] {
            assert_eq!(
                pack(&t, algorithm),
                Err(PackingError::InvalidCpu {
                    component: "s".into(),
                    cpu: -1.0
                })
            );
        }
    }

    #[test]
    fn plans_are_deterministic() {
        let config = || {
            Config::new()
                .with(keys::CONTAINER_RAM, 1000 * MIB)
                .with(keys::STMGRS, 3)
        };
        for algorithm in [Algorithm::RoundRobin, Algorithm::FirstFitDecreasing] {
            let first = pack(&heterogeneous(config()), algorithm).unwrap();
            for _ in 0..5 {
                assert_eq!(pack(&heterogeneous(config()), algorithm).unwrap(), first);
            }
            // Declaration order does not matter: components sort by name before tasks are numbered.
            let mut b = TopologyBuilder::new("het");
            b.set_config(config());
            b.set_spout("big", 2, || S).ram_mb(600).cpu(2.0);
            b.set_bolt("mid", 2, || B).shuffle_grouping("big").ram_mb(400);
            b.set_bolt("small", 3, || B)
                .shuffle_grouping("mid")
                .ram_mb(100)
                .cpu(0.5);
            assert_eq!(pack(&b.build().unwrap(), algorithm).unwrap(), first);
        }
    }

    /// A word count: "sentence" (1 task) → shuffle → "split" (2) → fields(word) → "count" (`counts`). Components by
    /// name: count gets tasks 1..=counts, sentence the next, split the two after.
    pub(crate) fn word_count(counts: u32, config: Config) -> Topology {
        let mut b = TopologyBuilder::new("wc");
        b.set_config(config);
        b.set_spout("sentence", 1, || S);
        b.set_bolt("split", 2, || B).shuffle_grouping("sentence");
        b.set_bolt("count", counts, || B).fields_grouping("split", ["x"]);
        b.build().unwrap()
    }

    /// task id → (container id, its InstancePlan).
    fn placement(plan: &PackingPlan) -> BTreeMap<i32, (i32, InstancePlan)> {
        plan.containers
            .iter()
            .flat_map(|c| c.instances.iter().map(|i| (i.task_id, (c.id, i.clone()))))
            .collect()
    }

    /// What every repack keeps: the plan places exactly `new`'s tasks, each with its component and index in `new`;
    /// every task `new` shares with `before` stays in its container with the same instance plan; no container is
    /// empty; `required` is the sum of the instances' requests; ids are ascending.
    fn check_repack(before: &PackingPlan, new: &Topology, after: &PackingPlan) {
        let (was, is) = (placement(before), placement(after));
        let tasks: Vec<i32> = new.tasks().map(|(t, _, _)| t.0 as i32).collect();
        assert_eq!(
            is.keys().copied().collect::<BTreeSet<_>>(),
            tasks.iter().copied().collect()
        );
        assert_eq!(is.len(), tasks.len(), "a task placed twice");
        for (task, ci, index) in new.tasks() {
            let (_, i) = &is[&(task.0 as i32)];
            assert_eq!(
                (i.component.as_str(), i.component_index),
                (new.components()[ci].name.as_str(), index as i32)
            );
            if let Some(old) = was.get(&(task.0 as i32)) {
                assert_eq!(&is[&(task.0 as i32)], old, "task {} moved or changed", task.0);
            }
        }
        for c in &after.containers {
            assert!(!c.instances.is_empty(), "container {} is empty", c.id);
            let sum = c
                .instances
                .iter()
                .filter_map(|i| i.resource)
                .fold(Resource::default(), |a, r| Resource {
                    cpu: a.cpu + r.cpu,
                    ram_bytes: a.ram_bytes + r.ram_bytes,
                    disk_bytes: a.disk_bytes + r.disk_bytes,
                });
            assert_eq!(c.required, Some(sum), "container {}", c.id);
        }
        assert!(after.containers.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!((&after.id, &after.algorithm), (&before.id, &before.algorithm));
    }

    #[test]
    fn rescale_round_robin_2_to_5_to_1_moves_nothing_that_stays() {
        // count 1-2, sentence 3, split 4-5; dealt over 3 containers: c1 [1, 4], c2 [2, 5], c3 [3].
        let t = word_count(2, Config::new().with(keys::STMGRS, 3));
        let plan = pack(&t, Algorithm::RoundRobin).unwrap();
        assert_eq!(layout(&plan), vec![(1, vec![1, 4]), (2, vec![2, 5]), (3, vec![3])]);

        // count 2 → 5: tasks 6, 7, 8, each to the emptiest container (lowest id on a tie): 6 → c3, 7 → c1, 8 → c2.
        let five = t.rescaled(&[("count".into(), 5)]).unwrap();
        let plan5 = repack(&plan, &t, &five).unwrap();
        check_repack(&plan, &five, &plan5);
        assert_eq!(
            layout(&plan5),
            vec![(1, vec![1, 4, 7]), (2, vec![2, 5, 8]), (3, vec![3, 6])]
        );
        let c3 = &plan5.containers[2].instances;
        assert_eq!(
            (c3[1].component.as_str(), c3[1].task_id, c3[1].component_index),
            ("count", 6, 2)
        );

        // count 5 → 1: tasks 2, 6, 7, 8 leave; nothing moves.
        let one = five.rescaled(&[("count".into(), 1)]).unwrap();
        let plan1 = repack(&plan5, &five, &one).unwrap();
        check_repack(&plan5, &one, &plan1);
        assert_eq!(layout(&plan1), vec![(1, vec![1, 4]), (2, vec![5]), (3, vec![3])]);
        assert_eq!(required(&plan1, 1).cpu, defaults::INSTANCE_CPU);
    }

    #[test]
    fn rescale_round_robin_removes_emptied_containers_and_never_opens_one() {
        // a-spout 1, b 2-4, one container each.
        let t = spout_bolt(1, 3, Config::new().with(keys::STMGRS, 4));
        let plan = pack(&t, Algorithm::RoundRobin).unwrap();
        let shrunk = t.rescaled(&[("b".into(), 1)]).unwrap();
        let plan1 = repack(&plan, &t, &shrunk).unwrap();
        check_repack(&plan, &shrunk, &plan1);
        assert_eq!(layout(&plan1), vec![(1, vec![1]), (2, vec![2])]);
        // Growing a lot spreads over the containers that are left: no limit asks for another. (New ids start
        // above the highest id in use, so 3 and 4 are dealt again.)
        let grown = shrunk.rescaled(&[("b".into(), 9)]).unwrap();
        let plan9 = repack(&plan1, &shrunk, &grown).unwrap();
        check_repack(&plan1, &grown, &plan9);
        assert_eq!(
            layout(&plan9),
            vec![(1, vec![1, 3, 5, 7, 9]), (2, vec![2, 4, 6, 8, 10])]
        );
    }

    #[test]
    fn rescale_first_fit_decreasing_opens_a_container_when_full_and_drops_empty_ones() {
        // Default container: 10 default instances. a-spout 1-2 and b 3-10 fill container 1.
        let t = spout_bolt(2, 8, Config::new());
        let plan = pack(&t, Algorithm::FirstFitDecreasing).unwrap();
        assert_eq!(layout(&plan), vec![(1, (1..=10).collect())]);

        // b 8 → 11: tasks 11-13 do not fit container 1, so container 2 opens.
        let grown = t.rescaled(&[("b".into(), 11)]).unwrap();
        let plan = repack(&plan, &t, &grown).unwrap();
        check_repack(&pack(&t, Algorithm::FirstFitDecreasing).unwrap(), &grown, &plan);
        assert_eq!(layout(&plan), vec![(1, (1..=10).collect()), (2, vec![11, 12, 13])]);
        assert_eq!(required(&plan, 1).cpu, 3.0);

        // b 11 → 1: only task 3 of b stays; container 2 is empty and goes.
        let shrunk = grown.rescaled(&[("b".into(), 1)]).unwrap();
        let plan1 = repack(&plan, &grown, &shrunk).unwrap();
        check_repack(&plan, &shrunk, &plan1);
        assert_eq!(layout(&plan1), vec![(1, vec![1, 2, 3])]);

        // b 1 → 3 again: the new tasks (4 and 5, above the highest id in use) fit container 1.
        let again = shrunk.rescaled(&[("b".into(), 3)]).unwrap();
        let plan3 = repack(&plan1, &shrunk, &again).unwrap();
        check_repack(&plan1, &again, &plan3);
        assert_eq!(layout(&plan3), vec![(1, vec![1, 2, 3, 4, 5])]);
    }

    #[test]
    fn rescale_first_fit_decreasing_fills_gaps_largest_first_and_numbers_after_the_highest_id() {
        // Room for 1000 MiB: c1 [1, 3] (600 + 400), c2 [2, 4], c3 [5, 6, 7] (3 × 100).
        let t = heterogeneous(Config::new().with(keys::CONTAINER_RAM, 1000 * MIB));
        let plan = pack(&t, Algorithm::FirstFitDecreasing).unwrap();
        assert_eq!(
            layout(&plan),
            vec![(1, vec![1, 3]), (2, vec![2, 4]), (3, vec![5, 6, 7])]
        );
        // Without container 2 (only ids 1 and 3 are left), the next container is 4, not 2.
        let mut gapped = plan.clone();
        let c2 = gapped.containers.remove(1);
        gapped.containers[0].instances.extend(c2.instances);
        gapped.containers[0].instances.sort_by_key(|i| i.task_id);
        // big 2 → 3 (task 8, 600 MiB) and small 3 → 9 (tasks 9-14, 100 MiB), largest first: 8 joins c3 (900 MiB;
        // c1 is over the limit already and takes nothing), 9 fills c3 (1000 MiB), 10-14 open container 4.
        let r = t.rescaled(&[("big".into(), 3), ("small".into(), 9)]).unwrap();
        let after = repack(&gapped, &t, &r).unwrap();
        check_repack(&gapped, &r, &after);
        assert_eq!(
            layout(&after),
            vec![
                (1, vec![1, 2, 3, 4]),
                (3, vec![5, 6, 7, 8, 9]),
                (4, vec![10, 11, 12, 13, 14])
            ]
        );
    }

    #[test]
    fn repack_refuses_a_plan_of_another_topology_or_algorithm() {
        let t = word_count(2, Config::new());
        let r = t.rescaled(&[("count".into(), 3)]).unwrap();
        let plan = pack(&t, Algorithm::RoundRobin).unwrap();
        let other = pack(&word_count(3, Config::new()), Algorithm::RoundRobin).unwrap();
        assert!(
            matches!(repack(&other, &t, &r), Err(PackingError::PlanMismatch(m)) if m.contains("task 3 of component \"count\""))
        );
        let mut missing = plan.clone();
        missing.containers[0].instances.pop();
        assert!(matches!(repack(&missing, &t, &r), Err(PackingError::PlanMismatch(m)) if m.contains("[5]")));
        let mut unknown = plan.clone();
        unknown.algorithm = "test".into();
        assert_eq!(
            repack(&unknown, &t, &r),
            Err(PackingError::UnknownAlgorithm(UnknownAlgorithm("test".into())))
        );
    }
}
