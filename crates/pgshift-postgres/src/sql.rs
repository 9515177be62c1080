//! Quoting for identifiers and literals in generated SQL.

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
