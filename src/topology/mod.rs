//! Where a Redis URL leads: one server; a master that Redis Sentinel watches and may replace
//! (`redis+sentinel://host1:26379,host2:26379/mymaster[/db]`, in `sentinel`); or a Redis
//! Cluster (`redis+cluster://host1:7000,host2:7001`).
//!
//! Everything in denorun that keeps a connection open (the supervisor's bookkeeping, the
//! handler loop) holds a [`Conn`] (in `conn`): to a server, the redis crate's reconnecting
//! `ConnectionManager`, which behind Sentinel moves to the new master after a failover; to a
//! Cluster, the redis crate's cluster connection, which follows slots as they move and
//! replicas as they are promoted. Callers keep their own retries.
//!
//! Every connection notices silence (`silence`): TCP keepalive and `TCP_USER_TIMEOUT` on its
//! socket, and a deadline on each command, past which the connection is replaced and the
//! command fails as an outage.

mod conn;
mod sentinel;
pub mod silence;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::cluster::ClusterClient;
use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisResult};

pub use self::conn::Conn;
pub use self::sentinel::Sentinels;

/// The Redis a connection is for.
#[derive(Clone)]
pub enum Topology {
    Server(Client),
    /// A Sentinel-watched master, reached with these settings (user, password, db).
    Sentinel(Arc<Sentinels>, RedisConnectionInfo),
    /// A Redis Cluster, by the nodes the URL names (any of them finds the rest).
    Cluster(Arc<Vec<ConnectionInfo>>),
}

/// How long a connection waits to connect, and how often it tries again, before a command
/// fails. (How long a command may go unanswered is the command's own deadline: `silence`.)
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub connect: Duration,
    pub retries: usize,
}

impl Patience {
    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect))
            // Each command's deadline is applied by `Conn`, which also drops a silent connection.
            .set_response_timeout(None)
            .set_number_of_retries(self.retries)
            .set_max_delay(Duration::from_secs(1))
    }
}

impl Topology {
    /// Parses a `redis+cluster://[user:password@]host:port[,host:port...]` URL.
    pub fn cluster(url: &str) -> anyhow::Result<Topology> {
        let usage = "expected redis+cluster://[user:password@]host:port[,host:port...]";
        let Nodes { nodes, path, settings } = parse_nodes(url, "redis+cluster://", 6379, usage)?;
        if !path.trim_matches('/').is_empty() {
            anyhow::bail!("a Cluster has no db ('/{path}'); {usage}");
        }
        let nodes = nodes
            .into_iter()
            .map(|(host, port)| {
                Ok(ConnectionAddr::Tcp(host, port)
                    .into_connection_info()?
                    .set_redis_settings(settings.clone())
                    .set_tcp_settings(silence::tcp()))
            })
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(Topology::Cluster(Arc::new(nodes)))
    }

    /// A client for the master now (for a server, the server).
    pub async fn master(&self) -> RedisResult<Client> {
        match self {
            Topology::Server(client) => Ok(client.clone()),
            Topology::Sentinel(sentinels, settings) => {
                let addr = sentinels.master().await?;
                client(addr.into_connection_info()?.set_redis_settings(settings.clone()))
            }
            Topology::Cluster(_) => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Redis Cluster has no single master",
            ))),
        }
    }

    /// A reconnecting connection; connects before it returns.
    pub async fn managed(&self, patience: Patience) -> RedisResult<Conn> {
        match self {
            Topology::Cluster(nodes) => {
                // Each command's deadline is applied by `Conn`; the cluster client has no "no
                // time-out", so a day stands for it.
                let client = ClusterClient::builder(nodes.iter().cloned())
                    .connection_timeout(patience.connect)
                    .response_timeout(Duration::from_secs(86_400))
                    .retries(patience.retries as u32)
                    .build()?;
                Conn::cluster(client, patience.connect).await
            }
            _ => {
                let client = self.master().await?;
                Conn::master(self.clone(), client, patience.manager_config()).await
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }
}

/// A client for `info`, its sockets set to notice a peer whose host is gone (`silence::tcp`).
pub fn client(info: ConnectionInfo) -> RedisResult<Client> {
    Client::open(info.set_tcp_settings(silence::tcp()))
}

/// A client for a `redis://` or `rediss://` URL, as [`client`].
pub fn client_for_url(url: &str) -> RedisResult<Client> {
    client(url.into_connection_info()?)
}

/// Runs a Redis call until Redis answers: while Redis is away (see [`is_outage`]) the
/// call is tried again after a [`Backoff`], for as long as it takes, so that an outage delays
/// work rather than drops it. Any other error is returned.
pub async fn through_outages<T, F, Fut>(mut call: F) -> RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = RedisResult<T>>,
{
    let mut backoff = Backoff::default();
    loop {
        match call().await {
            Err(e) if is_outage(&e) => backoff.wait().await,
            result => return result,
        }
    }
}

/// The wait between tries while Redis is away: 100 ms after the first failure, doubling to
/// a second. Everything that retries Redis waits this way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff(Duration::from_millis(100))
    }
}

