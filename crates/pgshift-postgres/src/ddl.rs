//! Renders the catalog as DDL for the target. Pre-data makes everything that rows
//! need (schemas, extensions, types, sequences, tables); post-data adds what is
//! faster to build after the load (keys, constraints, indexes, foreign keys).

use crate::catalog::{Catalog, Column, Sequence, Table, TableKind};
use crate::sql::{qualified, quote_ident, quote_literal};

/// One statement of post-data work, with what it creates so a resumed run can skip
/// what already exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostDataStep {
    /// `schema.name`, for messages.
    pub table: String,
    pub schema: String,
    pub relname: String,
    pub object: String,
    pub kind: PostDataKind,
    pub sql: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostDataKind {
    /// Primary keys, unique, check and exclusion constraints, indexes: independent
    /// of each other, run in parallel.
    Index,
    /// Foreign keys added NOT VALID: after every key exists.
    ForeignKey,
    /// VALIDATE CONSTRAINT: scans without blocking writes, in parallel.
    Validate,
    /// Comments, and replica identities (which may name an index): after the rest.
    Comment,
}

/// `CREATE EXTENSION` into a named schema: pgshift's sessions run with
/// `search_path = pg_catalog`, where a bare CREATE EXTENSION would put it.
pub fn create_extension_sql(name: &str, schema: &str) -> String {
    let schema = quote_ident(schema);
    format!("CREATE SCHEMA IF NOT EXISTS {schema}; CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {schema}", quote_ident(name))
}

/// Everything the tables in `tables` need, in an order that PostgreSQL accepts.
/// `before_types` (comments on schemas, collations) come right after the extensions;
/// `routines` (functions that defaults and checks may call, then the operators, casts
/// and text search objects built on them) after the types and before the sequences
/// and tables, with function bodies unchecked until first use.
pub fn pre_data(catalog: &Catalog, tables: &[&Table], before_types: &[String], routines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for s in &catalog.schemas {
        if s != "public" {
            out.push(format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)));
        }
    }
    for e in &catalog.extensions {
        out.push(format!("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}", quote_ident(&e.name), quote_ident(&e.schema)));
    }
    out.extend(before_types.iter().cloned());
    for e in &catalog.enums {
        let labels: Vec<String> = e.labels.iter().map(|l| quote_literal(l)).collect();
        out.push(format!("CREATE TYPE {} AS ENUM ({})", qualified(&e.schema, &e.name), labels.join(", ")));
    }
    // Before domains and composites, which may be built on them.
    for r in &catalog.ranges {
        let options: String = r.options.iter().map(|o| format!(", {o}")).collect();
        out.push(format!("CREATE TYPE {} AS RANGE (SUBTYPE = {}{options})", qualified(&r.schema, &r.name), r.subtype));
    }
    for d in &catalog.domains {
        let mut s = format!("CREATE DOMAIN {} AS {}", qualified(&d.schema, &d.name), d.base_type);
        if let Some(def) = &d.default {
            s.push_str(&format!(" DEFAULT {def}"));
        }
        if d.not_null {
            s.push_str(" NOT NULL");
        }
        for (name, check) in &d.constraints {
            s.push_str(&format!(" CONSTRAINT {} {check}", quote_ident(name)));
        }
        out.push(s);
    }
    for c in &catalog.composites {
        let attrs: Vec<String> = c.attributes.iter().map(|(n, t)| format!("{} {t}", quote_ident(n))).collect();
        out.push(format!("CREATE TYPE {} AS ({})", qualified(&c.schema, &c.name), attrs.join(", ")));
    }
    if !routines.is_empty() {
        out.push("SET LOCAL check_function_bodies = off".into());
        out.extend(routines.iter().cloned());
    }
    // Identity sequences come with their column.
    let sequences: Vec<&Sequence> = sequences_of(catalog, tables).filter(|s| !s.identity).collect();
    for s in &sequences {
        out.push(create_sequence(s));
    }
    for t in tables {
        out.push(create_table(t));
        out.extend(column_settings(t));
    }
    for s in &sequences {
        if let Some((schema, table, column)) = &s.owned_by {
            out.push(format!(
                "ALTER SEQUENCE {} OWNED BY {}.{}",
                qualified(&s.schema, &s.name),
                qualified(schema, table),
                quote_ident(column)
            ));
        }
    }
    out
}

/// Free-standing sequences, and those owned by a column of one of `tables`.
pub fn sequences_of<'a>(catalog: &'a Catalog, tables: &'a [&Table]) -> impl Iterator<Item = &'a Sequence> {
    let wanted = move |schema: &str, name: &str| tables.iter().any(|t| t.schema == schema && t.name == name);
    catalog.sequences.iter().filter(move |s| s.owned_by.as_ref().is_none_or(|(sch, t, _)| wanted(sch, t)))
}

