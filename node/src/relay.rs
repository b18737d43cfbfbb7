//! Between the peer-to-peer network and the layers: decodes what peers gossip and hands it
//! to the layer that judges it (consensus messages to the engine, transactions to the
//! mempool), turns the layer's answer into the gossip verdict that decides whether the
//! message is relayed, publishes what the engine and the HTTP API send out, and keeps a node
//! that fell behind fetching certified blocks from its peers until it reaches their tip.
//!
//! Layers never see libp2p: they get and return typed values, and this module is the only
//! place that knows both sides.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lamina_primitives::interfaces::consensus::{
    ConsensusHandle, ConsensusMessage, ConsensusOutbound,
};
use lamina_primitives::interfaces::da::{DaError, DaHandle};
use lamina_primitives::interfaces::execution::{ExecutionHandle, MempoolRejection};
use lamina_primitives::interfaces::settlement::{SettlementHandle, SettlementMessage};
use lamina_primitives::interfaces::RequestError;
use lamina_primitives::{codec, Blob, Transaction};
use libp2p::PeerId;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::dissemination::Disseminator;
use crate::network::{NetworkEvent, NetworkHandle, Topic, Verdict};

/// Gossip messages judged at once; more wait in the network's bounded queue.
const MAX_MESSAGES_IN_FLIGHT: usize = 256;
/// Blocks asked of a peer per sync request.
const SYNC_BATCH: u32 = 64;
/// How often the sync task looks at peer heights even without news.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Capacity of the queue of transactions the HTTP API accepted, waiting to be gossiped.
pub const TX_GOSSIP_CAPACITY: usize = 8192;
/// Most transactions in one gossip message. Transactions travel in batches because every
/// gossip message costs framing, a gossip id and a validation round trip (a request to the
/// mempool) at every peer.
const MAX_TX_BATCH: usize = 512;
/// How long the first transaction of a batch waits for company.
const TX_BATCH_LINGER: Duration = Duration::from_millis(20);
/// Largest transaction batch on the wire (the `transactions` topic's limit), unless one
/// transaction is larger.
const TX_BATCH_BYTES: usize = 1 << 20;

/// The `transactions` topic's size limit for transactions of at most `max_transaction_bytes`.
pub fn transaction_batch_limit(max_transaction_bytes: usize) -> usize {
    TX_BATCH_BYTES.max(max_transaction_bytes.saturating_add(codec::VEC_PREFIX_BYTES))
}

/// What the relay connects.
#[derive(Debug)]
pub struct Relay {
    /// The network service.
    pub network: NetworkHandle,
    /// What the network hears from peers.
    pub events: mpsc::Receiver<NetworkEvent>,
    /// What the consensus engine sends out.
    pub outbound: mpsc::Receiver<ConsensusOutbound>,
    /// Transactions accepted over HTTP, to gossip.
    pub transactions: mpsc::Receiver<Transaction>,
    /// The consensus engine.
    pub consensus: ConsensusHandle,
    /// The execution layer (its mempool judges gossiped transactions).
    pub execution: ExecutionHandle,
    /// Largest transaction accepted (as in the mempool).
    pub max_transaction_bytes: usize,
    /// Largest consensus message accepted (a proposal carries a whole block).
    pub max_consensus_message_bytes: usize,
    /// The DA layer (its blob pool takes gossiped blobs).
    pub da: DaHandle,
    /// Largest outside blob accepted, in data bytes (as in the pool).
    pub max_blob_bytes: u64,
    /// The settlement layer (it queues gossiped settlement messages for proposals).
    pub settlement: SettlementHandle,
    /// Largest settlement message accepted on the settlement topic.
    pub max_settlement_message_bytes: usize,
    /// Sends our proposals as rows (when configured) and rebuilds others' from rows.
    pub dissemination: Arc<Disseminator>,
}

