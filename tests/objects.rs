//! The target behaves like the source: functions that defaults, checks and triggers
//! call, triggers (with their enabled state), views over views, a materialized view
//! with its index, an aggregate, row-level security with a policy, comments; what is
//! not carried is named. Triggers stay off while catch-up applies the source's own
//! triggers' results (an audit row arrives once) and fire after the cutover.

mod common;

use common::*;
use pgshift_testkit::{Cluster, PgVersion};

const APP: &str = r#"
CREATE ROLE reader;
CREATE FUNCTION slugify(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT lower(regexp_replace(t, '[^a-zA-Z0-9]+', '-', 'g')) $$;
CREATE FUNCTION positive(n numeric) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN n > 0; END $$;
CREATE TABLE articles (id serial PRIMARY KEY, title text NOT NULL, slug text NOT NULL DEFAULT '', price numeric NOT NULL DEFAULT 1 CHECK (positive(price)),
  search tsvector NOT NULL, owner text NOT NULL DEFAULT 'writer');
CREATE FUNCTION articles_fill() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN NEW.search := to_tsvector('simple', NEW.title); NEW.slug := slugify(NEW.title); RETURN NEW; END $$;
CREATE TRIGGER articles_fill BEFORE INSERT OR UPDATE ON articles FOR EACH ROW EXECUTE FUNCTION articles_fill();
CREATE TABLE audit (id bigserial PRIMARY KEY, article int, action text);
CREATE FUNCTION articles_audit() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN INSERT INTO audit (article, action) VALUES (NEW.id, TG_OP); RETURN NEW; END $$;
CREATE TRIGGER articles_audit AFTER INSERT OR UPDATE ON articles FOR EACH ROW EXECUTE FUNCTION articles_audit();
CREATE TRIGGER articles_unused AFTER DELETE ON articles FOR EACH ROW EXECUTE FUNCTION articles_audit();
ALTER TABLE articles DISABLE TRIGGER articles_unused;
CREATE VIEW cheap AS SELECT id, title FROM articles WHERE price < 10;
CREATE VIEW cheap_titles AS SELECT title FROM cheap;
CREATE AGGREGATE product(numeric) (SFUNC = numeric_mul, STYPE = numeric, INITCOND = '1');
ALTER TABLE articles ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON articles FOR SELECT TO reader USING (owner = current_user);
GRANT SELECT ON articles TO reader;
CREATE ROLE analyst;
GRANT SELECT ON cheap_titles TO analyst;
GRANT SELECT (title) ON articles TO analyst;
GRANT EXECUTE ON FUNCTION slugify(text) TO analyst;
REVOKE EXECUTE ON FUNCTION positive(numeric) FROM PUBLIC;
COMMENT ON FUNCTION slugify(text) IS 'url-safe';
COMMENT ON VIEW cheap IS 'under 10';
CREATE FUNCTION noop_event() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER noop ON ddl_command_end EXECUTE FUNCTION noop_event();
INSERT INTO articles (title, price, owner) SELECT 'Article ' || i, i, CASE WHEN i % 4 = 0 THEN 'reader' ELSE 'writer' END FROM generate_series(1, 20) i;
CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(price) AS total FROM articles;
CREATE UNIQUE INDEX totals_n ON totals (n);
CREATE MATERIALIZED VIEW later AS SELECT id FROM articles WITH NO DATA;
"#;

fn q(c: &Cluster, sql: &str) -> String {
    c.psql("app", sql)
}

#[test]
fn functions_triggers_views_aggregates_and_row_security_arrive_and_behave_the_same() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", APP);
    let (s, t) = (source.url("app"), target.url("app"));
    // Grants and a policy name roles the target lacks: said before anything is written,
    // with the statements that create them.
    let out = pgshift_expect(2, &["migrate", "--source", &s, "--target", &t, "--dry-run"]);
    let err = stderr(&out);
    assert!(err.contains("analyst, reader") && err.contains("CREATE ROLE \"reader\";") && err.contains("--roles"), "{err}");
    target.psql("app", "CREATE ROLE reader");
    // --roles creates the rest, without a password.
    let out = pgshift_expect(0, &["migrate", "--source", &s, "--target", &t, "--load-only", "--roles", "--json"]);
    assert_eq!(q(&target, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'analyst'"), "f");
    let report: serde_json::Value = serde_json::Deserializer::from_slice(&out.stdout).into_iter().next().unwrap().unwrap();
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("not carried: event trigger noop"), "{warnings}");
    assert!(report["at_cutover"].to_string().contains("articles_audit"), "triggers wait for the cutover: {report}");
    for sql in [
        "SELECT string_agg(title, ',' ORDER BY title) FROM cheap_titles",
        "SELECT n, total FROM totals",
        "SELECT product(price) FROM articles WHERE id <= 6",
        "SELECT slugify('Hello World!')",
        "SELECT obj_description('cheap'::regclass, 'pg_class')",
    ] {
        assert_eq!(q(&target, sql), q(&source, sql), "{sql}");
    }
    assert_eq!(q(&target, "SELECT count(*) FROM pg_indexes WHERE indexname = 'totals_n'"), "1");
    assert_eq!(q(&target, "SELECT relispopulated FROM pg_class WHERE relname = 'later'"), "f", "left unpopulated as on the source");
    assert_eq!(q(&target, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'articles'::regclass AND NOT tgisinternal"), "0", "no trigger during catch-up");

    // During catch-up the source's triggers fire; their results arrive once.
    source.psql("app", "INSERT INTO articles (title, price) VALUES ('New One', 5); UPDATE articles SET title = 'Renamed' WHERE id = 1;");
    follow(&source, &target, &[]);
    let audit = "SELECT string_agg(format('%s:%s', article, action), ',' ORDER BY id) FROM audit";
    assert_eq!(q(&target, audit), q(&source, audit));
    assert_eq!(q(&target, "SELECT slug FROM articles WHERE id = 1"), "renamed");

    // The same insert does the same on both: on the source before the switch, on the target after it.
    let probe = "INSERT INTO articles (title, price) VALUES ('Hello World!', 3) RETURNING slug, search::text";
    let before = q(&source, probe);
    pgshift_expect(0, &["cutover", "--source", &s, "--target", &t]);
    assert_eq!(q(&target, probe), before);
    assert_eq!(q(&target, "SELECT action FROM audit ORDER BY id DESC LIMIT 1"), "INSERT", "the audit trigger fires after the cutover");
    assert_eq!(q(&target, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'articles_unused'"), "D");
    assert_eq!(q(&target, "SELECT relrowsecurity FROM pg_class WHERE relname = 'articles'"), "t");
    // Row security: a role without BYPASSRLS sees the same rows on both.
    let as_reader = "SET ROLE reader; SELECT count(*) FROM articles";
    assert_eq!(q(&target, as_reader), q(&source, as_reader));
    assert_ne!(q(&target, as_reader), q(&target, "SELECT count(*) FROM articles"), "the policy filters");
    assert!(q(&source, "SELECT count(*) FROM pg_event_trigger").starts_with('1'));
    // The grants came along: the same privileges on both.
    for sql in [
        "SELECT has_table_privilege('analyst', 'cheap_titles', 'SELECT'), has_table_privilege('analyst', 'articles', 'SELECT')",
        "SELECT has_column_privilege('analyst', 'articles', 'title', 'SELECT'), has_column_privilege('analyst', 'articles', 'price', 'SELECT')",
        "SELECT has_function_privilege('analyst', 'slugify(text)', 'EXECUTE'), has_function_privilege('analyst', 'positive(numeric)', 'EXECUTE')",
    ] {
        assert_eq!(q(&target, sql), q(&source, sql), "{sql}");
    }
    // Nothing else differs: checksums of every table.
    let out = verify(&source, &target, &[]);
    assert!(stdout(&out).contains("public.articles"), "{}", stdout(&out));
}

#[test]
fn under_a_schema_map_the_objects_move_with_their_schema() {
    let (source, target) = pair(PgVersion::V16, PgVersion::V18);
    source.psql("app", APP);
    source.psql("app", "CREATE FUNCTION count_articles() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM public.articles $$");
    let out = migrate(&source, &target, &["--no-follow", "--roles", "--map-schema", "public=moved", "--json"]);
    let warnings = stdout(&out);
    assert!(warnings.contains("function public.count_articles(): its body is text that names schema public"), "{warnings}");
    assert_eq!(q(&target, "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"), "0", "nothing left behind in public");
    // Views, functions, the aggregate, triggers and policies work in the new schema.
    for (on_source, on_target) in [
        ("SELECT string_agg(title, ',' ORDER BY title) FROM public.cheap_titles", "SELECT string_agg(title, ',' ORDER BY title) FROM moved.cheap_titles"),
        ("SELECT public.count_articles()", "SELECT moved.count_articles()"),
        ("SELECT public.product(price) FROM public.articles WHERE id <= 6", "SELECT moved.product(price) FROM moved.articles WHERE id <= 6"),
        ("SET ROLE reader; SELECT count(*) FROM public.articles", "SET ROLE reader; SELECT count(*) FROM moved.articles"),
        (
            "INSERT INTO public.articles (title, price) VALUES ('Hello World!', 3) RETURNING slug, search::text",
            "SET search_path = moved; INSERT INTO moved.articles (title, price) VALUES ('Hello World!', 3) RETURNING slug, search::text",
        ),
        ("SELECT has_table_privilege('analyst', 'public.cheap_titles', 'SELECT')", "SELECT has_table_privilege('analyst', 'moved.cheap_titles', 'SELECT')"),
    ] {
        assert_eq!(q(&target, on_target), q(&source, on_source), "{on_target}");
    }
    assert_eq!(q(&target, "SELECT count(*) FROM moved.audit"), q(&source, "SELECT count(*) FROM public.audit"), "the audit trigger fired on both");
}

#[test]
fn a_column_collation_the_target_lacks_is_named_before_anything_is_written() {
    // The Debian PostgreSQL 15 has ICU collations; the test's PostgreSQL 16 is built without ICU.
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu'"), "0", "the fixture needs a target without ICU");
    source.psql("app", r#"CREATE TABLE names (id int PRIMARY KEY, name text COLLATE "und-x-icu")"#);
    let out = pgshift_expect(2, &["migrate", "--source", &source.url("app"), "--target", &target.url("app"), "--no-follow"]);
    let err = stderr(&out);
    assert!(err.contains("column public.names.name uses collation pg_catalog.\"und-x-icu\""), "{err}");
    assert_eq!(target.psql("app", "SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'pgshift')"), "0", "nothing written");
}
