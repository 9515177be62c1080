//! Progress on a terminal (one bar per table) or as plain log lines elsewhere.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pgshift_pipeline::metrics::Stage;
use pgshift_pipeline::progress::Progress;

pub fn reporter(quiet: bool) -> Box<dyn Progress> {
    if quiet {
        Box::new(pgshift_pipeline::progress::Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars { multi: MultiProgress::new(), bars: Mutex::new(HashMap::new()) })
    } else {
        Box::new(Lines { last_index_tenth: Mutex::new(u64::MAX) })
    }
}

struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress for Bars {
    fn phase(&self, stage: Stage) {
        let _ = self.multi.println(format!("== {stage}"));
    }

    fn table_started(&self, table: &str, size_bytes: u64) {
        // The on-disk size only approximates the COPY stream: the bar is a guide.
        let bar = self.multi.add(ProgressBar::new(size_bytes.max(1)));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>28} {bar:30} {bytes:>10}/~{total_bytes:10} {bytes_per_sec:>12} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(table.to_string());
        self.bars.lock().unwrap().insert(table.to_string(), bar);
    }

    fn table_bytes(&self, table: &str, delta: u64) {
        if let Some(bar) = self.bars.lock().unwrap().get(table) {
            bar.inc(delta);
        }
    }

    fn table_done(&self, table: &str, rows: u64, bytes: u64, elapsed: Duration) {
        if let Some(bar) = self.bars.lock().unwrap().remove(table) {
            bar.set_length(bytes.max(1));
            bar.set_position(bytes);
            bar.finish_with_message(format!("{rows} rows in {:.1}s", elapsed.as_secs_f64()));
        }
    }

    fn step(&self, message: &str) {
        let _ = self.multi.println(format!("   {message}"));
    }

    fn index_progress(&self, index: &str, done: u64, total: u64) {
        let mut bars = self.bars.lock().unwrap();
        let bar = bars.entry(format!("index {index}")).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total.max(1)));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>28} {bar:30} {pos:>10}/{len:10} tuples {elapsed_precise}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(index.to_string());
            bar
        });
        bar.set_length(total.max(1));
        bar.set_position(done);
        if total > 0 && done >= total {
            bar.finish();
        }
    }
}

struct Lines {
    last_index_tenth: Mutex<u64>,
}

impl Progress for Lines {
    fn phase(&self, stage: Stage) {
        eprintln!("pgshift: phase {stage}");
    }
    fn table_started(&self, table: &str, size_bytes: u64) {
        eprintln!("pgshift: copying {table} (~{})", human_bytes(size_bytes));
    }
    fn table_done(&self, table: &str, rows: u64, bytes: u64, elapsed: Duration) {
        eprintln!("pgshift: copied {table}: {rows} rows, {} in {:.1}s", human_bytes(bytes), elapsed.as_secs_f64());
    }
    fn step(&self, message: &str) {
        eprintln!("pgshift: {message}");
    }
    fn index_progress(&self, index: &str, done: u64, total: u64) {
        // A line per tenth, not per poll.
        let tenth = |n: u64| (n * 10).checked_div(total).unwrap_or(0);
        let mut last = self.last_index_tenth.lock().unwrap();
        if tenth(done) != *last || done == total {
            *last = tenth(done);
            eprintln!("pgshift: building {index}: {done}/{total}");
        }
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
