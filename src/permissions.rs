//! What a worker may do: the permissions a worker gets from its flags, plus network access to
//! its own Redis. A check beyond them goes to the prompter, which asks no one (a worker's stdin
//! carries its secret, not answers): it denies, and writes the audit log.

use std::sync::{Arc, Once};

use deno_runtime::deno_permissions::prompter::set_prompter;
use deno_runtime::deno_permissions::{Permissions, PermissionsContainer};
use deno_runtime::permissions::RuntimePermissionDescriptorParser;
use sys_traits::impls::RealSys;

use crate::flags::DenoFlags;

/// The hosts remote modules may come from without `--allow-import`, as in Deno 2.
pub const DEFAULT_IMPORT_HOSTS: [&str; 6] = [
    "deno.land:443",
    "jsr.io:443",
    "esm.sh:443",
    "cdn.jsdelivr.net:443",
    "raw.githubusercontent.com:443",
    "gist.githubusercontent.com:443",
];

/// Builds the permissions for one worker. `redis_addr` (`host:port`) is added to the net
/// allow-list, so a worker can always reach its own Redis unless a `--deny-net` says otherwise.
pub fn build(flags: &DenoFlags, redis_addr: Option<&str>) -> anyhow::Result<PermissionsContainer> {
    static PROMPTER: Once = Once::new();
    PROMPTER.call_once(|| set_prompter(Box::new(crate::audit::Prompter)));

    let parser = Arc::new(RuntimePermissionDescriptorParser::new(RealSys));
    if flags.allow_all {
        return Ok(PermissionsContainer::allow_all(parser));
    }
    let mut options = flags.permissions.clone();
    options.prompt = true;
    // Imports: Deno's default hosts, extended by --allow-import=... (a bare --allow-import
    // allows every host).
    match &mut options.allow_import {
        Some(list) if list.is_empty() => {}
        Some(list) => list.extend(DEFAULT_IMPORT_HOSTS.iter().map(|h| h.to_string())),
        None => options.allow_import = Some(DEFAULT_IMPORT_HOSTS.iter().map(|h| h.to_string()).collect()),
    }
    if let Some(addr) = redis_addr {
        match &mut options.allow_net {
            Some(list) if list.is_empty() => {} // --allow-net: everything already
            Some(list) => list.push(addr.to_string()),
            None => options.allow_net = Some(vec![addr.to_string()]),
        }
    }
    let permissions = Permissions::from_options(parser.as_ref(), &options)
        .map_err(|e| anyhow::anyhow!("invalid permission flags: {e}"))?;
    Ok(PermissionsContainer::new(parser, permissions))
}

/// `host:port` as Deno's net permission spells it (`[::1]:6379` for IPv6).
pub fn net_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
