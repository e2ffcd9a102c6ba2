//! `bootstrap`: from bare Talos nodes to two meshed, GitOps-managed Kubernetes clusters.
//!
//! The crate is laid out by the nouns of the domain:
//!
//! - `spec`: plan files and phase files (types, loading, file/line errors)
//! - `render`: templates (minijinja, strict)
//! - `dag`: expansion, the step graph, selection and waves
//! - `lint`: meaning checks on plan and phases
//! - `dryrun`: `bootstrap plan` and `bootstrap graph` output
//! - `engine`: running the graph (dispatcher and executor), gates, confirmation
//! - `exec`: child processes (process groups, timeouts, logs)
//! - `checks`: built-in Kubernetes checks (kube client)
//! - `state`: the journal of what ran, and the lock
//! - `report`: events and their reporters (bars, plain lines, JSON, markdown)
//! - `secrets`: `op://` references and redaction
//! - `lab`: the simulated two-cluster environment and the tool stand-ins
//! - `inspect`: `logs` and `show`, read from the journal and the logs
//! - `color`, `project`, `completion`, `version`: the one colour decision, finding the project root,
//!   shell completions, and what this build is

// User errors carry file, line, field, snippet and help; they are rare and worth their size.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

pub mod checks;
pub mod cli;
pub mod color;
pub mod commands;
pub mod completion;
pub mod dag;
pub mod dryrun;
pub mod engine;
pub mod error;
pub mod exec;
pub mod index;
pub mod inspect;
#[cfg(feature = "lab")]
pub mod lab;
pub mod lint;
pub mod project;
pub mod render;
pub mod report;
pub mod secrets;
pub mod spec;
pub mod state;
pub mod suggest;
pub mod version;
pub mod workspace;
