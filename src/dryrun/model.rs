//! The dry-run view: a serialisable description of everything a run would do. Its JSON form is the
//! documented, stable `bootstrap plan --format json` shape and the input of `run --from-plan`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cli::Selection as SelectionArgs;
use crate::dag::{GateCheck, Selection, Work};
use crate::spec::phase::ActionSpec;
use crate::workspace::Workspace;

use crate::spec::describe::describe_action;

/// Version of the JSON shape. Bumped only on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// What a saved plan was made from. A saved plan whose basis differs from now is stale.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Basis {
    /// sha256 over every phase file (name and text), in order.
    pub phases_fingerprint: String,
    /// sha256 of the plan file's text.
    pub plan_fingerprint: String,
    /// sha256 of the recorded step outcomes (id, outcome, fingerprint).
    pub state_fingerprint: String,
}

pub use crate::state::StepStatus;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Commands {
    pub check: Option<String>,
    pub run: Option<String>,
    pub verify: Option<String>,
}

/// One step (or gate) in execution order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepView {
    pub id: String,
    /// `step` or `gate`.
    pub kind: String,
    /// The phase file's step id it was expanded from.
    pub step: String,
    pub phase: String,
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub description: String,
    pub needs: Vec<String>,
    /// Outside the selection but needed by it.
    pub prerequisite: bool,
    pub status: StepStatus,
    /// 1-based parallel wave.
    pub wave: usize,
    /// Human-readable rendered commands.
    pub commands: Commands,
    /// The structured, rendered definitions.
    pub check: Option<ActionSpec>,
    pub run: Option<ActionSpec>,
    pub verify: Option<ActionSpec>,
    pub timeout: String,
    pub retry: Option<crate::dag::Retry>,
    pub confirm: bool,
    pub stdin: bool,
    /// Serial group: steps of one group never run at the same time.
    #[serde(default)]
    pub serial: Option<String>,
    /// Environment as rendered: secret values appear only as their `op://` references.
    pub env: BTreeMap<String, String>,
    pub fingerprint: String,
    /// For a changed step: each field that differs from the definition it last ran with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<crate::state::definitions::Change>,
    /// `--probe` only: `satisfied`, `will run`, or `depends on earlier steps`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub probe: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateItemView {
    pub id: String,
    pub text: String,
    pub cluster: Option<String>,
    pub check: ActionSpec,
    pub command: String,
    pub timeout: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseView {
    pub id: String,
    pub title: String,
    pub description: String,
    pub needs: Vec<String>,
    pub file: String,
    pub selected: bool,
    pub gate: Vec<GateItemView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub steps: usize,
    pub gates: usize,
    pub prerequisites: usize,
    pub to_run: usize,
    pub done: usize,
    pub changed: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub never_run: usize,
    /// With `--probe`: steps recorded done whose check fails now (the world drifted); a plain run
    /// skips them, `run --refresh` runs them.
    #[serde(default)]
    pub drift: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanRef {
    pub name: String,
    pub file: String,
    pub lab: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectionView {
    pub phases: Vec<String>,
    pub steps: Vec<String>,
}

/// The whole dry run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRun {
    pub format_version: u32,
    pub plan: PlanRef,
    pub phases_dir: String,
    pub state_dir: String,
    pub selection: SelectionView,
    pub basis: Basis,
    pub summary: Summary,
    pub phases: Vec<PhaseView>,
    /// Every step and gate, in execution order.
    pub steps: Vec<StepView>,
    /// Parallel waves: ids that can run together once the waves before them are done.
    pub waves: Vec<Vec<String>>,
}

fn sha(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The basis of a workspace now.
pub fn basis(ws: &Workspace, recorded: &HashMap<String, (StepStatus, String)>) -> Basis {
    let mut phase_parts: Vec<&[u8]> = Vec::new();
    let names: Vec<String> = ws
        .spec
        .phases
        .iter()
        .map(|p| {
            p.file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    for (p, n) in ws.spec.phases.iter().zip(&names) {
        phase_parts.push(n.as_bytes());
        phase_parts.push(p.text.as_bytes());
    }
    let mut rec: Vec<String> = recorded
        .iter()
        .map(|(k, (s, f))| format!("{k}\t{}\t{f}", s.label()))
        .collect();
    rec.sort();
    let joined = rec.join("\n");
    Basis {
        phases_fingerprint: sha(&phase_parts),
        plan_fingerprint: sha(&[ws.spec.plan_text.as_bytes()]),
        state_fingerprint: sha(&[joined.as_bytes()]),
    }
}

fn gate_item_view(i: &GateCheck) -> GateItemView {
    GateItemView {
        id: i.id.clone(),
        text: i.text.clone(),
        cluster: i.cluster.clone(),
        check: i.check.clone(),
        command: describe_action(&i.check),
        timeout: humantime::format_duration(i.timeout).to_string(),
    }
}

/// Build the dry-run view of a selection.
pub fn build(ws: &Workspace, sel: &Selection, args: &SelectionArgs) -> DryRun {
    let recorded = crate::state::recorded_statuses(&ws.spec.plan, &ws.state_dir);
    let status_of = |id: &str, fp: &str| -> StepStatus {
        match recorded.get(id) {
            None => StepStatus::NeverRun,
            Some((StepStatus::Done, old)) if old != fp => StepStatus::Changed,
            Some((s, _)) => *s,
        }
    };
    let waves = ws.dag.waves(&sel.order);
    let mut wave_of: HashMap<usize, usize> = HashMap::new();
    for (w, ids) in waves.iter().enumerate() {
        for &i in ids {
            wave_of.insert(i, w + 1);
        }
    }
    // A step downstream of a changed or never-run step will run too; its own status says why.
    let mut summary = Summary::default();
    let mut steps = Vec::new();
    for &i in &sel.order {
        let w = &ws.dag.work[i];
        let status = status_of(w.id(), w.fingerprint());
        let prerequisite = sel.prerequisites.contains(&i);
        match w {
            Work::Step(_) => summary.steps += 1,
            Work::Gate(_) => summary.gates += 1,
        }
        if prerequisite {
            summary.prerequisites += 1;
        }
        match status {
            StepStatus::NeverRun => summary.never_run += 1,
            StepStatus::Done => summary.done += 1,
            StepStatus::Failed => summary.failed += 1,
            StepStatus::Interrupted => summary.interrupted += 1,
            StepStatus::Changed => summary.changed += 1,
        }
        if status.will_run() {
            summary.to_run += 1;
        }
        let changes = match (status, recorded.get(w.id())) {
            (StepStatus::Changed, Some((_, old_fp))) => {
                match (
                    crate::state::definitions::load(&ws.state_dir, old_fp),
                    serde_json::to_value(w),
                ) {
                    (Some(old), Ok(new)) => crate::state::definitions::diff(&old, &new),
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        let view = match w {
            Work::Step(u) => StepView {
                id: u.id.clone(),
                kind: "step".into(),
                step: u.step.clone(),
                phase: u.phase.clone(),
                cluster: u.cluster.clone(),
                node: u.node.clone(),
                description: u.description.clone(),
                needs: u.needs.clone(),
                prerequisite,
                status,
                wave: wave_of.get(&i).copied().unwrap_or(0),
                commands: Commands {
                    check: u.check.as_deref().map(describe_action),
                    run: Some(describe_action(&u.run)),
                    verify: u.verify.as_deref().map(describe_action),
                },
                check: u.check.as_deref().cloned(),
                run: Some((*u.run).clone()),
                verify: u.verify.as_deref().cloned(),
                timeout: humantime::format_duration(u.timeout).to_string(),
                retry: Some(u.retry.clone()),
                confirm: u.confirm,
                stdin: u.stdin,
                serial: u.serial.clone(),
                env: u.env.clone(),
                fingerprint: u.fingerprint.clone(),
                probe: None,
                changes: changes.clone(),
                file: Some(u.file.display().to_string()),
                line: Some(u.line),
            },
            Work::Gate(g) => StepView {
                id: g.id.clone(),
                kind: "gate".into(),
                step: "gate".into(),
                phase: g.phase.clone(),
                cluster: None,
                node: None,
                description: format!(
                    "Gate of phase {}: {} checklist items",
                    g.phase,
                    g.items.len()
                ),
                needs: g.needs.clone(),
                prerequisite,
                status,
                wave: wave_of.get(&i).copied().unwrap_or(0),
                commands: Commands {
                    check: None,
                    run: None,
                    verify: None,
                },
                check: None,
                run: None,
                verify: None,
                timeout: g
                    .items
                    .iter()
                    .map(|i| i.timeout)
                    .max()
                    .map(|d| humantime::format_duration(d).to_string())
                    .unwrap_or_default(),
                retry: None,
                confirm: false,
                stdin: false,
                serial: None,
                env: BTreeMap::new(),
                fingerprint: g.fingerprint.clone(),
                probe: None,
                changes: changes.clone(),
                file: None,
                line: None,
            },
        };
        steps.push(view);
    }
    let selected_phases: std::collections::HashSet<&str> =
        sel.order.iter().map(|&i| ws.dag.work[i].phase()).collect();
    let phases = ws
        .dag
        .phases
        .iter()
        .filter(|p| selected_phases.contains(p.id.as_str()))
        .map(|p| PhaseView {
            id: p.id.clone(),
            title: p.title.clone(),
            description: p.description.clone(),
            needs: p.needs.clone(),
            file: p.file.display().to_string(),
            selected: sel.selected.iter().any(|&i| ws.dag.work[i].phase() == p.id),
            gate: ws
                .dag
                .work
                .iter()
                .find_map(|w| match w {
                    Work::Gate(g) if g.phase == p.id => {
                        Some(g.items.iter().map(gate_item_view).collect())
                    }
                    _ => None,
                })
                .unwrap_or_default(),
        })
        .collect();
    DryRun {
        format_version: FORMAT_VERSION,
        plan: PlanRef {
            name: ws.spec.plan.name.value.clone(),
            file: ws.spec.plan_file.display().to_string(),
            lab: ws.spec.plan.lab,
        },
        phases_dir: ws
            .spec
            .phases
            .first()
            .and_then(|p| p.file.parent())
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        state_dir: ws.state_dir.display().to_string(),
        selection: SelectionView {
            phases: args.phases.clone(),
            steps: args.steps.clone(),
        },
        basis: basis(ws, &recorded),
        summary,
        phases,
        steps,
        waves: waves
            .iter()
            .map(|w| w.iter().map(|&i| ws.dag.work[i].id().to_string()).collect())
            .collect(),
    }
}
