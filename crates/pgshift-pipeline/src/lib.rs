//! pgshift's stages and their orchestration, in the order data flows:
//!
//! ```text
//! source/   what is read: PostgreSQL (snapshot, chunks) or SQLite (tables), --tables, --cast
//!   |
//! load/     the one load orchestrator: plan -> pre-data + run -> copy (chunk writer) -> post-data
//!   |          embed/ computes vectors on the way (copy), during catch-up, and for reembed
//! catchup/  follow the run's slot: decode, batch, apply exactly once
//!   |
//! verify/   counts and checksums, source vs target
//! cutover/  fence, last changes, sequences, switch; reverse replication and rollback
//!
//! run/      the run store (the only code on the target's pgshift schema), phases,
//!           versioned state migrations, slot/publication/origin names and lifecycle
//! ```
//!
//! `metrics`, `progress`, `workers` and `error` serve every stage.

pub mod catchup;
pub mod cutover;
pub mod embed;
pub mod error;
pub mod load;
pub mod metrics;
pub mod progress;
pub mod run;
pub mod source;
pub mod verify;
pub mod workers;

pub use error::{Error, Result};
