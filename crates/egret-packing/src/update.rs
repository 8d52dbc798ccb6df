//! A rescale, computed: what `egret update <cluster> <topology> --component-parallelism NAME:N ...` asks the
//! tmanager to run, and how far a running topology has got to it. Pure: the caller reads the stored definition,
//! packing plan and physical plan and sends the message; nothing here talks to the state manager or the tmanager, so
//! the CLI, the tests and the bench compute the same update.
//!
//! The new topology is [`Topology::rescaled`] (remaining tasks keep their ids), its packing plan is
//! [`crate::repack`] (remaining instances keep their containers), and its definition is the stored one with only each
//! component's parallelism and task ids rewritten, so that everything else in it (config values serialized by
//! Python, custom grouping objects) reaches the tmanager byte for byte.

use std::collections::BTreeSet;
use std::fmt;

use egret_api::{RescaleError, Topology, keys};
use egret_proto::api;
use egret_proto::defn::{self, DefnError, TASK_IDS_KEY};
use egret_proto::egret::{PackingPlan, PhysicalPlan, UpdateTopology};

use crate::{PackingError, repack};

/// Why a rescale cannot be planned. Each variant names the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{0:?} is not NAME:N (a component and its new parallelism, e.g. count:4)")]
    Syntax(String),
    #[error("component {0:?} is given more than once")]
    Repeated(String),
    #[error("no component to rescale: give at least one --component-parallelism NAME:N")]
    Empty,
    #[error("the stored definition cannot be read: {0}")]
    Definition(#[from] DefnError),
    #[error(transparent)]
    Rescale(#[from] RescaleError),
    #[error("nothing to change: {0}")]
    NoChange(String),
    #[error(transparent)]
    Packing(#[from] PackingError),
}

/// Parses one `--component-parallelism` value, `NAME:N` (the last colon separates them).
pub fn parse_change(s: &str) -> Result<(String, u32), UpdateError> {
    s.rsplit_once(':')
        .filter(|(name, _)| !name.is_empty())
        .and_then(|(name, n)| Some((name.to_string(), n.trim().parse::<u32>().ok()?)))
        .ok_or_else(|| UpdateError::Syntax(s.to_string()))
}

/// One component whose parallelism changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub component: String,
    pub from: u32,
    pub to: u32,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}→{}", self.component, self.from, self.to)
    }
}

/// A planned rescale.
#[derive(Debug, Clone)]
pub struct Update {
    /// The id of the running definition (what the tmanager checks the request against).
    pub topology_id: String,
    /// The topology as it runs now, and after the rescale.
    pub old: Topology,
    pub new: Topology,
    /// The components whose parallelism changes, in the order given.
    pub changes: Vec<Change>,
    /// The packing plan now, and after the rescale.
    pub current: PackingPlan,
    pub plan: PackingPlan,
    /// The stored definition with the new parallelism and task ids (its state is the stored one; see
    /// [`Update::message`]).
    pub definition: api::Topology,
}

/// Plans the rescale of the topology stored as `definition`, placed by `current`, that gives each named component
/// its new parallelism. Refuses a component named twice, an unknown component, a parallelism of 0 and a rescale
/// that changes nothing.
pub fn plan_update(
    definition: &api::Topology,
    current: &PackingPlan,
    changes: &[(String, u32)],
) -> Result<Update, UpdateError> {
    if changes.is_empty() {
        return Err(UpdateError::Empty);
    }
    let mut seen = BTreeSet::new();
    if let Some((name, _)) = changes.iter().find(|(name, _)| !seen.insert(name)) {
        return Err(UpdateError::Repeated(name.clone()));
    }
    let old = defn::from_definition(definition)?.topology;
    let new = old.rescaled(changes)?;
    let changed: Vec<Change> = changes
        .iter()
        .filter_map(|(name, to)| {
            let from = old.component(name)?.parallelism;
            (from != *to).then(|| Change {
                component: name.clone(),
                from,
                to: *to,
            })
        })
        .collect();
    if changed.is_empty() {
        let same: Vec<String> = changes
            .iter()
            .map(|(name, n)| format!("{name} already has parallelism {n}"))
            .collect();
        return Err(UpdateError::NoChange(same.join(", ")));
    }
    let plan = repack(current, &old, &new)?;
    let definition = rescaled_definition(definition, &new)?;
    Ok(Update {
        topology_id: definition.id.clone(),
        old,
        new,
        changes: changed,
        current: current.clone(),
        plan,
        definition,
    })
}

