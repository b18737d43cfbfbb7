//! Whole-system tests of a single-node chain: the real `lamina dev` binary on a loopback
//! port, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use lamina_primitives::state_proof::{StateKey, StateProof};
use lamina_primitives::{codec, Account, Address, Blob, Hash, Keypair, Namespace, Transaction};
use lamina_tests::{post_json, wait_for, DevNode};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn submit(node: &DevNode, tx: &Transaction) -> (u16, Value) {
    post_json(
        &format!("{}/v1/transactions", node.url),
        &json!({ "transaction": hex::encode(tx.encode()) }),
    )
}

fn wait_included(node: &DevNode, hash: &str) -> Value {
    wait_for(&format!("inclusion of {hash}"), WAIT, || {
        let (code, body) = node.get(&format!("/v1/transactions/{hash}"));
        (code == 200 && body["status"] == "included").then_some(body)
    })
}

fn account(node: &DevNode, address: &Address) -> (u64, u64) {
    let (code, body) = node.get(&format!("/v1/accounts/{address}"));
    assert_eq!(code, 200, "{body}");
    (
        body["balance"].as_u64().unwrap(),
        body["nonce"].as_u64().unwrap(),
    )
}

fn verify_proof(node: &DevNode, address: &Address, height: Option<u64>) -> Value {
    let query = height.map(|h| format!("?height={h}")).unwrap_or_default();
    let (code, body) = node.get(&format!("/v1/accounts/{address}/proof{query}"));
    assert_eq!(code, 200, "{body}");
    let root: Hash = body["state_root"].as_str().unwrap().parse().unwrap();
    let proof: StateProof = serde_json::from_value(body["proof"].clone()).unwrap();
    let key_hash = StateKey::Account(*address).key_hash();
    let value = body["account"].as_object().map(|_| {
        codec::encode(&serde_json::from_value::<Account>(body["account"].clone()).unwrap())
    });
    proof
        .verify(&root, &key_hash, value.as_deref())
        .expect("proof verifies");
    if let Some(value) = &value {
        let mut tampered = value.clone();
        tampered[0] ^= 1;
        assert!(proof.verify(&root, &key_hash, Some(&tampered)).is_err());
    }
    body
}

