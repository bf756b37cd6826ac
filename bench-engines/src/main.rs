//! Measures the embedded stores that `plotstream serve` could keep its durable state in (redb,
//! fjall, SQLite through rusqlite) on the server's own workload, as docs/storage.md describes.
//!
//! ```text
//! cargo run --release --manifest-path bench-engines/Cargo.toml -- --dir DIR [--secs N]
//!     [--only ABC] [--keep] [ENGINE...]          ENGINE: null redb4 redb4-qr redb fjall sqlite
//! bench-engines --scan ENGINE DIR                open and read a store a `--keep` run left
//! ```
//!
//! `cargo xtask bench engines` runs it with `DIR` under the target directory. Every engine sits
//! behind [`Engine`]; the workloads (A: group commit, bulk; B: one line per stream per 100 ms;
//! C: start-up, also after a crash; D: disk use) are the same code for each. A `null` engine,
//! which stores nothing, measures the harness alone (A and B only). The last lines printed are a
//! Markdown table of every result.

mod engines;

use std::{
    collections::HashMap,
    error::Error,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

pub type Result<T, E = Box<dyn Error + Send + Sync>> = std::result::Result<T, E>;

/// One atomic, durable write: the lines, meta and snapshot puts, and the per-stream trims.
#[derive(Debug, Default)]
pub struct Batch {
    /// `lines`: (stream id BE, seq BE) → the update as JSON.
    pub lines: Vec<([u8; 16], Vec<u8>)>,
    /// `meta`: token → a JSON blob of about 200 bytes.
    pub meta: Vec<(String, Vec<u8>)>,
    /// `snaps`: stream id → the window snapshot.
    pub snaps: Vec<(u64, Vec<u8>)>,
    /// Delete every line of `stream` with `from <= seq < below`. No line of `stream` below
    /// `from` exists (it is the previous trim's `below`, which the server knows from its window),
    /// so this is "every line with seq < below".
    pub trims: Vec<Trim>,
}

#[derive(Debug, Clone, Copy)]
pub struct Trim {
    pub stream: u64,
    pub from: u64,
    pub below: u64,
}

/// What a full scan read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    pub lines: u64,
    pub meta: u64,
    pub snaps: u64,
    /// Key and value bytes, all tables.
    pub bytes: u64,
    /// A sum of every byte read, so that no read can be skipped.
    pub sum: u64,
}

impl Scan {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.bytes += (key.len() + value.len()) as u64;
        self.sum = self
            .sum
            .wrapping_add(key.iter().map(|&b| u64::from(b)).sum::<u64>())
            .wrapping_add(value.iter().map(|&b| u64::from(b)).sum::<u64>());
    }
}

