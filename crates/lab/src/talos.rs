//! The Talos machines' state, shared by the `talosctl` stand-in (which changes it) and the
//! simulated kubelets (which register the configured nodes of a bootstrapped cluster). Lives in the
//! lab's `talos.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Seconds a node takes to install after its first config (scaled by the lab speed).
pub const INSTALL_SECONDS: f64 = 0.4;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TalosState {
    pub nodes: BTreeMap<String, NodeState>,
    pub bootstrapped: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub cluster: String,
    /// Identity of the secrets bundle the node's config came from.
    pub secrets_id: String,
    pub machine_type: String,
    pub kubernetes_version: String,
    /// When the config was applied (unix seconds, fractional).
    pub applied_at: f64,
}

pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
