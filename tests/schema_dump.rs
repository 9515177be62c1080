//! Exact schema, judged by pg_dump: after `migrate` and the cutover, `pg_dump
//! --schema-only` of the source and of the target (the target's pg_dump, the same
//! flags, pgshift's own schema left out) are identical but for the differences
//! docs/ARCHITECTURE.md lists ("The schema beyond tables"). The fixture holds every
//! kind of object an application relies on; the test prints the diff when it fails.

mod common;

use common::*;
use pgshift_testkit::{Cluster, PgVersion};

const SCHEMA: &str = r#"
CREATE ROLE owner_role;
CREATE ROLE reader;
CREATE ROLE writer;
CREATE SCHEMA shop AUTHORIZATION owner_role;
COMMENT ON SCHEMA shop IS 'the shop';
CREATE COLLATION shop.c_copy FROM "C";
COMMENT ON COLLATION shop.c_copy IS 'bytewise';
CREATE TYPE shop.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE shop.price_range AS RANGE (subtype = numeric);
CREATE TYPE shop.money_pair AS (amount numeric, currency text);
CREATE DOMAIN shop.positive AS numeric CHECK (VALUE > 0);
CREATE FUNCTION shop.mood_rank(m shop.mood) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT array_position(enum_range(NULL::shop.mood), m) $$;
CREATE FUNCTION shop.mood_eq(a shop.mood, b shop.mood) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT a = b $$;
CREATE OPERATOR shop.=== (LEFTARG = shop.mood, RIGHTARG = shop.mood, FUNCTION = shop.mood_eq, COMMUTATOR = OPERATOR(shop.===));
COMMENT ON OPERATOR shop.=== (shop.mood, shop.mood) IS 'same mood';
CREATE FUNCTION shop.pair_text(p shop.money_pair) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT p.amount || ' ' || p.currency $$;
CREATE CAST (shop.money_pair AS text) WITH FUNCTION shop.pair_text(shop.money_pair);
CREATE OPERATOR CLASS shop.int4_plain_ops FOR TYPE int4 USING btree AS
  OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, FUNCTION 1 btint4cmp(int4, int4);
