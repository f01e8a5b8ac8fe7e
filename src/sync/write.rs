//! The PostgreSQL side of a sync: a batch is one statement, `INSERT … SELECT … FROM
//! unnest(<a text array per column>) ON CONFLICT (<the table's key>) DO NOTHING`, so that a
//! batch written again after a crash writes nothing twice. A batch PostgreSQL rejects for its
//! data is split in halves until the entries it rejects are found alone; those become dead
//! letters.
//!
//! A fresh batch (entries read with `>`, never delivered to the group before) is first offered
//! to `COPY … FROM STDIN`, straight into the table, which costs PostgreSQL a fraction of the
//! INSERT. COPY has no `ON CONFLICT`: if any of its rows is refused (an entry already in the
//! table, as after a group made again from `0`; another unique index; a value of the wrong
//! type), COPY writes none of them, and the same batch then goes through the INSERT above,
//! which decides entry by entry as it always has. So the table's key still decides what is
//! written twice. COPY converts a value with its column type's input function, the INSERT with
//! `CAST` from text; they are the same function for the types of denorun's own table and for
//! every type whose cast from text is its input function, where COPY writes only a batch the
//! INSERT would have written whole (a type with a cast function of its own, such as
//! `regclass`, may take in COPY a value the INSERT refuses). It is not offered for a view or a
//! table with rules (COPY does not apply rules), nor, until a batch is written, after a COPY
//! the server did not answer or closed the connection on: that batch's tries go to the INSERT,
//! whose strikes below halve it or bury the entry that brings the server down.
//!
//! A statement unanswered past its [`deadline`] (5 s, and 1 s more per MiB it carries), or a
//! connection's set-up unanswered for [`CONNECT_TIMEOUT`], is an outage: the connection is
//! dropped and made again (ending the dropped one's server process, which may hold the
//! batch's rows locked), and the batch is written again (its key makes that safe), so a
//! PostgreSQL that stops answering without closing holds nothing for ever.
//!
//! A batch can also fail with no SQLSTATE at all on a connection that was up: the server
//! closed it (a message too large, a backend that crashed on these rows) or did not answer
//! in time. Once that happens [`STRIKES`] times in a row, the parts written get half as many
//! rows ([`Strikes`]), and an entry on which the server still closes the connection alone
//! becomes a dead letter with the error, so that one batch cannot stop a sync for ever. Silence
//! alone never makes a dead letter: it may be a lock that another transaction holds.

use std::borrow::Cow;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::pg::Target;
use super::row::{self, Entry};
use super::table::{self, Plan};

/// The most bytes of values one statement carries (PostgreSQL refuses a message over 1 GiB,
/// and may say so only by closing the connection).
pub const MOST_BYTES: usize = 64 << 20;

/// A part cut into runs of at most `most` rows.
fn by_rows<R>(part: Vec<R>, most: usize) -> Vec<Vec<R>> {
    if part.len() <= most {
        return vec![part];
    }
    let mut part = part.into_iter().peekable();
    let mut runs = Vec::new();
    while part.peek().is_some() {
        runs.push(part.by_ref().take(most).collect());
    }
    runs
}

/// The bytes of a row's values.
fn row_bytes<T: AsRef<str>>(values: &[Option<T>]) -> usize {
    values.iter().flatten().map(|v| v.as_ref().len()).sum()
}

/// Rows cut into runs of at most `most` bytes of values each (a row larger than that alone).
fn by_bytes<T: AsRef<str>>(rows: Vec<(usize, Vec<Option<T>>)>, most: usize) -> Vec<Vec<(usize, Vec<Option<T>>)>> {
    let mut parts = vec![Vec::new()];
    let mut bytes = 0;
    for row in rows {
        let size = row_bytes(&row.1);
        if bytes + size > most && !parts.last().is_some_and(Vec::is_empty) {
            parts.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        parts.last_mut().expect("one part at least").push(row);
    }
    parts
}

/// Set on each of the writer's sessions: keepalive probes from the server's side, so that it
/// notices a client host that is gone.
const SESSION: &str = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3";

/// How long connecting, checking the table and preparing may go unanswered.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a statement carrying `bytes` of values may go unanswered: 5 s, and 1 s more per
/// MiB, since a large batch takes its time on a slow link.
pub fn deadline(bytes: usize) -> Duration {
    Duration::from_secs(5) + Duration::from_secs_f64(bytes as f64 / (1u64 << 20) as f64)
}

/// Why a write did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// PostgreSQL is away (down, restarting, unreachable, out of connections): try again later.
    Outage(String),
    /// PostgreSQL did not answer in time (see [`deadline`]): an outage already long, so said
    /// at once.
    Silent(String),
    /// Something no retry mends (the table dropped, permissions): the sync ends.
    Fatal(String),
}

