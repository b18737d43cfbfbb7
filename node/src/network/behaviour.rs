//! The protocols a node speaks with its peers, combined into one libp2p behaviour, and their
//! configuration.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use lamina_primitives::Hash;
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicHash,
    TopicScoreParams, ValidationMode,
};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, kad, ping, StreamProtocol};

use super::codec::{SyncCodec, SYNC_PROTOCOL};
use super::{NetworkConfig, NetworkError, Topic};

/// Room for a gossip message's envelope (source, sequence number, topic, signature, key)
/// on top of its payload, so a payload at its topic's limit still fits the wire limit.
const MESSAGE_FRAMING_BYTES: usize = 1024;

/// Room on top of the largest message for the rest of an RPC frame (control messages,
/// subscriptions) that gossipsub packs alongside it.
const RPC_FRAMING_BYTES: usize = 64 << 10;

/// Gossipsub heartbeat: how often meshes are repaired and gossip is emitted. Short, because
/// Lamina networks are small and a new peer should join the mesh quickly.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Kademlia bootstraps on this period besides when its routing table gains peers, so a node
/// keeps learning about peers that joined after it.
pub(crate) const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(30);

/// A sync request (the largest answer is tens of MiB) fails after this long.
const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Concurrent sync streams per connection; bounds what one peer can make us serve at once.
const SYNC_MAX_STREAMS: usize = 32;

/// Identify protocol version: peers with another one are still identified; the real
/// compatibility check is the sync status exchange.
const IDENTIFY_PROTOCOL: &str = "/lamina/id/1";

/// Everything a node runs on each connection.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Topic broadcast of consensus messages, transactions and settlement messages.
    pub(crate) gossipsub: gossipsub::Behaviour,
    /// Status exchange and block download.
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
    /// Tells peers our listen addresses and protocols (feeds Kademlia).
    pub(crate) identify: identify::Behaviour,
    /// Detects dead connections.
    pub(crate) ping: ping::Behaviour,
    /// Peer discovery.
    pub(crate) kademlia: kad::Behaviour<kad::store::MemoryStore>,
}

