//! Moving a source schema to another schema on the target (`--map-schema public=main`),
//! so that two databases with the same table names can share one target.
//!
//! The catalog texts (types, defaults, constraint and index definitions) are rendered
//! schema-qualified, so the target's view of the catalog rewrites the qualified
//! references to the objects that move, and only those: an extension's objects
//! (`public.vector`, `public.gen_random_uuid()`) stay where the extension is. Whole
//! schemas move rather than single tables because index, sequence, constraint and
//! type names are unique per schema: a renamed table would still collide on them.
//! The same rewriting moves references to an extension's objects to the schema the
//! target already has that extension in ([`relocate_extensions`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::sql::quote_ident;

/// Source schema -> target schema. Schemas not named stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SchemaMap(BTreeMap<String, String>);

/// Schemas a user's tables may not be moved into.
const RESERVED: [&str; 3] = ["pgshift", "information_schema", "pg_catalog"];

impl SchemaMap {
    /// `FROM=TO` entries, e.g. `public=main`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<SchemaMap, String> {
        let mut map = BTreeMap::new();
        for entry in entries {
            let entry = entry.as_ref();
            let (from, to) = entry
                .split_once('=')
                .map(|(f, t)| (f.trim(), t.trim()))
                .filter(|(f, t)| !f.is_empty() && !t.is_empty())
                .ok_or_else(|| format!("schema map '{entry}': expected SOURCE_SCHEMA=TARGET_SCHEMA, e.g. public=main"))?;
            if RESERVED.contains(&to) || to.starts_with("pg_") {
                return Err(format!("schema map '{entry}': {to} is a system schema; choose another target schema"));
            }
            if map.insert(from.to_string(), to.to_string()).is_some() {
                return Err(format!("schema map: {from} is mapped twice"));
            }
        }
        Ok(SchemaMap(map))
    }

    /// `{ public = "main" }` as a config file writes it.
    pub fn from_pairs(pairs: &BTreeMap<String, String>) -> Result<SchemaMap, String> {
        SchemaMap::parse(&pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>())
    }

    /// (source schema, target schema) pairs.
    pub fn entries(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Where a source schema's objects live on the target.
    pub fn target_schema<'a>(&'a self, schema: &'a str) -> &'a str {
        self.0.get(schema).map_or(schema, String::as_str)
    }

    /// `schema.name` as the target has it.
    pub fn target_display(&self, display_name: &str) -> String {
        match display_name.split_once('.') {
            Some((schema, name)) => format!("{}.{name}", self.target_schema(schema)),
            None => display_name.to_string(),
        }
    }

    /// The map the other way (for replication back from the target to the source).
    pub fn inverse(&self) -> SchemaMap {
        SchemaMap(self.0.iter().map(|(k, v)| (v.clone(), k.clone())).collect())
    }

    /// The catalog as the target should have it: the mapped schemas' tables,
    /// sequences and types in their target schemas, and every qualified reference into
    /// a mapped schema rewritten (but not to an extension's objects, which stay where
    /// the extension is). Object OIDs stay the source's, so tables pair up by OID.
    pub fn target_view(&self, catalog: &Catalog) -> Catalog {
        if self.is_empty() {
            return catalog.clone();
        }
        let to = |schema: &mut String| *schema = self.target_schema(schema).to_string();

        let mut c = catalog.clone();
        let mut schemas: Vec<String> = c.schemas.iter().map(|s| self.target_schema(s).to_string()).collect();
        // An extension stays in its schema, which must still exist.
        schemas.extend(c.extensions.iter().map(|e| e.schema.clone()));
        schemas.sort();
        schemas.dedup();
        c.schemas = schemas;
        c.enums.iter_mut().for_each(|e| to(&mut e.schema));
        c.domains.iter_mut().for_each(|d| to(&mut d.schema));
        c.composites.iter_mut().for_each(|ct| to(&mut ct.schema));
        c.ranges.iter_mut().for_each(|r| to(&mut r.schema));
        for s in &mut c.sequences {
            to(&mut s.schema);
            s.owned_by.iter_mut().for_each(|(schema, _, _)| to(schema));
        }
        for t in &mut c.tables {
            to(&mut t.schema);
            if let Some((schema, _, _)) = &mut t.partition_of {
                to(schema);
            }
        }
        self.statement_rewriter(catalog).rewriter.apply_to_catalog(&mut c);
        c
    }

    /// Rewrites whole statements of the schema's other objects (views, routines,
    /// triggers, policies, grants, comments) for the target: every qualified name in a
    /// mapped schema moves, except an extension's objects, and so does `SCHEMA name`.
    /// A routine's body is text to the catalog: qualified names in it move too, but
    /// names it builds at run time or finds through its search_path do not (the
    /// caller warns about those).
    pub fn statement_rewriter(&self, catalog: &Catalog) -> StatementRewriter {
        let kept = catalog.extensions.iter().flat_map(|e| e.members.iter().map(|m| (e.schema.clone(), m.clone()))).collect();
        StatementRewriter { rewriter: Rewriter { schemas: self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect(), kept, ..Default::default() } }
    }
}