impl Failure {
    pub fn text(&self) -> &str {
        match self {
            Failure::Outage(text) | Failure::Silent(text) | Failure::Fatal(text) => text,
        }
    }
}

/// How PostgreSQL's answer to a batch is taken, by its SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The data: a value of the wrong type or too long, a constraint (classes 22, 23, 54).
    Rejected,
    Outage,
    Fatal,
}

/// Classes 08 (connection), 53 (resources), 57 (shut down, starting up), 40 (serialization)
/// and no code at all (I/O) are outages; 22, 23 and 54 are the data; the rest is fatal.
pub fn verdict(sqlstate: Option<&str>) -> Verdict {
    let Some(code) = sqlstate else { return Verdict::Outage };
    match code.get(..2).unwrap_or(code) {
        "22" | "23" | "54" => Verdict::Rejected,
        "08" | "53" | "57" | "40" | "58" => Verdict::Outage,
        _ => Verdict::Fatal,
    }
}

/// How many times in a row a part may fail without an SQLSTATE on a live connection before
/// parts are halved.
pub const STRIKES: u32 = 3;

/// Failures without an SQLSTATE, counted across tries of one batch, and the size of part they
/// have come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strikes {
    count: u32,
    /// The most rows a part may have.
    pub most_rows: usize,
}

/// How a part failed without an SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blow {
    /// The server closed the connection on it.
    Closed,
    /// No answer in time: perhaps only a lock another transaction holds, so never a reason
    /// to give an entry up.
    Unanswered,
}

/// What to do after a failure without an SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Struck {
    /// Try the batch again as it is (after a reconnect).
    Again,
    /// Try again with parts of at most this many rows.
    Halve(usize),
    /// The entry alone made the server close the connection every time: it becomes a dead
    /// letter.
    Bury,
}

impl Default for Strikes {
    fn default() -> Self {
        Strikes { count: 0, most_rows: usize::MAX }
    }
}

impl Strikes {
    /// A part of `rows` rows failed without an SQLSTATE, by `blow`.
    pub fn struck(&mut self, rows: usize, blow: Blow) -> Struck {
        self.count += 1;
        if self.count < STRIKES {
            return Struck::Again;
        }
        self.count = 0;
        if rows <= 1 {
            return match blow {
                Blow::Closed => Struck::Bury,
                Blow::Unanswered => Struck::Again,
            };
        }
        self.most_rows = rows / 2;
        Struck::Halve(self.most_rows)
    }
}

/// What became of a batch.
#[derive(Debug, Default)]
pub struct Written {
    /// Rows inserted (entries already in the table are not counted).
    pub rows: u64,
    /// Entries PostgreSQL (or the mapping) refused, by their place in the batch, with the reason.
    pub dead: Vec<(usize, String)>,
    /// Written by COPY.
    pub copied: bool,
}

/// A connection to PostgreSQL and the table's plan, connected again after an outage.
pub struct Writer {
    target: Target,
    table: String,
    client: Option<Connected>,
    /// Of the batch being written; cleared when a batch is written.
    strikes: Strikes,
    /// A COPY of the batch being written failed without an answer: its tries go to the
    /// INSERT, where strikes count; cleared when a batch is written.
    copy_struck: bool,
    /// The server process of a connection dropped because a statement went unanswered. It
    /// may hold that statement's rows locked in a transaction that waits for the rest of a
    /// message that will never come (PostgreSQL has no time-out for that), which would hold
    /// up the batch written again: the next connection ends it.
    abandoned: Option<i32>,
}

/// A connection, the table's plan, and the batch's INSERT prepared on it.
struct Connected {
    client: Client,
    plan: Plan,
    insert: Statement,
    /// The COPY of fresh batches, unless the table does not take COPY as it takes INSERT.
    copy: Option<String>,
    /// Its server process (`pg_backend_pid()`).
    pid: i32,
}

impl Writer {
    pub fn new(target: Target, table: &str) -> Writer {
        Writer {
            target,
            table: table.to_string(),
            client: None,
            strikes: Strikes::default(),
            copy_struck: false,
            abandoned: None,
        }
    }

    /// The table, quoted for SQL and logs.
    pub fn table(&self) -> String {
        table::qualified(&self.table)
    }

