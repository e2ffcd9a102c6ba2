//! The commands: one function per `bootstrap` command, the layer the command line calls. Each loads
//! what it needs, wires the engine, the views and the environment (the lab for lab plans, passed
//! in by `main`), and maps the outcome to an exit code. Nothing below this layer imports it.

mod plan;
mod run;
mod state;

pub use plan::{graph_command, plan_command};
pub use run::{
    STATUS_SCHEMA, probe, reset_command, resume_command, run_command, status_command,
    unlock_command,
};
pub use state::state_command;