/// The `blobs` topic's size limit: one encoded blob of at most `max_blob_bytes` of data.
pub fn blob_gossip_limit(max_blob_bytes: u64) -> usize {
    usize::try_from(max_blob_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(Blob::ENCODED_PREFIX_BYTES)
}

impl Relay {
    /// Runs the relay's tasks until `shutdown` flips to true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let Relay {
            network,
            events,
            outbound,
            transactions,
            consensus,
            execution,
            max_transaction_bytes,
            max_consensus_message_bytes,
            da,
            max_blob_bytes,
            settlement,
            max_settlement_message_bytes,
            dissemination,
        } = self;
        let (sync_tx, sync_rx) = mpsc::channel(1024);
        let judge = Judge {
            network: network.clone(),
            consensus: consensus.clone(),
            execution,
            max_transaction_bytes,
            max_consensus_message_bytes,
            da,
            max_blob_bytes,
            settlement,
            max_settlement_message_bytes,
            dissemination: Arc::clone(&dissemination),
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(Arc::clone(&dissemination).follow_commits(consensus.subscribe()));
        tasks.spawn(inbound(judge, events, sync_tx.clone()));
        tasks.spawn(publish_outbound(
            network.clone(),
            dissemination,
            outbound,
            sync_tx,
        ));
        tasks.spawn(publish_transactions(
            network.clone(),
            transactions,
            max_transaction_bytes,
        ));
        tasks.spawn(sync(network, consensus, sync_rx));
        let _ = shutdown.wait_for(|stop| *stop).await;
        tasks.shutdown().await;
    }
}

/// News for the sync task.
#[derive(Debug, Clone, Copy)]
enum SyncNews {
    /// A peer's committed height.
    PeerHeight(PeerId, u64),
    /// The engine saw messages from heights it has not reached.
    Behind,
}

/// Judges gossip messages by asking the layer they are for.
#[derive(Debug, Clone)]
struct Judge {
    network: NetworkHandle,
    consensus: ConsensusHandle,
    execution: ExecutionHandle,
    max_transaction_bytes: usize,
    max_consensus_message_bytes: usize,
    da: DaHandle,
    max_blob_bytes: u64,
    settlement: SettlementHandle,
    max_settlement_message_bytes: usize,
    dissemination: Arc<Disseminator>,
}

impl Judge {
    async fn verdict(&self, topic: Topic, data: &[u8]) -> Verdict {
        match topic {
            Topic::Consensus => {
                let Ok(message) =
                    codec::decode::<ConsensusMessage>(data, self.max_consensus_message_bytes)
                else {
                    return Verdict::Reject;
                };
                // A busy or stopping engine: drop it without blaming the peer.
                self.consensus
                    .deliver(message)
                    .await
                    .unwrap_or(Verdict::Ignore)
            }
            Topic::Transactions => {
                let limit = transaction_batch_limit(self.max_transaction_bytes);
                let Ok(batch) = codec::decode::<Vec<Transaction>>(data, limit) else {
                    return Verdict::Reject;
                };
                if batch.is_empty() {
                    return Verdict::Reject;
                }
                // A saturated or stopping layer: drop it without blaming the peer.
                let Ok(results) = self.execution.submit_transactions(batch).await else {
                    return Verdict::Ignore;
                };
                batch_verdict(&results)
            }
            Topic::Settlement => {
                settlement_verdict(&self.settlement, data, self.max_settlement_message_bytes).await
            }
            Topic::Blobs => blob_verdict(&self.da, data, self.max_blob_bytes).await,
            Topic::Rows | Topic::HolderRows(_) => self.dissemination.judge(topic, data).await,
            Topic::BadEncoding => self.dissemination.judge_bad_encoding(data).await,
        }
    }
}

/// A gossiped blob, offered to the DA layer's pool.
async fn blob_verdict(da: &DaHandle, data: &[u8], max_blob_bytes: u64) -> Verdict {
    let Ok(blob) = codec::decode::<Blob>(data, blob_gossip_limit(max_blob_bytes)) else {
        return Verdict::Reject;
    };
    match da.submit_blob(blob).await {
        // Already waiting here too: relaying it again is harmless (gossip ids stop loops).
        Ok(_) => Verdict::Accept,
        // A full pool is this node's state, not the sender's fault.
        Err(RequestError::Layer(DaError::PoolFull { .. })) | Err(RequestError::Channel(_)) => {
            Verdict::Ignore
        }
        // A reserved namespace or an oversized blob: no honest node sends those.
        Err(RequestError::Layer(_)) => Verdict::Reject,
    }
}

