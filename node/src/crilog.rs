//! Reading CRI container logs back: each record is
//! `<RFC 3339 nano> <stdout|stderr> <P|F> <text>`; a `P` record's text is
//! continued by the next record, an `F` record ends a line. Rendering
//! follows the kubelet: every record on its own (a trailing `P` record
//! shows without a newline), the timestamp per record.

/// One record of a CRI log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub text: &'a str,
}

/// Parse one line of a CRI log file (without its newline).
pub fn parse(line: &str) -> Option<Record<'_>> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    if tag != "P" && tag != "F" {
        return None;
    }
    Some(Record {
        time,
        stream,
        partial: tag == "P",
        text: it.next().unwrap_or(""),
    })
}

impl Record<'_> {
    /// The output this record stands for (with a newline for `F`),
    /// prefixed with its timestamp when asked.
    pub fn render(&self, timestamps: bool) -> String {
        let mut s = String::with_capacity(self.text.len() + 40);
        if timestamps {
            s.push_str(self.time);
            s.push(' ');
        }
        s.push_str(self.text);
        if !self.partial {
            s.push('\n');
        }
        s
    }
}

/// The container's output as it wrote it, from a whole log file's text.
pub fn output(log: &str) -> String {
    log.lines()
        .filter_map(parse)
        .map(|r| r.render(false))
        .collect()
}

/// The kubelet's termination message from logs
/// (`FallbackToLogsOnError`): the last `lines` records, at most `bytes`
/// bytes of their end.
pub fn tail_message(log: &str, lines: usize, bytes: usize) -> String {
    let records: Vec<Record<'_>> = log.lines().filter_map(parse).collect();
    let tail: String = records[records.len().saturating_sub(lines)..]
        .iter()
        .map(|r| r.render(false))
        .collect();
    let mut start = tail.len().saturating_sub(bytes);
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    tail[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:00.000000001Z stdout F one\n\
2026-01-01T00:00:01.000000000Z stderr P tw\n\
2026-01-01T00:00:01.500000000Z stderr F o\n\
2026-01-01T00:00:02.000000000Z stdout P DONE\n";

    #[test]
    fn partial_records_join_and_a_trailing_one_has_no_newline() {
        assert_eq!(output(LOG), "one\ntwo\nDONE");
        assert_eq!(tail_message(LOG, 80, 2048), "one\ntwo\nDONE");
        assert_eq!(tail_message(LOG, 2, 2048), "o\nDONE");
        assert_eq!(tail_message(LOG, 80, 6), "o\nDONE");
    }

    #[test]
    fn lines_that_are_not_records_are_skipped() {
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("t stdout X text"), None);
        assert_eq!(
            parse("t stdout F"),
            Some(Record {
                time: "t",
                stream: "stdout",
                partial: false,
                text: ""
            })
        );
    }
}