    /// The table as it was named (`[schema.]name`), for metric labels.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Connects, creates or checks the table, and prepares the batch's INSERT: the start-up
    /// check and the way back after an outage.
    pub async fn connect(&mut self) -> Result<(), Failure> {
        if self.client.as_ref().is_some_and(|c| !c.client.is_closed()) {
            return Ok(());
        }
        self.client = None;
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_now()).await {
            Ok(connected) => connected,
            Err(_) => Err(silent(CONNECT_TIMEOUT)),
        }
    }

    async fn connect_now(&mut self) -> Result<(), Failure> {
        let client = self.target.connect().await.map_err(|e| self.failure(&e))?;
        client.batch_execute(SESSION).await.map_err(|e| self.failure(&e))?;
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.map_err(|e| self.failure(&e))?.get(0);
        if let Some(abandoned) = self.abandoned.take() {
            // Allowed for a backend of the same role; without that right, its locks last until
            // its connection ends.
            if let Err(e) = client.query_one("SELECT pg_terminate_backend($1)", &[&abandoned]).await {
                log::warn!("{}: cannot end the unanswered session {abandoned}: {}", self.table(), describe(&e));
            }
        }
        let plan = match table::prepare(&client, &self.table).await {
            Ok(plan) => plan,
            Err(e) => {
                return Err(match e.downcast_ref::<tokio_postgres::Error>() {
                    Some(pg) => self.failure(pg),
                    None => Failure::Fatal(format!("{e:#}")),
                })
            }
        };
        let insert = client.prepare(&plan.insert_sql(&self.table())).await.map_err(|e| self.failure(&e))?;
        let takes_copy = table::takes_copy(&client, &self.table).await.map_err(|e| self.failure(&e))?;
        let copy = takes_copy.then(|| plan.copy_sql(&self.table()));
        self.client = Some(Connected { client, plan, insert, copy, pid });
        Ok(())
    }

    /// Writes a batch; rejected entries come back as dead letters, the rest is committed.
    /// `fresh`: its entries were read with `>` (see the module's doc for what COPY changes).
    pub async fn write(&mut self, stream: &str, entries: &[Entry], fresh: bool) -> Result<Written, Failure> {
        self.connect().await?;
        if fresh && !self.copy_struck {
            if let Some(rows) = self.copy(stream, entries).await? {
                self.strikes = Strikes::default();
                return Ok(Written { rows, dead: Vec::new(), copied: true });
            }
            self.connect().await?;
        }
        let Some(Connected { plan, .. }) = &self.client else { unreachable!("connected above") };
        let mut written = Written::default();
        let mut rows = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            match row::values(plan, stream, entry) {
                Ok(values) => rows.push((i, values)),
                Err(unfit) => written.dead.push((i, unfit.to_string())),
            }
        }
        // Parts of at most MOST_BYTES, then halves; written last first, and a part PostgreSQL
        // rejects is split again.
        let mut todo: Vec<_> =
            by_bytes(rows, MOST_BYTES).into_iter().flat_map(|part| by_rows(part, self.strikes.most_rows)).collect();
        todo.reverse();
        while let Some(part) = todo.pop() {
            if part.is_empty() {
                continue;
            }
            let limit = deadline(part.iter().map(|(_, values)| row_bytes(values)).sum());
            let (blow, failure) = match tokio::time::timeout(limit, self.commit(&part)).await {
                Ok(Ok(rows)) => {
                    written.rows += rows;
                    continue;
                }
                Err(_) => {
                    // The connection may still deliver an answer: it is never used again, and
                    // its server process is ended from the next one.
                    self.abandoned = self.client.take().map(|c| c.pid);
                    (Blow::Unanswered, silent(limit))
                }
                Ok(Err(e)) if e.code().is_none() => (Blow::Closed, self.failure(&e)),
                Ok(Err(e)) => {
                    match (verdict(e.code().map(|c| c.code())), part.len()) {
                        (Verdict::Rejected, 1) => written.dead.push((part[0].0, describe(&e))),
                        (Verdict::Rejected, n) => {
                            let mut part = part;
                            let second = part.split_off(n / 2);
                            todo.push(second);
                            todo.push(part);
                        }
                        _ => return Err(self.failure(&e)),
                    }
                    continue;
                }
            };
            // No SQLSTATE: counted; the part is halved after a few, or its entry buried.
            let Some(dead) = self.strike(&part, blow, &failure) else { return Err(failure) };
            written.dead.push(dead);
            self.connect().await?;
        }
        self.strikes = Strikes::default();
        self.copy_struck = false;
        Ok(written)
    }

    /// Offers a fresh batch to COPY: the rows written, or `None` when the INSERT must write it
    /// instead (COPY refused a row and so wrote none; an entry does not map to a row; the
    /// table does not take COPY). An outage is an outage, as for the INSERT; after silence or
    /// a connection closed without a code, the batch's next tries go to the INSERT.
    async fn copy(&mut self, stream: &str, entries: &[Entry]) -> Result<Option<u64>, Failure> {
        let Some(Connected { plan, copy: Some(_), .. }) = &self.client else { return Ok(None) };
        let mut text = Vec::with_capacity(entries.len() * 256);
        let mut bytes = 0;
        for entry in entries {
            let Ok(values) = row::values(plan, stream, entry) else { return Ok(None) };
            bytes += row_bytes(&values);
            if bytes > MOST_BYTES {
                return Ok(None);
            }
            copy_row(&values, &mut text);
        }
        let limit = deadline(bytes);
        match tokio::time::timeout(limit, self.copy_now(text)).await {
            Ok(Ok(rows)) => Ok(Some(rows)),
            Ok(Err(e)) => match verdict(e.code().map(|c| c.code())) {
                Verdict::Fatal => {
                    // Something about COPY itself (a privilege, an object it cannot fill): the
                    // INSERT is left to judge the table on this connection; the next one asks
                    // `takes_copy` again.
                    log::warn!(
                        "{}: COPY refused ({}); batches on this connection are written by INSERT",
                        self.table(),
                        describe(&e)
                    );
                    if let Some(connected) = self.client.as_mut() {
                        connected.copy = None;
                    }
                    Ok(None)
                }
                Verdict::Rejected => Ok(None),
                Verdict::Outage => {
                    // Without a code the server may have closed the connection on these rows.
                    self.copy_struck |= e.code().is_none();
                    Err(self.failure(&e))
                }
            },
            Err(_) => {
                self.copy_struck = true;
                self.abandoned = self.client.take().map(|c| c.pid);
                Err(silent(limit))
            }
        }
    }

    async fn copy_now(&mut self, text: Vec<u8>) -> Result<u64, tokio_postgres::Error> {
        use futures::SinkExt;
        let Some(Connected { client, copy: Some(sql), .. }) = &self.client else { unreachable!("checked by copy") };
        let sink = client.copy_in::<_, bytes::Bytes>(sql.as_str()).await?;
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from(text)).await?;
        sink.finish().await
    }

    /// Counts a failure without an SQLSTATE of `part` on a live connection; returns the dead
    /// letter of a part of one entry that has failed so [`STRIKES`] times.
    fn strike<T>(&mut self, part: &[(usize, T)], blow: Blow, failure: &Failure) -> Option<(usize, String)> {
        match self.strikes.struck(part.len(), blow) {
            Struck::Again => None,
            Struck::Halve(rows) => {
                log::warn!(
                    "{}: a part of {} rows failed {STRIKES} times without an error code; parts of {rows} rows from now on",
                    self.table(),
                    part.len()
                );
                None
            }
            Struck::Bury => Some((
                part[0].0,
                format!("PostgreSQL failed this entry alone {STRIKES} times without an error code: {}", failure.text()),
            )),
        }
    }

    /// One statement, so one transaction: a text array per column, unnested into the table.
    async fn commit(&mut self, rows: &[(usize, Vec<Option<Cow<'_, str>>>)]) -> Result<u64, tokio_postgres::Error> {
        let Some(Connected { client, plan, insert, .. }) = &self.client else { unreachable!("connected by write") };
        let mut columns: Vec<Vec<Option<&str>>> = vec![Vec::with_capacity(rows.len()); plan.columns.len()];
        for (_, values) in rows {
            for (column, value) in columns.iter_mut().zip(values) {
                column.push(value.as_deref());
            }
        }
        let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        client.execute(insert, &params).await
    }

    /// `user@host:port/db`.
    pub fn describe(&self) -> String {
        self.target.describe()
    }

    fn failure(&mut self, e: &tokio_postgres::Error) -> Failure {
        let what = describe(e);
        match verdict(e.code().map(|c| c.code())) {
            Verdict::Fatal => Failure::Fatal(what),
            _ => {
                self.client = None;
                Failure::Outage(what)
            }
        }
    }
}

/// One row of COPY's text format: values separated by tabs, `\N` for NULL, and the
/// characters the format gives a meaning (backslash, tab, newline, carriage return) escaped.
fn copy_row<T: AsRef<str>>(values: &[Option<T>], out: &mut Vec<u8>) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        let Some(value) = value else {
            out.extend_from_slice(b"\\N");
            continue;
        };
        let value = value.as_ref().as_bytes();
        let mut plain = 0;
        for (at, byte) in value.iter().enumerate() {
            let escaped: &[u8] = match byte {
                b'\\' => b"\\\\",
                b'\t' => b"\\t",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                _ => continue,
            };
            out.extend_from_slice(&value[plain..at]);
            out.extend_from_slice(escaped);
            plain = at + 1;
        }
        out.extend_from_slice(&value[plain..]);
    }
    out.push(b'\n');
}

