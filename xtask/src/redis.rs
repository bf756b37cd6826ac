//! A real `redis-server` for the xtask commands that run `plotstream serve --redis`: `cargo xtask
//! bench ingest`'s `redis` rows, `cargo xtask bench cluster`, the `cluster` CI step and `cargo xtask
//! compat cluster`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// A redis-server: the system's package, on a free loopback port, its AOF in `dir` with
/// `appendfsync always`; killed by PID when dropped.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Child,
    /// The loopback port it listens on.
    pub(crate) port: u16,
    dir: PathBuf,
    /// `redis_version` of `INFO server`.
    pub(crate) version: String,
}

/// redis-server on `port` with its AOF in `dir`; `None` when there is none to start.
fn spawn(port: u16, dir: &Path) -> Result<Option<Child>> {
    match Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("cannot start redis-server"),
    }
}

impl RedisServer {
    /// Starts one with its AOF in `dir` (emptied first); `None` when there is no redis-server
    /// to start.
    pub(crate) fn start(dir: &Path) -> Result<Option<RedisServer>> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let Some(child) = spawn(port, dir)? else {
            return Ok(None);
        };
        let mut r = RedisServer {
            child,
            port,
            dir: dir.to_owned(),
            version: String::new(),
        };
        r.wait_ready()?;
        r.version = r
            .info("server")?
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        Ok(Some(r))
    }

    /// Kills it (SIGKILL, by PID): what a crash or a lost network looks like to the nodes.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port from its AOF (after [`RedisServer::kill`]).
    pub(crate) fn restart(&mut self) -> Result<()> {
        self.kill();
        self.child = spawn(self.port, &self.dir)?.context("redis-server is gone")?;
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.info("server").is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not answer on port {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `redis://127.0.0.1:<port>`, for `serve --redis`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `INFO section`'s text, over a plain socket (RESP: `$<len>\r\n<text>\r\n`).
    pub(crate) fn info(&self, section: &str) -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "INFO {section}\r\n")?;
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        reader.read_line(&mut head)?;
        let len: usize = head
            .trim()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("INFO answered {head:?}"))?;
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `CONFIG SET name value` (an inline command; `+OK` expected).
    pub(crate) fn config_set(&self, name: &str, value: &str) -> Result<()> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "CONFIG SET {name} {value}\r\n")?;
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply)?;
        if reply.trim() != "+OK" {
            bail!("CONFIG SET {name} {value} answered {reply:?}");
        }
        Ok(())
    }

    /// Commands Redis has processed so far (`INFO stats`, minus this call's own).
    pub(crate) fn commands(&self) -> Result<u64> {
        let info = self.info("stats")?;
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .context("no total_commands_processed in INFO stats")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
