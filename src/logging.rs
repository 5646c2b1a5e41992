//! Log lines in the original tool's format: `time=… level=… msg="…"
//! app=vault-secrets-reloader worker=…`, or one JSON object per line.
//! Debug and info go to stdout, warn and error to stderr.

use std::cell::Cell;
use std::io::Write;
use std::time::SystemTime;

const APP: &str = "vault-secrets-reloader";

thread_local! {
    static WORKER: Cell<&'static str> = const { Cell::new("main") };
}

/// Names the part of the loop that is running (`collector`, `reloader`,
/// `main`); every line logged until the next call carries it.
pub fn set_worker(worker: &'static str) {
    WORKER.with(|w| w.set(worker));
}

struct Logger {
    level: log::LevelFilter,
    json: bool,
}

/// Installs the logger. Lines below `level` are dropped; libraries' own
/// lines are kept only from warn up, so their debug output cannot leak
/// request details.
pub fn init(level: log::LevelFilter, json: bool) {
    // A second call keeps the first logger; harmless in tests.
    if log::set_boxed_logger(Box::new(Logger { level, json })).is_ok() {
        log::set_max_level(level);
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
            && (metadata.target().starts_with("vault_secrets_reloader")
                || metadata.level() <= log::Level::Warn)
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(
            SystemTime::now(),
            record.level(),
            &record.args().to_string(),
            WORKER.with(Cell::get),
            self.json,
        );
        // A closed stdout/stderr must not stop the daemon.
        let _ = if record.level() <= log::Level::Warn {
            std::io::stderr().lock().write_all(line.as_bytes())
        } else {
            std::io::stdout().lock().write_all(line.as_bytes())
        };
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
    }
}

fn format_line(at: SystemTime, level: log::Level, msg: &str, worker: &str, json: bool) -> String {
    let time = crate::time::rfc3339(at, 3);
    let level = level.as_str().to_ascii_lowercase();
    if json {
        let object = serde_json::json!({
            "time": time, "level": level, "msg": msg, "app": APP, "worker": worker,
        });
        format!("{object}\n")
    } else {
        format!(
            "time={time} level={level} msg={} app={APP} worker={worker}\n",
            quote(msg)
        )
    }
}

/// A logfmt value: quoted, with quotes, backslashes and line breaks escaped
/// so one record is always one line.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn text_lines_match_the_original_format() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_851_811);
        let line = format_line(
            at,
            log::Level::Error,
            "Vault secret path secret/data/mysql not found",
            "reloader",
            false,
        );
        assert_eq!(
            line,
            "time=2026-11-28T07:43:31.000Z level=error msg=\"Vault secret path secret/data/mysql not found\" app=vault-secrets-reloader worker=reloader\n"
        );
    }

    #[test]
    fn one_record_is_one_line() {
        let line = format_line(UNIX_EPOCH, log::Level::Info, "a\"b\nc\\", "main", false);
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains(r#"msg="a\"b\nc\\""#), "{line}");
    }

    #[test]
    fn json_lines_parse() {
        let line = format_line(UNIX_EPOCH, log::Level::Warn, "x \"y\"", "collector", true);
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(value["level"], "warn");
        assert_eq!(value["msg"], "x \"y\"");
        assert_eq!(value["worker"], "collector");
        assert_eq!(value["app"], APP);
    }
}
