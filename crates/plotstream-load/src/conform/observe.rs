//! What a run observed: every connection, the inspections and metrics around it, a viewer's
//! events; and how an observation is described in reports (one line, a hex dump of the wire
//! log) and compared across modes (§7).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use super::wire::{ConnResult, Dir, LogEntry};
use crate::probe::inspect::Inspection;

/// One run's observation.
#[derive(Debug, Default)]
pub struct Observation {
    /// Each connection's name (empty for a lone one) and what it saw.
    pub conns: Vec<(String, ConnResult)>,
    /// Each stream an expectation names: its inspection (`None`: no such stream), or why
    /// there is none.
    pub streams: BTreeMap<String, std::result::Result<Option<Inspection>, String>>,
    /// How `/metrics` changed over the run (the first mode of a variant that reads them).
    pub metrics: Option<BTreeMap<String, f64>>,
    /// A viewer subscribed after the run: the well-formed events it got, or what was wrong.
    pub viewer: Option<std::result::Result<usize, String>>,
    /// The tokens were used by earlier runs: counts are deltas, windows are not comparable.
    pub reused: bool,
    /// Counters were wanted but the target has no `/metrics`.
    pub metrics_missing: bool,
    /// The run's placeholders and variables (captures included), for the expectations.
    pub subst: Vec<(String, String)>,
    /// When the run started and ended, by the wall clock (for converted timestamps).
    pub span: Option<(SystemTime, SystemTime)>,
}

/// The outcome compared across modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeKey {
    statuses: Vec<Option<u16>>,
    acc: BTreeMap<String, u64>,
    rejected: BTreeMap<String, u64>,
    digest: BTreeMap<String, String>,
}

impl ModeKey {
    /// Equal statuses, counts and rejections, and equal digests where both runs have them.
    pub fn same_as(&self, other: &ModeKey) -> bool {
        self.statuses == other.statuses
            && self.acc == other.acc
            && self.rejected == other.rejected
            && (self.digest.is_empty() || other.digest.is_empty() || self.digest == other.digest)
    }
}

/// The outcome of a run that every mode must share: statuses, counts, rejections, and the
/// digests when `with_digest`.
pub fn mode_key(obs: &Observation, with_digest: bool) -> ModeKey {
    let mut key = ModeKey {
        statuses: obs.conns.iter().map(|(_, c)| c.status()).collect(),
        acc: BTreeMap::new(),
        rejected: BTreeMap::new(),
        digest: BTreeMap::new(),
    };
    for (tok, s) in &obs.streams {
        if let Ok(i) = s {
            key.acc
                .insert(tok.clone(), i.as_ref().map_or(0, |i| i.last_seq));
            key.rejected
                .insert(tok.clone(), i.as_ref().map_or(0, |i| i.rejected_lines));
            if with_digest {
                key.digest.insert(
                    tok.clone(),
                    i.as_ref().map_or_else(String::new, |i| i.digest.clone()),
                );
            }
        }
    }
    key
}

/// A mode key as the report shows it.
pub fn show_key(k: &ModeKey) -> String {
    let statuses: Vec<String> = k
        .statuses
        .iter()
        .map(|s| s.map_or("none".to_owned(), |c| c.to_string()))
        .collect();
    let mut s = format!("status={}", statuses.join(","));
    for (t, n) in &k.acc {
        let _ = write!(s, " acc{{{t}={n}}}");
    }
    for (t, n) in &k.rejected {
        if *n > 0 {
            let _ = write!(s, " rejected{{{t}={n}}}");
        }
    }
    for (t, d) in &k.digest {
        let _ = write!(s, " digest{{{t}={}}}", &d[..d.len().min(12)]);
    }
    s
}

/// ` name` for a named connection, nothing for a lone one.
pub fn conn_label(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(" {name}")
    }
}

/// One line for the report's `Actual:`.
pub fn describe(obs: &Observation) -> String {
    let mut parts: Vec<String> = obs
        .conns
        .iter()
        .take(4)
        .map(|(n, c)| {
            if n.is_empty() {
                c.describe()
            } else {
                format!("{n}: {}", c.describe())
            }
        })
        .collect();
    if obs.conns.len() > 4 {
        parts.push(format!("… {} connections in all", obs.conns.len()));
    }
    for (tok, s) in &obs.streams {
        match s {
            Ok(Some(i)) => parts.push(format!(
                "{tok}: last_seq={} count={} rejected={}",
                i.last_seq, i.count, i.rejected_lines
            )),
            Ok(None) => parts.push(format!("{tok}: no stream")),
            Err(e) => parts.push(format!("{tok}: {e}")),
        }
    }
    if let Some(v) = &obs.viewer {
        parts.push(match v {
            Ok(n) => format!("viewer: {n} well-formed events"),
            Err(e) => format!("viewer: {e}"),
        });
    }
    parts.join("; ")
}

/// The wire log of the first three connections, as a hex dump.
pub fn obs_wire(obs: &Observation) -> String {
    let mut out = String::new();
    for (name, c) in obs.conns.iter().take(3) {
        if !name.is_empty() {
            let _ = writeln!(out, "  connection {name}:");
        }
        out.push_str(&hexdump(&c.log));
    }
    out
}

/// A hex dump of a wire log, one block per segment.
fn hexdump(log: &[LogEntry]) -> String {
    let mut out = String::new();
    for entry in log {
        let arrow = match entry.dir {
            Dir::Out => "->",
            Dir::In => "<-",
            Dir::Event => "==",
        };
        let secs = entry.at.as_secs_f64();
        if entry.dir == Dir::Event {
            let _ = writeln!(
                out,
                "  {secs:9.4} {arrow} {}",
                String::from_utf8_lossy(&entry.bytes)
            );
            continue;
        }
        let _ = writeln!(out, "  {secs:9.4} {arrow} {} bytes", entry.bytes.len());
        const MAX: usize = 512;
        for (row_idx, row) in entry.bytes[..entry.bytes.len().min(MAX)]
            .chunks(16)
            .enumerate()
        {
            let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
            let text: String = row
                .iter()
                .map(|&b| {
                    if (0x20..0x7f).contains(&b) {
                        char::from(b)
                    } else {
                        '.'
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "             {:06x}  {:<47}  {text}",
                row_idx * 16,
                hex.join(" ")
            );
        }
        if entry.bytes.len() > MAX {
            let _ = writeln!(out, "             … {} more bytes", entry.bytes.len() - MAX);
        }
    }
    out
}

/// At most [`EXCERPT`] characters of `text`, quoted.
pub fn excerpt(text: &str) -> String {
    let cut: String = text.chars().take(EXCERPT).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Characters of a body quoted in a failure.
pub const EXCERPT: usize = 300;
