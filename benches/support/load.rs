//! The open-loop load generator.
//!
//! Requests go out on a fixed schedule of *intended* send times, as in wrk2, and
//! latency is measured from the intended time whenever the connection was still
//! busy then: a stalled server cannot hide its stall by slowing the generator down
//! (coordinated omission).

use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Connections (lanes) per target, unless `MAAS_BENCH_LANES` says otherwise.
/// Lane k sends requests k, k + lanes, ...
pub const LANES: usize = 64;

/// [`LANES`], or `MAAS_BENCH_LANES`.
fn lane_count() -> usize {
    super::env_or("MAAS_BENCH_LANES", LANES).max(1)
}

/// When each request is due, from the start of a run.
#[derive(Clone)]
pub struct Schedule {
    /// Offsets of the intended send times, ascending.
    offsets: Arc<Vec<Duration>>,
    /// Requests intended before this offset are warm-up and not measured.
    pub warmup: Duration,
}

impl Schedule {
    /// `rate` requests per second for `warmup + measure`.
    pub fn constant(rate: u64, warmup: Duration, measure: Duration) -> Schedule {
        Schedule::segments(&[(warmup + measure, rate)], warmup)
    }

    /// Consecutive segments of (duration, requests per second); the first
    /// `warmup` of them is not measured.
    pub fn segments(segments: &[(Duration, u64)], warmup: Duration) -> Schedule {
        let mut offsets = Vec::new();
        let mut segment_start = Duration::ZERO;
        for &(length, rate) in segments {
            let count = (length.as_secs_f64() * rate as f64) as u64;
            for i in 0..count {
                offsets.push(segment_start + Duration::from_secs_f64(i as f64 / rate as f64));
            }
            segment_start += length;
        }
        Schedule {
            offsets: Arc::new(offsets),
            warmup,
        }
    }

    /// How many requests the schedule sends.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// How long the schedule runs.
    pub fn length(&self) -> Duration {
        self.offsets.last().copied().unwrap_or_default()
    }
}

/// One request: its bytes, and a tag (say, the user) its answer is counted under.
pub struct Request {
    /// A whole HTTP/1.1 request.
    pub bytes: String,
    /// Successful (200) answers are counted per tag.
    pub tag: usize,
}

/// What one target answered during the measured part of a run.
pub struct Outcome {
    /// Latency of every answered request, µs from its intended (or real) send.
    pub hist: Histogram<u64>,
    /// Latency of the 200 answers alone: spends that were made durable.
    pub ok_hist: Histogram<u64>,
    /// Measured requests sent.
    pub sent: u64,
    /// Requests answered, warm-up included: what the server's CPU paid for
    /// (CPU is read around the whole run, so the warm-up is in it too).
    pub served: u64,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer: refused or broken connection, or no time left.
    pub failed: u64,
    /// 402 answers whose problem type is `tokens-in-other-region`.
    pub elsewhere: u64,
    /// 200 answers per tag, warm-up included: what was really delivered.
    pub ok_by_tag: HashMap<usize, u64>,
    /// µs the generator's timer woke after a measured request's intended
    /// send, on a lane that was idle by then: its own lateness. Beyond
    /// tokio's 1 ms resolution, the generator's thread did not run when it
    /// should have, and latencies measured meanwhile include that wait.
    pub timer_late: Histogram<u64>,
    /// Measured answers slower than [`SLOW_US`], for [`Outcome::stalls`].
    pub slow: Vec<SlowAnswer>,
}

/// An answer slower than this, µs, is slow (the SLA's p99 target).
pub const SLOW_US: u64 = 5_000;

/// One measured answer slower than [`SLOW_US`].
#[derive(Clone, Copy)]
pub struct SlowAnswer {
    /// Its intended send, ms from the start of the schedule.
    pub intended_ms: u64,
    /// Its latency, µs.
    pub micros: u64,
    /// The connection it went on.
    pub lane: usize,
}

/// Where the slow answers of a run fall: in windows of [`Stalls::WINDOW_MS`]
/// where at least half the lanes were slow at once (the server, or the disk
/// under it, stopped for every connection), or spread out (one connection's
/// bad luck). Meant for one target's outcome: the lanes of several targets
/// share their numbers.
#[derive(Clone, Copy, Default)]
pub struct Stalls {
    /// Answers slower than [`SLOW_US`].
    pub slow: usize,
    /// Of those, the ones inside windows where half the lanes were slow.
    pub in_windows: usize,
    /// Windows in which at least half the lanes had a slow answer.
    pub windows: usize,
}

