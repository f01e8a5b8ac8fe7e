//! Deno's command-line flags, as written in a worker hash's `denoOptions` or before the script
//! of `denorun run`: permissions, the inspector, V8 flags and the random seed.
//!
//! The syntax and meaning are the Deno CLI's (`--allow-net=a,b`, `-A`, `--deny-read=/x`,
//! `--inspect=127.0.0.1:9229`, ...). Values are attached with `=`, as Deno requires. An unknown
//! or malformed flag is an error that names it, so a typo never silently changes what a worker
//! may do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use deno_runtime::deno_permissions::PermissionsOptions;

/// The default inspector address, as in Deno.
pub const DEFAULT_INSPECT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9229);

/// Everything the flags say about how to run a module.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DenoFlags {
    /// `-A` / `--allow-all`.
    pub allow_all: bool,
    /// The `--allow-*` and `--deny-*` lists (`Some(vec![])` grants or denies all of a kind).
    pub permissions: PermissionsOptions,
    pub inspect: Option<Inspect>,
    /// From `--v8-flags=a,b`, in order.
    pub v8_flags: Vec<String>,
    /// `--seed=N`: seeds `Math.random` and V8's hash seed.
    pub seed: Option<u64>,
    /// `-r` / `--reload`: fetch remote modules again instead of using the cache.
    pub reload: bool,
    /// `--no-code-cache`: transpile and compile every module, and keep neither (`code_cache.rs`).
    pub no_code_cache: bool,
    /// `--lock[=FILE]` (bare: `deno.lock`): remote modules must match it. It is always frozen.
    pub lock: Option<PathBuf>,
    /// `--config=FILE` / `-c=FILE`: the `deno.json` whose import map resolves the worker's
    /// imports, instead of the one found from the module's directory up.
    pub config: Option<PathBuf>,
}

/// `--inspect`, `--inspect-brk` or `--inspect-wait`, with its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspect {
    pub mode: InspectMode,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectMode {
    /// Serve the inspector; run at once.
    Run,
    /// Wait for a debugger, then pause on the first statement.
    Break,
    /// Wait for a debugger before running.
    Wait,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("cannot split Deno options {0:?}: {1}")]
    Quoting(String, String),
    #[error("unknown Deno flag '{0}'; see `denorun run --help` for the flags denorun accepts")]
    Unknown(String),
    #[error("Deno flag '{0}' takes no value")]
    NoValue(String),
    #[error("Deno flag '{0}' needs a value, as in {0}=<value>")]
    NeedsValue(String),
    #[error("invalid value for Deno flag '{flag}': {reason}")]
    BadValue { flag: String, reason: String },
    #[error("no script given: denorun run [FLAGS] <SCRIPT> [ARGS]...")]
    NoScript,
}

/// Parses a `denoOptions` string: flags only, split with shell quoting rules.
pub fn parse_options(options: &str) -> Result<DenoFlags, FlagError> {
    let tokens = shell_words::split(options).map_err(|e| FlagError::Quoting(options.to_string(), e.to_string()))?;
    let mut flags = DenoFlags::default();
    for token in &tokens {
        if !token.starts_with('-') {
            return Err(FlagError::Unknown(token.clone()));
        }
        flags.apply(token)?;
    }
    Ok(flags)
}

/// Parses `denorun run` arguments: flags up to the script, then the script's own arguments.
pub fn parse_run_args(argv: &[String]) -> Result<(DenoFlags, String, Vec<String>), FlagError> {
    let mut flags = DenoFlags::default();
    let mut rest = argv.iter();
    for token in rest.by_ref() {
        if token.starts_with('-') && token != "-" {
            flags.apply(token)?;
        } else {
            return Ok((flags, token.clone(), rest.cloned().collect()));
        }
    }
    Err(FlagError::NoScript)
}

/// The permission kinds Deno has, each with its option fields.
#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
    Net,
    Env,
    Sys,
    Run,
    Ffi,
    Import,
}

