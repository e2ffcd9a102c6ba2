//! The lab: a simulated two-cluster environment (API servers, simulated controllers, tool stand-ins,
//! faults) that tests and rehearsals run against.
//!
//! Owns everything simulated. It never touches a real machine.

pub mod apiserver;
pub mod core;
pub mod sim;
pub mod tools;

use color_eyre::eyre::eyre;

use crate::cli::{Global, LabCommand};
use crate::error::{Exit, Result};

pub fn lab_command(_g: &Global, _cmd: &LabCommand) -> Result<Exit> {
    Err(eyre!("`bootstrap lab` is not implemented yet"))
}
