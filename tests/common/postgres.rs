//! A real PostgreSQL for a test: `initdb` in a temporary directory, `postgres` on a free
//! loopback port (as the `postgres` user when the tests run as root, since PostgreSQL refuses
//! root), password authentication over TCP, stopped with `pg_ctl stop -m immediate` as a
//! crash would.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, temp_dir, wait_for};

pub const USER: &str = "denorun";
pub const PASSWORD: &str = "s3cret-pw";

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Where Debian's `postgresql` package puts the server's programs.
fn bin(program: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL must be installed (apt-get install postgresql; .ci/setup.sh does)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(program)))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("no {program} under /usr/lib/postgresql/*/bin"))
}

/// Runs as the `postgres` user when this process is root.
fn as_owner(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = postgres_ids();
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn postgres_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no 'postgres' user: install Debian's postgresql package");
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = temp_dir();
        if unsafe { libc::geteuid() } == 0 {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let out = as_owner(Command::new(bin("initdb")).args(["-D", data.to_str().unwrap(), "-U", USER]))
            .args(["--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile", pwfile.to_str().unwrap()])
            .args(["--encoding=UTF8", "--locale=C.UTF-8"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Postgres { port: free_port(), dir, child: None };
        pg.restart();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_string()
    }

    /// `postgres://denorun:<password>@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    /// The URL without the password (for PGPASSWORD).
    pub fn url_without_password(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on its port (again), and waits until it answers.
    pub fn restart(&mut self) {
        let socket_dir = self.dir.path().to_str().unwrap().to_string();
        let mut cmd = Command::new(bin("postgres"));
        as_owner(&mut cmd)
            .args(["-D", &self.data(), "-p", &self.port.to_string(), "-k", &socket_dir])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=40", "-c", "shared_buffers=64MB"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        super::dies_with_this_thread(&mut cmd);
        self.child = Some(cmd.spawn().unwrap());
        wait_for(&format!("PostgreSQL answers on port {}", self.port), Duration::from_secs(30), || {
            self.try_client().map(|_| ())
        });
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, no checkpoint, as in
    /// a crash; the next start recovers from the WAL.
    pub fn stop_immediate(&mut self) {
        let out = as_owner(Command::new(bin("pg_ctl")).args(["stop", "-D", &self.data(), "-m", "immediate"]))
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        if let Some(mut child) = self.child.take() {
            child.wait().unwrap();
        }
    }

    /// Sends `signal` to the postmaster and every backend it has forked (SIGSTOP: the whole
    /// server stops answering, its sockets open, as a paused VM would).
    pub fn signal_all(&self, signal: i32) {
        let postmaster = self.child.as_ref().expect("PostgreSQL runs").id();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: the fields after the last ')'.
            let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if parent == Some(postmaster.to_string().as_str()) {
                pids.push(pid);
            }
        }
        for pid in pids {
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    fn try_client(&self) -> Option<postgres::Client> {
        postgres::Client::connect(&self.url(), postgres::NoTls).ok()
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }

    /// One number from a query, e.g. `SELECT count(*) FROM t`.
    pub fn count(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: the immediate shutdown, children included.
            unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
            let _ = child.wait();
        }
    }
}
