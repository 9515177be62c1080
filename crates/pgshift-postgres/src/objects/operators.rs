//! What types, columns, expressions and indexes refer to by name besides functions:
//! collations, text search dictionaries and configurations, operators, operator
//! families and classes, and casts. Rendered from the catalog so that the target's
//! catalog ends up the same as the source's (what pg_dump would dump is the same).
//! Collations come before the types (a column or a range may name one); the rest
//! after the routines they call and before the tables whose defaults, checks,
//! generated columns and indexes use them.

use tokio_postgres::Client;

use super::{comment, ObjectDdl, ObjectKind};
use crate::catalog::{not_from_extension, not_internal, SKIP_SCHEMAS};
use crate::error::{Context, PgError};
use crate::sql::{qualified, quote_ident, quote_literal};

/// `schema.name` of the function with OID `expr`, NULL for 0.
fn function_name(expr: &str) -> String {
    format!("(SELECT format('%I.%I', fn.nspname, f.proname) FROM pg_proc f JOIN pg_namespace fn ON fn.oid = f.pronamespace WHERE f.oid = {expr})")
}

/// `OPERATOR(schema.op)` of the operator with OID `expr`, NULL for 0.
fn operator_name(expr: &str) -> String {
    format!("(SELECT format('OPERATOR(%I.%s)', xn.nspname, x.oprname) FROM pg_operator x JOIN pg_namespace xn ON xn.oid = x.oprnamespace WHERE x.oid = {expr})")
}

/// Comments on the user schemas (which pre-data creates; `public` too, as the source
/// has it) and their collations: before the types.
pub(super) async fn before_types(client: &Client, endpoint: &str) -> Result<Vec<ObjectDdl>, PgError> {
    let schemas = client
        .query(
            &format!(
                "SELECT n.nspname, obj_description(n.oid, 'pg_namespace') FROM pg_namespace n \
                 WHERE {SKIP_SCHEMAS} AND {} AND (obj_description(n.oid, 'pg_namespace') IS NOT NULL OR n.nspname = 'public') ORDER BY n.oid",
                not_from_extension("n.oid")
            ),
            &[],
        )
        .await
        .context(&endpoint, || "read the catalog (schema comments)".into())?;
    let mut out: Vec<ObjectDdl> = schemas
        .iter()
        .map(|r| ObjectDdl {
            kind: ObjectKind::Schema,
            name: r.get(0),
            // `public` without a comment loses the one the target's server gave it.
            statements: match (r.get::<_, String>(0).as_str(), r.get::<_, Option<String>>(1)) {
                ("public", None) => vec!["COMMENT ON SCHEMA public IS NULL".to_string()],
                (name, text) => comment("SCHEMA", &quote_ident(name), text).into_iter().collect(),
            },
        })
        .collect();
    out.extend(collations(client, endpoint).await?);
    Ok(out)
}

async fn collations(client: &Client, endpoint: &str) -> Result<Vec<ObjectDdl>, PgError> {
    // The locale columns moved between versions (colliculocale in 15-16, colllocale
    // from 17); to_jsonb reads whichever this server has.
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname, c.collname, c.collprovider::text, c.collisdeterministic, c.collcollate, c.collctype, \
                   coalesce(to_jsonb(c) ->> 'colllocale', to_jsonb(c) ->> 'colliculocale'), to_jsonb(c) ->> 'collicurules', \
                   obj_description(c.oid, 'pg_collation') \
                 FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace \
                 WHERE {SKIP_SCHEMAS} AND {} ORDER BY c.oid",
                not_from_extension("c.oid")
            ),
            &[],
        )
        .await
        .context(&endpoint, || "read the catalog (collations)".into())?;
    let mut out = Vec::new();
    for r in &rows {
        let (schema, name, provider): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let (collate, ctype, locale, rules): (Option<String>, Option<String>, Option<String>, Option<String>) = (r.get(4), r.get(5), r.get(6), r.get(7));
        let lit = |v: &Option<String>| quote_literal(v.as_deref().unwrap_or_default());
        let mut options = match provider.as_str() {
            "i" => vec!["provider = icu".to_string(), format!("locale = {}", lit(&locale))],
            "b" => vec!["provider = builtin".to_string(), format!("locale = {}", lit(&locale))],
            _ if collate == ctype => vec!["provider = libc".to_string(), format!("locale = {}", lit(&collate))],
            _ => vec!["provider = libc".to_string(), format!("lc_collate = {}", lit(&collate)), format!("lc_ctype = {}", lit(&ctype))],
        };
        options.extend(rules.map(|r| format!("rules = {}", quote_literal(&r))));
        if !r.get::<_, bool>(3) {
            options.push("deterministic = false".into());
        }
        let target = qualified(&schema, &name);
        let mut statements = vec![format!("CREATE COLLATION {target} ({})", options.join(", "))];
        statements.extend(comment("COLLATION", &target, r.get(8)));
        out.push(ObjectDdl { kind: ObjectKind::Collation, name: format!("{schema}.{name}"), statements });
    }
    Ok(out)
}