#[test]
fn transfers_over_http_update_balances_nonces_and_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), 100);
    let status = node.status();
    assert_eq!(status["chain_id"], "lamina-dev");
    assert_eq!(status["layers"]["consensus"]["kind"], "solo");
    assert_eq!(status["layers"]["execution"]["kind"], "sequential");
    assert_eq!(status["layers"]["data_availability"]["kind"], "replicated");
    assert_eq!(status["layers"]["settlement"]["kind"], "attested");
    assert_eq!(node.testnet.accounts.len(), 10);

    let alice = node.testnet.account_key(0).unwrap();
    let bob = node.testnet.account_key(1).unwrap();
    let carol = Keypair::deterministic("carol-not-prefunded").address();
    let (alice_start, _) = account(&node, &alice.address());
    let (bob_start, _) = account(&node, &bob.address());

    // Three transfers from alice (consecutive nonces) and one from bob, all at once.
    let txs = vec![
        Transaction::transfer("lamina-dev", &alice, 0, bob.address(), 100),
        Transaction::transfer("lamina-dev", &alice, 1, carol, 50),
        Transaction::transfer("lamina-dev", &alice, 2, bob.address(), 7),
        Transaction::transfer("lamina-dev", &bob, 0, carol, 1_000),
    ];
    for tx in &txs {
        let (code, body) = submit(&node, tx);
        assert_eq!(code, 202, "{body}");
        assert_eq!(body["hash"], tx.hash().to_string());
    }
    let mut heights = BTreeMap::new();
    for tx in &txs {
        let included = wait_included(&node, &tx.hash().to_string());
        assert_eq!(
            included["receipt"]["outcome"]["status"], "success",
            "{included}"
        );
        heights.insert(tx.hash(), included["height"].as_u64().unwrap());
    }
    // Wait until the last including height is executed (it is, since receipts exist), then
    // check the arithmetic: fee 1 per transaction, paid to the validator.
    assert_eq!(account(&node, &alice.address()), (alice_start - 157 - 3, 3));
    assert_eq!(account(&node, &bob.address()), (bob_start + 107 - 1_001, 1));
    assert_eq!(account(&node, &carol), (1_050, 0));

    // The block holding a transaction lists it.
    let height = heights[&txs[0].hash()];
    let (code, block) = node.get(&format!("/v1/blocks/{height}"));
    assert_eq!(code, 200);
    let listed: Vec<&str> = block["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["hash"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&txs[0].hash().to_string().as_str()));
    assert_eq!(
        block["certificate"]["signatures"].as_array().unwrap().len(),
        1
    );

    // Proofs: present accounts, an absent one, and an older height.
    verify_proof(&node, &carol, None);
    let absent = verify_proof(&node, &Keypair::deterministic("nobody").address(), None);
    assert!(absent["account"].is_null());
    let old = verify_proof(&node, &carol, Some(height - 1));
    assert!(
        old["account"].is_null(),
        "carol did not exist before height {height}"
    );

    // A replayed transaction is refused with a reason.
    let (code, body) = submit(&node, &txs[0]);
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error_code"], "nonce_too_low");

    // The heights with transactions get settled (one validator attests them).
    let last = *heights.values().max().unwrap();
    wait_for("settlement of the transfers", WAIT, || {
        (node.status()["settled_height"].as_u64().unwrap() >= last).then_some(())
    });
    let (code, settled) = node.get(&format!("/v1/settlement/heights/{last}"));
    assert_eq!(code, 200, "{settled}");
    assert_eq!(settled["status"], "settled");

    // A DA share of that block verifies against the header's data_root.
    let (code, share) = node.get(&format!("/v1/da/shares/{height}/0"));
    assert_eq!(code, 200, "{share}");
    assert_eq!(share["data_root"], block["header"]["data_root"]);
    let proof: lamina_primitives::merkle::MerkleProof =
        serde_json::from_value(share["proof"].clone()).unwrap();
    let root: Hash = share["data_root"].as_str().unwrap().parse().unwrap();
    assert!(proof.verify(
        &root,
        &hex::decode(share["share"].as_str().unwrap()).unwrap()
    ));

    // Outside data: a blob is accepted into the pool and a later block carries it away; the
    // chain's own namespaces are refused.
    let data = vec![0xab; 3000];
    let (code, accepted) = post_json(
        &format!("{}/v1/da/blobs", node.url),
        &json!({"namespace": hex::encode(b"rollup-1"), "data": hex::encode(&data)}),
    );
    assert_eq!(code, 202, "{accepted}");
    let blob = Blob {
        namespace: Namespace(*b"rollup-1"),
        data,
    };
    assert_eq!(accepted["commitment"], blob.commitment().to_string());
    wait_for("a block to carry the blob", WAIT, || {
        (node.status()["data_availability"]["pending_blobs"] == 0).then_some(())
    });
    let (code, refused) = post_json(
        &format!("{}/v1/da/blobs", node.url),
        &json!({"namespace": hex::encode(b"lam-exec"), "data": "00"}),
    );
    assert_eq!(code, 422, "{refused}");
    assert_eq!(refused["error_code"], "reserved_namespace");

    let (code, metrics) = (
        200,
        reqwest::blocking::get(format!("{}/metrics", node.url))
            .unwrap()
            .text()
            .unwrap(),
    );
    assert_eq!(code, 200);
    assert!(metrics.contains("lamina_committed_height"), "{metrics}");
}

