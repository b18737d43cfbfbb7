//! Lamina's data-availability layer: commits to block bodies, keeps them, and serves any
//! share of a body with a Merkle proof against the header's `data_root`.
//!
//! Scheme `replicated`: every node stores every body whole; the body's canonical encoding is
//! split into [`SHARE_SIZE`]-byte shares (the last one zero-padded) and `data_root` is the
//! RFC 9162 Merkle root over them (see [`shares`]).
//!
//! Scheme `reed-solomon`: the body's namespaced blobs are laid out as a `k × k` square of
//! shares, extended with a Reed-Solomon code to `2k × 2k` along rows and columns, and
//! `data_root` commits to every row and column root (see [`square`]), so a light client
//! can sample shares and any `k × k` worth of them rebuilds the body. Old heights can be
//! pruned to the rows a node is assigned (storage partitioning, `DaRequest::Prune`) and
//! rebuilt in memory from rows gathered from peers (`DaRequest::Restore`).
//!
//! Reach either through the [`DaHandle`] that [`spawn`] returns.

mod actor;
pub mod bench;
mod heights;
mod pool;
mod reed_solomon;
mod replicated;
pub mod shares;
pub mod square;

use lamina_primitives::interfaces::da::DaHandle;
use lamina_primitives::interfaces::{
    Events, Mailbox, DEFAULT_EVENT_CAPACITY, DEFAULT_MAILBOX_CAPACITY,
};
use serde::{Deserialize, Serialize};

pub use shares::SHARE_SIZE;
pub use square::CodecKind;

/// Default cap on an encoded block body: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// Smallest accepted `max_body_bytes`: one share.
pub const MIN_MAX_BODY_BYTES: u64 = SHARE_SIZE as u64;
/// Largest accepted `max_body_bytes`: 1 GiB, far above anything a block should carry.
pub const MAX_MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// Default cap on one outside blob: 2 MiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 2 * 1024 * 1024;
/// Default cap on the blobs waiting for a block: 32 MiB.
pub const DEFAULT_MAX_POOL_BYTES: u64 = 32 * 1024 * 1024;

/// Which DA scheme to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaKind {
    /// Every node keeps every body whole.
    #[default]
    Replicated,
    /// The body as a 2D Reed-Solomon-extended square of shares.
    ReedSolomon,
}

/// Largest `max_body_bytes` of the `reed-solomon` scheme with `reed-solomon-simd`: a body's
/// layout (its table of contents costs 4 bytes per blob more than its encoding, at most a
/// third more) then always fits the largest square, 128 MiB.
pub const MAX_REED_SOLOMON_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `max_body_bytes` with `reed-solomon-erasure`: its fast GF(2^8) code takes squares
/// up to `k = 128` (8 MiB of original data); wider ones fall back to GF(2^16), which is two
/// orders of magnitude slower.
pub const MAX_ERASURE_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// Configuration of the DA layer (the `[data_availability]` part of a node's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaConfig {
    /// The scheme.
    pub kind: DaKind,
    /// Largest encoded body accepted by `commit` and `store`, in bytes.
    pub max_body_bytes: u64,
    /// Largest outside blob `POST /v1/da/blobs` accepts, in data bytes (at most
    /// `max_body_bytes`).
    pub max_blob_bytes: u64,
    /// Most data bytes of outside blobs waiting for a block; beyond it submissions are
    /// refused until blocks carry some away.
    pub max_pool_bytes: u64,
    /// `reed-solomon`: the erasure code. Part of the commitment: every node of a chain
    /// must use the same one.
    pub codec: CodecKind,
    /// `reed-solomon`: threads that extend a square (0: one per available core).
    pub threads: usize,
    /// Fault injection, for testing light clients: this node refuses to serve any share
    /// outside the square's original quadrant, as a producer hiding data would, so three
    /// quarters of the samples of its blocks fail. `reed-solomon` only.
    pub withhold_parity: bool,
    /// Fault injection, for testing bad-encoding proofs: this node commits to badly encoded
    /// squares (the first parity share of every square is altered before committing), as a
    /// malicious producer would. Honest validators recompute `data_root` and refuse such
    /// blocks, so a chain only commits them when every validator runs this way; then
    /// `lamina da rebuild` detects the bad line and proves it. A node that rebuilds a
    /// proposal from its rows (honest arithmetic, whatever this setting) finds the bad line
    /// and proves it to every node. `reed-solomon` only; part of the commitment, so peers
    /// compare it at handshake. Left out of the file when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bad_encoding: bool,
    /// `reed-solomon`: heights more than this many blocks below the executed tip are pruned
    /// to this node's assigned rows (the node drives pruning with `DaRequest::Prune`); 0
    /// keeps everything. A per-node choice, not part of the commitment.
    pub retention_window: u64,
}

