//! Whole-system tests of `lamina testnet` and `lamina load`: the files `testnet init` writes,
//! the usage errors of both commands, and a four-validator testnet started in one command,
//! driven by `lamina load` and stopped with SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use lamina_node::config::NodeConfig;
use lamina_node::testnet_file::TestnetFile;
use lamina_primitives::{Keypair, Transaction};
use lamina_tests::{get, lamina_bin, post_json, signal_and_wait, wait_for};
use serde_json::{json, Value};

fn lamina(args: &[&str]) -> Output {
    Command::new(lamina_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `lamina` expecting a usage error: exit code 2 and `expected` in the message.
fn usage_error(args: &[&str], expected: &str) {
    let output = lamina(args);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "lamina {args:?}: {all}");
    assert!(all.contains(expected), "lamina {args:?}: {all}");
}

fn init(dir: &Path, validators: usize, base_port: u16, hosts: Option<&str>) -> String {
    let dir = dir.to_str().unwrap();
    let (validators, base_port) = (validators.to_string(), base_port.to_string());
    let mut args = vec![
        "testnet",
        "init",
        "--validators",
        &validators,
        "--dir",
        dir,
        "--base-port",
        &base_port,
        "--block-time",
        "250",
    ];
    if let Some(hosts) = hosts {
        args.extend(["--hosts", hosts]);
    }
    let output = lamina(&args);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Loads a node's config with the full schema, checking it names the `bft` engine.
fn load_config(path: &Path) -> NodeConfig {
    let written = std::fs::read_to_string(path).unwrap();
    assert_eq!(consensus_kind(&written), Some("bft"), "{written}");
    NodeConfig::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `kind` line of the `[consensus]` table of a config's TOML text.
fn consensus_kind(toml: &str) -> Option<&str> {
    let section = toml.split("\n[").find(|s| s.starts_with("consensus]"))?;
    section
        .lines()
        .find_map(|line| line.trim().strip_prefix("kind = "))
        .map(|kind| kind.trim_matches('"'))
}

fn peer_id(node_dir: &Path) -> String {
    let key = lamina_node::p2p_key::load(&node_dir.join("node.key")).unwrap();
    lamina_node::p2p_key::peer_id(&key).to_string()
}

#[test]
fn testnet_init_writes_nodes_that_peer_with_each_other() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let stdout = init(&dir, 4, 31000, None);
    let genesis: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("node0/genesis.json")).unwrap())
            .unwrap();
    assert_eq!(genesis["chain_id"], "lamina-testnet");
    assert_eq!(genesis["validators"].as_array().unwrap().len(), 4);
    assert_eq!(genesis["accounts"].as_array().unwrap().len(), 10);

    let ids: Vec<String> = (0..4)
        .map(|i| peer_id(&dir.join(format!("node{i}"))))
        .collect();
    for i in 0..4u16 {
        let node = dir.join(format!("node{i}"));
        assert!(
            stdout.contains(&format!(
                "lamina run --config {}",
                node.join("config.toml").display()
            )),
            "{stdout}"
        );
        let config = load_config(&node.join("config.toml"));
        assert_eq!(
            config.http.listen.to_string(),
            format!("127.0.0.1:{}", 31000 + i)
        );
        assert_eq!(
            config.network.listen.as_deref(),
            Some(format!("/ip4/127.0.0.1/tcp/{}", 31100 + i).as_str())
        );
        assert_eq!(config.consensus.block_time_ms, 250);
        let expected: Vec<String> = (0..4u16)
            .filter(|j| *j != i)
            .map(|j| format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", 31100 + j, ids[j as usize]))
            .collect();
        assert_eq!(config.network.peers, expected);
        assert_eq!(config.network.key_file, node.join("node.key"));
        // Every node has the same genesis, and its key is one of its validators.
        let node_genesis: Value =
            serde_json::from_str(&std::fs::read_to_string(node.join("genesis.json")).unwrap())
                .unwrap();
        assert_eq!(node_genesis, genesis);
        let key = std::fs::read_to_string(config.node.validator_key.unwrap()).unwrap();
        let address = Keypair::from_secret_hex(key.trim()).unwrap().address();
        assert_eq!(
            genesis["validators"][i as usize]["address"],
            address.to_string()
        );
    }
    usage_error(
        &[
            "testnet",
            "init",
            "--validators",
            "2",
            "--dir",
            dir.to_str().unwrap(),
        ],
        "already holds a testnet",
    );
    // The flags of a resumed testnet must match what the directory holds (checked before
    // any node is started).
    usage_error(
        &[
            "testnet",
            "--dir",
            dir.to_str().unwrap(),
            "--validators",
            "3",
        ],
        "holds a testnet of 4 validators",
    );
    usage_error(
        &[
            "testnet",
            "--dir",
            dir.to_str().unwrap(),
            "--base-port",
            "31001",
        ],
        "base port 31000",
    );
}

#[test]
fn testnet_init_with_hosts_dials_each_host() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let stdout = init(&dir, 3, 32000, Some("10.0.0.1,node-b.example.org,10.0.0.3"));
    assert!(
        stdout.contains("on node-b.example.org: lamina run --config"),
        "{stdout}"
    );
    let ids: Vec<String> = (0..3)
        .map(|i| peer_id(&dir.join(format!("node{i}"))))
        .collect();
    let config = load_config(&dir.join("node0/config.toml"));
    assert_eq!(config.http.listen.to_string(), "0.0.0.0:32000");
    assert_eq!(
        config.network.listen.as_deref(),
        Some("/ip4/0.0.0.0/tcp/32100")
    );
    assert_eq!(
        config.network.peers,
        vec![
            format!("/dns4/node-b.example.org/tcp/32101/p2p/{}", ids[1]),
            format!("/ip4/10.0.0.3/tcp/32102/p2p/{}", ids[2]),
        ]
    );

    let other = temp.path().join("other");
    usage_error(
        &[
            "testnet",
            "init",
            "--validators",
            "3",
            "--dir",
            other.to_str().unwrap(),
            "--hosts",
            "10.0.0.1,10.0.0.2",
        ],
        "2 hosts for 3 validators",
    );
    assert!(
        !other.join("node0").exists(),
        "nothing written on a usage error"
    );
}

