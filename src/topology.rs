//! Where a Redis URL leads: one server, or a master that Redis Sentinel watches and may
//! replace (`redis+sentinel://host1:26379,host2:26379/mymaster[/db]`).
//!
//! Everything in denorun that keeps a connection open (the supervisor's bookkeeping, the
//! handler loop) holds a [`Conn`]: the redis crate's reconnecting `ConnectionManager` to the
//! master, which, behind Sentinel, asks the sentinels again whenever Redis seems away
//! (refused, dropped, `READONLY` from a demoted master) and moves to the new master once
//! they name one. Callers keep their own retries; a `Conn` only makes sure that a retry after
//! a failover reaches the new master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisFuture, RedisResult,
};

/// The sentinels of one master, as a `redis+sentinel://` URL names them.
pub struct Sentinels {
    /// `host:port` of each sentinel, as given.
    pub nodes: Vec<(String, u16)>,
    /// The master's name in the sentinels' configuration.
    pub name: String,
    /// The master's user, password and db, from the URL.
    pub settings: RedisConnectionInfo,
}

impl Sentinels {
    /// Parses `redis+sentinel://[user:password@]host:port[,host:port...]/name[/db]`.
    pub fn parse(url: &str) -> anyhow::Result<Sentinels> {
        let usage = "expected redis+sentinel://[user:password@]host:port[,host:port...]/<master name>[/db]";
        let rest = url.strip_prefix("redis+sentinel://").ok_or_else(|| anyhow::anyhow!("{usage}"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| anyhow::anyhow!("no master name; {usage}"))?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let nodes = hosts
            .split(',')
            .map(|node| match node.rsplit_once(':') {
                Some((host, port)) => {
                    let port = port.parse().map_err(|_| anyhow::anyhow!("bad port in sentinel '{node}'; {usage}"))?;
                    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
                }
                None if !node.is_empty() => Ok((node.to_string(), 26379)),
                None => anyhow::bail!("an empty sentinel address; {usage}"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let name = segments.next().ok_or_else(|| anyhow::anyhow!("no master name; {usage}"))?.to_string();
        let mut settings = RedisConnectionInfo::default();
        if let Some(db) = segments.next() {
            settings = settings.set_db(db.parse().map_err(|_| anyhow::anyhow!("bad db '{db}'; {usage}"))?);
        }
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
        Ok(Sentinels { nodes, name, settings })
    }

    /// The redis crate's sentinel client, which asks each sentinel in turn and checks with
    /// `ROLE` that the node named is a master. A new one each time: its cached connections
    /// would belong to the async runtime of one thread, and workers have one each.
    fn sentinel(&self) -> RedisResult<(Sentinel, SentinelNodeConnectionInfo)> {
        let sentinel = Sentinel::build(self.nodes.iter().map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p)).collect())?;
        Ok((sentinel, SentinelNodeConnectionInfo::default().set_redis_connection_info(self.settings.clone())))
    }

    /// The master's address now, as the sentinels say.
    pub async fn master(&self) -> RedisResult<ConnectionAddr> {
        let (mut sentinel, info) = self.sentinel()?;
        let client = sentinel.async_master_for(&self.name, Some(&info)).await?;
        Ok(client.get_connection_info().addr().clone())
    }

    /// The master's address now, outside any async runtime (at start).
    pub fn master_blocking(&self) -> RedisResult<ConnectionAddr> {
        let (mut sentinel, info) = self.sentinel()?;
        Ok(sentinel.master_for(&self.name, Some(&info))?.get_connection_info().addr().clone())
    }

    /// `host:port,...` for messages.
    pub fn describe(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|(h, p)| crate::permissions::net_addr(h, *p)).collect();
        format!("the master '{}' of the sentinels at {}", self.name, nodes.join(","))
    }
}

/// The Redis a connection is for.
#[derive(Clone)]
pub enum Topology {
    Server(Client),
    /// A Sentinel-watched master, reached with these settings (user, password, db).
    Sentinel(Arc<Sentinels>, RedisConnectionInfo),
}

impl Topology {
    /// A client for the master now (for a server, the server).
    pub async fn master(&self) -> RedisResult<Client> {
        match self {
            Topology::Server(client) => Ok(client.clone()),
            Topology::Sentinel(sentinels, settings) => {
                let addr = sentinels.master().await?;
                Client::open(addr.into_connection_info()?.set_redis_settings(settings.clone()))
            }
        }
    }

