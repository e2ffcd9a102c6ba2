//! Built-in Kubernetes checks: nodes, rollout, condition, exists/absent, crd.
//!
//! Owns evaluating a kube-native [`ActionSpec`] against a cluster with the `kube` client (typed APIs,
//! dynamic objects for CRDs, watches wrapped in timeouts). It never shells out to kubectl and never
//! decides what to do with the outcome: the engine does.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;
use crate::spec::phase::ActionSpec;
use crate::spec::plan::Plan;

/// How a check is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Look once (a step's `check`: is the work already done?).
    Once,
    /// Watch until it passes or the deadline passes (verify, gate items, wait steps).
    Wait(Duration),
}

/// What a check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub passed: bool,
    /// What it saw, e.g. `2/3 nodes Ready; apps-03 NotReady: KubeletNotReady: …`.
    pub detail: String,
}

/// Is this action a built-in Kubernetes check (rather than a command)?
pub fn is_kube(a: &ActionSpec) -> bool {
    !matches!(
        a,
        ActionSpec::Cmd(_) | ActionSpec::Shell(_) | ActionSpec::Json(_)
    )
}

/// Kube clients for the plan's clusters, built lazily from the kubeconfig (which a step may write).
pub struct Clusters {
    pub kubeconfig: PathBuf,
    /// cluster name -> kube context name
    pub contexts: std::collections::BTreeMap<String, String>,
}

impl Clusters {
    pub fn new(plan: &Plan, kubeconfig: PathBuf) -> Self {
        let contexts = plan
            .clusters
            .iter()
            .map(|c| (c.name.value.clone(), c.context.clone()))
            .collect();
        Clusters {
            kubeconfig,
            contexts,
        }
    }

    /// Evaluate a built-in check.
    pub async fn evaluate(&self, check: &ActionSpec, mode: Mode) -> Result<Outcome> {
        let _ = (check, mode);
        Err(color_eyre::eyre::eyre!(
            "built-in Kubernetes checks are not implemented yet"
        ))
    }
}
