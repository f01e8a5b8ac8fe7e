//! Where PostgreSQL is and how to reach it, as libpq says: a `postgres://` URL or
//! `key=value` string, with the `PG*` variables filling in what it leaves out, and TLS
//! (`sslmode`) through rustls. The password is never part of what is logged.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config};

/// A PostgreSQL to connect to, and how to name it in logs (without its password).
#[derive(Clone)]
pub struct Target {
    config: Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl Target {
    /// Parses `--to`, then takes `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
    /// `PGSSLMODE`, `PGSSLROOTCERT` and `PGCONNECT_TIMEOUT` for what it does not say.
    pub fn parse(to: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Target> {
        // tokio-postgres knows sslmode disable, prefer and require; rustls always verifies the
        // server's certificate, so verify-ca and verify-full are `require` here.
        let mut root_cert = env("PGSSLROOTCERT");
        let mut cleaned =
            to.replace("sslmode=verify-full", "sslmode=require").replace("sslmode=verify-ca", "sslmode=require");
        if let Some((head, tail)) = cleaned.split_once("sslrootcert=") {
            let (path, rest) = tail.split_once(['&', ' ']).unwrap_or((tail, ""));
            root_cert = Some(path.to_string());
            cleaned = format!("{head}{rest}").trim_end_matches(['?', '&', ' ']).to_string();
        }
        let mut config: Config = cleaned.parse().map_err(|e| {
            anyhow::anyhow!(
                "bad PostgreSQL URL ({e}): expected postgres://[user[:password]@]host[:port]/database[?sslmode=...] \
                 or 'host=... dbname=...'"
            )
        })?;
        if config.get_hosts().is_empty() {
            match env("PGHOST") {
                Some(hosts) => hosts.split(',').for_each(|h| {
                    config.host(h);
                }),
                None if std::path::Path::new("/var/run/postgresql").exists() => {
                    config.host_path("/var/run/postgresql");
                }
                None => {
                    config.host("localhost");
                }
            }
        }
        if config.get_ports().is_empty() {
            if let Some(port) = env("PGPORT") {
                config.port(port.parse().map_err(|_| anyhow::anyhow!("PGPORT '{port}' is not a port number"))?);
            }
        }
        if config.get_user().is_none() {
            let user = env("PGUSER").or_else(|| env("USER")).unwrap_or_else(|| "postgres".into());
            config.user(&user);
        }
        if config.get_password().is_none() {
            if let Some(password) = env("PGPASSWORD") {
                config.password(password);
            }
        }
        if config.get_dbname().is_none() {
            let db = env("PGDATABASE").unwrap_or_else(|| config.get_user().unwrap_or_default().to_string());
            config.dbname(&db);
        }
        if !to.contains("sslmode") {
            match env("PGSSLMODE").as_deref() {
                None | Some("prefer") | Some("allow") => config.ssl_mode(SslMode::Prefer),
                Some("disable") => config.ssl_mode(SslMode::Disable),
                Some("require" | "verify-ca" | "verify-full") => config.ssl_mode(SslMode::Require),
                Some(other) => anyhow::bail!("PGSSLMODE '{other}' is not an sslmode libpq knows"),
            };
        }
        if config.get_connect_timeout().is_none() {
            let seconds = env("PGCONNECT_TIMEOUT").and_then(|s| s.parse().ok()).unwrap_or(10);
            config.connect_timeout(Duration::from_secs(seconds));
        }
        config.application_name("denorun sync");
        // A server whose host is gone: keepalive probes on an idle connection, and
        // TCP_USER_TIMEOUT on one with data unacknowledged, close it within seconds instead of
        // the kernel's hours. (A server that is stopped but whose kernel still answers is
        // noticed by the writer's statement time-out.)
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10));
        Ok(Target { config, tls: tls(root_cert.as_deref())? })
    }

    /// `user@host:port/database`, for logs and errors.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = (self.config.get_hosts().iter().enumerate())
            .map(|(i, host)| {
                let port = self.config.get_ports().get(i).or(self.config.get_ports().first()).copied().unwrap_or(5432);
                match host {
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(path) => format!("{}:{port}", path.display()),
                }
            })
            .collect();
        format!(
            "{}@{}/{}",
            self.config.get_user().unwrap_or_default(),
            hosts.join(","),
            self.config.get_dbname().unwrap_or_default()
        )
    }

    /// Connects; the connection's I/O runs on a task of its own until the client is dropped.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("PostgreSQL connection ended: {e}");
            }
        });
        Ok(client)
    }
}

/// rustls with the web's root certificates, and the one `sslrootcert` names when given.
fn tls(root_cert: Option<&str>) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = root_cert {
        let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read sslrootcert {path}: {e}"))?;
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.map_err(|e| anyhow::anyhow!("sslrootcert {path}: {e:?}"))?)?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn urls_and_variables() {
        let t = Target::parse("postgres://app:secret@db.example:6543/events?sslmode=disable", env(&[])).unwrap();
        assert_eq!(t.describe(), "app@db.example:6543/events");
        assert_eq!(t.config.get_password(), Some(&b"secret"[..]));
        let t = Target::parse(
            "postgres:///",
            env(&[("PGHOST", "h1"), ("PGPORT", "5433"), ("PGUSER", "u"), ("PGPASSWORD", "p"), ("PGDATABASE", "d")]),
        )
        .unwrap();
        assert_eq!(t.describe(), "u@h1:5433/d");
        assert_eq!(t.config.get_password(), Some(&b"p"[..]));
        assert_eq!(t.config.get_ssl_mode(), SslMode::Prefer);
        let t = Target::parse("host=h user=u sslmode=verify-full", env(&[])).unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.describe(), "u@h:5432/u");
    }

    #[test]
    fn bad_ones_say_what_is_expected() {
        let e = Target::parse("postgres://h:notaport/db", env(&[])).err().unwrap().to_string();
        assert!(e.contains("expected postgres://"), "{e}");
        let e = Target::parse("postgres://h/db", env(&[("PGSSLMODE", "maybe")])).err().unwrap().to_string();
        assert!(e.contains("PGSSLMODE 'maybe'"), "{e}");
    }
}
