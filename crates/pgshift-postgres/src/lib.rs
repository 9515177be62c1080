//! Everything pgshift says to PostgreSQL: connections, catalog introspection, DDL
//! rendering, COPY streams, checksums and the replication protocol.

pub mod catalog;
pub mod checksum;
pub mod conn;
pub mod copy;
pub mod copy_binary;
pub mod ddl;
pub mod error;
pub mod large_objects;
pub mod libpq;
pub mod apply;
pub mod logical_stream;
pub mod lsn;
pub mod objects;
pub mod pgoutput;
pub mod replication;
pub mod schema_map;
pub mod spool;
pub mod sql;
pub mod tls;

pub use conn::{ConnInfo, Session};
pub use error::PgError;
