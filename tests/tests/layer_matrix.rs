//! Every combination of consensus {solo, bft} × execution {sequential, parallel} × DA
//! {replicated, reed-solomon} × settlement {attested, optimistic}, started from config and
//! run through one shared suite: blocks commit, a transfer is included and seen by every
//! node, its state proof verifies against the same root everywhere, DA data is served (and
//! sampled, with `reed-solomon`), and settlement reaches the transfer's height. `bft`
//! combinations run four nodes. The example `depth` settlement layer (examples/) runs the
//! same suite. Validators with different executors agree in one network; a node whose DA
//! scheme differs is refused at handshake.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lamina_primitives::state_proof::StateProof;
use lamina_primitives::{Address, Hash, Keypair, Transaction};
use lamina_tests::{lamina_bin, post_json, wait_for, RunNode, Testnet};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);
const BLOCK_TIME_MS: i64 = 100;

/// One point of the matrix.
#[derive(Debug, Clone, Copy)]
struct Layers {
    consensus: &'static str,
    execution: &'static str,
    da: &'static str,
    settlement: &'static str,
}

/// `config` with this combination's layer kinds (and what they need: empty blocks and
/// short batches for `optimistic`).
fn configure(config: &str, layers: Layers) -> String {
    let mut table: toml::Table = toml::from_str(config).unwrap();
    let mut set = |section: &str, key: &str, value: toml::Value| {
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap()
            .insert(key.to_string(), value);
    };
    set("execution", "kind", layers.execution.into());
    set("data_availability", "kind", layers.da.into());
    set("settlement", "kind", layers.settlement.into());
    set("consensus", "block_time_ms", BLOCK_TIME_MS.into());
    if layers.settlement != "attested" {
        // Windows and depths are counted in blocks.
        set("consensus", "create_empty_blocks", true.into());
    }
    if layers.settlement == "optimistic" {
        set("settlement", "batch_size", 2.into());
        set("settlement", "challenge_window", 3.into());
    }
    toml::to_string(&table).unwrap()
}

/// The nodes of one combination: a `solo` node or four `bft` validators.
enum Network {
    Solo(RunNode, tempfile::TempDir),
    Bft(Testnet),
}

impl Network {
    fn start(layers: Layers) -> Network {
        match layers.consensus {
            "solo" => {
                let dir = tempfile::Builder::new()
                    .prefix("lamina-matrix-")
                    .tempdir()
                    .unwrap();
                let status = Command::new(lamina_bin())
                    .args(["init", "--dir"])
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "lamina init failed");
                let config = dir.path().join("config.toml");
                let text = std::fs::read_to_string(&config).unwrap();
                let mut text = configure(&text, layers);
                text = text.replace("127.0.0.1:8545", "127.0.0.1:0");
                std::fs::write(&config, text).unwrap();
                Network::Solo(RunNode::start(&config), dir)
            }
            _ => {
                let mut testnet = Testnet::init(4, BLOCK_TIME_MS as u64);
                testnet.edit_configs(|text| configure(&text, layers));
                for i in 0..4 {
                    testnet.start_node(i);
                }
                Network::Bft(testnet)
            }
        }
    }

    fn nodes(&self) -> Vec<&RunNode> {
        match self {
            Network::Solo(node, _) => vec![node],
            Network::Bft(testnet) => testnet.running().iter().map(|&i| testnet.node(i)).collect(),
        }
    }

    fn dir(&self) -> &Path {
        match self {
            Network::Solo(_, dir) => dir.path(),
            Network::Bft(testnet) => testnet.dir(),
        }
    }
}

fn genesis(network: &Network) -> Value {
    match network {
        Network::Solo(..) => serde_json::from_str(
            &std::fs::read_to_string(network.dir().join("genesis.json")).unwrap(),
        )
        .unwrap(),
        Network::Bft(_) => genesis_of(network.dir()),
    }
}

