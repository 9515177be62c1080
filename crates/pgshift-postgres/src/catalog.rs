//! Reads a database's catalog: tables with exact column types (format_type of
//! pg_attribute, schema-qualified because the session runs with
//! `search_path = pg_catalog`), keys, constraints, indexes, user types, sequences.

use serde::Serialize;
use tokio_postgres::Client;

use crate::conn::Session;
use crate::error::{Context, PgError};
use crate::sql::qualified;

/// Schemas that belong to the system or to pgshift's own state.
pub const SKIP_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift', 'pg_toast') \
     AND n.nspname NOT LIKE 'pg_temp_%' AND n.nspname NOT LIKE 'pg_toast_temp_%'";

/// Objects another object makes for itself (a range type's constructors and its
/// multirange cast) come with that object, not on their own.
pub(crate) fn not_internal(catalog: &str, oid_expr: &str) -> String {
    format!("NOT EXISTS (SELECT 1 FROM pg_depend id WHERE id.classid = '{catalog}'::regclass AND id.objid = {oid_expr} AND id.deptype = 'i')")
}

/// Objects that belong to an extension are created by CREATE EXTENSION, not by us.
pub(crate) fn not_from_extension(oid_expr: &str) -> String {
    format!("NOT EXISTS (SELECT 1 FROM pg_depend xd WHERE xd.objid = {oid_expr} AND xd.deptype = 'e')")
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Catalog {
    pub server_version_num: i32,
    pub extensions: Vec<Extension>,
    pub schemas: Vec<String>,
    pub enums: Vec<EnumType>,
    pub domains: Vec<DomainType>,
    pub composites: Vec<CompositeType>,
    pub ranges: Vec<RangeType>,
    pub sequences: Vec<Sequence>,
    pub tables: Vec<Table>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Extension {
    pub name: String,
    pub schema: String,
    pub version: String,
    /// Names of the extension's types, functions and operator classes (in its schema),
    /// which the catalog's texts may name.
    #[serde(skip)]
    pub members: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EnumType {
    pub schema: String,
    pub name: String,
    pub labels: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DomainType {
    pub schema: String,
    pub name: String,
    pub base_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    /// `CHECK (...)` definitions with their names.
    pub constraints: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompositeType {
    pub schema: String,
    pub name: String,
    pub attributes: Vec<(String, String)>,
}

/// A range type; `options` are its CREATE TYPE ... AS RANGE settings besides the subtype.
#[derive(Clone, Debug, Serialize)]
pub struct RangeType {
    pub schema: String,
    pub name: String,
    pub subtype: String,
    pub options: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    pub data_type: String,
    pub start: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cache: i64,
    pub cycle: bool,
    /// `(last_value, is_called)`; None when the source user cannot read it.
    pub value: Option<(i64, bool)>,
    /// `(table, column)` for serial columns (OWNED BY).
    pub owned_by: Option<(String, String, String)>,
    /// True for the sequence behind an identity column: the column creates it.
    pub identity: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Regular,
    Partitioned,
}

#[derive(Clone, Debug, Serialize)]
pub struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub kind: TableKind,
    pub partition_key: Option<String>,
    /// `(parent schema, parent name, FOR VALUES ...)` for a partition.
    pub partition_of: Option<(String, String, String)>,
    pub columns: Vec<Column>,
    pub primary_key: Option<PrimaryKey>,
    /// d = default (primary key), n = nothing, f = full, i = index.
    pub replica_identity: String,
    pub row_estimate: i64,
    pub size_bytes: i64,
    pub pages: i64,
    pub constraints: Vec<Constraint>,
    pub indexes: Vec<Index>,
    /// The index named by `REPLICA IDENTITY USING INDEX` (replica_identity `i`).
    pub replica_identity_index: Option<String>,
    pub comment: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Column {
    pub name: String,
    /// As the catalog states it, e.g. `numeric(12,2)`, `public.mood[]`.
    pub type_name: String,
    pub type_oid: u32,
    pub not_null: bool,
    pub default: Option<String>,
    /// '' none, 'a' ALWAYS, 'd' BY DEFAULT.
    pub identity: String,
    /// Expression of a stored generated column.
    pub generated: Option<String>,
    /// Binary COPY of this type embeds type OIDs (arrays of user types, composites,
    /// reg* types), which differ between clusters: the table must be copied as text.
    pub oid_in_binary: bool,
    pub comment: Option<String>,
    /// `schema.name` of the column's collation when it is not its type's.
    pub collation: Option<String>,
    /// The type the column gets on the target when it is cast on the way
    /// (e.g. text -> uuid when two databases are consolidated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cast_to: Option<String>,
    /// `ALTER COLUMN` settings the source made: `SET STORAGE ...`, `SET COMPRESSION ...`,
    /// `SET STATISTICS n`, `SET (n_distinct=...)` (the server's internal options left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<String>,
}

impl Column {
    /// The column's type on the target.
    pub fn target_type(&self) -> &str {
        self.cast_to.as_deref().unwrap_or(&self.type_name)
    }

    /// The column as the source should select it: cast when the target type differs.
    pub fn select_expr(&self) -> String {
        match &self.cast_to {
            Some(t) => format!("{}::{t}", crate::sql::quote_ident(&self.name)),
            None => crate::sql::quote_ident(&self.name),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PrimaryKey {
    pub name: String,
    pub columns: Vec<String>,
    /// Type of the first key column (format_type).
    pub first_type: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Constraint {
    pub name: String,
    /// p primary key, u unique, c check, x exclusion, f foreign key.
    pub kind: String,
    pub definition: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Index {
    pub name: String,
    pub definition: String,
}

impl Table {
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Columns that COPY can write: everything but generated columns.
    pub fn copy_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.generated.is_none())
    }

    /// Partitioned parents hold no rows themselves; their leaves are copied.
    pub fn holds_rows(&self) -> bool {
        self.kind == TableKind::Regular
    }

    pub fn has_replica_identity(&self) -> bool {
        match self.replica_identity.as_str() {
            "f" | "i" => true,
            "d" => self.primary_key.is_some(),
            _ => false,
        }
    }
}

impl Catalog {
    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.schema == schema && t.name == name)
    }

    /// This catalog's versions of `tables` (paired by OID: a schema-mapped view of a
    /// catalog keeps the source's OIDs), in the order given.
    pub fn same_tables(&self, tables: &[&Table]) -> Vec<&Table> {
        tables.iter().filter_map(|t| self.tables.iter().find(|x| x.oid == t.oid)).collect()
    }
}

/// The extensions installed on a server: name -> schema.
pub async fn installed_extensions(db: &Session) -> Result<std::collections::BTreeMap<String, String>, PgError> {
    let endpoint = db.endpoint();
    let rows = db
        .query("SELECT e.extname::text, n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace", &[])
        .await
        .context(&endpoint, || "list the installed extensions".into())?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Where pgvector's types are, or will be once pgshift creates the extension: where
/// the server has it, else where the source has it, else public (pgshift's sessions
/// run with `search_path = pg_catalog`, so a bare CREATE EXTENSION would land there).
pub fn vector_schema(installed: &std::collections::BTreeMap<String, String>, source: Option<&Catalog>) -> String {
    installed
        .get("vector")
        .cloned()
        .or_else(|| source.and_then(|c| c.extensions.iter().find(|e| e.name == "vector")).map(|e| e.schema.clone()))
        .unwrap_or_else(|| "public".into())
}

/// Whether a table (or any relation) of this name exists on that server.
pub async fn relation_exists(db: &Session, schema: &str, name: &str) -> Result<bool, PgError> {
    let endpoint = db.endpoint();
    let row = db
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified(schema, name)])
        .await
        .context(&endpoint, || format!("look for {schema}.{name}"))?;
    Ok(row.get(0))
}

pub async fn inspect(db: &Session) -> Result<Catalog, PgError> {
    let (client, name): (&Client, &str) = (db, db.endpoint());
    let endpoint: &(dyn std::fmt::Display + Sync) = &name;
    let q = |what: &'static str| move || format!("read the catalog ({what})");
    let server_version_num: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .context(endpoint, q("server version"))?
        .get(0);

    let member = |catalog: &str, name: &str| {
        format!(
            "SELECT x.{name}::text FROM pg_depend d JOIN {catalog} x ON x.oid = d.objid \
             WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.classid = '{catalog}'::regclass AND d.deptype = 'e'"
        )
    };
    let extensions = client
        .query(
            &format!(
                "SELECT e.extname, n.nspname, e.extversion, ARRAY({} UNION {} UNION {}) FROM pg_extension e \
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY 1",
                member("pg_type", "typname"),
                member("pg_proc", "proname"),
                member("pg_opclass", "opcname")
            ),
            &[],
        )
        .await
        .context(endpoint, q("extensions"))?
        .iter()
        .map(|r| Extension { name: r.get(0), schema: r.get(1), version: r.get(2), members: r.get(3) })
        .collect();

    let schemas = client
        .query(
            &format!(
                "SELECT n.nspname FROM pg_namespace n WHERE {SKIP_SCHEMAS} AND {} ORDER BY 1",
                not_from_extension("n.oid")
            ),
            &[],
        )
        .await
        .context(endpoint, q("schemas"))?
        .iter()
        .map(|r| r.get(0))
        .collect();

    let user_type = |typtype: &str| {
        format!(
            "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
             WHERE t.typtype = '{typtype}' AND {SKIP_SCHEMAS} AND {}",
            not_from_extension("t.oid")
        )
    };
    let enums = client
        .query(
            &format!(
                "SELECT n.nspname, t.typname, ARRAY(SELECT enumlabel::text FROM pg_enum WHERE enumtypid = t.oid \
                 ORDER BY enumsortorder) {} ORDER BY 1, 2",
                user_type("e")
            ),
            &[],
        )
        .await
        .context(endpoint, q("enums"))?
        .iter()
        .map(|r| EnumType { schema: r.get(0), name: r.get(1), labels: r.get(2) })
        .collect();

    let domains = client
        .query(
            &format!(
                "SELECT n.nspname, t.typname, format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault, \
                 ARRAY(SELECT conname::text FROM pg_constraint WHERE contypid = t.oid AND contype = 'c' ORDER BY conname), \
                 ARRAY(SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contypid = t.oid AND contype = 'c' ORDER BY conname) \
                 {} ORDER BY t.oid",
                user_type("d")
            ),
            &[],
        )
        .await
        .context(endpoint, q("domains"))?
        .iter()
        .map(|r| {
            let names: Vec<String> = r.get(5);
            let defs: Vec<String> = r.get(6);
            DomainType {
                schema: r.get(0),
                name: r.get(1),
                base_type: r.get(2),
                not_null: r.get(3),
                default: r.get(4),
                constraints: names.into_iter().zip(defs).collect(),
            }
        })
        .collect();

    let composites = client
        .query(
            &format!(
                "SELECT n.nspname, t.typname, \
                 ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 \
                       AND NOT a.attisdropped ORDER BY a.attnum), \
                 ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = t.typrelid \
                       AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) \
                 {} AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c' ORDER BY t.oid",
                user_type("c")
            ),
            &[],
        )
        .await
        .context(endpoint, q("composite types"))?
        .iter()
        .map(|r| {
            let names: Vec<String> = r.get(2);
            let types: Vec<String> = r.get(3);
            CompositeType { schema: r.get(0), name: r.get(1), attributes: names.into_iter().zip(types).collect() }
        })
        .collect();

    // Settings pg_dump would write: the operator class and collation only when not the
    // subtype's defaults; the multirange's name only when not the derived one.
    let multirange = if server_version_num >= 140000 {
        "CASE WHEN mt.typname <> (CASE WHEN t.typname LIKE '%range%' THEN replace(t.typname, 'range', 'multirange') ELSE t.typname || '_multirange' END) \
           THEN format('MULTIRANGE_TYPE_NAME = %I.%I', mn.nspname, mt.typname) END"
    } else {
        "NULL::text"
    };
    let multirange_join =
        if server_version_num >= 140000 { "LEFT JOIN pg_type mt ON mt.oid = r.rngmultitypid LEFT JOIN pg_namespace mn ON mn.oid = mt.typnamespace" } else { "" };
    let ranges = client
        .query(
            &format!(
                "SELECT n.nspname, t.typname, format_type(r.rngsubtype, NULL), \
                   ARRAY(SELECT o FROM unnest(ARRAY[ \
                     CASE WHEN NOT oc.opcdefault THEN format('SUBTYPE_OPCLASS = %I.%I', ocn.nspname, oc.opcname) END, \
                     CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> st.typcollation THEN format('COLLATION = %I.%I', cn.nspname, co.collname) END, \
                     CASE WHEN r.rngcanonical <> 0 THEN format('CANONICAL = %s', r.rngcanonical::regproc) END, \
                     CASE WHEN r.rngsubdiff <> 0 THEN format('SUBTYPE_DIFF = %s', r.rngsubdiff::regproc) END, \
                     {multirange}]) o WHERE o IS NOT NULL) \
                 FROM pg_range r JOIN pg_type t ON t.oid = r.rngtypid JOIN pg_namespace n ON n.oid = t.typnamespace \
                 JOIN pg_type st ON st.oid = r.rngsubtype \
                 JOIN pg_opclass oc ON oc.oid = r.rngsubopc JOIN pg_namespace ocn ON ocn.oid = oc.opcnamespace \
                 LEFT JOIN pg_collation co ON co.oid = r.rngcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace \
                 {multirange_join} \
                 WHERE {SKIP_SCHEMAS} AND {} ORDER BY t.oid",
                not_from_extension("t.oid")
            ),
            &[],
        )
        .await
        .context(endpoint, q("range types"))?
        .iter()
        .map(|r| RangeType { schema: r.get(0), name: r.get(1), subtype: r.get(2), options: r.get(3) })
        .collect();

    let sequences = read_sequences(client, endpoint).await?;
    let tables = read_tables(client, endpoint).await?;
    Ok(Catalog { server_version_num, extensions, schemas, enums, domains, composites, ranges, sequences, tables })
}

async fn read_sequences(client: &Client, endpoint: &(dyn std::fmt::Display + Sync)) -> Result<Vec<Sequence>, PgError> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, \
                 s.seqmax, s.seqcache, s.seqcycle, \
                 CASE WHEN has_sequence_privilege(c.oid, 'SELECT') THEN pg_sequence_last_value(c.oid) END, \
                 tn.nspname, tc.relname, a.attname, d.deptype = 'i' \
                 FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass \
                      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') \
                 LEFT JOIN pg_class tc ON tc.oid = d.refobjid \
                 LEFT JOIN pg_namespace tn ON tn.oid = tc.relnamespace \
                 LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                 WHERE {SKIP_SCHEMAS} AND {} ORDER BY 1, 2",
                not_from_extension("c.oid")
            ),
            &[],
        )
        .await
        .context(endpoint, || "read the catalog (sequences)".into())?;
    Ok(rows
        .iter()
        .map(|r| {
            let last: Option<i64> = r.get(9);
            let owner: Option<String> = r.get(11);
            Sequence {
                schema: r.get(0),
                name: r.get(1),
                data_type: r.get(2),
                start: r.get(3),
                increment: r.get(4),
                min: r.get(5),
                max: r.get(6),
                cache: r.get(7),
                cycle: r.get(8),
                // pg_sequence_last_value is NULL before the first nextval: not called yet.
                value: Some(last.map_or((r.get(3), false), |v| (v, true))),
                owned_by: owner.map(|t| (r.get(10), t, r.get(12))),
                identity: r.get::<_, Option<bool>>(13).unwrap_or(false),
            }
        })
        .collect())
}

async fn read_tables(client: &Client, endpoint: &(dyn std::fmt::Display + Sync)) -> Result<Vec<Table>, PgError> {
    let ctx = || "read the catalog (tables)".to_string();
    // Parents sort before their partitions: pg_inherits depth, then name.
    let rows = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname, c.relname, c.relkind::text, \
                 CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END, \
                 pn.nspname, pc.relname, CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END, \
                 c.relreplident::text, c.reltuples::float8, pg_total_relation_size(c.oid), c.relpages::int8, \
                 obj_description(c.oid, 'pg_class') \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND c.relispartition \
                 LEFT JOIN pg_class pc ON pc.oid = i.inhparent \
                 LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND {SKIP_SCHEMAS} AND {} \
                 ORDER BY (SELECT count(*) FROM pg_partition_ancestors(c.oid)), n.nspname, c.relname",
                not_from_extension("c.oid")
            ),
            &[],
        )
        .await
        .context(endpoint, ctx)?;
    let mut tables = Vec::with_capacity(rows.len());
    let mut unanalysed = Vec::with_capacity(rows.len());
    for r in rows {
        let oid: u32 = r.get(0);
        let parent: Option<String> = r.get(6);
        let reltuples: f64 = r.get(9);
        let size_bytes: i64 = r.get(10);
        let pages: i64 = r.get(11);
        unanalysed.push(reltuples < 0.0);
        tables.push(Table {
            oid,
            schema: r.get(1),
            name: r.get(2),
            kind: if r.get::<_, String>(3) == "p" { TableKind::Partitioned } else { TableKind::Regular },
            partition_key: r.get(4),
            partition_of: parent.map(|p| (r.get(5), p, r.get(7))),
            columns: read_columns(client, endpoint, oid).await?,
            primary_key: None,
            replica_identity: r.get(8),
            // reltuples is -1 for a never-analysed table: estimate from its size.
            row_estimate: if reltuples >= 0.0 { reltuples as i64 } else { size_bytes / 100 },
            size_bytes,
            pages,
            constraints: Vec::new(),
            indexes: Vec::new(),
            replica_identity_index: None,
            comment: r.get(12),
        });
    }
    for (t, unanalysed) in tables.iter_mut().zip(unanalysed) {
        read_keys_and_indexes(client, endpoint, t).await?;
        // Never analysed: a small table is cheaper to count than to misjudge.
        if unanalysed && t.kind == TableKind::Regular && t.size_bytes < EXACT_COUNT_BELOW_BYTES {
            let sql = format!("SELECT count(*) FROM ONLY {}", t.qualified());
            t.row_estimate = client.query_one(&sql, &[]).await.context(endpoint, || format!("count {}", t.display_name()))?.get(0);
        }
    }
    Ok(tables)
}

