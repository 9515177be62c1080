//! The schema beyond tables: what the application relies on besides its rows.
//! Functions, procedures and plain aggregates (which defaults, checks and triggers
//! call), collations, operators, casts and text search (`operators.rs`), views and
//! materialized views (with their indexes), statistics objects, triggers and rules
//! with their enabled state, row-level security and its policies, owners and
//! privileges, and comments on all of them, read from the catalog and rendered as
//! DDL. What is not carried is listed with the reason and what to do, never skipped
//! silently.
//!
//! When each runs is the caller's business; [`SchemaObjects`] groups them by the
//! moment they can run: collations before the types, routines and then operators,
//! casts and text search before the tables (function bodies are not checked:
//! `check_function_bodies = off`), routines whose signature names a table's row
//! type after the tables, views in dependency order and statistics objects after
//! the load, and triggers, rules and row security last.

mod operators;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio_postgres::Client;

use crate::conn::Session;
use crate::catalog::Table;
use crate::error::{Context, PgError};
use crate::sql::{qualified, quote_ident, quote_literal};

use crate::catalog::{not_from_extension, not_internal, SKIP_SCHEMAS};

/// What an object is, as messages and `--dry-run` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Schema,
    Collation,
    TextSearchDictionary,
    TextSearchConfiguration,
    Operator,
    OperatorFamily,
    Cast,
    Function,
    Procedure,
    Aggregate,
    View,
    MaterializedView,
    Trigger,
    Rule,
    StatisticsObject,
    Policy,
    RowSecurity,
    Comment,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Schema => "schema",
            ObjectKind::Collation => "collation",
            ObjectKind::TextSearchDictionary => "text search dictionary",
            ObjectKind::TextSearchConfiguration => "text search configuration",
            ObjectKind::Operator => "operator",
            ObjectKind::OperatorFamily => "operator family",
            ObjectKind::Cast => "cast",
            ObjectKind::Function => "function",
            ObjectKind::Procedure => "procedure",
            ObjectKind::Aggregate => "aggregate",
            ObjectKind::View => "view",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Trigger => "trigger",
            ObjectKind::Rule => "rule",
            ObjectKind::StatisticsObject => "statistics object",
            ObjectKind::Policy => "policy",
            ObjectKind::RowSecurity => "row security",
            ObjectKind::Comment => "comment",
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ObjectKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One object: its statements (the object and its comment, indexes, options).
#[derive(Clone, Debug, Serialize)]
pub struct ObjectDdl {
    pub kind: ObjectKind,
    /// `schema.name` (for a trigger or policy: `schema.table.name`).
    pub name: String,
    pub statements: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SchemaObjects {
    /// Before the types: comments on schemas, collations.
    pub before_types: Vec<ObjectDdl>,
    /// Before the tables.
    pub routines: Vec<ObjectDdl>,
    /// After the routines, before the tables: text search dictionaries and
    /// configurations, operators, operator families and classes, casts.
    pub operators: Vec<ObjectDdl>,
    /// After the tables: routines whose signature names a table's row type.
    pub routines_after_tables: Vec<ObjectDdl>,
    /// After the load, in dependency order; with the routines that name their row types.
    pub views: Vec<ObjectDdl>,
    /// Statistics objects of copied tables (after the load, with the views).
    pub statistics: Vec<ObjectDdl>,
    /// Comments on the copied tables' indexes and constraints, and on sequences
    /// (after the load; those on types go with the types).
    pub comments: Vec<ObjectDdl>,
    /// Policies (created with the views; they only act once row security is on).
    pub policies: Vec<ObjectDdl>,
    /// Triggers and rules with their enabled state, and row security switched on: the last step,
    /// at the cutover when changes are followed (so nothing fires twice while the
    /// source's own triggers' results arrive as changes).
    pub activation: Vec<ObjectDdl>,
    /// What is not carried: the object, why, and what to do.
    pub not_carried: Vec<String>,
    /// What is carried but should be checked (routine bodies under a schema map).
    pub warnings: Vec<String>,
    /// Roles the objects name (policies) that the target must have.
    pub roles: Vec<String>,
    /// Owners and privileges.
    pub access: Access,
}

impl SchemaObjects {
    pub fn statements(objects: &[ObjectDdl]) -> Vec<String> {
        objects.iter().flat_map(|o| o.statements.iter().cloned()).collect()
    }
}

fn comment(kind_sql: &str, name: &str, text: Option<String>) -> Option<String> {
    text.map(|t| format!("COMMENT ON {kind_sql} {name} IS {}", quote_literal(&t)))
}

/// Reads the objects that belong with `tables` (the tables being copied): routines
/// of every user schema, views whose every relation is copied, triggers and row
/// security of copied tables. `languages`: the procedural languages the target has
/// or will get (CREATE EXTENSION), for functions written in them. The `public` schema's
/// owner, privileges and comment are carried like any schema's.
pub async fn inspect(db: &Session, tables: &[&Table], languages: &BTreeSet<String>) -> Result<SchemaObjects, PgError> {
    let (client, endpoint): (&Client, &str) = (db, db.endpoint());
    let q = |what: &'static str| move || format!("read the catalog ({what})");
    let mut out = SchemaObjects::default();
    let copied: BTreeSet<u32> = tables.iter().map(|t| t.oid).collect();

    // Routines (not the ones a type makes for itself, such as a range type's
    // constructors), and the kinds of relations whose row types their signatures name.
    let rows = client
        .query(
            &format!(
                "SELECT p.oid, n.nspname, p.proname, p.prokind::text, l.lanname, pg_get_function_identity_arguments(p.oid), \
                   CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) END, obj_description(p.oid, 'pg_proc'), \
                   (SELECT string_agg(DISTINCT c.relkind::text, '') FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid \
                     WHERE t.oid = ANY (p.proargtypes::oid[] || coalesce(p.proallargtypes, '{{}}') || p.prorettype) AND c.relkind <> 'c'), \
                   a.aggkind::text, a.aggtransfn::regproc::text, format_type(a.aggtranstype, NULL), \
                   nullif(a.aggfinalfn::regproc::text, '-'), nullif(a.aggcombinefn::regproc::text, '-'), a.agginitval, \
                   pg_get_function_arguments(p.oid) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang \
                 LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid \
                 WHERE {SKIP_SCHEMAS} AND {} AND {} ORDER BY p.oid",
                not_from_extension("p.oid"),
                not_internal("pg_proc", "p.oid")
            ),
            &[],
        )
        .await
        .context(&endpoint, q("functions"))?;
    let mut view_routines = Vec::new();
    let mut carried_routines: Vec<u32> = Vec::new();
    for r in &rows {
        let (schema, name, kind, language): (String, String, String, String) = (r.get(1), r.get(2), r.get(3), r.get(4));
        let display = format!("{schema}.{name}({})", r.get::<_, String>(5));
        let word = if kind == "p" { "PROCEDURE" } else if kind == "a" { "AGGREGATE" } else { "FUNCTION" };
        if language == "c" && kind != "a" {
            out.not_carried.push(format!("function {display}: a C function needs its shared library on the target: install it there and create the function by hand"));
            continue;
        }
        if !languages.contains(&language) && kind != "a" {
            out.not_carried.push(format!(
                "{} {display}: written in {language}, which the target does not have (install the language or its extension there, \
                 then create the function by hand)",
                word.to_lowercase()
            ));
            continue;
        }
        let mut statements = match (kind.as_str(), r.get::<_, Option<String>>(6), r.get::<_, Option<String>>(9)) {
            (_, Some(def), _) => vec![def],
            ("a", _, Some(aggkind)) if aggkind == "n" => {
                let mut parts = vec![format!("SFUNC = {}", r.get::<_, String>(10)), format!("STYPE = {}", r.get::<_, String>(11))];
                parts.extend(r.get::<_, Option<String>>(12).map(|f| format!("FINALFUNC = {f}")));
                parts.extend(r.get::<_, Option<String>>(13).map(|f| format!("COMBINEFUNC = {f}")));
                parts.extend(r.get::<_, Option<String>>(14).map(|i| format!("INITCOND = {}", quote_literal(&i))));
                vec![format!("CREATE AGGREGATE {}({}) ({})", qualified(&schema, &name), r.get::<_, String>(15), parts.join(", "))]
            }
            _ => {
                out.not_carried.push(format!("aggregate {display}: ordered-set and hypothetical-set aggregates are not carried: create it by hand"));
                continue;
            }
        };
        let signature = format!("{}({})", qualified(&schema, &name), r.get::<_, String>(5));
        statements.extend(comment(word, &signature, r.get(7)));
        carried_routines.push(r.get(0));
        let object = ObjectDdl { kind: if kind == "p" { ObjectKind::Procedure } else if kind == "a" { ObjectKind::Aggregate } else { ObjectKind::Function }, name: display, statements };
        match r.get::<_, Option<String>>(8) {
            Some(kinds) if kinds.contains('v') || kinds.contains('m') => view_routines.push(object),
            Some(_) => out.routines_after_tables.push(object),
            None => out.routines.push(object),
        }
    }

    out.before_types = operators::before_types(client, endpoint).await?;
    out.operators = operators::after_routines(client, endpoint, &mut out.not_carried).await?;

    // Views and materialized views, with what they read.
    let views = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname, c.relname, c.relkind::text, pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class'), \
                   coalesce(array_to_string(c.reloptions, ', '), ''), \
                   ARRAY(SELECT DISTINCT d.refobjid::int8 FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
                         WHERE r.ev_class = c.oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> c.oid), \
                   ARRAY(SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = c.oid ORDER BY i.indexrelid), c.relispopulated \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('v', 'm') AND {SKIP_SCHEMAS} AND {} ORDER BY c.oid",
                not_from_extension("c.oid")
            ),
            &[],
        )
        .await
        .context(&endpoint, q("views"))?;
    let names: BTreeMap<u32, String> = views.iter().map(|v| (v.get::<_, u32>(0), format!("{}.{}", v.get::<_, String>(1), v.get::<_, String>(2)))).collect();
    let mut pending: Vec<&tokio_postgres::Row> = views.iter().collect();
    let mut carried: BTreeSet<u32> = BTreeSet::new();
    // Dependency order: a view goes once everything it reads is there.
    loop {
        let ready: Vec<usize> = (0..pending.len())
            .filter(|&i| pending[i].get::<_, Vec<i64>>(7).iter().all(|d| copied.contains(&(*d as u32)) || carried.contains(&(*d as u32))))
            .collect();
        if ready.is_empty() {
            break;
        }
        for i in ready.into_iter().rev() {
            let v = pending.remove(i);
            let (schema, name, kind): (String, String, String) = (v.get(1), v.get(2), v.get(3));
            let target = qualified(&schema, &name);
            let definition = v.get::<_, String>(4).trim().trim_end_matches(';').to_string();
            let options: String = v.get(6);
            let with = if options.is_empty() { String::new() } else { format!(" WITH ({options})") };
            let (word, mut statements) = match kind.as_str() {
                // Populated from the copied rows, as a restore's REFRESH would; left
                // empty when it is on the source.
                "m" => {
                    let data = if v.get::<_, bool>(9) { "WITH DATA" } else { "WITH NO DATA" };
                    ("MATERIALIZED VIEW", vec![format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {target}{with} AS {definition} {data}")])
                }
                _ => ("VIEW", vec![format!("CREATE OR REPLACE VIEW {target}{with} AS {definition}")]),
            };
            // A resumed load runs these again.
            statements.extend(v.get::<_, Vec<String>>(8).iter().map(|i| {
                i.replacen("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX IF NOT EXISTS ", 1).replacen("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
            }));
            statements.extend(comment(word, &target, v.get(5)));
            carried.insert(v.get(0));
            out.views.push(ObjectDdl { kind: if kind == "m" { ObjectKind::MaterializedView } else { ObjectKind::View }, name: format!("{schema}.{name}"), statements });
        }
    }
    let order = view_order(&views, &carried);
    out.views.sort_by_key(|o| order.iter().position(|n| n == &o.name));
    for v in pending {
        let missing: Vec<String> = v
            .get::<_, Vec<i64>>(7)
            .iter()
            .map(|d| *d as u32)
            .filter(|d| !copied.contains(d) && !carried.contains(d))
            .map(|d| names.get(&d).cloned().unwrap_or_else(|| format!("relation {d}")))
            .collect();
        out.not_carried.push(format!(
            "view {}.{}: reads {}, which {} not copied (add it to --tables, or create the view by hand)",
            v.get::<_, String>(1),
            v.get::<_, String>(2),
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" }
        ));
    }
    out.views.extend(view_routines);
    let on_copied = |oid: u32| copied.contains(&oid) || carried.contains(&oid);

    // Triggers (not the internal ones of foreign keys, not partitions' clones of their parent's).
    let triggers = client
        .query(
            &format!(
                "SELECT t.tgrelid, n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text, obj_description(t.oid, 'pg_trigger') \
                 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND {SKIP_SCHEMAS} ORDER BY t.oid"
            ),
            &[],
        )
        .await
        .context(&endpoint, q("triggers"))?;
    for t in &triggers {
        let (table_oid, schema, table, name): (u32, String, String, String) = (t.get(0), t.get(1), t.get(2), t.get(3));
        let display = format!("{schema}.{table}.{name}");
        if !on_copied(table_oid) {
            continue;
        }
        let target = qualified(&schema, &table);
        let mut statements = vec![format!("DROP TRIGGER IF EXISTS {} ON {target}", quote_ident(&name)), t.get::<_, String>(4)];
        let state = match t.get::<_, String>(5).as_str() {
            "D" => Some("DISABLE TRIGGER"),
            "R" => Some("ENABLE REPLICA TRIGGER"),
            "A" => Some("ENABLE ALWAYS TRIGGER"),
            _ => None,
        };
        statements.extend(state.map(|s| format!("ALTER TABLE {target} {s} {}", quote_ident(&name))));
        statements.extend(comment("TRIGGER", &format!("{} ON {target}", quote_ident(&name)), t.get(6)));
        out.activation.push(ObjectDdl { kind: ObjectKind::Trigger, name: display, statements });
    }

    // Rules (not the ones that make a view), with their enabled state.
    let rules = client
        .query(
            &format!(
                "SELECT r.ev_class, n.nspname, c.relname, r.rulename, pg_get_ruledef(r.oid), r.ev_enabled::text, obj_description(r.oid, 'pg_rewrite') \
                 FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE r.rulename <> '_RETURN' AND {SKIP_SCHEMAS} ORDER BY r.oid"
            ),
            &[],
        )
        .await
        .context(&endpoint, q("rules"))?;
    for r in rules.iter().filter(|r| on_copied(r.get(0))) {
        let (schema, table, name): (String, String, String) = (r.get(1), r.get(2), r.get(3));
        let target = qualified(&schema, &table);
        let definition = r.get::<_, String>(4).trim().trim_end_matches(';').to_string();
        let mut statements = vec![format!("DROP RULE IF EXISTS {} ON {target}", quote_ident(&name)), definition];
        let state = match r.get::<_, String>(5).as_str() {
            "D" => Some("DISABLE RULE"),
            "R" => Some("ENABLE REPLICA RULE"),
            "A" => Some("ENABLE ALWAYS RULE"),
            _ => None,
        };
        statements.extend(state.map(|s| format!("ALTER TABLE {target} {s} {}", quote_ident(&name))));
        statements.extend(comment("RULE", &format!("{} ON {target}", quote_ident(&name)), r.get(6)));
        out.activation.push(ObjectDdl { kind: ObjectKind::Rule, name: format!("{schema}.{table}.{name}"), statements });
    }

    // Statistics objects, with their statistics target when set.
    let statistics = client
        .query(
            &format!(
                "SELECT s.stxrelid, n.nspname, s.stxname, pg_get_statisticsobjdef(s.oid), nullif(coalesce(s.stxstattarget::int, -1), -1), \
                   obj_description(s.oid, 'pg_statistic_ext') \
                 FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE {SKIP_SCHEMAS} ORDER BY s.oid"
            ),
            &[],
        )
        .await
        .context(&endpoint, q("statistics objects"))?;
    for st in statistics.iter().filter(|s| on_copied(s.get(0))) {
        let (schema, name): (String, String) = (st.get(1), st.get(2));
        let target = qualified(&schema, &name);
        // A resumed load runs these again.
        let mut statements = vec![st.get::<_, String>(3).replacen("CREATE STATISTICS ", "CREATE STATISTICS IF NOT EXISTS ", 1)];
        statements.extend(st.get::<_, Option<i32>>(4).map(|n| format!("ALTER STATISTICS {target} SET STATISTICS {n}")));
        statements.extend(comment("STATISTICS", &target, st.get(5)));
        out.statistics.push(ObjectDdl { kind: ObjectKind::StatisticsObject, name: format!("{schema}.{name}"), statements });
    }

    // Row-level security and policies.
    let policies = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname, c.relname, p.polname, p.polpermissive, p.polcmd::text, \
                   ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END FROM unnest(p.polroles) r), \
                   pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid), obj_description(p.oid, 'pg_policy') \
                 FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {SKIP_SCHEMAS} ORDER BY p.oid"
            ),
            &[],
        )
        .await
        .context(&endpoint, q("policies"))?;
    let mut roles = BTreeSet::new();
    for p in policies.iter().filter(|p| on_copied(p.get(0))) {
        let (schema, table, name): (String, String, String) = (p.get(1), p.get(2), p.get(3));
        let target = qualified(&schema, &table);
        let command = match p.get::<_, String>(5).as_str() {
            "r" => "SELECT",
            "a" => "INSERT",
            "w" => "UPDATE",
            "d" => "DELETE",
            _ => "ALL",
        };
        let to: Vec<String> = p.get::<_, Vec<String>>(6).into_iter().map(|r| if r == "public" { r } else { roles.insert(r.clone()); quote_ident(&r) }).collect();
        let mut sql = format!(
            "CREATE POLICY {} ON {target} AS {} FOR {command} TO {}",
            quote_ident(&name),
            if p.get::<_, bool>(4) { "PERMISSIVE" } else { "RESTRICTIVE" },
            to.join(", ")
        );
        if let Some(using) = p.get::<_, Option<String>>(7) {
            sql.push_str(&format!(" USING ({using})"));
        }
        if let Some(check) = p.get::<_, Option<String>>(8) {
            sql.push_str(&format!(" WITH CHECK ({check})"));
        }
        let mut statements = vec![format!("DROP POLICY IF EXISTS {} ON {target}", quote_ident(&name)), sql];
        statements.extend(comment("POLICY", &format!("{} ON {target}", quote_ident(&name)), p.get(9)));
        out.policies.push(ObjectDdl { kind: ObjectKind::Policy, name: format!("{schema}.{table}.{name}"), statements });
    }
    out.roles = roles.into_iter().collect();
    let secured = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE (c.relrowsecurity OR c.relforcerowsecurity) AND {SKIP_SCHEMAS} ORDER BY c.oid"
            ),
            &[],
        )
        .await
        .context(&endpoint, q("row security"))?;
    for s in secured.iter().filter(|s| on_copied(s.get(0))) {
        let target = qualified(&s.get::<_, String>(1), &s.get::<_, String>(2));
        let mut statements = Vec::new();
        if s.get::<_, bool>(3) {
            statements.push(format!("ALTER TABLE {target} ENABLE ROW LEVEL SECURITY"));
        }
        if s.get::<_, bool>(4) {
            statements.push(format!("ALTER TABLE {target} FORCE ROW LEVEL SECURITY"));
        }
        out.activation.push(ObjectDdl { kind: ObjectKind::RowSecurity, name: format!("{}.{}", s.get::<_, String>(1), s.get::<_, String>(2)), statements });
    }

    not_carried(client, endpoint, &mut out.not_carried).await?;
    let (on_types, after_load) = comments(client, endpoint, &copied).await?;
    out.operators.extend(on_types);
    out.comments = after_load;
    let relations: Vec<u32> = copied.iter().chain(&carried).copied().collect();
    out.access = access(client, endpoint, &relations, &carried_routines).await?;
    Ok(out)
}

