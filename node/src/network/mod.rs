//! The node's peer-to-peer network: a libp2p service that carries the layers' network
//! messages between nodes, and lets a node catch up by downloading committed blocks.
//!
//! The service is one task owning a libp2p `Swarm` (TCP + noise + yamux, DNS when the
//! system resolver is configured). The rest of the node reaches it only through a cloneable
//! [`NetworkHandle`] and a bounded stream of [`NetworkEvent`]s; layer crates never see
//! libp2p.
//!
//! What runs on each connection:
//!
//! * **gossipsub** on the chain's topics ([`Topic`]), named `lamina/{chain_id}/{topic}/1`:
//!   every node subscribes to the shared ones ([`Topic::ALL`]) and a validator also to the
//!   topic of its own rows of proposed blocks ([`Topic::HolderRows`]).
//!   Each publication has its own id (SHA-256 of author, sequence number and payload, so a
//!   re-sent consensus message is not suppressed as a duplicate) and is validated by the node
//!   before it is relayed: every [`NetworkEvent::Gossip`] must be answered with
//!   [`NetworkHandle::report`], and only [`Verdict::Accept`]ed messages travel on. Rejected
//!   messages lower the sender's peer score until it is ignored. Each topic has its own
//!   size limit ([`TopicLimits`]), enforced on publish and on receipt.
//! * **sync** (`/lamina/sync/1`), a request-response protocol (see [`codec`]): peers ask each
//!   other's [`PeerStatus`] every second, which both refuses peers of another chain or with
//!   incompatible layers (they are disconnected and never redialled) and tracks every peer's
//!   committed height; [`NetworkHandle::fetch_blocks`] downloads committed blocks, and
//!   [`ShareGatherer::gather`] collects the erasure-coded rows peers keep of a pruned height
//!   (from which the DA layer rebuilds its body; see `crate::archive`).
//! * **identify**, **kademlia** (one DHT per chain) and **ping**: discovery and liveness. The
//!   configured peers are dialled at start and redialled while disconnected, so start-up
//!   order does not matter; peers learned through the DHT are dialled too, so a node that
//!   knows a single peer ends up connected to the rest of a small network.
//!
//! The service stops when every [`NetworkHandle`] has been dropped.

mod behaviour;
pub mod codec;
mod service;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use lamina_primitives::interfaces::consensus::ConsensusHandle;
use lamina_primitives::interfaces::da::{DaHandle, HeldShares};
use lamina_primitives::{CommittedBlock, Hash};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

pub use codec::PeerStatus;

/// Capacity of the event stream to the node. When it is full, gossip is dropped (and
/// reported [`Verdict::Ignore`]) rather than stalling every connection.
pub const EVENT_CAPACITY: usize = 4096;

/// Capacity of the queue of requests from handles; senders wait when it is full.
const COMMAND_CAPACITY: usize = 1024;

/// How long [`ShareGatherer::gather`] waits for the slowest peer.
const SHARE_GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// Capacity of the verdict queue. Larger than [`EVENT_CAPACITY`] so that answering every
/// handed-out message never finds it full.
const VERDICT_CAPACITY: usize = 2 * EVENT_CAPACITY;

/// How the network service is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Where to listen for peers, e.g. `/ip4/0.0.0.0/tcp/26656` (port 0: any free port).
    pub listen: Multiaddr,
    /// Peers to connect to and stay connected to. An address may end in `/p2p/<peer id>`;
    /// without it, whoever answers there is accepted (after the status check).
    pub peers: Vec<Multiaddr>,
    /// This node's chain id; peers on another chain are refused.
    pub chain_id: String,
    /// This node's genesis hash; peers with another genesis are refused.
    pub genesis_hash: Hash,
    /// Opaque compatibility string (the layer kinds that must agree across the network);
    /// peers whose string differs are refused.
    pub compat: String,
    /// Largest payload accepted on each gossip topic.
    pub topic_limits: TopicLimits,
    /// Number of row holders (the validators): the [`Topic::HolderRows`] topics that exist.
    pub holders: u32,
    /// This node's holder index, if it is a validator: it subscribes to that holder's topic.
    pub holder: Option<u32>,
}

impl NetworkConfig {
    /// Every topic of the chain: the shared ones and each holder's.
    pub fn topics(&self) -> Vec<Topic> {
        Topic::ALL
            .into_iter()
            .chain((0..self.holders).map(Topic::HolderRows))
            .collect()
    }

