//! node_exporter's `timex` collector: the kernel's clock discipline from adjtimex(2)
//! (read-only: `modes` is 0), which node-mixin's clock alerts use
//! (`node_timex_offset_seconds`, `node_timex_sync_status`, `node_timex_maxerror_seconds`).

use vigil_proto::MetricFamily;

use super::{Source, SourceError};

/// adjtimex's return value when the clock is not synchronised (TIME_ERROR).
const TIME_ERROR: i32 = 5;
/// `status` bit: `offset` and `jitter` are in nanoseconds, not microseconds.
const STA_NANO: i64 = 0x2000;
/// Frequencies are ppm with a 16-bit binary fraction.
const PPM16FRAC: f64 = 1_000_000.0 * 65_536.0;

/// The fields of `struct timex` node_exporter reports, and adjtimex's return value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimexReading {
    pub state: i32,
    pub offset: i64,
    pub freq: i64,
    pub maxerror: i64,
    pub esterror: i64,
    pub status: i64,
    pub constant: i64,
    pub tick: i64,
    pub ppsfreq: i64,
    pub jitter: i64,
    pub shift: i64,
    pub stabil: i64,
    pub jitcnt: i64,
    pub calcnt: i64,
    pub errcnt: i64,
    pub stbcnt: i64,
    pub tai: i64,
}

/// Why adjtimex gave no reading.
#[derive(Debug)]
pub enum TimexError {
    Denied,
    Other(std::io::Error),
}

pub fn read_timex() -> Result<TimexReading, TimexError> {
    // SAFETY: an all-zero timex (modes = 0) asks adjtimex to change nothing.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid, writable timex.
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.kind() {
            std::io::ErrorKind::PermissionDenied => TimexError::Denied,
            _ => TimexError::Other(e),
        });
    }
    Ok(TimexReading {
        state,
        offset: t.offset as i64,
        freq: t.freq as i64,
        maxerror: t.maxerror as i64,
        esterror: t.esterror as i64,
        status: t.status as i64,
        constant: t.constant as i64,
        tick: t.tick as i64,
        ppsfreq: t.ppsfreq as i64,
        jitter: t.jitter as i64,
        shift: t.shift as i64,
        stabil: t.stabil as i64,
        jitcnt: t.jitcnt as i64,
        calcnt: t.calcnt as i64,
        errcnt: t.errcnt as i64,
        stbcnt: t.stbcnt as i64,
        tai: t.tai as i64,
    })
}

pub fn timex_families(t: &TimexReading) -> Vec<MetricFamily> {
    let divisor = if t.status & STA_NANO != 0 { 1e9 } else { 1e6 };
    let g = |name: &'static str, help: &'static str, v: f64| {
        MetricFamily::gauge(name, help).with(&[], v)
    };
    let c = |name: &'static str, help: &'static str, v: f64| {
        MetricFamily::counter(name, help).with(&[], v)
    };
    vec![
        g(
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            if t.state == TIME_ERROR { 0.0 } else { 1.0 },
        ),
        g(
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            t.offset as f64 / divisor,
        ),
        g(
            "node_timex_frequency_adjustment_ratio",
            "Local clock frequency adjustment.",
            1.0 + t.freq as f64 / PPM16FRAC,
        ),
        g(
            "node_timex_maxerror_seconds",
            "Maximum error in seconds.",
            t.maxerror as f64 / 1e6,
        ),
        g(
            "node_timex_estimated_error_seconds",
            "Estimated error in seconds.",
            t.esterror as f64 / 1e6,
        ),
        g(
            "node_timex_status",
            "Value of the status array bits.",
            t.status as f64,
        ),
        g(
            "node_timex_loop_time_constant",
            "Phase-locked loop time constant.",
            t.constant as f64,
        ),
        g(
            "node_timex_tick_seconds",
            "Seconds between clock ticks.",
            t.tick as f64 / 1e6,
        ),
        g(
            "node_timex_pps_frequency_hertz",
            "Pulse per second frequency.",
            t.ppsfreq as f64 / PPM16FRAC,
        ),
        g(
            "node_timex_pps_jitter_seconds",
            "Pulse per second jitter.",
            t.jitter as f64 / divisor,
        ),
        g(
            "node_timex_pps_shift_seconds",
            "Pulse per second interval duration.",
            t.shift as f64,
        ),
        g(
            "node_timex_pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            t.stabil as f64 / PPM16FRAC,
        ),
        c(
            "node_timex_pps_jitter_total",
            "Pulse per second count of jitter limit exceeded events.",
            t.jitcnt as f64,
        ),
        c(
            "node_timex_pps_calibration_total",
            "Pulse per second count of calibration intervals.",
            t.calcnt as f64,
        ),
        c(
            "node_timex_pps_error_total",
            "Pulse per second count of calibration errors.",
            t.errcnt as f64,
        ),
        c(
            "node_timex_pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            t.stbcnt as f64,
        ),
        g(
            "node_timex_tai_offset_seconds",
            "International Atomic Time (TAI) offset.",
            t.tai as f64,
        ),
    ]
}

#[derive(Debug, Default)]
pub struct TimexSource;

impl Source for TimexSource {
    fn name(&self) -> &'static str {
        "timex"
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), SourceError> {
        match read_timex() {
            Ok(t) => out.extend(timex_families(&t)),
            // A sandbox that forbids adjtimex even read-only: no data, as node_exporter.
            Err(TimexError::Denied) => {}
            Err(TimexError::Other(e)) => return Err(SourceError::Other(format!("adjtimex: {e}"))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(fams: &[MetricFamily], name: &str) -> f64 {
        fams.iter().find(|f| f.name == name).unwrap().samples[0].value
    }

    #[test]
    fn units_follow_the_nano_bit() {
        // An NTP-disciplined clock: 250 µs ahead in nanosecond mode, 12.5 ppm fast.
        let t = TimexReading {
            state: 0,
            offset: 250_000,
            freq: 819_200,
            maxerror: 16_000,
            status: STA_NANO | 0x1,
            tick: 10_000,
            ..TimexReading::default()
        };
        let fams = timex_families(&t);
        assert_eq!(value(&fams, "node_timex_offset_seconds"), 0.00025);
        assert_eq!(
            value(&fams, "node_timex_frequency_adjustment_ratio"),
            1.0 + 12.5e-6
        );
        assert_eq!(value(&fams, "node_timex_maxerror_seconds"), 0.016);
        assert_eq!(value(&fams, "node_timex_sync_status"), 1.0);
        let micro = TimexReading {
            state: TIME_ERROR,
            offset: 250,
            ..t
        };
        let micro = TimexReading {
            status: 0x40,
            ..micro
        };
        let fams = timex_families(&micro);
        assert_eq!(value(&fams, "node_timex_offset_seconds"), 0.00025);
        assert_eq!(value(&fams, "node_timex_sync_status"), 0.0);
    }

    #[test]
    fn live_clock_matches_node_exporter_on_this_vm() {
        // The 1.5.0 capture on this VM: unsynchronised, status 64 (STA_UNSYNC), tick 10 ms.
        let fams = timex_families(&read_timex().unwrap());
        assert_eq!(value(&fams, "node_timex_tick_seconds"), 0.01);
        assert_eq!(fams.len(), 17);
    }
}
