//! The fields-grouping hash and key groups live in `egret_api::key_groups` (keyed state needs them too); the
//! router and older callers use them from here.
pub use egret_api::key_groups::{KEY_GROUPS, fields_hash, key_group, owned_groups, owner, select};