    /// The topics this node subscribes to: the shared ones and its own holder's.
    pub fn subscriptions(&self) -> Vec<Topic> {
        Topic::ALL
            .into_iter()
            .chain(self.holder.map(Topic::HolderRows))
            .collect()
    }
}

/// A gossip topic. On the wire its name is `lamina/{chain_id}/{topic}/1`, so chains never
/// share topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Consensus messages (proposals, votes).
    Consensus,
    /// Transactions for the mempool.
    Transactions,
    /// Settlement messages.
    Settlement,
    /// Outside blobs for the DA layer's pool (`POST /v1/da/blobs` on any node reaches
    /// whichever validator proposes next).
    Blobs,
    /// Rows of proposed blocks that their holders forward to everyone, from which every
    /// node rebuilds the body.
    Rows,
    /// The rows of a proposed block that the proposer sends holder `i` (validator `i`):
    /// only that validator subscribes, so each gets its own rows and no one else's.
    HolderRows(u32),
    /// Proofs that a proposed block is badly encoded (`crate::bad_encoding`).
    BadEncoding,
}

impl Topic {
    /// The shared topics; every node subscribes to all of them.
    pub const ALL: [Topic; 6] = [
        Topic::Consensus,
        Topic::Transactions,
        Topic::Settlement,
        Topic::Blobs,
        Topic::Rows,
        Topic::BadEncoding,
    ];

    /// The topic's gossipsub name on chain `chain_id`.
    pub fn name(self, chain_id: &str) -> String {
        format!("lamina/{chain_id}/{self}/1")
    }
}

impl fmt::Display for Topic {
    /// Short name: `consensus`, `transactions`, `settlement`, `blobs`, `rows`, `rows-{i}`,
    /// `bad-encoding`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Consensus => f.write_str("consensus"),
            Topic::Transactions => f.write_str("transactions"),
            Topic::Settlement => f.write_str("settlement"),
            Topic::Blobs => f.write_str("blobs"),
            Topic::Rows => f.write_str("rows"),
            Topic::HolderRows(index) => write!(f, "rows-{index}"),
            Topic::BadEncoding => f.write_str("bad-encoding"),
        }
    }
}

/// Largest payload, in bytes, accepted on each topic. A bigger message is an error to
/// publish and is rejected (penalising its sender) on receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    /// Limit of [`Topic::Consensus`].
    pub consensus: usize,
    /// Limit of [`Topic::Transactions`].
    pub transactions: usize,
    /// Limit of [`Topic::Settlement`].
    pub settlement: usize,
    /// Limit of [`Topic::Blobs`].
    pub blobs: usize,
    /// Limit of [`Topic::Rows`] and every [`Topic::HolderRows`].
    pub rows: usize,
}

impl TopicLimits {
    /// The limit of `topic`.
    pub fn get(&self, topic: Topic) -> usize {
        match topic {
            Topic::Consensus => self.consensus,
            Topic::Transactions => self.transactions,
            Topic::Settlement => self.settlement,
            Topic::Blobs => self.blobs,
            Topic::Rows | Topic::HolderRows(_) => self.rows,
            Topic::BadEncoding => crate::bad_encoding::MAX_NOTICE_BYTES,
        }
    }
}

/// Identifies one publication of a gossip message: the SHA-256 of its author, the author's
/// sequence number and the payload. The same publication reaching a node by two paths is one
/// message; the same payload published again is a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId(pub Hash);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The node's judgement of a gossip message, given with [`NetworkHandle::report`]: the
/// verdict of the layer the message is for.
pub use lamina_primitives::interfaces::Verdict;

/// What the network tells the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkEvent {
    /// A gossip message that is not relayed until the node answers it with
    /// [`NetworkHandle::report`] (with this `id` and `source`). An unanswered message is
    /// never relayed and is forgotten after a few seconds.
    Gossip {
        /// Its topic.
        topic: Topic,
        /// Its id.
        id: MessageId,
        /// The peer it came from (not necessarily its author): the one a
        /// [`Verdict::Reject`] penalises.
        source: PeerId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A peer's committed height, sent when it first passes the status check and whenever
    /// its height changes afterwards (peers are asked every second).
    PeerStatus {
        /// The peer.
        peer: PeerId,
        /// Its highest committed height.
        height: u64,
    },
}

/// A connected peer that passed the status check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub peer_id: PeerId,
    /// An address of it: the one we dialled, or one it listens on, or else the remote end
    /// of its connection to us.
    pub address: Option<Multiaddr>,
    /// Its committed height at the last status exchange.
    pub height: Option<u64>,
}