impl Behaviour {
    /// Builds the behaviour for `key`, subscribed to the chain's topics. Without
    /// `discovery`, Kademlia neither serves nor learns peers, so the node stays connected to
    /// its configured peers (and those that dial it) only.
    pub(crate) fn new(
        key: &Keypair,
        config: &NetworkConfig,
        discovery: bool,
    ) -> Result<Behaviour, NetworkError> {
        Ok(Behaviour {
            gossipsub: gossipsub(key, config)?,
            sync: request_response::Behaviour::with_codec(
                SyncCodec,
                [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(SYNC_REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(SYNC_MAX_STREAMS),
            ),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                    .with_agent_version(format!("lamina/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::default(),
            kademlia: kademlia(key, &config.chain_id, discovery)?,
        })
    }
}

/// The gossipsub topic of `topic` on chain `chain_id`.
pub(crate) fn ident_topic(topic: Topic, chain_id: &str) -> IdentTopic {
    IdentTopic::new(topic.name(chain_id))
}

/// The Kademlia protocol name of a chain: one DHT per chain, so peers of other chains never
/// enter our routing table.
pub(crate) fn kad_protocol(chain_id: &str) -> Result<StreamProtocol, NetworkError> {
    StreamProtocol::try_from_owned(format!("/lamina/{chain_id}/kad/1"))
        .map_err(|e| NetworkError::Config(format!("invalid chain id for a protocol name: {e}")))
}

fn kademlia(
    key: &Keypair,
    chain_id: &str,
    discovery: bool,
) -> Result<kad::Behaviour<kad::store::MemoryStore>, NetworkError> {
    let peer_id = key.public().to_peer_id();
    let mut config = kad::Config::new(kad_protocol(chain_id)?);
    config.set_periodic_bootstrap_interval(Some(KAD_BOOTSTRAP_INTERVAL));
    let mut kademlia =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), config);
    // Kademlia switches to server mode only once an external address is confirmed, which
    // never happens on a LAN or loopback testnet; without serving, nobody could discover
    // anybody through us.
    let mode = if discovery {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    };
    kademlia.set_mode(Some(mode));
    Ok(kademlia)
}

fn gossipsub(key: &Keypair, config: &NetworkConfig) -> Result<gossipsub::Behaviour, NetworkError> {
    let limits = config.topic_limits;
    let largest = Topic::ALL
        .iter()
        .map(|topic| limits.get(*topic))
        .max()
        .unwrap_or(0);
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        // Gossip messages are not signed by libp2p: every payload carries its own
        // authentication where it needs one (transactions by their senders, consensus
        // messages and proposal parts by validators), peers are scored by the connection that
        // delivered a message, and an author signature would cost one ed25519 signature per
        // publication and one check per receiving peer for nothing. The author field and a
        // random sequence number remain, only to tell publications apart (see below).
        .validation_mode(ValidationMode::None)
        // Nothing is relayed until the node's layers have judged it.
        .validate_messages()
        // One id per publication, not per payload: consensus re-sends identical signed
        // votes to get past lost messages, and a content id would make gossipsub suppress
        // every re-send as a duplicate. The layers recognise repeated payloads themselves.
        .message_id_fn(|message: &gossipsub::Message| {
            gossipsub::MessageId::new(publication_id(message).as_bytes())
        })
        .heartbeat_interval(HEARTBEAT)
        .flood_publish(true)
        .max_transmit_size(largest.saturating_add(MESSAGE_FRAMING_BYTES + RPC_FRAMING_BYTES));
    for topic in config.topics() {
        // Gossipsub drops (and penalises) messages well over a topic's limit on its own; the
        // exact payload limit is checked when the message is handed out.
        builder.set_topic_max_transmit_size(
            ident_topic(topic, &config.chain_id).hash(),
            limits.get(topic).saturating_add(MESSAGE_FRAMING_BYTES),
        );
    }
    let gossip_config = builder
        .build()
        .map_err(|e| NetworkError::Config(format!("gossipsub: {e}")))?;
    let mut gossipsub = gossipsub::Behaviour::new(
        MessageAuthenticity::Author(key.public().to_peer_id()),
        gossip_config,
    )
    .map_err(|e| NetworkError::Config(format!("gossipsub: {e}")))?;
    let topics: HashMap<TopicHash, TopicScoreParams> = config
        .topics()
        .into_iter()
        .map(|topic| {
            (
                ident_topic(topic, &config.chain_id).hash(),
                topic_score_params(),
            )
        })
        .collect();
    gossipsub
        .with_peer_score(peer_score_params(topics), peer_score_thresholds())
        .map_err(|e| NetworkError::Config(format!("gossipsub peer scoring: {e}")))?;
    for topic in config.subscriptions() {
        gossipsub
            .subscribe(&ident_topic(topic, &config.chain_id))
            .map_err(|e| NetworkError::Config(format!("cannot subscribe to {topic}: {e}")))?;
    }
    Ok(gossipsub)
}

/// Scoring common to all peers. Loopback is exempt from the same-IP penalty because a local
/// testnet runs every node on 127.0.0.1.
/// The id of one publication: SHA-256 over the author, its (random) sequence number and the
/// payload. Nothing is signed, so a peer could copy the first two onto another payload, but
/// the payload is part of the id: the worst it can do is repeat a publication, which gossip
/// drops as a duplicate and the layers recognise anyway.
pub(crate) fn publication_id(message: &gossipsub::Message) -> Hash {
    let mut bytes = Vec::with_capacity(64 + message.data.len());
    if let Some(source) = &message.source {
        bytes.extend_from_slice(&source.to_bytes());
    }
    bytes.extend_from_slice(&message.sequence_number.unwrap_or(0).to_be_bytes());
    bytes.extend_from_slice(&message.data);
    Hash::digest(&bytes)
}

fn peer_score_params(topics: HashMap<TopicHash, TopicScoreParams>) -> PeerScoreParams {
    let mut params = PeerScoreParams {
        topics,
        topic_score_cap: 100.0,
        ..PeerScoreParams::default()
    };
    params
        .ip_colocation_factor_whitelist
        .insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
    params
        .ip_colocation_factor_whitelist
        .insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
    params
}

/// Per-topic scoring. Invalid messages dominate: the penalty is ten times the square of the
/// (slowly decaying) count of rejected messages, so a second one gets a peer below the gossip
/// threshold and a third gets it graylisted (one honest mistake is forgiven). Mesh-delivery
/// quotas are off: a quiet chain has few messages, and honest peers must not be pruned for
/// not sending what does not exist.
fn topic_score_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 3600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(600)),
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(
            600,
        )),
        ..TopicScoreParams::default()
    }
}

/// Thresholds: below -10 we stop gossiping with a peer, below -50 we stop publishing to it,
/// below -80 we ignore it entirely.
fn peer_score_thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}
