//! Headless Chromium (Debian's `chromium`, which `.ci/setup.sh` installs) driven over the
//! DevTools protocol: open a page, read it with JavaScript, click, wait for the next page,
//! take a screenshot. Each browser has its own empty profile, so it starts with no cookies.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::cdp::Cdp;
use super::{dies_with_this_thread, temp_dir, wait_for, Killed};

pub struct Browser {
    cdp: Cdp,
    _chromium: Killed,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium headless on a blank page, without the background traffic that a
    /// closed network refuses.
    pub fn start() -> Browser {
        let profile = temp_dir();
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,800",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        dies_with_this_thread(&mut cmd);
        let chromium = Killed::new(cmd.spawn().expect("chromium must be installed (apt-get install chromium)"));
        // Chromium writes the port it chose, then the browser's path, into the profile.
        let file = profile.path().join("DevToolsActivePort");
        let port: u16 = wait_for("Chromium's DevTools port", Duration::from_secs(30), || {
            std::fs::read_to_string(&file).ok()?.lines().next()?.trim().parse().ok()
        });
        let (cdp, _) = Cdp::connect(port);
        Browser { cdp, _chromium: chromium, _profile: profile }
    }

    /// Evaluates `expression` in the page and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression).unwrap_or_else(|error| panic!("{expression}: {error}"))
    }

    /// Evaluates `expression`: its value, or what went wrong (between two pages, the old
    /// page's context may be gone).
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let result = self.cdp.try_call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true}))?;
        match result.get("exceptionDetails") {
            Some(exception) => Err(exception.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Opens `url` and waits until its page has loaded.
    pub fn open(&mut self, url: &str) {
        self.eval("window.__before = true");
        self.cdp.call("Page.navigate", json!({"url": url}));
        self.wait_for_next_page();
    }

    /// Runs `action` (a click that submits a form, say) and waits until the page it leads
    /// to has loaded.
    pub fn and_wait(&mut self, action: &str) {
        self.eval("window.__before = true");
        self.eval(action);
        self.wait_for_next_page();
    }

    fn wait_for_next_page(&mut self) {
        wait_for("the next page has loaded", Duration::from_secs(30), || {
            let loaded = self.try_eval("window.__before === undefined && document.readyState === 'complete'");
            (loaded == Ok(Value::Bool(true))).then_some(())
        });
    }

    /// The page's URL path and query.
    pub fn location(&mut self) -> String {
        self.eval("location.pathname + location.search").as_str().unwrap_or_default().to_string()
    }

    /// The text of the page; empty between two pages (polled while a form submits itself).
    pub fn text(&mut self) -> String {
        let text = self.try_eval("document.body ? document.body.innerText : ''");
        text.ok().and_then(|text| text.as_str().map(str::to_string)).unwrap_or_default()
    }

    /// How many elements match `selector`.
    pub fn count(&mut self, selector: &str) -> u64 {
        self.eval(&format!("document.querySelectorAll({}).length", json!(selector))).as_u64().unwrap()
    }

    /// Saves a PNG of the whole page to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.cdp.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}
