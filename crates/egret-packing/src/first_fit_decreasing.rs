//! First-fit decreasing: containers of a bounded size, as many as the instances need. Largest instances go first
//! (by RAM, then CPU; by CPU, then RAM with `topology.packing.ffd.sorting.strategy=CPU_FIRST`), each into the first container (lowest id) with room left for all three resources, so big
//! instances spread out and small ones fill the gaps. `topology.stmgrs` is ignored: the container count is the
//! algorithm's result, not an input.
//!
//! The maximum container size is `topology.container.{cpu,ram,disk}`, each defaulting to the per-instance default
//! × `topology.container.max.instances` (as Heron's shared packing code does). `max.instances` only sizes that
//! default; the number of instances in a container is limited by resources alone.

use egret_api::{Config, ConfigError, Topology, keys};

use crate::{Instance, PackingError, defaults};

/// Slack when adding CPU requests, so that e.g. ten 0.1-core instances fit a 1-core container even though their
/// floating-point sum is a hair above 1.0.
const CPU_EPSILON: f64 = 1e-9;

/// The most one container may hold.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Capacity {
    cpu: f64,
    ram: u64,
    disk: u64,
}

impl Capacity {
    fn from_config(config: &Config) -> Result<Capacity, PackingError> {
        let max_instances = config
            .get_u64(keys::CONTAINER_MAX_INSTANCES)?
            .unwrap_or(defaults::CONTAINER_MAX_INSTANCES);
        if max_instances == 0 {
            return Err(out_of_range(config, keys::CONTAINER_MAX_INSTANCES, "a positive integer").into());
        }
        let cpu = match config.get_f64(keys::CONTAINER_CPU)? {
            Some(cpu) if !(cpu.is_finite() && cpu > 0.0) => {
                return Err(out_of_range(config, keys::CONTAINER_CPU, "a positive number of cores").into());
            }
            Some(cpu) => cpu,
            None => defaults::INSTANCE_CPU * max_instances as f64,
        };
        let ram = config
            .get_u64(keys::CONTAINER_RAM)?
            .unwrap_or(defaults::INSTANCE_RAM_BYTES.saturating_mul(max_instances));
        let disk = config
            .get_u64(keys::CONTAINER_DISK)?
            .unwrap_or(defaults::INSTANCE_DISK_BYTES.saturating_mul(max_instances));
        Ok(Capacity { cpu, ram, disk })
    }
}

/// A value that parses but is out of range, reported like one that does not parse.
fn out_of_range(config: &Config, key: &str, expected: &'static str) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        value: config.get(key).unwrap_or_default().to_string(),
        expected,
    }
}

/// A container being filled.
#[derive(Default)]
struct Bin {
    cpu: f64,
    ram: u64,
    disk: u64,
    instances: Vec<Instance>,
}

impl Bin {
    fn fits(&self, i: &Instance, max: &Capacity) -> bool {
        self.cpu + i.cpu <= max.cpu + CPU_EPSILON
            && self.ram.checked_add(i.ram).is_some_and(|ram| ram <= max.ram)
            && self.disk.checked_add(i.disk).is_some_and(|disk| disk <= max.disk)
    }

    fn add(&mut self, i: Instance) {
        self.cpu += i.cpu;
        // Cannot overflow: `fits` (or the single-instance check) bounded the sums by the capacity.
        self.ram = self.ram.saturating_add(i.ram);
        self.disk = self.disk.saturating_add(i.disk);
        self.instances.push(i);
    }
}

/// Groups `instances` (in task id order) into containers 1..=N, N chosen here.
pub(crate) fn pack(topology: &Topology, instances: Vec<Instance>) -> Result<Vec<Vec<Instance>>, PackingError> {
    let max = Capacity::from_config(topology.config())?;
    let mut bins: Vec<Bin> = Vec::new();
    for instance in sorted(topology, &max, instances)? {
        match bins.iter_mut().find(|bin| bin.fits(&instance, &max)) {
            Some(bin) => bin.add(instance),
            None => {
                let mut bin = Bin::default();
                bin.add(instance);
                bins.push(bin);
            }
        }
    }
    Ok(bins.into_iter().map(|bin| bin.instances).collect())
}

/// A rescale: `containers` (by id, ascending) keep what they hold; each of `added` goes, largest first as in
/// [`pack`], into the first container with room for it, or else into a new container numbered from `next_id`.
pub(crate) fn repack(
    topology: &Topology,
    containers: Vec<(u32, Vec<Instance>)>,
    added: Vec<Instance>,
    mut next_id: u32,
) -> Result<Vec<(u32, Vec<Instance>)>, PackingError> {
    let max = Capacity::from_config(topology.config())?;
    let mut bins: Vec<(u32, Bin)> = containers
        .into_iter()
        .map(|(id, instances)| {
            // What a container already holds stays, even if a config change made it larger than `max` now.
            let mut bin = Bin::default();
            instances.into_iter().for_each(|i| bin.add(i));
            (id, bin)
        })
        .collect();
    for instance in sorted(topology, &max, added)? {
        match bins.iter_mut().find(|(_, bin)| bin.fits(&instance, &max)) {
            Some((_, bin)) => bin.add(instance),
            None => {
                let mut bin = Bin::default();
                bin.add(instance);
                bins.push((next_id, bin));
                next_id += 1;
            }
        }
    }
    Ok(bins.into_iter().map(|(id, bin)| (id, bin.instances)).collect())
}

/// `instances` (in task id order) in the order first-fit decreasing places them, once each is known to fit an empty
/// container.
fn sorted(topology: &Topology, max: &Capacity, mut instances: Vec<Instance>) -> Result<Vec<Instance>, PackingError> {
    // Checked up front and in task id order, so the error names the same (first) offender whatever the sort.
    for i in &instances {
        let too_large = |resource: &'static str, requested: f64, max: f64| PackingError::InstanceTooLarge {
            component: topology.components()[i.component].name.clone(),
            resource,
            requested,
            max,
        };
        if i.cpu > max.cpu + CPU_EPSILON {
            return Err(too_large("cpu", i.cpu, max.cpu));
        }
        if i.ram > max.ram {
            return Err(too_large("ram", i.ram as f64, max.ram as f64));
        }
        if i.disk > max.disk {
            return Err(too_large("disk", i.disk as f64, max.disk as f64));
        }
    }
    // Task id last makes the order total, so equal instances keep task id order and the plan is deterministic.
    let cpu_first = topology.config().ffd_sorts_cpu_first()?;
    instances.sort_by(|a, b| {
        let (ram, cpu) = (b.ram.cmp(&a.ram), b.cpu.total_cmp(&a.cpu));
        let resources = if cpu_first { cpu.then(ram) } else { ram.then(cpu) };
        resources.then_with(|| a.task.cmp(&b.task))
    });
    Ok(instances)
}
