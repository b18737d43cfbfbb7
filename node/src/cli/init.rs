//! Writing a node directory (`lamina init`, and the first start of `lamina dev`), and keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lamina_primitives::types::validate_chain_id;
use lamina_primitives::{Genesis, GenesisAccount, Keypair, Validator};

use super::{InitArgs, UsageError};
use crate::config::NodeConfig;
use crate::testnet_file::{TestnetAccount, TestnetFile, TestnetNode};

/// Balance of each prefunded development account.
pub const DEV_ACCOUNT_BALANCE: u64 = 1_000_000_000_000;
/// Fee per transaction on development chains.
pub const DEV_FEE: u64 = 1;

/// What to put in a new node directory.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chain id.
    pub chain_id: String,
    /// Number of deterministic prefunded accounts.
    pub accounts: u32,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Block time in milliseconds.
    pub block_time_ms: u64,
}

/// The files of a node directory.
#[derive(Debug, Clone)]
pub struct NodeDir {
    /// The directory.
    pub dir: PathBuf,
}

impl NodeDir {
    /// `config.toml`
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// `genesis.json`
    pub fn genesis(&self) -> PathBuf {
        self.dir.join("genesis.json")
    }
    /// `validator.key`
    pub fn validator_key(&self) -> PathBuf {
        self.dir.join("validator.key")
    }
    /// `testnet.json`
    pub fn testnet_file(&self) -> PathBuf {
        self.dir.join("testnet.json")
    }
}

/// The key of deterministic development account `index` (anyone can recompute it).
pub fn dev_account_key(index: u32) -> Keypair {
    Keypair::deterministic(&format!("account-{index}"))
}

/// The prefunded accounts of a genesis made by [`init_node_dir`], with their keys.
pub fn dev_accounts(count: u32) -> Vec<TestnetAccount> {
    (0..count)
        .map(|i| {
            let key = dev_account_key(i);
            TestnetAccount {
                address: key.address(),
                secret_key: key.secret_hex(),
                balance: DEV_ACCOUNT_BALANCE,
            }
        })
        .collect()
}

/// A development genesis starting now: `validators`, the first `accounts` deterministic
/// development accounts prefunded, and the development fee.
pub fn dev_genesis(chain_id: &str, validators: Vec<Validator>, accounts: u32) -> Genesis {
    Genesis {
        chain_id: chain_id.to_string(),
        genesis_time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        fee_per_transaction: DEV_FEE,
        validators,
        accounts: dev_accounts(accounts)
            .into_iter()
            .map(|a| GenesisAccount {
                address: a.address,
                balance: a.balance,
            })
            .collect(),
    }
}

/// The development accounts `genesis` funds, with their keys.
pub fn dev_accounts_of(genesis: &Genesis) -> Vec<TestnetAccount> {
    dev_accounts(genesis.accounts.len() as u32)
        .into_iter()
        .filter(|a| genesis.accounts.iter().any(|g| g.address == a.address))
        .collect()
}

/// Writes config.toml, genesis.json (one validator with a fresh key, `accounts` prefunded
/// deterministic accounts) and validator.key into `dir`. Refuses to overwrite a config.
pub fn init_node_dir(dir: &Path, options: &InitOptions) -> anyhow::Result<NodeDir> {
    validate_chain_id(&options.chain_id).map_err(UsageError)?;
    let node_dir = NodeDir {
        dir: dir.to_path_buf(),
    };
    if node_dir.config().exists() {
        return Err(UsageError(format!(
            "{} already exists; choose another --dir or remove it",
            node_dir.config().display()
        ))
        .into());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let validator = Keypair::generate().context("no operating-system randomness for a key")?;
    write_secret(&node_dir.validator_key(), &validator.secret_hex())?;
    let validators = vec![Validator {
        address: validator.address(),
        power: 1,
    }];
    let genesis = dev_genesis(&options.chain_id, validators, options.accounts);
    std::fs::write(node_dir.genesis(), serde_json::to_string_pretty(&genesis)?)
        .with_context(|| format!("cannot write {}", node_dir.genesis().display()))?;
    let mut config = NodeConfig::default();
    config.node.validator_key = Some(PathBuf::from("validator.key"));
    config.http.listen = options.http;
    config.consensus.block_time_ms = options.block_time_ms;
    std::fs::write(node_dir.config(), config.to_toml())
        .with_context(|| format!("cannot write {}", node_dir.config().display()))?;
    Ok(node_dir)
}

/// The testnet.json of a single node started from `dir`.
pub fn single_node_testnet_file(
    genesis: &Genesis,
    http: SocketAddr,
    validator: Option<lamina_primitives::Address>,
) -> TestnetFile {
    TestnetFile {
        chain_id: genesis.chain_id.clone(),
        nodes: vec![TestnetNode {
            name: "node0".into(),
            http: format!("http://{http}"),
            validator,
            p2p: None,
        }],
        accounts: dev_accounts_of(genesis),
    }
}

/// Creates a new secret key file readable only by its owner; never overwrites one.
pub(crate) fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::Error::new(UsageError(format!(
                "{} already exists; not overwriting a key",
                path.display()
            )))
        } else {
            anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
        }
    })?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `lamina init`
pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let options = InitOptions {
        chain_id: args.chain_id,
        accounts: args.accounts,
        http: args.http,
        block_time_ms: args.block_time,
    };
    let dir = init_node_dir(&args.dir, &options)?;
    out!("wrote {}", dir.config().display());
    out!("wrote {}", dir.genesis().display());
    out!("wrote {}", dir.validator_key().display());
    out!(
        "start it with: lamina run --config {}",
        dir.config().display()
    );
    if options.accounts > 0 {
        out!(
            "note: the {} prefunded accounts use publicly known development keys; \
             pass --accounts 0 for a chain that holds anything of value",
            options.accounts
        );
    }
    Ok(())
}

/// `lamina keys generate`
pub fn generate_key(out: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let key = Keypair::generate().context("no operating-system randomness for a key")?;
    if let Some(path) = &out {
        write_secret(path, &key.secret_hex())?;
    }
    if json {
        out!(
            "{}",
            serde_json::json!({ "address": key.address(), "secret_key": key.secret_hex() })
        );
    } else {
        out!("address    {}", key.address());
        out!("secret key {}", key.secret_hex());
    }
    Ok(())
}