impl Default for DaConfig {
    fn default() -> Self {
        DaConfig {
            kind: DaKind::Replicated,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_pool_bytes: DEFAULT_MAX_POOL_BYTES,
            codec: CodecKind::default(),
            threads: 0,
            withhold_parity: false,
            bad_encoding: false,
            retention_window: 0,
        }
    }
}

impl DaConfig {
    /// Checks the values serde cannot: the limits' ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_MAX_BODY_BYTES..=MAX_MAX_BODY_BYTES).contains(&self.max_body_bytes) {
            return Err(format!(
                "max_body_bytes must be between {MIN_MAX_BODY_BYTES} and {MAX_MAX_BODY_BYTES} \
                 bytes, got {}",
                self.max_body_bytes
            ));
        }
        if self.max_blob_bytes == 0 || self.max_blob_bytes > self.max_body_bytes {
            return Err(format!(
                "max_blob_bytes must be between 1 and max_body_bytes ({}), got {}",
                self.max_body_bytes, self.max_blob_bytes
            ));
        }
        if self.kind == DaKind::ReedSolomon {
            let limit = match self.codec {
                CodecKind::ReedSolomonSimd => MAX_REED_SOLOMON_BODY_BYTES,
                CodecKind::ReedSolomonErasure => MAX_ERASURE_BODY_BYTES,
            };
            if self.max_body_bytes > limit {
                return Err(format!(
                    "max_body_bytes = {} is too large for the reed-solomon scheme with codec \
                     {}; use at most {limit}",
                    self.max_body_bytes,
                    self.codec.name()
                ));
            }
        }
        if self.bad_encoding && self.kind != DaKind::ReedSolomon {
            return Err(
                "bad_encoding only applies to kind = \"reed-solomon\" (a replicated body has no \
                 encoding to get wrong)"
                    .to_string(),
            );
        }
        if self.withhold_parity && self.kind != DaKind::ReedSolomon {
            return Err(
                "withhold_parity only applies to kind = \"reed-solomon\" (a replicated body has \
                 no parity to withhold)"
                    .to_string(),
            );
        }
        if self.retention_window > 0 && self.kind != DaKind::ReedSolomon {
            return Err(format!(
                "retention_window = {} only applies to kind = \"reed-solomon\" (a replicated \
                 node keeps every body whole); set kind = \"reed-solomon\" or \
                 retention_window = 0",
                self.retention_window
            ));
        }
        if self.threads > 1024 {
            return Err(format!(
                "threads must be at most 1024 (0: one per core), got {}",
                self.threads
            ));
        }
        if self.max_pool_bytes < self.max_blob_bytes {
            return Err(format!(
                "max_pool_bytes must be at least max_blob_bytes ({}), got {}",
                self.max_blob_bytes, self.max_pool_bytes
            ));
        }
        Ok(())
    }
}

impl DaConfig {
    /// What decides `data_root`, which every node of a chain must agree on: the scheme, and
    /// for `reed-solomon` its codec (the same body gets other parity, hence another root,
    /// under another code).
    pub fn commitment_scheme(&self) -> String {
        match self.kind {
            DaKind::Replicated => "replicated".to_string(),
            DaKind::ReedSolomon if self.bad_encoding => {
                format!("reed-solomon/{}/bad-encoding", self.codec.name())
            }
            DaKind::ReedSolomon => format!("reed-solomon/{}", self.codec.name()),
        }
    }
}