#[test]
fn sigkill_then_restart_keeps_every_included_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = DevNode::start(dir.path(), 50);
    let alice = node.testnet.account_key(2).unwrap();
    let to = Keypair::deterministic("crash-recipient").address();

    // Submit a stream of transfers; remember where each one was included.
    let mut included = BTreeMap::new();
    for nonce in 0..30u64 {
        let tx = Transaction::transfer("lamina-dev", &alice, nonce, to, 10);
        let (code, body) = submit(&node, &tx);
        assert_eq!(code, 202, "{body}");
        if nonce % 10 == 9 {
            let body = wait_included(&node, &tx.hash().to_string());
            included.insert(tx.hash().to_string(), body["height"].as_u64().unwrap());
        }
    }
    // Also record block hashes at those heights.
    let block_hash = |node: &DevNode, height: u64| {
        let (code, block) = node.get(&format!("/v1/blocks/{height}"));
        assert_eq!(code, 200, "{block}");
        block["hash"].as_str().unwrap().to_string()
    };
    let hashes: BTreeMap<u64, String> = included
        .values()
        .map(|h| (*h, block_hash(&node, *h)))
        .collect();
    let height_before = node.status()["height"].as_u64().unwrap();

    node.kill();
    let node = DevNode::start(dir.path(), 50);
    let status = node.status();
    assert!(
        status["height"].as_u64().unwrap() >= height_before,
        "{status}"
    );
    for (hash, height) in &included {
        let (code, body) = node.get(&format!("/v1/transactions/{hash}"));
        assert_eq!(code, 200, "{hash} lost after SIGKILL: {body}");
        assert_eq!(body["height"].as_u64(), Some(*height));
    }
    for (height, hash) in &hashes {
        assert_eq!(
            &block_hash(&node, *height),
            hash,
            "block {height} changed after restart"
        );
    }
    // The chain continues: the next nonce is accepted and included.
    let (_, nonce) = account(&node, &alice.address());
    assert!(nonce >= 30 || nonce >= 10, "nonce {nonce}");
    let next = Transaction::transfer("lamina-dev", &alice, nonce, to, 1);
    let (code, body) = submit(&node, &next);
    assert_eq!(code, 202, "{body}");
    wait_included(&node, &next.hash().to_string());
}

#[test]
fn ctrl_c_stops_cleanly_and_resumes_the_same_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = DevNode::start(dir.path(), 50);
    let alice = node.testnet.account_key(3).unwrap();
    let tx = Transaction::transfer("lamina-dev", &alice, 0, Address([9; 32]), 5);
    assert_eq!(submit(&node, &tx).0, 202);
    let included = wait_included(&node, &tx.hash().to_string());
    let chain_id = node.status()["chain_id"].clone();
    assert_eq!(
        node.interrupt(),
        Some(0),
        "lamina dev should exit 0 on Ctrl-C"
    );

    let node = DevNode::start(dir.path(), 50);
    assert_eq!(node.status()["chain_id"], chain_id);
    let (code, again) = node.get(&format!("/v1/transactions/{}", tx.hash()));
    assert_eq!(code, 200);
    assert_eq!(again["height"], included["height"]);
}

#[test]
fn a_batch_submission_judges_each_transaction_and_includes_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), 100);
    let alice = node.testnet.account_key(0).unwrap();
    let to = Address([7; 32]);
    let first = Transaction::transfer("lamina-dev", &alice, 0, to, 1);
    let second = Transaction::transfer("lamina-dev", &alice, 1, to, 2);
    let mut forged = Transaction::transfer("lamina-dev", &alice, 2, to, 3);
    forged.signature.0[0] ^= 1;
    let hex_of = |tx: &Transaction| hex::encode(tx.encode());
    let url = format!("{}/v1/transactions/batch", node.url);
    let (code, body) = post_json(
        &url,
        &json!({ "transactions": [hex_of(&first), hex_of(&forged), "zz", hex_of(&second), hex_of(&first)] }),
    );
    assert_eq!(code, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "{body}");
    assert_eq!(results[0]["hash"], first.hash().to_string());
    assert_eq!(results[1]["error_code"], "invalid_signature");
    assert_eq!(results[2]["error_code"], "invalid_transaction");
    assert_eq!(results[3]["hash"], second.hash().to_string());
    assert_eq!(results[4]["error_code"], "already_pending");
    for tx in [&first, &second] {
        wait_included(&node, &tx.hash().to_string());
    }
    assert_eq!(account(&node, &to).0, 3);

    let (code, body) = post_json(&url, &json!({ "transactions": [] }));
    assert_eq!(
        (code, body["error_code"].as_str()),
        (400, Some("empty_batch"))
    );
    let (code, body) = post_json(&url, &json!({ "transactions": vec!["00"; 1025] }));
    assert_eq!(
        (code, body["error_code"].as_str()),
        (413, Some("batch_too_large"))
    );
}

