//! Retention and immutable tags: which tags a repository keeps, and which may never move.
//!
//! The rules (`[[retention]]`, `[[immutable]]`) and the decision over one repository's tags are
//! pure, so the dry run, the real pass and the web UI agree by construction; the pass that acts on
//! them runs inside GC (`lifecycle::retention`), and pull times come from every node's records.

pub mod glob;
pub mod plan;
pub mod rules;

pub use plan::{RepoPlan, TagDecision, TagFacts, Why};
pub use rules::{Immutable, ImmutableRule, Retention, RetentionRule, Rules};
