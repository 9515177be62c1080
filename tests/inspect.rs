//! `pgshift inspect` reports what the catalog says, compares with a target, and lists
//! problems with their fix.

mod common;

use common::*;
use pgshift_testkit::PgVersion;

#[test]
fn inspect_reports_types_keys_problems_and_target_shape() {
    let (source, target) = pair(PgVersion::V15, PgVersion::V16);
    source.psql("app", TYPES_FIXTURE);
    target.psql("app", "CREATE TABLE wide (id integer, big_text varchar(10))");
    let (s, t) = (source.url("app"), target.url("app"));
    let out = pgshift_expect(0, &["inspect", "--source", &s, "--target", &t, "--count", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let table = |name: &str| report["tables"].as_array().unwrap().iter().find(|x| x["table"] == name).unwrap().clone();

    let kinds = table("public.kinds");
    assert_eq!(kinds["exact_rows"], 502);
    assert_eq!(kinds["primary_key"]["first_type"], "bigint");
    assert_eq!(kinds["primary_key"]["numeric"], true);
    assert_eq!(kinds["copy_format"], "text", "mood[] and a composite embed type OIDs");
    let ty = |col: &str| kinds["columns"].as_array().unwrap().iter().find(|c| c["name"] == col).unwrap()["type"].clone();
    assert_eq!(ty("amount"), "numeric(20,6)");
    assert_eq!(ty("feelings"), "public.mood[]");
    assert_eq!(ty("matrix"), "integer[]");
    assert_eq!(kinds["in_target"], false);

    let customers = table("sales.customers");
    assert_eq!(customers["primary_key"]["numeric"], false);
    assert_eq!(customers["primary_key"]["splittable"], true);
    assert_eq!(table("sales.orders")["kind"], "partitioned");
    let partition = table("sales.orders_2023");
    assert_eq!(partition["partition_of"], "sales.orders");
    // The key comes from the parent, and still makes the partition splittable.
    assert_eq!(partition["primary_key"]["columns"], serde_json::json!(["id", "placed_at"]));

    let wide = table("public.wide");
    assert_eq!(wide["in_target"], true);
    let diffs: Vec<String> = wide["target_differences"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    assert!(diffs.contains(&"column big_text: text on source, character varying(10) on target".to_string()), "{diffs:?}");
    assert!(diffs.contains(&"column c1 missing on target".to_string()), "{diffs:?}");

    let problems = report["problems"].to_string();
    assert!(problems.contains("public.no_pk has no primary key or replica identity"), "{problems}");
    assert!(problems.contains("REPLICA IDENTITY FULL"), "{problems}");

    // The human form names the same things.
    let text = stdout(&pgshift_expect(0, &["inspect", "--source", &s]));
    assert!(text.contains("public.no_pk") && text.contains("problems:"), "{text}");

    // migrate's overrides: the preview shows the types and names the load will use.
    let out = pgshift_expect(0, &["inspect", "--source", &s, "--target", &t, "--cast", "public.wide.big_text=varchar(10)", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let wide = report["tables"].as_array().unwrap().iter().find(|x| x["table"] == "public.wide").unwrap().clone();
    let big = wide["columns"].as_array().unwrap().iter().find(|c| c["name"] == "big_text").unwrap()["type"].clone();
    assert_eq!(big, "varchar(10)", "{wide}");
    let out = pgshift(&["inspect", "--source", &s, "--cast", "public.wide.nothing=int"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nothing"), "{}", stderr(&out));
}

/// Whether schema changes can be followed is found out by trying to create the event
/// trigger (and rolling back), not from the superuser flag: a role that may not says
/// so, names itself and who can, and the trial leaves nothing behind.
#[test]
fn inspect_tries_the_event_trigger_and_names_the_role_that_cannot() {
    let source = pgshift_testkit::Cluster::start(PgVersion::V16);
    source.create_database("app");
    source.psql("app", "CREATE ROLE app_admin LOGIN PASSWORD 'not-a-superuser' CREATEROLE; GRANT CREATE ON DATABASE app TO app_admin; CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO app_admin");
    let admin = format!("postgresql://app_admin:not-a-superuser@127.0.0.1:{}/app", source.port);
    let out = pgshift(&["inspect", "--source", &admin]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("role app_admin cannot create the event trigger") && text.contains("rds_superuser"), "{text}");
    assert!(!text.contains("not-a-superuser"), "no password in the output");
    assert_eq!(source.psql("app", "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift'"), "0", "the trial is rolled back");
    let out = pgshift(&["inspect", "--source", &source.url("app")]);
    assert!(stdout(&out).contains("followed during catch-up"), "{}", stdout(&out));
    assert_eq!(source.psql("app", "SELECT count(*) FROM pg_event_trigger"), "0");
}
