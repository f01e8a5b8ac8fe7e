//! The delivery's Redis calls, each waiting out outages (`topology::through_outages`): no
//! request is dropped by one. Any other error ends the delivery, named by what was being done.

use std::future::Future;

use redis::{FromRedisValue, RedisResult};

use super::{Delivery, Error};
use crate::topology::{self, Conn};

/// Runs a Redis call through outages; any other error is returned, named by `what`.
pub(super) async fn persist<T, F, Fut>(what: &'static str, call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    topology::through_outages(call).await.map_err(|source| Error::Redis { what, source })
}

/// One command through outages.
pub(super) async fn query<T: FromRedisValue>(conn: &Conn, what: &'static str, cmd: &redis::Cmd) -> Result<T, Error> {
    persist(what, || {
        let (mut conn, cmd) = (conn.clone(), cmd.clone());
        async move { cmd.query_async(&mut conn).await }
    })
    .await
}

impl Delivery {
    /// A command on the worker's own connection, through outages.
    pub(super) async fn write<T: FromRedisValue>(&self, what: &'static str, cmd: &redis::Cmd) -> Result<T, Error> {
        query(&self.writer, what, cmd).await
    }

    /// A pipeline (or MULTI/EXEC) on the worker's own connection, through outages.
    pub(super) async fn write_pipe<T: FromRedisValue>(
        &self,
        what: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, Error> {
        persist(what, || {
            let (mut writer, pipe) = (self.writer.clone(), pipe.clone());
            async move { pipe.query_async(&mut writer).await }
        })
        .await
    }
}
