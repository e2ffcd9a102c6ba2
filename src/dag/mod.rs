//! The step graph: `for_each` expansion, rendering, `needs` and phase-order edges, selection, waves.
//!
//! Owns turning a loaded [`Spec`] into concrete [`Unit`]s (steps and phase gates) in a petgraph
//! DAG, and rejecting cycles, unknown or duplicate ids and backwards phase references. It never runs
//! anything and never reads state. Split by what each part owns: `expand` (expansion, rendering and
//! the edges: `Dag::build`), `graph` (cycles, topological order, waves, descendants) and `select`
//! (`--phase`/`--step` selection, did-you-mean); this file holds the types.

mod expand;
mod graph;
mod select;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{UserError, UserErrors};
use crate::render::{self, Ctx, Renderer};
use crate::spec::load::{PhaseFile, Spec};
use crate::spec::phase::{ActionSpec, ForEach, parse_duration};
use crate::spec::plan::Role;

/// Default step timeout when a step does not set one.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// Default gate-item timeout.
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(300);

/// Retry policy of a concrete step.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Retry {
    pub attempts: u32,
    #[serde(with = "duration_str")]
    pub backoff: Duration,
    #[serde(with = "duration_str")]
    pub max_backoff: Duration,
    /// Regexes: a failed attempt whose output matches one is transient.
    pub transient: Vec<String>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 1,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(30),
            transient: Vec::new(),
        }
    }
}

/// A concrete, rendered step.
#[derive(Debug, Clone, Serialize)]
pub struct Unit {
    /// Readable id, e.g. `talos-apply/infra/infra-01`.
    pub id: String,
    /// The phase file's step id it was expanded from, e.g. `talos-apply`.
    pub step: String,
    pub phase: String,
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub description: String,
    /// Concrete ids this unit needs (steps and gates).
    pub needs: Vec<String>,
    pub check: Option<Box<ActionSpec>>,
    pub run: Box<ActionSpec>,
    pub verify: Option<Box<ActionSpec>>,
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    pub retry: Retry,
    pub confirm: bool,
    pub stdin: bool,
    /// Serial group: units of one group never run at the same time.
    pub serial: Option<String>,
    /// What a change of this step's definition means once it has run.
    pub on_change: crate::spec::phase::OnChange,
    /// Runs only when selected by `--step`; never by a plain run, `--phase` or the gate.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub on_request: bool,
    /// Rendered environment; values may be `op://` references (resolved at run time).
    pub env: BTreeMap<String, String>,
    /// sha256 of the rendered definition.
    pub fingerprint: String,
    pub file: PathBuf,
    pub line: u64,
}

/// One concrete gate item.
#[derive(Debug, Clone, Serialize)]
pub struct GateCheck {
    /// e.g. `nodes-ready/infra`.
    pub id: String,
    pub text: String,
    pub cluster: Option<String>,
    pub check: ActionSpec,
    #[serde(with = "duration_str")]
    pub timeout: Duration,
}

/// A phase's gate: passes when every item passes.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    /// `gate/<phase>`.
    pub id: String,
    pub phase: String,
    pub items: Vec<GateCheck>,
    pub needs: Vec<String>,
    pub fingerprint: String,
}

/// A node of the graph.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Work {
    Step(Unit),
    Gate(Gate),
}

impl Work {
    pub fn id(&self) -> &str {
        match self {
            Work::Step(u) => &u.id,
            Work::Gate(g) => &g.id,
        }
    }
    pub fn phase(&self) -> &str {
        match self {
            Work::Step(u) => &u.phase,
            Work::Gate(g) => &g.phase,
        }
    }
    pub fn needs(&self) -> &[String] {
        match self {
            Work::Step(u) => &u.needs,
            Work::Gate(g) => &g.needs,
        }
    }
    pub fn fingerprint(&self) -> &str {
        match self {
            Work::Step(u) => &u.fingerprint,
            Work::Gate(g) => &g.fingerprint,
        }
    }
    pub fn as_step(&self) -> Option<&Unit> {
        match self {
            Work::Step(u) => Some(u),
            Work::Gate(_) => None,
        }
    }
}

/// Summary of a phase, in file order.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseInfo {
    pub id: String,
    pub title: String,
    pub description: String,
    pub needs: Vec<String>,
    pub file: PathBuf,
}

/// The whole expanded graph.
#[derive(Debug, Clone)]
pub struct Dag {
    pub work: Vec<Work>,
    pub graph: DiGraph<usize, ()>,
    pub index: HashMap<String, NodeIndex>,
    pub phases: Vec<PhaseInfo>,
}

/// The part of the graph a command works on.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Work indices in execution order: selected plus prerequisites.
    pub order: Vec<usize>,
    pub selected: HashSet<usize>,
    /// Outside the selection, but needed by it.
    pub prerequisites: HashSet<usize>,
}

/// sha256 of a rendered definition, over its meaning: the state directory (however it was spelt,
/// or wherever it was moved) counts as one placeholder, and each path the plan names relatively as
/// the way from the plan's directory (`render::path_placeholders`), so only a real change marks a
/// step changed, wherever the run was started from.
fn fingerprint<T: Serialize>(v: &T, placeholders: &[(String, String)]) -> String {
    let mut text = serde_json::to_string(v).unwrap_or_default();
    for (path, placeholder) in placeholders {
        if text.contains(path.as_str()) {
            text = text.replace(path.as_str(), placeholder);
        }
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The state directory as an absolute path without `.` or `..` parts (it need not exist yet), so
/// commands get one spelling of it whatever the user typed.
pub fn absolute_dir(dir: &Path) -> PathBuf {
    crate::spec::plan::absolute(dir)
}

impl Dag {
    pub fn get(&self, id: &str) -> Option<&Work> {
        self.index.get(id).map(|n| &self.work[self.graph[*n]])
    }
}

/// Durations serialise as humantime strings ("5m").
pub mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}