/// Why the DA layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configuration is invalid.
    #[error("invalid data-availability config: {0}")]
    InvalidConfig(String),
    /// The database could not be opened or read.
    #[error("data-availability storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// The database holds data this layer cannot read.
    #[error("data-availability storage is corrupt: {0}")]
    Corrupt(String),
    /// `spawn` was called outside a tokio runtime.
    #[error("the data-availability layer must be spawned from within a tokio runtime")]
    NoRuntime,
}

/// Starts the DA layer on the current tokio runtime, keeping its data in `db` (trees `da/*`).
/// The actor stops once every clone of the returned handle is dropped.
pub fn spawn(config: DaConfig, db: &sled::Db) -> Result<DaHandle, SetupError> {
    config.validate().map_err(SetupError::InvalidConfig)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SetupError::NoRuntime)?;
    let scheme = match config.kind {
        DaKind::Replicated => {
            actor::Scheme::Replicated(replicated::Replicated::open(db, config.max_body_bytes)?)
        }
        DaKind::ReedSolomon => {
            let threads = match config.threads {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                threads => threads,
            };
            let builder = reed_solomon::SquareBuilder {
                codec: config.codec,
                threads,
                max_body_bytes: config.max_body_bytes,
                bad_encoding: config.bad_encoding,
            };
            if config.bad_encoding {
                tracing::warn!("fault injection: this node commits to badly encoded squares");
            }
            if config.withhold_parity {
                tracing::warn!("fault injection: this node withholds every parity share");
            }
            actor::Scheme::ReedSolomon(reed_solomon::ReedSolomon::open(
                db,
                builder,
                config.withhold_parity,
            )?)
        }
    };
    let pool = pool::BlobPool::new(config.max_blob_bytes, config.max_pool_bytes);
    let (mailbox, requests) = Mailbox::new("data-availability", DEFAULT_MAILBOX_CAPACITY);
    let events = Events::new(DEFAULT_EVENT_CAPACITY);
    runtime.spawn(actor::run(
        scheme,
        pool,
        db.clone(),
        config.retention_window,
        requests,
        events.clone(),
    ));
    Ok(DaHandle::new(mailbox, events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::interfaces::da::{DaError, DaEvent, DataCommitment, SharePosition};
    use lamina_primitives::interfaces::RequestError;
    use lamina_primitives::{Address, Blob, Block, BlockHeader, Hash, Namespace};
    use std::sync::Arc;

    #[test]
    fn config_parses_and_rejects_unknown_values() {
        let config: DaConfig = toml::from_str(r#"kind = "replicated""#).unwrap();
        assert_eq!(config, DaConfig::default());
        assert!(config.validate().is_ok());
        let error = toml::from_str::<DaConfig>(r#"kind = "reed-salomon""#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown variant `reed-salomon`, expected `replicated`"),
            "{error}"
        );
        let error = toml::from_str::<DaConfig>("max_bytes = 1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `max_bytes`"), "{error}");
        let zero = DaConfig {
            max_body_bytes: 0,
            ..DaConfig::default()
        };
        let error = zero.validate().unwrap_err();
        assert!(error.contains("max_body_bytes"), "{error}");
        let huge_blob = DaConfig {
            max_blob_bytes: DEFAULT_MAX_BODY_BYTES + 1,
            ..DaConfig::default()
        };
        let error = huge_blob.validate().unwrap_err();
        assert!(
            error.contains("max_blob_bytes must be between 1"),
            "{error}"
        );
        let tiny_pool = DaConfig {
            max_pool_bytes: DEFAULT_MAX_BLOB_BYTES - 1,
            ..DaConfig::default()
        };
        let error = tiny_pool.validate().unwrap_err();
        assert!(error.contains("max_pool_bytes"), "{error}");
        assert_eq!(toml::from_str::<DaConfig>("").unwrap(), DaConfig::default());
    }

    /// Commits, stores and serves one block through a handle of `config`'s scheme; returns
    /// the block's commitment.
    async fn round_trip(config: DaConfig, db: &sled::Db) -> DataCommitment {
        let da = spawn(config, db).unwrap();
        let mut events = da.subscribe();
        let body = Arc::new(vec![
            Blob {
                namespace: Namespace(*b"aaa-roll"),
                data: vec![9; 700],
            },
            Blob {
                namespace: Namespace::SETTLEMENT,
                data: vec![5; 1500],
            },
        ]);
        let commitment = da.commit(Arc::clone(&body)).await.unwrap();
        assert!(!da.is_available(1, commitment.data_root).await.unwrap());
        let block = |data_root| {
            Arc::new(Block {
                header: BlockHeader {
                    chain_id: "da-test".into(),
                    height: 1,
                    parent_hash: Hash::ZERO,
                    timestamp_ms: 1,
                    proposer: Address([1; 32]),
                    data_root,
                    body_size: commitment.body_size,
                },
                body: body.to_vec(),
            })
        };
        let wrong = Hash::digest(b"x");
        assert_eq!(
            da.store(block(wrong)).await,
            Err(RequestError::Layer(DaError::RootMismatch(wrong)))
        );
        da.store(block(commitment.data_root)).await.unwrap();
        da.store(block(commitment.data_root)).await.unwrap();
        assert_eq!(
            events.recv().await.unwrap(),
            DaEvent::Stored {
                height: 1,
                data_root: commitment.data_root
            }
        );
        assert!(da.is_available(1, commitment.data_root).await.unwrap());
        let last = commitment.share_count - 1;
        let share = da.share(1, SharePosition::Index(last)).await.unwrap();
        assert!(share
            .proof
            .verify(&commitment.data_root, share.row, share.col, &share.share));
        assert!(matches!(
            da.share(1, SharePosition::Index(last + 1)).await,
            Err(RequestError::Layer(DaError::ShareOutOfRange { .. }))
        ));
        let rollup = da.namespace(1, Namespace(*b"aaa-roll")).await.unwrap();
        assert_eq!(rollup.blobs, vec![vec![9; 700]]);
        assert!(matches!(
            da.namespace(2, Namespace(*b"aaa-roll")).await,
            Err(RequestError::Layer(DaError::HeightNotFound(2)))
        ));
        let status = da.status().await.unwrap();
        assert_eq!(status.share_size, SHARE_SIZE);
        assert_eq!(status.stored_height, 1);
        commitment
    }

    #[tokio::test]
    async fn replicated_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let commitment = round_trip(DaConfig::default(), &db).await;
        // 4 + (12 + 700) + (12 + 1500) bytes: 5 shares in one row.
        assert_eq!((commitment.body_size, commitment.share_count), (2228, 5));
    }

    #[tokio::test]
    async fn reed_solomon_round_trip_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let config = DaConfig {
            kind: DaKind::ReedSolomon,
            ..DaConfig::default()
        };
        let commitment = round_trip(config.clone(), &db).await;
        // 36 bytes of table and 2200 of data: 5 shares, a 4 × 4 square extended to 8 × 8.
        assert_eq!((commitment.body_size, commitment.share_count), (2228, 64));

        // A restarted layer rebuilds the square from what it stored.
        let da = spawn(config, &db).unwrap();
        assert_eq!(da.status().await.unwrap().scheme, "reed-solomon");
        let share = da
            .share(1, SharePosition::Cell { row: 7, col: 6 })
            .await
            .unwrap();
        assert!(share
            .proof
            .verify(&commitment.data_root, 7, 6, &share.share));
        let none = da.namespace(1, Namespace(*b"zzz-none")).await.unwrap();
        assert!(none.blobs.is_empty());
        let proof = none.proof.unwrap();
        assert_eq!(
            proof.verify(&commitment.data_root, Namespace(*b"zzz-none")),
            Ok(vec![])
        );
    }

    /// Blocks `1..=heights` of a chain with distinct bodies.
    fn chain(heights: u64) -> Vec<Arc<Block>> {
        let builder = reed_solomon::SquareBuilder {
            codec: CodecKind::default(),
            threads: 1,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            bad_encoding: false,
        };
        (1..=heights)
            .map(|height| {
                let body = vec![
                    Blob {
                        namespace: Namespace(*b"aaa-roll"),
                        data: vec![height as u8; 2000 * height as usize],
                    },
                    Blob {
                        namespace: Namespace::EXECUTION,
                        data: vec![3; 900],
                    },
                ];
                let (commitment, _) = builder.build(&body, false).unwrap();
                Arc::new(Block {
                    header: BlockHeader {
                        chain_id: "da-test".into(),
                        height,
                        parent_hash: Hash::ZERO,
                        timestamp_ms: height,
                        proposer: Address([1; 32]),
                        data_root: commitment.data_root,
                        body_size: commitment.body_size,
                    },
                    body,
                })
            })
            .collect()
    }

    /// A layer's error as a handle returns it.
    fn layer<T>(error: DaError) -> Result<T, RequestError<DaError>> {
        Err(RequestError::Layer(error))
    }

    #[tokio::test]
    async fn reed_solomon_prunes_to_held_rows_and_restores_from_peers() {
        use lamina_primitives::interfaces::da::ShareHolder;
        let config = DaConfig {
            kind: DaKind::ReedSolomon,
            retention_window: 2,
            ..DaConfig::default()
        };
        let blocks = chain(3);
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let da = spawn(config.clone(), &db).unwrap();
        let peer_db = sled::Config::new().temporary(true).open().unwrap();
        let peer = spawn(config.clone(), &peer_db).unwrap();
        for block in &blocks {
            da.store(Arc::clone(block)).await.unwrap();
            peer.store(Arc::clone(block)).await.unwrap();
        }
        // Two of four holders: 2 rows each of every 8-wide square, 4 (= k) together.
        let (ours, theirs) = (
            ShareHolder { index: 0, count: 4 },
            ShareHolder { index: 2, count: 4 },
        );
        // While whole, a height gives its original rows.
        let whole = peer.held_shares(1).await.unwrap();
        assert_eq!(whole.original_width, 4);
        assert_eq!(whole.rows.len(), 4);
        assert_eq!(da.prune(2, ours).await.unwrap(), 2);
        assert_eq!(peer.prune(2, theirs).await.unwrap(), 2);
        // Idempotent.
        assert_eq!(da.prune(1, ours).await.unwrap(), 2);
        let status = da.status().await.unwrap();
        assert_eq!((status.retention_window, status.pruned_through), (2, 2));

        let height = 1;
        let root = blocks[0].header.data_root;
        assert!(da.is_available(height, root).await.unwrap());
        let roots = da.roots(height).await.unwrap();
        assert_eq!((roots.data_root, roots.row_roots.len()), (root, 8));
        assert_eq!(da.body(height).await, layer(DaError::Pruned { height }));
        assert_eq!(
            da.namespace(height, Namespace::EXECUTION).await,
            layer(DaError::Pruned { height })
        );
        assert_eq!(*da.body(3).await.unwrap(), blocks[2].body);
        // (row + 1) mod 4 = 0: rows 3 and 7 are held here.
        let held = da.held_shares(height).await.unwrap();
        assert_eq!(
            held.rows.iter().map(|row| row.index).collect::<Vec<_>>(),
            vec![3, 7]
        );
        let share = da
            .share(height, SharePosition::Cell { row: 3, col: 6 })
            .await
            .unwrap();
        assert!(share.proof.verify(&root, 3, 6, &share.share));
        let not_held = SharePosition::Cell { row: 2, col: 6 };
        assert_eq!(
            da.share(height, not_held).await,
            layer(DaError::Pruned { height })
        );
        assert_eq!(
            da.restore(height, vec![]).await,
            layer(DaError::NotEnoughShares {
                height,
                rows: 2,
                needed: 4
            })
        );

        // Each side rebuilds from its own rows and the other's.
        let body = peer.restore(height, vec![held]).await.unwrap();
        assert_eq!(*body, blocks[0].body);
        let rows = peer.held_shares(height).await.unwrap();
        assert_eq!(
            rows.rows.iter().map(|row| row.index).collect::<Vec<_>>(),
            vec![1, 5]
        );
        let body = da.restore(height, vec![rows]).await.unwrap();
        assert_eq!(*body, blocks[0].body);
        let share = da.share(height, not_held).await.unwrap();
        assert!(share.proof.verify(&root, 2, 6, &share.share));
        assert_eq!(*da.body(height).await.unwrap(), blocks[0].body);
        let rollup = da.namespace(height, Namespace(*b"aaa-roll")).await.unwrap();
        assert_eq!(rollup.blobs, vec![blocks[0].body[0].data.clone()]);
        // A height that is not pruned is simply answered.
        assert_eq!(*da.restore(3, vec![]).await.unwrap(), blocks[2].body);

        // Restarted, the layer still knows what it pruned, and storing a pruned height
        // again does not bring its original data back.
        drop(da);
        let da = spawn(config, &db).unwrap();
        assert_eq!(da.status().await.unwrap().pruned_through, 2);
        da.store(Arc::clone(&blocks[1])).await.unwrap();
        assert_eq!(da.body(2).await, layer(DaError::Pruned { height: 2 }));
        // Never past the stored height.
        assert_eq!(da.prune(u64::MAX, ours).await.unwrap(), 3);
        assert_eq!(da.body(3).await, layer(DaError::Pruned { height: 3 }));
        assert!(matches!(
            da.restore(3, vec![]).await,
            Err(RequestError::Layer(DaError::NotEnoughShares {
                height: 3,
                ..
            }))
        ));
    }

    #[tokio::test]
    async fn replicated_serves_bodies_but_has_nothing_to_prune() {
        use lamina_primitives::interfaces::da::ShareHolder;
        let db = sled::Config::new().temporary(true).open().unwrap();
        let da = spawn(DaConfig::default(), &db).unwrap();
        let block = chain(1).remove(0);
        let data_root = lamina_primitives::Block::encode_body(&block.body);
        let data_root = shares::commit_encoded(&data_root).0.data_root;
        let block = Arc::new(Block {
            header: BlockHeader {
                data_root,
                ..block.header.clone()
            },
            body: block.body.clone(),
        });
        da.store(Arc::clone(&block)).await.unwrap();
        assert_eq!(*da.body(1).await.unwrap(), block.body);
        let no_square = || DaError::NoSquare {
            scheme: "replicated".into(),
        };
        let holder = ShareHolder { index: 0, count: 1 };
        assert_eq!(da.prune(1, holder).await, layer(no_square()));
        assert_eq!(da.held_shares(1).await, layer(no_square()));
        assert_eq!(da.restore(1, vec![]).await, layer(no_square()));
        let status = da.status().await.unwrap();
        assert_eq!((status.retention_window, status.pruned_through), (0, 0));
    }

    #[tokio::test]
    async fn reed_solomon_disperses_checks_and_reassembles_a_proposal() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let config = DaConfig {
            kind: DaKind::ReedSolomon,
            ..DaConfig::default()
        };
        let da = spawn(config, &db).unwrap();
        let body = Arc::new(chain(1).remove(0).body.clone());
        let height = 5;
        let dispersal = da.disperse(height, Arc::clone(&body), 4).await.unwrap();
        let commitment = da.commit(Arc::clone(&body)).await.unwrap();
        assert_eq!(dispersal.roots.data_root, commitment.data_root);
        assert_eq!(dispersal.parts.len(), 4);
        // Many peers' parts are checked at once: the loop answers each on its own.
        let roots = &dispersal.roots;
        let parts = &dispersal.parts;
        let (a, b, c, d) = tokio::join!(
            da.check_rows(roots.clone(), parts[0].clone()),
            da.check_rows(roots.clone(), parts[1].clone()),
            da.check_rows(roots.clone(), parts[2].clone()),
            da.check_rows(roots.clone(), parts[3].clone()),
        );
        assert_eq!([a, b, c, d], [0, 1, 2, 3].map(|i| Ok(parts[i].clone())));
        let mut tampered = parts[2].clone();
        tampered.rows[0].shares[0] ^= 1;
        assert!(matches!(
            da.check_rows(roots.clone(), tampered.clone()).await,
            Err(RequestError::Layer(DaError::InvalidShares(_)))
        ));
        let given = vec![tampered, parts[1].clone(), parts[3].clone()];
        assert_eq!(da.reassemble(roots.clone(), given).await.unwrap(), body);
        assert_eq!(
            da.reassemble(roots.clone(), vec![parts[0].clone()]).await,
            layer(DaError::NotEnoughShares {
                height,
                rows: parts[0].rows.len() as u64,
                needed: 4
            })
        );
        assert!(matches!(
            da.disperse(height, Arc::clone(&body), 0).await,
            Err(RequestError::Layer(DaError::Storage(_)))
        ));
        // Nothing was stored.
        assert_eq!(da.status().await.unwrap().stored_height, 0);
        assert!(!da.is_available(height, roots.data_root).await.unwrap());

        // Another node, which never committed the body itself: the square it rebuilt gives
        // the very commitment an extension would, and the block stores from it.
        let db = sled::Config::new().temporary(true).open().unwrap();
        let other = spawn(
            DaConfig {
                kind: DaKind::ReedSolomon,
                ..DaConfig::default()
            },
            &db,
        )
        .unwrap();
        let rebuilt = other
            .reassemble(roots.clone(), vec![parts[0].clone(), parts[2].clone()])
            .await
            .unwrap();
        assert_eq!(rebuilt, body);
        assert_eq!(other.commit(rebuilt).await.unwrap(), commitment);
        let block = chain(1).remove(0);
        assert_eq!(block.header.data_root, commitment.data_root);
        other.store(block).await.unwrap();
        assert_eq!(other.status().await.unwrap().stored_height, 1);
        assert_eq!(other.roots(1).await.unwrap().row_roots, roots.row_roots);
    }

    #[tokio::test]
    async fn replicated_has_no_square_to_disperse() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let da = spawn(DaConfig::default(), &db).unwrap();
        let body = Arc::new(chain(1).remove(0).body.clone());
        let no_square = || DaError::NoSquare {
            scheme: "replicated".into(),
        };
        assert_eq!(da.disperse(1, body, 4).await, layer(no_square()));
        let roots = lamina_primitives::interfaces::da::SquareRoots {
            height: 1,
            data_root: Hash::ZERO,
            row_roots: vec![],
            col_roots: vec![],
        };
        let rows = lamina_primitives::interfaces::da::HeldShares {
            columns: Vec::new(),
            height: 1,
            data_root: Hash::ZERO,
            original_width: 1,
            rows: vec![],
        };
        assert_eq!(
            da.check_rows(roots.clone(), rows.clone()).await,
            layer(no_square())
        );
        assert_eq!(da.reassemble(roots, vec![rows]).await, layer(no_square()));
    }

    #[test]
    fn retention_window_needs_reed_solomon_and_is_not_committed() {
        let replicated = DaConfig {
            retention_window: 10,
            ..DaConfig::default()
        };
        let error = replicated.validate().unwrap_err();
        assert!(error.contains("retention_window"), "{error}");
        assert!(error.contains("reed-solomon"), "{error}");
        let reed_solomon = DaConfig {
            kind: DaKind::ReedSolomon,
            ..replicated
        };
        reed_solomon.validate().unwrap();
        let keeping = DaConfig {
            retention_window: 0,
            ..reed_solomon.clone()
        };
        assert_eq!(
            reed_solomon.commitment_scheme(),
            keeping.commitment_scheme()
        );
        let parsed: DaConfig =
            toml::from_str("kind = \"reed-solomon\"\nretention_window = 10").unwrap();
        assert_eq!(parsed, reed_solomon);
    }

    #[test]
    fn reed_solomon_bounds_the_body_by_codec() {
        let config = DaConfig {
            kind: DaKind::ReedSolomon,
            codec: CodecKind::ReedSolomonErasure,
            ..DaConfig::default()
        };
        let error = config.validate().unwrap_err();
        assert!(error.contains("use at most 4194304"), "{error}");
        let config = DaConfig {
            max_body_bytes: MAX_ERASURE_BODY_BYTES,
            max_blob_bytes: 1 << 20,
            ..config
        };
        config.validate().unwrap();
        assert_eq!(
            config.commitment_scheme(),
            "reed-solomon/reed-solomon-erasure"
        );
        assert_eq!(DaConfig::default().commitment_scheme(), "replicated");
    }
}
