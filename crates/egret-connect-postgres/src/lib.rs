//! The PostgreSQL sink for Egret (`docs/connectors.md`): [`PostgresSink`], a bolt writing tuples as rows in batches,
//! idempotent on a key in an upsert table, and exactly once under effectively-once through two-phase commit
//! (`PREPARE TRANSACTION` at the checkpoint, `COMMIT PREPARED` when it is complete). Built on `tokio-postgres` with
//! a current-thread runtime per sink task.

pub mod sink;
pub mod writer;

pub use sink::{PostgresSink, PostgresSinkConfig};
pub use writer::{PostgresSinkError, Row, TableSpec};