/// An embedded store as the server would use it: three key-value tables.
pub trait Engine {
    /// Commits `batch` as one transaction that is durable (fsync'd) when this returns.
    fn commit(&mut self, batch: &Batch) -> Result<()>;
    /// Reads every key and value of the three tables.
    fn scan(&mut self) -> Result<Scan>;
    /// The engine's own compaction; `Ok(false)` if it has none.
    fn compact(&mut self) -> Result<bool>;
    /// Closes the store cleanly.
    fn close(self: Box<Self>) -> Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Redb4,
    Redb4Quick,
    Redb,
    Fjall,
    Sqlite,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Null,
        Kind::Redb4,
        Kind::Redb4Quick,
        Kind::Redb,
        Kind::Fjall,
        Kind::Sqlite,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Redb4 => "redb4",
            Kind::Redb4Quick => "redb4-qr",
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
            Kind::Sqlite => "sqlite",
        }
    }

    fn open(self, dir: &Path) -> Result<Box<dyn Engine>> {
        fs::create_dir_all(dir)?;
        Ok(match self {
            Kind::Null => Box::new(engines::Null),
            Kind::Redb4 => Box::new(engines::Redb4::open(dir)?),
            Kind::Redb4Quick => Box::new(engines::Redb4Quick::open(dir)?),
            Kind::Redb => Box::new(engines::Redb::open(dir)?),
            Kind::Fjall => Box::new(engines::Fjall::open(dir)?),
            Kind::Sqlite => Box::new(engines::Sqlite::open(dir)?),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Data: fixed-width JSON, so that every point's NDJSON line `{"x":1733500012,"y":0.1234567}\n` is
// exactly 31 bytes and every stored update `{"d":{"x":…,"y":…}}` 37.

const POINT_NDJSON_BYTES: u64 = 31;
const X0: u64 = 1_733_500_000;

/// xorshift64*: deterministic, cheap, and values that do not compress like a constant would.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn line_key(stream: u64, seq: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&stream.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn update_json(seq: u64, rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    write!(
        v,
        "{{\"d\":{{\"x\":{},\"y\":{:.7}}}}}",
        X0 + seq,
        rng.unit()
    )
    .expect("Vec write");
    v
}

fn point_ndjson(seq: u64, rng: &mut Rng, out: &mut Vec<u8>) {
    writeln!(out, "{{\"x\":{},\"y\":{:.7}}}", X0 + seq, rng.unit()).expect("Vec write");
}

fn token(stream: u64) -> String {
    // 20 bytes, like the server's stream tokens.
    format!("tk{:018x}", stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8)
}

fn meta_json(stream: u64) -> Vec<u8> {
    let mut v = format!(
        "{{\"stream\":{stream},\"token\":\"{}\",\"maxpoints\":500,\"created\":\"2025-12-06T15:20:00Z\",\
         \"figure\":\"user/plot-{stream}\",\"trace\":0,\"mode\":\"lines\",\"name\":\"sensor {stream}\"",
        token(stream)
    )
    .into_bytes();
    while v.len() < 198 {
        v.extend_from_slice(b" ");
    }
    v.extend_from_slice(b"}");
    v
}

// ---------------------------------------------------------------------------------------------
// Measurements.

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes a `rusage` into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Bytes this process caused to be sent to the storage layer (`write_bytes` of /proc/self/io):
/// what the engine wrote, whichever thread wrote it, before the file system's own overhead.
fn storage_writes() -> u64 {
    fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("write_bytes: "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// (allocated bytes, apparent bytes) of every file under `dir`.
fn disk_use(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let (mut allocated, mut apparent) = (0, 0);
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (a, b) = disk_use(&entry.path())?;
            allocated += a;
            apparent += b;
        } else {
            allocated += meta.blocks() * 512;
            apparent += meta.len();
        }
    }
    Ok((allocated, apparent))
}

/// Drops the page cache of every file under `dir` (fdatasync, then POSIX_FADV_DONTNEED), so the
/// next open reads from the disk; other processes' cache is left alone.
fn drop_cache(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.metadata()?.is_dir() {
            drop_cache(&entry.path())?;
        } else {
            let file = fs::File::open(entry.path())?;
            file.sync_data()?;
            // SAFETY: a valid open descriptor; advice only.
            unsafe {
                libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// The file system `dir` is on, from /proc/self/mounts: (device, type, mount point).
fn file_system(dir: &Path) -> Option<(String, String, String)> {
    let dir = dir.canonicalize().ok()?;
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (dev, at, kind) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(at)
                .then(|| (dev.to_owned(), kind.to_owned(), at.to_owned()))
        })
        .max_by_key(|(_, _, at)| at.len())
}

// ---------------------------------------------------------------------------------------------
// A: group commit, bulk.

const A_STREAMS: u64 = 100;
const TICK: Duration = Duration::from_millis(10);
const KEEP: u64 = 1000;
/// Lines the producer may have pending before it blocks (back-pressure): 50 ms of the server's
/// measured ingest ceiling (about 2 M lines/s with 100 bulk streams, docs/performance.md).
const A_PENDING_CAP: usize = 100_000;

#[derive(Debug, Default)]
struct ResultA {
    lines: u64,
    secs: f64,
    commits: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    cpu_per_line: Duration,
    written_per_line: f64,
    live_lines: u64,
    disk: (u64, u64),
    compacted: Option<(Duration, (u64, u64))>,
}

struct Pending {
    lines: Vec<([u8; 16], Vec<u8>)>,
}

fn workload_a(kind: Kind, dir: &Path, run_for: Duration) -> Result<ResultA> {
    let mut engine = kind.open(dir)?;
    let shared = Arc::new((
        Mutex::new(Pending {
            lines: Vec::with_capacity(A_PENDING_CAP),
        }),
        Condvar::new(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut rng = Rng(0x5eed_0001);
            let mut seq = 0u64;
            let (lock, cvar) = &*shared;
            // Lines are made in chunks of one per stream outside the lock, as readers would.
            while !stop.load(Ordering::Relaxed) {
                let chunk: Vec<_> = (0..A_STREAMS)
                    .map(|s| (line_key(s, seq), update_json(seq, &mut rng)))
                    .collect();
                seq += 1;
                let mut pending = lock.lock().expect("lock");
                while pending.lines.len() >= A_PENDING_CAP && !stop.load(Ordering::Relaxed) {
                    pending = cvar.wait(pending).expect("lock");
                }
                pending.lines.extend(chunk);
            }
        })
    };

    let mut low = vec![0u64; A_STREAMS as usize];
    let mut latencies = Vec::new();
    let mut lines = 0u64;
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut next_tick = start + TICK;
    let mut batch = Batch::default();
    let written0 = storage_writes();
    while start.elapsed() < run_for {
        let now = Instant::now();
        if next_tick > now {
            thread::sleep(next_tick - now);
        }
        {
            let (lock, cvar) = &*shared;
            let mut pending = lock.lock().expect("lock");
            batch.lines.clear();
            std::mem::swap(&mut batch.lines, &mut pending.lines);
            cvar.notify_all();
        }
        batch.trims.clear();
        let mut newest: HashMap<u64, u64> = HashMap::new();
        for (key, _) in &batch.lines {
            let stream = u64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
            let seq = u64::from_be_bytes(key[8..].try_into().expect("8 bytes"));
            let e = newest.entry(stream).or_insert(seq);
            *e = (*e).max(seq);
        }
        for (&stream, &seq) in &newest {
            let below = seq.saturating_sub(KEEP);
            if below > low[stream as usize] {
                batch.trims.push(Trim {
                    stream,
                    from: low[stream as usize],
                    below,
                });
                low[stream as usize] = below;
            }
        }
        let began = Instant::now();
        engine.commit(&batch)?;
        latencies.push(began.elapsed());
        lines += batch.lines.len() as u64;
        next_tick = began + TICK;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_time() - cpu0;
    let written = storage_writes() - written0;
    stop.store(true, Ordering::Relaxed);
    shared.1.notify_all();
    producer.join().expect("producer");

    // Lines still stored: per stream, from its low mark to its newest committed seq.
    let live_lines: u64 = {
        // Every chunk carries one line per stream, so each stream committed lines/100 of them.
        let per_stream = lines / A_STREAMS;
        low.iter().map(|&l| per_stream - l).sum()
    };

    latencies.sort();
    let mut result = ResultA {
        lines,
        secs,
        commits: latencies.len(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
        cpu_per_line: cpu / lines.max(1) as u32,
        written_per_line: written as f64 / lines.max(1) as f64,
        live_lines,
        ..ResultA::default()
    };
    engine.close()?;
    if kind != Kind::Null {
        result.disk = disk_use(dir)?;
        let mut engine = kind.open(dir)?;
        let began = Instant::now();
        let compacted = engine.compact()?;
        let took = began.elapsed();
        engine.close()?;
        if compacted {
            result.compacted = Some((took, disk_use(dir)?));
        }
    }
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// B: 1 000 streams, one line each per 100 ms, committed every 10 ms.

const B_STREAMS: u64 = 1000;
const B_PERIOD: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct ResultB {
    lines: u64,
    commits: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    cpu_per_line: Duration,
    written_per_line: f64,
    late_ticks: usize,
}

fn workload_b(kind: Kind, dir: &Path, run_for: Duration) -> Result<ResultB> {
    let mut engine = kind.open(dir)?;
    let mut rng = Rng(0x5eed_0002);
    // Stream s writes at start + phase(s) + k × 100 ms, phases spread evenly over 100 ms.
    let phase = |s: u64| B_PERIOD.mul_f64(s as f64 / B_STREAMS as f64);
    let mut sent = vec![0u64; B_STREAMS as usize];
    let mut low = vec![0u64; B_STREAMS as usize];
    let mut latencies = Vec::new();
    let mut lines = 0u64;
    let mut late_ticks = 0;
    let mut batch = Batch::default();
    let cpu0 = cpu_time();
    let written0 = storage_writes();
    let start = Instant::now();
    let mut next_tick = start + TICK;
    while start.elapsed() < run_for {
        let now = Instant::now();
        if next_tick > now {
            thread::sleep(next_tick - now);
        } else {
            late_ticks += 1;
        }
        let elapsed = start.elapsed();
        batch.lines.clear();
        batch.trims.clear();
        for s in 0..B_STREAMS {
            let ph = phase(s);
            if elapsed < ph {
                continue;
            }
            let due = ((elapsed - ph).as_nanos() / B_PERIOD.as_nanos()) as u64 + 1;
            while sent[s as usize] < due {
                let seq = sent[s as usize];
                batch
                    .lines
                    .push((line_key(s, seq), update_json(seq, &mut rng)));
                sent[s as usize] += 1;
            }
            let below = sent[s as usize].saturating_sub(1 + KEEP);
            if below > low[s as usize] {
                batch.trims.push(Trim {
                    stream: s,
                    from: low[s as usize],
                    below,
                });
                low[s as usize] = below;
            }
        }
        let began = Instant::now();
        engine.commit(&batch)?;
        latencies.push(began.elapsed());
        lines += batch.lines.len() as u64;
        next_tick += TICK;
    }
    let cpu = cpu_time() - cpu0;
    let written = storage_writes() - written0;
    engine.close()?;
    latencies.sort();
    Ok(ResultB {
        lines,
        commits: latencies.len(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
        cpu_per_line: cpu / lines.max(1) as u32,
        written_per_line: written as f64 / lines.max(1) as f64,
        late_ticks,
    })
}

// ---------------------------------------------------------------------------------------------
// C: start-up with 10 000 streams × 500 points; D: its disk use.

const C_STREAMS: u64 = 10_000;
const C_POINTS: u64 = 500;
const C_TAIL: u64 = 100;
const C_STREAMS_PER_COMMIT: u64 = 100;

#[derive(Debug, Default)]
struct ResultC {
    load: Duration,
    ndjson_bytes: u64,
    disk: (u64, u64),
    open_cold: Duration,
    scan_cold: Duration,
    open_warm: Duration,
    scan_warm: Duration,
    scan: Scan,
    compacted: Option<(Duration, (u64, u64))>,
}

/// Writes C's data (100 streams per durable commit); returns the NDJSON bytes of its points. The
/// engine is left open.
fn load_c(engine: &mut dyn Engine) -> Result<u64> {
    let mut ndjson_bytes = 0;
    let mut rng = Rng(0x5eed_0003);
    let mut stream = 0;
    while stream < C_STREAMS {
        let mut batch = Batch::default();
        for s in stream..(stream + C_STREAMS_PER_COMMIT).min(C_STREAMS) {
            batch.meta.push((token(s), meta_json(s)));
            let mut snap = Vec::with_capacity((C_POINTS * POINT_NDJSON_BYTES) as usize);
            for seq in 0..C_POINTS {
                point_ndjson(seq, &mut rng, &mut snap);
            }
            ndjson_bytes += snap.len() as u64;
            batch.snaps.push((s, snap));
            for seq in C_POINTS - C_TAIL..C_POINTS {
                batch
                    .lines
                    .push((line_key(s, seq), update_json(seq, &mut rng)));
            }
        }
        engine.commit(&batch)?;
        stream += C_STREAMS_PER_COMMIT;
    }
    Ok(ndjson_bytes)
}

/// Opens the store in `dir` and reads all of it: (open time, scan time, what it read).
fn open_and_scan(kind: Kind, dir: &Path) -> Result<(Duration, Duration, Scan)> {
    let began = Instant::now();
    let mut engine = kind.open(dir)?;
    let opened = began.elapsed();
    let scan = engine.scan()?;
    let scanned = began.elapsed() - opened;
    engine.close()?;
    let expected = (C_STREAMS * C_TAIL, C_STREAMS, C_STREAMS);
    if (scan.lines, scan.meta, scan.snaps) != expected {
        return Err(format!(
            "{}: scan found {scan:?}, expected {expected:?}",
            kind.name()
        )
        .into());
    }
    Ok((opened, scanned, scan))
}

fn workload_c(kind: Kind, dir: &Path) -> Result<ResultC> {
    let mut result = ResultC::default();
    let mut engine = kind.open(dir)?;
    let began = Instant::now();
    result.ndjson_bytes = load_c(engine.as_mut())?;
    engine.close()?;
    result.load = began.elapsed();
    result.disk = disk_use(dir)?;

    drop_cache(dir)?;
    (result.open_cold, result.scan_cold, _) = open_and_scan(kind, dir)?;
    (result.open_warm, result.scan_warm, result.scan) = open_and_scan(kind, dir)?;

    let mut engine = kind.open(dir)?;
    let began = Instant::now();
    let compacted = engine.compact()?;
    let took = began.elapsed();
    engine.close()?;
    if compacted {
        result.compacted = Some((took, disk_use(dir)?));
    }
    Ok(result)
}

/// C after a crash: a child process loads the same data and `_exit`s without closing the store
/// (a `kill -9` at the end of the load: every commit was durable, nothing was shut down); then
/// open + full scan, page cache dropped. This is a process crash, not a power loss.
fn workload_c_crash(kind: Kind, dir: &Path) -> Result<(Duration, Duration)> {
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["--crash-child", kind.name()])
        .arg(dir)
        .status()?;
    if status.code() != Some(CRASH_EXIT) {
        return Err(format!("{}: the crashing child ended with {status}", kind.name()).into());
    }
    drop_cache(dir)?;
    let (open, scan, _) = open_and_scan(kind, dir)?;
    Ok((open, scan))
}

const CRASH_EXIT: i32 = 77;

fn crash_child(kind: Kind, dir: &Path) -> Result<()> {
    let mut engine = kind.open(dir)?;
    load_c(engine.as_mut())?;
    // SAFETY: ends the process at once: no destructor, no flush, no close.
    unsafe { libc::_exit(CRASH_EXIT) }
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut secs = 10.0;
    let mut kinds = Vec::new();
    let mut only = Vec::new();
    let mut keep = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scan" => {
                // Open and read a store left by an earlier run (`--keep`), for example with the
                // other redb version: `--scan redb DIR/redb4-c`.
                let kind = args.next().ok_or("--scan KIND DIR")?;
                let kind = Kind::ALL
                    .into_iter()
                    .find(|k| k.name() == kind)
                    .ok_or("unknown engine")?;
                let dir = PathBuf::from(args.next().ok_or("--scan KIND DIR")?);
                let mut engine = kind.open(&dir)?;
                println!("{:?}", engine.scan()?);
                return engine.close();
            }
            "--crash-child" => {
                let kind = args.next().ok_or("--crash-child KIND DIR")?;
                let kind = Kind::ALL
                    .into_iter()
                    .find(|k| k.name() == kind)
                    .ok_or("unknown engine")?;
                let dir = PathBuf::from(args.next().ok_or("--crash-child KIND DIR")?);
                return crash_child(kind, &dir);
            }
            "--dir" => dir = args.next().map(PathBuf::from),
            "--secs" => secs = args.next().ok_or("--secs needs a value")?.parse()?,
            "--keep" => keep = true,
            "--only" => only.extend(args.next().ok_or("--only needs A, B or C")?.chars()),
            name => kinds.push(
                Kind::ALL
                    .into_iter()
                    .find(|k| k.name() == name)
                    .ok_or_else(|| format!("unknown engine or option `{name}`"))?,
            ),
        }
    }
    let dir = dir.ok_or(
        "usage: bench-engines --dir DIR [--secs N] [--only ABC] [--keep] [ENGINE...]; \
         engines: null redb4 redb4-qr redb fjall sqlite",
    )?;
    if kinds.is_empty() {
        kinds = Kind::ALL.to_vec();
    }
    if only.is_empty() {
        only = vec!['A', 'B', 'C'];
    }
    let run_for = Duration::from_secs_f64(secs);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    match file_system(&dir) {
        Some((dev, kind, at)) => {
            println!(
                "data dir {} on {dev} ({kind}, mounted at {at})",
                dir.display()
            );
            if kind == "tmpfs" || kind == "ramfs" {
                println!("WARNING: the data dir is in memory; fsync costs nothing there");
            }
        }
        None => println!("data dir {} (file system unknown)", dir.display()),
    }
    println!(
        "{} cores; engines: {}",
        thread::available_parallelism().map_or(0, usize::from),
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();

    let mut table = Vec::new();
    for &kind in &kinds {
        let name = kind.name();
        if only.contains(&'A') {
            let sub = dir.join(format!("{name}-a"));
            let r = workload_a(kind, &sub, run_for)?;
            let line_bytes = r.live_lines * POINT_NDJSON_BYTES;
            let disk = if kind == Kind::Null {
                "—".to_owned()
            } else {
                format!(
                    "{} MiB ({} MiB apparent) = {:.1}× the {} live lines' NDJSON",
                    mib(r.disk.0),
                    mib(r.disk.1),
                    r.disk.0 as f64 / line_bytes as f64,
                    r.live_lines
                )
            };
            let compacted = r.compacted.map_or("—".to_owned(), |(t, d)| {
                format!(
                    "{:.2} s → {} MiB = {:.1}×",
                    t.as_secs_f64(),
                    mib(d.0),
                    d.0 as f64 / line_bytes as f64
                )
            });
            println!(
                "{name} A: {:.0} lines/s ({} lines in {:.1} s, {} commits, {:.0} lines/commit); \
                 commit p50 {} ms p99 {} ms max {} ms; CPU {:.2} µs/line; {:.0} bytes written/line; disk {disk}; compaction {compacted}",
                r.lines as f64 / r.secs,
                r.lines,
                r.secs,
                r.commits,
                r.lines as f64 / r.commits.max(1) as f64,
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                r.cpu_per_line.as_secs_f64() * 1e6,
                r.written_per_line,
            );
            table.push(format!(
                "| {name} | A | {:.0} lines/s, {:.0} lines/commit | {} / {} / {} | {:.2} | {:.0} | {disk}; compacted: {compacted} |",
                r.lines as f64 / r.secs,
                r.lines as f64 / r.commits.max(1) as f64,
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                r.cpu_per_line.as_secs_f64() * 1e6,
                r.written_per_line,
            ));
            if !keep {
                fs::remove_dir_all(&sub).ok();
            }
        }
        if only.contains(&'B') {
            let sub = dir.join(format!("{name}-b"));
            let r = workload_b(kind, &sub, run_for)?;
            println!(
                "{name} B: {} lines in {} commits; commit p50 {} ms p99 {} ms max {} ms; \
                 CPU {:.2} µs/line; {:.0} bytes written/line; {} late ticks",
                r.lines,
                r.commits,
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                r.cpu_per_line.as_secs_f64() * 1e6,
                r.written_per_line,
                r.late_ticks
            );
            table.push(format!(
                "| {name} | B | {} lines, {} commits, {} late | {} / {} / {} | {:.2} | {:.0} | |",
                r.lines,
                r.commits,
                r.late_ticks,
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                r.cpu_per_line.as_secs_f64() * 1e6,
                r.written_per_line,
            ));
            if !keep {
                fs::remove_dir_all(&sub).ok();
            }
        }
        if only.contains(&'C') && kind != Kind::Null {
            let sub = dir.join(format!("{name}-c"));
            let r = workload_c(kind, &sub)?;
            let compacted = r.compacted.map_or("—".to_owned(), |(t, d)| {
                format!(
                    "{:.2} s → {} MiB = {:.2}×",
                    t.as_secs_f64(),
                    mib(d.0),
                    d.0 as f64 / r.ndjson_bytes as f64
                )
            });
            println!(
                "{name} C: load {:.2} s; open+scan cold {:.3} s (open {:.3} s), warm {:.3} s (open {:.3} s); \
                 read {} MiB; disk {} MiB ({} MiB apparent) = {:.2}× the {} MiB NDJSON; compaction {compacted}",
                r.load.as_secs_f64(),
                (r.open_cold + r.scan_cold).as_secs_f64(),
                r.open_cold.as_secs_f64(),
                (r.open_warm + r.scan_warm).as_secs_f64(),
                r.open_warm.as_secs_f64(),
                mib(r.scan.bytes),
                mib(r.disk.0),
                mib(r.disk.1),
                r.disk.0 as f64 / r.ndjson_bytes as f64,
                mib(r.ndjson_bytes),
            );
            let sub_crash = dir.join(format!("{name}-crash"));
            let (crash_open, crash_scan) = workload_c_crash(kind, &sub_crash)?;
            println!(
                "{name} C after a crash (child killed after the load): open+scan {:.3} s (open {:.3} s)",
                (crash_open + crash_scan).as_secs_f64(),
                crash_open.as_secs_f64()
            );
            if !keep {
                fs::remove_dir_all(&sub_crash).ok();
            }
            table.push(format!(
                "| {name} | C | load {:.1} s; open + scan cold {:.2} s (open {:.3}), warm {:.2} s (open {:.3}), after a crash {:.2} s (open {:.3}) | | | | {} MiB = {:.2}× NDJSON; compacted: {compacted} |",
                r.load.as_secs_f64(),
                (r.open_cold + r.scan_cold).as_secs_f64(),
                r.open_cold.as_secs_f64(),
                (r.open_warm + r.scan_warm).as_secs_f64(),
                r.open_warm.as_secs_f64(),
                (crash_open + crash_scan).as_secs_f64(),
                crash_open.as_secs_f64(),
                mib(r.disk.0),
                r.disk.0 as f64 / r.ndjson_bytes as f64,
            ));
            if !keep {
                fs::remove_dir_all(&sub).ok();
            }
        }
    }
    println!();
    println!(
        "| engine | workload | result | commit p50 / p99 / max (ms) | CPU µs/line | bytes written/line | disk |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    println!("\ntotal {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
