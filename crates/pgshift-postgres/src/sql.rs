//! Quoting for identifiers and literals in generated SQL.

/// The most bytes PostgreSQL keeps of a name (NAMEDATALEN - 1); it cuts longer ones.
pub const MAX_NAME_BYTES: usize = 63;

/// A generated name cut to [`MAX_NAME_BYTES`], keeping its start, on a character boundary
/// (so a non-ASCII table name never splits a character).
pub fn name_head(name: &str) -> String {
    let mut end = name.len().min(MAX_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// A generated name cut to [`MAX_NAME_BYTES`] from its start (its distinguishing end
/// kept, e.g. `_hnsw_idx`), on a character boundary.
pub fn name_tail(name: &str) -> String {
    let mut start = name.len().saturating_sub(MAX_NAME_BYTES);
    while !name.is_char_boundary(start) {
        start += 1;
    }
    name[start..].to_string()
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// `schema.name` for people: each part quoted only where it must be (upper case,
/// dots, quotes, spaces), so the name reads unambiguously and stays short.
pub fn display_qualified(schema: &str, name: &str) -> String {
    let part = |s: &str| {
        let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
        if plain { s.to_string() } else { quote_ident(s) }
    };
    format!("{}.{}", part(schema), part(name))
}

/// `"a", "b"` for a column list.
pub fn column_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().map(quote_ident).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_names_are_cut_on_character_boundaries() {
        use super::{name_head, name_tail};
        assert_eq!(name_head("short"), "short");
        let long = format!("{}é{}", "a".repeat(62), "b".repeat(10));
        assert_eq!(name_head(&long), "a".repeat(62), "é would straddle byte 63");
        let long = format!("{}é{}", "a".repeat(10), "b".repeat(62));
        assert_eq!(name_tail(&long), "b".repeat(62));
        assert_eq!(name_tail(&"x".repeat(70)).len(), 63);
    }

    use super::*;

    #[test]
    fn quotes_embedded_quotes() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(qualified("public", "Users"), r#""public"."Users""#);
        assert_eq!(display_qualified("public", "users_2"), "public.users_2");
        assert_eq!(display_qualified("a.b", "Users"), r#""a.b"."Users""#);
        assert_eq!(display_qualified("public", r#"we"ird"#), r#"public."we""ird""#);
    }
}
