//! The modules built into the binary, and the specifier map that serves them.
//!
//! Workers written in 2021 import `https://deno.land/x/redis/mod.ts`,
//! `https://deno.land/std@0.106.0/log/mod.ts` and the like. Each such URL, whatever version it
//! names, maps to one canonical URL (`https://deno.land/std/log/mod.ts`), whose source is the
//! file at the same path under `js/`. Built-in modules are never fetched.

use deno_runtime::deno_core::ModuleSpecifier;

macro_rules! builtin {
    ($path:literal) => {
        (concat!("https://", $path), include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/js/", $path)))
    };
}

/// Canonical URL and TypeScript source of every built-in module.
static MODULES: &[(&str, &str)] = &[
    builtin!("deno.land/std/encoding/base64.ts"),
    builtin!("deno.land/std/encoding/hex.ts"),
    builtin!("deno.land/std/fmt/colors.ts"),
    builtin!("deno.land/std/log/handlers.ts"),
    builtin!("deno.land/std/log/levels.ts"),
    builtin!("deno.land/std/log/logger.ts"),
    builtin!("deno.land/std/log/mod.ts"),
    builtin!("deno.land/std/testing/asserts.ts"),
    builtin!("deno.land/x/crypto/aes.ts"),
    builtin!("deno.land/x/crypto/block-modes.ts"),
    builtin!("deno.land/x/redis/command.ts"),
    builtin!("deno.land/x/redis/mod.ts"),
    builtin!("deno.land/x/redis/protocol/mod.ts"),
    builtin!("deno.land/x/redis/redis.ts"),
    builtin!("deno.land/x/redis/stream.ts"),
    builtin!("jsr.io/@std/assert/mod.ts"),
    ("denorun:testing", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/js/denorun/testing.ts"))),
];

/// The source of a built-in module, by canonical URL.
pub fn source(specifier: &ModuleSpecifier) -> Option<&'static str> {
    MODULES.iter().find(|(url, _)| *url == specifier.as_str()).map(|(_, src)| *src)
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
        MODULES.iter().any(|(known, _)| *known == candidate).then(|| ModuleSpecifier::parse(&candidate).ok())?
    };
    let segments: Vec<&str> = url.path().trim_start_matches('/').split('/').collect();
    if url.scheme() == "denorun" {
        return known(url.to_string());
    }
    if url.scheme() == "jsr" {
        let [scope, name, ..] = segments.as_slice() else { return None };
        return known(format!("https://jsr.io/{scope}/{}/mod.ts", unversioned(name)));
    }
    if url.scheme() != "https" && url.scheme() != "http" {
        return None;
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
        for (url, _) in MODULES {
            assert_eq!(canon(url).as_deref(), Some(*url));
        }
    }
}