/// Who owns what, and who may do what: from the source's ACLs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Access {
    /// REVOKE/GRANT statements (tables, columns, sequences, views, routines, schemas)
    /// and default privileges.
    pub grants: Vec<String>,
    /// ALTER ... OWNER TO statements.
    pub owners: Vec<String>,
    /// Roles these statements name (never PUBLIC).
    pub grant_roles: BTreeSet<String>,
    pub owner_roles: BTreeSet<String>,
}

/// One privilege of an ACL, as [`grants_of`] writes it: `grantee|privilege|grantable`.
pub(crate) struct Grant<'a> {
    /// A role name, or PUBLIC.
    pub grantee: &'a str,
    privilege: &'a str,
    grantable: bool,
}

impl<'a> Grant<'a> {
    pub fn new(grantee: &'a str, privilege: &'a str, grantable: bool) -> Grant<'a> {
        Grant { grantee, privilege, grantable }
    }

    pub fn parse(text: &'a str) -> Option<Grant<'a>> {
        let mut parts = text.splitn(3, '|');
        let (grantee, privilege, grantable) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Grant { grantee, privilege, grantable: grantable == "true" })
    }

    /// The grantee as a role (quoted), or PUBLIC.
    pub fn role(&self) -> String {
        match self.grantee {
            "PUBLIC" => "PUBLIC".to_string(),
            r => quote_ident(r),
        }
    }

    /// `GRANT ... ON {on} TO ...` (`on`: the object with its kind word).
    pub fn sql(&self, on: &str) -> String {
        format!("GRANT {} ON {on} TO {}{}", self.privilege, self.role(), if self.grantable { " WITH GRANT OPTION" } else { "" })
    }
}