    /// A reconnecting connection that follows failovers; connects before it returns.
    pub async fn managed(&self, config: ConnectionManagerConfig) -> RedisResult<Conn> {
        let client = self.master().await?;
        let addr = client.get_connection_info().addr().clone();
        let manager = ConnectionManager::new_with_config(client, config.clone()).await?;
        Ok(Conn {
            topology: self.clone(),
            config,
            current: Arc::new(Mutex::new(Current { addr, manager })),
            suspect: Arc::new(AtomicBool::new(false)),
            moving: Arc::new(tokio::sync::Mutex::new(())),
        })
    }
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
    Ok(Topology::Server(Client::open(info)?))
}

/// The topology of a URL a worker was given (its `REDIS_URL`).
pub fn for_worker_url(url: &str) -> RedisResult<Topology> {
    for_worker(url.into_connection_info()?)
}

fn same_node(a: &ConnectionAddr, b: &ConnectionAddr) -> bool {
    match (a, b) {
        (ConnectionAddr::Tcp(h1, p1), ConnectionAddr::Tcp(h2, p2)) => h1 == h2 && p1 == p2,
        _ => false,
    }
}

/// A connection to the master that moves to a new master after a failover.
///
/// Behind Sentinel, a command that finds Redis away makes the connection suspect: until a
/// command succeeds again, each one first asks the sentinels where the master is. So a
/// connection never quietly reconnects to its old address once the sentinels have named
/// another master (the old one may be back there, still a master for a moment, before the
/// sentinels make it a replica and drop what is written to it).
#[derive(Clone)]
pub struct Conn {
    topology: Topology,
    config: ConnectionManagerConfig,
    current: Arc<Mutex<Current>>,
    suspect: Arc<AtomicBool>,
    /// Held while the sentinels are asked, so that concurrent commands ask one at a time.
    moving: Arc<tokio::sync::Mutex<()>>,
}

struct Current {
    addr: ConnectionAddr,
    manager: ConnectionManager,
}

impl Conn {
    fn manager(&self) -> ConnectionManager {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).manager.clone()
    }

    /// Runs a command (or pipeline) on the master's connection.
    async fn send<'a, T, Fut>(&self, command: impl FnOnce(ConnectionManager) -> Fut) -> RedisResult<T>
    where
        Fut: std::future::Future<Output = RedisResult<T>> + 'a,
    {
        let behind_sentinel = matches!(self.topology, Topology::Sentinel(..));
        if behind_sentinel && self.suspect.load(Ordering::SeqCst) {
            self.follow().await;
        }
        let result = command(self.manager()).await;
        match &result {
            Err(e) if behind_sentinel && crate::config::is_outage(e) => {
                self.suspect.store(true, Ordering::SeqCst);
                self.follow().await;
            }
            Ok(_) => self.suspect.store(false, Ordering::SeqCst),
            Err(_) => {}
        }
        result
    }

    /// Asks the sentinels where the master is, and moves there if it is somewhere else.
    async fn follow(&self) {
        let _moving = self.moving.lock().await;
        let Ok(client) = self.topology.master().await else { return };
        let addr = client.get_connection_info().addr().clone();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if same_node(&addr, &current.addr) {
            return;
        }
        if let Ok(manager) = ConnectionManager::new_lazy_with_config(client, self.config.clone()) {
            log::warn!("Redis failover: the master is now at {addr} (was {})", current.addr);
            *current = Current { addr, manager };
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        Box::pin(self.send(move |mut manager| async move { manager.req_packed_command(cmd).await }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(
            self.send(move |mut manager| async move { manager.req_packed_commands(pipeline, offset, count).await }),
        )
    }

    fn get_db(&self) -> i64 {
        self.manager().get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        let s = Sentinels::parse("redis+sentinel://u:p%40ss@127.0.0.1:26379,[::1]:26380,s3/mymaster/2").unwrap();
        assert_eq!(s.nodes, [("127.0.0.1".to_string(), 26379), ("::1".to_string(), 26380), ("s3".to_string(), 26379)]);
        assert_eq!(s.name, "mymaster");
        assert_eq!((s.settings.db(), s.settings.username(), s.settings.password()), (2, Some("u"), Some("p@ss")));
        let s = Sentinels::parse("redis+sentinel://h:1/m").unwrap();
        assert_eq!((s.settings.db(), s.settings.password()), (0, None));
        for bad in
            ["redis+sentinel://h:1", "redis+sentinel://h:x/m", "redis+sentinel://h:1,/m", "redis+sentinel://h:1/m/x"]
        {
            assert!(Sentinels::parse(bad).is_err(), "{bad}");
        }
    }
}
