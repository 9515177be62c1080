//! Schema changes during catch-up. Event triggers on the source (installed with the
//! slot where the role may create them; removed with the last pgshift slot) write a
//! transactional logical message after every DDL command, which arrives in the change
//! stream at the command's exact position: the definitions of the tables it touched
//! (columns, renames, constraints), its new indexes, enum labels, and what it
//! dropped. Definitions, not the statement text, because `current_query()` may hold
//! other statements too. The follower diffs each against the target and makes the
//! difference there in the same target transaction ([`plan`]); what it cannot
//! follow stops `follow` with the statement and the fix, and an already matching
//! target diffs empty, so no stop repeats.

use std::collections::HashSet;

use pgshift_postgres::Session;
use pgshift_postgres::catalog::{Catalog, Column};
use pgshift_postgres::error::Context;
use pgshift_postgres::schema_map::{SchemaMap, StatementRewriter};
use pgshift_postgres::sql::{qualified, quote_ident, quote_literal};
use serde::Deserialize;

use crate::error::{Error, Result};

pub const PREFIX: &str = "pgshift.ddl";
const TRIGGER: &str = "pgshift_ddl";

/// A session setting that marks pgshift's own schema changes on a database whose
/// changes are captured (vectorize's triggers and indexes on the new database while
/// reverse replication runs): they are not sent to the other side.
pub const INTERNAL: &str = "pgshift.internal";

/// Why schema changes on the source will not be followed (None: they will): the
/// event trigger that reports them needs a superuser to create. Read-only.
pub async fn unfollowable(src: &Session) -> Result<Option<String>> {
    let src_name = src.endpoint();
    // Found out by trying, in a transaction that is rolled back: managed services let
    // admin roles that are not superusers create event triggers (RDS's rds_superuser,
    // Supabase's postgres), and a superuser flag says nothing about them.
    let probe = "BEGIN; CREATE SCHEMA IF NOT EXISTS pgshift; \
                 CREATE OR REPLACE FUNCTION pgshift.event_trigger_probe() RETURNS event_trigger LANGUAGE plpgsql AS $f$ BEGIN END $f$; \
                 CREATE EVENT TRIGGER pgshift_probe ON ddl_command_end EXECUTE FUNCTION pgshift.event_trigger_probe(); ROLLBACK";
    let Err(e) = src.batch_execute(probe).await else { return Ok(None) };
    let _ = src.batch_execute("ROLLBACK").await;
    let error = pgshift_postgres::error::query_error(&e, &src_name, "try an event trigger".into());
    if error.is_transient() {
        return Err(error.into());
    }
    let role: String = src
        .query_one("SELECT current_user::text", &[])
        .await
        .context(&src_name, || "check whether schema changes can be followed".into())?
        .get(0);
    Ok(Some(format!(
        "schema changes on {src_name} during catch-up will not be followed: role {role} cannot create the event trigger that reports them \
         ({}); a superuser can, and on a managed service its admin role (RDS: rds_superuser; Supabase: postgres): migrate as that role, \
         or make each schema change on the target too, before the changes that use it",
        pgshift_postgres::error::describe(&e)
    )))
}