CREATE TEXT SEARCH DICTIONARY shop.plain_dict (TEMPLATE = pg_catalog.simple, ACCEPT = false);
CREATE TEXT SEARCH CONFIGURATION shop.plain (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION shop.plain ALTER MAPPING FOR asciiword WITH shop.plain_dict, simple;
COMMENT ON TEXT SEARCH CONFIGURATION shop.plain IS 'plain words';
CREATE FUNCTION shop.slug(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT lower(regexp_replace(t, '[^a-zA-Z0-9]+', '-', 'g')) $$;
CREATE FUNCTION shop.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); NEW.search := to_tsvector('shop.plain', NEW.name); RETURN NEW; END $$;
CREATE PROCEDURE shop.restock(n int) LANGUAGE plpgsql AS $$ BEGIN UPDATE shop.items SET stock = stock + n; END $$;
CREATE AGGREGATE shop.product(numeric) (SFUNC = numeric_mul, STYPE = numeric, INITCOND = '1');
CREATE TABLE shop.items (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL COLLATE shop.c_copy,
  slug text GENERATED ALWAYS AS (shop.slug(name)) STORED,
  price shop.positive NOT NULL,
  mood shop.mood NOT NULL DEFAULT 'ok',
  band shop.price_range,
  pair shop.money_pair,
  stock int NOT NULL DEFAULT 0 CHECK (stock >= 0),
  search tsvector,
  updated_at timestamptz,
  owner_name text NOT NULL DEFAULT current_user
);
COMMENT ON TABLE shop.items IS 'what we sell';
COMMENT ON COLUMN shop.items.name IS 'display name';
CREATE INDEX items_search ON shop.items USING gin (search);
CREATE INDEX items_stock ON shop.items (stock shop.int4_plain_ops);
CREATE UNIQUE INDEX items_slug ON shop.items (slug) WHERE stock > 0;
CREATE TRIGGER items_touch BEFORE INSERT OR UPDATE ON shop.items FOR EACH ROW EXECUTE FUNCTION shop.touch();
CREATE TABLE shop.orders (
  id bigserial, item bigint NOT NULL REFERENCES shop.items, placed date NOT NULL, qty int NOT NULL,
  PRIMARY KEY (id, placed)
) PARTITION BY RANGE (placed);
CREATE TABLE shop.orders_2025 PARTITION OF shop.orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE shop.orders_2026 PARTITION OF shop.orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE shop.order_log (id bigserial PRIMARY KEY, order_id bigint, at timestamptz DEFAULT now());
CREATE FUNCTION shop.log_order() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO shop.order_log (order_id) VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER orders_log AFTER INSERT ON shop.orders FOR EACH ROW EXECUTE FUNCTION shop.log_order();
CREATE TRIGGER orders_off AFTER DELETE ON shop.orders FOR EACH ROW EXECUTE FUNCTION shop.log_order();
ALTER TABLE shop.orders DISABLE TRIGGER orders_off;
CREATE STATISTICS shop.items_name_mood (dependencies, ndistinct) ON name, mood FROM shop.items;
CREATE TABLE shop.deleted_items (LIKE shop.items);
ALTER TABLE shop.deleted_items REPLICA IDENTITY FULL;
CREATE RULE keep_deleted AS ON DELETE TO shop.items DO ALSO INSERT INTO shop.deleted_items (name, price, mood, stock, owner_name) VALUES (OLD.name, OLD.price, OLD.mood, OLD.stock, OLD.owner_name);
CREATE VIEW shop.in_stock AS SELECT id, name, price FROM shop.items WHERE stock > 0;
CREATE VIEW shop.cheap_in_stock AS SELECT name FROM shop.in_stock WHERE price < 10;
CREATE MATERIALIZED VIEW shop.mood_counts AS SELECT mood, count(*) AS n FROM shop.items GROUP BY mood;
CREATE UNIQUE INDEX mood_counts_mood ON shop.mood_counts (mood);
ALTER TABLE shop.items ENABLE ROW LEVEL SECURITY;
CREATE POLICY readers_see_stock ON shop.items FOR SELECT TO reader USING (stock > 0);
CREATE POLICY writers_own ON shop.items FOR ALL TO writer USING (owner_name = current_user) WITH CHECK (owner_name = current_user);
GRANT USAGE ON SCHEMA shop TO reader, writer;
GRANT SELECT ON shop.items, shop.in_stock TO reader;
GRANT SELECT, INSERT, UPDATE ON shop.items TO writer;
GRANT SELECT (qty) ON shop.orders TO reader;
GRANT EXECUTE ON FUNCTION shop.slug(text) TO reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA shop GRANT SELECT ON TABLES TO reader;
COMMENT ON INDEX shop.items_search IS 'full text';
COMMENT ON CONSTRAINT items_stock_check ON shop.items IS 'never negative';
COMMENT ON TYPE shop.mood IS 'how it feels';
COMMENT ON DOMAIN shop.positive IS 'more than zero';
COMMENT ON SEQUENCE shop.order_log_id_seq IS 'log numbers';
ALTER TABLE shop.items OWNER TO owner_role;
ALTER TYPE shop.mood OWNER TO owner_role;
REVOKE USAGE ON TYPE shop.mood FROM PUBLIC;
GRANT USAGE ON TYPE shop.mood TO reader, writer;
ALTER DOMAIN shop.positive OWNER TO owner_role;
ALTER OPERATOR shop.=== (shop.mood, shop.mood) OWNER TO owner_role;
ALTER TEXT SEARCH CONFIGURATION shop.plain OWNER TO owner_role;
ALTER OPERATOR CLASS shop.int4_plain_ops USING btree OWNER TO owner_role;
ALTER VIEW shop.in_stock OWNER TO owner_role;
INSERT INTO shop.items (name, price, mood, stock, band, pair) SELECT 'Item ' || i, i, (enum_range(NULL::shop.mood))[1 + i % 3], i % 5, numrange(i, i + 10)::text::shop.price_range, format('(%s,EUR)', i)::shop.money_pair FROM generate_series(1, 50) i;
INSERT INTO shop.orders (item, placed, qty) SELECT 1 + i % 50, date '2025-06-01' + i * 2, i FROM generate_series(1, 200) i;
REFRESH MATERIALIZED VIEW shop.mood_counts;
ALTER TABLE shop.items ALTER COLUMN name SET STORAGE EXTERNAL, ALTER COLUMN name SET COMPRESSION pglz,
  ALTER COLUMN price SET STATISTICS 500, ALTER COLUMN stock SET (n_distinct = -0.5);
ALTER SCHEMA public OWNER TO owner_role;
GRANT ALL ON SCHEMA public TO PUBLIC;
COMMENT ON SCHEMA public IS 'the application''s own';
SELECT lo_from_bytea(1001, convert_to(repeat('large object ', 200000), 'UTF8'));
SELECT lo_from_bytea(1002, '\x00ff');
ALTER LARGE OBJECT 1001 OWNER TO owner_role;
GRANT SELECT ON LARGE OBJECT 1001 TO reader;
COMMENT ON LARGE OBJECT 1001 IS 'a manual';
"#;

/// `pg_dump --schema-only` of `db` with the target's pg_dump, leaving out pgshift's
/// state and the lines that only say which server or run made the dump.
fn schema_dump(pg_dump_of: &Cluster, of: &Cluster) -> String {
    let out = std::process::Command::new(pg_dump_of.bin_dir().join("pg_dump"))
        .args(["--schema-only", "--exclude-schema=pgshift", "--no-subscriptions", "--no-publications", "--dbname", &of.url("app")])
        .output()
        .expect("run pg_dump");
    assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("-- Dumped from") && !l.starts_with("-- Dumped by") && !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .filter_map(without_internal_options)
        .collect::<Vec<_>>()
        .join("\n")
}

/// PostgreSQL 15.20 marks every column with an internal option `pg_attver=N`, which
/// pg_dump prints (`ALTER COLUMN c SET (pg_attver=1)`): a detail of the server, never
/// carried, so left out of the comparison (the line, or the option among others).
fn without_internal_options(line: &str) -> Option<String> {
    let Some(at) = line.find(" SET (").filter(|_| line.contains("pg_attver")) else { return Some(line.to_string()) };
    let options = line[at + 6..].trim_end_matches(';').trim_end_matches(')');
    let kept: Vec<&str> = options.split(", ").filter(|o| !o.trim_start_matches('"').starts_with("pg_attver")).collect();
    match kept.is_empty() {
        true => None,
        false => Some(format!("{} SET ({});", &line[..at], kept.join(", "))),
    }
}

#[test]
fn the_servers_internal_column_options_are_left_out_of_the_comparison() {
    assert_eq!(without_internal_options("ALTER TABLE ONLY public.t ALTER COLUMN a SET (pg_attver=1);"), None);
    assert_eq!(
        without_internal_options("ALTER TABLE ONLY public.t ALTER COLUMN a SET (n_distinct='-0.5', pg_attver=1);").as_deref(),
        Some("ALTER TABLE ONLY public.t ALTER COLUMN a SET (n_distinct='-0.5');")
    );
    assert_eq!(without_internal_options("CREATE TABLE t (a int);").as_deref(), Some("CREATE TABLE t (a int);"));
}

/// The differences between two servers' pg_dump output of the same schema that
/// come from the servers' versions, not from the migration (docs/ARCHITECTURE.md
/// lists them): PostgreSQL 16 prints a view's columns without their relation's name
/// where the source's 15 qualified them, and PostgreSQL 18 names NOT NULL
/// constraints, so a partition made with PARTITION OF shows its parent's names.
fn without_version_differences(dump: &str, source: PgVersion, target: PgVersion) -> String {
    let major = |v: PgVersion| match v {
        PgVersion::V15 => 15,
        PgVersion::V16 => 16,
        PgVersion::V18 => 18,
    };
    let relations: Vec<String> = dump
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE TABLE ").or_else(|| l.strip_prefix("CREATE VIEW ")).or_else(|| l.strip_prefix("CREATE MATERIALIZED VIEW ")))
        .filter_map(|rest| rest.split([' ', '(']).next()?.split_once('.').map(|(_, name)| name.to_string()))
        .collect();
    let mut in_view = false;
    let mut out = Vec::new();
    for line in dump.lines() {
        let mut line = line.to_string();
        if major(source) < 16 && major(target) >= 16 {
            in_view |= line.starts_with("CREATE VIEW ") || line.starts_with("CREATE MATERIALIZED VIEW ");
            if in_view && !line.starts_with("CREATE ") {
                for r in &relations {
                    for before in [' ', '('] {
                        line = line.replace(&format!("{before}{r}."), &before.to_string());
                    }
                }
            }
            in_view &= !line.ends_with(';');
        }
        if major(source) < 18 && major(target) >= 18 {
            while let Some(start) = line.find(" CONSTRAINT ").filter(|&i| line[i..].contains("_not_null NOT NULL")) {
                let end = start + line[start..].find("_not_null NOT NULL").unwrap() + "_not_null".len();
                line.replace_range(start..end, "");
            }
        }
        out.push(line);
    }
    out.join("\n")
}

fn diff(a: &str, b: &str) -> String {
    let dir = std::env::temp_dir().join(format!("pgshift-dump-diff-{}-{}", std::process::id(), a.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pa, pb) = (dir.join("source.sql"), dir.join("target.sql"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let out = std::process::Command::new("diff").arg("-u").arg(&pa).arg(&pb).output().expect("run diff");
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dumps_match(source_version: PgVersion, target_version: PgVersion) {
    let (source, target) = pair(source_version, target_version);
    source.psql("app", SCHEMA);
    let (s, t) = (source.url("app"), target.url("app"));
    pgshift_expect(0, &["migrate", "--source", &s, "--target", &t, "--load-only", "--roles"]);
    // Large objects change during catch-up (which does not carry them): the cutover
    // brings them up to date: one rewritten in the middle, one removed, one new.
    source.psql(
        "app",
        "INSERT INTO shop.orders (item, placed, qty) VALUES (3, '2026-03-01', 7); \
         SELECT lo_put(1001, 1500000, 'changed'); SELECT lo_unlink(1002); SELECT lo_from_bytea(1003, '\\x0102');",
    );
    follow(&source, &target, &[]);
    pgshift_expect(0, &["cutover", "--source", &s, "--target", &t]);

    let normal = |dump: String| without_version_differences(&dump, source_version, target_version);
    let (before, after) = (normal(schema_dump(&target, &source)), normal(schema_dump(&target, &target)));
    assert!(before == after, "pg_dump --schema-only differs between source and target:\n{}", diff(&before, &after));

    // The application behaves the same: the same rows through views and row security,
    // the large objects' bytes, the log the trigger writes.
    for sql in [
        "SELECT string_agg(name, ',' ORDER BY name) FROM shop.cheap_in_stock",
        "SELECT string_agg(format('%s=%s', mood, n), ',' ORDER BY mood) FROM shop.mood_counts",
        "SELECT count(*) FROM shop.order_log",
        "SELECT string_agg(format('%s:%s:%s', oid, md5(lo_get(oid)), pg_get_userbyid(lomowner)), ',' ORDER BY oid) FROM pg_largeobject_metadata",
        "SELECT lomacl::text, obj_description(1001, 'pg_largeobject') FROM pg_largeobject_metadata WHERE oid = 1001",
        "SET ROLE reader; SELECT count(*) FROM shop.items",
        "SELECT '(2,USD)'::shop.money_pair::text, 'ok'::shop.mood OPERATOR(shop.===) 'ok', to_tsvector('shop.plain', 'Hello World')",
    ] {
        assert_eq!(target.psql("app", sql), source.psql("app", sql), "{sql}");
    }
}

#[test]
fn pg_dump_schema_only_is_the_same_from_15_to_16() {
    dumps_match(PgVersion::V15, PgVersion::V16);
}

#[test]
fn pg_dump_schema_only_is_the_same_from_16_to_18() {
    dumps_match(PgVersion::V16, PgVersion::V18);
}
