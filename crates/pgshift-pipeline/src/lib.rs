//! pgshift's stages and their orchestration.

pub mod casts;
pub mod consolidate;
pub mod copy_stage;
pub mod cutover;
pub mod embed_catchup;
pub mod embed_copy;
pub mod embedding;
pub mod error;
pub mod follow;
pub mod inspect;
pub mod links;
pub mod metrics;
pub mod migrate;
pub mod plan;
pub mod postdata;
pub mod preflight;
pub mod progress;
pub mod reembed;
pub mod reverse;
pub mod sqlite_migrate;
pub mod sqlite_verify;
pub mod state;
pub mod status;
pub mod vector_index;
pub mod verify;
pub mod workers;

pub use error::{Error, Result};
