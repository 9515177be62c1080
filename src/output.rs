//! Human-readable reports on stdout. `--json` prints the same structs as JSON.

use pgshift_pipeline::source::inspect::InspectReport;
use pgshift_pipeline::cutover::CutoverReport;
use pgshift_pipeline::catchup::FollowReport;
use pgshift_pipeline::load::worker::WorkerReport;
use pgshift_pipeline::load::MigrateReport;
use pgshift_pipeline::embed::reembed::ReembedReport;
use pgshift_pipeline::run::status::StatusReport;
use pgshift_pipeline::verify::VerifyReport;

use crate::progress::human_bytes;

fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        line(r.clone());
    }
}

pub fn print_inspect(r: &InspectReport) {
    println!("source {} (server_version_num {})", r.source, r.server_version_num);
    if !r.extensions.is_empty() {
        println!("extensions: {}", r.extensions.join(", "));
    }
    let rows: Vec<Vec<String>> = r
        .tables
        .iter()
        .map(|t| {
            vec![
                t.table.clone(),
                t.exact_rows.map_or(format!("~{}", t.rows_estimate.max(0)), |n| n.to_string()),
                human_bytes(t.size_bytes.max(0) as u64),
                t.primary_key.as_ref().map_or("-".into(), |k| {
                    k.columns.iter().zip(&k.types).map(|(c, t)| format!("{c} {t}")).collect::<Vec<_>>().join(", ")
                }),
                t.replica_identity.to_string(),
                format!("{:?}", t.copy_format).to_lowercase(),
                match t.in_target {
                    None => String::new(),
                    Some(false) => "absent".into(),
                    Some(true) if t.target_differences.is_empty() => "same shape".into(),
                    Some(true) => format!("differs: {}", t.target_differences.join("; ")),
                },
            ]
        })
        .collect();
    table(&["table", "rows", "size", "primary key", "replica id", "copy", "target"], &rows);
    for t in &r.tables {
        println!("\n{}{}", t.table, t.partition_of.as_ref().map(|p| format!(" (partition of {p})")).unwrap_or_default());
        for c in &t.columns {
            println!("    {} {}", c.name, c.type_name);
        }
    }
    println!("\nschema changes: {}", r.schema_changes);
    if !r.not_carried.is_empty() {
        println!("\nnot carried by pgshift (each with what to do):");
        for n in &r.not_carried {
            println!("  - {n}");
        }
    }
    print_problems(&r.problems);
}

fn print_problems(problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    println!("\nproblems:");
    for p in problems {
        println!("  - {p}");
    }
}