/// A gossiped settlement message (a deposit, a withdrawal finalization, ... submitted to
/// some node), queued here too so whichever validator proposes next includes it.
async fn settlement_verdict(settlement: &SettlementHandle, data: &[u8], limit: usize) -> Verdict {
    let Ok(message) = codec::decode::<SettlementMessage>(data, limit) else {
        return Verdict::Reject;
    };
    match settlement.submit(message).await {
        Ok(()) => Verdict::Accept,
        // Whether a message is valid depends on this node's ledger (it may have applied the
        // block that carried it already), its mode and its pool: drop it without blame.
        Err(_) => Verdict::Ignore,
    }
}

/// A mempool refusal as a gossip verdict: only what no honest peer would relay (a bad
/// signature, another chain, an oversize transaction) counts against the sender; the rest
/// depends on this node's view (nonces, balances, a full mempool) and is dropped quietly.
fn transaction_verdict(rejection: &MempoolRejection) -> Verdict {
    match rejection {
        MempoolRejection::InvalidSignature
        | MempoolRejection::WrongChainId { .. }
        | MempoolRejection::TooLarge { .. } => Verdict::Reject,
        _ => Verdict::Ignore,
    }
}

/// Relay a transaction batch if anything in it was new here; blame the sender only for what
/// no honest node would pass on (the mempool's checks include the size).
fn batch_verdict<T>(results: &[Result<T, MempoolRejection>]) -> Verdict {
    let mut verdict = Verdict::Ignore;
    for result in results {
        match result {
            Ok(_) => verdict = Verdict::Accept,
            Err(rejection) if transaction_verdict(rejection) == Verdict::Reject => {
                return Verdict::Reject
            }
            Err(_) => {}
        }
    }
    verdict
}

/// The size of a transaction's encoding, without encoding it.
fn encoded_len(transaction: &Transaction) -> usize {
    borsh::object_length(transaction).unwrap_or(usize::MAX)
}

/// Hands each gossip message to its layer, several at once, and reports the verdict.
async fn inbound(
    judge: Judge,
    mut events: mpsc::Receiver<NetworkEvent>,
    sync: mpsc::Sender<SyncNews>,
) {
    let permits = Arc::new(Semaphore::new(MAX_MESSAGES_IN_FLIGHT));
    while let Some(event) = events.recv().await {
        match event {
            NetworkEvent::Gossip {
                topic,
                id,
                source,
                data,
            } => {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    return;
                };
                let judge = judge.clone();
                tokio::spawn(async move {
                    let verdict = judge.verdict(topic, &data).await;
                    judge.network.report(id, source, verdict);
                    drop(permit);
                });
            }
            NetworkEvent::PeerStatus { peer, height } => {
                let _ = sync.try_send(SyncNews::PeerHeight(peer, height));
            }
        }
    }
}

/// Publishes what the consensus engine sends out.
async fn publish_outbound(
    network: NetworkHandle,
    dissemination: Arc<Disseminator>,
    mut outbound: mpsc::Receiver<ConsensusOutbound>,
    sync: mpsc::Sender<SyncNews>,
) {
    while let Some(message) = outbound.recv().await {
        match message {
            ConsensusOutbound::Broadcast(ConsensusMessage::Proposal(proposal)) => {
                dissemination.send(proposal).await;
            }
            ConsensusOutbound::Broadcast(message) => {
                if let Err(error) = network
                    .publish(Topic::Consensus, codec::encode(&message))
                    .await
                {
                    tracing::warn!(%error, "cannot publish a consensus message");
                }
            }
            ConsensusOutbound::Behind { .. } => {
                let _ = sync.try_send(SyncNews::Behind);
            }
        }
    }
}

