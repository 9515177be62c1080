//! `pgshift inspect`: what the source holds, how each table would move, what is in
//! the way, and (with a target) whether the target's tables already match.

use pgshift_postgres::catalog::{self, Table};
use pgshift_postgres::copy::CopyFormat;
use pgshift_postgres::error::Context;
use pgshift_postgres::schema_map::{relocate_extensions, same_type_name, SchemaMap};
use pgshift_postgres::ConnInfo;
use serde::Serialize;

use crate::error::Result;
use crate::source::preflight;

#[derive(Clone, Debug, Serialize)]
pub struct KeyReport {
    pub name: String,
    pub columns: Vec<String>,
    /// Each key column's type, in key order.
    pub types: Vec<String>,
    pub first_type: String,
    /// The first key column is an integer type.
    pub numeric: bool,
    /// Integer or uuid first column: the table can be split into key ranges.
    pub splittable: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ColumnReport {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableReport {
    pub table: String,
    pub kind: pgshift_postgres::catalog::TableKind,
    pub partition_of: Option<String>,
    pub rows_estimate: i64,
    pub exact_rows: Option<i64>,
    pub size_bytes: i64,
    pub primary_key: Option<KeyReport>,
    pub replica_identity: &'static str,
    pub copy_format: CopyFormat,
    pub columns: Vec<ColumnReport>,
    /// None without --target.
    pub in_target: Option<bool>,
    /// Column differences from the target's table of the same name.
    pub target_differences: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    pub source: String,
    pub server_version_num: i32,
    pub extensions: Vec<String>,
    pub tables: Vec<TableReport>,
    pub problems: Vec<String>,
    /// Objects pgshift does not carry to the target, each with what to do.
    pub not_carried: Vec<String>,
    /// Whether schema changes made during catch-up will be followed, and if not, why.
    pub schema_changes: String,
}

/// `schema_map` says where the tables would go on the target (`--map-schema`).
/// `overrides`: migrate's --map-schema and --cast, so the report shows the names and
/// types the load will use.
pub async fn inspect(source: &ConnInfo, target: Option<&ConnInfo>, exact_counts: bool, overrides: (&SchemaMap, &[crate::plan::casts::ColumnCast])) -> Result<InspectReport> {
    let (schema_map, casts) = overrides;
    let src = source.session().await?;
    let mut catalog = catalog::inspect(&src).await?;
    crate::plan::casts::apply(&mut catalog, casts)?;
    let mut view = schema_map.target_view(&catalog);
    let target_catalog = match target {
        Some(t) => {
            let dst = t.session().await?;
            // Compared as migrate would create them: extensions where the target has them.
            view = relocate_extensions(&view, &catalog::installed_extensions(&dst).await?);
            Some((catalog::inspect(&dst).await?, dst))
        }
        None => None,
    };
    let all: Vec<&Table> = catalog.tables.iter().collect();
    let mut problems = preflight::identity_problems(&all);
    if let Some((_, dst)) = &target_catalog {
        problems.extend(preflight::extension_problems(dst, &catalog).await?);
    }
    let mut tables = Vec::new();
    for (t, tv) in catalog.tables.iter().zip(&view.tables) {
        let exact_rows = if exact_counts && t.holds_rows() {
            let sql = format!("SELECT count(*) FROM ONLY {}", t.qualified());
            Some(src.query_one(&sql, &[]).await.context(&source.endpoint(), || format!("count {}", t.display_name()))?.get(0))
        } else {
            None
        };
        let (in_target, target_differences) = match &target_catalog {
            Some((tc, _)) => match tc.table(&tv.schema, &tv.name) {
                Some(other) => (Some(true), differences(tv, other)),
                None => (Some(false), Vec::new()),
            },
            None => (None, Vec::new()),
        };
        tables.push(TableReport {
            table: t.display_name(),
            kind: t.kind.clone(),
            partition_of: t.partition_of.as_ref().map(|(s, n, _)| format!("{s}.{n}")),
            rows_estimate: t.row_estimate,
            exact_rows,
            size_bytes: t.size_bytes,
            primary_key: t.primary_key.as_ref().map(|k| KeyReport {
                name: k.name.clone(),
                columns: k.columns.clone(),
                types: k.columns.iter().map(|c| t.columns.iter().find(|x| &x.name == c).map_or_else(|| "?".into(), |x| x.type_name.clone())).collect(),
                first_type: k.first_type.clone(),
                numeric: matches!(k.first_type.as_str(), "smallint" | "integer" | "bigint"),
                splittable: matches!(k.first_type.as_str(), "smallint" | "integer" | "bigint" | "uuid"),
            }),
            replica_identity: match t.replica_identity.as_str() {
                "d" => "default",
                "n" => "nothing",
                "f" => "full",
                _ => "index",
            },
            copy_format: CopyFormat::for_table(t),
            columns: t.columns.iter().map(|c| ColumnReport { name: c.name.clone(), type_name: c.target_type().to_string() }).collect(),
            in_target,
            target_differences,
        });
    }
    // Languages: the target's when given (what it will take), else the source's own.
    let language_server = target_catalog.as_ref().map_or(&src, |(_, dst)| dst);
    let mut languages: std::collections::BTreeSet<String> = language_server
        .query("SELECT lanname::text FROM pg_language", &[])
        .await
        .context(&source.endpoint(), || "list languages".into())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    languages.extend(catalog.extensions.iter().map(|e| e.name.clone()));
    let objects = pgshift_postgres::objects::inspect(&src, &all, &languages).await?;
    let schema_changes = match crate::catchup::ddl::unfollowable(&src).await? {
        None => "followed during catch-up (an event trigger on the source reports them)".to_string(),
        Some(reason) => reason,
    };
    Ok(InspectReport {
        schema_changes,
        not_carried: objects.not_carried,
        source: source.endpoint().to_string(),
        server_version_num: catalog.server_version_num,
        extensions: catalog.extensions.iter().map(|e| format!("{} {}", e.name, e.version)).collect(),
        tables,
        problems,
    })
}

fn differences(source: &Table, target: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for c in &source.columns {
        match target.columns.iter().find(|x| x.name == c.name) {
            None => out.push(format!("column {} missing on target", c.name)),
            Some(x) if !same_type_name(&x.type_name, &c.type_name) => {
                out.push(format!("column {}: {} on source, {} on target", c.name, c.type_name, x.type_name))
            }
            _ => {}
        }
    }
    for x in &target.columns {
        if !source.columns.iter().any(|c| c.name == x.name) {
            out.push(format!("column {} only on target", x.name));
        }
    }
    out
}
