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

mod first_fit_decreasing;
mod round_robin;

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
}
