//! How a table is read in pieces, as the plan, the run's chunks and verify name it.
//! The ranges themselves are computed on the source (`source::chunks`).

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    Whole,
    IntKey,
    UuidKey,
    /// Block ranges: rows can move between them when updated, so a resumed run
    /// re-copies such a table whole (see docs/ARCHITECTURE.md).
    Ctid,
}

impl SplitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitKind::Whole => "whole",
            SplitKind::IntKey => "intkey",
            SplitKind::UuidKey => "uuidkey",
            SplitKind::Ctid => "ctid",
        }
    }

    pub fn parse(s: &str) -> SplitKind {
        match s {
            "intkey" => SplitKind::IntKey,
            "uuidkey" => SplitKind::UuidKey,
            "ctid" => SplitKind::Ctid,
            _ => SplitKind::Whole,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Chunk {
    pub no: i32,
    /// SQL condition over the source table; None = the whole table.
    pub predicate: Option<String>,
}
