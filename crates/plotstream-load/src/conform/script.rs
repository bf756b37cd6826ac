//! A variant's script: named connections that send, wait for an accepted count or a status,
//! pause, and capture values from responses for the steps after them.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use plotstream_cases::{Segmentation, Variant};

use super::observe::excerpt;
use super::target::Target;
use super::wire::{Conn, ConnOpts, ConnResult};
use crate::probe::inspect::{self, Detail};

/// The token (or variable value) `name` stands for in `subst`; a name without one is itself.
pub fn token_of(subst: &[(String, String)], name: &str) -> String {
    subst
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| name.to_owned())
}

/// Runs a variant's script; returns every connection's result and the variables its steps
/// captured.
pub async fn run_script(
    v: &Variant,
    target: &Target,
    subst: &[(String, String)],
    opts: ConnOpts,
    scale: f64,
) -> Result<(Vec<(String, ConnResult)>, Vec<(String, String)>)> {
    let mut conns: Vec<(String, Conn)> = Vec::new();
    let mut done: Vec<(String, ConnResult)> = Vec::new();
    let mut captured: Vec<(String, String)> = Vec::new();
    for (step, program) in &v.script {
        if let (Some(name), Some(program)) = (&step.conn, program) {
            let all: Vec<(String, String)> = subst.iter().chain(&captured).cloned().collect();
            let items = program.eval(&all)?;
            let steps =
                plotstream_cases::segment::schedule(&items, Segmentation::Timed, None, scale);
            if !conns.iter().any(|(n, _)| n == name) {
                match Conn::open(target.addr, opts).await {
                    Ok(c) => conns.push((name.clone(), c)),
                    Err(r) => {
                        done.push((name.clone(), *r));
                        continue;
                    }
                }
            }
            if let Some((_, c)) = conns.iter_mut().find(|(n, _)| n == name) {
                c.send(&steps).await;
            }
        }
        if let Some(want) = &step.wait_acc {
            let deadline = Instant::now() + opts.wait;
            'poll: loop {
                let mut all = true;
                for (tok, n) in want {
                    let got =
                        inspect::read(&target.endpoint, &token_of(subst, tok), Detail::Counts)
                            .await
                            .ok()
                            .flatten()
                            .map_or(0, |i| i.last_seq);
                    all &= got >= *n;
                }
                if all || Instant::now() >= deadline {
                    break 'poll;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(name) = &step.wait_status {
            if let Some((_, c)) = conns.iter().find(|(n, _)| n == name) {
                c.wait_status(opts.wait).await;
            }
        }
        if let Some(ms) = step.pause {
            let d = Duration::from_millis((ms as f64 / scale).round() as u64);
            tokio::time::sleep(d).await;
        }
        if let (Some(name), Some(capture)) = (&step.conn, &step.capture) {
            let res = match conns.iter().position(|(n, _)| n == name) {
                Some(idx) => conns.remove(idx).1.finish().await,
                None => match done.iter().find(|(n, _)| n == name) {
                    Some((_, res)) => res.clone(),
                    None => return Err(Error::Script(format!("capture: no connection {name}"))),
                },
            };
            for (var, pointer) in capture {
                let value = capture_value(&res, pointer).map_err(|e| {
                    Error::Script(format!(
                        "capture ${var} at {pointer:?} of {name}'s response: {e}"
                    ))
                })?;
                captured.push((format!("${var}"), value));
            }
            done.push((name.clone(), res));
        }
    }
    let finished = futures_join(
        conns
            .into_iter()
            .map(|(n, c)| async move { (n, c.finish().await) }),
    )
    .await;
    done.extend(finished);
    Ok((done, captured))
}

/// The string at `pointer` of a response's JSON body; an absolute URL gives its path and
/// query, which is what a request line names.
fn capture_value(res: &ConnResult, pointer: &str) -> Result<String> {
    let Some(r) = &res.response else {
        return Err(Error::Script(format!("no response: {}", res.describe())));
    };
    let json: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| {
        Error::Script(format!(
            "status {}, the body is not JSON ({e}): {}",
            r.status,
            excerpt(&String::from_utf8_lossy(&r.body))
        ))
    })?;
    let Some(value) = json.pointer(pointer).and_then(serde_json::Value::as_str) else {
        return Err(Error::Script(format!(
            "status {}, no string there: {}",
            r.status,
            excerpt(&String::from_utf8_lossy(&r.body))
        )));
    };
    Ok(url_path(value).unwrap_or(value).to_owned())
}

/// The path and query of an absolute `http://` or `https://` URL.
fn url_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    Some(rest.find('/').map_or("/", |at| &rest[at..]))
}

/// Awaits every future concurrently, keeping their order.
async fn futures_join<F, T>(futs: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_urls_keep_their_path_and_query() {
        assert_eq!(
            url_path("http://127.0.0.1:9/~demo/123456789012/"),
            Some("/~demo/123456789012/")
        );
        assert_eq!(
            url_path("https://h/~d/1?share_key=k"),
            Some("/~d/1?share_key=k")
        );
        assert_eq!(url_path("http://h"), Some("/"));
        assert_eq!(url_path("demo:1"), None);
    }
}