impl Backoff {
    /// The wait now; the next one is twice as long, up to a second.
    pub fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
        now
    }

    /// Sleeps for the next wait.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next()).await
    }

    /// After a success: the next failure waits 100 ms again.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// Whether an error means Redis is away for now (down, unreachable, or still loading its data
/// after a restart), or moving (a failover, Cluster slots changing hands), rather than that a
/// command was wrong. A transaction aborted only for such reasons is too.
pub fn is_outage(e: &redis::RedisError) -> bool {
    // Still loading; a master demoted in a failover; no master known to the sentinels yet; a
    // Cluster whose slots are moving, changing master or uncovered.
    let passing = |code: &str| {
        matches!(code, "LOADING" | "READONLY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "MOVED" | "ASK")
    };
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code().is_some_and(passing)
        || (e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort)
            && e.clone()
                .into_server_errors()
                .is_some_and(|errors| !errors.is_empty() && errors.iter().all(|(_, error)| passing(error.code()))))
}

/// What a URL naming several nodes says.
struct Nodes {
    nodes: Vec<(String, u16)>,
    /// What follows the first `/`.
    path: String,
    /// The user and password (%-decoded).
    settings: RedisConnectionInfo,
}

/// Splits `<scheme>[user:password@]host[:port][,host[:port]...][/path]`.
fn parse_nodes(url: &str, scheme: &str, default_port: u16, usage: &str) -> anyhow::Result<Nodes> {
    let rest = url.strip_prefix(scheme).ok_or_else(|| anyhow::anyhow!("{usage}"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let nodes = hosts
        .split(',')
        .map(|node| match node.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse().map_err(|_| anyhow::anyhow!("bad port in '{node}'; {usage}"))?;
                Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
            }
            None if !node.is_empty() => Ok((node.to_string(), default_port)),
            None => anyhow::bail!("an empty address; {usage}"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut settings = RedisConnectionInfo::default();
    if let Some(userinfo) = userinfo {
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        if !user.is_empty() {
            settings = settings.set_username(decode(user));
        }
        if !password.is_empty() {
            settings = settings.set_password(decode(password));
        }
    }
    Ok(Nodes { nodes, path: path.to_string(), settings })
}

/// The sentinels of the Redis denorun was pointed at, when it was a `redis+sentinel://` URL;
/// a worker's connection to that master (the address in its `REDIS_URL`) follows failovers.
static HOST_SENTINELS: OnceLock<(Arc<Sentinels>, ConnectionAddr)> = OnceLock::new();

/// Records the sentinels and the master's address that workers were given. Once per process.
pub fn set_host_sentinels(sentinels: Arc<Sentinels>, master: ConnectionAddr) {
    let _ = HOST_SENTINELS.set((sentinels, master));
}

/// The topology behind a worker's connection: behind Sentinel when it is to the master the
/// worker was given (with the connection's own user, password and db), else the server itself.
pub fn for_worker(info: ConnectionInfo) -> RedisResult<Topology> {
    if let Some((sentinels, master)) = HOST_SENTINELS.get() {
        if same_node(info.addr(), master) {
            return Ok(Topology::Sentinel(sentinels.clone(), info.redis_settings().clone()));
        }
    }
    Ok(Topology::Server(client(info)?))
}

/// The topology of a URL a worker was given (its `REDIS_URL`): a Cluster's URL as such.
pub fn for_worker_url(url: &str) -> anyhow::Result<Topology> {
    if url.starts_with("redis+cluster://") {
        return Topology::cluster(url);
    }
    Ok(for_worker(url.into_connection_info()?)?)
}

fn same_node(a: &ConnectionAddr, b: &ConnectionAddr) -> bool {
    match (a, b) {
        (ConnectionAddr::Tcp(h1, p1), ConnectionAddr::Tcp(h2, p2)) => h1 == h2 && p1 == p2,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_100_ms_to_a_second_and_starts_over_after_a_success() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..6).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(100));
    }

    #[test]
    fn cluster_urls() {
        let Topology::Cluster(nodes) = Topology::cluster("redis+cluster://:pw@127.0.0.1:7000,h2,[::1]:7002").unwrap()
        else {
            panic!("not a cluster")
        };
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:7000", "h2:6379", "::1:7002"]);
        assert_eq!(nodes[0].redis_settings().password(), Some("pw"));
        for bad in ["redis+cluster://h:1/0", "redis+cluster://h:x", "redis+cluster://h:1,"] {
            assert!(Topology::cluster(bad).is_err(), "{bad}");
        }
    }
}
