//! Who may use the console, as pure policy: a request carries the access token (in the
//! `denorun_console_<port>` cookie, or once in `?token=`, which is exchanged for that cookie), and a
//! change (a POST) must come from the console's own pages (`Sec-Fetch-Site: same-origin`, or
//! an `Origin` that is the console's own host). Nothing else gets past.

/// The console's credential: its token, and the name of the cookie that carries it,
/// `denorun_console_<port>`. Browsers keep cookies per host, not per port, so two consoles
/// on one host each keep their own (and any server on that host name is sent both).
pub struct Credential {
    cookie: String,
    token: String,
}

impl Credential {
    pub fn new(port: u16, token: String) -> Credential {
        Credential { cookie: format!("denorun_console_{port}"), token }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The `Set-Cookie` value: only for this site, never to scripts.
    pub fn set_cookie(&self) -> String {
        format!("{}={}; HttpOnly; SameSite=Strict; Path=/", self.cookie, self.token)
    }

    /// Whether a `Cookie` header carries the token.
    fn in_cookie(&self, header: Option<&str>) -> bool {
        let given =
            header.and_then(|h| h.split(';').find_map(|c| c.trim().strip_prefix(&self.cookie)?.strip_prefix('=')));
        given.is_some_and(|given| same(given, &self.token))
    }
}

/// What a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Go on.
    Allowed,
    /// The token was in the URL: set the cookie and send the browser to the same page
    /// without it (so that it leaves no trace in history), the rest of its query kept.
    SetCookie { location: String },
    /// No token, or a wrong one: 401.
    Unauthorized,
    /// A change from another site, or with the console read-only: 403, with the reason.
    Forbidden(&'static str),
}

/// What the policy reads of a request.
#[derive(Debug, Default, Clone)]
pub struct Asked<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
}

/// A path for a `Location` that can only lead to this console: one that would leave it (`//host`,
/// `/\host`, anything not starting with `/`) becomes `/`.
pub fn on_console(path: &str) -> &str {
    let leaves = !path.starts_with('/') || path.starts_with("//") || path.starts_with("/\\");
    if leaves || path.chars().any(|c| c.is_control()) {
        "/"
    } else {
        path
    }
}

/// Decides a request against the console's credential (and whether it is `read_only`).
pub fn decide(asked: &Asked, credential: &Credential, read_only: bool) -> Access {
    if let Some(given) = query_token(asked.query) {
        if !same(given, &credential.token) {
            return Access::Unauthorized;
        }
        if asked.method == "GET" {
            let rest: Vec<&str> =
                asked.query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.starts_with("token=")).collect();
            let path = on_console(asked.path);
            let location = if rest.is_empty() { path.to_string() } else { format!("{path}?{}", rest.join("&")) };
            return Access::SetCookie { location };
        }
    } else if !credential.in_cookie(asked.cookie) {
        return Access::Unauthorized;
    }
    if asked.method == "GET" || asked.method == "HEAD" {
        return Access::Allowed;
    }
    if read_only {
        return Access::Forbidden("the console is read-only (--read-only)");
    }
    if !same_origin(asked) {
        return Access::Forbidden("a change must come from the console's own pages");
    }
    Access::Allowed
}

/// A change comes from the console's own pages: the browser says so (`Sec-Fetch-Site`), or
/// the `Origin` is the console's own host. A request with neither is refused.
fn same_origin(asked: &Asked) -> bool {
    match (asked.fetch_site, asked.origin, asked.host) {
        (Some(site), ..) => site == "same-origin",
        (None, Some(origin), Some(host)) => {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
        }
        _ => false,
    }
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("token="))
}

