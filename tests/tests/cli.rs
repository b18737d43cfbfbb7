//! The CLI against a real dev chain: `lamina tx transfer` and `lamina query account`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use lamina_primitives::Keypair;
use lamina_tests::{lamina_bin, wait_for, DevNode};
use serde_json::Value;

#[test]
fn tx_transfer_waits_for_inclusion_and_query_verifies_the_proof() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), 100);
    let key = &node.testnet.accounts[4].secret_key;
    let to = Keypair::deterministic("cli-recipient")
        .address()
        .to_string();
    let output = Command::new(lamina_bin())
        .args([
            "tx", "transfer", "--node", &node.url, "--key", key, "--to", &to, "--amount", "42",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let receipt: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(receipt["status"], "included", "{receipt}");
    assert_eq!(
        receipt["receipt"]["outcome"]["status"], "success",
        "{receipt}"
    );

    // The proof verifies at once; the root becomes settled once the validator's attestation
    // is in a later block.
    let query = || {
        let output = Command::new(lamina_bin())
            .args(["query", "account", "--node", &node.url, "--address", &to])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("balance     42"), "{stdout}");
        assert!(
            stdout.contains("proof       verified (presence"),
            "{stdout}"
        );
        stdout
    };
    wait_for(
        "the queried root to be settled",
        Duration::from_secs(60),
        || Some(query()).filter(|stdout| stdout.contains("root is settled")),
    );
}
