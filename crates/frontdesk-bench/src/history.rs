//! `--history FILE`: appends each scenario's headline figures (medians) to the history
//! file, a TSV of `figure  date  commit  value  source` rows (`bench-history.tsv` at the
//! repository root; scripts/bench-edge.sh appends to the same file).
//! `scripts/bench-history.sh` renders it as BENCHMARKS.md's first / previous / current
//! table. Rows are only ever appended, so the first and every later run stay.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::report::Scenario;

/// Per scenario, the figures worth a history (the ones BENCHMARKS.md quotes).
const HEADLINES: &[(&str, &[&str])] = &[
    (
        "edge-me",
        &["me/hello rps ratio", "1conn.added.p50", "1conn.added.p99"],
    ),
    (
        "webhooks",
        &["events/hello rps ratio", "accepted events/s", "ack.p99"],
    ),
    (
        "zipf",
        &["users fetched / distinct read", "calls / minimum"],
    ),
    ("cold-storm", &["lib.distinct.calls", "http.distinct.calls"]),
    ("bulk", &["writes/s overall"]),
];

pub const HEADER: &str = "figure\tdate\tcommit\tvalue\tsource";

/// Appends the headline medians of `done` to `path` (creating it with a header).
pub fn append(path: &Path, done: &[Scenario], source: &str) -> anyhow::Result<usize> {
    let date = utc_now();
    let commit = commit();
    let mut rows = Vec::new();
    for s in done {
        if s.unavailable().is_some() || s.failed().is_some() {
            continue;
        }
        let Some((_, keys)) = HEADLINES.iter().find(|(n, _)| *n == s.name) else {
            continue;
        };
        for (k, m, _, _) in s.medians() {
            if keys.contains(&k.as_str()) && m.is_finite() {
                let v = value(m);
                rows.push(format!(
                    "bench.{}.{k}\t{date}\t{commit}\t{v}\t{source}",
                    s.name
                ));
            }
        }
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let fresh = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    if fresh {
        writeln!(f, "{HEADER}")?;
    }
    for r in &rows {
        writeln!(f, "{r}")?;
    }
    Ok(rows.len())
}

/// Three significant-ish digits: 0.223, 45.1, 3703.
fn value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The short commit of the working directory, `-dirty` when tracked files differ from
/// it (the history file and flamegraphs aside: recording them is not a change), or
/// `unknown` outside git. `FRONTDESK_BENCH_COMMIT` overrides it.
fn commit() -> String {
    if let Ok(c) = std::env::var("FRONTDESK_BENCH_COMMIT") {
        return c;
    }
    let git = |args: &[&str]| std::process::Command::new("git").args(args).output().ok();
    let Some(head) = git(&["rev-parse", "--short", "HEAD"])
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    else {
        return "unknown".into();
    };
    let dirty = git(&[
        "diff",
        "--quiet",
        "HEAD",
        "--",
        ".",
        ":(exclude)bench-history.tsv",
        ":(exclude)docs/flamegraphs",
    ])
    .is_some_and(|o| !o.status.success());
    if dirty { format!("{head}-dirty") } else { head }
}

/// Now as `YYYY-MM-DDTHH:MMZ` (UTC).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}Z",
        rem / 3_600,
        (rem % 3_600) / 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{HEADER, append, format_utc};
    use crate::report::{Report, Scenario};

    fn scenario(name: &str, figures: &[(&str, f64)]) -> Scenario {
        let mut r = Report::default();
        for (k, v) in figures {
            r.add(*k, *v, "");
        }
        Scenario {
            name: name.into(),
            runs: vec![r],
        }
    }

    #[test]
    fn appends_headline_figures_only_with_one_header() {
        let path = std::env::temp_dir().join(format!(
            "frontdesk-bench-history-{}-{:?}.tsv",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        let edge = scenario(
            "edge-me",
            &[("hello.rps", 1000.0), ("me/hello rps ratio", 0.5)],
        );
        let mut broken = scenario("webhooks", &[("accepted events/s", 10.0)]);
        broken.runs[0].fail("nothing answered");
        let n1 = append(&path, &[edge.clone(), broken], "test").unwrap();
        let n2 = append(&path, &[edge], "test").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!((n1, n2), (1, 1));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], HEADER);
        let cols: Vec<&str> = lines[1].split('\t').collect();
        assert_eq!(cols.len(), 5);
        assert_eq!(cols[0], "bench.edge-me.me/hello rps ratio");
        assert_eq!(cols[3], "0.500");
        assert_eq!(cols[4], "test");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00Z");
        // 2026-11-23 19:05 UTC
        assert_eq!(format_utc(1_795_460_700), "2026-11-23T19:05Z");
        // 2024-02-29 12:00 UTC (a leap day)
        assert_eq!(format_utc(1_709_208_000), "2024-02-29T12:00Z");
    }
}
