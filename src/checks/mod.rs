//! Built-in Kubernetes checks: nodes, rollout, condition, exists/absent, crd, field, Flux objects,
//! and network flows (a probe pod, `flow.rs`).
//!
//! Owns evaluating a kube-native [`ActionSpec`] against a cluster with the `kube` client: typed
//! APIs for nodes and workloads, dynamic objects for everything else (Flux, CNPG, …). In wait mode a
//! check is driven by a watch on what it reads, wrapped in its own timeout. It never shells out to
//! kubectl and never decides what to do with the outcome: the engine does.

pub mod field;
pub mod flow;
pub mod flux;
mod rules;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;

use crate::error::Result;
use crate::spec::phase::ActionSpec;
use crate::spec::plan::Plan;

pub use rules::{condition_rule, daemonset_rule, deployment_rule, nodes_rule, statefulset_rule};

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
    /// Not passed, and it cannot come true by itself (a Deployment past its progress deadline, a
    /// Stalled Flux object, a Helm release stuck in pending-upgrade): a wait ends at once.
    pub terminal: bool,
    /// What it saw, e.g. `2/3 nodes Ready; apps-03 NotReady: KubeletNotReady: …`.
    pub detail: String,
}

/// Is this action a built-in Kubernetes check (rather than a command)?
pub fn is_kube(a: &ActionSpec) -> bool {
    !matches!(
        a,
        ActionSpec::Cmd(_)
            | ActionSpec::Shell(_)
            | ActionSpec::Json(_)
            | ActionSpec::HelmValues(_)
            | ActionSpec::Manual(_)
    )
}

/// A check's own `timeout:` as written (kube checks).
pub fn timeout_text(a: &ActionSpec) -> Option<&str> {
    match a {
        ActionSpec::Nodes(c) => c.timeout.as_deref(),
        ActionSpec::Rollout(c) => c.timeout.as_deref(),
        ActionSpec::Condition(c) => c.timeout.as_deref(),
        ActionSpec::Exists(c) | ActionSpec::Absent(c) => c.timeout.as_deref(),
        ActionSpec::Crd(c) => c.timeout.as_deref(),
        ActionSpec::Flow(c) => c.timeout.as_deref(),
        _ => None,
    }
}

/// A check's own `timeout:` (kube checks), which bounds that part of a step.
pub fn own_timeout(a: &ActionSpec) -> Option<Duration> {
    crate::spec::phase::parse_duration(timeout_text(a)?).ok()
}

/// Kube clients for the plan's clusters, built from the kubeconfig (which a step may write mid-run).
pub struct Clusters {
    pub kubeconfig: PathBuf,
    /// cluster name -> kube context name
    pub contexts: std::collections::BTreeMap<String, String>,
    /// cluster name -> expected node names
    pub nodes: std::collections::BTreeMap<String, Vec<String>>,
}

/// How long a wait tolerates a kubeconfig that does not exist before it fails.
const MISSING_KUBECONFIG_GRACE: Duration = Duration::from_secs(10);

impl Clusters {
    pub fn new(plan: &Plan, kubeconfig: PathBuf) -> Self {
        let contexts = plan
            .clusters
            .iter()
            .map(|c| (c.name.value.clone(), c.context.clone()))
            .collect();
        let nodes = plan
            .clusters
            .iter()
            .map(|c| {
                (
                    c.name.value.clone(),
                    c.nodes.iter().map(|n| n.name.value.clone()).collect(),
                )
            })
            .collect();
        Clusters {
            kubeconfig,
            contexts,
            nodes,
        }
    }