fn create_sequence(s: &Sequence) -> String {
    format!(
        "CREATE SEQUENCE {} AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {}{}",
        qualified(&s.schema, &s.name),
        s.data_type,
        s.increment,
        s.min,
        s.max,
        s.start,
        s.cache,
        if s.cycle { " CYCLE" } else { "" }
    )
}

pub fn create_table(t: &Table) -> String {
    let name = t.qualified();
    if let Some((ps, pn, bound)) = &t.partition_of {
        let mut s = format!("CREATE TABLE {name} PARTITION OF {} {bound}", qualified(ps, pn));
        if let Some(key) = &t.partition_key {
            s.push_str(&format!(" PARTITION BY {key}"));
        }
        return s;
    }
    let cols: Vec<String> = t.columns.iter().map(column_definition).collect();
    let mut s = format!("CREATE TABLE {name} (\n    {}\n)", cols.join(",\n    "));
    if t.kind == TableKind::Partitioned {
        if let Some(key) = &t.partition_key {
            s.push_str(&format!(" PARTITION BY {key}"));
        }
    }
    s
}

/// The source's `ALTER COLUMN ... SET STORAGE/COMPRESSION/STATISTICS/(options)`.
pub fn column_settings(t: &Table) -> impl Iterator<Item = String> + '_ {
    t.columns
        .iter()
        .flat_map(move |c| c.settings.iter().map(move |s| format!("ALTER TABLE ONLY {} ALTER COLUMN {} {s}", t.qualified(), quote_ident(&c.name))))
}

/// `name type [COLLATE] [GENERATED ... | DEFAULT ...] [NOT NULL]`.
pub fn column_definition(c: &Column) -> String {
    let mut s = format!("{} {}", quote_ident(&c.name), c.target_type());
    if let Some(collation) = c.collation.as_ref().filter(|_| c.cast_to.is_none()) {
        s.push_str(&format!(" COLLATE {collation}"));
    }
    if let Some(expr) = &c.generated {
        s.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
    } else if c.identity == "a" {
        s.push_str(" GENERATED ALWAYS AS IDENTITY");
    } else if c.identity == "d" {
        s.push_str(" GENERATED BY DEFAULT AS IDENTITY");
    } else if let Some(def) = c.default.as_ref().filter(|_| c.cast_to.is_none()) {
        s.push_str(&format!(" DEFAULT {def}"));
    }
    if c.not_null {
        s.push_str(" NOT NULL");
    }
    s
}

/// `setval` for every sequence of the migrated tables, with the values read from the
/// source catalog. Identity sequences are found through their column.
pub fn sequence_values(catalog: &Catalog, tables: &[&Table]) -> Vec<String> {
    sequences_of(catalog, tables)
        .filter_map(|s| {
            let (value, called) = s.value?;
            let target = match (&s.owned_by, s.identity) {
                (Some((schema, table, column)), true) => format!(
                    "pg_get_serial_sequence({}, {})",
                    quote_literal(&qualified(schema, table)),
                    quote_literal(column)
                ),
                _ => format!("{}::regclass", quote_literal(&qualified(&s.schema, &s.name))),
            };
            Some(format!("SELECT setval({target}, {value}, {called})"))
        })
        .collect()
}

pub fn post_data(tables: &[&Table]) -> Vec<PostDataStep> {
    let mut out = Vec::new();
    for t in tables {
        let name = t.qualified();
        for c in &t.constraints {
            let owner = StepOwner { schema: &t.schema, relname: &t.name };
            if c.kind != "f" {
                let add = format!("ALTER TABLE {name} ADD CONSTRAINT {} {}", quote_ident(&c.name), c.definition);
                out.push(t.post_data_step(c.name.clone(), PostDataKind::Index, add));
            } else {
                // PostgreSQL cannot add a NOT VALID foreign key to a partitioned table;
                // a constraint already NOT VALID on the source stays so.
                let validate = t.kind != TableKind::Partitioned && !c.definition.ends_with("NOT VALID");
                out.extend(foreign_key_steps(owner, &c.name, &c.definition, validate));
            }
        }
        for i in &t.indexes {
            // A partitioned parent's index is shown ON ONLY; without ONLY it cascades to
            // the partitions, whose own copies we skipped.
            let sql = i.definition.replacen(" ON ONLY ", " ON ", 1);
            out.push(t.post_data_step(i.name.clone(), PostDataKind::Index, sql));
        }
        let mut comment = |object: String, sql: String| out.push(t.post_data_step(object, PostDataKind::Comment, sql));
        if let Some(text) = &t.comment {
            comment(t.name.clone(), format!("COMMENT ON TABLE {name} IS {}", quote_literal(text)));
        }
        // Reverse replication after the cutover publishes from the target: it needs the
        // same replica identity as the source.
        let identity = match (t.replica_identity.as_str(), &t.replica_identity_index) {
            ("f", _) => Some("FULL".to_string()),
            ("n", _) => Some("NOTHING".to_string()),
            ("i", Some(index)) => Some(format!("USING INDEX {}", quote_ident(index))),
            _ => None,
        };
        if let Some(identity) = identity {
            comment(format!("{} replica identity", t.name), format!("ALTER TABLE ONLY {name} REPLICA IDENTITY {identity}"));
        }
        for c in &t.columns {
            if let Some(text) = &c.comment {
                comment(
                    format!("{}.{}", t.name, c.name),
                    format!("COMMENT ON COLUMN {name}.{} IS {}", quote_ident(&c.name), quote_literal(text)),
                );
            }
        }
    }
    out
}

