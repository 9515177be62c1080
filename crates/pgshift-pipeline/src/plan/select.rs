//! Which tables move: `--tables` patterns, the same for every kind of source.
//! A pattern is `schema.table` or a bare `table` (any schema), with `*` and `?`;
//! `!pattern` leaves tables out. A pattern that selects nothing is an error, so a
//! typo cannot silently skip data.

use pgshift_postgres::catalog::{Catalog, Table};

use crate::error::{Error, Result};

/// Whether `pattern` names the table `schema.name`.
pub fn name_matches(pattern: &str, schema: &str, name: &str) -> bool {
    match pattern.contains('.') {
        true => glob(pattern, &format!("{schema}.{name}")),
        false => glob(pattern, name),
    }
}

/// Whether `pattern` names a PostgreSQL table.
pub fn table_matches(t: &Table, pattern: &str) -> bool {
    name_matches(pattern, &t.schema, &t.name)
}

/// The items the patterns select (all when there are none), in their order.
/// `matches(item, pattern)` decides; `source` names the source in errors.
pub fn select<T>(items: Vec<T>, patterns: &[String], source: &str, matches: impl Fn(&T, &str) -> bool) -> Result<Vec<T>> {
    let (excludes, includes): (Vec<&str>, Vec<&str>) = patterns.iter().map(String::as_str).partition(|p| p.starts_with('!'));
    let excludes: Vec<&str> = excludes.iter().map(|p| &p[1..]).collect();
    for p in includes.iter().chain(&excludes) {
        if !items.iter().any(|t| matches(t, p)) {
            return Err(Error::Setting(format!(
                "--tables {p:?} matches no table in {source} (patterns match schema.table or table, with * and ?)"
            )));
        }
    }
    Ok(items
        .into_iter()
        .filter(|t| includes.is_empty() || includes.iter().any(|p| matches(t, p)))
        .filter(|t| !excludes.iter().any(|p| matches(t, p)))
        .collect())
}

/// The catalog's tables the patterns select, with every partitioned parent of a
/// chosen partition (the target needs the parent to exist).
pub fn select_tables<'a>(catalog: &'a Catalog, patterns: &[String]) -> Result<Vec<&'a Table>> {
    let chosen = select(catalog.tables.iter().collect(), patterns, "the source", |t: &&Table, p| table_matches(t, p))?;
    Ok(with_partition_parents(catalog, chosen))
}

/// The chosen tables plus every partitioned parent of a chosen partition, in catalog
/// order: parents before partitions.
pub fn with_partition_parents<'a>(catalog: &'a Catalog, mut chosen: Vec<&'a Table>) -> Vec<&'a Table> {
    let mut i = 0;
    while i < chosen.len() {
        if let Some(parent) = chosen[i].partition_of.as_ref().and_then(|(s, n, _)| catalog.table(s, n)) {
            if !chosen.iter().any(|t| t.oid == parent.oid) {
                chosen.push(parent);
            }
        }
        i += 1;
    }
    catalog.tables.iter().filter(|t| chosen.iter().any(|c| c.oid == t.oid)).collect()
}

/// `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob("public.*", "public.users"));
        assert!(glob("doc?", "docs"));
        assert!(glob("*", "anything"));
        assert!(!glob("public.*", "sales.users"));
        assert!(!glob("doc?", "documents"));
        assert!(glob("*_log*", "app_log_2024"));
    }

    #[test]
    fn patterns_include_exclude_and_refuse_typos() {
        let names = || vec![("public", "users"), ("public", "orders"), ("sales", "orders")];
        let m = |t: &(&str, &str), p: &str| name_matches(p, t.0, t.1);
        assert_eq!(select(names(), &[], "s", m).unwrap().len(), 3);
        assert_eq!(select(names(), &["orders".into()], "s", m).unwrap(), vec![("public", "orders"), ("sales", "orders")]);
        assert_eq!(select(names(), &["!sales.*".into()], "s", m).unwrap(), vec![("public", "users"), ("public", "orders")]);
        let err = select(names(), &["userz".into()], "the SQLite file", m).unwrap_err().to_string();
        assert!(err.contains("\"userz\" matches no table in the SQLite file"), "{err}");
    }
}
