//! Lambda's platform lines around each invocation's output, as AWS Lambda writes them:
//!
//! ```text
//! START RequestId: <id> Version: <version>
//! END RequestId: <id>
//! REPORT RequestId: <id>\tDuration: 2.26 ms\tBilled Duration: 3 ms\tMemory Size: 128 MB\tMax Memory Used: 63 MB[\tInit Duration: 196.66 ms]
//! ```
//!
//! They cost the hot path one message per invocation, not three: START is published
//! lazily, just before the invocation's first output line; END and REPORT (and START,
//! when nothing was printed) go out together as one record of several lines when the
//! invocation ends.

use std::fmt::Write;
use std::time::{Duration, Instant};

use super::memory::PeakMemory;

/// Which platform lines the running invocation still owes, and the facts REPORT needs.
pub(super) struct LogFraming {
    version: String,
    memory_mb: u32,
    spawned: Instant,
    /// The worker's start → ready time, until the cold invocation reports it.
    init: Option<Duration>,
    /// Whether the invocation that output is attributed to has had its START line
    /// (or its whole record: lines trailing a result get none).
    start_logged: bool,
    peak: PeakMemory,
}

/// How an invocation went, for its REPORT line.
pub(super) struct Ran {
    pub(super) duration: Duration,
    /// The worker was started for this invocation.
    pub(super) cold: bool,
}

impl LogFraming {
    pub(super) fn new(version: &str, memory_mb: u32, peak: PeakMemory) -> LogFraming {
        LogFraming {
            version: version.to_owned(),
            memory_mb,
            spawned: Instant::now(),
            init: None,
            start_logged: true,
            peak,
        }
    }

    /// The worker said it is ready: its init phase ends now.
    pub(super) fn ready(&mut self) {
        self.init = Some(self.spawned.elapsed());
    }

    /// A new invocation has the process.
    pub(super) fn started(&mut self) {
        self.start_logged = false;
    }

    /// Whether the START line is still owed; it is not from now on.
    pub(super) fn take_start(&mut self) -> bool {
        !std::mem::replace(&mut self.start_logged, true)
    }

    /// The START line to publish before an output line of `request_id`, if it is due.
    pub(super) fn start_due(&mut self, request_id: &str) -> Option<String> {
        self.take_start()
            .then(|| start_line(request_id, &self.version))
    }

    /// The record that ends the invocation `request_id`: its START if `take_start`
    /// said it was owed, END and REPORT. Built after the reply is sent (REPORT may read
    /// /proc), so the START debt is settled before, when the next invocation starts.
    pub(super) fn finished(&mut self, request_id: &str, with_start: bool, ran: Ran) -> String {
        let mut record = String::with_capacity(256);
        if with_start {
            record.push_str(&start_line(request_id, &self.version));
            record.push('\n');
        }
        let init = if ran.cold { self.init.take() } else { None };
        let report = Report {
            duration: ran.duration,
            memory_mb: self.memory_mb,
            max_memory_used: self.peak.after(ran.duration),
            init,
        };
        write_end_and_report(&mut record, request_id, &report);
        record
    }
}

struct Report {
    duration: Duration,
    memory_mb: u32,
    /// Bytes.
    max_memory_used: u64,
    init: Option<Duration>,
}

fn start_line(request_id: &str, version: &str) -> String {
    format!("START RequestId: {request_id} Version: {version}")
}

fn write_end_and_report(out: &mut String, request_id: &str, report: &Report) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {:.2} ms\t\
         Billed Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
        millis(report.duration),
        billed_ms(report.duration),
        report.memory_mb,
        report.max_memory_used.div_ceil(1024 * 1024),
    );
    if let Some(init) = report.init {
        let _ = write!(out, "\tInit Duration: {:.2} ms", millis(init));
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Lambda bills per started millisecond, at least one.
fn billed_ms(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_lambdas() {
        assert_eq!(
            start_line("8f50-7cfc", "$LATEST"),
            "START RequestId: 8f50-7cfc Version: $LATEST"
        );
        let mut out = String::new();
        let report = Report {
            duration: Duration::from_micros(2_261),
            memory_mb: 128,
            max_memory_used: 63 * 1024 * 1024 - 10,
            init: None,
        };
        write_end_and_report(&mut out, "8f50-7cfc", &report);
        assert_eq!(
            out,
            "END RequestId: 8f50-7cfc\nREPORT RequestId: 8f50-7cfc\tDuration: 2.26 ms\t\
             Billed Duration: 3 ms\tMemory Size: 128 MB\tMax Memory Used: 63 MB"
        );
        let mut out = String::new();
        let cold = Report {
            init: Some(Duration::from_micros(196_664)),
            ..report
        };
        write_end_and_report(&mut out, "x", &cold);
        assert!(out.ends_with("\tMax Memory Used: 63 MB\tInit Duration: 196.66 ms"));
    }

    #[test]
    fn billing_rounds_up_to_the_millisecond() {
        assert_eq!(billed_ms(Duration::ZERO), 1);
        assert_eq!(billed_ms(Duration::from_micros(10)), 1);
        assert_eq!(billed_ms(Duration::from_millis(1)), 1);
        assert_eq!(billed_ms(Duration::from_micros(1_001)), 2);
        assert_eq!(billed_ms(Duration::from_millis(718)), 718);
    }

    #[test]
    fn start_comes_once_and_init_only_on_the_cold_invocation() {
        let mut framing = LogFraming::new("7", 256, PeakMemory::new(std::process::id()));
        framing.ready();
        // Output before any invocation (module-level prints) gets no START.
        assert_eq!(framing.start_due("none"), None);

        framing.started();
        assert_eq!(
            framing.start_due("a").as_deref(),
            Some("START RequestId: a Version: 7")
        );
        assert_eq!(framing.start_due("a"), None);
        let warm = Ran {
            duration: Duration::from_millis(3),
            cold: false,
        };
        let owed = framing.take_start();
        assert!(!owed, "START went out before the output");
        let record = framing.finished("a", owed, warm);
        assert!(record.starts_with("END RequestId: a\nREPORT RequestId: a\t"));
        assert!(record.contains("\tMemory Size: 256 MB\t"));
        assert!(!record.contains("Init Duration"));
        // Lines trailing the result do not start it again.
        assert_eq!(framing.start_due("a"), None);

        framing.started();
        let cold = Ran {
            duration: Duration::from_millis(3),
            cold: true,
        };
        let owed = framing.take_start();
        assert!(owed, "nothing printed: START is still owed");
        let record = framing.finished("b", owed, cold);
        let lines: Vec<&str> = record.lines().collect();
        assert_eq!(lines[0], "START RequestId: b Version: 7");
        assert_eq!(lines[1], "END RequestId: b");
        assert!(lines[2].contains("\tInit Duration: "), "{record}");
        // Init is reported once.
        framing.started();
        let cold_again = Ran {
            duration: Duration::ZERO,
            cold: true,
        };
        let owed = framing.take_start();
        assert!(!framing
            .finished("c", owed, cold_again)
            .contains("Init Duration"));
    }
}