impl Kind {
    fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "read" => Kind::Read,
            "write" => Kind::Write,
            "net" => Kind::Net,
            "env" => Kind::Env,
            "sys" => Kind::Sys,
            "run" => Kind::Run,
            "ffi" => Kind::Ffi,
            "import" => Kind::Import,
            _ => return None,
        })
    }

    fn from_short(short: &str) -> Option<Kind> {
        Some(match short {
            "R" => Kind::Read,
            "W" => Kind::Write,
            "N" => Kind::Net,
            "E" => Kind::Env,
            "S" => Kind::Sys,
            "I" => Kind::Import,
            _ => return None,
        })
    }

    fn slot(self, o: &mut PermissionsOptions, deny: bool) -> &mut Option<Vec<String>> {
        match (self, deny) {
            (Kind::Read, false) => &mut o.allow_read,
            (Kind::Read, true) => &mut o.deny_read,
            (Kind::Write, false) => &mut o.allow_write,
            (Kind::Write, true) => &mut o.deny_write,
            (Kind::Net, false) => &mut o.allow_net,
            (Kind::Net, true) => &mut o.deny_net,
            (Kind::Env, false) => &mut o.allow_env,
            (Kind::Env, true) => &mut o.deny_env,
            (Kind::Sys, false) => &mut o.allow_sys,
            (Kind::Sys, true) => &mut o.deny_sys,
            (Kind::Run, false) => &mut o.allow_run,
            (Kind::Run, true) => &mut o.deny_run,
            (Kind::Ffi, false) => &mut o.allow_ffi,
            (Kind::Ffi, true) => &mut o.deny_ffi,
            (Kind::Import, false) => &mut o.allow_import,
            (Kind::Import, true) => &mut o.deny_import,
        }
    }
}

impl DenoFlags {
    /// Applies one flag token such as `--allow-read=/tmp` or `-A`.
    pub fn apply(&mut self, token: &str) -> Result<(), FlagError> {
        let (flag, value) = match token.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (token, None),
        };
        let no_value = |this: &mut Self, f: fn(&mut Self)| match value {
            None => {
                f(this);
                Ok(())
            }
            Some(_) => Err(FlagError::NoValue(flag.to_string())),
        };
        let needs_value = || value.ok_or_else(|| FlagError::NeedsValue(flag.to_string()));

