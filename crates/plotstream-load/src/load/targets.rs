//! `--target` (repeatable) and `--viewers-on`: which node each stream's writer and viewer use.
//!
//! Several targets are the nodes of one cluster (several `plotstream serve` sharing one store).
//! Writers go round-robin: stream `i`'s writer to target `i % n`. Its viewer subscribes on the
//! same node, or with `--viewers-on other` on the next one, `(i + 1) % n`, so that every verified
//! point crossed from one node to another. The end-of-run inspection read goes to the viewer's
//! node: in a cluster any node must answer for any stream, and the digest then proves the
//! viewer's node holds the whole window. [`place`] is the whole rule.

use plotstream_client::Target;
use serde::Serialize;

use crate::error::{Error, Result};

/// `--viewers-on`: where a stream's viewer subscribes, relative to its writer's target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ViewersOn {
    /// The writer's own target.
    #[default]
    Same,
    /// The next target: stream `i`'s viewer on target `(i + 1) % n` (needs two targets or more).
    Other,
}

impl ViewersOn {
    /// The flag's value: `same` or `other`.
    pub fn name(self) -> &'static str {
        match self {
            ViewersOn::Same => "same",
            ViewersOn::Other => "other",
        }
    }
}

/// The target indices `(writer, viewer)` of stream `stream_idx` among `n_targets` targets.
///
/// Invariant: `n_targets >= 1`; both indices are below it.
pub fn place(stream_idx: usize, n_targets: usize, viewers_on: ViewersOn) -> (usize, usize) {
    let n = n_targets.max(1);
    let writer = stream_idx % n;
    let viewer = match viewers_on {
        ViewersOn::Same => writer,
        ViewersOn::Other => (writer + 1) % n,
    };
    (writer, viewer)
}

/// What one target carried in a run (the report lists them when there are several).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetLoad {
    /// The URL as given.
    pub url: String,
    /// Streams whose writer connected here.
    pub writers: usize,
    /// Streams whose viewer subscribed (and inspection was read) here; 0 without `--verify`.
    pub viewers: usize,
}

/// The parsed targets and the placement rule of a run.
#[derive(Debug)]
pub(crate) struct Targets {
    urls: Vec<String>,
    /// Invariant: not empty; one per URL.
    parsed: Vec<Target>,
    viewers_on: ViewersOn,
}

