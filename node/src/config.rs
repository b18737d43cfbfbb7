//! The node's TOML config: one section per layer, each with a `kind`, plus the node's own
//! paths and HTTP settings. Loading validates everything and resolves relative paths against
//! the config file's directory, so a bad file stops start-up with a message saying what to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lamina_consensus::ConsensusConfig;
use lamina_da::DaConfig;
use lamina_execution::ExecutionConfig;
use lamina_primitives::{codec, Blob};
use lamina_settlement::{SettlementConfig, SettlementKind};
use serde::{Deserialize, Serialize};

/// Largest config file accepted.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a config could not be used. Start-up exits with code 2 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A file the config points to (genesis, validator key) is missing or invalid.
    #[error("{0}")]
    File(String),
    /// The file is larger than any sane config.
    #[error("config file {path} is {size} bytes; the limit is {MAX_CONFIG_BYTES}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The TOML does not parse or does not match the schema (unknown kind, wrong type,
    /// unknown key).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line and the valid choices.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config file {path}: [{section}] {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The section.
        section: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Default page cache of the database: 256 MiB.
pub const DEFAULT_DB_CACHE_BYTES: u64 = 256 << 20;
const DB_CACHE_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(64 << 30);

/// `[node]`: where the node keeps its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Directory of the node's database (created if missing).
    pub data_dir: PathBuf,
    /// The genesis file.
    pub genesis: PathBuf,
    /// The validator's secret key file (hex seed); leave it out for a non-validating node.
    pub validator_key: Option<PathBuf>,
    /// Memory the database may use to cache pages, in bytes. It bounds the node's memory
    /// under sustained load: the cache fills up to this size and stays there.
    pub db_cache_bytes: u64,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            data_dir: PathBuf::from("data"),
            genesis: PathBuf::from("genesis.json"),
            validator_key: None,
            db_cache_bytes: DEFAULT_DB_CACHE_BYTES,
        }
    }
}

/// `[http]`: the JSON API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Requests taking longer than this are answered with 503.
    pub request_timeout_ms: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8545)),
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
        }
    }
}

/// `[network]`: the peer-to-peer network (libp2p over TCP with noise and yamux).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// Multiaddr to listen on (e.g. `/ip4/0.0.0.0/tcp/26700`); leave it out for a node
    /// without peers (a solo chain).
    pub listen: Option<String>,
    /// Multiaddrs of peers to connect to at start (each may end in `/p2p/<peer id>`); the
    /// rest of the network is found through them.
    pub peers: Vec<String>,
    /// The node's network identity (hex ed25519 secret), created on first start if missing.
    pub key_file: PathBuf,
    /// How this node sends the blocks it proposes; unset: as shares under `reed-solomon`
    /// data availability, whole otherwise ([`NodeConfig::dissemination`]). Every node
    /// receives both ways, so nodes of one network may differ here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dissemination: Option<Dissemination>,
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            listen: None,
            peers: Vec::new(),
            key_file: PathBuf::from("node.key"),
            dissemination: None,
        }
    }
}

/// How a proposer sends its block to the other validators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dissemination {
    /// The whole block, gossiped to every peer.
    #[default]
    Whole,
    /// Each validator gets only its assigned rows and columns of the extended square,
    /// checks them against the square's roots, forwards them to the others, and every node
    /// rebuilds the body from the lines it gathers (`reed-solomon` data availability only).
    /// `rows`, its name before columns were sent too, is read as `shares`.
    #[serde(alias = "rows")]
    #[value(alias = "rows")]
    Shares,
}

impl NetworkSection {
    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<Option<libp2p::Multiaddr>, String> {
        self.listen
            .as_deref()
            .map(|text| parse_multiaddr("listen", text))
            .transpose()
    }

    /// The peer addresses, parsed.
    pub fn peer_addrs(&self) -> Result<Vec<libp2p::Multiaddr>, String> {
        self.peers
            .iter()
            .map(|text| parse_multiaddr("peers", text))
            .collect()
    }
}

fn parse_multiaddr(field: &str, text: &str) -> Result<libp2p::Multiaddr, String> {
    text.parse().map_err(|e| {
        format!("{field}: {text:?} is not a multiaddr ({e}); write e.g. /ip4/127.0.0.1/tcp/26700")
    })
}

