//! Figures, medians over runs, the printed table and the JSON document.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// One scenario run: named figures in a stable order, plus notes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub figures: Vec<(String, f64, &'static str)>,
    pub notes: Vec<String>,
    /// `None`: ran; `Some(why)`: the scenario could not run (e.g. a route is missing).
    pub unavailable: Option<String>,
    /// Something is functionally broken (e.g. nothing was answered): the smoke run fails.
    pub failed: Option<String>,
}

impl Report {
    pub fn add(&mut self, key: impl Into<String>, value: f64, unit: &'static str) {
        self.figures.push((key.into(), value, unit));
    }

    pub fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    pub fn fail(&mut self, why: impl Into<String>) {
        if self.failed.is_none() {
            self.failed = Some(why.into());
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| *v)
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The runs of one scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub runs: Vec<Report>,
}

impl Scenario {
    /// (key, median, unit, every run's value), in the first run's order.
    pub fn medians(&self) -> Vec<(String, f64, &'static str, Vec<f64>)> {
        let Some(first) = self.runs.first() else {
            return Vec::new();
        };
        first
            .figures
            .iter()
            .map(|(k, _, unit)| {
                let vals: Vec<f64> = self
                    .runs
                    .iter()
                    .map(|r| r.get(k).unwrap_or(f64::NAN))
                    .collect();
                (k.clone(), median(vals.clone()), *unit, vals)
            })
            .collect()
    }

    pub fn notes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.runs {
            for n in &r.notes {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        }
        out
    }

    pub fn unavailable(&self) -> Option<String> {
        self.runs.iter().find_map(|r| r.unavailable.clone())
    }

    pub fn failed(&self) -> Option<String> {
        self.runs.iter().find_map(|r| r.failed.clone())
    }

    pub fn print(&self) {
        println!();
        println!(
            "== {} ({} run{}) ==",
            self.name,
            self.runs.len(),
            if self.runs.len() == 1 { "" } else { "s" }
        );
        if let Some(why) = self.unavailable() {
            println!("   unavailable: {why}");
        }
        if let Some(why) = self.failed() {
            println!("   FAILED: {why}");
        }
        let rows = self.medians();
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(10).max(10);
        if !rows.is_empty() {
            println!(
                "   {:<w$}  {:>14}  {:<8}  runs",
                "figure",
                "median",
                "unit",
                w = w
            );
        }
        for (k, m, unit, vals) in rows {
            let runs: Vec<String> = vals.iter().map(|v| fmt_num(*v)).collect();
            println!(
                "   {:<w$}  {:>14}  {:<8}  {}",
                k,
                fmt_num(m),
                unit,
                if vals.len() > 1 {
                    runs.join(" / ")
                } else {
                    String::new()
                },
                w = w
            );
        }
        for n in self.notes() {
            println!("   note: {n}");
        }
    }

    pub fn to_json(&self) -> Value {
        let mut med = Map::new();
        for (k, m, unit, _) in self.medians() {
            med.insert(k, json!({"value": num(m), "unit": unit}));
        }
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                let mut m = Map::new();
                for (k, v, _) in &r.figures {
                    m.insert(k.clone(), num(*v));
                }
                Value::Object(m)
            })
            .collect();
        json!({
            "scenario": self.name,
            "unavailable": self.unavailable(),
            "failed": self.failed(),
            "medians": med,
            "runs": runs,
            "notes": self.notes(),
        })
    }
}

fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

pub fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// What the machine is, for the report.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": cpu,
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    })
}