#[test]
fn bad_flags_exit_with_code_2_and_say_why() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let dir = dir.to_str().unwrap();
    usage_error(
        &["testnet", "init", "--validators", "0", "--dir", dir],
        "--validators must be between 1 and 64",
    );
    usage_error(
        &["testnet", "init", "--validators", "65", "--dir", dir],
        "--validators must be between 1 and 64",
    );
    usage_error(
        &[
            "testnet",
            "init",
            "--validators",
            "4",
            "--dir",
            dir,
            "--base-port",
            "65433",
        ],
        "65535",
    );
    usage_error(
        &["testnet", "--validators", "0", "--dir", dir],
        "--validators must be between 1 and 64",
    );
    usage_error(&["testnet", "init", "--validators", "4"], "--dir");
    usage_error(&["testnet", "--hosts", "a"], "--hosts");
    assert!(!Path::new(dir).join("node0").exists());

    let file = TestnetFile {
        chain_id: "lamina-testnet".into(),
        nodes: vec![lamina_node::testnet_file::TestnetNode {
            name: "node0".into(),
            http: "http://127.0.0.1:9".into(),
            validator: None,
            p2p: None,
        }],
        accounts: (0..3)
            .map(|i| {
                let key = Keypair::deterministic(&format!("account-{i}"));
                lamina_node::testnet_file::TestnetAccount {
                    address: key.address(),
                    secret_key: key.secret_hex(),
                    balance: 1,
                }
            })
            .collect(),
    };
    let path = temp.path().join("testnet.json");
    file.write(&path).unwrap();
    let path = path.to_str().unwrap();
    let missing = temp.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    usage_error(
        &[
            "load",
            "--testnet",
            missing,
            "--rate",
            "1",
            "--duration",
            "1",
        ],
        "missing.json",
    );
    usage_error(
        &["load", "--testnet", path, "--rate", "0", "--duration", "1"],
        "--rate",
    );
    usage_error(
        &["load", "--testnet", path, "--rate", "1", "--duration", "0"],
        "--duration",
    );
    usage_error(
        &[
            "load",
            "--testnet",
            path,
            "--rate",
            "1",
            "--duration",
            "1",
            "--accounts",
            "4",
        ],
        "--accounts must be between 1 and 3",
    );
}

