//! A node with a short state history (`[execution] state_history`): heights that fell out of
//! it answer `410 height_pruned`, the heights in it keep answering with proofs, and a node
//! killed mid-chain comes back with the same history.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use lamina_primitives::state_proof::{StateKey, StateProof};
use lamina_primitives::{codec, Account, Address, Hash, Keypair, Transaction};
use lamina_tests::{lamina_bin, post_json, wait_for, RunNode};
use serde_json::{json, Value};

const HISTORY: u64 = 10;
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

#[test]
fn heights_out_of_the_state_history_are_refused_and_the_rest_kept_across_a_crash() {
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
    let default = "state_history = 1000";
    assert!(config.contains(default), "{config}");
    // Empty blocks keep heights coming without a stream of transactions.
    let config = config
        .replace("listen = \"127.0.0.1:8545\"", "listen = \"127.0.0.1:0\"")
        .replace("create_empty_blocks = false", "create_empty_blocks = true")
        .replace(default, &format!("state_history = {HISTORY}"));
    std::fs::write(&config_path, config).unwrap();

    let mut node = RunNode::start(&config_path);
    let sender = Keypair::deterministic("account-0");
    let receiver = Address([7; 32]);
    let transfer = Transaction::transfer("history", &sender, 0, receiver, 5);
    let (code, body) = post_json(
        &format!("{}/v1/transactions", node.url),
        &json!({ "transaction": hex::encode(transfer.encode()) }),
    );
    assert_eq!(code, 202, "{body}");
    let included_at = wait_for("the transfer to be included", WAIT, || {
        let (code, body) = node.get(&format!("/v1/transactions/{}", transfer.hash()));
        (code == 200 && body["status"] == "included").then(|| body["height"].as_u64().unwrap())
    });
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
        5
    );

    node.kill();
    let node = RunNode::start(&config_path);
    wait_for("blocks after the restart", WAIT, || {
        (executed_height(&node) > latest + 2).then_some(())
    });
    check_history(&node, &receiver);
    let latest = executed_height(&node);
    assert_eq!(
        verified_account(&node, &receiver, latest).unwrap().balance,
        5
    );
}
