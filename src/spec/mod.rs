//! The two input formats, plan files and phase files: their types and how they are read.
//!
//! Owns parsing and per-file validation with file/line diagnostics. It never renders templates
//! (see `render`) and never builds the graph (see `dag`).

pub mod describe;
pub mod load;
pub mod phase;
pub mod plan;

pub use load::{Spec, load_phases, load_plan, load_spec};
pub use phase::{ActionSpec, ForEach, GateItem, Phase, RetrySpec, Step};
pub use plan::{Cluster, Node, Plan, Role};