const EXACT_COUNT_BELOW_BYTES: i64 = 64 << 20;

async fn read_columns(client: &Client, endpoint: &(dyn std::fmt::Display + Sync), oid: u32) -> Result<Vec<Column>, PgError> {
    let rows = client
        .query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid, a.attnotnull, \
             CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END, \
             a.attidentity::text, CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END, \
             (bt.typtype = 'c' OR (bt.typcategory = 'A' AND bt.typelem >= 16384) \
              OR (bt.oid < 16384 AND bt.typname LIKE 'reg%')), \
             col_description(a.attrelid, a.attnum), \
             (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace \
              WHERE co.oid = a.attcollation AND a.attcollation <> t.typcollation), \
             concat_ws(E'\\n', \
               CASE WHEN a.attstorage <> t.typstorage THEN 'SET STORAGE ' || \
                 CASE a.attstorage WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL' WHEN 'm' THEN 'MAIN' ELSE 'EXTENDED' END END, \
               CASE to_jsonb(a) ->> 'attcompression' WHEN 'p' THEN 'SET COMPRESSION pglz' WHEN 'l' THEN 'SET COMPRESSION lz4' END, \
               CASE WHEN (to_jsonb(a) ->> 'attstattarget')::int >= 0 THEN 'SET STATISTICS ' || (to_jsonb(a) ->> 'attstattarget') END, \
               (SELECT 'SET (' || string_agg(o, ', ') || ')' FROM unnest(a.attoptions) o \
                 WHERE o LIKE 'n\\_distinct=%' OR o LIKE 'n\\_distinct\\_inherited=%')) \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
             LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .context(endpoint, || "read the catalog (columns)".into())?;
    Ok(rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_name: r.get(1),
            type_oid: r.get(2),
            not_null: r.get(3),
            default: r.get(4),
            identity: r.get(5),
            generated: r.get(6),
            oid_in_binary: r.get(7),
            comment: r.get(8),
            collation: r.get(9),
            cast_to: None,
            settings: r.get::<_, String>(10).lines().map(String::from).collect(),
        })
        .collect())
}

