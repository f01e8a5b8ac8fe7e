//! Least-privilege Redis for a worker type: `denorun acl <type>` creates a Redis ACL user
//! `denorun-<type>` whose keys are the type's own (`<type>:*`) and the replies and traces
//! (`res:*`, `req:*`), with only the commands 2021 and handler workers use. Its password is
//! sealed in the type hash with the secret line's key (the `encryptedJson` scheme); the
//! supervisor unseals it and gives its workers a `REDIS_URL` with that user, never the host's
//! credentials.

use std::collections::HashMap;

use anyhow::Context;
use base64::Engine;
use redis::AsyncCommands;
use zeroize::Zeroizing;

use crate::cipher::cbc_pkcs7;
use crate::keys::Keys;
use crate::topology::Conn;

/// The commands a worker may run: connection set-up, hashes, lists, streams, transactions,
/// the strings and counters a handler may keep. Never CONFIG, ACL, MODULE, DEBUG, FLUSH*,
/// KEYS, SCAN, SHUTDOWN and the like.
const COMMANDS: &[&str] = &[
    "ping",
    "auth",
    "hello",
    "select",
    "echo",
    "quit",
    "client|setname",
    "client|getname",
    "client|id",
    "get",
    "set",
    "setex",
    "del",
    "exists",
    "expire",
    "pexpire",
    "ttl",
    "pttl",
    "incr",
    "incrby",
    "decr",
    "type",
    "hget",
    "hgetall",
    "hset",
    "hmset",
    "hsetnx",
    "hdel",
    "hexists",
    "hincrby",
    "hlen",
    "hmget",
    "hkeys",
    "hvals",
    "lpush",
    "rpush",
    "lpop",
    "rpop",
    "lrange",
    "llen",
    "lrem",
    "brpop",
    "blpop",
    "lmove",
    "blmove",
    "xadd",
    "xreadgroup",
    "xread",
    "xack",
    "xclaim",
    "xautoclaim",
    "xpending",
    "xlen",
    "xrange",
    "xrevrange",
    "xdel",
    "xtrim",
    "xgroup|create",
    "xinfo|stream",
    "xinfo|groups",
    "xinfo|consumers",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    // `replicaAcks`: the handler loop's check that replicas have a reply.
    "wait",
    // The handler loop's reply and its trim of acked requests are scripts (each command in
    // them is checked against these rules all the same).
    "eval",
    "evalsha",
    "script|load",
    "publish",
];

/// The ACL user of a worker type.
pub fn user(worker_type: &str) -> String {
    format!("denorun-{worker_type}")
}

/// `ACL SETUSER <user> ...` rules for a type: its keys, the shared reply and trace keys, and
/// [`COMMANDS`]. `reset` first, so that re-running replaces what was there.
pub fn rules(keys: &Keys, password: &str) -> Vec<String> {
    let mut rules = vec![
        "reset".to_string(),
        "on".to_string(),
        format!(">{password}"),
        format!("~{}", keys.pattern()),
        "~res:*".to_string(),
        "~req:*".to_string(),
        "resetchannels".to_string(),
        "-@all".to_string(),
    ];
    rules.extend(COMMANDS.iter().map(|c| format!("+{c}")));
    rules
}

/// Creates (or replaces) the type's user with a new random password, and seals the password
/// into the type hash (`aclUser`, `aclIv`, `aclPassword`) with `key`.
pub async fn create(conn: &mut Conn, keys: &Keys, key: &[u8]) -> anyhow::Result<String> {
    let password = Zeroizing::new(hex::encode(rand::random::<[u8; 24]>()));
    let user = user(keys.worker_type());
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg(rules(keys, &password))
        .query_async(conn)
        .await
        .with_context(|| format!("ACL SETUSER {user}: does the Redis URL's user have the ACL permission?"))?;
    let iv: [u8; 16] = rand::random();
    let sealed = cbc_pkcs7(true, key, &iv, password.as_bytes())?;
    let fields = [
        ("aclUser", user.clone()),
        ("aclIv", hex::encode(iv)),
        ("aclPassword", base64::engine::general_purpose::STANDARD.encode(sealed)),
    ];
    let () = conn.hset_multiple(&keys.hash, &fields).await?;
    Ok(user)
}

