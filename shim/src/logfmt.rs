//! The CRI container log format:
//! `<RFC 3339 nano timestamp> <stdout|stderr> <F|P> <text>\n`,
//! `P` marking a partial line that continues in the next record.

use std::time::{SystemTime, UNIX_EPOCH};

/// Longest log record body; longer lines are split into `P` records.
pub const MAX_LINE: usize = 16 * 1024;

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `2024-01-02T03:04:05.123456789Z` for nanoseconds since the epoch.
pub fn rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Splits a byte stream into CRI log records.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes; `emit(body, partial)` is called per record.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&data[..pos]);
            self.flush_long(emit);
            emit(&self.pending, false);
            self.pending.clear();
            data = &data[pos + 1..];
        }
        self.pending.extend_from_slice(data);
        self.flush_long(emit);
    }

    fn flush_long(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        while self.pending.len() > MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            emit(&self.pending, true);
            self.pending = rest;
        }
    }

    /// End of stream: what is left had no newline, so it is a partial
    /// record (readers show it without one, as containerd's logs do).
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            emit(&self.pending, true);
            self.pending.clear();
        }
    }
}

/// One formatted record.
pub fn record(ts_ns: i64, stream: &str, body: &[u8], partial: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 48);
    out.extend_from_slice(rfc3339_nano(ts_ns).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(body);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nano(1_704_164_645_123_456_789),
            "2024-01-02T03:04:05.123456789Z"
        );
        assert_eq!(
            rfc3339_nano(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn splits_lines_and_marks_partials() {
        let mut s = LineSplitter::default();
        let mut got: Vec<(Vec<u8>, bool)> = Vec::new();
        let mut emit = |b: &[u8], p: bool| got.push((b.to_vec(), p));
        s.feed(b"one\ntw", &mut emit);
        s.feed(b"o\n", &mut emit);
        let long = vec![b'x'; MAX_LINE + 5];
        s.feed(&long, &mut emit);
        s.feed(b"\nlast", &mut emit);
        s.finish(&mut emit);
        assert_eq!(got[0], (b"one".to_vec(), false));
        assert_eq!(got[1], (b"two".to_vec(), false));
        assert_eq!(got[2], (vec![b'x'; MAX_LINE], true));
        assert_eq!(got[3], (vec![b'x'; 5], false));
        assert_eq!(got[4], (b"last".to_vec(), true));
        assert_eq!(
            record(0, "stdout", b"hi", false),
            b"1970-01-01T00:00:00.000000000Z stdout F hi\n"
        );
    }
}