/// SQL for an ACL's grants to others than the owner, as `grantee|privilege|grantable` texts.
pub(crate) fn grants_of(acl: &str, owner: &str) -> String {
    format!(
        "ARRAY(SELECT format('%s|%s|%s', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable) \
         FROM aclexplode({acl}) a WHERE a.grantee <> {owner})"
    )
}

/// The owners and privileges of `relations` (tables, views, their sequences) and
/// `routines`, of the user schemas except `public` (whose defaults differ between
/// versions) unless it moves, the owners of the user schemas' types (and their
/// privileges), collations, operators, operator classes and text search objects, and
/// the default privileges.
async fn access(client: &Client, endpoint: &str, relations: &[u32], routines: &[u32]) -> Result<Access, PgError> {
    let q = |what: &'static str| move || format!("read the catalog ({what})");
    let relations: Vec<i64> = relations.iter().map(|o| *o as i64).collect();
    let routines: Vec<i64> = routines.iter().map(|o| *o as i64).collect();
    // (kind word, object text, owner, grants "grantee|privilege|grantable", has an ACL, default PUBLIC privilege to revoke)
    let rows = client
        .query(
            &format!(
                "SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,                         format('%I.%I', n.nspname, c.relname), pg_get_userbyid(c.relowner),                         {rel_grants}, c.relacl IS NOT NULL,                         EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')                                 AND d.refclassid = 'pg_class'::regclass)                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace                  WHERE c.oid = ANY($1::int8[]::oid[])                     OR (c.relkind = 'S' AND {SKIP_SCHEMAS} AND {ext} AND (NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))                         OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i') AND d.refobjid = ANY($1::int8[]::oid[]))))                  UNION ALL                  SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,                         format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), pg_get_userbyid(p.proowner),                         {pro_grants}, p.proacl IS NOT NULL, false                  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = ANY($2::int8[]::oid[])                  UNION ALL                  SELECT 'SCHEMA', format('%I', n.nspname), pg_get_userbyid(n.nspowner),                         {nsp_grants}, n.nspacl IS NOT NULL, false                  FROM pg_namespace n WHERE {SKIP_SCHEMAS} AND {nsp_ext} {others}",
                ext = not_from_extension("c.oid"),
                nsp_ext = not_from_extension("n.oid"),
                rel_grants = grants_of("c.relacl", "c.relowner"),
                pro_grants = grants_of("p.proacl", "p.proowner"),
                nsp_grants = grants_of("n.nspacl", "n.nspowner"),
                others = other_owners()
            ),
            &[&relations, &routines],
        )
        .await
        .context(&endpoint, q("privileges"))?;
    let mut out = Access::default();
    for r in &rows {
        let (kind, object, owner, grants, has_acl, owned_by_table): (String, String, String, Vec<String>, bool, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        // ALTER TABLE ... OWNER TO moves a table's own sequences with it.
        if !owned_by_table {
            out.owners.push(format!("ALTER {kind} {object} OWNER TO {}", quote_ident(&owner)));
            out.owner_roles.insert(owner.clone());
        }
        // `public` is made by every server with its version's defaults: the source's
        // privileges replace the target's even when the source's are its defaults.
        if !has_acl && !(kind == "SCHEMA" && object == "public") {
            continue;
        }
        // The object's own kind word for GRANT: views and materialized views are TABLEs there.
        let on = match kind.as_str() {
            "VIEW" | "MATERIALIZED VIEW" | "TABLE" => "TABLE",
            "AGGREGATE" | "PROCEDURE" => "FUNCTION",
            other => other,
        };
        out.grants.push(format!("REVOKE ALL ON {on} {object} FROM PUBLIC"));
        for g in grants.iter().filter_map(|g| Grant::parse(g)) {
            if g.grantee != "PUBLIC" {
                out.grant_roles.insert(g.grantee.to_string());
            }
            out.grants.push(g.sql(&format!("{on} {object}")));
        }
    }
    // Column privileges of copied tables.
    let columns = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), a.attname::text,                     CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END, x.privilege_type, x.is_grantable              FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(a.attacl) x              WHERE a.attrelid = ANY($1::int8[]::oid[]) AND a.attacl IS NOT NULL AND x.grantee <> c.relowner ORDER BY 1, 2",
            &[&relations],
        )
        .await
        .context(&endpoint, q("column privileges"))?;
    for c in &columns {
        let (object, column, grantee, privilege, grantable): (String, String, String, String, bool) = (c.get(0), c.get(1), c.get(2), c.get(3), c.get(4));
        if grantee != "PUBLIC" {
            out.grant_roles.insert(grantee.clone());
        }
        let on_column = format!("{privilege} ({})", quote_ident(&column));
        out.grants.push(Grant::new(&grantee, &on_column, grantable).sql(&format!("TABLE {object}")));
    }
    // Default privileges: what future objects of a role get.
    let defaults = client
        .query(
            "SELECT pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype::text,                     CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END, x.privilege_type, x.is_grantable              FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) x              WHERE x.grantee <> d.defaclrole ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .context(&endpoint, q("default privileges"))?;
    for d in &defaults {
        let (owner, schema, objtype, grantee, privilege, grantable): (String, Option<String>, String, String, String, bool) =
            (d.get(0), d.get(1), d.get(2), d.get(3), d.get(4), d.get(5));
        let on = match objtype.as_str() {
            "r" => "TABLES",
            "S" => "SEQUENCES",
            "f" => "FUNCTIONS",
            "T" => "TYPES",
            "n" => "SCHEMAS",
            _ => continue,
        };
        out.owner_roles.insert(owner.clone());
        if grantee != "PUBLIC" {
            out.grant_roles.insert(grantee.clone());
        }
        out.grants.push(format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {}{} {}",
            quote_ident(&owner),
            schema.map(|s| format!(" IN SCHEMA {}", quote_ident(&s))).unwrap_or_default(),
            Grant::new(&grantee, &privilege, grantable).sql(on)
        ));
    }
    Ok(out)
}

