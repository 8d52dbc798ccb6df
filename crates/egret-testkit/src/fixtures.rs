//! State manager messages for tests: one of each, recognisable by the topology name they are made for, so that a
//! test of any backend can write them and check what it reads back.

use egret_proto::api;
use egret_proto::egret::{
    ContainerPlan, ContainerStatus, ExecutionState, InstancePlan, Location, PackingPlan, PhysicalPlan, ProcessStatus,
    Resource, StmgrInfo,
};

pub fn topology(name: &str) -> api::Topology {
    api::Topology {
        id: format!("{name}-id"),
        name: name.to_string(),
        ..Default::default()
    }
}

pub fn packing_plan(name: &str, containers: i32) -> PackingPlan {
    PackingPlan {
        id: name.to_string(),
        algorithm: "round-robin".into(),
        containers: (1..=containers)
            .map(|id| ContainerPlan {
                id,
                instances: vec![InstancePlan {
                    component: "word".into(),
                    task_id: id,
                    component_index: id - 1,
                    resource: Some(Resource {
                        cpu: 1.0,
                        ram_bytes: 1 << 28,
                        disk_bytes: 1 << 30,
                    }),
                }],
                required: None,
            })
            .collect(),
    }
}

pub fn physical_plan(name: &str) -> PhysicalPlan {
    PhysicalPlan {
        topology: Some(topology(name)),
        stmgrs: vec![StmgrInfo {
            id: "stmgr-1".into(),
            container: 1,
            host: "127.0.0.1".into(),
            data_port: 4000,
            pid: 77,
        }],
        instances: vec![],
        rollback: None,
    }
}

pub fn location(process: &str, container: i32, port: i32) -> Location {
    Location {
        process: process.into(),
        container,
        host: "127.0.0.1".into(),
        port,
        pid: 100 + port,
        http_port: 0,
    }
}

pub fn container_status(container: i32) -> ContainerStatus {
    ContainerStatus {
        container,
        executor_pid: 500 + container,
        processes: vec![ProcessStatus {
            name: format!("stmgr-{container}"),
            container,
            pid: 600 + container,
            state: "running".into(),
            log_file: format!("stmgr-{container}.log"),
            restarts: 0,
            started_ms: 1,
        }],
    }
}

pub fn execution_state(name: &str, cluster: &str) -> ExecutionState {
    ExecutionState {
        topology_name: name.into(),
        topology_id: format!("{name}-id"),
        cluster: cluster.into(),
        submission_time_ms: 1_700_000_000_000,
        submission_user: "egret".into(),
        egret_version: "0.1.0".into(),
        containers: 2,
        ..Default::default()
    }
}