/// Why a network operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// The listen address could not be bound.
    #[error("cannot listen for peers on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why (e.g. the port is in use).
        reason: String,
    },
    /// The network could not be set up from its config.
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// A payload is larger than its topic allows.
    #[error("{topic} message of {size} bytes exceeds the topic's limit of {limit} bytes")]
    TooLarge {
        /// The topic.
        topic: Topic,
        /// The payload's size.
        size: usize,
        /// The topic's limit.
        limit: usize,
    },
    /// Gossipsub refused to publish.
    #[error("cannot publish on {topic}: {reason}")]
    Publish {
        /// The topic.
        topic: Topic,
        /// Why.
        reason: String,
    },
    /// A request to a peer got no answer (dial failure, timeout, connection lost, ...).
    #[error("request to peer {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The peer answered that it could not serve the request.
    #[error("peer {peer} could not serve the request: {message}")]
    Remote {
        /// The peer.
        peer: PeerId,
        /// Its explanation.
        message: String,
    },
    /// The peer's answer does not match the request.
    #[error("peer {peer} sent an invalid response: {reason}")]
    InvalidResponse {
        /// The peer.
        peer: PeerId,
        /// What is wrong with it.
        reason: String,
    },
    /// The network service has stopped.
    #[error("the network service has stopped")]
    Stopped,
}

/// Cloneable handle to the network service.
#[derive(Debug, Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    verdicts: mpsc::Sender<VerdictReport>,
    local_peer_id: PeerId,
    listen_addr: Arc<RwLock<Multiaddr>>,
    topic_limits: TopicLimits,
}

/// A request from a handle to the service.
#[derive(Debug)]
enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetworkError>>,
    },
    FetchBlocks {
        peer: PeerId,
        from: u64,
        count: u32,
        reply: oneshot::Sender<Result<Vec<CommittedBlock>, NetworkError>>,
    },
    FetchShares {
        peer: PeerId,
        height: u64,
        reply: oneshot::Sender<Result<HeldShares, NetworkError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    /// Internal state that tests wait on.
    #[cfg(test)]
    Inspect { reply: oneshot::Sender<Inspection> },
}

/// What tests can observe of the service beyond the public API.
#[cfg(test)]
#[derive(Debug)]
struct Inspection {
    /// Peers with an open connection (verified or not).
    connected: Vec<PeerId>,
    /// Peers refused by the status check.
    refused: Vec<PeerId>,
    /// Our gossip mesh of each topic.
    mesh: std::collections::HashMap<Topic, Vec<PeerId>>,
    /// The peers subscribed to each topic, as they told us.
    subscribed: std::collections::HashMap<Topic, Vec<PeerId>>,
}

/// A verdict on a handed-out gossip message.
#[derive(Debug)]
struct VerdictReport {
    id: MessageId,
    source: PeerId,
    verdict: Verdict,
}

/// Starts the network service: binds `config.listen`, dials `config.peers`, and serves
/// status and blocks from `blocks` (bodies pruned there come from `da`, rebuilt from peers'
/// shares when needed) and held shares from `da`. Returns a handle and the stream of events
/// for the node.
///
/// Must be called inside a tokio runtime. The listen address is bound before this returns,
/// so a port in use is an error here rather than a silent failure later.
pub fn spawn(
    config: NetworkConfig,
    identity: Keypair,
    blocks: ConsensusHandle,
    da: DaHandle,
) -> Result<(NetworkHandle, mpsc::Receiver<NetworkEvent>), NetworkError> {
    spawn_with(config, identity, blocks, da, true)
}

