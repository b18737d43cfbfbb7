//! The `reed-solomon` DA scheme on a four-validator testnet: blocks commit, an outside blob
//! is carried and proven by namespace on every node, a light client's samples of the
//! extended square verify against the header, and the block is rebuilt from parity shares
//! gathered from peers; beyond the retention window each node keeps only its rows and
//! rebuilds old blocks from its peers'.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use lamina_primitives::da::NamespaceProof;
use lamina_primitives::interfaces::da::ShareHolder;
use lamina_primitives::{Blob, Hash, Namespace};
use lamina_tests::{lamina_bin, post_json, wait_for, Testnet};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn reed_solomon_testnet_carries_proves_and_samples_blobs() {
    let mut testnet = Testnet::init(4, 100);
    testnet.edit_configs(|config| {
        let edited = config.replace("kind = \"replicated\"", "kind = \"reed-solomon\"");
        assert_ne!(edited, config, "no DA kind in {config}");
        edited
    });
    // Node 3 withholds every parity share, as a producer hiding data would.
    let node3 = testnet.dir().join("node3").join("config.toml");
    let config = std::fs::read_to_string(&node3).unwrap();
    let withholding = config.replace("withhold_parity = false", "withhold_parity = true");
    assert_ne!(withholding, config, "no withhold_parity in {config}");
    let config = withholding;
    std::fs::write(&node3, config).unwrap();
    for i in 0..4 {
        testnet.start_node(i);
    }
    let (_, status) = testnet.node(1).get("/v1/status");
    assert_eq!(status["data_availability"]["scheme"], "reed-solomon");

    // A blob submitted to node 0 rides in the next block node 0 proposes.
    let namespace = Namespace(*b"rollup-7");
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let (code, accepted) = post_json(
        &format!("{}/v1/da/blobs", testnet.node(0).url),
        &json!({"namespace": namespace.to_string(), "data": hex::encode(&data)}),
    );
    assert_eq!(code, 202, "{accepted}");
    let commitment = Blob {
        namespace,
        data: data.clone(),
    }
    .commitment();
    assert_eq!(accepted["commitment"], commitment.to_string());
    wait_for("a block to carry the blob", WAIT, || {
        let (_, status) = testnet.node(0).get("/v1/status");
        (status["data_availability"]["pending_blobs"] == 0).then_some(())
    });
    let tip = testnet.height(0).unwrap();
    testnet.wait_for_height(tip, WAIT);
    testnet.wait_for_stored(tip, WAIT);
    testnet.assert_same_chain(tip);

    // Every node finds it by namespace, with a proof against the header's data_root; other
    // heights prove they hold none.
    let mut found = None;
    for height in 1..=tip {
        let (code, header) = testnet.node(3).get(&format!("/v1/blocks/{height}"));
        assert_eq!(code, 200, "{header}");
        let data_root: Hash =
            serde_json::from_value(header["header"]["data_root"].clone()).unwrap();
        let (code, answer) = testnet
            .node(2)
            .get(&format!("/v1/da/blobs/{height}/{namespace}"));
        assert_eq!(code, 200, "{answer}");
        let proof: NamespaceProof = serde_json::from_value(answer["proof"].clone()).unwrap();
        let proven = proof.verify(&data_root, namespace).unwrap();
        let blobs = answer["blobs"].as_array().unwrap();
        assert_eq!(proven.len(), blobs.len());
        if let Some(blob) = blobs.first() {
            assert_eq!(proven, vec![data.clone()]);
            assert_eq!(blob["commitment"], commitment.to_string());
            found = Some(height);
        }
    }
    let height = found.expect("no block carries the blob");
    let (code, missing) = testnet
        .node(1)
        .get(&format!("/v1/da/blobs/{}/{namespace}", tip + 1000));
    assert_eq!(code, 404, "{missing}");
    assert_eq!(missing["error_code"], "height_not_found");

    // A light client samples node 2 and is sure the block is available.
    let sample = |node: usize| {
        Command::new(lamina_bin())
            .args(["da", "sample", "--samples", "16", "--json", "--node"])
            .arg(&testnet.node(node).url)
            .args(["--height", &height.to_string()])
            .output()
            .unwrap()
    };
    let output = sample(2);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verified"], 16, "{report}");
    // 1 − 0.75^16 ≈ 0.99.
    assert!(report["confidence"].as_f64().unwrap() > 0.989, "{report}");
    let width = report["width"].as_u64().unwrap();
    assert!(width >= 4, "{report}");

    // Sampling the withholding node fails: three quarters of its cells are not served, so
    // 16 samples all land in the original quadrant with probability 0.25^16.
    let output = sample(3);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["verified"].as_u64().unwrap() < 16, "{report}");
    assert_eq!(report["confidence"], 0.0, "{report}");
    assert!(
        report["failures"][0]
            .as_str()
            .unwrap()
            .contains("share_withheld"),
        "{report}"
    );

    // The block is rebuilt from parity shares alone (its original quadrant decoded from
    // them), gathered from node 1, or from the withholding node 3 and node 2 together; node 3
    // alone does not serve enough.
    let rebuild = |nodes: &[usize]| {
        let urls: Vec<&str> = nodes
            .iter()
            .map(|&i| testnet.node(i).url.as_str())
            .collect();
        Command::new(lamina_bin())
            .args(["da", "rebuild", "--parity-only", "--json", "--nodes"])
            .arg(urls.join(","))
            .args(["--height", &height.to_string()])
            .output()
            .unwrap()
    };
    for nodes in [&[1][..], &[3, 2][..]] {
        let output = rebuild(nodes);
        assert!(
            output.status.success(),
            "rebuild from {nodes:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            report["parity_shares"], report["shares_gathered"],
            "{report}"
        );
        let blobs = report["blobs"].as_array().unwrap();
        assert!(
            blobs
                .iter()
                .any(|b| b["commitment"] == commitment.to_string() && b["size"] == data.len()),
            "{report}"
        );
    }
    let output = rebuild(&[3]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot be rebuilt"), "{stderr}");
    let (code, roots) = testnet.node(1).get(&format!("/v1/da/roots/{height}"));
    assert_eq!(code, 200, "{roots}");
    assert_eq!(roots["row_roots"].as_array().unwrap().len() as u64, width);

    // A cell outside the square is refused, and sampling a height the node lacks fails.
    let (code, outside) = testnet
        .node(2)
        .get(&format!("/v1/da/shares/{height}/{width}/0"));
    assert_eq!(code, 404, "{outside}");
    assert_eq!(outside["error_code"], "share_not_found");
    let output = Command::new(lamina_bin())
        .args(["da", "sample", "--node"])
        .arg(&testnet.node(2).url)
        .args(["--height", &(tip + 1000).to_string()])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// When every validator commits to badly encoded squares (fault injection), the chain
/// carries them, but a client rebuilding a block from parity shares finds the bad line, and
/// its compact proof verifies on any node; a tampered proof does not.
#[test]
fn a_badly_encoded_block_is_caught_with_a_proof_any_node_checks() {
    let mut testnet = Testnet::init(4, 100);
    testnet.edit_configs(|config| {
        // Whole blocks: validators that recompute the same bad root commit them (proposals
        // sent as shares are rebuilt from rows, proven bad and refused: see below).
        let edited = config
            .replace("kind = \"replicated\"", "kind = \"reed-solomon\"")
            .replace(
                "withhold_parity = false",
                "withhold_parity = false\nbad_encoding = true",
            )
            .replace("[network]\n", "[network]\ndissemination = \"whole\"\n");
        assert_ne!(edited, config);
        edited
    });
    for i in 0..4 {
        testnet.start_node(i);
    }
    let namespace = Namespace(*b"rollup-9");
    let (code, accepted) = post_json(
        &format!("{}/v1/da/blobs", testnet.node(0).url),
        &json!({"namespace": namespace.to_string(), "data": hex::encode([5u8; 3000])}),
    );
    assert_eq!(code, 202, "{accepted}");
    let height = wait_for("a block to carry the blob", WAIT, || {
        let tip = testnet.height(1)?;
        (1..=tip).find(|h| {
            let (_, answer) = testnet
                .node(1)
                .get(&format!("/v1/da/blobs/{h}/{namespace}"));
            answer["blobs"].as_array().is_some_and(|b| !b.is_empty())
        })
    });
    let output = Command::new(lamina_bin())
        .args(["da", "rebuild", "--parity-only", "--json", "--nodes"])
        .arg(&testnet.node(1).url)
        .args(["--height", &height.to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let proof = report["bad_encoding"].clone();
    assert!(proof.is_object(), "{report}");

    let check = |proof: &Value| {
        post_json(
            &format!("{}/v1/da/bad-encoding", testnet.node(2).url),
            &json!({ "height": height, "proof": proof }),
        )
    };
    // The height was found on node 1; node 2 answers from its own header.
    testnet.wait_for_height(height, WAIT);
    let (code, verdict) = check(&proof);
    assert_eq!(code, 200, "{verdict}");
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["data_root"], report["data_root"]);
    // The same proof against another block, or with a line it does not prove, fails.
    testnet.wait_for_height(height + 1, WAIT);
    let (code, refused) = post_json(
        &format!("{}/v1/da/bad-encoding", testnet.node(2).url),
        &json!({ "height": height + 1, "proof": proof }),
    );
    assert_eq!(code, 422, "{refused}");
    assert_eq!(refused["error_code"], "invalid_bad_encoding_proof");
    let mut tampered = proof.clone();
    tampered["index"] = json!(proof["index"].as_u64().unwrap() ^ 1);
    let (code, refused) = check(&tampered);
    assert_eq!(code, 422, "{refused}");
}

/// Storage partitioning: beyond the retention window every validator keeps only its own
/// rows of a height's extended square (and the block store only header and certificate),
/// yet any node still serves the whole block, its blobs and any share, rebuilt from its
/// peers' rows; a validator that was down catches up through pruned heights, its peers
/// serving the blocks they rebuild.
#[test]
fn old_heights_are_kept_as_each_nodes_rows_and_rebuilt_from_peers() {
    const WINDOW: u64 = 4;
    let mut testnet = Testnet::init_with(
        4,
        100,
        &[
            "--data-availability",
            "reed-solomon",
            "--retention-window",
            &WINDOW.to_string(),
        ],
    );
    testnet.edit_configs(|config| {
        let mut table: toml::Table = toml::from_str(&config).unwrap();
        table["consensus"]
            .as_table_mut()
            .unwrap()
            .insert("create_empty_blocks".into(), true.into());
        toml::to_string(&table).unwrap()
    });
    for i in 0..4 {
        testnet.start_node(i);
    }

    // A 20 KB blob spreads over a square wide enough that each node holds a few rows.
    let namespace = Namespace(*b"archive1");
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    let height = include_blob(&testnet, 0, namespace, &data);
    let (code, block) = testnet.node(1).get(&format!("/v1/blocks/{height}"));
    assert_eq!(code, 200, "{block}");
    let hash = block["hash"].clone();

    // Node 3 stops; the others go on well past the window, and prune.
    testnet.kill_node(3);
    let target = height + WINDOW + 6;
    testnet.wait_for_height(target, WAIT);
    let mut held_rows = Vec::new();
    for i in 0..3 {
        let held = wait_for(&format!("node{i} to prune height {height}"), WAIT, || {
            let (code, held) = testnet.node(i).get(&format!("/v1/da/held/{height}"));
            assert_eq!(code, 200, "{held}");
            (held["pruned"] == true).then_some(held)
        });
        let k = held["original_width"].as_u64().unwrap();
        assert!(k >= 4, "the blob should need a wider square: {held}");
        let rows: Vec<u64> = serde_json::from_value(held["rows"].clone()).unwrap();
        let holder = ShareHolder {
            index: i as u32,
            count: 4,
        };
        assert_eq!(
            rows,
            holder.rows(height, 2 * k),
            "node{i} keeps its rows only"
        );
        held_rows.extend(rows);
    }
    // The metric moves once the block store has dropped the bodies too, after the DA layer.
    wait_for("node0's pruned-height metric", WAIT, || {
        (metric(&testnet, 0, "lamina_pruned_height") >= height).then_some(())
    });
    let kept = held_rows.len();
    held_rows.sort_unstable();
    held_rows.dedup();
    assert_eq!(held_rows.len(), kept, "no row is kept twice: {held_rows:?}");

    // Each of the three rebuilds the block, its blob and any share from the others' rows.
    for i in 0..3 {
        let (code, block) = testnet.node(i).get(&format!("/v1/blocks/{height}"));
        assert_eq!(code, 200, "node{i}: {block}");
        assert_eq!(block["hash"], hash);
        let data_root: Hash = serde_json::from_value(block["header"]["data_root"].clone()).unwrap();
        let (code, answer) = testnet
            .node(i)
            .get(&format!("/v1/da/blobs/{height}/{namespace}"));
        assert_eq!(code, 200, "node{i}: {answer}");
        let proof: NamespaceProof = serde_json::from_value(answer["proof"].clone()).unwrap();
        assert_eq!(
            proof.verify(&data_root, namespace).unwrap(),
            vec![data.clone()]
        );
    }
    let output = Command::new(lamina_bin())
        .args(["da", "sample", "--samples", "16", "--json", "--node"])
        .arg(&testnet.node(2).url)
        .args(["--height", &height.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sampling a pruned height: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Node 3 comes back and syncs every height it missed, pruned ones included, then
    // prunes its own copy to its rows.
    testnet.start_node(3);
    let tip = testnet.height(0).unwrap();
    testnet.wait_for_height(tip, WAIT);
    testnet.assert_same_chain(tip);
    let missed = target - 1;
    wait_for("node3 to prune what it synced", WAIT, || {
        let (_, held) = testnet.node(3).get(&format!("/v1/da/held/{missed}"));
        (held["pruned"] == true).then_some(())
    });
    let (_, held) = testnet.node(3).get(&format!("/v1/da/held/{missed}"));
    let k = held["original_width"].as_u64().unwrap();
    let rows: Vec<u64> = serde_json::from_value(held["rows"].clone()).unwrap();
    let holder = ShareHolder { index: 3, count: 4 };
    assert_eq!(rows, holder.rows(missed, 2 * k));
}

/// The value of the metric `name` on node `i`.
fn metric(testnet: &Testnet, i: usize, name: &str) -> u64 {
    let text = lamina_tests::http()
        .get(format!("{}/metrics", testnet.node(i).url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// Submits `data` as a blob in `namespace` to node `via`, waits for every running node to
/// have the block that carries it, and checks that they agree and each serves the blob;
/// returns its height.
fn include_blob(testnet: &Testnet, via: usize, namespace: Namespace, data: &[u8]) -> u64 {
    let (code, accepted) = post_json(
        &format!("{}/v1/da/blobs", testnet.node(via).url),
        &json!({"namespace": namespace.to_string(), "data": hex::encode(data)}),
    );
    assert_eq!(code, 202, "{accepted}");
    let height = wait_for("a block to carry the blob", WAIT, || {
        let tip = testnet.height(via)?;
        (1..=tip).find(|h| {
            let (_, block) = testnet.node(via).get(&format!("/v1/blocks/{h}"));
            block["blobs"].as_array().is_some_and(|blobs| {
                blobs
                    .iter()
                    .any(|b| b["namespace"] == namespace.to_string())
            })
        })
    });
    testnet.wait_for_height(height, WAIT);
    testnet.wait_for_stored(height, WAIT);
    testnet.assert_same_chain(height);
    let commitment = Blob {
        namespace,
        data: data.to_vec(),
    }
    .commitment();
    for i in testnet.running() {
        let (code, answer) = testnet
            .node(i)
            .get(&format!("/v1/da/blobs/{height}/{namespace}"));
        assert_eq!(code, 200, "node{i}: {answer}");
        assert_eq!(
            answer["blobs"][0]["commitment"],
            commitment.to_string(),
            "node{i}"
        );
    }
    height
}

/// How many running nodes have rebuilt a proposal from rows, and proposal parts sent in all.
fn rows_traffic(testnet: &Testnet) -> (Vec<u64>, u64) {
    let running = testnet.running();
    let rebuilt = running
        .iter()
        .map(|&i| metric(testnet, i, "lamina_proposals_rebuilt_total"))
        .collect();
    let parts = running
        .iter()
        .map(|&i| metric(testnet, i, "lamina_proposal_parts_sent_total"))
        .sum();
    (rebuilt, parts)
}

/// With `dissemination = "rows"`, a block with a blob travels as each validator's rows of
/// its extended square (empty blocks, whose two rows could not survive a faulty holder, go
/// whole): the three validators that did not propose it rebuild it from the rows and all
/// agree; with one validator down the others' rows still make `k`.
#[test]
fn proposals_travel_as_rows_and_every_node_rebuilds_them() {
    let mut testnet = Testnet::init_with(
        4,
        100,
        &[
            "--data-availability",
            "reed-solomon",
            "--dissemination",
            "rows",
        ],
    );
    for i in 0..4 {
        testnet.start_node(i);
    }

    // A 100 KB blob makes a square wide enough for its rows to survive a faulty holder.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    include_blob(&testnet, 1, Namespace(*b"rows-one"), &data);
    let (rebuilt, parts) = rows_traffic(&testnet);
    assert!(parts >= 3, "{parts} parts sent");
    assert!(
        rebuilt.iter().filter(|&&n| n > 0).count() >= 3,
        "rebuilt per node: {rebuilt:?}"
    );

    // Without node 3 (and its rows) the others still gather k rows.
    testnet.kill_node(3);
    let (before, _) = rows_traffic(&testnet);
    include_blob(&testnet, 0, Namespace(*b"rows-two"), &data);
    let (after, _) = rows_traffic(&testnet);
    let rebuilt_again = before.iter().zip(&after).filter(|(b, a)| a > b).count();
    assert!(
        rebuilt_again >= 2,
        "rebuilt per node: {before:?} then {after:?}"
    );
}

/// Proposals committed to badly encoded squares, sent as rows and columns (the default
/// with `reed-solomon`), are caught by the validators that rebuild them from rows: they find
/// a line that is no codeword, refuse the proposal, and every node ends up holding the proof
/// (found itself, or gossiped and checked), which holds against the `data_root` of the
/// proposer's signed header. Every validator injects the fault (it is part of the DA
/// scheme peers compare), but rebuilding uses honest arithmetic, so the nodes refuse one
/// another's proposals that carry the blob.
#[test]
fn badly_encoded_proposals_are_refused_with_a_proof_every_node_holds() {
    let mut testnet = Testnet::init_with(4, 100, &["--data-availability", "reed-solomon"]);
    testnet.edit_configs(|config| {
        let edited = config.replace(
            "withhold_parity = false",
            "withhold_parity = false\nbad_encoding = true",
        );
        assert_ne!(edited, config);
        edited
    });
    for i in 0..4 {
        testnet.start_node(i);
    }
    let validators: Vec<Value> = (0..4)
        .map(|i| testnet.node(i).get("/v1/status").1["validator"].clone())
        .collect();

    // A 100 KB blob makes a square wide enough to go out as rows and columns.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
    let (code, accepted) = post_json(
        &format!("{}/v1/da/blobs", testnet.node(0).url),
        &json!({"namespace": Namespace(*b"badcoded").to_string(), "data": hex::encode(&data)}),
    );
    assert_eq!(code, 202, "{accepted}");
    let found = wait_for("every node to hold a bad-encoding proof", WAIT, || {
        let lists: Vec<Value> = (0..4)
            .map(|i| testnet.node(i).get("/v1/da/bad-encoding").1["proposals"].clone())
            .collect();
        lists
            .iter()
            .all(|list| list.as_array().is_some_and(|l| !l.is_empty()))
            .then_some(lists)
    });

    let codec = lamina_da::CodecKind::default();
    for (i, list) in found.iter().enumerate() {
        for found in list.as_array().unwrap() {
            assert!(validators.contains(&found["proposer"]), "node {i}: {found}");
            let proof: lamina_da::square::BadEncodingProof =
                serde_json::from_value(found["proof"].clone()).unwrap();
            let data_root: Hash = serde_json::from_value(found["data_root"].clone()).unwrap();
            lamina_da::square::BadEncodingCheck::verify(&proof, &data_root, codec)
                .unwrap_or_else(|e| panic!("node {i}'s proof does not hold: {e}"));
            // Refused: no node committed a block with that root at that height.
            let height = found["height"].as_u64().unwrap();
            let (_, block) = testnet.node(i).get(&format!("/v1/blocks/{height}"));
            assert_ne!(block["header"]["data_root"], found["data_root"], "{block}");
        }
    }
    let found_here = found
        .iter()
        .flat_map(|list| list.as_array().unwrap())
        .filter(|found| found["found_here"] == true)
        .count();
    assert!(found_here >= 1, "{found:?}");
    assert!(
        found
            .iter()
            .flat_map(|list| list.as_array().unwrap())
            .any(|found| found["found_here"] == false),
        "no node took a proof from a peer: {found:?}"
    );
}
