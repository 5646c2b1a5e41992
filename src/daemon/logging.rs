//! Log lines in the original tool's format: `time=… level=… msg="…"
//! app=vault-secrets-reloader worker=…`, or one JSON object per line.
//! Debug and info go to stdout, warn and error to stderr: two `env_logger`
//! loggers, one per stream, behind a router, as the original routes its
//! records with two handlers.
//!
//! Filtering: `--log-level` sets the level of every module; `RUST_LOG`, when
//! set, is appended to it, so its directives add per-module levels
//! (`RUST_LOG=vault_secrets_reloader::kube=debug`) or replace the default (a
//! bare `RUST_LOG=debug`). Libraries' own lines are printed only from warn
//! up whatever the filter says, so their debug output (request headers,
//! tokens) never reaches the log.

use std::cell::Cell;
use std::io::Write;
use std::time::SystemTime;

const APP: &str = "vault-secrets-reloader";

/// The crate's own log target; everything else is a library.
const OWN_TARGET: &str = "vault_secrets_reloader";

thread_local! {
    static WORKER: Cell<&'static str> = const { Cell::new("main") };
}

/// Names the part of the loop that is running (`collector`, `reloader`,
/// `main`); every line logged until the next call carries it.
pub fn set_worker(worker: &'static str) {
    WORKER.with(|w| w.set(worker));
}

/// Installs the logger: records below `level` are dropped, unless `RUST_LOG`
/// asks for them (see the module doc); `json` writes JSON lines. An
/// unparsable `RUST_LOG` is ignored with a warning.
pub fn init(level: log::LevelFilter, json: bool) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (spec, rejected) = filter_spec(level, rust_log.as_deref());
    let router = Router::new(&spec, json);
    let max_level = router.max_level();
    // A second call keeps the first logger; harmless in tests.
    if log::set_boxed_logger(Box::new(router)).is_ok() {
        log::set_max_level(max_level);
        if let Some(why) = rejected {
            log::warn!("RUST_LOG ignored: {why}");
        }
    }
}

/// The `env_logger` filter directives for `--log-level` and `RUST_LOG`
/// (`None` or blank when unset): the level, then `RUST_LOG`'s directives,
/// which win where they name the same module. When `RUST_LOG` does not
/// parse, the level alone and why.
fn filter_spec(
    level: log::LevelFilter,
    rust_log: Option<&str>,
) -> (String, Option<env_filter::ParseError>) {
    let base = level.as_str().to_ascii_lowercase();
    let Some(extra) = rust_log.map(str::trim).filter(|text| !text.is_empty()) else {
        return (base, None);
    };
    let combined = format!("{base},{extra}");
    match env_filter::Builder::new().try_parse(&combined) {
        Ok(_) => (combined, None),
        Err(why) => (base, Some(why)),
    }
}

/// The stream a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Warn and error go to stderr, debug and info (and trace) to stdout, as
/// the original's two handlers split them.
fn stream_for(level: log::Level) -> Stream {
    if level <= log::Level::Warn {
        Stream::Stderr
    } else {
        Stream::Stdout
    }
}

/// Whether a record may be printed at all, whatever the filter says: the
/// crate's own at any level, libraries' only from warn up.
fn admitted(target: &str, level: log::Level) -> bool {
    let own = target == OWN_TARGET
        || target
            .strip_prefix(OWN_TARGET)
            .is_some_and(|rest| rest.starts_with("::"));
    own || level <= log::Level::Warn
}

/// Sends each record to the `env_logger` logger of its stream. Both have
/// the same filter, so either answers for `enabled`.
struct Router {
    stdout: env_logger::Logger,
    stderr: env_logger::Logger,
}

impl Router {
    /// Two loggers with the filter directives `spec` (already checked by
    /// `filter_spec`) writing lines in the text or JSON format.
    fn new(spec: &str, json: bool) -> Router {
        let build = |target| {
            env_logger::Builder::new()
                .parse_filters(spec)
                .format(move |buf, record| {
                    let line = format_line(
                        SystemTime::now(),
                        record.level(),
                        &record.args().to_string(),
                        WORKER.with(Cell::get),
                        json,
                    );
                    buf.write_all(line.as_bytes())
                })
                .target(target)
                .build()
        };
        Router {
            stdout: build(env_logger::Target::Stdout),
            stderr: build(env_logger::Target::Stderr),
        }
    }

    /// The most verbose level any directive lets through.
    fn max_level(&self) -> log::LevelFilter {
        self.stdout.filter().max(self.stderr.filter())
    }
}

impl log::Log for Router {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        admitted(metadata.target(), metadata.level()) && self.stdout.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // env_logger ignores write errors: a closed stdout/stderr must not
        // stop the daemon.
        match stream_for(record.level()) {
            Stream::Stdout => self.stdout.log(record),
            Stream::Stderr => self.stderr.log(record),
        }
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
    }
}