pub fn print_migrate(r: &MigrateReport) {
    if r.dry_run {
        println!("dry run: nothing was written\n\nplan:");
        let rows: Vec<Vec<String>> = r
            .plan
            .iter()
            .map(|p| {
                vec![
                    p.table.clone(),
                    format!("~{}", p.rows_estimate.max(0)),
                    human_bytes(p.size_bytes.max(0) as u64),
                    format!("{:?}", p.format).to_lowercase(),
                    format!("{} x {:?}", p.chunks.len(), p.split).to_lowercase(),
                ]
            })
            .collect();
        table(&["table", "rows", "size", "copy", "chunks"], &rows);
        println!("\n-- pre-data (before the load)");
        for s in &r.pre_data {
            println!("{s};");
        }
        if let Some(p) = &r.publication {
            println!("\n-- on the source, before the replication slot");
            println!("{p};");
        }
        if !r.template1.is_empty() {
            println!("\n-- in the target server's template1 (--extensions-in-template1)");
            for s in &r.template1 {
                println!("{s};");
            }
        }
        println!("\n-- post-data (after the load)");
        for s in &r.post_data {
            println!("{s};");
        }
        if !r.after_load.is_empty() {
            println!("\n-- after the indexes: views, policies, grants{}", if r.at_cutover.is_empty() { ", triggers, row security, owners" } else { "" });
            for s in &r.after_load {
                println!("{s};");
            }
        }
        if !r.at_cutover.is_empty() {
            println!("\n-- inside the cutover's fence: triggers, row security, owners");
            for s in &r.at_cutover {
                println!("{s};");
            }
        }
        print_problems(&r.warnings);
        return;
    }
    let rows: Vec<Vec<String>> = r
        .tables
        .iter()
        .map(|t| {
            vec![
                t.table.clone(),
                t.rows.to_string(),
                human_bytes(t.bytes),
                format!("{:.1}s", t.seconds),
                format!("{:.0}", t.rows as f64 / t.seconds.max(0.001)),
            ]
        })
        .collect();
    println!("run {} loaded:", r.run_id.unwrap_or_default());
    table(&["table", "rows", "bytes", "time", "rows/s"], &rows);
    let (rows_total, bytes_total) = r.tables.iter().fold((0, 0), |(a, b), t| (a + t.rows, b + t.bytes));
    println!(
        "\n{rows_total} rows, {} copied in {:.1}s; indexes and constraints {:.1}s; total {:.1}s",
        human_bytes(bytes_total),
        r.copy_seconds,
        r.post_data_seconds,
        r.total_seconds
    );
    if r.truncated_texts > 0 {
        println!(
            "{} text(s) were longer than the model's window (the longest {} tokens) and were embedded from their start only: \
             a chunk table embeds them whole (--embed 'TABLE->CHUNK_TABLE=EXPRESSION')",
            r.truncated_texts, r.longest_text_tokens
        );
    }
    if let (Some(slot), Some(lsn)) = (&r.slot_name, &r.start_lsn) {
        println!(
            "replication slot {slot} holds changes since {lsn} for catch-up (pgshift follow). It keeps WAL on the \
             source until it is consumed; if you will not catch up, drop it: SELECT pg_drop_replication_slot('{slot}'); \
             DROP PUBLICATION {slot};"
        );
    }
    print_problems(&r.warnings);
}

pub fn print_vectorize(r: &pgshift_pipeline::vectorize::VectorizeReport) {
    if r.dry_run {
        println!("dry run: nothing was written\n\nvectorize would keep current: {}\n\n-- set up first", r.tables.join(", "));
        for s in &r.steps {
            println!("{s};");
        }
        return;
    }
    println!(
        "vectorize: {} row(s) embedded in {:.1}s ({}){}",
        r.rows,
        r.seconds,
        r.tables.join(", "),
        if r.reconnects > 0 { format!(", {} reconnect(s)", r.reconnects) } else { String::new() }
    );
}