/// Text search dictionaries and configurations, operators, operator families and
/// classes, and casts, in that order (each may name the ones before).
pub(super) async fn after_routines(client: &Client, endpoint: &str, not_carried: &mut Vec<String>) -> Result<Vec<ObjectDdl>, PgError> {
    let q = |what: &'static str| move || format!("read the catalog ({what})");
    let mut out = Vec::new();

    let dictionaries = client
        .query(
            &format!(
                "SELECT n.nspname, d.dictname, format('%I.%I', tn.nspname, t.tmplname), d.dictinitoption, obj_description(d.oid, 'pg_ts_dict') \
                 FROM pg_ts_dict d JOIN pg_namespace n ON n.oid = d.dictnamespace \
                 JOIN pg_ts_template t ON t.oid = d.dicttemplate JOIN pg_namespace tn ON tn.oid = t.tmplnamespace \
                 WHERE {SKIP_SCHEMAS} AND {} ORDER BY d.oid",
                not_from_extension("d.oid")
            ),
            &[],
        )
        .await
        .context(&endpoint, q("text search dictionaries"))?;
    for r in &dictionaries {
        let (schema, name, template, options): (String, String, String, Option<String>) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let target = qualified(&schema, &name);
        let options = options.map(|o| format!(", {o}")).unwrap_or_default();
        let mut statements = vec![format!("CREATE TEXT SEARCH DICTIONARY {target} (TEMPLATE = {template}{options})")];
        statements.extend(comment("TEXT SEARCH DICTIONARY", &target, r.get(4)));
        out.push(ObjectDdl { kind: ObjectKind::TextSearchDictionary, name: format!("{schema}.{name}"), statements });
    }

    let configurations = client
        .query(
            &format!(
                "SELECT n.nspname, c.cfgname, format('%I.%I', pn.nspname, p.prsname), obj_description(c.oid, 'pg_ts_config'), \
                   ARRAY(SELECT format('%s WITH %s', t.alias, string_agg(format('%I.%I', dn.nspname, d.dictname), ', ' ORDER BY m.mapseqno)) \
                         FROM pg_ts_config_map m JOIN ts_token_type(c.cfgparser) t ON t.tokid = m.maptokentype \
                         JOIN pg_ts_dict d ON d.oid = m.mapdict JOIN pg_namespace dn ON dn.oid = d.dictnamespace \
                         WHERE m.mapcfg = c.oid GROUP BY m.maptokentype, t.alias ORDER BY m.maptokentype) \
                 FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace \
                 JOIN pg_ts_parser p ON p.oid = c.cfgparser JOIN pg_namespace pn ON pn.oid = p.prsnamespace \
                 WHERE {SKIP_SCHEMAS} AND {} ORDER BY c.oid",
                not_from_extension("c.oid")
            ),
            &[],
        )
        .await
        .context(&endpoint, q("text search configurations"))?;
    for r in &configurations {
        let (schema, name, parser): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let target = qualified(&schema, &name);
        let mut statements = vec![format!("CREATE TEXT SEARCH CONFIGURATION {target} (PARSER = {parser})")];
        statements.extend(r.get::<_, Vec<String>>(4).iter().map(|m| format!("ALTER TEXT SEARCH CONFIGURATION {target} ADD MAPPING FOR {m}")));
        statements.extend(comment("TEXT SEARCH CONFIGURATION", &target, r.get(3)));
        out.push(ObjectDdl { kind: ObjectKind::TextSearchConfiguration, name: format!("{schema}.{name}"), statements });
    }
    // Parsers and templates are made of C functions.
    for (kind, catalog, column, namespace) in
        [("text search parser", "pg_ts_parser", "prsname", "prsnamespace"), ("text search template", "pg_ts_template", "tmplname", "tmplnamespace")]
    {
        let rows = client.query(&super::named(catalog, column, namespace, true), &[]).await.context(&endpoint, q("text search parsers and templates"))?;
        not_carried.extend(rows.iter().map(|r| {
            format!(
                "{kind} {}: made of C functions, which need their shared library on the target: install it there and create it by hand",
                r.get::<_, String>(0)
            )
        }));
    }

    let operators = client
        .query(
            &format!(
                "SELECT n.nspname, o.oprname, {code}, \
                   CASE WHEN o.oprleft <> 0 THEN format_type(o.oprleft, NULL) END, CASE WHEN o.oprright <> 0 THEN format_type(o.oprright, NULL) END, \
                   {commutator}, {negator}, {restrict}, {join}, o.oprcanhash, o.oprcanmerge, obj_description(o.oid, 'pg_operator') \
                 FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace \
                 WHERE o.oprcode <> 0 AND {SKIP_SCHEMAS} AND {ext} ORDER BY o.oid",
                code = function_name("o.oprcode"),
                commutator = operator_name("o.oprcom"),
                negator = operator_name("o.oprnegate"),
                restrict = function_name("o.oprrest"),
                join = function_name("o.oprjoin"),
                ext = not_from_extension("o.oid")
            ),
            &[],
        )
        .await
        .context(&endpoint, q("operators"))?;
    for r in &operators {
        let (schema, name, function): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let (left, right): (Option<String>, Option<String>) = (r.get(3), r.get(4));
        let target = format!("{}.{name}", quote_ident(&schema));
        let mut options = vec![format!("FUNCTION = {function}")];
        options.extend(left.iter().map(|l| format!("LEFTARG = {l}")));
        options.extend(right.iter().map(|r| format!("RIGHTARG = {r}")));
        for (i, word) in [(5, "COMMUTATOR"), (6, "NEGATOR"), (7, "RESTRICT"), (8, "JOIN")] {
            options.extend(r.get::<_, Option<String>>(i).map(|v| format!("{word} = {v}")));
        }
        if r.get::<_, bool>(9) {
            options.push("HASHES".into());
        }
        if r.get::<_, bool>(10) {
            options.push("MERGES".into());
        }
        let signature = format!("{target} ({}, {})", left.as_deref().unwrap_or("NONE"), right.as_deref().unwrap_or("NONE"));
        let mut statements = vec![format!("CREATE OPERATOR {target} ({})", options.join(", "))];
        statements.extend(comment("OPERATOR", &signature, r.get(11)));
        out.push(ObjectDdl { kind: ObjectKind::Operator, name: format!("{schema}.{name}"), statements });
    }

    out.extend(operator_classes(client, endpoint).await?);

    // Not the casts a type makes for itself (a range to its multirange).
    let casts = client
        .query(
            &format!(
                "SELECT format_type(c.castsource, NULL), format_type(c.casttarget, NULL), c.castmethod::text, \
                   CASE WHEN c.castfunc <> 0 THEN c.castfunc::regprocedure::text END, c.castcontext::text, obj_description(c.oid, 'pg_cast') \
                 FROM pg_cast c WHERE c.oid >= 16384 AND {} AND {} ORDER BY c.oid",
                not_from_extension("c.oid"),
                not_internal("pg_cast", "c.oid")
            ),
            &[],
        )
        .await
        .context(&endpoint, q("casts"))?;
    for r in &casts {
        let (source, target, method, function, context): (String, String, String, Option<String>, String) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let how = match (method.as_str(), function) {
            ("f", Some(f)) => format!("WITH FUNCTION {f}"),
            ("i", _) => "WITH INOUT".to_string(),
            _ => "WITHOUT FUNCTION".to_string(),
        };
        let when = match context.as_str() {
            "a" => " AS ASSIGNMENT",
            "i" => " AS IMPLICIT",
            _ => "",
        };
        let pair = format!("({source} AS {target})");
        let mut statements = vec![format!("CREATE CAST {pair} {how}{when}")];
        statements.extend(comment("CAST", &pair, r.get(5)));
        out.push(ObjectDdl { kind: ObjectKind::Cast, name: format!("{source} AS {target}"), statements });
    }
    Ok(out)
}