fn silent(limit: Duration) -> Failure {
    Failure::Silent(format!(
        "no answer within {:.1} s (a stopped server or a dead route); connecting again",
        limit.as_secs_f64()
    ))
}

/// PostgreSQL's own words: `message (SQLSTATE code)`, with the detail when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}; {detail})", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_by_bytes() {
        let row = |i: usize, n: usize| (i, vec![Some("x".repeat(n)), None]);
        let parts = by_bytes(vec![row(0, 4), row(1, 4), row(2, 9), row(3, 1)], 8);
        let places: Vec<Vec<usize>> = parts.iter().map(|p| p.iter().map(|(i, _)| *i).collect()).collect();
        assert_eq!(places, [vec![0, 1], vec![2], vec![3]]);
        assert_eq!(by_bytes(Vec::<(usize, Vec<Option<String>>)>::new(), 8).len(), 1);
    }

    #[test]
    fn a_part_that_keeps_failing_without_a_code_is_halved_then_buried() {
        let mut strikes = Strikes::default();
        assert_eq!(strikes.struck(100, Blow::Closed), Struck::Again);
        assert_eq!(strikes.struck(100, Blow::Unanswered), Struck::Again);
        assert_eq!(strikes.struck(100, Blow::Closed), Struck::Halve(50));
        assert_eq!(strikes.most_rows, 50);
        for _ in 1..STRIKES {
            assert_eq!(strikes.struck(1, Blow::Closed), Struck::Again);
        }
        assert_eq!(strikes.struck(1, Blow::Closed), Struck::Bury);
        assert_eq!(strikes.struck(1, Blow::Closed), Struck::Again, "counted afresh for the next entry");
    }

    #[test]
    fn an_entry_is_never_buried_for_silence_alone() {
        let mut strikes = Strikes::default();
        for _ in 0..10 * STRIKES {
            assert_eq!(strikes.struck(1, Blow::Unanswered), Struck::Again);
        }
    }

    #[test]
    fn a_statement_has_5_s_and_1_s_per_mib() {
        assert_eq!(deadline(0), Duration::from_secs(5));
        assert_eq!(deadline(64 << 20), Duration::from_secs(69));
    }

    #[test]
    fn copy_rows_escape_what_the_text_format_gives_a_meaning() {
        let mut out = Vec::new();
        copy_row(&[Some("plain"), None, Some("a\tb\nc\rd\\e\\."), Some("")], &mut out);
        copy_row::<&str>(&[None], &mut out);
        assert_eq!(out, b"plain\t\\N\ta\\tb\\nc\\rd\\\\e\\\\.\t\n\\N\n".to_vec());
    }

    #[test]
    fn parts_are_cut_by_rows() {
        assert_eq!(by_rows(vec![1, 2, 3, 4, 5], 2), vec![vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(by_rows(vec![1, 2], usize::MAX), vec![vec![1, 2]]);
        assert_eq!(by_rows(Vec::<u8>::new(), 1), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(Some("22P02")), Verdict::Rejected); // invalid text representation
        assert_eq!(verdict(Some("22001")), Verdict::Rejected); // string data right truncation
        assert_eq!(verdict(Some("23502")), Verdict::Rejected); // not null violation
        assert_eq!(verdict(Some("57P01")), Verdict::Outage); // admin shutdown
        assert_eq!(verdict(Some("57P03")), Verdict::Outage); // cannot connect now
        assert_eq!(verdict(Some("08006")), Verdict::Outage);
        assert_eq!(verdict(None), Verdict::Outage);
        assert_eq!(verdict(Some("42P01")), Verdict::Fatal); // undefined table
        assert_eq!(verdict(Some("28P01")), Verdict::Fatal); // wrong password
        assert_eq!(verdict(Some("2")), Verdict::Fatal);
        assert_eq!(verdict(Some("2é")), Verdict::Fatal, "no slicing inside a character");
    }
}
