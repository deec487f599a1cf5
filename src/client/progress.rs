//! Progress: a bar per file and a total with speed and ETA on a terminal (indicatif), one
//! plain line per finished file otherwise; and an optional rate cap.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Output;

/// The bars of one command (none unless stdout is a terminal).
pub struct Bars {
    out: Output,
    multi: Option<MultiProgress>,
    total: Option<ProgressBar>,
}

impl Bars {
    pub fn new(out: Output, total_bytes: u64, verb: &str) -> Bars {
        if !out.bars() {
            return Bars { out, multi: None, total: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let total = multi.add(ProgressBar::new(total_bytes));
        total.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        total.set_message(format!("{verb} total"));
        Bars { out, multi: Some(multi), total: Some(total) }
    }

    /// A bar for one file (hidden when not drawing).
    pub fn file(&self, label: &str, len: u64) -> ProgressBar {
        let Some(multi) = &self.multi else { return ProgressBar::hidden() };
        let bar = multi.insert_from_back(1, ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(label.to_owned());
        bar
    }

    /// Bytes that count towards the total (sent, skipped as unchanged, or resumed).
    pub fn advance(&self, n: u64) {
        if let Some(t) = &self.total {
            t.inc(n);
        }
    }

    /// Takes back bytes counted for a request the node did not acknowledge.
    pub fn rewind(&self, n: u64) {
        if let Some(t) = &self.total {
            t.set_position(t.position().saturating_sub(n));
        }
    }

    /// A line of output for a finished file: above the bars on a terminal, plain otherwise.
    pub fn line(&self, text: &str) {
        if self.out.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{text}");
            }
        }
    }

    pub fn finish(&self) {
        if let Some(t) = &self.total {
            t.finish();
        }
    }
}

/// Reads through, moving the bars and holding to a rate cap.
pub struct Meter<'a, R> {
    pub inner: R,
    pub bar: ProgressBar,
    pub bars: &'a Bars,
    limit: Option<(u64, Instant, u64)>,
}

impl<'a, R> Meter<'a, R> {
    pub fn new(inner: R, bar: ProgressBar, bars: &'a Bars, rate: Option<u64>) -> Self {
        Meter { inner, bar, bars, limit: rate.filter(|r| *r > 0).map(|r| (r, Instant::now(), 0)) }
    }

    fn count(&mut self, n: usize) {
        self.bar.inc(n as u64);
        self.bars.advance(n as u64);
        if let Some((rate, start, done)) = &mut self.limit {
            *done += n as u64;
            let due = Duration::from_secs_f64(*done as f64 / *rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}

impl<R: Read> Read for Meter<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Small reads keep the rate cap smooth and the bars moving.
        let cap = if self.limit.is_some() { buf.len().min(64 * 1024) } else { buf.len() };
        let n = self.inner.read(&mut buf[..cap])?;
        self.count(n);
        Ok(n)
    }
}

impl<W: Write> Write for Meter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let cap = if self.limit.is_some() { buf.len().min(64 * 1024) } else { buf.len() };
        let n = self.inner.write(&buf[..cap])?;
        self.count(n);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
