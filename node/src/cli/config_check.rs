//! `lamina config check FILE`: validate a node's config and the files it names, and print
//! the resolved settings of every layer, without starting anything.

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

use crate::config::{kind_of, ConfigError, Dissemination, NodeConfig};
use crate::node::{compatibility, load_genesis, load_key};

/// `lamina config check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file.
    pub file: PathBuf,
    /// Print the resolved settings as one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn settings<T: serde::Serialize>(section: &T) -> Value {
    serde_json::to_value(section).unwrap_or(Value::Null)
}

/// Everything `lamina run` would check before starting, and the settings it would run with.
pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.file)?;
    let genesis = load_genesis(&config.node.genesis)?;
    let validator = config
        .node
        .validator_key
        .as_deref()
        .map(load_key)
        .transpose()?
        .map(|key| key.address());
    let role = match validator {
        Some(address) if genesis.validators.iter().any(|v| v.address == address) => {
            format!("validator {address}")
        }
        Some(address) => format!(
            "observer: its key {address} is not a genesis validator, so it neither votes nor \
             attests"
        ),
        None => "observer (no validator_key)".to_string(),
    };
    let settlement = &config.settlement;
    settlement
        .check_for(&genesis)
        .map_err(|e| ConfigError::File(format!("[settlement] does not fit this chain: {e}")))?;
    let layers = json!({
        "consensus": { "kind": kind_of(&config.consensus), "settings": settings(&config.consensus) },
        "execution": { "kind": kind_of(&config.execution), "settings": settings(&config.execution) },
        "data_availability": {
            "kind": kind_of(&config.data_availability),
            "settings": settings(&config.data_availability),
        },
        "settlement": { "kind": kind_of(settlement), "settings": settings(settlement) },
    });
    let shared = compatibility(&config, &genesis);
    if args.json {
        let answer = json!({
            "config": args.file,
            "chain_id": genesis.chain_id,
            "genesis": config.node.genesis,
            "role": role,
            "layers": layers,
            "network": settings(&config.network),
            "http": settings(&config.http),
            "peers_must_share": shared,
        });
        out!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    out!("{} is valid", args.file.display());
    out!(
        "  chain       {} ({}, {} validators, {} funded accounts)",
        genesis.chain_id,
        config.node.genesis.display(),
        genesis.validators.len(),
        genesis.accounts.len()
    );
    out!("  role        {role}");
    out!("  data        {}", config.node.data_dir.display());
    out!("  http        {}", config.http.listen);
    match &config.network.listen {
        Some(listen) => out!(
            "  network     {listen}, {} configured peers, proposals sent {}",
            config.network.peers.len(),
            match config.dissemination() {
                Dissemination::Whole => "whole",
                Dissemination::Shares => "as rows and columns",
            }
        ),
        None => out!("  network     none (no [network] listen)"),
    }
    for name in ["consensus", "execution", "data_availability", "settlement"] {
        let layer = &layers[name];
        let details: Vec<String> = layer["settings"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, _)| key.as_str() != "kind")
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        out!(
            "  {name:<18}{} {}",
            layer["kind"].as_str().unwrap_or("?"),
            details.join(" ")
        );
    }
    out!("  peers must share: {shared}");
    Ok(())
}