pub fn print_search(r: &pgshift_pipeline::embed::search::SearchReport) {
    println!("{} nearest in {} ({}), by cosine distance:", r.hits.len(), r.table, r.model);
    for h in &r.hits {
        let key: Vec<String> = r.key.iter().zip(&h.key).map(|(k, v)| format!("{k} = {v}")).collect();
        let chunk = h.chunk_seq.map(|s| format!(", chunk {s}")).unwrap_or_default();
        println!("\n{:.4}  {}{chunk}", h.distance, key.join(", "));
        // The whole chunk (or the row's text as far as search read it), wrapped.
        let mut line = String::new();
        for word in h.text.split_whitespace() {
            if !line.is_empty() && line.len() + word.len() > 96 {
                println!("    {line}");
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            println!("    {line}");
        }
    }
}

pub fn print_follow(r: &FollowReport) {
    println!(
        "run {}: applied {} transactions ({} inserts, {} updates, {} deletes, {} truncated tables) in {:.1}s; \
         confirmed {} (started at {}), lag {}",
        r.run_id,
        r.transactions,
        r.inserts,
        r.updates,
        r.deletes,
        r.truncates,
        r.seconds,
        r.confirmed_lsn,
        r.started_at_lsn,
        human_bytes(r.lag_bytes)
    );
}

pub fn print_cutover(r: &CutoverReport) {
    if r.dry_run {
        println!("dry run: nothing was paused or written. Target lag now {}. Steps:", human_bytes(r.lag_bytes_before));
        for (i, step) in r.steps.iter().enumerate() {
            println!("  {}. {step}", i + 1);
        }
        return;
    }
    let rows: Vec<Vec<String>> = r.counts.iter().map(|c| vec![c.table.clone(), c.source_rows.to_string(), c.target_rows.to_string()]).collect();
    table(&["table", "source rows", "target rows"], &rows);
    println!(
        "\ncutover of run {} done: writes on the source were paused for {:.0} ms; fence at {}; {} sequences copied.",
        r.run_id,
        r.write_pause_ms,
        r.fence_lsn.as_deref().unwrap_or("-"),
        r.sequences_synced
    );
    let p = &r.pause_steps;
    println!(
        "The pause: {:.0} ms waiting for writers in flight, {:.0} ms for the last changes, {:.0} ms sequences, {:.0} ms snapshots, \
         {:.0} ms switching, {:.0} ms releasing; the row counts above were compared afterwards, as of the fence.",
        p.lock_ms, p.last_changes_ms, p.sequences_ms, p.snapshots_ms, p.switch_ms, p.release_ms
    );
    for s in &r.skipped {
        println!("Left out (its object was dropped or renamed on the source during catch-up): {s}");
    }
    if r.source_read_only {
        println!("The database switched away from is now read-only for new sessions (ALTER DATABASE ... RESET default_transaction_read_only undoes it).");
    }
    if let Some(slot) = &r.reverse_slot {
        println!(
            "Reverse replication is ready (slot {slot} on the new database): run pgshift follow --source NEW --target OLD \
             to keep the old database current; pgshift rollback --source OLD --target NEW switches back."
        );
    }
    for note in &r.foreign_keys {
        println!("{note}");
    }
    match &r.pgbouncer {
        Some(p) => println!(
            "PgBouncer now sends {} to {} ({} rewritten); its clients waited {:.0} ms and need no change.",
            p.database, r.switch_to, p.ini, p.client_wait_ms
        ),
        None => println!("Switch the application's DATABASE_URL to {} now.", r.switch_to),
    }
}

pub fn print_verify(r: &VerifyReport) {
    let rows: Vec<Vec<String>> = r
        .tables
        .iter()
        .map(|t| {
            vec![
                t.qualified.clone(),
                t.source_rows.to_string(),
                t.target_rows.map_or("-".into(), |n| n.to_string()),
                t.ranges.to_string(),
                if t.matches { "ok".into() } else { t.problem.clone().unwrap_or_else(|| "DIFFERS".into()) },
            ]
        })
        .collect();
    table(&["table", "source rows", "target rows", "ranges", "result"], &rows);
    for t in &r.made_by_run {
        println!("  {t}: not compared (the application's chunk table: the run made its rows from the new vectors' texts)");
    }
    for t in r.tables.iter().filter(|t| !t.not_compared.is_empty()) {
        println!("  {}: {} not compared (vectors computed by the run replaced the source's values)", t.qualified, t.not_compared.join(", "));
    }
    for t in r.tables.iter().filter(|t| !t.matches) {
        for m in &t.mismatched_ranges {
            println!(
                "  {} {}: source {} rows, target {}",
                t.qualified,
                m.range.as_deref().unwrap_or("(whole table)"),
                m.source.rows,
                m.target.as_ref().map_or("missing".into(), |d| format!("{} rows", d.rows))
            );
        }
    }
    println!("{}", if r.ok { "verify: all tables match" } else { "verify: DIFFERENCES FOUND" });
}

pub fn print_status(r: &StatusReport) {
    if let Some(v) = &r.vectorize {
        let state = match v.running {
            true => format!("running ({})", v.worker),
            false => format!("not running (last seen {:.0} s ago, {})", v.seen_seconds_ago, v.worker),
        };
        println!(
            "vectorize: {state}; {} row(s) embedded since {} ({:.1}/s), {} waiting, lag {:.1} s; keeps {}",
            v.rows,
            v.started_at,
            v.rows_per_second,
            v.backlog,
            v.lag_seconds,
            v.tables.join(", ")
        );
    }
    let Some(run_id) = r.run_id.filter(|_| r.has_run) else {
        println!("the target holds no pgshift run");
        return;
    };
    let catching_up = r.following == Some(true) && r.phase == Some(pgshift_pipeline::run::Phase::Loaded);
    println!(
        "run {run_id}: phase {}{}, {} of {} chunks copied{}",
        r.phase.map_or("?", |p| p.as_str()),
        if catching_up { " (catch-up is applying changes)" } else { "" },
        r.chunks_done,
        r.chunks_total,
        r.updated_at.as_ref().map(|u| format!(", updated {u}")).unwrap_or_default()
    );
    let rows: Vec<Vec<String>> = r
        .tables
        .iter()
        .map(|t| vec![t.table.clone(), format!("{}/{}", t.chunks_done, t.chunks_total), t.rows.to_string(), human_bytes(t.bytes.max(0) as u64)])
        .collect();
    table(&["table", "chunks", "rows", "copied"], &rows);
    if !r.workers.is_empty() {
        let rows: Vec<Vec<String>> = r
            .workers
            .iter()
            .map(|w| {
                let copying = if w.copying.is_empty() { "-".to_string() } else { w.copying.join(", ") };
                let seen = if w.gone { format!("{:.0} s ago (gone?)", w.seen_seconds_ago) } else { "now".into() };
                vec![w.worker.clone(), w.jobs.to_string(), copying, w.chunks_done.to_string(), w.rows.to_string(), format!("{:.0}", w.rows_per_second), seen]
            })
            .collect();
        table(&["worker", "jobs", "copying", "chunks done", "rows", "rows/s", "seen"], &rows);
    }
    if r.runs.len() > 1 {
        println!("runs on this target:");
        for run in &r.runs {
            let moved = if run.schema_map.is_empty() { String::new() } else { format!(" (schemas {})", run.schema_map) };
            println!("  run {} from {}: {}{moved}", run.run_id, run.source, run.phase);
        }
    }
    match (r.lag_bytes, r.following) {
        (Some(lag), following) => {
            println!("replication lag: {}{}", human_bytes(lag), if following == Some(true) { " (a follower is streaming)" } else { " (nobody is following)" })
        }
        (None, _) if r.slot_name.is_some() => println!("replication lag: pass --source to see it"),
        _ => {}
    }
}

pub fn print_worker(r: &WorkerReport) {
    println!("run {}: every chunk is copied; this worker took part for {:.1} s", r.run_id, r.seconds);
    for t in &r.tables {
        println!("  {} finished: {} rows, {}", t.table, t.rows, human_bytes(t.bytes));
    }
}

pub fn print_reembed(r: &ReembedReport) {
    if r.dry_run {
        println!("dry run: nothing was written; the re-embed of {}.{} with {} would:", r.table, r.column, r.model);
        for (i, s) in r.steps.iter().enumerate() {
            println!("  {}. {s}", i + 1);
        }
        return;
    }
    if r.mode == "in-place" {
        println!(
            "{}.{} brought up to date in place with {}: {} of {} rows differed from their text and were embedded again; {:.1}s in all",
            r.table, r.column, r.model, r.rows_embedded, r.rows_checked, r.seconds
        );
        return;
    }
    println!(
        "{}.{} re-embedded with {}{}: {} rows in {} pass(es), index {}, swap held the table {:.0} ms; {:.1}s in all",
        r.table,
        r.column,
        r.model,
        if r.resumed { " (resumed)" } else { "" },
        r.rows_embedded,
        r.passes,
        r.index.as_deref().unwrap_or("none"),
        r.swap_ms,
        r.seconds
    );
}

pub fn print_sqlite_inspect(tables: &Vec<pgshift_sqlite::schema::Table>) {
    let rows: Vec<Vec<String>> = tables
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.rows.to_string(),
                if t.primary_key.is_empty() { "-".into() } else { t.primary_key.join(",") },
                if t.fts5 { "fts5 -> tsvector + GIN".into() } else { format!("{} index(es), {} foreign key(s)", t.indexes.len(), t.foreign_keys.len()) },
            ]
        })
        .collect();
    table(&["table", "rows", "primary key", "shape"], &rows);
    for t in tables {
        println!("\n{}", t.name);
        for c in &t.columns {
            let note = c.note.as_ref().map(|n| format!("  ({n})")).unwrap_or_default();
            println!("    {} {:?} -> {}{note}", c.name, c.declared, c.pg.sql());
        }
        for s in &t.skipped {
            println!("    note: {s}");
        }
    }
}
