//! The operator's ceiling on what a worker hash may grant (`--max-permissions`). A hash's
//! `denoOptions` may ask for anything within it; anything beyond stops the worker before it
//! starts, naming the flag and the ceiling. Without `--max-permissions` the ceiling is
//! everything except `-A`, `--allow-run`, `--allow-ffi` and an unscoped `--allow-write`, which
//! only denorun's own command line can grant (`--max-permissions=-A` lifts it).

use std::fmt;

use crate::flags::{self, DenoFlags};

/// How much of one kind of permission the ceiling allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// None of it.
    Nothing,
    /// Only the listed values (paths, hosts, names), or what they contain.
    Only(Vec<String>),
    /// Any list of values, but not the whole kind.
    AnyScoped,
    /// All of it.
    All,
}

/// The most a hash may grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceiling {
    /// As the operator wrote it, for messages.
    spelled: String,
    allow_all: bool,
    kinds: Vec<(&'static str, Scope)>,
}

/// The permission kinds, with their flag names.
const KINDS: [&str; 8] = ["read", "write", "net", "env", "sys", "run", "ffi", "import"];

fn requested<'a>(flags: &'a DenoFlags, kind: &str) -> &'a Option<Vec<String>> {
    let p = &flags.permissions;
    match kind {
        "read" => &p.allow_read,
        "write" => &p.allow_write,
        "net" => &p.allow_net,
        "env" => &p.allow_env,
        "sys" => &p.allow_sys,
        "run" => &p.allow_run,
        "ffi" => &p.allow_ffi,
        _ => &p.allow_import,
    }
}

/// A request beyond the ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beyond {
    pub flag: String,
    pub ceiling: String,
}

impl fmt::Display for Beyond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "denoOptions asks for {} beyond the operator's ceiling ({}); only denorun's command line can \
             grant more, with --max-permissions",
            self.flag, self.ceiling
        )
    }
}

impl Ceiling {
    /// The default: all but `-A`, `--allow-run`, `--allow-ffi` and an unscoped `--allow-write`.
    pub fn default_ceiling() -> Ceiling {
        let kinds = KINDS
            .iter()
            .map(|&k| {
                let scope = match k {
                    "run" | "ffi" => Scope::Nothing,
                    "write" => Scope::AnyScoped,
                    _ => Scope::All,
                };
                (k, scope)
            })
            .collect();
        Ceiling {
            spelled: "the default: no -A, --allow-run, --allow-ffi or unscoped --allow-write".into(),
            allow_all: false,
            kinds,
        }
    }

    /// `--max-permissions '<Deno flags>'`.
    pub fn parse(spelled: &str) -> Result<Ceiling, flags::FlagError> {
        let flags = flags::parse_options(spelled)?;
        let kinds = KINDS
            .iter()
            .map(|&k| {
                let scope = match requested(&flags, k) {
                    _ if flags.allow_all => Scope::All,
                    None => Scope::Nothing,
                    Some(list) if list.is_empty() => Scope::All,
                    Some(list) => Scope::Only(list.clone()),
                };
                (k, scope)
            })
            .collect();
        Ok(Ceiling { spelled: format!("--max-permissions '{spelled}'"), allow_all: flags.allow_all, kinds })
    }

    /// Checks a hash's flags against the ceiling; the first request beyond it is the error.
    pub fn check(&self, flags: &DenoFlags) -> Result<(), Beyond> {
        let beyond = |flag: String| Err(Beyond { flag, ceiling: self.spelled.clone() });
        if flags.allow_all && !self.allow_all {
            return beyond("-A (--allow-all)".into());
        }
        for (kind, scope) in &self.kinds {
            let asked = if flags.allow_all { &Some(vec![]) } else { requested(flags, kind) };
            let Some(values) = asked else { continue };
            if values.is_empty() {
                if *scope != Scope::All {
                    return beyond(format!("--allow-{kind}"));
                }
                continue;
            }
            for value in values {
                let ok = match scope {
                    Scope::Nothing => false,
                    Scope::All | Scope::AnyScoped => true,
                    Scope::Only(allowed) => allowed.iter().any(|a| covers(kind, a, value)),
                };
                if !ok {
                    return beyond(format!("--allow-{kind}={value}"));
                }
            }
        }
        Ok(())
    }
}

/// Whether the ceiling's value `allowed` covers the requested `value`: a path covers itself
/// and what is under it; a host without a port covers the host on any port; other kinds
/// match exactly.
fn covers(kind: &str, allowed: &str, value: &str) -> bool {
    match kind {
        "read" | "write" | "run" | "ffi" if allowed.starts_with('/') => {
            let base = allowed.trim_end_matches('/');
            value == base || value.starts_with(&format!("{base}/"))
        }
        "net" | "import" => value == allowed || (!allowed.contains(':') && value.split(':').next() == Some(allowed)),
        _ => value == allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asks(options: &str) -> DenoFlags {
        flags::parse_options(options).unwrap()
    }

    #[test]
    fn the_default_keeps_the_host_for_the_command_line() {
        let c = Ceiling::default_ceiling();
        for ok in [
            "",
            "--allow-net",
            "--allow-read",
            "--allow-env=REDIS_URL",
            "--allow-write=/tmp/x",
            "--allow-import=example.com",
        ] {
            assert_eq!(c.check(&asks(ok)), Ok(()), "{ok}");
        }
        for (bad, flag) in [
            ("-A", "-A (--allow-all)"),
            ("--allow-all", "-A (--allow-all)"),
            ("--allow-run", "--allow-run"),
            ("--allow-run=ls", "--allow-run=ls"),
            ("--allow-ffi", "--allow-ffi"),
            ("--allow-write", "--allow-write"),
        ] {
            assert_eq!(c.check(&asks(bad)).unwrap_err().flag, flag, "{bad}");
        }
    }

    #[test]
    fn an_operator_ceiling_bounds_each_kind() {
        let c = Ceiling::parse("--allow-net=api.telegram.org --allow-env=REDIS_URL --allow-read=/srv/data").unwrap();
        for ok in ["--allow-net=api.telegram.org:443", "--allow-env=REDIS_URL", "--allow-read=/srv/data/x.json", ""] {
            assert_eq!(c.check(&asks(ok)), Ok(()), "{ok}");
        }
        for (bad, flag) in [
            ("--allow-net", "--allow-net"),
            ("--allow-net=example.com", "--allow-net=example.com"),
            ("--allow-env=HOME", "--allow-env=HOME"),
            ("--allow-read=/srv/database", "--allow-read=/srv/database"),
            ("--allow-sys", "--allow-sys"),
            ("--allow-write=/srv/data", "--allow-write=/srv/data"),
        ] {
            let e = c.check(&asks(bad)).unwrap_err();
            assert_eq!(e.flag, flag, "{bad}");
            assert!(e.to_string().contains("--max-permissions '--allow-net=api.telegram.org"), "{e}");
        }
    }

    #[test]
    fn dash_a_as_the_ceiling_is_the_2021_behaviour() {
        let c = Ceiling::parse("-A").unwrap();
        for ok in ["-A", "--allow-run", "--allow-ffi", "--allow-write", "--allow-net=x"] {
            assert_eq!(c.check(&asks(ok)), Ok(()), "{ok}");
        }
    }
}
