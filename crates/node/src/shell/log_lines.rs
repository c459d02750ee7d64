//! How the node writes a log line, as text or as JSON: the time, the level,
//! the id of the request being served on this task (if any), any spans, the
//! target and the event's fields.
//!
//! tracing-subscriber's own formats name a request only through a span, and
//! a span per request cost every request about 3,500 instructions (a spend
//! 6 %, a `/health` 13 %: `benches/instructions.sh`) for the rare request
//! that logs a line. The id lives in the front's task-local instead
//! ([`with_request_id`]), and these formats read it from there.

use crate::shell::front::with_request_id;
use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The node's log line format; see the module's documentation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LogLines {
    /// `<time> <LEVEL> request{request_id=<id>}: <spans> <target>: <fields>`,
    /// the shape of tracing-subscriber's default format, with colours on a
    /// terminal. Fields must be formatted with its `DefaultFields`.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `request_id` (only
    /// inside a request), `fields`, `target`, and `spans` if any. Fields must
    /// be formatted with its `JsonFields`, which writes them as an object.
    Json,
}

impl<S, N> FormatEvent<S, N> for LogLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match self {
            LogLines::Text => text(ctx, writer, event),
            LogLines::Json => json(ctx, writer, event),
        }
    }
}

fn text<S, N>(ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    let ansi = w.has_ansi_escapes();
    let paint = |w: &mut Writer<'_>, style: &str, text: &dyn fmt::Display| {
        if ansi {
            write!(w, "\x1b[{style}m{text}\x1b[0m")
        } else {
            write!(w, "{text}")
        }
    };
    let mut time = String::new();
    SystemTime.format_time(&mut Writer::new(&mut time))?;
    paint(&mut w, DIM, &time)?;
    w.write_char(' ')?;
    let level = meta.level();
    paint(&mut w, level_colour(level), &format_args!("{level:>5}"))?;
    w.write_char(' ')?;
    let mut id_written = Ok(());
    with_request_id(|id| {
        id_written = (|| {
            paint(&mut w, BOLD, &"request")?;
            write!(w, "{{request_id={id}}}")?;
            paint(&mut w, DIM, &":")?;
            w.write_char(' ')
        })();
    });
    id_written?;
    if let Some(scope) = ctx.event_scope() {
        for span in scope.from_root() {
            paint(&mut w, BOLD, &span.metadata().name())?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>()
                && !fields.is_empty()
            {
                write!(w, "{{{fields}}}")?;
            }
            paint(&mut w, DIM, &":")?;
            w.write_char(' ')?;
        }
    }
    paint(&mut w, DIM, &format_args!("{}:", meta.target()))?;
    w.write_char(' ')?;
    ctx.format_fields(w.by_ref(), event)?;
    writeln!(w)
}

fn json<S, N>(ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    let mut time = String::new();
    SystemTime.format_time(&mut Writer::new(&mut time))?;
    w.write_str("{\"timestamp\":")?;
    json_string(&mut w, &time)?;
    write!(w, ",\"level\":\"{}\"", meta.level())?;
    let mut id_written = Ok(());
    with_request_id(|id| {
        id_written = w
            .write_str(",\"request_id\":")
            .and_then(|()| json_string(&mut w, id));
    });
    id_written?;
    w.write_str(",\"fields\":")?;
    ctx.format_fields(w.by_ref(), event)?;
    w.write_str(",\"target\":")?;
    json_string(&mut w, meta.target())?;
    if let Some(scope) = ctx.event_scope() {
        w.write_str(",\"spans\":[")?;
        for (i, span) in scope.from_root().enumerate() {
            if i > 0 {
                w.write_char(',')?;
            }
            w.write_str("{\"name\":")?;
            json_string(&mut w, span.metadata().name())?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>()
                && !fields.is_empty()
            {
                // `JsonFields` wrote them as one object.
                write!(w, ",\"fields\":{fields}")?;
            }
            w.write_char('}')?;
        }
        w.write_char(']')?;
    }
    w.write_str("}\n")
}

/// `s` as a JSON string, quoted and escaped: a client's `x-request-id` may
/// hold `"` or `\`.
fn json_string(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    let quoted = serde_json::to_string(s).map_err(|_| fmt::Error)?;
    w.write_str(&quoted)
}

const DIM: &str = "2";
const BOLD: &str = "1";

/// The colour tracing-subscriber gives each level.
fn level_colour(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "35",
        Level::DEBUG => "34",
        Level::INFO => "32",
        Level::WARN => "33",
        Level::ERROR => "31",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::{DefaultFields, JsonFields};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    /// Logs one line outside any span, then one inside a span, with
    /// `format` and `fields`, and returns what was written.
    fn logged<N>(format: LogLines, fields: N) -> String
    where
        N: for<'a> FormatFields<'a> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .fmt_fields(fields)
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(user = "ann \"the\" user", "plain");
            let span = tracing::info_span!("job", id = 7);
            let _entered = span.enter();
            tracing::warn!("in a span");
        });
        out.text()
    }

    #[test]
    fn text_lines_have_level_target_fields_and_spans() {
        let text = logged(LogLines::Text, DefaultFields::new());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains(
                "  INFO maas_node::shell::log_lines::tests: plain user=\"ann \\\"the\\\" user\""
            ),
            "{text}"
        );
        assert!(
            lines[1].contains("  WARN job{id=7}: maas_node::shell::log_lines::tests: in a span"),
            "{text}"
        );
        assert!(!text.contains("request"), "no request is served: {text}");
    }

    #[test]
    fn json_lines_are_objects_with_fields_and_spans() {
        let text = logged(LogLines::Json, JsonFields::new());
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["fields"]["message"], "plain");
        assert_eq!(lines[0]["fields"]["user"], "ann \"the\" user");
        assert_eq!(lines[0]["target"], "maas_node::shell::log_lines::tests");
        assert!(
            lines[0]["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert!(lines[0].get("request_id").is_none(), "{text}");
        assert!(lines[0].get("spans").is_none(), "{text}");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["spans"][0]["name"], "job");
        assert_eq!(lines[1]["spans"][0]["fields"]["id"], 7);
    }
}
