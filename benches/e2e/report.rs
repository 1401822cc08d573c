//! What every section shares to report: the output (printed and kept for the leak check), the
//! table, latency statistics and their formatting, and the machine the run is on.

use std::sync::Mutex;
use std::time::Duration;

// ---- output ------------------------------------------------------------------------------------

/// Everything this bench printed, to check for tokens at the end.
pub(crate) static TRANSCRIPT: Mutex<String> = Mutex::new(String::new());

pub(crate) fn say(line: impl AsRef<str>) {
    let line = line.as_ref();
    println!("{line}");
    let mut t = TRANSCRIPT.lock().unwrap();
    t.push_str(line);
    t.push('\n');
}

pub(crate) fn progress(line: impl AsRef<str>) {
    let line = line.as_ref();
    eprintln!("  … {line}");
    let mut t = TRANSCRIPT.lock().unwrap();
    t.push_str(line);
    t.push('\n');
}

/// The output table: sections, each with its own column heads.
#[derive(Default)]
pub(crate) struct Table {
    pub(crate) blocks: Vec<(String, Vec<Vec<String>>, Vec<String>)>,
}

impl Table {
    pub(crate) fn section(&mut self, title: &str, head: &[&str]) {
        self.blocks.push((
            title.to_string(),
            vec![head.iter().map(|s| s.to_string()).collect()],
            Vec::new(),
        ));
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.blocks.last_mut().expect("a section").1.push(cells);
    }

    pub(crate) fn note(&mut self, text: impl Into<String>) {
        self.blocks
            .last_mut()
            .expect("a section")
            .2
            .push(text.into());
    }

    pub(crate) fn render(&self) -> Vec<String> {
        let mut out = Vec::new();
        let width = 118;
        for (title, rows, notes) in &self.blocks {
            let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
            let mut widths = vec![0usize; cols];
            for row in rows {
                for (i, cell) in row.iter().enumerate() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
            out.push(format!("{:=<width$}", format!("== {title} ")));
            for (r, row) in rows.iter().enumerate() {
                let mut line = String::new();
                for (i, cell) in row.iter().enumerate() {
                    let pad = widths[i] - cell.chars().count();
                    // First column left-aligned, figures right-aligned.
                    if i == 0 {
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad));
                    } else {
                        line.push_str("  ");
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    }
                }
                out.push(line.trim_end().to_string());
                if r == 0 {
                    out.push(format!(
                        "{:-<w$}",
                        "",
                        w = out.last().unwrap().chars().count()
                    ));
                }
            }
            for note in notes {
                out.push(format!("  {note}"));
            }
        }
        out.push("=".repeat(width));
        out
    }
}

// ---- statistics ----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub(crate) struct Lat {
    pub(crate) n: usize,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

/// Nearest-rank percentile of a sorted sample.
pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn lat(mut v: Vec<Duration>) -> Lat {
    if v.is_empty() {
        return Lat {
            n: 0,
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            max: Duration::ZERO,
        };
    }
    v.sort();
    Lat {
        n: v.len(),
        p50: pct(&v, 0.50),
        p99: pct(&v, 0.99),
        max: v[v.len() - 1],
    }
}

pub(crate) fn us(d: Duration) -> String {
    let x = d.as_secs_f64() * 1e6;
    if x < 10.0 {
        format!("{x:.2} µs")
    } else if x < 1000.0 {
        format!("{x:.1} µs")
    } else {
        format!("{:.2} ms", x / 1000.0)
    }
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// `b - a` in ms with a sign.
pub(crate) fn delta_ms(b: Duration, a: Duration) -> String {
    format!("{:+.3}", (b.as_secs_f64() - a.as_secs_f64()) * 1e3)
}

pub(crate) fn delta_us(b: Duration, a: Duration) -> String {
    let x = (b.as_secs_f64() - a.as_secs_f64()) * 1e6;
    if x.abs() < 1000.0 {
        format!("{x:+.1} µs")
    } else {
        format!("{:+.3} ms", x / 1000.0)
    }
}

pub(crate) fn kib(bytes: usize) -> String {
    if bytes >= 10 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

// ---- the machine -----------------------------------------------------------------------------------

pub(crate) fn machine() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB RAM", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    vec![
        format!("machine: {model}, {cores} cores, {mem}, Linux {kernel}"),
        format!(
            "binary:  {} (keyward {}, bench profile = release)",
            env!("CARGO_BIN_EXE_keyward"),
            env!("CARGO_PKG_VERSION")
        ),
    ]
}
