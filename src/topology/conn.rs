//! The connection everything long-lived holds: to one server, to the master Sentinel names
//! now, or to a Redis Cluster.
//!
//! Every command has a deadline (`silence::deadline`: the response time-out, or a blocking
//! command's own wait plus that). A command past it fails as a time-out, and the connection it
//! went out on is replaced by a new one, so that a silent server (paused, or behind a frozen
//! route) is an outage that callers wait out like a closed connection, and a reply that comes
//! late is read by nobody.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, ConnectionAddr, RedisFuture, RedisResult};

use super::silence::{self, Deadline};
use super::{same_node, Topology};

/// A reconnecting connection to a server, to the master Sentinel names (moving to a new one
/// after a failover), or to a Cluster.
#[derive(Clone)]
pub struct Conn(Inner);

#[derive(Clone)]
enum Inner {
    Master(Box<Master>),
    Cluster(Box<Cluster>),
}

/// A Cluster connection, made anew from its client after a time-out.
#[derive(Clone)]
struct Cluster {
    client: ClusterClient,
    current: Arc<Mutex<(u64, ClusterConnection)>>,
}

/// A connection to a server, or to the master Sentinel names.
///
/// Behind Sentinel, a command that finds Redis away makes the connection suspect: until a
/// command succeeds again, each one first asks the sentinels where the master is. So a
/// connection never quietly reconnects to its old address once the sentinels have named
/// another master (the old one may be back there, still a master for a moment, before the
/// sentinels make it a replica and drop what is written to it).
#[derive(Clone)]
struct Master {
    topology: Topology,
    config: ConnectionManagerConfig,
    current: Arc<Mutex<Current>>,
    suspect: Arc<AtomicBool>,
    /// Held while the sentinels are asked, so that concurrent commands ask one at a time.
    moving: Arc<tokio::sync::Mutex<()>>,
}

struct Current {
    addr: ConnectionAddr,
    client: Client,
    manager: ConnectionManager,
    /// Raised each time the manager is replaced, so that two commands timing out on the same
    /// connection replace it once.
    generation: u64,
}

impl Conn {
    /// Connects to the master `client` is for.
    pub(super) async fn master(
        topology: Topology,
        client: Client,
        config: ConnectionManagerConfig,
    ) -> RedisResult<Conn> {
        let addr = client.get_connection_info().addr().clone();
        let manager = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        Ok(Conn(Inner::Master(Box::new(Master {
            topology,
            config,
            current: Arc::new(Mutex::new(Current { addr, client, manager, generation: 0 })),
            suspect: Arc::new(AtomicBool::new(false)),
            moving: Arc::new(tokio::sync::Mutex::new(())),
        }))))
    }

    pub(super) async fn cluster(client: ClusterClient, connect: std::time::Duration) -> RedisResult<Conn> {
        // Finding the slots may meet a silent node too.
        let conn = tokio::time::timeout(connect + silence::response_timeout(), client.get_async_connection())
            .await
            .map_err(|_| silent_error(connect + silence::response_timeout()))??;
        Ok(Conn(Inner::Cluster(Box::new(Cluster { client, current: Arc::new(Mutex::new((0, conn))) }))))
    }
}

/// Runs `call` within `deadline`; past it, `silent` is told (to drop the connection) and the
/// call fails as a time-out.
async fn within<T>(
    deadline: Deadline,
    call: impl Future<Output = RedisResult<T>>,
    silent: impl FnOnce(),
) -> RedisResult<T> {
    let Deadline::After(limit) = deadline else { return call.await };
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => {
            silent();
            Err(silent_error(limit))
        }
    }
}

/// The error of a command (or connect) past its deadline: a time-out, so an outage.
fn silent_error(limit: std::time::Duration) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer from Redis within {} ms; the connection is dropped", limit.as_millis()),
    ))
}

/// A command's deadline.
fn of_cmd(cmd: &redis::Cmd) -> Deadline {
    silence::deadline(cmd.args_iter().map(arg_bytes), silence::response_timeout())
}

