//! The loaded world a command works on: plan, phases, the built graph and the state directory.
//!
//! Owns resolving the global options (plan file, phase dir, state dir) into a [`Workspace`]. It never
//! runs steps and never writes state.

use std::path::PathBuf;

use crate::cli::Global;
use crate::dag::Dag;
use crate::error::UserErrors;
use crate::spec::{Spec, load_spec};

pub struct Workspace {
    pub spec: Spec,
    pub dag: Dag,
    pub state_dir: PathBuf,
}

impl Workspace {
    /// Load plan and phases and build the graph. Every problem found is returned at once. Commands
    /// load through `lint::load` (which also refuses literal secrets) or `lint::load_checked`.
    pub fn load(global: &Global) -> Result<Workspace, UserErrors> {
        let spec = load_spec(&global.plan, &global.phases)?;
        let state_dir = state_dir_for(global, &spec.plan.name.value);
        let dag = Dag::build(&spec, &state_dir)?;
        Ok(Workspace {
            spec,
            dag,
            state_dir,
        })
    }
}

/// `--state-dir`, or `.bootstrap/<plan name>/` (under the project root when one was found upward).
pub fn state_dir_for(global: &Global, plan_name: &str) -> PathBuf {
    global.state_dir.clone().unwrap_or_else(|| {
        let rel = PathBuf::from(".bootstrap").join(plan_name);
        match &global.root {
            Some(root) => root.join(rel),
            None => rel,
        }
    })
}
