//! The modules built into the binary, and the specifier map that serves them.
//!
//! Workers written in 2021 import `https://deno.land/x/redis/mod.ts`,
//! `https://deno.land/std@0.106.0/log/mod.ts` and the like. Each such URL, whatever version it
//! names, maps to one canonical URL (`https://deno.land/std/log/mod.ts`), whose source is the
//! file at the same path under `js/`, transpiled at build time. Built-in modules are never
//! fetched.

use deno_runtime::deno_core::ModuleSpecifier;

/// A built-in module: the URL it is served at, its TypeScript (what error reports quote) and the
/// JavaScript `build.rs` made of it (what runs).
pub struct Builtin {
    pub url: &'static str,
    pub typescript: &'static str,
    pub javascript: &'static str,
}

mod generated {
    use super::Builtin;
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

/// Every built-in module: each `js/<host>/<path>` is `https://<host>/<path>`, and each
/// `js/denorun/<name>.ts` is `denorun:<name>` (`build.rs` lists them).
static MODULES: &[Builtin] = generated::BUILTINS;

/// The built-in module at a canonical URL.
pub fn find(specifier: &ModuleSpecifier) -> Option<&'static Builtin> {
    MODULES.iter().find(|builtin| builtin.url == specifier.as_str())
}

/// The TypeScript source of a built-in module, by canonical URL.
pub fn source(specifier: &ModuleSpecifier) -> Option<&'static str> {
    find(specifier).map(|builtin| builtin.typescript)
}

/// Maps a URL to the canonical URL of the built-in module that serves it, if there is one.
///
/// `https://deno.land/x/<name>@<version>/<path>` and `https://deno.land/std@<version>/<path>`
/// lose their version; the GitHub and denopkg addresses of deno-redis become
/// `https://deno.land/x/redis/<path>`; `jsr:@std/assert` (any version, any subpath) is
/// `https://jsr.io/@std/assert/mod.ts`.
pub fn canonical(url: &ModuleSpecifier) -> Option<ModuleSpecifier> {
    let unversioned = |s: &str| s.split('@').next().unwrap_or(s).to_string();
    let known = |candidate: String| {
        MODULES.iter().any(|builtin| builtin.url == candidate).then(|| ModuleSpecifier::parse(&candidate).ok())?
    };
    if url.scheme() == "denorun" {
        return known(url.to_string());
    }
    if !matches!(url.scheme(), "jsr" | "https" | "http") {
        return None;
    }
    let segments: Vec<&str> = url.path().trim_start_matches('/').split('/').collect();
    if url.scheme() == "jsr" {
        let [scope, name, ..] = segments.as_slice() else { return None };
        return known(format!("https://jsr.io/{scope}/{}/mod.ts", unversioned(name)));
    }
    let (base, rest) = match (url.host_str()?, segments.as_slice()) {
        ("jsr.io", [scope, name, ..]) => return known(format!("https://jsr.io/{scope}/{name}/mod.ts")),
        ("deno.land", ["x", module, rest @ ..]) => (format!("x/{}", unversioned(module)), rest),
        ("deno.land", [std, rest @ ..]) if unversioned(std) == "std" => ("std".to_string(), rest),
        ("raw.githubusercontent.com", ["denodrivers", "redis", _tag, rest @ ..]) => ("x/redis".to_string(), rest),
        ("denopkg.com", [_, repo, rest @ ..]) if unversioned(repo) == "deno-redis" => ("x/redis".to_string(), rest),
        _ => return None,
    };
    known(format!("https://deno.land/{base}/{}", rest.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(url: &str) -> Option<String> {
        canonical(&ModuleSpecifier::parse(url).unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn versions_are_ignored() {
        let hex = Some("https://deno.land/std/encoding/hex.ts".to_string());
        assert_eq!(canon("https://deno.land/std/encoding/hex.ts"), hex);
        assert_eq!(canon("https://deno.land/std@0.109.0/encoding/hex.ts"), hex);
        assert_eq!(canon("https://deno.land/std@0.109.0/encoding/nothing.ts"), None);
        assert_eq!(canon("https://example.com/std/encoding/hex.ts"), None);
        let redis = Some("https://deno.land/x/redis/mod.ts".to_string());
        assert_eq!(canon("https://deno.land/x/redis@v0.24.0/mod.ts"), redis);
        assert_eq!(canon("https://raw.githubusercontent.com/denodrivers/redis/v0.22.2/mod.ts"), redis);
        assert_eq!(canon("https://denopkg.com/keroxp/deno-redis/mod.ts"), redis);
        assert_eq!(canon("https://denopkg.com/keroxp/deno-redis@v0.9.0/mod.ts"), redis);
        assert_eq!(
            canon("https://deno.land/x/crypto@v0.10.0/block-modes.ts").as_deref(),
            Some("https://deno.land/x/crypto/block-modes.ts")
        );
    }

    #[test]
    fn jsr_std_assert_is_built_in() {
        let assert = Some("https://jsr.io/@std/assert/mod.ts".to_string());
        for jsr in ["jsr:@std/assert", "jsr:@std/assert@^1.0.0", "jsr:@std/assert@1.0.13/equals"] {
            assert_eq!(canon(jsr), assert, "{jsr}");
        }
        assert_eq!(canon("jsr:@std/path"), None);
    }

    #[test]
    fn every_builtin_is_its_own_canonical_url() {
        for builtin in MODULES {
            assert_eq!(canon(builtin.url).as_deref(), Some(builtin.url));
        }
    }
}
