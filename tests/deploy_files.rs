//! The files operators deploy (no Docker engine here, so their structure is checked):
//! the Grafana dashboard asks only for metrics pgshift exports, and docker-compose.yml
//! wires source, pgvector target, pgshift, Prometheus and Grafana together.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `pgshift_*` name in a PromQL expression, histogram suffixes removed.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("pgshift_") {
        let end = rest[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(rest.len(), |n| i + n);
        let name = &rest[i..end];
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        names.push(base.to_string());
        rest = &rest[end..];
    }
    names
}

fn exprs(panel: &serde_json::Value, out: &mut Vec<String>) {
    for t in panel["targets"].as_array().into_iter().flatten() {
        out.push(t["expr"].as_str().expect("every target has an expr").to_string());
    }
    for p in panel["panels"].as_array().into_iter().flatten() {
        exprs(p, out);
    }
}

#[test]
fn the_dashboard_shows_every_metric_and_only_exported_ones() {
    let dashboard: serde_json::Value = serde_json::from_str(&read("grafana/dashboards/pgshift.json")).unwrap();
    let mut all = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        exprs(p, &mut all);
    }
    let exported: BTreeSet<String> = pgshift_pipeline::metrics::names().into_iter().collect();
    let used: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "the dashboard queries metrics pgshift does not export: {unknown:?}");
    let unshown: Vec<&String> = exported.difference(&used).collect();
    assert!(unshown.is_empty(), "metrics missing from the dashboard: {unshown:?}");

    // Every panel uses the provisioned datasource.
    let datasources = yaml("grafana/provisioning/datasources/prometheus.yml");
    let uid = datasources["datasources"][0]["uid"].as_str().unwrap();
    for p in dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], uid, "panel {}", p["title"]);
    }
    assert_eq!(datasources["datasources"][0]["url"], "http://prometheus:9090");
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names("histogram_quantile(0.9, sum by (le) (rate(pgshift_apply_batch_seconds_bucket[5m]))) / pgshift_x"),
        ["pgshift_apply_batch_seconds", "pgshift_x"]
    );
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let s = &compose["services"][name];
    assert!(s.is_mapping(), "docker-compose.yml has no service {name}");
    s
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// `./host:/container[:ro]` volume entries as (host, container).
fn mounts(service: &Value) -> Vec<(String, String)> {
    strings(&service["volumes"]).iter().filter_map(|v| v.split(':').collect::<Vec<_>>().get(..2).map(|p| (p[0].to_string(), p[1].to_string()))).collect()
}

#[test]
fn docker_compose_wires_every_service() {
    let compose = yaml("docker-compose.yml");
    let names: BTreeSet<&str> = compose["services"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["source", "target", "pgshift", "worker", "vectorize", "prometheus", "grafana"]));

    let source = service(&compose, "source");
    assert!(source["image"].as_str().unwrap().starts_with("postgres:"));
    assert!(strings(&source["command"]).contains(&"wal_level=logical".to_string()), "catch-up needs logical decoding");
    assert_eq!(service(&compose, "target")["image"], "pgvector/pgvector:pg16");

    let pgshift = service(&compose, "pgshift");
    assert_eq!(pgshift["build"], ".");
    assert!(Path::new(ROOT).join("Dockerfile").is_file());
    let command = strings(&pgshift["command"]);
    assert_eq!(command[0], "serve");
    let listen_port = command.iter().find_map(|a| a.strip_prefix("0.0.0.0:")).expect("serve listens on all interfaces");
    assert!(strings(&pgshift["ports"]).iter().any(|p| p.ends_with(&format!(":{listen_port}"))), "pgshift's port is published");
    let env = &pgshift["environment"];
    assert!(env["PGSHIFT_SOURCE"].as_str().unwrap().contains("@source:5432/"));
    assert!(env["PGSHIFT_TARGET"].as_str().unwrap().contains("@target:5432/"));
    assert!(env["PGSHIFT_API_TOKEN"].as_str().unwrap().contains(":?"), "no default token: compose demands one");

    // Copy workers join the same run: same source and target, started only with their profile.
    let worker = service(&compose, "worker");
    assert_eq!(strings(&worker["command"]), ["worker"]);
    assert_eq!(strings(&worker["profiles"]), ["workers"]);
    for key in ["PGSHIFT_SOURCE", "PGSHIFT_TARGET"] {
        assert_eq!(worker["environment"][key], env[key], "{key}");
    }

    // Vectorize keeps the target's vectors, started only with its profile, its metrics scraped.
    let vectorize = service(&compose, "vectorize");
    let command = strings(&vectorize["command"]);
    assert_eq!(command[0], "vectorize");
    assert_eq!(strings(&vectorize["profiles"]), ["vectorize"]);
    assert_eq!(vectorize["environment"]["PGSHIFT_TARGET"], env["PGSHIFT_TARGET"]);
    let metrics_port = command.iter().find_map(|a| a.strip_prefix("0.0.0.0:")).expect("its metrics listen on all interfaces");

    // Prometheus scrapes pgshift where it listens.
    let prometheus = service(&compose, "prometheus");
    let (host, container) = mounts(prometheus).into_iter().next().expect("prometheus config mounted");
    assert_eq!(container, "/etc/prometheus/prometheus.yml");
    let config = yaml(host.trim_start_matches("./"));
    let job = &config["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/metrics");
    assert_eq!(strings(&job["static_configs"][0]["targets"]), [format!("pgshift:{listen_port}")]);
    let scraped: Vec<String> = config["scrape_configs"].as_sequence().unwrap().iter().flat_map(|j| strings(&j["static_configs"][0]["targets"])).collect();
    assert!(scraped.contains(&format!("vectorize:{metrics_port}")), "{scraped:?}");

    // Grafana gets the provisioning and the dashboards where the provider looks.
    let grafana = mounts(service(&compose, "grafana"));
    for (host, _) in &grafana {
        assert!(Path::new(ROOT).join(host.trim_start_matches("./")).is_dir(), "{host} exists");
    }
    assert!(grafana.contains(&("./grafana/provisioning".into(), "/etc/grafana/provisioning".into())));
    let provider = yaml("grafana/provisioning/dashboards/pgshift.yml");
    let path = provider["providers"][0]["options"]["path"].as_str().unwrap();
    assert!(grafana.contains(&("./grafana/dashboards".into(), path.into())), "dashboards mounted at {path}");
}

