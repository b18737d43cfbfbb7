//! `optimistic` settlement on a four-validator testnet whose node 0 runs a faulty executor:
//! its wrong claims are challenged, rejected and slashed while honest claims finalize; a
//! deposit reaches the execution layer, a withdrawal is proven against a finalized output
//! root and credited once; and value is conserved on both sides of the bridge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lamina_primitives::bridge::{Deposit, DepositData, FinalizeWithdrawal};
use lamina_primitives::interfaces::settlement::SettlementMessage;
use lamina_primitives::{Address, Keypair, Transaction};
use lamina_tests::{post_json, wait_for, Testnet};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);
const HONEST: [usize; 3] = [1, 2, 3];
const DEPOSIT: u64 = 5_000;
const WITHDRAW: u64 = 3_000;

fn account(i: usize) -> Keypair {
    Keypair::deterministic(&format!("account-{i}"))
}

fn genesis(testnet: &Testnet) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(testnet.dir().join("node0").join("genesis.json")).unwrap(),
    )
    .unwrap()
}

fn submit(testnet: &Testnet, node: usize, message: &SettlementMessage) -> (u16, Value) {
    post_json(
        &format!("{}/v1/settlement/messages", testnet.node(node).url),
        &serde_json::to_value(message).unwrap(),
    )
}

fn status(testnet: &Testnet, node: usize) -> Value {
    testnet.node(node).get("/v1/status").1
}

fn optimistic(testnet: &Testnet, node: usize) -> Value {
    status(testnet, node)["settlement"]["optimistic"].clone()
}

fn ledger_balance(testnet: &Testnet, node: usize, address: Address) -> u64 {
    let (code, account) = testnet
        .node(node)
        .get(&format!("/v1/settlement/accounts/{address}"));
    assert_eq!(code, 200, "{account}");
    account["balance"].as_u64().unwrap()
}

fn execution_balance(testnet: &Testnet, node: usize, address: Address, height: u64) -> u64 {
    let (code, account) = testnet
        .node(node)
        .get(&format!("/v1/accounts/{address}?height={height}"));
    assert_eq!(code, 200, "{account}");
    account["balance"].as_u64().unwrap()
}