/// A pipeline's: its slowest command's.
fn of_pipeline(pipeline: &redis::Pipeline) -> Deadline {
    pipeline.cmd_iter().map(of_cmd).fold(Deadline::After(silence::response_timeout()), Deadline::max)
}

fn arg_bytes(arg: redis::Arg<&[u8]>) -> &[u8] {
    match arg {
        redis::Arg::Simple(bytes) => bytes,
        _ => b"",
    }
}

impl Cluster {
    fn conn(&self) -> (u64, ClusterConnection) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (current.0, current.1.clone())
    }

    /// Replaces connection `generation` by a new one (if nobody did already): the old one may
    /// have a reply on its way that nobody must read. When no new one can be had now, the old
    /// one stays, and the next command past its deadline tries again.
    async fn renew(&self, generation: u64) {
        let Ok(Ok(conn)) = tokio::time::timeout(silence::response_timeout(), self.client.get_async_connection()).await
        else {
            return;
        };
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 == generation {
            *current = (generation + 1, conn);
        }
    }

    async fn send<'a, T, Fut>(
        &self,
        deadline: Deadline,
        command: impl FnOnce(ClusterConnection) -> Fut,
    ) -> RedisResult<T>
    where
        Fut: Future<Output = RedisResult<T>> + 'a,
    {
        let (generation, conn) = self.conn();
        let mut silent = false;
        let result = within(deadline, command(conn), || silent = true).await;
        if silent {
            self.renew(generation).await;
        }
        result
    }
}

impl Master {
    fn manager(&self) -> (u64, ConnectionManager) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (current.generation, current.manager.clone())
    }

    /// Replaces connection `generation` by a new one to the same address (if nobody did
    /// already): the old one may have a reply on its way that nobody must read.
    fn renew(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.generation != generation {
            return;
        }
        if let Ok(manager) = ConnectionManager::new_lazy_with_config(current.client.clone(), self.config.clone()) {
            log::debug!("Redis at {} was silent: connecting again", current.addr);
            current.manager = manager;
            current.generation += 1;
        }
    }

    /// Runs a command (or pipeline) on the master's connection, within `deadline`.
    async fn send<'a, T, Fut>(
        &self,
        deadline: Deadline,
        command: impl FnOnce(ConnectionManager) -> Fut,
    ) -> RedisResult<T>
    where
        Fut: Future<Output = RedisResult<T>> + 'a,
    {
        let behind_sentinel = matches!(self.topology, Topology::Sentinel(..));
        if behind_sentinel && self.suspect.load(Ordering::SeqCst) {
            self.follow().await;
        }
        let (generation, manager) = self.manager();
        let result = within(deadline, command(manager), || self.renew(generation)).await;
        match &result {
            Err(e) if behind_sentinel && super::is_outage(e) => {
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
        if let Ok(manager) = ConnectionManager::new_lazy_with_config(client.clone(), self.config.clone()) {
            log::warn!("Redis failover: the master is now at {addr} (was {})", current.addr);
            let generation = current.generation + 1;
            *current = Current { addr, client, manager, generation };
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match &mut self.0 {
            Inner::Master(master) => Box::pin(
                master.send(of_cmd(cmd), move |mut manager| async move { manager.req_packed_command(cmd).await }),
            ),
            Inner::Cluster(cluster) => {
                Box::pin(cluster.send(of_cmd(cmd), move |mut conn| async move { conn.req_packed_command(cmd).await }))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match &mut self.0 {
            Inner::Master(master) => Box::pin(master.send(of_pipeline(pipeline), move |mut manager| async move {
                manager.req_packed_commands(pipeline, offset, count).await
            })),
            Inner::Cluster(cluster) => Box::pin(cluster.send(of_pipeline(pipeline), move |mut conn| async move {
                conn.req_packed_commands(pipeline, offset, count).await
            })),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Master(master) => master.manager().1.get_db(),
            Inner::Cluster(_) => 0,
        }
    }
}