/// Compares without stopping at the first difference, so that the time taken does not tell
/// how much of a guess was right.
fn same(given: &str, token: &str) -> bool {
    given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any request line and headers get a decision, never a panic, and a redirect never
        /// leaves the console.
        #[test]
        fn any_request_is_decided(
            method in "[A-Z]{0,7}", path in "\\PC*", query in "\\PC*", cookie in "\\PC*", host in "\\PC*",
        ) {
            let token = Some(format!("token={}&{query}", credential().token));
            for query in [Some(query.as_str()), token.as_deref(), None] {
                let asked = Asked {
                    method: &method,
                    path: &path,
                    query,
                    cookie: Some(&cookie),
                    host: Some(&host),
                    origin: Some(&host),
                    fetch_site: Some(&cookie),
                };
                if let Access::SetCookie { location } = decide(&asked, &credential(), false) {
                    proptest::prop_assert!(location.starts_with('/') && !location.starts_with("//"), "{location}");
                }
            }
        }
    }

    #[test]
    fn a_redirect_stays_on_the_console() {
        assert_eq!(on_console("/dead/greeter"), "/dead/greeter");
        for leaving in ["//evil.example/x", "/\\evil.example", "evil", "", "/a\r\nSet-Cookie: x"] {
            assert_eq!(on_console(leaving), "/", "{leaving:?}");
        }
    }

    const TOKEN: &str = "0123456789abcdef";

    fn credential() -> Credential {
        Credential::new(9470, TOKEN.into())
    }

    fn get<'a>(path: &'a str) -> Asked<'a> {
        Asked { method: "GET", path, host: Some("127.0.0.1:9470"), ..Default::default() }
    }

    #[test]
    fn a_token_in_the_url_becomes_a_cookie() {
        let asked = Asked { query: Some("token=0123456789abcdef"), ..get("/dead/greeter") };
        assert_eq!(decide(&asked, &credential(), false), Access::SetCookie { location: "/dead/greeter".into() });
        // The rest of the query stays.
        let found = Asked { query: Some("ref=r1&token=0123456789abcdef&x=1"), ..get("/find") };
        assert_eq!(decide(&found, &credential(), false), Access::SetCookie { location: "/find?ref=r1&x=1".into() });
        let wrong = Asked { query: Some("token=0123456789abcdeX"), ..get("/") };
        assert_eq!(decide(&wrong, &credential(), false), Access::Unauthorized);
        assert_eq!(
            credential().set_cookie(),
            "denorun_console_9470=0123456789abcdef; HttpOnly; SameSite=Strict; Path=/"
        );
    }

    #[test]
    fn without_the_cookie_nothing_is_shown() {
        assert_eq!(decide(&get("/"), &credential(), false), Access::Unauthorized);
        let wrong = Asked { cookie: Some("denorun_console_9470=nope"), ..get("/") };
        assert_eq!(decide(&wrong, &credential(), false), Access::Unauthorized);
        // Another console's cookie on this host is not this one's.
        let other = Asked { cookie: Some("denorun_console_9471=0123456789abcdef"), ..get("/") };
        assert_eq!(decide(&other, &credential(), false), Access::Unauthorized);
        let right = Asked { cookie: Some("a=b; denorun_console_9470=0123456789abcdef"), ..get("/") };
        assert_eq!(decide(&right, &credential(), false), Access::Allowed);
    }

    #[test]
    fn changes_come_only_from_the_consoles_pages() {
        let post = |fetch_site, origin| Asked {
            method: "POST",
            cookie: Some("denorun_console_9470=0123456789abcdef"),
            fetch_site,
            origin,
            ..get("/dead/greeter/requeue")
        };
        assert_eq!(decide(&post(Some("same-origin"), None), &credential(), false), Access::Allowed);
        assert_eq!(decide(&post(None, Some("http://127.0.0.1:9470")), &credential(), false), Access::Allowed);
        for (site, origin) in
            [(Some("cross-site"), None), (Some("same-site"), None), (None, Some("http://evil.example"))]
        {
            assert!(
                matches!(decide(&post(site, origin), &credential(), false), Access::Forbidden(_)),
                "{site:?} {origin:?}"
            );
        }
        assert!(matches!(decide(&post(None, None), &credential(), false), Access::Forbidden(_)));
        assert!(
            matches!(decide(&post(Some("same-origin"), None), &credential(), true), Access::Forbidden(m) if m.contains("read-only"))
        );
    }
}