/// The `UNION ALL` rows of [`access`] for types (with their privileges), collations,
/// operators, operator families and classes, and text search objects.
fn other_owners() -> String {
    let owned = |word: &str, object: &str, owner: &str, catalog: &str, namespace: &str, extra: &str| {
        format!(
            " UNION ALL SELECT '{word}', {object}, pg_get_userbyid(x.{owner}), ARRAY[]::text[], false, false \
             FROM {catalog} x JOIN pg_namespace n ON n.oid = x.{namespace} WHERE {SKIP_SCHEMAS} AND {}{extra}",
            not_from_extension("x.oid")
        )
    };
    let arg = |side: &str| format!("CASE WHEN x.{side} = 0 THEN 'NONE' ELSE format_type(x.{side}, NULL) END");
    let mut sql = format!(
        " UNION ALL SELECT CASE x.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%I.%I', n.nspname, x.typname), pg_get_userbyid(x.typowner), \
           {}, x.typacl IS NOT NULL, false FROM pg_type x JOIN pg_namespace n ON n.oid = x.typnamespace \
         WHERE (x.typtype IN ('e', 'd', 'r') OR (x.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = x.typrelid) = 'c')) \
           AND {SKIP_SCHEMAS} AND {}",
        grants_of("x.typacl", "x.typowner"),
        not_from_extension("x.oid")
    );
    sql.push_str(&owned("COLLATION", "format('%I.%I', n.nspname, x.collname)", "collowner", "pg_collation", "collnamespace", ""));
    sql.push_str(&owned(
        "OPERATOR",
        &format!("format('%I.%s (%s, %s)', n.nspname, x.oprname, {}, {})", arg("oprleft"), arg("oprright")),
        "oprowner",
        "pg_operator",
        "oprnamespace",
        " AND x.oprcode <> 0",
    ));
    for (word, name, owner, catalog, namespace, method) in
        [("OPERATOR FAMILY", "opfname", "opfowner", "pg_opfamily", "opfnamespace", "opfmethod"), ("OPERATOR CLASS", "opcname", "opcowner", "pg_opclass", "opcnamespace", "opcmethod")]
    {
        let object = format!("format('%I.%I USING %I', n.nspname, x.{name}, (SELECT amname FROM pg_am WHERE oid = x.{method}))");
        sql.push_str(&owned(word, &object, owner, catalog, namespace, ""));
    }
    sql.push_str(&owned("TEXT SEARCH DICTIONARY", "format('%I.%I', n.nspname, x.dictname)", "dictowner", "pg_ts_dict", "dictnamespace", ""));
    sql.push_str(&owned("TEXT SEARCH CONFIGURATION", "format('%I.%I', n.nspname, x.cfgname)", "cfgowner", "pg_ts_config", "cfgnamespace", ""));
    sql
}

