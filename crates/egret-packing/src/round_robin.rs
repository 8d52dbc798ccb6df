//! Round robin: a fixed number of containers (`topology.stmgrs`), tasks dealt to them in turn. Containers end up
//! with task counts that differ by at most one, whatever the tasks request; nothing limits a container's size.
//!
//! A rescale ([`repack`]) keeps every remaining instance where it is and gives each new one to the container with the
//! fewest instances; it never opens a container, since no limit on a container's size ever requires one.
//!
//! Heron sorts components by requested RAM before dealing; Egret deals in task id order (components by name), so
//! the plan follows the task layout every process already derives and is easy to predict from the topology.

use egret_api::{Config, defaults, keys};

use crate::{Instance, PackingError};

/// Groups `instances` (in task id order) into containers 1..=N, the i-th instance into container `i mod N + 1`.
pub(crate) fn pack(config: &Config, instances: Vec<Instance>) -> Result<Vec<Vec<Instance>>, PackingError> {
    let requested = config.get_u64(keys::STMGRS)?.unwrap_or(defaults::STMGRS);
    let count = instances.len() as u64;
    // An empty container would run an idle stmgr; more containers than instances can only be empty ones.
    if requested == 0 || requested > count {
        return Err(PackingError::ContainerCount {
            requested,
            instances: count,
        });
    }
    // `requested` is at most the instance count, which is a `usize`.
    let n = requested as usize;
    let mut containers: Vec<Vec<Instance>> = (0..n).map(|_| Vec::with_capacity(instances.len() / n + 1)).collect();
    for (i, instance) in instances.into_iter().enumerate() {
        containers[i % n].push(instance);
    }
    Ok(containers)
}

/// A rescale: `containers` (by id, ascending) keep what they hold; each of `added` (in task id order) goes to the
/// container holding the fewest instances at that moment, the lowest id on a tie. `next_id` numbers a first
/// container only if there is none at all.
pub(crate) fn repack(
    mut containers: Vec<(u32, Vec<Instance>)>,
    added: Vec<Instance>,
    next_id: u32,
) -> Vec<(u32, Vec<Instance>)> {
    if containers.is_empty() && !added.is_empty() {
        containers.push((next_id, Vec::new()));
    }
    for instance in added {
        // `containers` is not empty here; `min_by_key` keeps the first (lowest id) of equal counts.
        if let Some((_, fewest)) = containers
            .iter_mut()
            .min_by_key(|(id, instances)| (instances.len(), *id))
        {
            fewest.push(instance);
        }
    }
    containers
}