/// [`spawn`], optionally without discovery: then the node connects only to its configured
/// peers and to those that dial it, which lets tests build a fixed topology.
pub(crate) fn spawn_with(
    config: NetworkConfig,
    identity: Keypair,
    blocks: ConsensusHandle,
    da: DaHandle,
    discovery: bool,
) -> Result<(NetworkHandle, mpsc::Receiver<NetworkEvent>), NetworkError> {
    let (command_tx, command_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (verdict_tx, verdict_rx) = mpsc::channel(VERDICT_CAPACITY);
    let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
    let local_peer_id = identity.public().to_peer_id();
    let topic_limits = config.topic_limits;
    let started = service::Service::start(
        config,
        identity,
        service::Layers { blocks, da },
        service::Channels {
            own_commands: command_tx.downgrade(),
            commands: command_rx,
            verdicts: verdict_rx,
            events: event_tx,
        },
        discovery,
    )?;
    let handle = NetworkHandle {
        commands: command_tx,
        verdicts: verdict_tx,
        local_peer_id,
        listen_addr: started.listen_addr,
        topic_limits,
    };
    tokio::spawn(started.service.run());
    Ok((handle, event_rx))
}

impl NetworkHandle {
    /// Publishes `data` on `topic` to our peers.
    ///
    /// Having no peer on the topic is not an error (a lone node still works; the message is
    /// simply not sent), nor is publishing a payload the network has already seen. A payload
    /// over the topic's limit is.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), NetworkError> {
        let limit = self.topic_limits.get(topic);
        if data.len() > limit {
            return Err(NetworkError::TooLarge {
                topic,
                size: data.len(),
                limit,
            });
        }
        self.ask(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Answers a [`NetworkEvent::Gossip`]: `id` and `source` as handed out.
    ///
    /// Never waits: if the service is too far behind to take the verdict, the message is
    /// simply not relayed.
    pub fn report(&self, id: MessageId, source: PeerId, verdict: Verdict) {
        let report = VerdictReport {
            id,
            source,
            verdict,
        };
        if let Err(err) = self.verdicts.try_send(report) {
            tracing::debug!(message = %id, "verdict dropped: {err}");
        }
    }

    /// Downloads the committed blocks at heights `from`, `from + 1`, ... from `peer` (dialling
    /// it if needed). The answer is in height order and may be shorter than `count`: the
    /// peer stops at the first height it does not have and at its response caps (256 blocks,
    /// about 16 MiB). The blocks' certificates are not checked here.
    pub async fn fetch_blocks(
        &self,
        peer: PeerId,
        from: u64,
        count: u32,
    ) -> Result<Vec<CommittedBlock>, NetworkError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        self.ask(|reply| Command::FetchBlocks {
            peer,
            from,
            count,
            reply,
        })
        .await?
    }

    /// The connected peers that passed the status check, with their last known height.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetworkError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// What gathers shares of pruned heights from our peers.
    pub fn share_gatherer(&self) -> ShareGatherer {
        ShareGatherer {
            commands: self.commands.clone(),
        }
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The address we listen on, ending in `/p2p/<our id>`: what another node puts in its
    /// peer list. With a wildcard listen address (`0.0.0.0`), one of the machine's addresses
    /// once known.
    pub fn listen_addr(&self) -> Multiaddr {
        let addr = self
            .listen_addr
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        addr.with_p2p(self.local_peer_id)
            .unwrap_or_else(|addr| addr)
    }

    #[cfg(test)]
    async fn inspect(&self) -> Result<Inspection, NetworkError> {
        self.ask(|reply| Command::Inspect { reply }).await
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        ask(&self.commands, make).await
    }
}

/// Collects, from every verified peer at once, the rows they keep of a height's extended
/// square: what the DA layer needs to rebuild a body pruned here. Cheap to clone; the
/// network's own block-serving tasks use one too.
#[derive(Debug, Clone)]
pub struct ShareGatherer {
    commands: mpsc::Sender<Command>,
}

impl ShareGatherer {
    /// The rows every verified peer answers with within a few seconds; peers that fail or
    /// do not have the height are skipped (logged at debug). The rows are not checked here:
    /// the DA layer checks each against its row root before using it.
    pub async fn gather(&self, height: u64) -> Vec<HeldShares> {
        let Ok(peers) = ask(&self.commands, |reply| Command::Peers { reply }).await else {
            return Vec::new();
        };
        let fetches = peers.into_iter().map(|peer| async move {
            let fetch = ask(&self.commands, |reply| Command::FetchShares {
                peer: peer.peer_id,
                height,
                reply,
            });
            match tokio::time::timeout(SHARE_GATHER_TIMEOUT, fetch).await {
                Ok(Ok(Ok(held))) => Some(held),
                Ok(Ok(Err(err))) | Ok(Err(err)) => {
                    tracing::debug!(peer = %peer.peer_id, height, "no shares from peer: {err}");
                    None
                }
                Err(_) => {
                    tracing::debug!(peer = %peer.peer_id, height, "no shares from peer in time");
                    None
                }
            }
        });
        libp2p::futures::future::join_all(fetches)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// Sends a command and waits for its answer.
async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, NetworkError> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(make(reply))
        .await
        .map_err(|_| NetworkError::Stopped)?;
    answer.await.map_err(|_| NetworkError::Stopped)
}
