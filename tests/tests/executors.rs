//! Mixed executors: a node running `parallel` and a node running `sequential`, started from
//! the same genesis and fed the same transactions, reach the same state root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lamina_primitives::{Keypair, Transaction};
use lamina_tests::{lamina_bin, post_json, wait_for, RunNode};
use serde_json::json;

fn configure(dir: &Path, executor: &str) {
    let path = dir.join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let config = config
        .replace("listen = \"127.0.0.1:8545\"", "listen = \"127.0.0.1:0\"")
        .replace("kind = \"sequential\"", &format!("kind = \"{executor}\""));
    assert!(
        config.contains(&format!("kind = \"{executor}\"")),
        "{config}"
    );
    std::fs::write(path, config).unwrap();
}

#[test]
fn parallel_and_sequential_nodes_agree_on_the_state_root() {
    // One node directory, copied: both nodes share genesis and validator key.
    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("sequential");
    let status = Command::new(lamina_bin())
        .args(["init", "--chain-id", "mixed", "--block-time", "50", "--dir"])
        .arg(&original)
        .output()
        .unwrap();
    assert!(status.status.success());
    let copy = base.path().join("parallel");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["config.toml", "genesis.json", "validator.key"] {
        std::fs::copy(original.join(file), copy.join(file)).unwrap();
    }
    configure(&original, "sequential");
    configure(&copy, "parallel");
    let nodes = [
        RunNode::start(&original.join("config.toml")),
        RunNode::start(&copy.join("config.toml")),
    ];
    assert_eq!(
        nodes[1].get("/v1/status").1["layers"]["execution"]["kind"],
        "parallel"
    );

    // Heavily contended transfers among four prefunded accounts.
    let keys: Vec<Keypair> = (0..4)
        .map(|i| Keypair::deterministic(&format!("account-{i}")))
        .collect();
    let mut nonces = [0u64; 4];
    let mut txs = Vec::new();
    for round in 0..40usize {
        let (from, to) = (round % 4, (round * 7 + 1) % 4);
        let amount = 1_000 + round as u64;
        let tx = Transaction::transfer(
            "mixed",
            &keys[from],
            nonces[from],
            keys[to].address(),
            amount,
        );
        txs.push(tx);
        nonces[from] += 1;
    }
    for node in &nodes {
        for tx in &txs {
            let (code, body) = post_json(
                &format!("{}/v1/transactions", node.url),
                &json!({ "transaction": hex::encode(tx.encode()) }),
            );
            assert_eq!(code, 202, "{body}");
        }
    }
    let last = txs.last().unwrap().hash();
    let roots: Vec<String> = nodes
        .iter()
        .map(|node| {
            wait_for("every transfer to execute", Duration::from_secs(60), || {
                let status = node.get("/v1/status").1;
                let included =
                    node.get(&format!("/v1/transactions/{last}")).1["status"] == "included";
                let settled = included
                    && status["mempool_transactions"] == 0
                    && status["executed_height"] == status["height"];
                settled.then(|| status["state_root"].as_str().unwrap().to_string())
            })
        })
        .collect();
    assert_eq!(roots[0], roots[1], "parallel and sequential nodes disagree");
}