/// Views by name in the order they can be created: a view after all it reads.
fn view_order(views: &[tokio_postgres::Row], carried: &BTreeSet<u32>) -> Vec<String> {
    let mut done: BTreeSet<u32> = BTreeSet::new();
    let mut order = Vec::new();
    while done.len() < carried.len() {
        let before = done.len();
        for v in views.iter().filter(|v| carried.contains(&v.get::<_, u32>(0))) {
            if done.contains(&v.get::<_, u32>(0)) {
                continue;
            }
            let deps: Vec<u32> = v.get::<_, Vec<i64>>(7).iter().map(|d| *d as u32).filter(|d| carried.contains(d)).collect();
            if deps.iter().all(|d| done.contains(d)) {
                done.insert(v.get(0));
                order.push(format!("{}.{}", v.get::<_, String>(1), v.get::<_, String>(2)));
            }
        }
        if done.len() == before {
            break;
        }
    }
    order
}

/// `SELECT schema.name` of a catalog's objects in user schemas (optionally not an extension's).
pub(super) fn named(catalog: &str, name: &str, namespace: &str, own_only: bool) -> String {
    let own = if own_only { format!(" AND {}", not_from_extension("x.oid")) } else { String::new() };
    format!("SELECT format('%s.%s', n.nspname, x.{name}) FROM {catalog} x JOIN pg_namespace n ON n.oid = x.{namespace} WHERE {SKIP_SCHEMAS}{own}")
}

