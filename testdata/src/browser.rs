//! A headless Chromium driven over the Chrome DevTools Protocol, for tests and benchmarks of the
//! web page: open a URL, wait until a JavaScript condition holds, evaluate expressions, click,
//! take screenshots.
//!
//! The browser is the system's Chromium (`SIGHTLINE_CHROMIUM`, else `chromium`,
//! `chromium-browser`, `google-chrome` on `PATH`; Debian's package is `chromium`). It runs with
//! its own throw-away profile directory and is killed when the [`Browser`] is dropped.
//!
//! Protocol: the browser listens on a port it picks (`--remote-debugging-port=0`) and writes it
//! to `DevToolsActivePort` in the profile; we attach to one page target in flat session mode and
//! send every command with that session id. Events are read and dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What can go wrong driving the browser; the text says what and where.
pub type Error = String;

/// A running headless Chromium with one page.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Browser")
            .field("pid", &self.child.id())
            .field("session", &self.session)
            .finish()
    }
}

/// The Chromium binary to run: `SIGHTLINE_CHROMIUM`, else the first known name on `PATH`.
pub fn chromium_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SIGHTLINE_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

impl Browser {
    /// Starts Chromium headless with a `width` × `height` window and attaches to a blank page.
    pub async fn launch(width: u32, height: u32) -> Result<Browser, Error> {
        let binary = chromium_binary().ok_or(
            "no Chromium found: install Debian's `chromium` package or set SIGHTLINE_CHROMIUM",
        )?;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "sightline-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).map_err(|error| format!("{profile:?}: {error}"))?;
        let child = Command::new(&binary)
            .args([
                "--headless",
                // A container runs us as root, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--force-device-scale-factor=1",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("starting {}: {error}", binary.display()))?;
        // Kill the browser if anything below fails.
        let mut guard = KillOnDrop(Some(child), profile.clone());
        let endpoint = wait_for_endpoint(&profile, Duration::from_secs(60)).await?;
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .map_err(|error| format!("DevTools connection to {endpoint}: {error}"))?;
        let child = guard.0.take().ok_or("browser process handle lost")?;
        let mut browser = Browser {
            child,
            profile,
            socket,
            session: String::new(),
            next_id: 0,
        };
        // Pages may use the clipboard as they would after a user's click (copy buttons).
        browser
            .command(
                "Browser.grantPermissions",
                json!({ "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"] }),
            )
            .await?;
        let target = browser
            .command("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"].as_str().ok_or("no targetId")?.to_owned();
        let attached = browser
            .command(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or("no sessionId")?
            .to_owned();
        browser.command("Page.enable", json!({})).await?;
        // Behave as the focused window (the clipboard API needs a focused document).
        browser
            .command(
                "Emulation.setFocusEmulationEnabled",
                json!({ "enabled": true }),
            )
            .await?;
        browser.command("Runtime.enable", json!({})).await?;
        // Every page records its uncaught errors, rejected promises and Content Security
        // Policy violations, for `page_errors`.
        browser
            .command(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": PAGE_ERROR_RECORDER }),
            )
            .await?;
        browser
            .command(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await?;
        Ok(browser)
    }

    /// Sends one command (to the page once attached) and returns its result.
    pub async fn command(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = Value::String(self.session.clone());
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .map_err(|error| format!("{method}: sending: {error}"))?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .map_err(|_| format!("{method}: no answer within 60 s"))?
                .ok_or_else(|| format!("{method}: the browser closed the connection"))?
                .map_err(|error| format!("{method}: {error}"))?;
            let Message::Text(text) = frame else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str())
                .map_err(|error| format!("{method}: bad DevTools message: {error}"))?;
            if answer["id"].as_u64() != Some(id) {
                continue; // an event, or the answer to another command
            }
            if let Some(error) = answer.get("error") {
                return Err(format!("{method}: {error}"));
            }
            return Ok(answer["result"].clone());
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON; an
    /// exception thrown by the page is an error with its text.
    pub async fn eval(&mut self, expression: &str) -> Result<Value, Error> {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            let text = exception["exception"]["description"]
                .as_str()
                .or_else(|| exception["text"].as_str())
                .unwrap_or("exception");
            return Err(format!("{expression}: {text}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Polls `condition` (a JavaScript expression) until it is truthy, then returns its value;
    /// an error after `timeout` names the condition.
    pub async fn wait_for(&mut self, condition: &str, timeout: Duration) -> Result<Value, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            // A page that is navigating has no context for a moment: retry.
            if let Ok(value) = self.eval(condition).await
                && !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("")
            {
                return Ok(value);
            }
            if Instant::now() > deadline {
                let url = self
                    .eval("window.location.href")
                    .await
                    .unwrap_or(Value::Null);
                let text = self
                    .eval("document.body ? document.body.innerText.slice(0, 500) : ''")
                    .await
                    .unwrap_or(Value::Null);
                return Err(format!(
                    "waited {timeout:?} for `{condition}` at {url}; the page shows: {text}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Uncaught errors, unhandled promise rejections and Content Security Policy violations of
    /// the current document so far.
    pub async fn page_errors(&mut self) -> Result<Vec<String>, Error> {
        let value = self.eval("window.__sightlineErrors || []").await?;
        serde_json::from_value(value).map_err(|error| format!("page errors: {error}"))
    }

    /// Opens `url` in the page (a new document).
    pub async fn goto(&mut self, url: &str) -> Result<(), Error> {
        let result = self.command("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = result.get("errorText") {
            return Err(format!("opening {url}: {error}"));
        }
        Ok(())
    }

    /// A PNG of the whole page (beyond the window when it is taller), written to `path`.
    pub async fn screenshot(&mut self, path: &Path) -> Result<(), Error> {
        let result = self
            .command(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await?;
        let data = result["data"].as_str().ok_or("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|error| format!("screenshot: {error}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|error| format!("{dir:?}: {error}"))?;
        }
        std::fs::write(path, png).map_err(|error| format!("{path:?}: {error}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Script run in every new document before its own: collects what `page_errors` returns.
const PAGE_ERROR_RECORDER: &str = r#"
window.__sightlineErrors = [];
window.addEventListener('error', (event) => {
  window.__sightlineErrors.push('error: ' + (event.message || (event.target && event.target.src) || 'resource'));
}, true);
window.addEventListener('unhandledrejection', (event) => {
  window.__sightlineErrors.push('unhandled rejection: ' + String(event.reason));
});
document.addEventListener('securitypolicyviolation', (event) => {
  window.__sightlineErrors.push('CSP violation: ' + event.violatedDirective + ' ' + event.blockedURI);
});
"#;

/// Kills a browser that never became a [`Browser`].
struct KillOnDrop(Option<Child>, PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
}

/// The browser-level DevTools WebSocket address, once Chromium has written it.
async fn wait_for_endpoint(profile: &Path, timeout: Duration) -> Result<String, Error> {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return Ok(format!("ws://127.0.0.1:{}{}", port.trim(), path.trim()));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "Chromium did not open its DevTools port within {timeout:?} ({file:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
