//! The connection everything long-lived holds: to one server, to the master Sentinel names
//! now, or to a Redis Cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Client, ConnectionAddr, RedisFuture, RedisResult};

use super::{same_node, Topology};

/// A reconnecting connection to a server, to the master Sentinel names (moving to a new one
/// after a failover), or to a Cluster.
#[derive(Clone)]
pub struct Conn(Inner);

#[derive(Clone)]
enum Inner {
    Master(Box<Master>),
    Cluster(ClusterConnection),
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
    manager: ConnectionManager,
}

impl Conn {
    /// Connects to the master `client` is for.
    pub(super) async fn master(
        topology: Topology,
        client: Client,
        config: ConnectionManagerConfig,
    ) -> RedisResult<Conn> {
        let addr = client.get_connection_info().addr().clone();
        let manager = ConnectionManager::new_with_config(client, config.clone()).await?;
        Ok(Conn(Inner::Master(Box::new(Master {
            topology,
            config,
            current: Arc::new(Mutex::new(Current { addr, manager })),
            suspect: Arc::new(AtomicBool::new(false)),
            moving: Arc::new(tokio::sync::Mutex::new(())),
        }))))
    }

    pub(super) fn cluster(conn: ClusterConnection) -> Conn {
        Conn(Inner::Cluster(conn))
    }
}

impl Master {
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
        if let Ok(manager) = ConnectionManager::new_lazy_with_config(client, self.config.clone()) {
            log::warn!("Redis failover: the master is now at {addr} (was {})", current.addr);
            *current = Current { addr, manager };
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match &mut self.0 {
            Inner::Master(master) => {
                Box::pin(master.send(move |mut manager| async move { manager.req_packed_command(cmd).await }))
            }
            Inner::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match &mut self.0 {
            Inner::Master(master) => Box::pin(
                master
                    .send(move |mut manager| async move { manager.req_packed_commands(pipeline, offset, count).await }),
            ),
            Inner::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Master(master) => master.manager().get_db(),
            Inner::Cluster(_) => 0,
        }
    }
}