/// Operator families with their classes and their loose members. A family is created
/// first (a class then joins it, as CREATE OPERATOR CLASS ... FAMILY does), so a
/// class whose family has another name comes out the same as one that made its own.
async fn operator_classes(client: &Client, endpoint: &str) -> Result<Vec<ObjectDdl>, PgError> {
    let q = |what: &'static str| move || format!("read the catalog ({what})");
    let families = client
        .query(
            &format!(
                "SELECT f.oid, n.nspname, f.opfname, am.amname::text, obj_description(f.oid, 'pg_opfamily') \
                 FROM pg_opfamily f JOIN pg_namespace n ON n.oid = f.opfnamespace JOIN pg_am am ON am.oid = f.opfmethod \
                 WHERE {SKIP_SCHEMAS} AND {} ORDER BY f.oid",
                not_from_extension("f.oid")
            ),
            &[],
        )
        .await
        .context(&endpoint, q("operator families"))?;
    if families.is_empty() {
        return Ok(Vec::new());
    }
    let family_oids: Vec<i64> = families.iter().map(|f| f.get::<_, u32>(0) as i64).collect();
    // Members: (family, class they belong to or 0 when loose, item text).
    let members = client
        .query(
            "SELECT ao.amopfamily::int8, CASE WHEN d.refclassid = 'pg_opclass'::regclass THEN d.refobjid ELSE 0 END::int8, \
               format('OPERATOR %s %s(%s, %s)%s', ao.amopstrategy, format('%I.%s', opn.nspname, op.oprname), \
                      format_type(ao.amoplefttype, NULL), format_type(ao.amoprighttype, NULL), \
                      CASE WHEN ao.amoppurpose = 'o' THEN (SELECT format(' FOR ORDER BY %I.%I', sn.nspname, sf.opfname) \
                        FROM pg_opfamily sf JOIN pg_namespace sn ON sn.oid = sf.opfnamespace WHERE sf.oid = ao.amopsortfamily) ELSE '' END), \
               ao.amopstrategy::int \
             FROM pg_amop ao JOIN pg_operator op ON op.oid = ao.amopopr JOIN pg_namespace opn ON opn.oid = op.oprnamespace \
             JOIN pg_depend d ON d.classid = 'pg_amop'::regclass AND d.objid = ao.oid AND d.deptype IN ('a', 'i') \
               AND d.refclassid IN ('pg_opclass'::regclass, 'pg_opfamily'::regclass) \
             WHERE ao.amopfamily = ANY($1::int8[]::oid[]) \
             UNION ALL \
             SELECT ap.amprocfamily::int8, CASE WHEN d.refclassid = 'pg_opclass'::regclass THEN d.refobjid ELSE 0 END::int8, \
               format('FUNCTION %s (%s, %s) %s', ap.amprocnum, format_type(ap.amproclefttype, NULL), format_type(ap.amprocrighttype, NULL), \
                      ap.amproc::regprocedure::text), \
               1000 + ap.amprocnum \
             FROM pg_amproc ap \
             JOIN pg_depend d ON d.classid = 'pg_amproc'::regclass AND d.objid = ap.oid AND d.deptype IN ('a', 'i') \
               AND d.refclassid IN ('pg_opclass'::regclass, 'pg_opfamily'::regclass) \
             WHERE ap.amprocfamily = ANY($1::int8[]::oid[]) ORDER BY 1, 2, 4, 3",
            &[&family_oids],
        )
        .await
        .context(&endpoint, q("operator class members"))?;
    let classes = client
        .query(
            "SELECT c.oid, n.nspname, c.opcname, am.amname::text, format_type(c.opcintype, NULL), c.opcdefault, c.opcfamily, \
               CASE WHEN c.opckeytype <> 0 THEN format_type(c.opckeytype, NULL) END, obj_description(c.oid, 'pg_opclass') \
             FROM pg_opclass c JOIN pg_namespace n ON n.oid = c.opcnamespace JOIN pg_am am ON am.oid = c.opcmethod \
             WHERE c.opcfamily = ANY($1::int8[]::oid[]) ORDER BY c.oid",
            &[&family_oids],
        )
        .await
        .context(&endpoint, q("operator classes"))?;
    let items = |family: u32, class: u32| -> Vec<String> {
        members.iter().filter(|m| m.get::<_, i64>(0) as u32 == family && m.get::<_, i64>(1) as u32 == class).map(|m| m.get(2)).collect()
    };
    let mut out = Vec::new();
    for f in &families {
        let (oid, schema, name, method): (u32, String, String, String) = (f.get(0), f.get(1), f.get(2), f.get(3));
        let family = qualified(&schema, &name);
        let on = format!("{family} USING {}", quote_ident(&method));
        let mut statements = vec![format!("CREATE OPERATOR FAMILY {on}")];
        for c in classes.iter().filter(|c| c.get::<_, u32>(6) == oid) {
            let class = qualified(&c.get::<_, String>(1), &c.get::<_, String>(2));
            let mut list = items(oid, c.get(0));
            list.extend(c.get::<_, Option<String>>(7).map(|s| format!("STORAGE {s}")));
            if list.is_empty() {
                list.push(format!("STORAGE {}", c.get::<_, String>(4)));
            }
            statements.push(format!(
                "CREATE OPERATOR CLASS {class}{} FOR TYPE {} USING {} FAMILY {family} AS {}",
                if c.get::<_, bool>(5) { " DEFAULT" } else { "" },
                c.get::<_, String>(4),
                quote_ident(&c.get::<_, String>(3)),
                list.join(", ")
            ));
            statements.extend(comment("OPERATOR CLASS", &format!("{class} USING {}", quote_ident(&c.get::<_, String>(3))), c.get(8)));
        }
        let loose = items(oid, 0);
        if !loose.is_empty() {
            statements.push(format!("ALTER OPERATOR FAMILY {on} ADD {}", loose.join(", ")));
        }
        statements.extend(comment("OPERATOR FAMILY", &on, f.get(4)));
        out.push(ObjectDdl { kind: ObjectKind::OperatorFamily, name: format!("{schema}.{name}"), statements });
    }
    Ok(out)
}
