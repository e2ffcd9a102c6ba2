//! Events the engine emits, and the reporters that render them (terminal bars, plain lines, JSON,
//! the markdown run report).
//!
//! Owns presentation only. It never decides outcomes.