/// Installs the event trigger on the source (idempotent), where it can be; returns
/// why not otherwise.
pub async fn install(src: &Session) -> Result<Option<String>> {
    let src_name = src.endpoint();
    if let Some(reason) = unfollowable(src).await? {
        return Ok(Some(reason));
    }
    // SECURITY DEFINER: the application's own role runs its migrations. A failure to
    // describe a change must not fail the application's migration: it is reported
    // instead, and follow stops on it.
    let columns_of = |rel: &str| {
        format!(
            "(SELECT coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod), \
                      'not_null', a.attnotnull, 'generated', a.attgenerated <> '', 'identity', a.attidentity::text, \
                      'sequence', pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname), \
                      'default', pg_get_expr(d.adbin, d.adrelid), \
                      'collation', (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace \
                                    WHERE co.oid = a.attcollation AND a.attcollation <> (SELECT typcollation FROM pg_type WHERE oid = a.atttypid))) \
                      ORDER BY a.attnum), '[]') \
              FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
              JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE a.attrelid = {rel} AND a.attnum > 0 AND NOT a.attisdropped)"
        )
    };
    let sql = format!(
        "CREATE SCHEMA IF NOT EXISTS pgshift; \
         CREATE TABLE IF NOT EXISTS pgshift.ddl_columns (relid oid, attnum int2, name name, PRIMARY KEY (relid, attnum)); \
         INSERT INTO pgshift.ddl_columns SELECT a.attrelid, a.attnum, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND {SKIP} \
           ON CONFLICT (relid, attnum) DO UPDATE SET name = EXCLUDED.name; \
         CREATE OR REPLACE FUNCTION pgshift.ddl_message() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$ \
         DECLARE t record; p record; l record; tables jsonb := '[]'; renamed jsonb; indexes jsonb; enums jsonb; objects jsonb; created boolean; published boolean; \
         BEGIN \
           IF tg_tag LIKE '% PUBLICATION' OR tg_tag LIKE '% SUBSCRIPTION' OR current_setting('{INTERNAL}', true) = 'on' OR NOT EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c \
                          WHERE coalesce(c.schema_name, '') <> 'pgshift' AND coalesce(c.schema_name, '') NOT LIKE 'pg_temp%') THEN \
             RETURN; \
           END IF; \
           FOR t IN SELECT DISTINCT c.oid, n.nspname, c.relname FROM pg_event_trigger_ddl_commands() o \
                    JOIN pg_class c ON o.classid = 'pg_class'::regclass AND c.oid = o.objid AND c.relkind IN ('r', 'p') \
                    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {SKIP} LOOP \
             SELECT coalesce(jsonb_agg(jsonb_build_array(s.name, a.attname)), '[]') INTO renamed FROM pgshift.ddl_columns s \
               JOIN pg_attribute a ON a.attrelid = s.relid AND a.attnum = s.attnum AND NOT a.attisdropped WHERE s.relid = t.oid AND s.name <> a.attname; \
             created := NOT EXISTS (SELECT 1 FROM pgshift.ddl_columns WHERE relid = t.oid) AND tg_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO'); \
             published := created AND (SELECT relkind = 'r' FROM pg_class WHERE oid = t.oid) \
               AND (NOT (SELECT relispartition FROM pg_class WHERE oid = t.oid) \
                    OR EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication pp ON pp.oid = pr.prpubid \
                               WHERE pp.pubname LIKE 'pgshift%' AND pg_partition_root(pr.prrelid) = pg_partition_root(t.oid))) \
               AND ((SELECT relreplident IN ('f', 'i') FROM pg_class WHERE oid = t.oid) \
                    OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = t.oid AND k.contype = 'p') \
                    OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.oid AND i.indisprimary)); \
             IF published THEN \
               FOR p IN SELECT pubname FROM pg_publication WHERE pubname LIKE 'pgshift%' AND NOT puballtables LOOP \
                 EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', p.pubname, t.nspname, t.relname); \
               END LOOP; \
             END IF; \
             IF (SELECT relkind FROM pg_class WHERE oid = t.oid) = 'p' THEN \
               FOR l IN SELECT lc.oid, ln.nspname, lc.relname FROM pg_partition_tree(t.oid) pt JOIN pg_class lc ON lc.oid = pt.relid \
                        JOIN pg_namespace ln ON ln.oid = lc.relnamespace \
                        WHERE pt.isleaf AND (lc.relreplident IN ('f', 'i') OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = lc.oid AND i.indisprimary)) LOOP \
                 FOR p IN SELECT pp.pubname FROM pg_publication pp WHERE pp.pubname LIKE 'pgshift%' AND NOT pp.puballtables \
                          AND EXISTS (SELECT 1 FROM pg_publication_rel pr WHERE pr.prpubid = pp.oid AND pg_partition_root(pr.prrelid) = pg_partition_root(l.oid)) \
                          AND NOT EXISTS (SELECT 1 FROM pg_publication_rel pr WHERE pr.prpubid = pp.oid AND pr.prrelid = l.oid) LOOP \
                   EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', p.pubname, l.nspname, l.relname); \
                 END LOOP; \
               END LOOP; \
             END IF; \
             DELETE FROM pgshift.ddl_columns WHERE relid = t.oid; \
             INSERT INTO pgshift.ddl_columns SELECT t.oid, a.attnum, a.attname FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped; \
             tables := tables || jsonb_build_object('schema', t.nspname, 'name', t.relname, 'renamed', renamed, 'columns', {columns}, \
               'created', created, 'published', published, 'partition', (SELECT relispartition FROM pg_class WHERE oid = t.oid), \
               'parent', (SELECT jsonb_build_array(pn.nspname, pc.relname) FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent \
                          JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE i.inhrelid = t.oid AND (SELECT relispartition FROM pg_class WHERE oid = t.oid)), \
               'bound', (SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = t.oid), \
               'partition_key', (SELECT pg_get_partkeydef(oid) FROM pg_class WHERE oid = t.oid AND relkind = 'p'), \
               'partitions', (SELECT coalesce(jsonb_agg(jsonb_build_array(cn.nspname, cc.relname, pg_get_expr(cc.relpartbound, cc.oid)) ORDER BY cc.relname), '[]') \
                              FROM pg_inherits i JOIN pg_class cc ON cc.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace \
                              WHERE i.inhparent = t.oid AND cc.relispartition), \
               'key', (SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k WHERE k.conrelid = t.oid AND k.contype = 'p'), \
               'constraints', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', k.conname, 'definition', pg_get_constraintdef(k.oid)) ORDER BY k.conname), '[]') \
                               FROM pg_constraint k WHERE k.conrelid = t.oid AND k.contype IN ('c', 'u', 'f', 'x') AND k.conislocal AND k.conparentid = 0)); \
           END LOOP; \
           SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object('schema', n.nspname, 'table', r.relname, 'name', c.relname, 'definition', pg_get_indexdef(c.oid))), '[]') \
             INTO indexes FROM pg_event_trigger_ddl_commands() o \
             JOIN pg_class c ON o.classid = 'pg_class'::regclass AND c.oid = o.objid AND c.relkind IN ('i', 'I') \
             JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_class r ON r.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace; \
           SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object('schema', n.nspname, 'name', y.typname, \
               'labels', (SELECT jsonb_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = y.oid))), '[]') \
             INTO enums FROM pg_event_trigger_ddl_commands() o \
             JOIN pg_type y ON o.classid = 'pg_type'::regclass AND y.oid = o.objid AND y.typtype = 'e' JOIN pg_namespace n ON n.oid = y.typnamespace; \
           SELECT coalesce(jsonb_agg(x.o ORDER BY x.n), '[]') INTO objects FROM ( \
             SELECT o.objid AS n, jsonb_build_object('kind', 'function', 'name', o.object_identity, 'ddl', pg_get_functiondef(o.objid)) AS o \
               FROM pg_event_trigger_ddl_commands() o JOIN pg_proc f ON o.classid = 'pg_proc'::regclass AND f.oid = o.objid AND f.prokind IN ('f', 'p') \
               WHERE o.schema_name <> 'pgshift' AND o.schema_name NOT LIKE 'pg_temp%' \
             UNION ALL \
             SELECT o.objid, jsonb_build_object('kind', 'view', 'name', o.object_identity, \
                      'ddl', format('CREATE OR REPLACE VIEW %s AS %s', o.object_identity, pg_get_viewdef(o.objid))) \
               FROM pg_event_trigger_ddl_commands() o JOIN pg_class c ON o.classid = 'pg_class'::regclass AND c.oid = o.objid AND c.relkind = 'v' \
               WHERE o.schema_name <> 'pgshift' AND o.schema_name NOT LIKE 'pg_temp%') x; \
           PERFORM pg_logical_emit_message(true, '{PREFIX}', jsonb_build_object('tag', tg_tag, 'statement', current_query(), 'tables', tables, \
             'indexes', indexes, 'enums', enums, 'objects', objects)::text); \
         EXCEPTION WHEN others THEN \
           PERFORM pg_logical_emit_message(true, '{PREFIX}', jsonb_build_object('tag', tg_tag, 'statement', current_query(), 'tables', '[]'::jsonb, 'error', SQLERRM)::text); \
         END $f$; \
         CREATE OR REPLACE FUNCTION pgshift.ddl_drop_message() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$ \
         DECLARE dropped jsonb; indexes jsonb; constraints jsonb; objects jsonb; \
         BEGIN \
           SELECT coalesce(jsonb_agg(jsonb_build_object('kind', d.object_type, 'name', d.object_identity)), '[]') INTO objects \
             FROM pg_event_trigger_dropped_objects() d WHERE d.object_type IN ('view', 'function', 'procedure') AND d.original \
             AND d.schema_name <> 'pgshift' AND d.schema_name NOT LIKE 'pg_temp%'; \
           SELECT coalesce(jsonb_agg(jsonb_build_object('schema', d.schema_name, 'name', d.object_name)), '[]') INTO dropped \
             FROM pg_event_trigger_dropped_objects() d WHERE d.object_type = 'table' AND d.original; \
           SELECT coalesce(jsonb_agg(jsonb_build_object('schema', d.address_names[1], 'name', d.address_names[2])), '[]') INTO indexes \
             FROM pg_event_trigger_dropped_objects() d WHERE d.object_type = 'index' AND d.original; \
           SELECT coalesce(jsonb_agg(jsonb_build_object('schema', d.address_names[1], 'table', d.address_names[2], 'name', d.address_names[3])), '[]') \
             INTO constraints FROM pg_event_trigger_dropped_objects() d WHERE d.object_type = 'table constraint' AND d.original; \
           IF jsonb_array_length(dropped) + jsonb_array_length(indexes) + jsonb_array_length(constraints) + jsonb_array_length(objects) > 0 THEN \
             PERFORM pg_logical_emit_message(true, '{PREFIX}', jsonb_build_object('tag', tg_tag, 'statement', current_query(), 'tables', '[]'::jsonb, \
               'dropped', dropped, 'dropped_indexes', indexes, 'dropped_constraints', constraints, 'dropped_objects', objects)::text); \
           END IF; \
         EXCEPTION WHEN others THEN \
           PERFORM pg_logical_emit_message(true, '{PREFIX}', jsonb_build_object('tag', tg_tag, 'statement', current_query(), 'tables', '[]'::jsonb, 'error', SQLERRM)::text); \
         END $f$; \
         DROP EVENT TRIGGER IF EXISTS {TRIGGER}; \
         CREATE EVENT TRIGGER {TRIGGER} ON ddl_command_end EXECUTE FUNCTION pgshift.ddl_message(); \
         DROP EVENT TRIGGER IF EXISTS {TRIGGER}_drop; \
         CREATE EVENT TRIGGER {TRIGGER}_drop ON sql_drop EXECUTE FUNCTION pgshift.ddl_drop_message()",
        SKIP = pgshift_postgres::catalog::SKIP_SCHEMAS,
        columns = columns_of("t.oid")
    );
    src.batch_execute(&sql).await.context(&src_name, || "install the event trigger that reports schema changes".into())?;
    Ok(None)
}