/// `stored` with each component's parallelism and task ids those of `new`; nothing else changes.
fn rescaled_definition(stored: &api::Topology, new: &Topology) -> Result<api::Topology, UpdateError> {
    let mut d = stored.clone();
    let task_ids = new.task_ids();
    let derived = new.has_derived_task_ids();
    let components = d
        .spouts
        .iter_mut()
        .map(|s| &mut s.comp)
        .chain(d.bolts.iter_mut().map(|b| &mut b.comp));
    for comp in components {
        let ci = new
            .component_index(&comp.name)
            .ok_or_else(|| RescaleError::UnknownComponent(comp.name.clone()))?;
        let config = &mut comp.config;
        let ids: Vec<String> = task_ids[ci].iter().map(u32::to_string).collect();
        set(config, keys::COMPONENT_PARALLELISM, Some(ids.len().to_string()));
        set(config, TASK_IDS_KEY, (!derived).then(|| ids.join(",")));
    }
    // The tmanager reads the definition back with `from_definition`: check here that it gives the new layout.
    let back = defn::from_definition(&d)?.topology;
    if back.task_ids() != task_ids {
        return Err(RescaleError::Layout(format!(
            "the rewritten definition reads back as task ids {:?}, not {task_ids:?}",
            back.task_ids()
        ))
        .into());
    }
    Ok(d)
}

/// Sets `key` to the string `value` in a definition's config (removes it for `None`), where it first was or at the
/// end; a key listed more than once ends up listed once.
fn set(config: &mut api::Config, key: &str, value: Option<String>) {
    let at = config.kvs.iter().position(|kv| kv.key == key);
    // Entries before the first `key` are untouched, so `at` is still its place.
    config.kvs.retain(|kv| kv.key != key);
    if let Some(v) = value {
        let kv = api::config::KeyValue {
            key: key.to_string(),
            value: Some(v),
            serialized_value: None,
            r#type: Some(api::ConfigValueType::StringValue as i32),
        };
        config.kvs.insert(at.unwrap_or(config.kvs.len()), kv);
    }
}

impl Update {
    /// What `egret update` sends the tmanager: the rescaled definition, in `state` (the topology's activation now,
    /// which the rescale does not change), and the new packing plan.
    pub fn message(&self, state: api::TopologyState) -> UpdateTopology {
        let mut topology = self.definition.clone();
        topology.state = state as i32;
        UpdateTopology {
            topology_id: self.topology_id.clone(),
            topology: Some(topology),
            packing_plan: Some(self.plan.clone()),
        }
    }

    /// The changes, as `count 2→5, split 3→1`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self.changes.iter().map(Change::to_string).collect();
        parts.join(", ")
    }

    /// Task ids the rescale adds, ascending.
    pub fn added_tasks(&self) -> Vec<u32> {
        let old = task_set(&self.old);
        task_set(&self.new).difference(&old).copied().collect()
    }

    /// Task ids the rescale removes, ascending.
    pub fn removed_tasks(&self) -> Vec<u32> {
        let new = task_set(&self.new);
        task_set(&self.old).difference(&new).copied().collect()
    }

    /// How far the topology whose physical plan is `physical` has got to this rescale.
    pub fn progress(&self, physical: Option<&PhysicalPlan>) -> Progress {
        let layout = physical
            .and_then(|p| p.topology.as_ref())
            .and_then(|t| defn::from_definition(t).ok())
            .map(|d| d.topology.task_ids());
        let running: BTreeSet<i32> = physical
            .map(|p| p.instances.iter().map(|i| i.task_id).collect())
            .unwrap_or_default();
        let wanted: BTreeSet<i32> = self
            .plan
            .containers
            .iter()
            .flat_map(|c| c.instances.iter().map(|i| i.task_id))
            .collect();
        Progress {
            new_layout: layout.as_ref() == Some(&self.new.task_ids()),
            missing: wanted.difference(&running).map(|&t| t as u32).collect(),
            leaving: running.difference(&wanted).map(|&t| t as u32).collect(),
        }
    }
}

