//! What a bench run's points cost in CPU, server and load generator, read from `/proc`.

use anyhow::{Context, Result};

/// CPU seconds (user and system, every thread) of a server and of this process's waited-for
/// children (the load generator), from `/proc`: what a max-rate row's points cost each side.
/// On two shared cores a run's throughput moves with what else the machine runs; its CPU per
/// point much less (docs/history.md "What it costs").
pub(super) struct Cpu {
    server: f64,
    children: f64,
}

impl Cpu {
    pub(super) fn now(pid: u32) -> Result<Cpu> {
        Ok(Cpu {
            server: stat_seconds(&format!("/proc/{pid}/stat"), 11)?,
            children: stat_seconds("/proc/self/stat", 13)?,
        })
    }

    /// `(server, children)` CPU seconds since `self`.
    pub(super) fn since(&self, pid: u32) -> Result<(f64, f64)> {
        let now = Cpu::now(pid)?;
        Ok((now.server - self.server, now.children - self.children))
    }
}

/// The sum of two clock-tick fields of a `/proc/.../stat` (`at` counts from the field after the
/// command name: 11 is `utime` and `stime`, 13 `cutime` and `cstime`), in seconds (Linux reports
/// them in USER_HZ, 100 a second, whatever the kernel's tick).
fn stat_seconds(path: &str, at: usize) -> Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    seconds_of(&stat, at).with_context(|| format!("no fields {at} and {} in {path}", at + 1))
}

/// [`stat_seconds`] of the text of a stat file (the command name may hold `)` and spaces).
fn seconds_of(stat: &str, at: usize) -> Option<f64> {
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(at);
    let mut tick = || fields.next()?.parse::<u64>().ok();
    let ticks = tick()? + tick()?;
    #[allow(clippy::cast_precision_loss)] // clock ticks
    Some(ticks as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stat_line_whose_name_holds_a_parenthesis() {
        let stat = "4242 (plot) stream) S 1 2 3 4 5 6 7 8 9 10 250 50 7 3 20 0";
        assert_eq!(seconds_of(stat, 11), Some(3.0));
        assert_eq!(seconds_of(stat, 13), Some(0.1));
        assert_eq!(seconds_of("4242 (x) S 1", 11), None);
        assert!(stat_seconds("/proc/self/stat", 11).is_ok());
    }
}
