//! The feeder's and the monitor's reports: one line per event, `event=NAME key=value…`,
//! easy for people to read and for the race to parse. Times are [`crate::peer::mono_ns`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One event line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub fields: BTreeMap<String, String>,
}

impl Event {
    pub fn new(name: &str) -> Self {
        Event {
            name: name.to_string(),
            fields: BTreeMap::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.fields.insert(key.to_string(), value.to_string());
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    /// The line, without its newline. Values never hold spaces (callers pass numbers,
    /// addresses and single words).
    pub fn line(&self) -> String {
        let mut s = format!("event={}", self.name);
        for (k, v) in &self.fields {
            let v = v.replace(char::is_whitespace, "_");
            let _ = write!(s, " {k}={v}");
        }
        s
    }

    /// Parses a line written by [`Event::line`]; `None` for any other line.
    pub fn parse(line: &str) -> Option<Event> {
        let mut parts = line.split_whitespace();
        let name = parts.next()?.strip_prefix("event=")?;
        let mut e = Event::new(name);
        for p in parts {
            let (k, v) = p.split_once('=')?;
            e.fields.insert(k.to_string(), v.to_string());
        }
        Some(e)
    }

    /// Prints the line to stdout and flushes it, so a reader sees it at once.
    pub fn emit(&self) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.line());
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let e = Event::new("open-sent")
            .with("mono_ns", 42)
            .with("peer", "192.0.2.1:179");
        let line = e.line();
        assert_eq!(line, "event=open-sent mono_ns=42 peer=192.0.2.1:179");
        assert_eq!(Event::parse(&line), Some(e.clone()));
        assert_eq!(e.get_u64("mono_ns"), Some(42));
    }

    #[test]
    fn other_lines_are_not_events() {
        assert_eq!(Event::parse("hello world"), None);
        assert_eq!(Event::parse("event=x broken"), None);
        assert_eq!(Event::parse(""), None);
    }

    #[test]
    fn spaces_in_values_do_not_break_the_line() {
        let e = Event::new("error").with("message", "peer closed the connection");
        assert_eq!(
            Event::parse(&e.line()).unwrap().get("message"),
            Some("peer_closed_the_connection")
        );
    }
}
