//! The text log's field formatter: every field value, the message included, with its control
//! characters escaped, so a value a client chose (a user name, a repository, a header) can neither
//! forge a log line with a newline nor repaint a terminal with ANSI escapes. The JSON format
//! escapes them already, and journald stores each field whole.

use std::fmt::Write as _;

use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// `s` with every control character written as its Rust escape (`\n`, `\u{1b}`).
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// The field formatter for `fmt::layer().fmt_fields(..)`: `message key=value ...`, escaped.
pub fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|w: &mut Writer<'_>, field, value| {
        let text = format!("{value:?}");
        let text = escape_controls(&text);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn escapes_only_controls() {
        assert_eq!(escape_controls("alice"), "alice");
        assert_eq!(escape_controls("a\nb"), "a\\nb");
        assert_eq!(escape_controls("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape_controls("zoë\t"), "zoë\\t");
    }

    #[test]
    fn a_forged_line_stays_one_line() {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .with_writer(move || Writer2(sink.clone()))
            .finish();
        let user = "bob\n2026-01-01T00:00:00Z  INFO registryd: login ok user=admin\u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(user = %user, client = "192.0.2.1", "login failed");
            tracing::info!("plain {}", "message\nwith newline");
        });
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(!out.contains('\u{1b}'), "{out}");
        assert!(lines[0].contains("login failed user=bob\\n2026"), "{out}");
        assert!(lines[1].ends_with("plain message\\nwith newline"), "{out}");
    }

    struct Writer2(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Writer2 {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