impl Stalls {
    /// The width of a window, ms.
    pub const WINDOW_MS: u64 = 100;

    /// Of the slow answers, the share inside stall windows.
    pub fn share_in_windows(&self) -> f64 {
        self.in_windows as f64 / self.slow.max(1) as f64
    }

    /// These and `other`'s (another target's) together.
    pub fn add(&self, other: &Stalls) -> Stalls {
        Stalls {
            slow: self.slow + other.slow,
            in_windows: self.in_windows + other.in_windows,
            windows: self.windows + other.windows,
        }
    }
}

impl Outcome {
    /// Nothing sent yet.
    pub fn empty() -> Outcome {
        Outcome {
            hist: histogram(),
            ok_hist: histogram(),
            sent: 0,
            served: 0,
            statuses: BTreeMap::new(),
            failed: 0,
            elsewhere: 0,
            ok_by_tag: HashMap::new(),
            timer_late: histogram(),
            slow: Vec::new(),
        }
    }

    /// Joins another target's or lane's outcome into this one.
    pub fn add(&mut self, other: &Outcome) {
        self.hist.add(&other.hist).expect("histograms share bounds");
        self.ok_hist
            .add(&other.ok_hist)
            .expect("histograms share bounds");
        self.sent += other.sent;
        self.served += other.served;
        self.failed += other.failed;
        self.elsewhere += other.elsewhere;
        for (&status, &n) in &other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (&tag, &n) in &other.ok_by_tag {
            *self.ok_by_tag.entry(tag).or_default() += n;
        }
        self.timer_late
            .add(&other.timer_late)
            .expect("histograms share bounds");
        self.slow.extend_from_slice(&other.slow);
    }

    /// Answers with this status.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Answers with a 5xx status.
    pub fn server_errors(&self) -> u64 {
        self.statuses.range(500..600).map(|(_, n)| n).sum()
    }

    /// Measured requests that were not answered 200.
    pub fn not_ok(&self) -> u64 {
        self.sent - self.count(200)
    }

    /// Where the slow answers fall ([`Stalls`]).
    pub fn stalls(&self) -> Stalls {
        let mut lanes_by_window: HashMap<u64, HashSet<usize>> = HashMap::new();
        for answer in &self.slow {
            lanes_by_window
                .entry(answer.intended_ms / Stalls::WINDOW_MS)
                .or_default()
                .insert(answer.lane);
        }
        let half = lane_count().div_ceil(2);
        let stalled: HashSet<u64> = lanes_by_window
            .into_iter()
            .filter(|(_, lanes)| lanes.len() >= half)
            .map(|(window, _)| window)
            .collect();
        Stalls {
            slow: self.slow.len(),
            in_windows: self
                .slow
                .iter()
                .filter(|a| stalled.contains(&(a.intended_ms / Stalls::WINDOW_MS)))
                .count(),
            windows: stalled.len(),
        }
    }

    /// Appends the slow answers to `MAAS_BENCH_SLOW_LOG`, if set: a line
    /// `# <target> <start>` (the schedule's start on `CLOCK_MONOTONIC`, the
    /// clock `perf record -k CLOCK_MONOTONIC` stamps its events with), then
    /// `intended_ms micros lane` per answer, to line them up with a trace.
    fn log_slow(&self, target: &str, start: tokio::time::Instant) {
        use std::io::Write;
        let Ok(path) = std::env::var("MAAS_BENCH_SLOW_LOG") else {
            return;
        };
        let mut text = format!("# {target} {:?}\n", start.into_std());
        for a in &self.slow {
            text.push_str(&format!("{} {} {}\n", a.intended_ms, a.micros, a.lane));
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            eprintln!("warning: cannot write {path}: {e}");
        }
    }

    /// The latency at quantile `q`, µs.
    pub fn at(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }
}

