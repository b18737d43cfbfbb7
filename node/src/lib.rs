//! `lamina-node`: the `lamina` binary's library: config, wiring of the layers, the block
//! pipeline, the HTTP API, metrics and the CLI commands.

pub mod archive;
pub mod bad_encoding;
pub mod bench;
pub mod cli;
pub mod config;
pub mod dissemination;
pub mod http;
pub mod metrics;
pub mod network;
pub mod node;
pub mod p2p_key;
pub mod pipeline;
pub mod relay;
pub mod testnet_file;