/// See [`SchemaMap::statement_rewriter`].
pub struct StatementRewriter {
    rewriter: Rewriter,
}

impl StatementRewriter {
    pub fn rewrite(&self, sql: &str) -> String {
        let text = self.rewriter.rewrite(sql, true);
        // `ON SCHEMA s`, `IN SCHEMA s`, `ALTER SCHEMA s`: a schema named alone.
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find("SCHEMA ") {
            let (before, after) = rest.split_at(at + "SCHEMA ".len());
            out.push_str(before);
            rest = after;
            if let Some((name, len)) = identifier(rest) {
                if let Some(to) = self.rewriter.schemas.get(&name) {
                    out.push_str(&quote_ident(to));
                    rest = &rest[len..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The mapped schemas a text names as `schema.` (a routine's body, say).
    pub fn schemas_named(&self, text: &str) -> Vec<&str> {
        self.rewriter.schemas.keys().filter(|s| text.contains(&format!("{}.", quote_ident(s))) || text.contains(&format!("{s}."))).map(String::as_str).collect()
    }
}

/// The catalog with the source's extensions where `installed` (the target's: name ->
/// schema) already has them: a Supabase database keeps pgvector in `extensions`, the
/// target may have it in `public`, so `extensions.vector(384)` and
/// `extensions.vector_cosine_ops` must become `public.` ones.
pub fn relocate_extensions(catalog: &Catalog, installed: &BTreeMap<String, String>) -> Catalog {
    let mut c = catalog.clone();
    let mut moved = HashMap::new();
    for e in &mut c.extensions {
        match installed.get(&e.name) {
            Some(there) if *there != e.schema => {
                for member in &e.members {
                    moved.insert((e.schema.clone(), member.clone()), there.clone());
                }
                e.schema = there.clone();
            }
            _ => {}
        }
    }
    if !moved.is_empty() {
        Rewriter { moved, ..Default::default() }.apply_to_catalog(&mut c);
    }
    c
}

/// Whether two catalog type names name the same type, however their identifiers are
/// quoted (the view writes a moved type's schema quoted, the server only when needed).
pub fn same_type_name(a: &str, b: &str) -> bool {
    a == b || a.replace('"', "") == b.replace('"', "")
}

impl fmt::Display for SchemaMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&pairs.join(", "))
    }
}

/// Rewrites qualified references to objects that move: (schema, name) -> new schema,
/// and everything in `schemas` (old -> new) but the `kept` objects.
#[derive(Default)]
struct Rewriter {
    moved: HashMap<(String, String), String>,
    schemas: HashMap<String, String>,
    kept: HashSet<(String, String)>,
}

/// Literals of these types name objects: `nextval('public.t_id_seq'::regclass)`.
const NAME_LITERAL_CASTS: [&str; 2] = ["::regclass", "::regtype"];

impl Rewriter {
    fn apply(&self, text: &mut String) {
        *text = self.rewrite(text, true);
    }

    /// Every catalog text that can name a type, sequence, table, function or operator class.
    fn apply_to_catalog(&self, c: &mut Catalog) {
        for d in &mut c.domains {
            self.apply(&mut d.base_type);
            d.default.iter_mut().for_each(|x| self.apply(x));
            d.constraints.iter_mut().for_each(|(_, def)| self.apply(def));
        }
        for ct in &mut c.composites {
            ct.attributes.iter_mut().for_each(|(_, ty)| self.apply(ty));
        }
        for r in &mut c.ranges {
            self.apply(&mut r.subtype);
            r.options.iter_mut().for_each(|o| self.apply(o));
        }
        for s in &mut c.sequences {
            self.apply(&mut s.data_type);
        }
        for t in &mut c.tables {
            t.partition_key.iter_mut().for_each(|k| self.apply(k));
            if let Some((_, _, bound)) = &mut t.partition_of {
                self.apply(bound);
            }
            for col in &mut t.columns {
                self.apply(&mut col.type_name);
                col.default.iter_mut().for_each(|x| self.apply(x));
                col.generated.iter_mut().for_each(|x| self.apply(x));
                col.cast_to.iter_mut().for_each(|x| self.apply(x));
                col.collation.iter_mut().for_each(|x| self.apply(x));
            }
            if let Some(pk) = &mut t.primary_key {
                self.apply(&mut pk.first_type);
            }
            t.constraints.iter_mut().for_each(|k| self.apply(&mut k.definition));
            t.indexes.iter_mut().for_each(|i| self.apply(&mut i.definition));
        }
    }

    /// Rewrites `S.name` (either part possibly quoted) where `(S, name)` moves. Other
    /// string literals are data and stay as they are.
    fn rewrite(&self, text: &str, outside_literals: bool) -> String {
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            let at_boundary = text[..i].chars().next_back().is_none_or(|p| !is_ident_char(p) && p != '"' && p != '.');
            if outside_literals && rest.starts_with('\'') {
                let end = literal_end(rest);
                let literal = &rest[..end];
                if NAME_LITERAL_CASTS.iter().any(|c| rest[end..].starts_with(c)) {
                    out.push('\'');
                    out.push_str(&self.rewrite(&literal[1..literal.len() - 1], false));
                    out.push('\'');
                } else {
                    out.push_str(literal);
                }
                i += end;
                continue;
            }
            if at_boundary {
                if let Some((schema, schema_len)) = identifier(rest) {
                    if let Some(after_dot) = rest[schema_len..].strip_prefix('.') {
                        if let Some((name, name_len)) = identifier(after_dot) {
                            let key = (schema.clone(), name);
                            let to = self.moved.get(&key).or_else(|| self.schemas.get(&key.0).filter(|_| !self.kept.contains(&key)));
                            if let Some(to) = to {
                                out.push_str(&quote_ident(to));
                                out.push('.');
                                out.push_str(&after_dot[..name_len]);
                                i += schema_len + 1 + name_len;
                                continue;
                            }
                        }
                    }
                    // Not a moved object: copy the whole word, so no match starts inside it.
                    out.push_str(&rest[..schema_len]);
                    i += schema_len;
                    continue;
                }
            }
            let ch = rest.chars().next().expect("i < len");
            out.push(ch);
            i += ch.len_utf8();
        }
        out
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// An identifier at the start of `s` (bare or double-quoted), unquoted, and its length in `s`.
fn identifier(s: &str) -> Option<(String, usize)> {
    if let Some(body) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().is_some_and(|(_, n)| *n == '"') {
                    chars.next();
                    name.push('"');
                } else {
                    return Some((name, i + 2));
                }
            } else {
                name.push(c);
            }
        }
        return None;
    }
    let len: usize = s.chars().take_while(|c| is_ident_char(*c)).map(char::len_utf8).sum();
    let first = s.chars().next()?;
    (len > 0 && !first.is_ascii_digit() && first != '$').then(|| (s[..len].to_string(), len))
}

/// Length of the string literal at the start of `s` (`''` is a quote inside it).
fn literal_end(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            if bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(moved: &[(&str, &str)], text: &str) -> String {
        let map = SchemaMap::parse(&["public=main", "My Schema=other"]).unwrap();
        let moved = moved.iter().map(|(s, n)| ((s.to_string(), n.to_string()), map.target_schema(s).to_string())).collect();
        Rewriter { moved, ..Default::default() }.rewrite(text, true)
    }

    #[test]
    fn moves_references_to_moved_objects_only() {
        let moved = [("public", "users"), ("public", "users_id_seq"), ("public", "mood"), ("My Schema", "T")];
        assert_eq!(rewrite(&moved, "FOREIGN KEY (u) REFERENCES public.users(id)"), r#"FOREIGN KEY (u) REFERENCES "main".users(id)"#);
        assert_eq!(rewrite(&moved, "nextval('public.users_id_seq'::regclass)"), r#"nextval('"main".users_id_seq'::regclass)"#);
        assert_eq!(rewrite(&moved, "public.mood[]"), r#""main".mood[]"#);
        assert_eq!(rewrite(&moved, r#"CREATE INDEX i ON "My Schema"."T" USING btree (a)"#), r#"CREATE INDEX i ON "other"."T" USING btree (a)"#);
        // An extension's type and function stay in public.
        assert_eq!(rewrite(&moved, "public.vector(384)"), "public.vector(384)");
        assert_eq!(rewrite(&moved, "public.gen_random_uuid()"), "public.gen_random_uuid()");
        // Data in literals, and names that only end like a moved one, are left alone.
        assert_eq!(rewrite(&moved, "CHECK ((kind <> 'public.users'::text))"), "CHECK ((kind <> 'public.users'::text))");
        assert_eq!(rewrite(&moved, "xpublic.users + mypublic.users"), "xpublic.users + mypublic.users");
        assert_eq!(rewrite(&moved, "'it''s public.users'::regclass"), r#"'it''s "main".users'::regclass"#);
    }

    #[test]
    fn statements_move_with_their_schema_but_extension_objects_stay() {
        let mut catalog = crate::catalog::Catalog::default();
        catalog.extensions.push(crate::catalog::Extension { name: "vector".into(), schema: "public".into(), version: "0.8".into(), members: vec!["vector".into()] });
        let r = SchemaMap::parse(&["public=main"]).unwrap().statement_rewriter(&catalog);
        assert_eq!(
            r.rewrite("CREATE VIEW public.v AS SELECT a::public.vector FROM public.t JOIN other.u USING (id)"),
            r#"CREATE VIEW "main".v AS SELECT a::public.vector FROM "main".t JOIN other.u USING (id)"#
        );
        assert_eq!(r.rewrite("GRANT USAGE ON SCHEMA public TO reader"), r#"GRANT USAGE ON SCHEMA "main" TO reader"#);
        assert_eq!(r.rewrite("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO r"), r#"ALTER DEFAULT PRIVILEGES IN SCHEMA "main" GRANT SELECT ON TABLES TO r"#);
        assert_eq!(r.rewrite("COMMENT ON SCHEMA publics IS 'x'"), "COMMENT ON SCHEMA publics IS 'x'");
        assert_eq!(r.schemas_named("BEGIN INSERT INTO public.audit VALUES (1); END"), vec!["public"]);
        assert!(r.schemas_named("BEGIN INSERT INTO audit VALUES (1); END").is_empty());
    }

    #[test]
    fn parse_names_the_problem() {
        assert!(SchemaMap::parse(&["public"]).unwrap_err().contains("SOURCE_SCHEMA=TARGET_SCHEMA"));
        assert!(SchemaMap::parse(&["public=pgshift"]).unwrap_err().contains("system schema"));
        assert!(SchemaMap::parse(&["public=a", "public=b"]).unwrap_err().contains("mapped twice"));
        let map = SchemaMap::parse(&["public=main"]).unwrap();
        assert_eq!(map.target_display("public.users"), "main.users");
        assert_eq!(map.target_display("audit.log"), "audit.log");
        assert_eq!(map.inverse().target_schema("main"), "public");
        assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"public":"main"}"#);
        assert!(same_type_name(r#""main".mood[]"#, "main.mood[]"));
        assert!(!same_type_name("main.mood", "public.mood"));
    }
}