/// An empty latency histogram, 1 µs to 60 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Runs `schedule` against `addr` over [`lane_count`] keep-alive connections; `make(i)`
/// builds request i.
pub async fn open_loop(
    addr: &str,
    schedule: &Schedule,
    make: impl Fn(usize) -> Request + 'static,
) -> Outcome {
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let deadline = start + schedule.length() + Duration::from_secs(10);
    let make = Arc::new(make);
    let mut lanes = Vec::new();
    let lane_count = lane_count();
    for lane in 0..lane_count {
        let (addr, make, schedule) = (addr.to_owned(), make.clone(), schedule.clone());
        lanes.push(tokio::task::spawn_local(async move {
            let mut out = Outcome::empty();
            let mut conn: Option<Conn> = None;
            let mut previous_done = start;
            for i in (lane..schedule.len()).step_by(lane_count) {
                let intended = start + schedule.offsets[i];
                let measured = schedule.offsets[i] >= schedule.warmup;
                tokio::time::sleep_until(intended).await;
                let woke = tokio::time::Instant::now();
                // A lane still busy at the intended time wakes late because
                // the answer came late: that is the server's, not the timer's.
                if measured && previous_done <= intended {
                    let late = woke.saturating_duration_since(intended).as_micros();
                    let _ = out.timer_late.record((late as u64).max(1));
                }
                if woke > deadline {
                    if measured {
                        out.sent += 1;
                        out.failed += 1;
                    }
                    continue;
                }
                // If the lane was still busy at the intended time, the wait is the
                // server's fault and counts. Otherwise only the timer was late
                // (tokio's resolution is 1 ms): measure from the real send, or the
                // generator would bill its own jitter.
                let from = if previous_done > intended {
                    intended
                } else {
                    woke
                };
                let request = make(i);
                let answer = match conn.as_mut() {
                    Some(c) => c.send(request.bytes.as_bytes()).await,
                    None => match Conn::open(&addr).await {
                        Ok(c) => conn.insert(c).send(request.bytes.as_bytes()).await,
                        Err(e) => Err(e),
                    },
                };
                previous_done = tokio::time::Instant::now();
                match answer {
                    Ok((status, elsewhere)) => {
                        out.served += 1;
                        if status == 200 {
                            *out.ok_by_tag.entry(request.tag).or_default() += 1;
                        }
                        if measured {
                            out.sent += 1;
                            *out.statuses.entry(status).or_default() += 1;
                            out.elsewhere += u64::from(elsewhere);
                            let us = (previous_done - from).as_micros().max(1) as u64;
                            let _ = out.hist.record(us);
                            if us > SLOW_US {
                                out.slow.push(SlowAnswer {
                                    intended_ms: schedule.offsets[i].as_millis() as u64,
                                    micros: us,
                                    lane,
                                });
                            }
                            if status == 200 {
                                let _ = out.ok_hist.record(us);
                            }
                        }
                    }
                    Err(_) => {
                        conn = None;
                        if measured {
                            out.sent += 1;
                            out.failed += 1;
                        }
                    }
                }
            }
            out
        }));
    }
    let mut total = Outcome::empty();
    for lane in lanes {
        total.add(&lane.await.expect("lane"));
    }
    total.log_slow(addr, start);
    total
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    stream: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(stream),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends one request and reads the whole response. Returns the status, and
    /// whether it was a refusal because the tokens are held by another region.
    async fn send(&mut self, request: &[u8]) -> std::io::Result<(u16, bool)> {
        self.stream.get_mut().write_all(request).await?;
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                return Err(std::io::Error::other("closed"));
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        let elsewhere = status == 402
            && self
                .body
                .windows(ELSEWHERE.len())
                .any(|w| w == ELSEWHERE.as_bytes());
        Ok((status, elsewhere))
    }
}

/// The problem type of a spend refused because other regions hold the rights.
const ELSEWHERE: &str = "/problems/tokens-in-other-region";

/// One `GET` with a bearer credential on a fresh connection: status and body.
pub async fn fetch(addr: &str, path: &str, bearer: &str) -> std::io::Result<(u16, String)> {
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bearer}\r\n\r\n");
    exchange(addr, &request).await
}

/// One `POST` of a JSON `body` with a bearer credential on a fresh connection:
/// status and body.
pub async fn post(
    addr: &str,
    path: &str,
    bearer: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bearer}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, &request).await
}

/// Sends one whole request on a fresh connection: status and body.
async fn exchange(addr: &str, request: &str) -> std::io::Result<(u16, String)> {
    let mut conn = Conn::open(addr).await?;
    let (status, _) = conn.send(request.as_bytes()).await?;
    Ok((status, String::from_utf8_lossy(&conn.body).into_owned()))
}
