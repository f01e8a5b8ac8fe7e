//! The reading half of a sync: batches from the stream, in this order of preference: this
//! consumer's own pending entries (left by an earlier run under the same name), entries
//! other consumers left idle past `claimIdleMs` (XAUTOCLAIM, every half of that), and new
//! entries, gathered for up to the flush period until a batch is full. Redis away: it waits
//! and tries again, with one log line per outage.

use std::time::{Duration, Instant};

use super::away::Away;
use super::stream::{Group, Read};
use super::Options;
use crate::topology::Conn;

/// Where the reader is in its cycle.
pub struct Reader {
    group: Group,
    conn: Conn,
    batch: usize,
    flush: Duration,
    claim_idle: Duration,
    /// The last of this consumer's own pending entries read, until there are none left.
    history: Option<String>,
    /// The XAUTOCLAIM scan under way, if one is.
    claim_cursor: Option<String>,
    next_claim: Instant,
    away: Away,
}

impl Reader {
    pub fn new(group: Group, conn: Conn, away: Away, options: &Options) -> Reader {
        Reader {
            group,
            conn,
            batch: options.batch,
            flush: options.flush,
            claim_idle: options.claim_idle,
            history: Some("0".into()),
            claim_cursor: None,
            next_claim: Instant::now() + options.claim_idle / 2,
            away,
        }
    }

    /// The next batch: never empty (it waits for entries), unless the group is gone for good.
    pub async fn next(&mut self) -> anyhow::Result<Read> {
        loop {
            match self.try_next().await {
                Ok(read) if read.entries.is_empty() && read.deleted.is_empty() => self.away.back(),
                Ok(read) => {
                    self.away.back();
                    return Ok(read);
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The group (or the stream) was deleted under us: make it again, or stop.
                    log::warn!("{}: {e}; joining again", self.group.stream);
                    self.group.join(&mut self.conn).await?;
                }
                Err(e) if e.is_timeout() => {
                    self.away.silent(&e.to_string());
                    self.reread_own();
                    tokio::time::sleep(self.away.delay()).await;
                }
                Err(e) if crate::topology::is_outage(&e) => {
                    self.away.lost(&e.to_string());
                    self.reread_own();
                    tokio::time::sleep(self.away.delay()).await;
                }
                Err(e) => return Err(anyhow::anyhow!("{}: reading from Redis: {e}", self.group.stream)),
            }
        }
    }

    /// A read whose answer was lost (silence, a dropped connection) left its entries pending
    /// under this consumer, where only XAUTOCLAIM would find them after `--claim-idle-ms`:
    /// this consumer's own pending entries are read again first. Those a writer holds may be
    /// written twice, which the table's key and the dead-letter script make harmless.
    fn reread_own(&mut self) {
        self.history = Some("0".into());
    }

    async fn try_next(&mut self) -> redis::RedisResult<Read> {
        if let Some(from) = self.history.clone() {
            let read = self.group.read(&mut self.conn, &from, self.batch, None).await?;
            let last = read.entries.last().map(|e| e.id.clone()).or_else(|| read.deleted.last().cloned());
            self.history = last;
            return Ok(read);
        }
        if self.claim_cursor.is_none() && Instant::now() >= self.next_claim {
            self.claim_cursor = Some("0-0".into());
        }
        if let Some(cursor) = self.claim_cursor.clone() {
            let min_idle = self.claim_idle.as_millis() as u64;
            let (next, read) = self.group.claim(&mut self.conn, min_idle, &cursor, self.batch).await?;
            if next == "0-0" {
                self.claim_cursor = None;
                self.next_claim = Instant::now() + self.claim_idle / 2;
            } else {
                self.claim_cursor = Some(next);
            }
            if !read.entries.is_empty() {
                log::info!("{}: took {} entries left idle by other consumers", self.group.stream, read.entries.len());
            }
            return Ok(read);
        }
        self.gather().await
    }

    /// New entries: up to a batch, waiting at most the flush period once the first arrived
    /// (or until the next claim is due while none have).
    async fn gather(&mut self) -> redis::RedisResult<Read> {
        let block = self.next_claim.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let mut read = self.group.read(&mut self.conn, ">", self.batch, Some(block.as_millis() as u64)).await?;
        let deadline = Instant::now() + self.flush;
        while !read.entries.is_empty() && read.entries.len() < self.batch {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let more = self
                .group
                .read(&mut self.conn, ">", self.batch - read.entries.len(), Some(left.as_millis().max(1) as u64))
                .await?;
            if more.entries.is_empty() {
                break;
            }
            read.entries.extend(more.entries);
        }
        read.fresh = true;
        Ok(read)
    }
}
