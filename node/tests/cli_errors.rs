//! The `lamina` binary refuses bad config and arguments with a message saying what to fix
//! and exit code 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn lamina(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(args)
        .output()
        .expect("run lamina")
}

fn assert_usage_error(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
}

#[test]
fn unknown_layer_kind_names_the_valid_choices() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[consensus]\nkind = \"paxos\"\n").unwrap();
    let output = lamina(&["run", "--config", config.to_str().unwrap()]);
    assert_usage_error(&output, &["paxos", "solo"]);

    std::fs::write(
        &config,
        "[execution]\nkind = \"sequential\"\nnonce_window = 0\n",
    )
    .unwrap();
    let output = lamina(&["run", "--config", config.to_str().unwrap()]);
    assert_usage_error(&output, &["nonce_window"]);
}

#[test]
fn missing_config_and_bad_arguments_exit_2() {
    assert_usage_error(
        &lamina(&["run", "--config", "/nonexistent/lamina.toml"]),
        &["cannot read"],
    );
    let dir = tempfile::tempdir().unwrap();
    let output = lamina(&[
        "init",
        "--dir",
        dir.path().to_str().unwrap(),
        "--chain-id",
        "Bad_Id",
    ]);
    assert_usage_error(&output, &["chain id"]);
    let output = lamina(&[
        "tx", "transfer", "--key", "zz", "--to", "00", "--amount", "1",
    ]);
    assert_usage_error(&output, &["--key"]);
    let key = "91afc69e99f2ad8c344f809296fedb55c42705114b91bb0e88024a57b04712c7";
    let output = lamina(&["bridge", "deposit", "--key", key, "--amount", "0"]);
    assert_usage_error(&output, &["--amount must be at least 1"]);
    let output = lamina(&[
        "bridge", "withdraw", "--key", key, "--amount", "5", "--to", "abc",
    ]);
    assert_usage_error(&output, &["--to must be a 64-hex-character address"]);
    let output = lamina(&[
        "testnet",
        "init",
        "--validators",
        "4",
        "--dir",
        dir.path().join("net").to_str().unwrap(),
        "--faulty-executor",
        "4",
    ]);
    assert_usage_error(&output, &["--faulty-executor 4 names no node"]);
    let config = dir.path().join("no-genesis.toml");
    std::fs::write(&config, "[node]\ngenesis = \"missing.json\"\n").unwrap();
    let output = lamina(&["run", "--config", config.to_str().unwrap()]);
    assert_usage_error(&output, &["genesis file", "missing.json"]);
    let output = lamina(&["dev", "--block-time", "0"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn init_writes_a_config_that_loads_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let output = lamina(&["init", "--dir", path, "--chain-id", "my-chain"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = lamina_node::config::NodeConfig::load(&dir.path().join("config.toml")).unwrap();
    assert_eq!(config.consensus.block_time_ms, 1000);
    let genesis = lamina_node::node::load_genesis(&config.node.genesis).unwrap();
    assert_eq!(genesis.chain_id, "my-chain");
    assert_eq!(genesis.accounts.len(), 10);
    assert_usage_error(&lamina(&["init", "--dir", path]), &["already exists"]);
}

#[test]
fn keys_generate_prints_a_usable_key() {
    let output = lamina(&["keys", "generate", "--json"]);
    assert!(output.status.success());
    let key: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let secret = key["secret_key"].as_str().unwrap();
    let keypair = lamina_primitives::Keypair::from_secret_hex(secret).unwrap();
    assert_eq!(
        keypair.address().to_string(),
        key["address"].as_str().unwrap()
    );
}

#[test]
fn config_check_prints_every_layer_or_says_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let output = lamina(&["init", "--dir", node.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let config = node.join("config.toml");
    let output = lamina(&["config", "check", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for needle in [
        "is valid",
        "consensus         solo",
        "execution         sequential",
        "data_availability replicated",
        "settlement        attested",
        "peers must share: consensus=solo;data_availability=replicated;settlement=attested",
    ] {
        assert!(stdout.contains(needle), "stdout lacks {needle:?}: {stdout}");
    }
    let output = lamina(&["config", "check", config.to_str().unwrap(), "--json"]);
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["layers"]["execution"]["kind"], "sequential");
    assert_eq!(answer["layers"]["settlement"]["settings"]["bond"], 1000);

    // Optimistic settlement without empty blocks, and a missing genesis, are refused.
    let text = std::fs::read_to_string(&config).unwrap();
    let optimistic = text.replace("kind = \"attested\"", "kind = \"optimistic\"");
    assert_ne!(optimistic, text);
    std::fs::write(&config, &optimistic).unwrap();
    let output = lamina(&["config", "check", config.to_str().unwrap()]);
    assert_usage_error(&output, &["create_empty_blocks = true"]);
    std::fs::remove_file(node.join("genesis.json")).unwrap();
    std::fs::write(&config, &text).unwrap();
    let output = lamina(&["config", "check", config.to_str().unwrap()]);
    assert_usage_error(&output, &["cannot read genesis file"]);
}