#[test]
fn the_kubernetes_job_runs_workers_that_end_by_themselves() {
    let job = yaml("deploy/kubernetes/pgshift-workers.yaml");
    assert_eq!(job["kind"], "Job");
    assert!(job["spec"]["parallelism"].as_u64().unwrap() > 1);
    assert!(job["spec"]["completions"].is_null(), "a work-queue Job: the pods end when the queue is empty");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(strings(&container["args"])[0], "worker");
    let env: Vec<&str> = container["env"].as_sequence().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    for key in ["PGSHIFT_SOURCE", "PGSHIFT_TARGET", "PGSHIFT_WORKER_WAIT"] {
        assert!(env.contains(&key), "{key} missing");
    }
    for e in container["env"].as_sequence().unwrap().iter().filter(|e| ["PGSHIFT_SOURCE", "PGSHIFT_TARGET"].contains(&e["name"].as_str().unwrap())) {
        assert!(e["valueFrom"]["secretKeyRef"].is_mapping(), "connection strings come from a Secret");
    }
}

#[test]
fn the_kubernetes_vectorize_is_one_replica_that_never_overlaps() {
    let deployment = yaml("deploy/kubernetes/pgshift-vectorize.yaml");
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate", "a second vectorize on the database refuses: no rolling overlap");
    let template = &deployment["spec"]["template"];
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], template["metadata"]["labels"]);
    let container = &template["spec"]["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(args[0], "vectorize");
    let port: u64 = args.iter().find_map(|a| a.strip_prefix("0.0.0.0:")).expect("metrics on all interfaces").parse().unwrap();
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(port));
    assert_eq!(template["metadata"]["annotations"]["prometheus.io/port"].as_str().unwrap().parse::<u64>().unwrap(), port);
    let target = container["env"].as_sequence().unwrap().iter().find(|e| e["name"] == "PGSHIFT_TARGET").expect("PGSHIFT_TARGET");
    assert!(target["valueFrom"]["secretKeyRef"].is_mapping(), "the connection string comes from a Secret");
}

#[test]
fn the_kubernetes_reembed_runs_on_a_schedule_and_never_overlaps() {
    let cron = yaml("deploy/kubernetes/pgshift-reembed-cronjob.yaml");
    assert_eq!(cron["kind"], "CronJob");
    assert_eq!(cron["spec"]["schedule"].as_str().unwrap().split_whitespace().count(), 5);
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid", "two re-indexes of one column must not overlap");
    let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(args[0], "reembed");
    for flag in ["--table", "--text", "--column"] {
        assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
    }
    // The arguments parse as pgshift's own (no --target: it comes from the Secret).
    let mut argv = vec!["pgshift".to_string()];
    argv.extend(args);
    argv.extend(["--target".to_string(), "postgresql://x@h/db".to_string()]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift")).args(&argv[1..]).arg("--help").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let target = container["env"].as_sequence().unwrap().iter().find(|e| e["name"] == "PGSHIFT_TARGET").expect("PGSHIFT_TARGET");
    assert!(target["valueFrom"]["secretKeyRef"].is_mapping());
}

/// Every file the architecture notes name (`name.rs`, `dir/name.rs`) exists in the
/// tree, so the map cannot drift from the code unseen.
#[test]
fn the_architecture_names_only_files_that_exist() {
    let mut sources = Vec::new();
    let mut dirs: Vec<_> = ["crates", "src", "tests", "benches", "examples"].iter().map(|d| Path::new(ROOT).join(d)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push(path.to_string_lossy().into_owned());
            }
        }
    }
    let doc = read("docs/ARCHITECTURE.md");
    let named: BTreeSet<&str> = doc
        .split(|c: char| !(c.is_ascii_alphanumeric() || "_-/.".contains(c)))
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| w.ends_with(".rs") && w.len() > 3)
        .collect();
    assert!(named.len() > 20, "the notes name files: {named:?}");
    let missing: Vec<&&str> = named.iter().filter(|n| !sources.iter().any(|s| s.ends_with(&format!("/{n}")))).collect();
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md names files that do not exist: {missing:?}");
}