/// Comments that no other statement carries: on types and domain constraints (with
/// the types), and on the copied tables' indexes, constraints and sequences (after
/// the load).
async fn comments(client: &Client, endpoint: &str, copied: &BTreeSet<u32>) -> Result<(Vec<ObjectDdl>, Vec<ObjectDdl>), PgError> {
    let copied: Vec<i64> = copied.iter().map(|o| *o as i64).collect();
    let described = |catalog: &str, oid: &str| format!("JOIN pg_description ds ON ds.objoid = {oid} AND ds.classoid = '{catalog}'::regclass AND ds.objsubid = 0");
    let on_types = format!(
        "SELECT format('%s %I.%I', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname), ds.description \
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace {} \
         WHERE (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')) AND {SKIP_SCHEMAS} AND {} \
         UNION ALL \
         SELECT format('CONSTRAINT %I ON DOMAIN %I.%I', c.conname, n.nspname, t.typname), ds.description \
         FROM pg_constraint c JOIN pg_type t ON t.oid = c.contypid JOIN pg_namespace n ON n.oid = t.typnamespace {} \
         WHERE {SKIP_SCHEMAS} AND {}",
        described("pg_type", "t.oid"),
        not_from_extension("t.oid"),
        described("pg_constraint", "c.oid"),
        not_from_extension("t.oid")
    );
    // Indexes and constraints as the catalog carries them: not a partition's copy of its parent's.
    let after_load = format!(
        "SELECT format('INDEX %I.%I', n.nspname, ic.relname), ds.description \
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace {} \
         WHERE i.indrelid = ANY($1::int8[]::oid[]) AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) \
         UNION ALL \
         SELECT format('CONSTRAINT %I ON %I.%I', c.conname, n.nspname, r.relname), ds.description \
         FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace {} \
         WHERE c.conrelid = ANY($1::int8[]::oid[]) AND c.conislocal AND c.conparentid = 0 \
         UNION ALL \
         SELECT format('SEQUENCE %I.%I', n.nspname, s.relname), ds.description \
         FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace {} \
         WHERE s.relkind = 'S' AND {SKIP_SCHEMAS} AND {} \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i') \
                           AND d.refclassid = 'pg_class'::regclass AND NOT d.refobjid = ANY($1::int8[]::oid[]))",
        described("pg_class", "ic.oid"),
        described("pg_constraint", "c.oid"),
        described("pg_class", "s.oid"),
        not_from_extension("s.oid")
    );
    let render = |rows: Vec<tokio_postgres::Row>| -> Vec<ObjectDdl> {
        rows.iter()
            .map(|r| {
                let (object, text): (String, String) = (r.get(0), r.get(1));
                ObjectDdl { kind: ObjectKind::Comment, name: object.clone(), statements: vec![format!("COMMENT ON {object} IS {}", quote_literal(&text))] }
            })
            .collect()
    };
    let types = client.query(&on_types, &[]).await.context(&endpoint, || "read the catalog (comments on types)".into())?;
    let others = client.query(&after_load, &[&copied]).await.context(&endpoint, || "read the catalog (comments on indexes, constraints, sequences)".into())?;
    Ok((render(types), render(others)))
}

