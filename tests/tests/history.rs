//! A node with short histories (`[execution] state_history` and `transaction_history`):
//! heights that fell out of the state history answer `410 height_pruned` and the heights in
//! it keep answering with proofs; transactions that fell out of the transaction history are
//! no longer found by hash, the newest are; and a node killed mid-chain comes back with the
//! same histories.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use lamina_primitives::state_proof::{StateKey, StateProof};
use lamina_primitives::{codec, Account, Address, Hash, Keypair, Transaction};
use lamina_tests::{lamina_bin, post_json, wait_for, RunNode};
use serde_json::{json, Value};

const HISTORY: u64 = 10;
const TRANSACTION_HISTORY: u64 = 2;
const WAIT: Duration = Duration::from_secs(60);

/// The proof at `height` verifies against the root it comes with; returns the account.
fn verified_account(node: &RunNode, address: &Address, height: u64) -> Option<Account> {
    let (code, body) = node.get(&format!("/v1/accounts/{address}/proof?height={height}"));
    assert_eq!(code, 200, "{body}");
    let root: Hash = body["state_root"].as_str().unwrap().parse().unwrap();
    let proof: StateProof = serde_json::from_value(body["proof"].clone()).unwrap();
    let account: Option<Account> = serde_json::from_value(body["account"].clone()).unwrap();
    let value = account.map(|account| codec::encode(&account));
    proof
        .verify(
            &root,
            &StateKey::Account(*address).key_hash(),
            value.as_deref(),
        )
        .expect("proof verifies");
    account
}

fn executed_height(node: &RunNode) -> u64 {
    node.get("/v1/status").1["executed_height"]
        .as_u64()
        .unwrap()
}

/// Checks that height 0 is refused as pruned and that the newest kept heights answer.
fn check_history(node: &RunNode, address: &Address) {
    for route in ["", "/proof"] {
        let (code, body): (u16, Value) =
            node.get(&format!("/v1/accounts/{address}{route}?height=0"));
        assert_eq!(code, 410, "{body}");
        assert_eq!(body["error_code"], "height_pruned", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("height 0 is pruned"), "{message}");
    }
    // Blocks come every 200 ms and ten heights are kept: the two newest stay kept for far
    // longer than these reads take.
    let latest = executed_height(node);
    for height in [latest, latest - 1] {
        verified_account(node, address, height);
    }
}

/// Submits `transaction` and waits for it to be included; returns its height.
fn include(node: &RunNode, transaction: &Transaction) -> u64 {
    let (code, body) = post_json(
        &format!("{}/v1/transactions", node.url),
        &json!({ "transaction": hex::encode(transaction.encode()) }),
    );
    assert_eq!(code, 202, "{body}");
    wait_for("the transaction to be included", WAIT, || {
        let (code, body) = node.get(&format!("/v1/transactions/{}", transaction.hash()));
        (code == 200 && body["status"] == "included").then(|| body["height"].as_u64().unwrap())
    })
}

/// Checks that the first transfer is out of the transaction history, though still in its
/// block, and that the two newest are found.
fn check_transactions(node: &RunNode, transfers: &[(Transaction, u64)]) {
    let (oldest, oldest_height) = &transfers[0];
    // Each block deletes at most 16 heights, so the empty heights before the first transfer
    // may take a few blocks more.
    let body = wait_for("the first transfer to leave the history", WAIT, || {
        let (code, body) = node.get(&format!("/v1/transactions/{}", oldest.hash()));
        (code == 404).then_some(body)
    });
    assert_eq!(body["error_code"], "transaction_not_found", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("newest 2 included transactions"),
        "{message}"
    );
    let (code, block) = node.get(&format!("/v1/blocks/{oldest_height}"));
    assert_eq!(code, 200, "{block}");
    assert!(
        block.to_string().contains(&oldest.hash().to_string()),
        "{block}"
    );
    for (transfer, height) in &transfers[1..] {
        let (code, body) = node.get(&format!("/v1/transactions/{}", transfer.hash()));
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["height"], *height, "{body}");
    }
}

#[test]
fn what_is_out_of_the_histories_is_refused_and_the_rest_kept_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(lamina_bin())
        .args([
            "init",
            "--chain-id",
            "history",
            "--block-time",
            "200",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let config_path = dir.path().join("config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let defaults = ["state_history = 1000", "transaction_history = 1000000"];
    for default in defaults {
        assert!(config.contains(default), "{config}");
    }
    // Empty blocks keep heights coming without a stream of transactions.
    let config = config
        .replace("listen = \"127.0.0.1:8545\"", "listen = \"127.0.0.1:0\"")
        .replace("create_empty_blocks = false", "create_empty_blocks = true")
        .replace(defaults[0], &format!("state_history = {HISTORY}"))
        .replace(
            defaults[1],
            &format!("transaction_history = {TRANSACTION_HISTORY}"),
        );
    std::fs::write(&config_path, config).unwrap();

    let mut node = RunNode::start(&config_path);
    let sender = Keypair::deterministic("account-0");
    let receiver = Address([7; 32]);
    // One transfer per block: the block that includes the third deletes the first's records.
    let transfers: Vec<(Transaction, u64)> = (0..3)
        .map(|nonce| {
            let transfer = Transaction::transfer("history", &sender, nonce, receiver, 5);
            let height = include(&node, &transfer);
            (transfer, height)
        })
        .collect();
    check_transactions(&node, &transfers);
    let included_at = transfers[0].1;
    let before = included_at - 1;
    wait_for("the transfer's height to leave the history", WAIT, || {
        (executed_height(&node) > included_at + HISTORY).then_some(())
    });
    let (code, body) = node.get(&format!("/v1/accounts/{receiver}?height={before}"));
    assert_eq!(
        (code, &body["error_code"]),
        (410, &json!("height_pruned")),
        "{body}"
    );
    check_history(&node, &receiver);
    let latest = executed_height(&node);
    assert_eq!(
        verified_account(&node, &receiver, latest).unwrap().balance,
        15
    );

    node.kill();
    let node = RunNode::start(&config_path);
    wait_for("blocks after the restart", WAIT, || {
        (executed_height(&node) > latest + 2).then_some(())
    });
    check_history(&node, &receiver);
    check_transactions(&node, &transfers);
    let latest = executed_height(&node);
    assert_eq!(
        verified_account(&node, &receiver, latest).unwrap().balance,
        15
    );
}
