//! The record of what ran: a crash-safe journal of every transition, and the run lock.
//!
//! Owns the state directory's files behind one small store interface. It never stores secret values.