/// The `kind` of a layer's section, as written in the config file.
pub fn kind_of<T: Serialize>(section: &T) -> String {
    serde_json::to_value(section)
        .ok()
        .and_then(|settings| settings.get("kind")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The whole config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`
    pub node: NodeSection,
    /// `[http]`
    pub http: HttpSection,
    /// `[consensus]`
    pub consensus: ConsensusConfig,
    /// `[execution]`
    pub execution: ExecutionConfig,
    /// `[data_availability]`
    pub data_availability: DaConfig,
    /// `[settlement]`
    pub settlement: SettlementConfig,
    /// `[network]`
    pub network: NetworkSection,
}

impl NodeConfig {
    /// How this node sends its proposals: as set, else as shares when the DA scheme is
    /// `reed-solomon` (what the square is for) and whole when it is `replicated`.
    pub fn dissemination(&self) -> Dissemination {
        self.network
            .dissemination
            .unwrap_or(match self.data_availability.kind {
                lamina_da::DaKind::ReedSolomon => Dissemination::Shares,
                lamina_da::DaKind::Replicated => Dissemination::Whole,
            })
    }

    /// Reads, parses and validates `path`, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let read_err = |cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let mut config = NodeConfig::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and validates TOML text (`path` only names the file in errors).
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |section, message| ConfigError::Invalid {
            path: path.to_path_buf(),
            section,
            message,
        };
        if self.http.max_body_bytes < 1024 || self.http.max_body_bytes > 64 << 20 {
            return Err(invalid(
                "http",
                format!(
                    "max_body_bytes = {} is out of range; use 1024 to {}",
                    self.http.max_body_bytes,
                    64 << 20
                ),
            ));
        }
        if !DB_CACHE_BYTES_RANGE.contains(&self.node.db_cache_bytes) {
            return Err(invalid(
                "node",
                format!(
                    "db_cache_bytes = {} is out of range; use {} (1 MiB) to {} (64 GiB)",
                    self.node.db_cache_bytes,
                    DB_CACHE_BYTES_RANGE.start(),
                    DB_CACHE_BYTES_RANGE.end()
                ),
            ));
        }
        if self.http.request_timeout_ms == 0 {
            return Err(invalid(
                "http",
                "request_timeout_ms must be at least 1".into(),
            ));
        }
        self.consensus
            .validate()
            .map_err(|m| invalid("consensus", m))?;
        self.execution
            .validate()
            .map_err(|m| invalid("execution", m))?;
        self.data_availability
            .validate()
            .map_err(|m| invalid("data_availability", m))?;
        self.settlement
            .validate()
            .map_err(|m| invalid("settlement", m))?;
        self.network
            .listen_addr()
            .map_err(|m| invalid("network", m))?;
        self.network
            .peer_addrs()
            .map_err(|m| invalid("network", m))?;
        if self.consensus.kind == lamina_consensus::EngineKind::Bft && self.network.listen.is_none()
        {
            return Err(invalid(
                "network",
                "the bft consensus engine talks to other validators: set listen (and peers)".into(),
            ));
        }
        if self.network.dissemination == Some(Dissemination::Shares)
            && self.data_availability.kind != lamina_da::DaKind::ReedSolomon
        {
            return Err(invalid(
                "network",
                "dissemination = \"shares\" sends rows and columns of the extended square, \
                 which only the reed-solomon scheme has: set [data_availability] kind = \
                 \"reed-solomon\" or dissemination = \"whole\""
                    .into(),
            ));
        }
        if self.network.listen.is_none() && !self.network.peers.is_empty() {
            return Err(invalid(
                "network",
                "peers are set but listen is not; set listen to join the network".into(),
            ));
        }
        // Each section is sane on its own; now the limits that must agree across sections.
        // A transaction must fit in a request body (hex doubles it, JSON adds a little).
        let needed = self
            .execution
            .max_transaction_bytes
            .saturating_mul(2)
            .saturating_add(64);
        if self.http.max_body_bytes < needed {
            return Err(invalid(
                "http",
                format!(
                    "max_body_bytes = {} cannot carry a transaction of [execution] \
                     max_transaction_bytes = {}; use at least {needed}",
                    self.http.max_body_bytes, self.execution.max_transaction_bytes
                ),
            ));
        }
        // A full block must be accepted by the DA layer, or proposals would be refused forever.
        // Proposals never encode to more than `max_block_bytes`, prefixes included.
        let body_limit = self.data_availability.max_body_bytes;
        if self.consensus.max_block_bytes as u64 > body_limit {
            return Err(invalid(
                "consensus",
                format!(
                    "max_block_bytes = {} is more than [data_availability] max_body_bytes = \
                     {body_limit}",
                    self.consensus.max_block_bytes
                ),
            ));
        }
        // An outside blob must fit in a block, or it would wait in the pool forever.
        let blob_limit = self.data_availability.max_blob_bytes;
        let fits = (self.consensus.max_block_bytes as u64)
            .saturating_sub((codec::VEC_PREFIX_BYTES + Blob::ENCODED_PREFIX_BYTES) as u64);
        if blob_limit > fits {
            return Err(invalid(
                "data_availability",
                format!(
                    "max_blob_bytes = {blob_limit} does not fit in a block of [consensus] \
                     max_block_bytes = {}; use at most {fits}",
                    self.consensus.max_block_bytes
                ),
            ));
        }
        // Challenge windows and batches are counted in blocks: on a chain that only makes
        // blocks for transactions, an idle chain would never finalize a claim.
        if self.settlement.kind == SettlementKind::Optimistic && !self.consensus.create_empty_blocks
        {
            return Err(invalid(
                "settlement",
                "kind = \"optimistic\" counts challenge windows in blocks, so it needs \
                 [consensus] create_empty_blocks = true"
                    .to_string(),
            ));
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.node.data_dir);
        resolve(&mut self.node.genesis);
        if let Some(key) = self.node.validator_key.as_mut() {
            resolve(key);
        }
        resolve(&mut self.network.key_file);
    }

    /// The config as TOML (what `lamina init` writes).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let config = NodeConfig::default();
        let back = parse(&config.to_toml()).unwrap();
        assert_eq!(back.http, config.http);
        assert_eq!(back.node, config.node);
    }

    #[test]
    fn unknown_kind_names_the_valid_choices() {
        let err = parse("[consensus]\nkind = \"paxos\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("paxos") && err.contains("solo"), "{err}");
        let err = parse("[execution]\nkind = \"magic\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sequential"), "{err}");
    }

    #[test]
    fn bad_values_and_unknown_keys_are_refused() {
        let err = parse("[http]\nmax_body_bytes = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body_bytes"), "{err}");
        let err = parse("[http]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen") || err.contains("address"), "{err}");
        let err = parse("[nodes]\n").unwrap_err().to_string();
        assert!(err.contains("nodes"), "{err}");
    }

    #[test]
    fn limits_that_contradict_each_other_are_refused() {
        let err = parse("[consensus]\nmax_block_bytes = 8388609\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_block_bytes") && err.contains("max_body_bytes"),
            "{err}"
        );
        let err = parse("[http]\nmax_body_bytes = 4096\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_transaction_bytes"), "{err}");
        // A 1 MiB block holds a blob of 1 MiB minus 16 bytes of framing, not more.
        let small_blocks = "[consensus]\nmax_block_bytes = 1048576\n[data_availability]\n";
        let err = parse(&format!("{small_blocks}max_blob_bytes = 1048561\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("use at most 1048560"), "{err}");
        parse(&format!("{small_blocks}max_blob_bytes = 1048560\n")).unwrap();
        let optimistic = "[settlement]\nkind = \"optimistic\"\n";
        let err = parse(optimistic).unwrap_err().to_string();
        assert!(err.contains("create_empty_blocks = true"), "{err}");
        parse(&format!(
            "{optimistic}[consensus]\ncreate_empty_blocks = true\n"
        ))
        .unwrap();
        let rows = "[network]\ndissemination = \"rows\"\n";
        let err = parse(rows).unwrap_err().to_string();
        assert!(err.contains("kind = \"reed-solomon\""), "{err}");
        let config = parse(&format!(
            "{rows}[data_availability]\nkind = \"reed-solomon\"\n"
        ))
        .unwrap();
        assert_eq!(config.network.dissemination, Some(Dissemination::Shares));
        assert_eq!(config.dissemination(), Dissemination::Shares);
        let whole =
            "[network]\ndissemination = \"whole\"\n[data_availability]\nkind = \"reed-solomon\"\n";
        assert_eq!(parse(whole).unwrap().dissemination(), Dissemination::Whole);
        let unset = "[data_availability]\nkind = \"reed-solomon\"\n";
        assert_eq!(parse(unset).unwrap().dissemination(), Dissemination::Shares);
        assert_eq!(parse("").unwrap().dissemination(), Dissemination::Whole);
    }

    #[test]
    fn network_addresses_must_be_multiaddrs() {
        let config = parse(
            "[network]\nlisten = \"/ip4/127.0.0.1/tcp/26700\"\n\
             peers = [\"/ip4/127.0.0.1/tcp/26701\"]\n",
        )
        .unwrap();
        assert_eq!(config.network.peer_addrs().unwrap().len(), 1);
        let err = parse("[network]\nlisten = \"127.0.0.1:26700\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[network]") && err.contains("multiaddr"),
            "{err}"
        );
        let err = parse("[consensus]\nkind = \"bft\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[network]") && err.contains("listen"), "{err}");
        let err = parse("[network]\npeers = [\"/ip4/127.0.0.1/tcp/1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn validator_key_is_optional() {
        assert_eq!(parse("").unwrap().node.validator_key, None);
        let config = parse("[node]\nvalidator_key = \"v.key\"\n").unwrap();
        assert_eq!(config.node.validator_key, Some(PathBuf::from("v.key")));
    }
}