impl Table {
    fn post_data_step(&self, object: String, kind: PostDataKind, sql: String) -> PostDataStep {
        PostDataStep { table: self.display_name(), schema: self.schema.clone(), relname: self.name.clone(), object, kind, sql }
    }
}

/// The table a post-data step belongs to.
#[derive(Clone, Copy)]
pub struct StepOwner<'a> {
    pub schema: &'a str,
    pub relname: &'a str,
}

/// `FOREIGN KEY (cols) REFERENCES table (cols) [ON DELETE action]`; `references` is
/// qualified. `on_delete` is SQL's action (`CASCADE`, `SET NULL`, ...), or None.
pub fn foreign_key_definition(columns: &[String], references: &str, ref_columns: &[String], on_delete: Option<&str>) -> String {
    let action = on_delete.map(|a| format!(" ON DELETE {a}")).unwrap_or_default();
    format!(
        "FOREIGN KEY ({}) REFERENCES {references} ({}){action}",
        crate::sql::column_list(columns.iter().map(String::as_str)),
        crate::sql::column_list(ref_columns.iter().map(String::as_str))
    )
}

/// `ALTER TABLE ... ADD CONSTRAINT name definition NOT VALID`: instant, checks only new rows.
pub fn add_foreign_key_sql(owner: StepOwner<'_>, name: &str, definition: &str) -> String {
    let definition = definition.strip_suffix(" NOT VALID").unwrap_or(definition);
    format!("ALTER TABLE {} ADD CONSTRAINT {} {definition} NOT VALID", qualified(owner.schema, owner.relname), quote_ident(name))
}

/// `ALTER TABLE ... VALIDATE CONSTRAINT name`: a scan that does not block writes.
pub fn validate_sql(owner: StepOwner<'_>, name: &str) -> String {
    format!("ALTER TABLE {} VALIDATE CONSTRAINT {}", qualified(owner.schema, owner.relname), quote_ident(name))
}

/// Every foreign key pgshift adds (the source's, a SQLite file's, declared ones) goes
/// the same way: NOT VALID once all keys exist, then VALIDATE in parallel. Without
/// `validate` the key stays as given (NOT VALID on the source, or on a partitioned
/// table, which cannot take NOT VALID).
pub fn foreign_key_steps(owner: StepOwner<'_>, name: &str, definition: &str, validate: bool) -> Vec<PostDataStep> {
    let step = |kind, sql| PostDataStep {
        table: format!("{}.{}", owner.schema, owner.relname),
        schema: owner.schema.to_string(),
        relname: owner.relname.to_string(),
        object: name.to_string(),
        kind,
        sql,
    };
    if !validate {
        let sql = format!("ALTER TABLE {} ADD CONSTRAINT {} {definition}", qualified(owner.schema, owner.relname), quote_ident(name));
        return vec![step(PostDataKind::ForeignKey, sql)];
    }
    vec![step(PostDataKind::ForeignKey, add_foreign_key_sql(owner, name, definition)), step(PostDataKind::Validate, validate_sql(owner, name))]
}

/// Sets an identity column's sequence past the largest value the table holds (for
/// sources whose keys were not drawn from a sequence pgshift can read, like SQLite's).
pub fn identity_past_max_sql(owner: StepOwner<'_>, column: &str) -> String {
    let table = qualified(owner.schema, owner.relname);
    format!(
        "SELECT setval(pg_get_serial_sequence({}, {}), coalesce(max({}), 0) + 1, false) FROM {table}",
        quote_literal(&table),
        quote_literal(column),
        quote_ident(column)
    )
}