fn finalized_batches(testnet: &Testnet, node: usize) -> Vec<Value> {
    let (code, page) = testnet.node(node).get("/v1/settlement/batches");
    assert_eq!(code, 200, "{page}");
    page["batches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["status"]["status"] == "finalized")
        .cloned()
        .collect()
}

#[test]
fn faulty_claims_are_rejected_and_the_bridge_conserves_value() {
    let mut testnet = Testnet::init_with(
        4,
        100,
        &["--settlement", "optimistic", "--faulty-executor", "0"],
    );
    // Three heights per batch, so the claim of each batch falls to another proposer in turn.
    testnet.edit_configs(|config| {
        let edited = config
            .replace("batch_size = 4", "batch_size = 3")
            .replace("challenge_window = 10", "challenge_window = 8");
        assert_ne!(edited, config, "no optimistic settings in {config}");
        edited
    });
    for i in 0..4 {
        testnet.start_node(i);
    }
    let genesis = genesis(&testnet);
    let chain = genesis["chain_id"].as_str().unwrap().to_string();
    let faulty: Address = genesis["validators"][0]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let summary = optimistic(&testnet, 1);
    assert_eq!(status(&testnet, 1)["settlement"]["mode"], "optimistic");
    let funds = 1_000_000u64;
    assert_eq!(summary["bond"], 1000);

    // The faulty node's claims are challenged and rejected: its bond is slashed on every
    // honest ledger, and honest claims of the same batches finalize.
    wait_for(
        "a wrong claim to be slashed and a re-claimed batch to finalize",
        WAIT,
        || {
            let slashed = ledger_balance(&testnet, 1, faulty) < funds;
            let reclaimed = finalized_batches(&testnet, 1)
                .iter()
                .any(|b| b["attempt"].as_u64().unwrap() >= 1);
            (slashed && reclaimed).then_some(())
        },
    );
    let burned = optimistic(&testnet, 1)["burned"].as_u64().unwrap();
    assert!(burned > 0);
    // The batch's history shows the faulty node's rejected claim and why.
    let reclaimed = finalized_batches(&testnet, 1)
        .into_iter()
        .find(|b| b["attempt"].as_u64().unwrap() >= 1)
        .unwrap();
    let rejected = &reclaimed["rejected_claims"][0];
    assert_eq!(rejected["proposer"], faulty.to_string(), "{reclaimed}");
    assert_eq!(rejected["reason"]["reason"], "wrong_output", "{reclaimed}");

    // A deposit from a genesis account's settlement balance to its execution account.
    let depositor = account(0);
    let deposit = SettlementMessage::Deposit(Deposit::sign(
        &chain,
        &depositor,
        DepositData {
            to: depositor.address(),
            amount: DEPOSIT,
            nonce: 0,
        },
    ));
    let executed_balance = || {
        let (code, account) = testnet
            .node(2)
            .get(&format!("/v1/accounts/{}", depositor.address()));
        assert_eq!(code, 200, "{account}");
        account["balance"].as_u64().unwrap()
    };
    let before = ledger_balance(&testnet, 1, depositor.address());
    let executed_before = executed_balance();
    let (code, body) = submit(&testnet, 1, &deposit);
    assert_eq!(code, 202, "{body}");
    let (code, body) = submit(
        &testnet,
        2,
        &SettlementMessage::Deposit(Deposit::sign(
            &chain,
            &depositor,
            DepositData {
                to: depositor.address(),
                amount: u64::MAX,
                nonce: 0,
            },
        )),
    );
    assert_eq!(code, 422, "an overdraft is refused: {body}");
    assert_eq!(body["error_code"], "invalid_settlement_message");
    // Each node applies the deposit when it executes the block: wait for both nodes read here.
    wait_for(
        "the deposit to be credited on execution and debited on the ledger",
        WAIT,
        || {
            let status = status(&testnet, 2);
            let deposited = status["settlement"]["optimistic"]["total_deposited"] == DEPOSIT;
            let credited = executed_balance() == executed_before + DEPOSIT;
            let debited = ledger_balance(&testnet, 1, depositor.address()) == before - DEPOSIT;
            (deposited && credited && debited).then_some(())
        },
    );

    // A withdrawal burns on execution and is credited on the ledger once final.
    let (_, account) = testnet
        .node(3)
        .get(&format!("/v1/accounts/{}", depositor.address()));
    let nonce = account["nonce"].as_u64().unwrap();
    let withdraw = Transaction::withdraw(&chain, &depositor, nonce, depositor.address(), WITHDRAW);
    let (code, body) = post_json(
        &format!("{}/v1/transactions", testnet.node(3).url),
        &json!({ "transaction": hex::encode(withdraw.encode()) }),
    );
    assert_eq!(code, 202, "{body}");
    let hash = body["hash"].as_str().unwrap().to_string();
    // Wait on the node asked for the proof below: the node the withdrawal was sent to may
    // have executed it first.
    let id = wait_for("the withdrawal to be executed", WAIT, || {
        let (_, found) = testnet.node(1).get(&format!("/v1/transactions/{hash}"));
        found["receipt"]["withdrawal_id"].as_u64()
    });
    let proof_path = format!("/v1/bridge/withdrawals/{id}/proof");
    let (code, early) = testnet.node(1).get(&proof_path);
    if code != 200 {
        assert_eq!(code, 409, "{early}");
        assert_eq!(early["error_code"], "withdrawal_not_final");
    }
    let proven = wait_for("the withdrawal's batch to finalize", WAIT, || {
        let (code, proven) = testnet.node(1).get(&proof_path);
        (code == 200).then_some(proven)
    });
    let finalize: SettlementMessage = serde_json::from_value(proven["finalize"].clone()).unwrap();
    let SettlementMessage::FinalizeWithdrawal(good) = &finalize else {
        panic!("not a finalization: {proven}");
    };

    // A forged amount and a batch that is not final are refused with the reason.
    let forged = FinalizeWithdrawal {
        withdrawal: lamina_primitives::bridge::Withdrawal {
            amount: WITHDRAW * 2,
            ..good.withdrawal
        },
        ..good.clone()
    };
    let (code, body) = submit(&testnet, 1, &SettlementMessage::FinalizeWithdrawal(forged));
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("proof"),
        "{body}"
    );
    let next_batch = optimistic(&testnet, 1)["next_batch"].as_u64().unwrap();
    let early = FinalizeWithdrawal {
        batch: next_batch + 5,
        ..good.clone()
    };
    let (code, body) = submit(&testnet, 1, &SettlementMessage::FinalizeWithdrawal(early));
    assert_eq!(code, 422, "{body}");

    let recipient_before = ledger_balance(&testnet, 1, depositor.address());
    let (code, body) = submit(&testnet, 1, &finalize);
    assert_eq!(code, 202, "{body}");
    wait_for(
        "the withdrawal to be credited on every honest ledger",
        WAIT,
        || {
            HONEST
                .iter()
                .all(|&i| {
                    ledger_balance(&testnet, i, depositor.address()) == recipient_before + WITHDRAW
                })
                .then_some(())
        },
    );
    let (code, body) = submit(&testnet, 2, &finalize);
    assert_eq!(code, 422, "finalizing twice is refused: {body}");
    assert!(
        body["message"].as_str().unwrap().contains("already"),
        "{body}"
    );

    // Honest ledgers agree on every batch they have all finalized.
    let lists: Vec<Vec<Value>> = HONEST
        .iter()
        .map(|&i| finalized_batches(&testnet, i))
        .collect();
    let common = lists.iter().map(Vec::len).min().unwrap();
    assert!(common > 0);
    for list in &lists[1..] {
        assert_eq!(list[..common], lists[0][..common]);
    }

    // Conservation, settlement side: balances + bonds + burned + escrow = genesis supply.
    let summary = optimistic(&testnet, 2);
    let field = |name: &str| summary[name].as_u64().unwrap();
    assert_eq!(field("total_deposited"), DEPOSIT);
    assert_eq!(field("total_withdrawn"), WITHDRAW);
    assert_eq!(
        field("total_balances") + field("locked") + field("burned") + field("total_deposited")
            - field("total_withdrawn"),
        field("genesis_supply")
    );

    // Execution side, at one executed height: the genesis supply plus deposits minus what
    // withdrawals burned (fees only move to proposers).
    let height = status(&testnet, 2)["executed_height"].as_u64().unwrap();
    let mut holders: Vec<Address> = genesis["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["address"].as_str().unwrap().parse().unwrap())
        .collect();
    let genesis_supply: u64 = genesis["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["balance"].as_u64().unwrap())
        .sum();
    holders.extend(
        genesis["validators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["address"].as_str().unwrap().parse::<Address>().unwrap()),
    );
    let total: u64 = holders
        .iter()
        .map(|a| execution_balance(&testnet, 2, *a, height))
        .sum();
    assert_eq!(total, genesis_supply + DEPOSIT - WITHDRAW);
}
