//! What a task knows about itself and its topology.

use std::sync::Arc;

use crate::config::Config;
use crate::fields::Fields;
use crate::ids::TaskId;
use crate::topology::Topology;

/// Given to `Spout::open` and `Bolt::prepare`.
#[derive(Debug, Clone)]
pub struct TopologyContext {
    topology: Arc<Topology>,
    component: usize,
    task: TaskId,
    component_index: u32,
    config: Config,
}

impl TopologyContext {
    pub fn new(topology: Arc<Topology>, task: TaskId) -> Option<Self> {
        let (component, component_index) = topology.task_component(task)?;
        let config = topology.component_config(component);
        Some(TopologyContext {
            topology,
            component,
            task,
            component_index,
            config,
        })
    }

    pub fn topology_name(&self) -> &str {
        self.topology.name()
    }
    pub fn task_id(&self) -> TaskId {
        self.task
    }
    pub fn component_id(&self) -> &str {
        &self.topology.components()[self.component].name
    }
    /// This task's index within its component, 0-based.
    pub fn component_index(&self) -> u32 {
        self.component_index
    }
    pub fn parallelism(&self) -> u32 {
        self.topology.components()[self.component].parallelism
    }
    /// Topology config overlaid with this component's config.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// Task ids of any component (empty if unknown).
    pub fn component_tasks(&self, component: &str) -> Vec<TaskId> {
        self.topology
            .component_index(component)
            .map(|ci| self.topology.tasks_of(ci).collect())
            .unwrap_or_default()
    }
    pub fn output_fields(&self, stream: &str) -> Option<&Fields> {
        self.topology.components()[self.component]
            .output(stream)
            .map(|d| &d.fields)
    }
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }
}