async fn read_keys_and_indexes(client: &Client, endpoint: &(dyn std::fmt::Display + Sync), t: &mut Table) -> Result<(), PgError> {
    // Inherited constraints (conislocal = false, or a partition's copy of its parent's)
    // are created by the parent's, but an inherited primary key is still this table's
    // key. NOT NULL constraints (PG18 'n') are rendered inline with the column.
    let rows = client
        .query(
            "SELECT c.conname, c.contype::text, pg_get_constraintdef(c.oid), \
             ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i) \
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), \
             (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
              WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[1]), \
             c.conislocal AND c.conparentid = 0 \
             FROM pg_constraint c WHERE c.conrelid = $1 AND c.contype IN ('p', 'u', 'c', 'x', 'f') \
             ORDER BY c.contype, c.conname",
            &[&t.oid],
        )
        .await
        .context(endpoint, || format!("read constraints of {}", t.display_name()))?;
    for r in rows {
        let c = Constraint { name: r.get(0), kind: r.get(1), definition: r.get(2) };
        if c.kind == "p" {
            t.primary_key = Some(PrimaryKey { name: c.name.clone(), columns: r.get(3), first_type: r.get(4) });
        }
        if r.get::<_, bool>(5) {
            t.constraints.push(c);
        }
    }
    // Indexes that back constraints come with the constraint; partition indexes come
    // with the parent's index.
    let rows = client
        .query(
            "SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             JOIN pg_class ic ON ic.oid = i.indexrelid \
             WHERE i.indrelid = $1 \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x')) \
             AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) ORDER BY 1",
            &[&t.oid],
        )
        .await
        .context(endpoint, || format!("read indexes of {}", t.display_name()))?;
    t.indexes = rows.iter().map(|r| Index { name: r.get(0), definition: r.get(1) }).collect();
    if t.replica_identity == "i" {
        t.replica_identity_index = client
            .query_opt("SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = $1 AND i.indisreplident", &[&t.oid])
            .await
            .context(endpoint, || format!("read the replica identity of {}", t.display_name()))?
            .map(|r| r.get(0));
    }
    Ok(())
}
