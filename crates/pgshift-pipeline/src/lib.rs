//! pgshift's stages and their orchestration, in the order data flows:
//!
//! ```text
//! source/   what is read: PostgreSQL (snapshot, chunks) or SQLite (tables); preflight, --cast checks
//!   |
//! load/     the one load orchestrator: plan -> pre-data + run -> copy (chunk writer) -> post-data
//!   |          embed/ computes vectors on the way (copy), during catch-up, and for reembed
//! catchup/  follow the run's slot: decode, batch, apply exactly once
//!   |
//! verify/   counts and checksums, source vs target
//! cutover/  fence, last changes, sequences, switch; reverse replication and rollback
//!   |
//! vectorize keeps the vectors current afterwards (or on any database), through embed/
//! ```
//!
//! Imports point one way, down this list of layers (never back up, never in a circle):
//!
//! ```text
//! cutover/, verify/   the last steps; vectorize (after them, or alone)
//! load/               reads a source/, follows with catchup/ (consolidate)
//! source/             plans from the catalog; installs the schema-change capture of catchup/
//! catchup/            applies changes; recomputes vectors through embed/
//! embed/              computes and indexes vectors; caches them in the run store
//! run/                the run store (the only code on the target's pgshift schema),
//!                     phases, versioned state migrations, slot/publication/origin names
//! plan/               what every stage reads: table selection, chunks, embedding specs,
//!                     casts, declared keys, load options
//! ```
//!
//! `error`, `metrics`, `progress` and `workers` serve every layer.

pub mod catchup;
pub mod cutover;
pub mod embed;
pub mod error;
pub mod load;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod run;
pub mod source;
pub mod vectorize;
pub mod verify;
pub mod workers;

pub use error::{Error, Result};