fn format_line(at: SystemTime, level: log::Level, msg: &str, worker: &str, json: bool) -> String {
    let time = crate::policy::time::rfc3339(at, 3);
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
    use log::{Level, LevelFilter, Log};
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
    fn text_lines_carry_the_level_in_lower_case_and_the_milliseconds() {
        let at = UNIX_EPOCH + Duration::new(1_795_854_012, 301_999_999);
        let cases = [
            (Level::Debug, "debug"),
            (Level::Info, "info"),
            (Level::Warn, "warn"),
            (Level::Error, "error"),
        ];
        for (level, name) in cases {
            assert_eq!(
                format_line(at, level, "m", "collector", false),
                format!("time=2026-11-28T08:20:12.301Z level={name} msg=\"m\" app=vault-secrets-reloader worker=collector\n")
            );
        }
    }

    #[test]
    fn one_record_is_one_line() {
        let line = format_line(UNIX_EPOCH, log::Level::Info, "a\"b\nc\\", "main", false);
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains(r#"msg="a\"b\nc\\""#), "{line}");
    }

    #[test]
    fn quoting_escapes_what_would_break_a_line() {
        let cases = [
            ("plain → text", r#""plain → text""#),
            ("say \"hi\"", r#""say \"hi\"""#),
            ("a\r\nb\tc", r#""a\r\nb\tc""#),
            ("back\\slash", r#""back\\slash""#),
            ("bell\u{7}", r#""bell\u{7}""#),
            ("", r#""""#),
        ];
        for (text, quoted) in cases {
            assert_eq!(quote(text), quoted, "{text:?}");
        }
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

    #[test]
    fn json_lines_are_one_line_with_sorted_keys() {
        let line = format_line(UNIX_EPOCH, log::Level::Info, "a\nb", "reloader", true);
        assert_eq!(
            line,
            "{\"app\":\"vault-secrets-reloader\",\"level\":\"info\",\"msg\":\"a\\nb\",\
             \"time\":\"1970-01-01T00:00:00.000Z\",\"worker\":\"reloader\"}\n"
        );
    }

    #[test]
    fn warn_and_error_go_to_stderr_the_rest_to_stdout() {
        let cases = [
            (Level::Error, Stream::Stderr),
            (Level::Warn, Stream::Stderr),
            (Level::Info, Stream::Stdout),
            (Level::Debug, Stream::Stdout),
            (Level::Trace, Stream::Stdout),
        ];
        for (level, stream) in cases {
            assert_eq!(stream_for(level), stream, "{level}");
        }
    }

    #[test]
    fn libraries_are_admitted_only_from_warn_up() {
        let cases = [
            ("vault_secrets_reloader", Level::Debug, true),
            ("vault_secrets_reloader::kube", Level::Trace, true),
            ("vault_secrets_reloader_other", Level::Debug, false),
            ("ureq", Level::Debug, false),
            ("ureq::unversioned", Level::Info, false),
            ("rustls", Level::Warn, true),
            ("ureq", Level::Error, true),
        ];
        for (target, level, expected) in cases {
            assert_eq!(admitted(target, level), expected, "{target} {level}");
        }
    }

    #[test]
    fn the_filter_spec_is_the_level_then_rust_log() {
        let cases = [
            (LevelFilter::Info, None, "info"),
            (LevelFilter::Off, None, "off"),
            (LevelFilter::Debug, Some(""), "debug"),
            (LevelFilter::Debug, Some("  "), "debug"),
            (
                LevelFilter::Info,
                Some("vault_secrets_reloader::kube=debug"),
                "info,vault_secrets_reloader::kube=debug",
            ),
            (LevelFilter::Warn, Some("trace"), "warn,trace"),
        ];
        for (level, rust_log, spec) in cases {
            let (built, rejected) = filter_spec(level, rust_log);
            assert_eq!(built, spec, "{level} {rust_log:?}");
            assert!(rejected.is_none(), "{rust_log:?}");
        }
    }

    #[test]
    fn an_unparsable_rust_log_is_ignored() {
        let (spec, rejected) = filter_spec(LevelFilter::Info, Some("kube=loud"));
        assert_eq!(spec, "info");
        assert!(rejected.is_some());
    }

    #[test]
    fn level_and_rust_log_combine_per_module() {
        const KUBE: &str = "vault_secrets_reloader::kube";
        const VAULT: &str = "vault_secrets_reloader::vault";
        let kube_debug = Some("vault_secrets_reloader::kube=debug");
        let cases = [
            (LevelFilter::Info, None, KUBE, Level::Debug, false),
            (LevelFilter::Info, None, KUBE, Level::Info, true),
            (LevelFilter::Info, kube_debug, KUBE, Level::Debug, true),
            (LevelFilter::Info, kube_debug, VAULT, Level::Debug, false),
            (LevelFilter::Info, kube_debug, VAULT, Level::Info, true),
            (LevelFilter::Info, Some("debug"), VAULT, Level::Debug, true),
            (
                LevelFilter::Debug,
                Some("vault_secrets_reloader::kube=error"),
                KUBE,
                Level::Warn,
                false,
            ),
            (LevelFilter::Error, None, "ureq", Level::Warn, false),
            (LevelFilter::Info, None, "ureq", Level::Warn, true),
            (
                LevelFilter::Info,
                Some("ureq=trace"),
                "ureq",
                Level::Debug,
                false,
            ),
            (LevelFilter::Off, None, VAULT, Level::Error, false),
        ];
        for (level, rust_log, target, record_level, expected) in cases {
            let (spec, _) = filter_spec(level, rust_log);
            let router = Router::new(&spec, false);
            let metadata = log::Metadata::builder()
                .target(target)
                .level(record_level)
                .build();
            assert_eq!(
                router.enabled(&metadata),
                expected,
                "--log-level {level} RUST_LOG={rust_log:?}: {target} {record_level}"
            );
        }
    }

    #[test]
    fn the_max_level_follows_the_most_verbose_directive() {
        let (spec, _) = filter_spec(
            LevelFilter::Info,
            Some("vault_secrets_reloader::kube=trace"),
        );
        assert_eq!(Router::new(&spec, false).max_level(), LevelFilter::Trace);
        assert_eq!(Router::new("warn", true).max_level(), LevelFilter::Warn);
    }
}