/// The genesis of the testnet in `dir`.
fn genesis_of(dir: &Path) -> Value {
    let path = dir.join("node0").join("genesis.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn status(node: &RunNode) -> Value {
    let (code, status) = node.get("/v1/status");
    assert_eq!(code, 200, "{status}");
    status
}

/// The shared suite.
fn run_suite(layers: Layers) {
    let network = Network::start(layers);
    let nodes = network.nodes();
    let chain = genesis(&network)["chain_id"].as_str().unwrap().to_string();

    // Each node runs the configured implementations.
    for node in &nodes {
        let status = status(node);
        let kinds = &status["layers"];
        assert_eq!(kinds["consensus"]["kind"], layers.consensus, "{status}");
        assert_eq!(kinds["execution"]["kind"], layers.execution);
        assert_eq!(kinds["data_availability"]["kind"], layers.da);
        assert_eq!(status["settlement"]["mode"], layers.settlement);
    }

    // A transfer sent to the last node is included and executed everywhere. (A `solo`
    // chain without empty blocks makes its first block for it.)
    let sender = Keypair::deterministic("account-0");
    let recipient = Address([7; 32]);
    let transfer = Transaction::transfer(&chain, &sender, 0, recipient, 1234);
    let last = nodes.last().unwrap();
    let (code, body) = post_json(
        &format!("{}/v1/transactions", last.url),
        &json!({ "transaction": hex::encode(transfer.encode()) }),
    );
    assert_eq!(code, 202, "{body}");
    let hash = body["hash"].as_str().unwrap().to_string();
    let height = wait_for("the transfer to be included", WAIT, || {
        let (_, found) = nodes[0].get(&format!("/v1/transactions/{hash}"));
        found["receipt"]["height"].as_u64()
    });
    assert!(height >= 1);
    wait_for("every node to execute the transfer", WAIT, || {
        nodes
            .iter()
            .all(|node| status(node)["executed_height"].as_u64() >= Some(height))
            .then_some(())
    });

    // Its state proof verifies, against the same root on every node.
    let roots: Vec<Hash> = nodes
        .iter()
        .map(|node| {
            let (code, proof) =
                node.get(&format!("/v1/accounts/{recipient}/proof?height={height}"));
            assert_eq!(code, 200, "{proof}");
            assert_eq!(proof["account"]["balance"], 1234, "{proof}");
            let root: Hash = proof["state_root"].as_str().unwrap().parse().unwrap();
            let key_hash: Hash = proof["key_hash"].as_str().unwrap().parse().unwrap();
            let value = hex::decode(proof["value"].as_str().unwrap()).unwrap();
            let state_proof: StateProof = serde_json::from_value(proof["proof"].clone()).unwrap();
            state_proof.verify(&root, &key_hash, Some(&value)).unwrap();
            root
        })
        .collect();
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "roots differ: {roots:?}"
    );

    // DA: the block's data is served with proofs; a light client samples reed-solomon.
    for node in &nodes {
        let (code, share) = node.get(&format!("/v1/da/shares/{height}/0"));
        assert_eq!(code, 200, "{share}");
    }
    if layers.da == "reed-solomon" {
        let output = Command::new(lamina_bin())
            .args(["da", "sample", "--node", &nodes[0].url, "--samples", "8"])
            .args(["--height", &height.to_string()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "sampling failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    // Settlement reaches the transfer's height on every node.
    wait_for("settlement to reach the transfer's height", WAIT, || {
        nodes
            .iter()
            .all(|node| status(node)["settled_height"].as_u64() >= Some(height))
            .then_some(())
    });

    if let Network::Bft(testnet) = &network {
        let tip = nodes
            .iter()
            .map(|node| status(node)["height"].as_u64().unwrap())
            .min()
            .unwrap();
        testnet.assert_same_chain(tip);
    }
}

macro_rules! combination {
    ($name:ident, $consensus:literal, $execution:literal, $da:literal, $settlement:literal) => {
        #[test]
        fn $name() {
            run_suite(Layers {
                consensus: $consensus,
                execution: $execution,
                da: $da,
                settlement: $settlement,
            });
        }
    };
}

combination!(
    solo_sequential_replicated_attested,
    "solo",
    "sequential",
    "replicated",
    "attested"
);
combination!(
    solo_sequential_replicated_optimistic,
    "solo",
    "sequential",
    "replicated",
    "optimistic"
);
combination!(
    solo_sequential_reed_solomon_attested,
    "solo",
    "sequential",
    "reed-solomon",
    "attested"
);
combination!(
    solo_sequential_reed_solomon_optimistic,
    "solo",
    "sequential",
    "reed-solomon",
    "optimistic"
);
combination!(
    solo_parallel_replicated_attested,
    "solo",
    "parallel",
    "replicated",
    "attested"
);
combination!(
    solo_parallel_replicated_optimistic,
    "solo",
    "parallel",
    "replicated",
    "optimistic"
);
combination!(
    solo_parallel_reed_solomon_attested,
    "solo",
    "parallel",
    "reed-solomon",
    "attested"
);
combination!(
    solo_parallel_reed_solomon_optimistic,
    "solo",
    "parallel",
    "reed-solomon",
    "optimistic"
);
combination!(
    bft_sequential_replicated_attested,
    "bft",
    "sequential",
    "replicated",
    "attested"
);
combination!(
    bft_sequential_replicated_optimistic,
    "bft",
    "sequential",
    "replicated",
    "optimistic"
);
combination!(
    bft_sequential_reed_solomon_attested,
    "bft",
    "sequential",
    "reed-solomon",
    "attested"
);
combination!(
    bft_sequential_reed_solomon_optimistic,
    "bft",
    "sequential",
    "reed-solomon",
    "optimistic"
);
combination!(
    bft_parallel_replicated_attested,
    "bft",
    "parallel",
    "replicated",
    "attested"
);
combination!(
    bft_parallel_replicated_optimistic,
    "bft",
    "parallel",
    "replicated",
    "optimistic"
);
combination!(
    bft_parallel_reed_solomon_attested,
    "bft",
    "parallel",
    "reed-solomon",
    "attested"
);
combination!(
    bft_parallel_reed_solomon_optimistic,
    "bft",
    "parallel",
    "reed-solomon",
    "optimistic"
);

// The example settlement layer of examples/depth-settlement, plugged in by config like the
// others.
combination!(
    solo_sequential_replicated_depth,
    "solo",
    "sequential",
    "replicated",
    "depth"
);
combination!(
    bft_parallel_reed_solomon_depth,
    "bft",
    "parallel",
    "reed-solomon",
    "depth"
);

/// A node whose DA scheme differs from the others' is refused by every peer (the scheme
/// defines `data_root`); the other three keep committing.
#[test]
fn a_node_with_another_da_scheme_is_refused_at_handshake() {
    let mut testnet = Testnet::init(4, BLOCK_TIME_MS as u64);
    let odd = testnet.dir().join("node3").join("config.toml");
    let text = std::fs::read_to_string(&odd).unwrap();
    let layers = Layers {
        consensus: "bft",
        execution: "sequential",
        da: "reed-solomon",
        settlement: "attested",
    };
    std::fs::write(&odd, configure(&text, layers)).unwrap();
    for i in 0..4 {
        testnet.start_node(i);
    }
    let start = testnet.height(0).unwrap();
    wait_for("the three others to keep committing", WAIT, || {
        (0..3)
            .all(|i| testnet.height(i).is_some_and(|h| h >= start + 5))
            .then_some(())
    });
    // Votes can reach a node through another, so committing does not mean every pair has
    // finished its handshake yet.
    for i in 0..3 {
        wait_for(&format!("node{i} to list the two like it"), WAIT, || {
            let (_, peers) = testnet.node(i).get("/v1/network/peers");
            (peers.as_array().map_or(0, Vec::len) == 2).then_some(())
        });
    }
    assert_eq!(status(testnet.node(3))["network"]["peers"], 0);
    assert_eq!(
        testnet.height(3),
        Some(0),
        "the odd node cannot follow the chain"
    );
}

/// Two `sequential` and two `parallel` validators in one network commit the same blocks and
/// compute the same state root at every height.
#[test]
fn mixed_executors_in_one_network_agree_on_every_state_root() {
    let mut testnet = Testnet::init(4, BLOCK_TIME_MS as u64);
    for i in 0..4 {
        let path = testnet.dir().join(format!("node{i}")).join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let layers = Layers {
            consensus: "bft",
            execution: if i < 2 { "sequential" } else { "parallel" },
            da: "replicated",
            settlement: "attested",
        };
        std::fs::write(&path, configure(&text, layers)).unwrap();
    }
    for i in 0..4 {
        testnet.start_node(i);
    }
    let chain = genesis_of(testnet.dir())["chain_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Transfers among a few accounts, so blocks carry conflicting transactions.
    let mut hashes = Vec::new();
    for round in 0..5u64 {
        for sender in 0..4usize {
            let key = Keypair::deterministic(&format!("account-{sender}"));
            let to = Keypair::deterministic(&format!("account-{}", (sender + 1) % 4)).address();
            let tx = Transaction::transfer(&chain, &key, round, to, 10 + round);
            let (code, body) = post_json(
                &format!("{}/v1/transactions", testnet.node(sender).url),
                &json!({ "transaction": hex::encode(tx.encode()) }),
            );
            assert_eq!(code, 202, "{body}");
            hashes.push(body["hash"].as_str().unwrap().to_string());
        }
    }
    let last = wait_for("every transfer to be executed everywhere", WAIT, || {
        let heights: Option<Vec<u64>> = hashes
            .iter()
            .map(|hash| {
                let (_, found) = testnet.node(0).get(&format!("/v1/transactions/{hash}"));
                found["receipt"]["height"].as_u64()
            })
            .collect();
        let last = heights?.into_iter().max()?;
        (0..4)
            .all(|i| status(testnet.node(i))["executed_height"].as_u64() >= Some(last))
            .then_some(last)
    });
    let address = Keypair::deterministic("account-0").address();
    for height in 1..=last {
        let roots: Vec<Value> = (0..4)
            .map(|i| {
                let (code, proof) = testnet
                    .node(i)
                    .get(&format!("/v1/accounts/{address}/proof?height={height}"));
                assert_eq!(code, 200, "{proof}");
                proof["state_root"].clone()
            })
            .collect();
        assert!(
            roots.windows(2).all(|w| w[0] == w[1]),
            "state roots differ at height {height}: {roots:?}"
        );
    }
    let executors: Vec<Value> = (0..4)
        .map(|i| status(testnet.node(i))["layers"]["execution"]["kind"].clone())
        .collect();
    assert_eq!(
        executors,
        vec!["sequential", "sequential", "parallel", "parallel"]
    );
}