        if let Some(name) = flag.strip_prefix("--allow-") {
            if let Some(kind) = Kind::from_name(name) {
                return self.grant(kind, false, flag, value);
            }
            if name == "all" {
                return no_value(self, |this| this.allow_all = true);
            }
            if name == "hrtime" {
                // Deno 1.x had it; Deno 2 has high-resolution time always on.
                log::warn!("--allow-hrtime is ignored: high-resolution time is always available");
                return no_value(self, |_| {});
            }
        }
        if let Some(kind) = flag.strip_prefix("--deny-").and_then(Kind::from_name) {
            return self.grant(kind, true, flag, value);
        }
        if let Some(kind) = flag.strip_prefix('-').and_then(Kind::from_short) {
            return self.grant(kind, false, flag, value);
        }
        let mode = match flag {
            "-A" => return no_value(self, |this| this.allow_all = true),
            "-r" | "--reload" => return no_value(self, |this| this.reload = true),
            "--no-code-cache" => return no_value(self, |this| this.no_code_cache = true),
            // Never prompting is what denorun always does: stdin belongs to the worker.
            "--no-prompt" => return no_value(self, |_| {}),
            "--lock" => {
                self.lock = Some(PathBuf::from(value.unwrap_or("deno.lock")));
                return Ok(());
            }
            // A worker never writes its lockfile (`denorun lock <key>` does), so it is frozen.
            "--frozen" => {
                return match value {
                    None | Some("true") => Ok(()),
                    Some(v) => Err(FlagError::BadValue {
                        flag: flag.to_string(),
                        reason: format!("'{v}': workers never update their lockfile; run `denorun lock <worker-key>`"),
                    }),
                }
            }
            "--config" | "-c" => {
                self.config = Some(PathBuf::from(needs_value()?));
                return Ok(());
            }
            // denorun never installs: packages come from the worker's own node_modules.
            "--node-modules-dir" => {
                return match value {
                    None | Some("manual") => Ok(()),
                    Some(v) => Err(FlagError::BadValue {
                        flag: flag.to_string(),
                        reason: format!(
                            "'{v}': denorun installs nothing; run `npm install` and use the node_modules it made"
                        ),
                    }),
                }
            }
            "--v8-flags" => {
                let list = needs_value()?;
                self.v8_flags.extend(list.split(',').filter(|f| !f.is_empty()).map(String::from));
                return Ok(());
            }
            "--seed" => {
                let seed = needs_value()?;
                self.seed = Some(seed.parse().map_err(|_| FlagError::BadValue {
                    flag: flag.to_string(),
                    reason: format!("'{seed}' is not a non-negative integer"),
                })?);
                return Ok(());
            }
            "--inspect" => InspectMode::Run,
            "--inspect-brk" => InspectMode::Break,
            "--inspect-wait" => InspectMode::Wait,
            f if f == "--unstable" || f.starts_with("--unstable-") => {
                log::warn!("{f} is ignored: denorun offers no unstable APIs");
                return no_value(self, |_| {});
            }
            _ => return Err(FlagError::Unknown(token.to_string())),
        };
        let addr = match value {
            None => DEFAULT_INSPECT_ADDR,
            Some(v) => parse_inspect_addr(v).ok_or_else(|| FlagError::BadValue {
                flag: flag.to_string(),
                reason: format!("'{v}' is not host:port, e.g. 127.0.0.1:9229"),
            })?,
        };
        self.inspect = Some(Inspect { mode, addr });
        Ok(())
    }

    /// Records `--allow-<kind>[=list]` or `--deny-<kind>[=list]`. Repeated flags add up, and a
    /// bare flag grants (or denies) all of that kind, as in Deno.
    fn grant(&mut self, kind: Kind, deny: bool, flag: &str, value: Option<&str>) -> Result<(), FlagError> {
        let slot = kind.slot(&mut self.permissions, deny);
        match value {
            None => *slot = Some(vec![]),
            Some(list) => {
                let items: Vec<String> = list.split(',').filter(|s| !s.is_empty()).map(String::from).collect();
                if items.is_empty() {
                    return Err(FlagError::BadValue {
                        flag: flag.to_string(),
                        reason: "the list after '=' is empty; leave out '=' to allow all".into(),
                    });
                }
                match slot {
                    Some(existing) if existing.is_empty() => {} // already all
                    Some(existing) => existing.extend(items),
                    None => *slot = Some(items),
                }
            }
        }
        Ok(())
    }
}

