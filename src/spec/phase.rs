//! Phase files: steps, their checks, actions and gates, as written (templates not yet rendered).
//!
//! Types only. `dag` expands and renders them into concrete [`crate::dag::Unit`]s.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// One phase (one `phases/*.yaml` file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub id: Spanned<String>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Phases whose gates must pass before this phase's steps start.
    #[serde(default)]
    pub needs: Vec<Spanned<String>>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub gate: Vec<GateItem>,
}

/// What a step or gate item is expanded over.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ForEach {
    Cluster,
    Node,
    Controlplane,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// Step ids (this phase or an earlier one). A template step id such as `talos-apply` means every
    /// expansion of it, narrowed to the same cluster (and node) when both sides are expanded.
    #[serde(default)]
    pub needs: Vec<Spanned<String>>,
    #[serde(default)]
    pub for_each: Option<ForEach>,
    /// Passes when the work is already done, so the step is skipped.
    #[serde(default)]
    pub check: Option<Spanned<Box<ActionSpec>>>,
    /// The action.
    pub run: Spanned<Box<ActionSpec>>,
    /// A post-condition that must pass after `run`.
    #[serde(default)]
    pub verify: Option<Spanned<Box<ActionSpec>>>,
    /// e.g. `90s`, `10m`.
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// Destructive or irreversible: ask first (or need `--yes`).
    #[serde(default)]
    pub confirm: bool,
    /// Give the command the terminal's stdin (otherwise stdin is closed).
    #[serde(default)]
    pub stdin: bool,
    /// Steps of the same serial group never run at the same time (for example, steps that merge
    /// into one shared file).
    #[serde(default)]
    pub serial: Option<String>,
    /// Extra environment; values are templates. `op://` references are resolved at run time.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What a change of the step's rendered definition means once it has run: `check` (default:
    /// its check decides), `run` (the action is safe to repeat and runs again), `stop`
    /// (irreversible: the run stops and names it).
    #[serde(default)]
    pub on_change: OnChange,
    /// Runs only when asked for by `--step` (a drill such as deleting a pod): a plain run, a
    /// `--phase` selection and the phase's gate leave it out.
    #[serde(default)]
    pub on_request: bool,
}

/// What a changed definition of a step that already ran means.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// The check runs first and decides (a step without a check runs again).
    #[default]
    Check,
    /// Run the action again even when the check passes (idempotent actions such as
    /// `helm upgrade --install`).
    Run,
    /// Irreversible (secret generation, a Talos install): stop the run and name the step.
    Stop,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Total attempts, including the first.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// First delay; doubles each attempt (with jitter), capped at `max_backoff`.
    #[serde(default = "default_backoff")]
    pub backoff: String,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: String,
    /// Regular expressions matched against a failed attempt's output. A match means transient
    /// (retry); no match means deterministic (fail at once). Empty: every failure is transient.
    #[serde(default)]
    pub transient: Vec<String>,
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> String {
    "2s".into()
}
fn default_max_backoff() -> String {
    "30s".into()
}

/// A check or an action: exactly one key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ActionSpec {
    /// An argv list; never passed through a shell.
    Cmd(Vec<String>),
    /// A shell script, run with `sh -c`. Only where a pipeline is really needed.
    Shell(String),
    /// Built-in Kubernetes check: the expected nodes are registered (or Ready).
    Nodes(NodesCheck),
    /// Built-in Kubernetes check: a Deployment, DaemonSet or StatefulSet has rolled out.
    Rollout(RolloutCheck),
    /// Built-in Kubernetes check: an object has a condition with the given status.
    Condition(ConditionCheck),
    /// Built-in Kubernetes check: an object exists (optionally with labels/annotations).
    Exists(ObjectCheck),
    /// Built-in Kubernetes check: an object does not exist.
    Absent(ObjectCheck),
    /// Built-in Kubernetes check: a CRD is Established.
    Crd(CrdCheck),
    /// Run a command that prints JSON and compare one field (typed, not a match on text).
    Json(JsonCheck),
    /// Built-in Kubernetes check: one field of any object equals a value (or one of several).
    Field(FieldCheck),
    /// Built-in Kubernetes check: Flux Kustomizations are all Ready (root cause on failure).
    Kustomizations(FluxCheck),
    /// Built-in Kubernetes check: Flux HelmReleases are all Ready (root cause on failure).
    Helmreleases(FluxCheck),
    /// Run a command that prints a release's values as JSON (`helm get values -o json`) and compare
    /// them with what a HelmRelease renders (its `valuesFrom`, then its inline values).
    #[serde(rename = "helm_values")]
    HelmValues(HelmValuesCheck),
    /// A checklist item a person verifies (gate items only): what to look at. It is listed in
    /// `plan` and in the run report as manual, never silently dropped and never claimed as checked.
    Manual(String),
    /// Built-in Kubernetes check: a network flow is allowed or denied by the clusters' network
    /// policies, proved by a short-lived probe Pod that carries the source workload's labels.
    Flow(FlowCheck),
}

