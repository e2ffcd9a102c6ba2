//! Child processes: each command in its own process group with stdin closed, streamed to a log,
//! killed as a group (TERM, then KILL) on timeout or interruption.
//!
//! Owns spawning and reaping. It never decides retries or records state.