/// `host:port`, `[::1]:port`, `localhost:port` or a bare port (on 127.0.0.1).
fn parse_inspect_addr(value: &str) -> Option<SocketAddr> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(addr);
    }
    if let Ok(port) = value.parse::<u16>() {
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let (host, port) = value.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (host == "localhost").then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any `denoOptions` gives flags or a typed error, never a panic.
        #[test]
        fn any_deno_options_parse_or_are_refused(options in "\\PC*", raw in proptest::collection::vec(0u8..128, 0..64)) {
            let _ = parse_options(&options);
            let _ = parse_options(&String::from_utf8_lossy(&raw));
            let _ = parse_options(&format!("--allow-net={options} -R --v8-flags={options}"));
        }
    }

    #[test]
    fn lists_accumulate_and_bare_flags_grant_all() {
        let f = parse_options("--allow-read=/a,/b --allow-read=/c -N --deny-env=HOME").unwrap();
        assert_eq!(f.permissions.allow_read, Some(vec!["/a".into(), "/b".into(), "/c".into()]));
        assert_eq!(f.permissions.allow_net, Some(vec![]));
        assert_eq!(f.permissions.deny_env, Some(vec!["HOME".into()]));
        assert_eq!(f.permissions.allow_write, None);
        let f = parse_options("--allow-net --allow-net=example.com").unwrap();
        assert_eq!(f.permissions.allow_net, Some(vec![]));
    }

    #[test]
    fn shell_quoting_and_short_forms() {
        let f = parse_options("-A '--allow-read=/dir with space'").unwrap();
        assert!(f.allow_all);
        assert_eq!(f.permissions.allow_read, Some(vec!["/dir with space".into()]));
        assert!(matches!(parse_options("--allow-read='/x"), Err(FlagError::Quoting(..))));
    }

    #[test]
    fn inspect_forms() {
        let f = parse_options("--inspect").unwrap();
        assert_eq!(f.inspect, Some(Inspect { mode: InspectMode::Run, addr: DEFAULT_INSPECT_ADDR }));
        let f = parse_options("--inspect-brk=127.0.0.1:9333").unwrap();
        assert_eq!(f.inspect.unwrap().mode, InspectMode::Break);
        assert_eq!(f.inspect.unwrap().addr.port(), 9333);
        let f = parse_options("--inspect-wait=[::1]:9000").unwrap();
        assert_eq!(f.inspect.unwrap().addr, "[::1]:9000".parse().unwrap());
        assert!(matches!(parse_options("--inspect=nowhere"), Err(FlagError::BadValue { .. })));
    }

    #[test]
    fn v8_flags_and_seed() {
        let f = parse_options("--v8-flags=--max-old-space-size=64,--jitless --seed=42").unwrap();
        assert_eq!(f.v8_flags, vec!["--max-old-space-size=64", "--jitless"]);
        assert_eq!(f.seed, Some(42));
        assert!(matches!(parse_options("--seed=x"), Err(FlagError::BadValue { .. })));
        assert!(matches!(parse_options("--v8-flags"), Err(FlagError::NeedsValue(_))));
    }

    #[test]
    fn unknown_and_malformed_flags_are_named() {
        assert_eq!(parse_options("--allow-everything"), Err(FlagError::Unknown("--allow-everything".into())));
        assert_eq!(parse_options("--allow-all=yes"), Err(FlagError::NoValue("--allow-all".into())));
        assert_eq!(parse_options("worker.ts"), Err(FlagError::Unknown("worker.ts".into())));
        assert!(matches!(parse_options("--allow-read="), Err(FlagError::BadValue { .. })));
        let err = parse_options("--alow-net").unwrap_err().to_string();
        assert!(err.contains("--alow-net"), "{err}");
    }

    #[test]
    fn a_lock_is_always_frozen() {
        assert_eq!(parse_options("--lock").unwrap().lock, Some(PathBuf::from("deno.lock")));
        let f = parse_options("--lock=/srv/w/deno.lock --frozen").unwrap();
        assert_eq!(f.lock, Some(PathBuf::from("/srv/w/deno.lock")));
        assert!(parse_options("--frozen=true").is_ok());
        assert!(matches!(parse_options("--frozen=false"), Err(FlagError::BadValue { .. })));
    }

    #[test]
    fn a_config_is_named_and_node_modules_are_always_the_users_own() {
        assert_eq!(parse_options("--config=deno.jsonc").unwrap().config, Some(PathBuf::from("deno.jsonc")));
        assert_eq!(parse_options("-c=/srv/w/deno.json").unwrap().config, Some(PathBuf::from("/srv/w/deno.json")));
        assert_eq!(parse_options("--config"), Err(FlagError::NeedsValue("--config".into())));
        assert!(parse_options("--node-modules-dir").is_ok());
        assert!(parse_options("--node-modules-dir=manual").is_ok());
        let auto = parse_options("--node-modules-dir=auto").unwrap_err().to_string();
        assert!(auto.contains("npm install"), "{auto}");
    }

    #[test]
    fn run_args_split_at_the_script() {
        let argv: Vec<String> = ["-R", "main.ts", "--allow-net", "x"].map(String::from).to_vec();
        let (f, script, args) = parse_run_args(&argv).unwrap();
        assert_eq!(f.permissions.allow_read, Some(vec![]));
        assert_eq!(f.permissions.allow_net, None);
        assert_eq!(script, "main.ts");
        assert_eq!(args, vec!["--allow-net", "x"]);
        assert_eq!(parse_run_args(&["-A".to_string()]), Err(FlagError::NoScript));
    }
}