#[test]
fn bad_http_input_gets_json_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), 100);
    let client = lamina_tests::http();
    let url = |path: &str| format!("{}{path}", node.url);
    let check = |response: reqwest::blocking::Response, status: u16, code: &str| {
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().expect("error body is JSON");
        assert_eq!(body["error_code"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    };
    let post = |body: &str| {
        client
            .post(url("/v1/transactions"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };

    check(post("{not json"), 400, "malformed_json");
    check(post(r#"{"transaction": 42}"#), 422, "invalid_body");
    check(post(r#"{"tx": "00"}"#), 422, "invalid_body");
    check(post(r#"{"transaction": "zz"}"#), 400, "invalid_transaction");
    check(
        post(r#"{"transaction": "0011"}"#),
        400,
        "invalid_transaction",
    );
    let huge = format!(r#"{{"transaction": "{}"}}"#, "00".repeat(64 * 1024));
    check(post(&huge), 413, "body_too_large");
    let unsigned = Transaction {
        signature: lamina_primitives::Signature([0; 64]),
        ..Transaction::transfer(
            "lamina-dev",
            &node.testnet.account_key(0).unwrap(),
            0,
            Address([1; 32]),
            1,
        )
    };
    check(
        post(&json!({"transaction": hex::encode(unsigned.encode())}).to_string()),
        422,
        "invalid_signature",
    );
    let other_chain = Transaction::transfer(
        "other-chain",
        &node.testnet.account_key(0).unwrap(),
        0,
        Address([1; 32]),
        1,
    );
    check(
        post(&json!({"transaction": hex::encode(other_chain.encode())}).to_string()),
        422,
        "wrong_chain_id",
    );
    let poor = Transaction::transfer(
        "lamina-dev",
        &Keypair::deterministic("poor"),
        0,
        Address([1; 32]),
        1,
    );
    check(
        post(&json!({"transaction": hex::encode(poor.encode())}).to_string()),
        422,
        "insufficient_balance",
    );

    check(
        client.get(url("/v1/accounts/not-hex")).send().unwrap(),
        400,
        "invalid_address",
    );
    check(
        client.get(url("/v1/accounts/abcd")).send().unwrap(),
        400,
        "invalid_address",
    );
    check(
        client
            .get(url(&format!(
                "/v1/accounts/{}/proof?height=99999999",
                Address([1; 32])
            )))
            .send()
            .unwrap(),
        404,
        "height_not_found",
    );
    check(
        client
            .get(url(&format!("/v1/accounts/{}?height=x", Address([1; 32]))))
            .send()
            .unwrap(),
        400,
        "invalid_query",
    );
    check(
        client.get(url("/v1/blocks/99999999")).send().unwrap(),
        404,
        "block_not_found",
    );
    check(
        client.get(url("/v1/blocks/-1")).send().unwrap(),
        400,
        "invalid_path",
    );
    check(
        client.get(url("/v1/transactions/1234")).send().unwrap(),
        400,
        "invalid_hash",
    );
    check(
        client
            .get(url(&format!("/v1/transactions/{}", Hash::ZERO)))
            .send()
            .unwrap(),
        404,
        "transaction_not_found",
    );
    check(
        client.get(url("/v1/nothing-here")).send().unwrap(),
        404,
        "route_not_found",
    );
    check(
        client.delete(url("/v1/status")).send().unwrap(),
        405,
        "method_not_allowed",
    );
    // The optimistic routes on an `attested` chain.
    check(
        client.get(url("/v1/settlement/batches")).send().unwrap(),
        409,
        "unsupported_in_settlement_mode",
    );
    check(
        client
            .post(url("/v1/settlement/messages"))
            .json(&serde_json::json!({
                "type": "attestation", "height": 1, "state_root": Hash::ZERO,
                "validator": Hash::ZERO, "signature": "00".repeat(64)
            }))
            .send()
            .unwrap(),
        409,
        "unsupported_in_settlement_mode",
    );
    check(
        client.get(url("/v1/da/roots/1")).send().unwrap(),
        409,
        "no_square",
    );
    check(
        client
            .get(url("/v1/bridge/withdrawals/0/proof"))
            .send()
            .unwrap(),
        404,
        "withdrawal_not_found",
    );

    // Still serving, and nothing was admitted.
    let status = node.status();
    assert_eq!(status["mempool_transactions"], 0, "{status}");
}
