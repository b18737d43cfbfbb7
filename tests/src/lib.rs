//! Helpers for Lamina's whole-system tests: locate the real `lamina` binary, start dev
//! chains as child processes on loopback ports, talk to them over HTTP, and poll for
//! conditions with deadlines. Every process and directory is cleaned up on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lamina_node::testnet_file::TestnetFile;
use serde_json::Value;

/// The `lamina` binary of this workspace, next to this test executable. It is (re)built
/// once per test process, so a test run with `-p lamina-tests` never drives a stale binary;
/// after `cargo test --workspace` built it, this is a quick no-op.
pub fn lamina_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/lamina
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "lamina-node", "--bin", "lamina"]);
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the lamina binary failed");
        profile_dir.join(format!("lamina{}", std::env::consts::EXE_SUFFIX))
    })
    .clone()
}

/// Polls `check` every 50 ms until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the node at `url` answers `/v1/status`.
pub fn wait_until_serving(url: &str) {
    let status_url = format!("{url}/v1/status");
    wait_for("the HTTP API", Duration::from_secs(30), || {
        http()
            .get(&status_url)
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
}

/// A blocking HTTP client for the tests.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET `url`: status code and JSON body (`Value::Null` if the body is not JSON).
pub fn get(url: &str) -> (u16, Value) {
    let response = http().get(url).send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// POST a JSON value: status code and JSON body.
pub fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let response = http().post(url).json(body).send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// A `lamina dev` process on a loopback port of its own choosing.
#[derive(Debug)]
pub struct DevNode {
    child: Option<Child>,
    dir: PathBuf,
    /// Base URL of its HTTP API.
    pub url: String,
    /// Its testnet.json.
    pub testnet: TestnetFile,
}

impl DevNode {
    /// Starts `lamina dev --dir DIR` (new or resumed) with the given block time, on an
    /// OS-chosen port, and waits until its API answers.
    pub fn start(dir: &Path, block_time_ms: u64) -> DevNode {
        let testnet_path = dir.join("testnet.json");
        // The node rewrites this file once listening; remove a stale one from a previous run.
        let _ = std::fs::remove_file(&testnet_path);
        let child = Command::new(lamina_bin())
            .args(["dev", "--dir"])
            .arg(dir)
            .args([
                "--http",
                "127.0.0.1:0",
                "--block-time",
                &block_time_ms.to_string(),
            ])
            .args(["--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lamina dev");
        let mut node = DevNode {
            child: Some(child),
            dir: dir.to_path_buf(),
            url: String::new(),
            testnet: dummy(),
        };
        node.testnet = wait_for("testnet.json", Duration::from_secs(60), || {
            if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("lamina dev exited early with {status}");
            }
            TestnetFile::read(&testnet_path).ok()
        });
        node.url = node.testnet.nodes[0].http.clone();
        wait_until_serving(&node.url);
        node
    }

    /// The chain's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `GET {url}{path}`.
    pub fn get(&self, path: &str) -> (u16, Value) {
        get(&format!("{}{path}", self.url))
    }

    /// The `/v1/status` answer.
    pub fn status(&self) -> Value {
        let (code, body) = self.get("/v1/status");
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the process to stop (SIGINT, like Ctrl-C) and waits for it; returns its exit code.
    pub fn interrupt(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        match signal_and_wait(&mut child, "-INT", Duration::from_secs(20)) {
            Some(code) => code,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lamina did not stop within 20 s of SIGINT");
            }
        }
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` (as `kill` spells it, e.g. `-TERM`) to `child` and waits up to `timeout`
/// for it to exit: `Some(exit code)` once it has (`Some(None)` if a signal ended it), `None`
/// if it is still running.
pub fn signal_and_wait(child: &mut Child, signal: &str, timeout: Duration) -> Option<Option<i32>> {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn dummy() -> TestnetFile {
    TestnetFile {
        chain_id: String::new(),
        nodes: vec![],
        accounts: vec![],
    }
}

/// A `lamina run --config FILE` process; its HTTP address is read from its first line of
/// output, so the config may listen on port 0.
#[derive(Debug)]
pub struct RunNode {
    child: Child,
    /// Base URL of its HTTP API.
    pub url: String,
}

impl RunNode {
    /// Starts the node and waits until its API answers.
    pub fn start(config: &Path) -> RunNode {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(lamina_bin())
            .args(["run", "--log", "warn", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lamina run");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read the node's first line");
        let url = first
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no HTTP address in {first:?}"))
            .to_string();
        let node = RunNode { child, url };
        wait_until_serving(&node.url);
        node
    }

    /// `GET {url}{path}`.
    pub fn get(&self, path: &str) -> (u16, Value) {
        get(&format!("{}{path}", self.url))
    }
}

impl RunNode {
    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port on 127.0.0.1 that was free a moment ago, for a node to listen on later.
///
/// Taken below the OS's ephemeral range (which starts at 32768 on Linux): a port the OS
/// hands out for port 0 can be handed out again, to an outgoing connection of another node
/// or test, before the node binds it. Ports come from a block of this test process's own
/// (chosen by its process id, so test binaries running at once rarely share one), each
/// handed out once, and are checked free before use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const BLOCKS: u16 = 64;
    const BLOCK: u16 = 200;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = (std::process::id() % u32::from(BLOCKS)) as u16;
    for _ in 0..u32::from(BLOCKS) * u32::from(BLOCK) {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % (BLOCKS * BLOCK);
        let port = FIRST + (block * BLOCK + offset) % (BLOCKS * BLOCK);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free loopback port between {FIRST} and {}",
        FIRST + BLOCKS * BLOCK
    )
}

/// A multi-validator network of `lamina run` processes, written by `lamina testnet init`
/// and moved onto ports of its own (HTTP on port 0, peer-to-peer on free ports), so tests
/// can run side by side. Each node can be killed and restarted on its own.
#[derive(Debug)]
pub struct Testnet {
    dir: tempfile::TempDir,
    configs: Vec<PathBuf>,
    nodes: Vec<Option<RunNode>>,
}

impl Testnet {
    /// Writes the configs of `validators` nodes with the given block time; starts none.
    pub fn init(validators: usize, block_time_ms: u64) -> Testnet {
        Testnet::init_with(validators, block_time_ms, &[])
    }

    /// Like [`Testnet::init`], with more `lamina testnet init` flags (e.g. `--settlement`).
    pub fn init_with(validators: usize, block_time_ms: u64, flags: &[&str]) -> Testnet {
        let dir = tempfile::Builder::new()
            .prefix("lamina-testnet-")
            .tempdir()
            .unwrap();
        // The base port only shapes the written files; every port is replaced below.
        let base_port = 20_000;
        let status = Command::new(lamina_bin())
            .args(["testnet", "init", "--validators", &validators.to_string()])
            .args(["--block-time", &block_time_ms.to_string()])
            .args(flags)
            .args(["--base-port", &base_port.to_string(), "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "lamina testnet init failed");
        let ports: Vec<u16> = (0..validators).map(|_| free_port()).collect();
        let configs: Vec<PathBuf> = (0..validators)
            .map(|i| dir.path().join(format!("node{i}")).join("config.toml"))
            .collect();
        for config in &configs {
            let mut text = std::fs::read_to_string(config).unwrap();
            // Through placeholders, so a new port equal to an old one is not replaced twice.
            for i in 0..validators as u16 {
                text = text
                    .replace(&format!("127.0.0.1:{}", base_port + i), "127.0.0.1:0")
                    .replace(
                        &format!("/tcp/{}/", base_port + 100 + i),
                        &format!("/tcp/<{i}>/"),
                    )
                    .replace(
                        &format!("/tcp/{}\"", base_port + 100 + i),
                        &format!("/tcp/<{i}>\""),
                    );
            }
            for (i, port) in ports.iter().enumerate() {
                text = text.replace(&format!("/tcp/<{i}>"), &format!("/tcp/{port}"));
            }
            std::fs::write(config, text).unwrap();
        }
        Testnet {
            dir,
            nodes: (0..validators).map(|_| None).collect(),
            configs,
        }
    }

    /// Writes and starts every node.
    pub fn start(validators: usize, block_time_ms: u64) -> Testnet {
        let mut testnet = Testnet::init(validators, block_time_ms);
        for i in 0..validators {
            testnet.start_node(i);
        }
        testnet
    }

    /// The directory holding `node0/`, `node1/`, ...
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites every node's config with `edit` (before the nodes start).
    pub fn edit_configs(&self, edit: impl Fn(String) -> String) {
        for config in &self.configs {
            let text = std::fs::read_to_string(config).unwrap();
            std::fs::write(config, edit(text)).unwrap();
        }
    }

    /// Rewrites node `i`'s config with `edit` (before it starts).
    pub fn edit_config(&self, i: usize, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.configs[i]).unwrap();
        std::fs::write(&self.configs[i], edit(text)).unwrap();
    }

    /// Starts (or restarts) node `i` and waits until its API answers.
    pub fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node{i} is already running");
        self.nodes[i] = Some(RunNode::start(&self.configs[i]));
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill();
        }
    }

    /// The indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Node `i`, which must be running.
    pub fn node(&self, i: usize) -> &RunNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Committed height of node `i`, or `None` if it does not answer.
    pub fn height(&self, i: usize) -> Option<u64> {
        let (code, status) = self.nodes[i].as_ref()?.get("/v1/status");
        (code == 200).then(|| status["height"].as_u64()).flatten()
    }

    /// Waits until every running node has committed at least `height`.
    pub fn wait_for_height(&self, height: u64, timeout: Duration) {
        wait_for(
            &format!("every running node at height {height}"),
            timeout,
            || {
                self.running()
                    .iter()
                    .all(|&i| self.height(i).is_some_and(|h| h >= height))
                    .then_some(())
            },
        );
    }

    /// Waits until every running node stores the data of every height up to `height`: a node
    /// commits a block before its DA layer stores the block's data.
    pub fn wait_for_stored(&self, height: u64, timeout: Duration) {
        wait_for(
            &format!("every running node storing the data of height {height}"),
            timeout,
            || {
                self.running()
                    .iter()
                    .all(|&i| {
                        let (code, status) = self.node(i).get("/v1/status");
                        code == 200
                            && status["data_availability"]["stored_height"]
                                .as_u64()
                                .is_some_and(|stored| stored >= height)
                    })
                    .then_some(())
            },
        );
    }

    /// Checks that every running node has the same block hash at every height up to
    /// `height` (which they must all have committed).
    pub fn assert_same_chain(&self, height: u64) {
        for h in 1..=height {
            let hashes: Vec<Value> = self
                .running()
                .iter()
                .map(|&i| {
                    let (code, block) = self.node(i).get(&format!("/v1/blocks/{h}"));
                    assert_eq!(code, 200, "node{i} has no block {h}: {block}");
                    block["hash"].clone()
                })
                .collect();
            assert!(
                hashes.windows(2).all(|w| w[0] == w[1]),
                "nodes disagree at height {h}: {hashes:?}"
            );
        }
    }
}
