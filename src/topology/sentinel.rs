//! Redis Sentinel: the sentinels a `redis+sentinel://` URL names, and where they say the
//! master is now.

use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ConnectionAddr, RedisConnectionInfo, RedisResult};

use super::{parse_nodes, Nodes};

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
        let Nodes { nodes, path, mut settings } = parse_nodes(url, "redis+sentinel://", 26379, usage)?;
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let name = segments.next().ok_or_else(|| anyhow::anyhow!("no master name; {usage}"))?.to_string();
        if let Some(db) = segments.next() {
            settings = settings.set_db(db.parse().map_err(|_| anyhow::anyhow!("bad db '{db}'; {usage}"))?);
        }
        if let Some(extra) = segments.next() {
            anyhow::bail!("unexpected '{extra}'; {usage}");
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