/// The type's user and password, if `denorun acl` made one: unsealed with `key`.
pub fn unseal(defaults: &HashMap<String, String>, key: &[u8]) -> anyhow::Result<Option<(String, Zeroizing<String>)>> {
    let (Some(user), Some(iv), Some(sealed)) =
        (defaults.get("aclUser"), defaults.get("aclIv"), defaults.get("aclPassword"))
    else {
        return Ok(None);
    };
    let iv = hex::decode(iv).context("aclIv is not hex; run denorun acl <type> again")?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .context("aclPassword is not base64; run denorun acl <type> again")?;
    let plain = cbc_pkcs7(false, key, &iv, &sealed)?;
    let password = Zeroizing::new(String::from_utf8(plain).map_err(|_| {
        anyhow::anyhow!("aclPassword does not unseal with the key on stdin: is it the key `denorun acl` was given?")
    })?);
    if !password.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("aclPassword does not unseal with the key on stdin: is it the key `denorun acl` was given?");
    }
    Ok(Some((user.clone(), password)))
}

/// The Redis URL a type's workers get (in `REDIS_URL`): as the type's ACL user when
/// `denorun acl` made one, its password unsealed with the key of `secret` (the secret line),
/// else `url` itself. Also returns the user.
pub fn workers_url(
    type_hash: &HashMap<String, String>,
    secret: &str,
    url: &str,
) -> anyhow::Result<(Zeroizing<String>, Option<String>)> {
    if !type_hash.contains_key("aclUser") {
        return Ok((Zeroizing::new(url.to_string()), None));
    }
    let key = crate::secret::key(secret).context("unsealing aclPassword")?;
    match unseal(type_hash, &key)? {
        Some((user, password)) => Ok((with_user(url, &user, &password)?, Some(user))),
        None => anyhow::bail!("aclUser is set without aclIv and aclPassword; run denorun acl <type> again"),
    }
}

/// `url` with its user and password replaced.
pub fn with_user(url: &str, user: &str, password: &str) -> anyhow::Result<Zeroizing<String>> {
    let mut parsed =
        deno_runtime::deno_core::url::Url::parse(url).with_context(|| format!("invalid Redis URL '{url}'"))?;
    parsed.set_username(user).map_err(|_| anyhow::anyhow!("cannot put a user in {url}"))?;
    parsed.set_password(Some(password)).map_err(|_| anyhow::anyhow!("cannot put a password in {url}"))?;
    Ok(Zeroizing::new(parsed.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_only_the_type_and_no_admin_commands() {
        let rules = rules(&Keys::of("greeter").unwrap(), "pw");
        assert_eq!(&rules[..8], ["reset", "on", ">pw", "~greeter:*", "~res:*", "~req:*", "resetchannels", "-@all"]);
        for forbidden in
            ["+config", "+acl", "+module", "+debug", "+flushall", "+flushdb", "+keys", "+scan", "+shutdown", "+@all"]
        {
            assert!(!rules.iter().any(|r| r == forbidden || r.starts_with(&format!("{forbidden}|"))), "{forbidden}");
        }
        assert!(rules.contains(&"+xreadgroup".to_string()) && rules.contains(&"+hset".to_string()));
    }

    #[test]
    fn sealed_passwords_unseal_with_the_same_key_only() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        let sealed = cbc_pkcs7(true, &key, &iv, b"abc123").unwrap();
        let fields: HashMap<String, String> = [
            ("aclUser", "denorun-t".to_string()),
            ("aclIv", hex::encode(iv)),
            ("aclPassword", base64::engine::general_purpose::STANDARD.encode(&sealed)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let (user, password) = unseal(&fields, &key).unwrap().unwrap();
        assert_eq!((user.as_str(), password.as_str()), ("denorun-t", "abc123"));
        assert!(unseal(&fields, &[8u8; 16]).is_err());
        assert!(unseal(&HashMap::new(), &key).unwrap().is_none());
    }

    #[test]
    fn urls_get_the_user() {
        assert_eq!(
            &*with_user("redis://127.0.0.1:6379/2", "denorun-t", "pw").unwrap(),
            "redis://denorun-t:pw@127.0.0.1:6379/2"
        );
        assert_eq!(&*with_user("redis://:old@h:1", "u", "p").unwrap(), "redis://u:p@h:1");
    }
}