/// Gossips the transactions the HTTP API accepted, in batches: whatever arrives within
/// [`TX_BATCH_LINGER`] of the first, up to [`MAX_TX_BATCH`] transactions or the topic's
/// size limit.
async fn publish_transactions(
    network: NetworkHandle,
    mut transactions: mpsc::Receiver<Transaction>,
    max_transaction_bytes: usize,
) {
    let limit = transaction_batch_limit(max_transaction_bytes);
    let mut carried: Option<Transaction> = None;
    loop {
        let first = match carried.take() {
            Some(transaction) => transaction,
            None => match transactions.recv().await {
                Some(transaction) => transaction,
                None => return,
            },
        };
        let deadline = tokio::time::Instant::now() + TX_BATCH_LINGER;
        let mut bytes = codec::VEC_PREFIX_BYTES.saturating_add(encoded_len(&first));
        let mut batch = vec![first];
        while batch.len() < MAX_TX_BATCH {
            let Ok(Some(next)) = tokio::time::timeout_at(deadline, transactions.recv()).await
            else {
                break;
            };
            let size = encoded_len(&next);
            if bytes.saturating_add(size) > limit {
                carried = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        if let Err(error) = network
            .publish(Topic::Transactions, codec::encode(&batch))
            .await
        {
            tracing::debug!(%error, count = batch.len(), "cannot gossip transactions");
        }
    }
}

/// Keeps the node at its peers' tip: whenever a peer reports a height above ours (or the
/// engine says it is behind), fetches the missing certified blocks from the highest peer and
/// imports them one by one; the engine checks each certificate.
async fn sync(
    network: NetworkHandle,
    consensus: ConsensusHandle,
    mut news: mpsc::Receiver<SyncNews>,
) {
    let mut heights: HashMap<PeerId, u64> = HashMap::new();
    let mut ticker = tokio::time::interval(SYNC_INTERVAL);
    loop {
        tokio::select! {
            item = news.recv() => match item {
                Some(SyncNews::PeerHeight(peer, height)) => {
                    heights.insert(peer, height);
                }
                Some(SyncNews::Behind) => {}
                None => return,
            },
            _ = ticker.tick() => {
                // Forget peers that went away, and learn heights we missed.
                if let Ok(peers) = network.peers().await {
                    heights = peers
                        .into_iter()
                        .filter_map(|p| p.height.map(|h| (p.peer_id, h)))
                        .collect();
                }
            }
        }
        catch_up(&network, &consensus, &mut heights).await;
    }
}

/// Fetches and imports blocks while some peer is ahead. A peer whose blocks do not import
/// is skipped until it reports again.
async fn catch_up(
    network: &NetworkHandle,
    consensus: &ConsensusHandle,
    heights: &mut HashMap<PeerId, u64>,
) {
    loop {
        let Ok(status) = consensus.status().await else {
            return;
        };
        let ours = status.committed_height;
        let Some((&peer, &theirs)) = heights.iter().max_by_key(|(_, height)| **height) else {
            return;
        };
        if theirs <= ours {
            return;
        }
        let count = u32::try_from(theirs - ours)
            .unwrap_or(u32::MAX)
            .min(SYNC_BATCH);
        let blocks = match network.fetch_blocks(peer, ours + 1, count).await {
            Ok(blocks) if !blocks.is_empty() => blocks,
            Ok(_) => {
                heights.remove(&peer);
                continue;
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot fetch blocks; trying another peer");
                heights.remove(&peer);
                continue;
            }
        };
        let mut imported = 0;
        for block in blocks {
            let height = block.block.height();
            match consensus.import_block(Arc::new(block)).await {
                Ok(_) => imported += 1,
                Err(error) => {
                    tracing::warn!(%peer, height, %error, "block from peer not imported");
                    heights.remove(&peer);
                    break;
                }
            }
        }
        if imported > 0 {
            tracing::info!(%peer, from = ours + 1, imported, "synced blocks from a peer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gossiped_blobs_go_to_the_pool_and_only_bad_ones_penalise() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let config = lamina_da::DaConfig {
            max_blob_bytes: 100,
            max_pool_bytes: 150,
            ..lamina_da::DaConfig::default()
        };
        let da = lamina_da::spawn(config, &db).unwrap();
        let blob = |namespace: [u8; 8], len: usize| {
            codec::encode(&Blob {
                namespace: lamina_primitives::Namespace(namespace),
                data: vec![7; len],
            })
        };
        assert_eq!(blob_verdict(&da, b"not a blob", 100).await, Verdict::Reject);
        assert_eq!(
            blob_verdict(&da, &blob(*b"lam-exec", 10), 100).await,
            Verdict::Reject
        );
        assert_eq!(
            blob_verdict(&da, &blob(*b"rollup-1", 101), 100).await,
            Verdict::Reject
        );
        assert_eq!(
            blob_verdict(&da, &blob(*b"rollup-1", 100), 100).await,
            Verdict::Accept
        );
        assert_eq!(da.status().await.unwrap().pending_blobs, 1);
        // The pool is this node's business: full is not the sender's fault.
        assert_eq!(
            blob_verdict(&da, &blob(*b"rollup-2", 100), 100).await,
            Verdict::Ignore
        );
    }

    #[tokio::test]
    async fn gossiped_settlement_messages_are_queued_and_only_garbage_penalises() {
        use lamina_primitives::bridge::{Deposit, DepositData};
        use lamina_primitives::{Genesis, GenesisAccount, Keypair, Validator};
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let user = Keypair::deterministic("gossip-user");
        let validator = Keypair::deterministic("gossip-validator");
        let genesis = Genesis {
            chain_id: "gossip".into(),
            genesis_time_ms: 0,
            fee_per_transaction: 1,
            validators: vec![Validator {
                address: validator.address(),
                power: 1,
            }],
            accounts: vec![GenesisAccount {
                address: user.address(),
                balance: 100,
            }],
        };
        let config = lamina_settlement::SettlementConfig {
            kind: lamina_settlement::SettlementKind::Optimistic,
            ..Default::default()
        };
        let settlement = lamina_settlement::spawn(config, &genesis, None, &db).unwrap();
        let deposit = |amount| {
            codec::encode(&SettlementMessage::Deposit(Deposit::sign(
                "gossip",
                &user,
                DepositData {
                    to: user.address(),
                    amount,
                    nonce: 0,
                },
            )))
        };
        let limit = 1 << 20;
        assert_eq!(
            settlement_verdict(&settlement, &deposit(40), limit).await,
            Verdict::Accept
        );
        // Heard again from another peer: still fine to relay, queued once.
        assert_eq!(
            settlement_verdict(&settlement, &deposit(40), limit).await,
            Verdict::Accept
        );
        // Invalid against this ledger: dropped without blame.
        assert_eq!(
            settlement_verdict(&settlement, &deposit(500), limit).await,
            Verdict::Ignore
        );
        assert_eq!(
            settlement_verdict(&settlement, b"not a message", limit).await,
            Verdict::Reject
        );
        let blobs = settlement.pending_blobs(1, 1 << 20).await.unwrap();
        assert_eq!(
            blobs.len(),
            1,
            "the queued deposit rides in the next proposal"
        );
    }

    #[test]
    fn only_peer_independent_refusals_penalise() {
        assert_eq!(
            transaction_verdict(&MempoolRejection::InvalidSignature),
            Verdict::Reject
        );
        assert_eq!(
            transaction_verdict(&MempoolRejection::AlreadyPending),
            Verdict::Ignore
        );
        assert_eq!(
            transaction_verdict(&MempoolRejection::NonceTooLow {
                expected: 3,
                got: 1
            }),
            Verdict::Ignore
        );
    }

    #[test]
    fn a_batch_is_relayed_when_anything_was_new_and_blamed_for_any_forgery() {
        let stale = || Err(MempoolRejection::AlreadyPending);
        assert_eq!(batch_verdict(&[stale(), Ok(())]), Verdict::Accept);
        assert_eq!(batch_verdict(&[stale(), stale()]), Verdict::Ignore);
        assert_eq!(
            batch_verdict(&[Ok(()), Err(MempoolRejection::InvalidSignature), Ok(())]),
            Verdict::Reject
        );
    }
}