impl Targets {
    /// Checks `--target` and `--viewers-on` together; every refusal is a usage error naming the
    /// flag.
    pub(crate) fn parse(urls: &[String], viewers_on: ViewersOn, verify: bool) -> Result<Targets> {
        if urls.is_empty() {
            return Err(Error::Usage("--target is required".to_owned()));
        }
        let mut parsed = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            if urls[..i].contains(url) {
                return Err(Error::Usage(format!(
                    "--target {url} is given twice: each target is one node"
                )));
            }
            parsed.push(Target::parse(url).map_err(|e| Error::Usage(format!("--target: {e}")))?);
        }
        if viewers_on == ViewersOn::Other {
            if urls.len() < 2 {
                return Err(Error::Usage(
                    "--viewers-on other needs at least two --target (one node has no other)"
                        .to_owned(),
                ));
            }
            if !verify {
                return Err(Error::Usage(
                    "--viewers-on other needs --verify (without it there are no viewers)"
                        .to_owned(),
                ));
            }
        }
        Ok(Targets {
            urls: urls.to_vec(),
            parsed,
            viewers_on,
        })
    }

    /// Where stream `stream_idx`'s writer connects.
    pub(crate) fn writer(&self, stream_idx: usize) -> &Target {
        &self.parsed[place(stream_idx, self.parsed.len(), self.viewers_on).0]
    }

    /// Where stream `stream_idx`'s viewer subscribes and its inspection is read.
    pub(crate) fn viewer(&self, stream_idx: usize) -> &Target {
        &self.parsed[place(stream_idx, self.parsed.len(), self.viewers_on).1]
    }

    /// The report's `target`: the URL, or with several all of them joined by `,`.
    pub(crate) fn joined(&self) -> String {
        self.urls.join(",")
    }

    /// The report's `viewers_on`: only with several targets (one target has one placement).
    pub(crate) fn viewers_on(&self) -> Option<ViewersOn> {
        (self.urls.len() > 1).then_some(self.viewers_on)
    }

    /// What each target carries with `n_streams` streams (viewers only with `verify`).
    pub(crate) fn loads(&self, n_streams: usize, verify: bool) -> Vec<TargetLoad> {
        let mut loads: Vec<TargetLoad> = self
            .urls
            .iter()
            .map(|url| TargetLoad {
                url: url.clone(),
                writers: 0,
                viewers: 0,
            })
            .collect();
        for s in 0..n_streams {
            let (w, v) = place(s, loads.len(), self.viewers_on);
            loads[w].writers += 1;
            if verify {
                loads[v].viewers += 1;
            }
        }
        loads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_go_round_robin_and_viewers_to_the_next_target() {
        let same: Vec<_> = (0..5).map(|s| place(s, 3, ViewersOn::Same)).collect();
        assert_eq!(same, [(0, 0), (1, 1), (2, 2), (0, 0), (1, 1)]);
        let other: Vec<_> = (0..5).map(|s| place(s, 3, ViewersOn::Other)).collect();
        assert_eq!(other, [(0, 1), (1, 2), (2, 0), (0, 1), (1, 2)]);
        let pair: Vec<_> = (0..4).map(|s| place(s, 2, ViewersOn::Other)).collect();
        assert_eq!(pair, [(0, 1), (1, 0), (0, 1), (1, 0)]);
        for s in 0..4 {
            assert_eq!(place(s, 1, ViewersOn::Same), (0, 0));
        }
    }

    #[test]
    fn loads_count_each_targets_writers_and_viewers() {
        let urls = ["http://a:1".to_owned(), "http://b:2".to_owned()];
        let t = Targets::parse(&urls, ViewersOn::Other, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.writer(0).addr, "a:1");
        assert_eq!(t.viewer(0).addr, "b:2");
        assert_eq!(t.writer(3).host, "b:2");
        assert_eq!(t.viewer(3).host, "a:1");
        let loads = t.loads(5, true);
        assert_eq!(
            loads
                .iter()
                .map(|l| (l.writers, l.viewers))
                .collect::<Vec<_>>(),
            [(3, 2), (2, 3)]
        );
        assert_eq!(t.joined(), "http://a:1,http://b:2");
        assert_eq!(t.viewers_on(), Some(ViewersOn::Other));
        let one =
            Targets::parse(&urls[..1], ViewersOn::Same, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.viewers_on(), None);
        assert_eq!(one.loads(2, false)[0].viewers, 0);
    }

    #[track_caller]
    fn check_refused(urls: &[&str], viewers_on: ViewersOn, verify: bool, expected: &str) {
        let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        match Targets::parse(&urls, viewers_on, verify) {
            Err(Error::Usage(m)) => assert_eq!(m, expected),
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_combinations_are_usage_errors() {
        check_refused(&[], ViewersOn::Same, true, "--target is required");
        check_refused(
            &["http://a:1"],
            ViewersOn::Other,
            true,
            "--viewers-on other needs at least two --target (one node has no other)",
        );
        check_refused(
            &["http://a:1", "http://b:1"],
            ViewersOn::Other,
            false,
            "--viewers-on other needs --verify (without it there are no viewers)",
        );
        check_refused(
            &["http://a:1", "http://a:1"],
            ViewersOn::Same,
            true,
            "--target http://a:1 is given twice: each target is one node",
        );
        let urls = ["http://a:1".to_owned(), "ftp://b".to_owned()];
        assert!(matches!(
            Targets::parse(&urls, ViewersOn::Same, true),
            Err(Error::Usage(m)) if m.starts_with("--target: ")
        ));
    }
}