fn task_set(t: &Topology) -> BTreeSet<u32> {
    t.tasks().map(|(task, _, _)| task.0).collect()
}

/// Where a running topology is on the way to a rescale ([`Update::progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Whether the physical plan's topology has the new task ids.
    pub new_layout: bool,
    /// Tasks of the new packing plan the physical plan does not have yet.
    pub missing: Vec<u32>,
    /// Tasks the physical plan still has that the new packing plan does not (informational: the rescale is done once
    /// the new tasks run under the new layout).
    pub leaving: Vec<u32>,
}

impl Progress {
    /// The physical plan has the new layout and every task of the new packing plan.
    pub fn done(&self) -> bool {
        self.new_layout && self.missing.is_empty()
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.new_layout {
            parts.push("the physical plan does not have the new task layout yet".to_string());
        }
        if !self.missing.is_empty() {
            parts.push(format!("task(s) {:?} not in the physical plan yet", self.missing));
        }
        if !self.leaving.is_empty() {
            parts.push(format!("task(s) {:?} still in it", self.leaving));
        }
        if parts.is_empty() {
            f.write_str("done")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::word_count;
    use crate::{Algorithm, pack};
    use egret_api::Config;
    use egret_proto::egret::InstanceInfo;

    /// The stored definition and packing plan of a word count with `counts` counters over 2 round-robin containers.
    fn stored(counts: u32) -> (api::Topology, PackingPlan) {
        let t = word_count(counts, Config::new().with(keys::STMGRS, 2));
        let d = defn::to_definition(&t, "wc-1", api::TopologyState::Running);
        (d, pack(&t, Algorithm::RoundRobin).unwrap())
    }

    fn change(s: &str) -> (String, u32) {
        parse_change(s).unwrap()
    }

    #[test]
    fn component_parallelism_values_parse() {
        let check = |s: &str, expect: Option<(&str, u32)>| {
            assert_eq!(parse_change(s).ok(), expect.map(|(n, p)| (n.to_string(), p)), "{s:?}")
        };
        check("count:5", Some(("count", 5)));
        check("count:0", Some(("count", 0)));
        check("ns:count:2", Some(("ns:count", 2)));
        for bad in ["count", "count:", ":3", "count:-1", "count:x", "count=3", ""] {
            check(bad, None);
        }
        let e = parse_change("count=3").unwrap_err().to_string();
        assert!(e.contains("\"count=3\" is not NAME:N"), "{e}");
    }

    #[test]
    fn rescale_plans_the_new_topology_plan_and_definition() {
        let (mut d, plan) = stored(2);
        // A value only Python can read must reach the tmanager untouched.
        let pickled = api::config::KeyValue {
            key: "user.pickled".into(),
            value: None,
            serialized_value: Some(vec![0x80, 4, 0x95]),
            r#type: Some(api::ConfigValueType::PythonSerializedValue as i32),
        };
        let count = d.bolts.iter_mut().find(|b| b.comp.name == "count").unwrap();
        count.comp.config.kvs.push(pickled.clone());

        let u = plan_update(&d, &plan, &[change("count:5"), change("split:2")]).unwrap();
        assert_eq!(u.topology_id, "wc-1");
        assert_eq!(
            u.changes,
            vec![Change {
                component: "count".into(),
                from: 2,
                to: 5
            }]
        );
        assert_eq!(u.summary(), "count 2→5");
        // count 1-2, sentence 3, split 4-5: count gets 6, 7, 8.
        assert_eq!(u.new.task_ids(), vec![vec![1, 2, 6, 7, 8], vec![3], vec![4, 5]]);
        assert_eq!((u.added_tasks(), u.removed_tasks()), (vec![6, 7, 8], vec![]));
        assert_eq!(u.plan, repack(&plan, &u.old, &u.new).unwrap());

        let back = defn::from_definition(&u.definition).unwrap();
        assert_eq!(back.topology.task_ids(), u.new.task_ids());
        assert_eq!(back.id, "wc-1");
        let count = u.definition.bolts.iter().find(|b| b.comp.name == "count").unwrap();
        assert!(count.comp.config.kvs.contains(&pickled));
        assert_eq!(
            count
                .comp
                .config
                .kvs
                .iter()
                .filter(|kv| kv.key == keys::COMPONENT_PARALLELISM)
                .map(|kv| kv.value.as_deref())
                .collect::<Vec<_>>(),
            vec![Some("5")]
        );

        let m = u.message(api::TopologyState::Paused);
        assert_eq!(m.topology_id, "wc-1");
        assert_eq!(
            m.topology.as_ref().map(|t| t.state),
            Some(api::TopologyState::Paused as i32)
        );
        assert_eq!(m.packing_plan.as_ref(), Some(&u.plan));

        // And back down to 1: the stored definition now carries task ids; the derived layout carries none again.
        let (d5, plan5) = (u.definition.clone(), u.plan.clone());
        let u1 = plan_update(&d5, &plan5, &[change("count:1")]).unwrap();
        assert_eq!(u1.new.task_ids(), vec![vec![1], vec![3], vec![4, 5]]);
        assert_eq!(u1.removed_tasks(), vec![2, 6, 7, 8]);
        assert_eq!(u1.summary(), "count 5→1");
        let back = defn::from_definition(&u1.definition).unwrap();
        assert_eq!(back.topology.task_ids(), u1.new.task_ids());
    }

    #[test]
    fn rescale_refusals_name_the_problem() {
        let (d, plan) = stored(2);
        let err = |changes: &[&str]| {
            let changes: Vec<(String, u32)> = changes.iter().map(|c| change(c)).collect();
            plan_update(&d, &plan, &changes).unwrap_err().to_string()
        };
        assert_eq!(err(&["nope:3"]), "the topology has no component \"nope\"");
        assert_eq!(err(&["count:0"]), "component \"count\" cannot have parallelism 0");
        assert_eq!(
            err(&["count:3", "count:4"]),
            "component \"count\" is given more than once"
        );
        assert_eq!(
            err(&["count:2", "split:2"]),
            "nothing to change: count already has parallelism 2, split already has parallelism 2"
        );
        assert!(matches!(plan_update(&d, &plan, &[]), Err(UpdateError::Empty)));
        let mut other = plan.clone();
        other.algorithm = "test".into();
        let e = plan_update(&d, &other, &[change("count:3")]).unwrap_err().to_string();
        assert!(e.contains("unknown packing algorithm \"test\""), "{e}");
    }

    #[test]
    fn rescale_progress_follows_the_physical_plan() {
        let (d, plan) = stored(2);
        let u = plan_update(&d, &plan, &[change("count:3")]).unwrap();
        let physical = |definition: &api::Topology, tasks: &[i32]| PhysicalPlan {
            topology: Some(definition.clone()),
            instances: tasks
                .iter()
                .map(|&task_id| InstanceInfo {
                    task_id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let p = u.progress(None);
        assert!(!p.done());
        assert_eq!(p.missing, vec![1, 2, 3, 4, 5, 6]);
        // Before: the old layout and tasks.
        let p = u.progress(Some(&physical(&d, &[1, 2, 3, 4, 5])));
        assert_eq!((p.new_layout, p.missing.clone()), (false, vec![6]));
        assert_eq!(
            p.to_string(),
            "the physical plan does not have the new task layout yet; task(s) [6] not in the physical plan yet"
        );
        // The new layout, task 6 not registered yet.
        let p = u.progress(Some(&physical(&u.definition, &[1, 2, 3, 4, 5])));
        assert_eq!((p.new_layout, p.done()), (true, false));
        let p = u.progress(Some(&physical(&u.definition, &[1, 2, 3, 4, 5, 6])));
        assert!(p.done(), "{p}");
        assert_eq!(p.to_string(), "done");
    }
}