    async fn client(&self, cluster: &str) -> Result<kube::Client> {
        let context = self
            .contexts
            .get(cluster)
            .ok_or_else(|| color_eyre::eyre::eyre!("no cluster named {cluster:?} in the plan"))?;
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).map_err(|e| {
            color_eyre::eyre::eyre!("cannot read kubeconfig {}: {e}", self.kubeconfig.display())
        })?;
        let opts = kube::config::KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| color_eyre::eyre::eyre!("kube context {context:?}: {e}"))?;
        Ok(kube::Client::try_from(cfg)?)
    }

    fn cluster_of(check: &ActionSpec) -> Option<&str> {
        match check {
            ActionSpec::Nodes(c) => c.cluster.as_deref(),
            ActionSpec::Rollout(c) => c.cluster.as_deref(),
            ActionSpec::Condition(c) => c.cluster.as_deref(),
            ActionSpec::Exists(c) | ActionSpec::Absent(c) => c.cluster.as_deref(),
            ActionSpec::Crd(c) => c.cluster.as_deref(),
            ActionSpec::Field(c) => c.cluster.as_deref(),
            ActionSpec::Kustomizations(c) | ActionSpec::Helmreleases(c) => c.cluster.as_deref(),
            ActionSpec::Flow(c) => c.from.cluster.as_deref(),
            _ => None,
        }
    }

    /// Evaluate a built-in check.
    pub async fn evaluate(&self, check: &ActionSpec, mode: Mode) -> Result<Outcome> {
        self.evaluate_progress(check, mode, None).await
    }

    /// Evaluate a built-in check; in wait mode, what it last saw is kept in `progress` (for
    /// heartbeats).
    pub async fn evaluate_progress(
        &self,
        check: &ActionSpec,
        mode: Mode,
        progress: Option<&std::sync::Mutex<String>>,
    ) -> Result<Outcome> {
        if let ActionSpec::Flow(f) = check {
            return flow::evaluate(self, f, mode, progress).await;
        }
        let cluster = Self::cluster_of(check)
            .ok_or_else(|| {
                color_eyre::eyre::eyre!("not a Kubernetes check, or it names no cluster")
            })?
            .to_string();
        match mode {
            Mode::Once => {
                let client = self.client(&cluster).await?;
                evaluate_with(&client, check, &self.expected(&cluster, check)).await
            }
            Mode::Wait(timeout) => {
                let mut last = Outcome {
                    passed: false,
                    terminal: false,
                    detail: "no answer from the cluster yet".into(),
                };
                let note = |o: &Outcome| {
                    if let Some(p) = progress
                        && let Ok(mut p) = p.lock()
                    {
                        p.clone_from(&o.detail);
                    }
                };
                let mut missing_since: Option<std::time::Instant> = None;
                let run = async {
                    loop {
                        match self.client(&cluster).await {
                            Ok(client) => {
                                // Re-evaluate on every change to what the check reads (and at least
                                // every few seconds, in case a watch is not possible yet).
                                match evaluate_with(&client, check, &self.expected(&cluster, check))
                                    .await
                                {
                                    Ok(o) if o.passed || o.terminal => return o,
                                    Ok(o) => {
                                        note(&o);
                                        last = o
                                    }
                                    Err(e) => {
                                        last = Outcome {
                                            passed: false,
                                            terminal: false,
                                            detail: format!("{e:#}"),
                                        };
                                        note(&last);
                                    }
                                }
                                let ar = watched_resource(check);
                                let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                                let mut stream = watcher(api, watcher::Config::default()).boxed();
                                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                                    let mut n = 0;
                                    while let Some(ev) = stream.next().await {
                                        if matches!(
                                            ev,
                                            Ok(watcher::Event::Apply(_)
                                                | watcher::Event::Delete(_)
                                                | watcher::Event::InitDone)
                                        ) {
                                            n += 1;
                                            if n > 1 {
                                                break;
                                            }
                                        }
                                        if ev.is_err() {
                                            break;
                                        }
                                    }
                                })
                                .await;
                            }
                            Err(e) => {
                                // A kubeconfig that does not exist is not something waiting
                                // fixes (beyond a moment for a step writing it): say so at once.
                                if !self.kubeconfig.exists()
                                    && missing_since
                                        .get_or_insert_with(std::time::Instant::now)
                                        .elapsed()
                                        >= MISSING_KUBECONFIG_GRACE
                                {
                                    return Outcome {
                                        passed: false,
                                        terminal: true,
                                        detail: format!(
                                            "{e:#}: the kubeconfig {} does not exist on this machine (the step that merges the cluster's context writes it; `bootstrap run --refresh` asks that step's check again)",
                                            self.kubeconfig.display()
                                        ),
                                    };
                                }
                                last = Outcome {
                                    passed: false,
                                    terminal: false,
                                    detail: format!("{e:#}"),
                                };
                                note(&last);
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                };
                match tokio::time::timeout(timeout, run).await {
                    Ok(o) => Ok(o),
                    Err(_) => Ok(Outcome {
                        passed: false,
                        terminal: false,
                        detail: format!(
                            "timed out after {}: {}",
                            humantime::format_duration(timeout),
                            last.detail
                        ),
                    }),
                }
            }
        }
    }

    fn expected(&self, cluster: &str, check: &ActionSpec) -> Vec<String> {
        match check {
            ActionSpec::Nodes(n) => n
                .names
                .clone()
                .unwrap_or_else(|| self.nodes.get(cluster).cloned().unwrap_or_default()),
            _ => Vec::new(),
        }
    }
}

/// Dispatch to the rule of each check kind.
async fn evaluate_with(
    client: &kube::Client,
    check: &ActionSpec,
    expected_nodes: &[String],
) -> Result<Outcome> {
    match check {
        ActionSpec::Field(c) => field::evaluate(client, c).await,
        ActionSpec::Kustomizations(c) => {
            flux::evaluate(client, flux::FluxKind::Kustomization, c).await
        }
        ActionSpec::Helmreleases(c) => flux::evaluate(client, flux::FluxKind::HelmRelease, c).await,
        other => rules::evaluate(client, other, expected_nodes).await,
    }
}

/// What a check reads, for its watch.
fn watched_resource(check: &ActionSpec) -> ApiResource {
    let gvk = |api: &str, kind: &str| {
        let (g, v) = api.split_once('/').unwrap_or(("", api));
        ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, kind))
    };
    match check {
        ActionSpec::Nodes(_) => gvk("v1", "Node"),
        ActionSpec::Rollout(r) => gvk("apps/v1", &r.kind),
        ActionSpec::Condition(c) => gvk(&c.api_version, &c.kind),
        ActionSpec::Exists(c) | ActionSpec::Absent(c) => gvk(&c.api_version, &c.kind),
        ActionSpec::Field(c) => gvk(&c.api_version, &c.kind),
        ActionSpec::Kustomizations(_) => flux::FluxKind::Kustomization.resource(),
        ActionSpec::Helmreleases(_) => flux::FluxKind::HelmRelease.resource(),
        _ => gvk("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    }
}