/// `flow:` check: from a workload (namespace and labels in a cluster) to a Service or to pods
/// (labels) on a port, optionally an HTTP request (L7), expected `allowed` or `denied`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowCheck {
    pub from: FlowFrom,
    pub to: FlowTo,
    /// An HTTP request (L7 rules see it); without it the probe only opens a TCP connection.
    #[serde(default)]
    pub http: Option<FlowHttp>,
    pub expect: FlowExpect,
    /// The probe's image: it needs `curl` (8.3 or later) and `nc` (default nicolaka/netshoot).
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Where a flow starts: the probe Pod runs here with these labels, so policies select it as they
/// select the workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowFrom {
    /// Plan cluster name; defaults to the step's cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Where a flow goes: a Service (by name) or pods (by labels) in `namespace`, on `port`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowTo {
    /// Plan cluster name of the destination; defaults to the source's cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    pub namespace: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub endpoint: Option<BTreeMap<String, String>>,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowHttp {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_method() -> String {
    "GET".into()
}
fn default_path() -> String {
    "/".into()
}

/// What a flow check expects.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FlowExpect {
    Allowed,
    Denied,
}

impl std::fmt::Display for FlowExpect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FlowExpect::Allowed => "allowed",
            FlowExpect::Denied => "denied",
        })
    }
}

impl FlowCheck {
    /// The flow in words: `apps/gitlab {app=webservice} -> infra/databases service pg-rw:5432 GET /api/v4/health`.
    pub fn describe(&self) -> String {
        let labels: Vec<String> = self
            .from
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let to = match (&self.to.service, &self.to.endpoint) {
            (Some(s), _) => format!("service {s}"),
            (None, Some(l)) => format!(
                "pods {{{}}}",
                l.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            (None, None) => "?".into(),
        };
        let http = self
            .http
            .as_ref()
            .map(|h| format!(" {} {}", h.method, h.path))
            .unwrap_or_else(|| " (TCP)".into());
        format!(
            "{}/{} {{{}}} -> {}/{} {to}:{}{http}",
            self.from.cluster.as_deref().unwrap_or("?"),
            self.from.namespace,
            labels.join(","),
            self.to
                .cluster
                .as_deref()
                .or(self.from.cluster.as_deref())
                .unwrap_or("?"),
            self.to.namespace,
            self.to.port
        )
    }
}

/// `field:` check: `field` is a dot path (`status.ceph.health`, `status.conditions.0.type`) of any
/// object, compared as a string with `equals` or one of `one_of`. Where the object has
/// `status.observedGeneration`, it must equal `metadata.generation`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldCheck {
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    pub field: String,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub one_of: Vec<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `kustomizations:` / `helmreleases:` check: every named object (or every object matching
/// `selector`) is Ready. `names` are `name` (in `namespace`) or `namespace/name`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FluxCheck {
    #[serde(default)]
    pub cluster: Option<String>,
    /// Namespace of bare names and of the selector (default `flux-system`; a selector with
    /// namespace `"*"` looks in every namespace).
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub names: Vec<String>,
    /// A label selector, e.g. `bootstrap.dev/phase=storage`.
    #[serde(default)]
    pub selector: Option<String>,
    /// false: existing is enough (they are in the repository and Flux applied them).
    #[serde(default = "yes")]
    pub ready: bool,
    /// Where the plan says these objects are defined in the Git repository (for the message
    /// when one is missing).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

fn yes() -> bool {
    true
}

/// `helm_values:` check: `cmd` prints the deployed values as JSON (`helm get values NAME -o json`);
/// they must equal the effective values of HelmRelease `namespace/name` on `cluster`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HelmValuesCheck {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    pub namespace: String,
    pub name: String,
    /// Compare only the keys the deployed values set (keys the HelmRelease adds later, such as the
    /// mesh CA of week 3, are not a difference).
    #[serde(default)]
    pub deployed_keys_only: bool,
}

/// `json:` check: run `cmd`, parse stdout as JSON (or a stream of JSON documents: the first one),
/// read `field` (dot path, `a.b.0.c`) and compare it with `equals` (compared as strings, so "3"
/// matches 3) or one of `one_of`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonCheck {
    pub cmd: Vec<String>,
    pub field: String,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub one_of: Vec<String>,
}

/// `nodes:` check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodesCheck {
    /// Cluster name (template); defaults to the step's cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Node names expected; defaults to every node of the cluster in the plan.
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// true: every expected node Ready. false: registered is enough (Ready=False is fine).
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolloutCheck {
    #[serde(default)]
    pub cluster: Option<String>,
    /// Deployment, DaemonSet or StatefulSet.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConditionCheck {
    #[serde(default)]
    pub cluster: Option<String>,
    /// e.g. `kustomize.toolkit.fluxcd.io/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type", default = "default_condition")]
    pub condition: String,
    /// Expected status (default "True").
    #[serde(default = "default_status")]
    pub status: String,
    #[serde(default)]
    pub timeout: Option<String>,
}

fn default_condition() -> String {
    "Ready".into()
}
fn default_status() -> String {
    "True".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObjectCheck {
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CrdCheck {
    #[serde(default)]
    pub cluster: Option<String>,
    /// e.g. `kustomizations.kustomize.toolkit.fluxcd.io`.
    pub name: String,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// One item of a phase's validation checklist.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateItem {
    pub id: Spanned<String>,
    /// The checklist's human text.
    pub text: String,
    #[serde(default)]
    pub for_each: Option<ForEach>,
    pub check: Spanned<ActionSpec>,
    /// How long the item may poll or watch before it fails (default 5m).
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

/// Parse a human duration (`90s`, `5m`, `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}