/// Event triggers (database-wide, and the migration's own DDL would fire them; not
/// pgshift's own, which reports schema changes during catch-up) and base types
/// (made of C functions).
async fn not_carried(client: &Client, endpoint: &str, out: &mut Vec<String>) -> Result<(), PgError> {
    let rows = client
        .query(&format!("SELECT evtname::text FROM pg_event_trigger e WHERE evtname <> 'pgshift_ddl' AND {}", not_from_extension("e.oid")), &[])
        .await
        .context(&endpoint, || "read the catalog (event triggers)".into())?;
    out.extend(rows.iter().map(|r| {
        format!("event trigger {}: not carried by pgshift; event triggers are database-wide: create them on the target by hand if it needs them", r.get::<_, String>(0))
    }));
    let base = client
        .query(
            &format!(
                "SELECT format('%s.%s', n.nspname, t.typname) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE t.typtype = 'b' AND t.typcategory <> 'A' AND {SKIP_SCHEMAS} AND {}",
                not_from_extension("t.oid")
            ),
            &[],
        )
        .await
        .context(&endpoint, || "read the catalog (base types)".into())?;
    out.extend(base.iter().map(|r| {
        format!(
            "base type {}: made of C functions, which need their shared library on the target: install it there and create the type by hand",
            r.get::<_, String>(0)
        )
    }));
    Ok(())
}