/// A base port whose HTTP ports (`base..base+n`) and peer ports (`base+100..`) are free now.
fn free_base_port(nodes: u16) -> u16 {
    wait_for("a free port range", Duration::from_secs(10), || {
        let base = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if u32::from(base) + 100 + u32::from(nodes) > 65535 {
            return None;
        }
        let ports = (0..nodes).flat_map(|i| [base + i, base + 100 + i]);
        let held: Option<Vec<TcpListener>> = ports
            .map(|port| TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
        held.map(|_| base)
    })
}

/// The processes whose parent is `pid` (Linux: from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid ...; comm may hold spaces, so split after its ')'.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// A `lamina testnet` process; dropping it stops the testnet and every node.
struct TestnetProcess {
    child: Option<Child>,
}

impl TestnetProcess {
    /// SIGTERM, then waits for the exit; returns the exit code (`None` if it is still
    /// running or a signal ended it).
    fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let code = signal_and_wait(self.child.as_mut()?, "-TERM", timeout)?;
        self.child = None;
        code
    }
}

impl Drop for TestnetProcess {
    fn drop(&mut self) {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return;
        };
        let nodes = children_of(pid);
        if self.terminate(Duration::from_secs(20)).is_none() {
            // It did not stop: kill it and the nodes it started.
            for node in nodes {
                let _ = Command::new("kill")
                    .args(["-KILL", &node.to_string()])
                    .status();
            }
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn height(url: &str) -> Option<u64> {
    let response = lamina_tests::http()
        .get(format!("{url}/v1/status"))
        .send()
        .ok()?;
    response.json::<Value>().ok()?["height"].as_u64()
}

#[test]
fn testnet_starts_takes_load_agrees_and_stops_on_sigterm() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("net");
    let base = free_base_port(4);
    let log = std::fs::File::create(temp.path().join("testnet.out")).unwrap();
    let child = Command::new(lamina_bin())
        .args([
            "testnet",
            "--validators",
            "4",
            "--base-port",
            &base.to_string(),
        ])
        .args(["--log", "warn", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut testnet = TestnetProcess { child: Some(child) };
    let file_path = dir.join("testnet.json");
    let file = wait_for("testnet.json", Duration::from_secs(90), || {
        if let Some(status) = testnet.child.as_mut().unwrap().try_wait().unwrap() {
            let out = std::fs::read_to_string(temp.path().join("testnet.out")).unwrap();
            panic!("lamina testnet exited early with {status}:\n{out}");
        }
        TestnetFile::read(&file_path).ok()
    });
    assert_eq!(file.nodes.len(), 4);
    assert!(file
        .nodes
        .iter()
        .all(|n| n.p2p.is_some() && n.validator.is_some()));
    let urls: Vec<String> = file.nodes.iter().map(|n| n.http.clone()).collect();
    assert_eq!(urls[0], format!("http://127.0.0.1:{base}"));

    // Consensus is live on every node: one transfer through node 1 commits everywhere.
    let key = file.account_key(9).unwrap();
    let tx = Transaction::transfer(
        &file.chain_id,
        &key,
        0,
        Keypair::deterministic("x").address(),
        1,
    );
    let (code, body) = post_json(
        &format!("{}/v1/transactions", urls[1]),
        &json!({ "transaction": hex::encode(tx.encode()) }),
    );
    assert_eq!(code, 202, "{body}");
    wait_for("every node at height 2", Duration::from_secs(90), || {
        urls.iter()
            .all(|url| height(url).is_some_and(|h| h >= 2))
            .then_some(())
    });

    let output = Command::new(lamina_bin())
        .args(["load", "--testnet"])
        .arg(&file_path)
        .args([
            "--rate",
            "50",
            "--duration",
            "3",
            "--json",
            "--accounts",
            "9",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(summary["committed"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["sent"], 150, "{summary}");
    assert_eq!(summary["accepted"], 150, "{summary}");

    // Every node holds the same block at a height all of them have.
    let common = urls.iter().map(|url| height(url).unwrap()).min().unwrap();
    let hashes: Vec<Value> = urls
        .iter()
        .map(|url| {
            let (code, block) = get(&format!("{url}/v1/blocks/{common}"));
            assert_eq!(code, 200, "{block}");
            block["hash"].clone()
        })
        .collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");

    let pid = testnet.child.as_ref().unwrap().id();
    let nodes = children_of(pid);
    assert_eq!(nodes.len(), 4, "one process per node: {nodes:?}");
    assert_eq!(
        testnet.terminate(Duration::from_secs(30)),
        Some(0),
        "lamina testnet should exit 0 on SIGTERM"
    );
    for node in nodes {
        assert!(!alive(node), "node process {node} still running");
    }
    for url in &urls {
        assert!(height(url).is_none(), "{url} still answers");
    }
    let out = std::fs::read_to_string(temp.path().join("testnet.out")).unwrap();
    assert!(out.contains("stopped"), "{out}");
}