/// Removes the event trigger once no pgshift slot on the source needs it.
pub async fn remove_if_unused(src: &Session) -> Result<()> {
    let src_name = src.endpoint();
    let in_use: bool = src
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE 'pgshift%' AND database = current_database())", &[])
        .await
        .context(&src_name, || "look for pgshift slots".into())?
        .get(0);
    if !in_use {
        src.batch_execute(&format!(
            "DROP EVENT TRIGGER IF EXISTS {TRIGGER}; DROP EVENT TRIGGER IF EXISTS {TRIGGER}_drop; DROP FUNCTION IF EXISTS pgshift.ddl_message(); \
             DROP FUNCTION IF EXISTS pgshift.ddl_drop_message(); DROP TABLE IF EXISTS pgshift.ddl_columns"
        ))
            .await
            .context(&src_name, || "remove the event trigger that reports schema changes".into())?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct Change {
    pub tag: String,
    pub statement: String,
    pub tables: Vec<ChangedTable>,
    /// Indexes the command created.
    #[serde(default)]
    pub indexes: Vec<ChangedIndex>,
    /// Enums the command changed, with all their labels in order.
    #[serde(default)]
    pub enums: Vec<ChangedEnum>,
    /// Tables and indexes the command dropped.
    #[serde(default)]
    pub dropped: Vec<Dropped>,
    #[serde(default)]
    pub dropped_indexes: Vec<Dropped>,
    #[serde(default)]
    pub dropped_constraints: Vec<DroppedConstraint>,
    /// Functions, procedures and views the command created or replaced, each with the
    /// statement that makes it as the source's catalog has it then.
    #[serde(default)]
    pub objects: Vec<ChangedObject>,
    /// Functions, procedures and views the command dropped.
    #[serde(default)]
    pub dropped_objects: Vec<ChangedObject>,
    /// The event trigger could not describe the change.
    #[serde(default)]
    pub error: Option<String>,
}

/// A function, procedure or view: its kind (`function`, `procedure`, `view`), its name
/// as the catalog identifies it (`public.total(integer)`) and, made or replaced, its
/// definition.
#[derive(Debug, Deserialize)]
pub struct ChangedObject {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub ddl: Option<String>,
}

/// A dropped table or index: `schema.name`.
#[derive(Debug, Deserialize)]
pub struct Dropped {
    pub schema: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct DroppedConstraint {
    pub schema: String,
    pub table: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct NamedConstraint {
    pub name: String,
    pub definition: String,
}

#[derive(Debug, Deserialize)]
pub struct ChangedIndex {
    pub schema: String,
    pub table: String,
    pub name: String,
    pub definition: String,
}

#[derive(Debug, Deserialize)]
pub struct ChangedEnum {
    pub schema: String,
    pub name: String,
    pub labels: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChangedTable {
    pub schema: String,
    pub name: String,
    /// (old name, new name) of renamed columns.
    #[serde(default)]
    pub renamed: Vec<(String, String)>,
    pub columns: Vec<ChangedColumn>,
    /// Made by this command (and added to pgshift's publications on the source).
    #[serde(default)]
    pub created: bool,
    /// `PRIMARY KEY (...)`, if it has one.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub partition: bool,
    /// A partition's parent (schema, name) and bound (`FOR VALUES ...`).
    #[serde(default)]
    pub parent: Option<(String, String)>,
    #[serde(default)]
    pub bound: Option<String>,
    /// A partitioned table's key (`RANGE (created_at)`).
    #[serde(default)]
    pub partition_key: Option<String>,
    /// A partitioned table's partitions now: (schema, name, bound). Partitions attached
    /// or detached on the source are attached or detached on the target.
    #[serde(default)]
    pub partitions: Vec<(String, String, String)>,
    /// Added to pgshift's publications (it has a primary key or replica identity:
    /// without one, the source would refuse its updates once published).
    #[serde(default)]
    pub published: bool,
    /// Check, unique, foreign-key and exclusion constraints (not the key, not NOT NULL).
    #[serde(default)]
    pub constraints: Vec<NamedConstraint>,
}

#[derive(Debug, Deserialize)]
pub struct ChangedColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub not_null: bool,
    pub generated: bool,
    pub default: Option<String>,
    /// '' none, 'a' ALWAYS, 'd' BY DEFAULT.
    #[serde(default)]
    pub identity: String,
    /// The sequence the column owns (serial or identity), qualified.
    #[serde(default)]
    pub sequence: Option<String>,
    /// `schema.name` of its collation when not its type's; the outer None: a message
    /// from an older pgshift's trigger, which did not say (the collation is left alone).
    #[serde(default, deserialize_with = "described")]
    pub collation: Option<Option<String>>,
}

/// A key present in the message, even as null.
fn described<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

impl Change {
    pub fn parse(content: &[u8]) -> Result<Change> {
        serde_json::from_slice(content).map_err(|e| Error::SchemaChange(format!("unreadable schema change message from the source: {e}")))
    }

    /// The statement for logs: its first line, without literals' contents.
    pub fn shown(&self) -> String {
        let first = self.statement.trim().lines().next().unwrap_or_default();
        let mut out = String::new();
        let mut in_literal = false;
        for c in first.chars() {
            match (c, in_literal) {
                ('\'', false) => {
                    in_literal = true;
                    out.push_str("'...");
                }
                ('\'', true) => {
                    in_literal = false;
                    out.push('\'');
                }
                (_, true) => {}
                (c, false) => out.push(c),
            }
        }
        out.chars().take(200).collect()
    }
}

/// What the follower knows to plan a schema change (target names throughout).
pub struct Following {
    pub rewriter: StatementRewriter,
    /// `schema.table` of the tables the run follows.
    pub followed: HashSet<String>,
    /// `schema.table.column` the target holds differently by design (computed
    /// vectors, `--cast` columns): left as they are.
    pub own: HashSet<String>,
    /// `schema.table` -> the embedding expression computed from its rows.
    pub embedded: std::collections::HashMap<String, String>,
}

/// What a schema change does to the target.
#[derive(Debug, Default)]
pub struct Plan {
    pub statements: Vec<String>,
    /// Tables the run follows from now on.
    pub created: Vec<String>,
    /// Tables the run no longer follows.
    pub dropped: Vec<String>,
}

/// What the target must run for `change`: new enum values (in their place), new
/// indexes, renamed, added, dropped and changed columns of followed tables, tables
/// the source created or dropped. What pgshift cannot follow (a new partition, a
/// column an embedding expression reads, a change the event trigger could not
/// describe) is an error that names the statement and the fix.
/// `map`: where the source's schemas go on the target.
pub fn plan(change: &Change, target: &Catalog, map: &SchemaMap, f: &Following) -> Result<Plan> {
    let stop = |what: String| {
        Error::SchemaChange(format!(
            "the source ran `{}`: {what}: make the same change on the target, then run pgshift follow again (it resumes at this change)",
            change.shown()
        ))
    };
    if let Some(error) = &change.error {
        return Err(stop(format!("its event trigger could not describe it ({error})")));
    }
    let mut plan = Plan::default();
    let out = &mut plan.statements;
    for e in &change.enums {
        let schema = map.target_schema(&e.schema);
        let Some(have) = target.enums.iter().find(|x| x.schema == schema && x.name == e.name) else { continue };
        for (i, label) in e.labels.iter().enumerate().filter(|(_, l)| !have.labels.contains(l)) {
            let place = match i {
                0 => e.labels.get(1).map(|next| format!(" BEFORE {}", quote_literal(next))).unwrap_or_default(),
                _ => format!(" AFTER {}", quote_literal(&e.labels[i - 1])),
            };
            out.push(format!("ALTER TYPE {} ADD VALUE IF NOT EXISTS {}{place}", qualified(schema, &e.name), quote_literal(label)));
        }
    }
    // Built in the apply transaction: nothing else writes to the target yet.
    for i in &change.indexes {
        let schema = map.target_schema(&i.schema);
        if f.followed.contains(&format!("{schema}.{}", i.table)) {
            let definition = f.rewriter.rewrite(&i.definition).replacen(" ON ONLY ", " ON ", 1);
            out.push(definition.replacen("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX IF NOT EXISTS ", 1).replacen("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1));
        }
    }
    // Functions before the tables' changes (a default or a check may call one), with
    // bodies not checked: they may name what a later statement of the change makes.
    if change.objects.iter().any(|o| o.kind == "function") {
        out.push("SET LOCAL check_function_bodies = off".into());
    }
    for o in change.objects.iter().filter(|o| o.kind == "function") {
        out.extend(o.ddl.as_ref().map(|d| f.rewriter.rewrite(d)));
    }
    for o in &change.dropped_objects {
        let kind = match o.kind.as_str() {
            "view" => "VIEW",
            "procedure" => "PROCEDURE",
            _ => "FUNCTION",
        };
        out.push(format!("DROP {kind} IF EXISTS {}", f.rewriter.rewrite(&o.name)));
    }
    for d in &change.dropped_indexes {
        out.push(format!("DROP INDEX IF EXISTS {}", qualified(map.target_schema(&d.schema), &d.name)));
    }
    for c in &change.dropped_constraints {
        let schema = map.target_schema(&c.schema);
        if f.followed.contains(&format!("{schema}.{}", c.table)) {
            out.push(format!("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}", qualified(schema, &c.table), quote_ident(&c.name)));
        }
    }
    for d in &change.dropped {
        let (schema, name) = (map.target_schema(&d.schema), d.name.as_str());
        if f.followed.contains(&format!("{schema}.{name}")) {
            out.push(format!("DROP TABLE IF EXISTS {}", qualified(schema, name)));
            plan.dropped.push(format!("{schema}.{name}"));
        }
    }
    for t in &change.tables {
        let (schema, name) = (map.target_schema(&t.schema), t.name.as_str());
        let key = format!("{schema}.{name}");
        let Some(table) = target.table(schema, name) else {
            if t.created && t.partition {
                // Its rows arrive from the next change on: it was added to the run's
                // publication in the transaction that made it, before any row.
                let (Some((parent_schema, parent_name)), Some(bound)) = (&t.parent, &t.bound) else {
                    return Err(stop(format!("{key} is a new partition whose parent the event trigger could not name")));
                };
                let parent = qualified(map.target_schema(parent_schema), parent_name);
                let leaf = t.partition_key.is_none();
                if leaf && !t.published {
                    return Err(stop(format!(
                        "{key} is a new partition of a table whose partitions the run does not publish, or without a primary key or replica identity: \
                         create it on the target (CREATE TABLE ... PARTITION OF), add it to the run's publication on the source and copy the rows written to it before that"
                    )));
                }
                let by = t.partition_key.as_ref().map(|k| format!(" PARTITION BY {}", f.rewriter.rewrite(k))).unwrap_or_default();
                out.push(format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)));
                out.push(format!("CREATE TABLE IF NOT EXISTS {} PARTITION OF {parent} {}{by}", qualified(schema, name), f.rewriter.rewrite(bound)));
                if leaf {
                    plan.created.push(key);
                }
                continue;
            }
            if t.created && !t.published {
                // Not published (the source would refuse its updates and deletes): made
                // here, and copied again inside the cutover's pause like the run's other
                // tables without a key. Attached to a followed partitioned table later
                // (pg_partman's way), it is published then, and followed from there.
                tracing::warn!(
                    "{key} is a new table without a primary key or replica identity: catch-up cannot carry its changes, so the cutover \
                     copies it again inside its write pause; give it a key on the source to have it followed"
                );
            }
            if t.created {
                // A serial column's sequence comes first (an identity column makes its own).
                for c in t.columns.iter().filter(|c| c.identity.is_empty()) {
                    if let Some(seq) = &c.sequence {
                        out.push(format!("CREATE SEQUENCE IF NOT EXISTS {}", f.rewriter.rewrite(seq)));
                    }
                }
                let mut columns: Vec<String> = t.columns.iter().map(|c| column_definition(c, &f.rewriter)).collect();
                columns.extend(t.key.iter().cloned());
                columns.extend(t.constraints.iter().map(|c| format!("CONSTRAINT {} {}", quote_ident(&c.name), f.rewriter.rewrite(&c.definition))));
                out.push(format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)));
                out.push(format!("CREATE TABLE {} ({})", qualified(schema, name), columns.join(", ")));
                for c in t.columns.iter().filter(|c| c.identity.is_empty()) {
                    if let Some(seq) = &c.sequence {
                        out.push(format!("ALTER SEQUENCE {} OWNED BY {}.{}", f.rewriter.rewrite(seq), qualified(schema, name), quote_ident(&c.name)));
                    }
                }
                plan.created.push(key);
            }
            continue;
        };
        // Partitions attached to or detached from it on the source (pg_partman makes a
        // table, then attaches it), where the target has the table.
        if table.kind == pgshift_postgres::catalog::TableKind::Partitioned {
            let on_target: Vec<&pgshift_postgres::catalog::Table> =
                target.tables.iter().filter(|p| p.partition_of.as_ref().is_some_and(|(ps, pn, _)| ps == schema && pn == name)).collect();
            for (ps, pn, bound) in &t.partitions {
                let ps = map.target_schema(ps);
                if !on_target.iter().any(|p| p.schema == ps && &p.name == pn) && target.table(ps, pn).is_some() {
                    out.push(format!("ALTER TABLE {} ATTACH PARTITION {} {}", qualified(schema, name), qualified(ps, pn), f.rewriter.rewrite(bound)));
                }
            }
            for p in on_target.iter().filter(|p| !t.partitions.iter().any(|(ps, pn, _)| map.target_schema(ps) == p.schema && *pn == p.name)) {
                // Dropped partitions go with their own message; only detached ones are still on the source.
                if !change.dropped.iter().any(|d| map.target_schema(&d.schema) == p.schema && d.name == p.name) && change.tag == "ALTER TABLE" {
                    out.push(format!("ALTER TABLE {} DETACH PARTITION {}", qualified(schema, name), p.qualified()));
                }
            }
        }
        if !f.followed.contains(&key) {
            continue;
        }
        let target_name = qualified(schema, name);
        let alter = |what: String| format!("ALTER TABLE {target_name} {what}");
        let reads = |column: &str| f.embedded.get(&key).is_some_and(|text| reads_column(text, column));
        // Renames first: the target's names as they will be, for what follows.
        let mut names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
        for (old, new) in &t.renamed {
            if let Some(n) = names.iter_mut().find(|n| *n == old).filter(|_| !table.columns.iter().any(|c| &c.name == new)) {
                if reads(old) {
                    return Err(stop(format!("column {old} of {key}, which its embedding expression reads, was renamed to {new}; a run's expression cannot change: cut over first, then `pgshift reembed`")));
                }
                out.push(alter(format!("RENAME COLUMN {} TO {}", quote_ident(old), quote_ident(new))));
                *n = new.clone();
            }
        }
        for c in &t.columns {
            if !names.contains(&c.name) {
                out.push(alter(format!("ADD COLUMN {}", column_definition(c, &f.rewriter))));
                continue;
            }
            let Some(have) = table.columns.iter().find(|tc| tc.name == c.name || t.renamed.iter().any(|(o, n)| *n == c.name && tc.name == *o)) else { continue };
            if f.own.contains(&format!("{key}.{}", have.name)) || c.generated || have.generated.is_some() {
                continue;
            }
            let col = quote_ident(&c.name);
            let wanted = f.rewriter.rewrite(&c.type_name);
            let collation = match &c.collation {
                Some(described) => described.as_deref().map(|x| f.rewriter.rewrite(x)),
                None => have.collation.clone(),
            };
            if !pgshift_postgres::schema_map::same_type_name(&wanted, &have.type_name) || collation != have.collation {
                let collate = collation.map(|x| format!(" COLLATE {x}")).unwrap_or_default();
                out.push(alter(format!("ALTER COLUMN {col} TYPE {wanted}{collate} USING {col}::{wanted}")));
            }
            let default = c.default.as_deref().map(|d| f.rewriter.rewrite(d));
            if have.identity.is_empty() && default != have.default {
                out.push(alter(match default {
                    Some(d) => format!("ALTER COLUMN {col} SET DEFAULT {d}"),
                    None => format!("ALTER COLUMN {col} DROP DEFAULT"),
                }));
            }
            if c.not_null != have.not_null {
                out.push(alter(format!("ALTER COLUMN {col} {} NOT NULL", if c.not_null { "SET" } else { "DROP" })));
            }
        }
        for c in t.constraints.iter().filter(|c| !table.constraints.iter().any(|tc| tc.name == c.name)) {
            out.push(alter(format!("ADD CONSTRAINT {} {}", quote_ident(&c.name), f.rewriter.rewrite(&c.definition))));
        }
        for gone in names.iter().filter(|n| !t.columns.iter().any(|c| &c.name == *n) && !f.own.contains(&format!("{key}.{n}"))) {
            if reads(gone) {
                return Err(stop(format!("column {gone} of {key}, which its embedding expression reads, was dropped; a run's expression cannot change: cut over first, then `pgshift reembed`")));
            }
            out.push(alter(format!("DROP COLUMN IF EXISTS {}", quote_ident(gone))));
        }
    }
    // Views after the tables they read have their new columns.
    for o in change.objects.iter().filter(|o| o.kind == "view") {
        out.extend(o.ddl.as_ref().map(|d| f.rewriter.rewrite(d)));
    }
    Ok(plan)
}

/// Whether an SQL expression names `column` (as a word, quoted or not).
fn reads_column(text: &str, column: &str) -> bool {
    let quoted = format!("\"{column}\"");
    text.contains(&quoted)
        || text.match_indices(column).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + column.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
}

/// The column as the target gets it (names moved), rendered like the load's own tables.
fn column_definition(c: &ChangedColumn, rewriter: &StatementRewriter) -> String {
    let expression = c.default.as_deref().map(|e| rewriter.rewrite(e));
    pgshift_postgres::ddl::column_definition(&Column {
        name: c.name.clone(),
        type_name: rewriter.rewrite(&c.type_name),
        type_oid: 0,
        not_null: c.not_null,
        default: expression.clone().filter(|_| !c.generated),
        identity: c.identity.clone(),
        generated: expression.filter(|_| c.generated),
        oid_in_binary: false,
        comment: None,
        collation: c.collation.clone().flatten().map(|x| rewriter.rewrite(&x)),
        cast_to: None,
        settings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_message_without_a_collation_leaves_it_alone() {
        let column = |json: &str| serde_json::from_str::<ChangedColumn>(json).unwrap().collation;
        let base = r#""name": "c", "type": "text", "not_null": false, "generated": false, "default": null"#;
        assert_eq!(column(&format!("{{{base}}}")), None, "an older trigger did not say");
        assert_eq!(column(&format!(r#"{{{base}, "collation": null}}"#)), Some(None), "the type's own");
        assert_eq!(column(&format!(r#"{{{base}, "collation": "pg_catalog.\"C\""}}"#)), Some(Some(r#"pg_catalog."C""#.into())));
    }
}
