//! Where lines go. denorun's own records go to stderr: as text (`denorun: warning: ...`), or
//! with `--log-format json` as one JSON object each (`ts`, `level`, `msg`, and the fields a
//! record carries, such as `worker` and `event`). Under `supervise`, each worker's stdout and
//! stderr are pipes read line by line, and each line is written whole, after its worker's
//! name (`demo-worker:1 | ...`, as docker compose does) or as a JSON object naming it, so that
//! lines of different workers never mix.

use std::io::Write;
use std::sync::OnceLock;

use deno_runtime::deno_io::StdioPipe;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Text; a worker's lines after its name.
    #[default]
    Prefix,
    /// One JSON object per line.
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// A line longer than this is written in pieces of this size.
const MAX_LINE: usize = 1 << 20;

fn format() -> Format {
    FORMAT.get().copied().unwrap_or_default()
}

/// Starts the logger. `DENORUN_LOG` sets the level (default info). The inspector's
/// "Debugger listening on ws://..." lines are printed as Deno prints them.
pub fn init(format: Format) {
    let _ = FORMAT.set(format);
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("DENORUN_LOG", "info"))
        .format(move |out, record| match format {
            Format::Json => writeln!(out, "{}", record_json(record)),
            Format::Prefix => match record.level() {
                log::Level::Info => writeln!(out, "{}", record.args()),
                level => writeln!(out, "denorun: {}: {}", level.as_str().to_lowercase(), record.args()),
            },
        })
        .init();
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn record_json(record: &log::Record) -> String {
    let mut object = Map::new();
    object.insert("ts".into(), now().into());
    object.insert("level".into(), record.level().as_str().to_lowercase().into());
    let mut fields = Fields(Map::new());
    let _ = record.key_values().visit(&mut fields);
    object.insert("msg".into(), record.args().to_string().into());
    object.extend(fields.0);
    Value::Object(object).to_string()
}

/// A record's key-values as JSON: numbers and booleans as such, the rest as strings.
struct Fields(Map<String, Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: log::kv::Key<'kvs>, value: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
        let json = match (value.to_u64(), value.to_i64(), value.to_f64(), value.to_bool()) {
            (Some(n), ..) => n.into(),
            (_, Some(n), ..) => n.into(),
            (_, _, Some(f), _) => f.into(),
            (_, _, _, Some(b)) => b.into(),
            _ => value.to_string().into(),
        };
        self.0.insert(key.to_string(), json);
        Ok(())
    }
}

/// An uncaught error's report (`error: Uncaught ...` with its stack), as `deno run` prints it,
/// or as one JSON record.
pub fn report(key: &str, report: &str) {
    match format() {
        Format::Prefix => eprintln!("error: {report}"),
        Format::Json => log::error!(worker = key, event = "uncaught"; "{report}"),
    }
}

/// Which of a worker's outputs a line came from.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// A worker's stdout and stderr: pipes whose lines are forwarded, each whole, to the
/// process's own stdout and stderr. One thread reads the pipes of every worker; a pipe is
/// dropped from it when its worker ends.
pub fn worker_pipes(key: &str) -> std::io::Result<(StdioPipe, StdioPipe)> {
    Ok((forward(key, Stream::Stdout)?, forward(key, Stream::Stderr)?))
}

/// The runtime of the thread that reads workers' pipes, started with the first pipe.
fn output_thread() -> std::io::Result<&'static tokio::runtime::Handle> {
    static OUTPUT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    if let Some(handle) = OUTPUT.get() {
        return Ok(handle);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let handle = runtime.handle().clone();
    if OUTPUT.set(handle).is_ok() {
        std::thread::Builder::new()
            .name("denorun-output".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    }
    Ok(OUTPUT.get().expect("set above"))
}

fn forward(key: &str, stream: Stream) -> std::io::Result<StdioPipe> {
    let (reader, writer) = std::io::pipe()?;
    let name = key.strip_suffix(":h").unwrap_or(key).to_string();
    let key = key.to_string();
    let runtime = output_thread()?;
    let reader = {
        let _entered = runtime.enter();
        tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(reader))?
    };
    runtime.spawn(async move {
        let mut reader = tokio::io::BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => write_line(&key, &name, stream, &line),
            }
        }
    });
    Ok(StdioPipe::file(std::fs::File::from(std::os::fd::OwnedFd::from(writer))))
}

/// Writes one of a worker's lines with a single write, under the stream's lock.
fn write_line(key: &str, name: &str, stream: Stream, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let out = match format() {
        Format::Prefix => format!("{name} | {text}\n"),
        Format::Json => {
            let level = match stream {
                Stream::Stdout => "info",
                Stream::Stderr => "error",
            };
            let stream = match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            let object =
                serde_json::json!({ "ts": now(), "level": level, "worker": key, "stream": stream, "msg": text });
            format!("{object}\n")
        }
    };
    let _ = match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(out.as_bytes()),
        Stream::Stderr => std::io::stderr().lock().write_all(out.as_bytes()),
    };
}
