//! The service task: owns the swarm, turns handle commands into protocol actions and
//! protocol events into [`NetworkEvent`]s.
//!
//! Nothing here waits on anything but the swarm and its own queues: inbound sync requests
//! are answered by spawned tasks (they ask the consensus engine and the DA layer, and to
//! serve a pruned block they gather shares from other peers through this very service),
//! which hand the response back through a channel, and events to the node are sent without
//! waiting.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use lamina_primitives::interfaces::consensus::{ConsensusError, ConsensusHandle};
use lamina_primitives::interfaces::da::{DaHandle, HeldShares};
use lamina_primitives::interfaces::RequestError;
use lamina_primitives::{CommittedBlock, Hash};
use libp2p::core::ConnectedPoint;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, PublishError, TopicHash};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{identify, kad, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::{interval, interval_at, Instant, MissedTickBehavior};

use super::behaviour::{self, Behaviour, BehaviourEvent};
use super::codec::{
    PeerStatus, SyncRequest, SyncResponse, MAX_BLOCKS_PER_REQUEST, SERVE_TARGET_BYTES,
};
use super::{
    Command, MessageId, NetworkConfig, NetworkError, NetworkEvent, PeerInfo, ShareGatherer, Topic,
    TopicLimits, Verdict, VerdictReport,
};
use crate::archive::{self, ArchiveError};

/// How often every connected peer is asked for its status.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// How often configured peers that are not connected are dialled again.
pub(super) const REDIAL_INTERVAL: Duration = Duration::from_secs(2);

/// A connection with no protocol activity is closed after this long.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a refused peer stays connected: long enough to get our answer to its own
/// status request and so refuse us too (and not redial us), if it has not already.
const REFUSAL_GRACE: Duration = Duration::from_millis(500);

/// Peers found through discovery are dialled only while we have fewer connections than this.
const DISCOVERY_TARGET_PEERS: usize = 50;

/// While a node has fewer connections than [`DISCOVERY_TARGET_PEERS`], it asks its peers for
/// more this often. Kademlia bootstraps on its own when a peer enters its routing table and
/// then every [`super::behaviour::KAD_BOOTSTRAP_INTERVAL`]: a node whose only peer did not
/// know the others yet (they all started together) would otherwise wait that long to find
/// them.
const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// Block requests served at once (each may hold ~16 MiB until it is sent).
const CONCURRENT_BLOCK_SERVES: usize = 8;

/// Share requests served at once. Apart from block serves: a node serving a pruned block
/// gathers shares from peers that may themselves be busy serving blocks.
const CONCURRENT_SHARE_SERVES: usize = 8;

/// Responses computed by serving tasks, waiting for the service loop to send them.
const RESPONSE_QUEUE: usize = 64;

/// How much of a peer-supplied string goes into a log line.
const SHOWN_CHARS: usize = 80;

/// The layers the service serves peers from.
#[derive(Debug, Clone)]
pub(super) struct Layers {
    /// Committed blocks and the chain's height.
    pub(super) blocks: ConsensusHandle,
    /// Shares, and the bodies the block store pruned.
    pub(super) da: DaHandle,
}

/// The queues between the handles, the node and the service.
pub(super) struct Channels {
    /// Our own command queue, for serving tasks that gather shares from peers. Weak, so
    /// that the service still stops once every handle is dropped.
    pub(super) own_commands: mpsc::WeakSender<Command>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) verdicts: mpsc::Receiver<VerdictReport>,
    pub(super) events: mpsc::Sender<NetworkEvent>,
}

/// A service that is listening but not yet running.
pub(super) struct Started {
    pub(super) service: Service,
    /// Shared with the handles: where we listen.
    pub(super) listen_addr: Arc<RwLock<Multiaddr>>,
}

/// What identifies our network: peers must report the same.
#[derive(Debug)]
struct Chain {
    chain_id: String,
    genesis_hash: Hash,
    compat: String,
}

/// A peer we are connected to.
#[derive(Debug)]
struct Peer {
    /// Best known address of it (see [`PeerInfo::address`]).
    address: Option<Multiaddr>,
    /// Whether `address` is one we dialled (and so certainly reachable).
    dialled: bool,
    /// Its height at the last status answer.
    height: Option<u64>,
    /// It answered a status request matching our chain.
    verified: bool,
    /// A status request to it is outstanding.
    status_in_flight: bool,
}

/// A peer from the config, kept connected.
#[derive(Debug)]
struct ConfigPeer {
    addr: Multiaddr,
    /// Its id: from the address's `/p2p` suffix, or learned from the first connection.
    peer_id: Option<PeerId>,
    /// `peer_id` came from a connection, not from the config, so a different key answering
    /// there later (the node was re-keyed) replaces it.
    learned: bool,
    /// The address turned out to be our own.
    is_self: bool,
    /// The dial in progress, if any.
    dialing: Option<ConnectionId>,
    /// A wrong peer id at this address was already logged (it is redialled every few
    /// seconds; once is enough).
    warned_wrong_id: bool,
}

/// An outbound sync request waiting for its answer.
#[derive(Debug)]
enum Pending {
    Status(PeerId),
    Blocks {
        from: u64,
        count: u32,
        reply: oneshot::Sender<Result<Vec<CommittedBlock>, NetworkError>>,
    },
    Shares {
        height: u64,
        reply: oneshot::Sender<Result<HeldShares, NetworkError>>,
    },
}

/// The network service's state.
pub(super) struct Service {
    swarm: Swarm<Behaviour>,
    local_peer_id: PeerId,
    /// Dial peers found through Kademlia (off: configured peers only).
    discovery: bool,
    chain: Arc<Chain>,
    layers: Layers,
    topic_limits: TopicLimits,
    topics: HashMap<TopicHash, Topic>,
    kad_protocol: StreamProtocol,
    channels: Channels,
    responses_tx: mpsc::Sender<(ResponseChannel<SyncResponse>, SyncResponse)>,
    responses_rx: mpsc::Receiver<(ResponseChannel<SyncResponse>, SyncResponse)>,
    serve_permits: Arc<Semaphore>,
    share_permits: Arc<Semaphore>,
    peers: HashMap<PeerId, Peer>,
    refused: HashSet<PeerId>,
    /// Refused peers to disconnect once their grace period is over.
    disconnect_due: Vec<(Instant, PeerId)>,
    pending: HashMap<OutboundRequestId, Pending>,
    config_peers: Vec<ConfigPeer>,
    /// Dials of config peers in progress, to their index in `config_peers`.
    dialing: HashMap<ConnectionId, usize>,
    listen_addr: Arc<RwLock<Multiaddr>>,
}

impl Service {
    /// Builds the swarm and binds the listen address.
    pub(super) fn start(
        config: NetworkConfig,
        identity: Keypair,
        layers: Layers,
        channels: Channels,
        discovery: bool,
    ) -> Result<Started, NetworkError> {
        let local_peer_id = identity.public().to_peer_id();
        let behaviour = Behaviour::new(&identity, &config, discovery)?;
        let mut swarm = build_swarm(identity, behaviour)?;
        let listen = reserve_listen_addr(&config.listen)?;
        swarm
            .listen_on(listen.clone())
            .map_err(|e| NetworkError::Listen {
                addr: config.listen.clone(),
                reason: e.to_string(),
            })?;
        let listen_addr = Arc::new(RwLock::new(listen));

        let topics = config
            .topics()
            .into_iter()
            .map(|topic| {
                (
                    behaviour::ident_topic(topic, &config.chain_id).hash(),
                    topic,
                )
            })
            .collect();
        let config_peers = config
            .peers
            .iter()
            .map(|addr| ConfigPeer {
                addr: addr.clone(),
                peer_id: peer_id_of(addr),
                learned: false,
                is_self: false,
                dialing: None,
                warned_wrong_id: false,
            })
            .collect();
        let (responses_tx, responses_rx) = mpsc::channel(RESPONSE_QUEUE);
        let service = Service {
            swarm,
            local_peer_id,
            discovery,
            kad_protocol: behaviour::kad_protocol(&config.chain_id)?,
            chain: Arc::new(Chain {
                chain_id: config.chain_id,
                genesis_hash: config.genesis_hash,
                compat: config.compat,
            }),
            layers,
            topic_limits: config.topic_limits,
            topics,
            channels,
            responses_tx,
            responses_rx,
            serve_permits: Arc::new(Semaphore::new(CONCURRENT_BLOCK_SERVES)),
            share_permits: Arc::new(Semaphore::new(CONCURRENT_SHARE_SERVES)),
            peers: HashMap::new(),
            refused: HashSet::new(),
            disconnect_due: Vec::new(),
            pending: HashMap::new(),
            config_peers,
            dialing: HashMap::new(),
            listen_addr: listen_addr.clone(),
        };
        Ok(Started {
            service,
            listen_addr,
        })
    }

    /// Runs until every handle is dropped.
    pub(super) async fn run(mut self) {
        self.dial_config_peers();
        if self.discovery && self.swarm.behaviour_mut().kademlia.bootstrap().is_err() {
            tracing::debug!("no peer known yet; discovery starts with the first connection");
        }
        let mut status_tick = interval(STATUS_INTERVAL);
        status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut redial_tick = interval_at(Instant::now() + REDIAL_INTERVAL, REDIAL_INTERVAL);
        redial_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut rediscovery_tick =
            interval_at(Instant::now() + REDISCOVERY_INTERVAL, REDISCOVERY_INTERVAL);
        rediscovery_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.channels.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(report) = self.channels.verdicts.recv() => self.on_verdict(report),
                Some((channel, response)) = self.responses_rx.recv() => {
                    if self.swarm.behaviour_mut().sync.send_response(channel, response).is_err() {
                        tracing::debug!("sync response not sent: the connection closed");
                    }
                }
                _ = status_tick.tick() => {
                    self.disconnect_refused();
                    self.request_statuses();
                }
                _ = redial_tick.tick() => self.dial_config_peers(),
                _ = rediscovery_tick.tick(), if self.discovery => self.rediscover(),
            }
        }
        tracing::debug!("network service stopped: no handle left");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::FetchBlocks {
                peer,
                from,
                count,
                reply,
            } => {
                if peer == self.local_peer_id {
                    let _ = reply.send(Err(NetworkError::Request {
                        peer,
                        reason: "cannot fetch blocks from ourselves".into(),
                    }));
                    return;
                }
                let count = count.min(MAX_BLOCKS_PER_REQUEST);
                let request_id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, SyncRequest::Blocks { from, count });
                self.pending
                    .insert(request_id, Pending::Blocks { from, count, reply });
            }
            Command::FetchShares {
                peer,
                height,
                reply,
            } => {
                if peer == self.local_peer_id {
                    let _ = reply.send(Err(NetworkError::Request {
                        peer,
                        reason: "cannot fetch shares from ourselves".into(),
                    }));
                    return;
                }
                let request_id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, SyncRequest::Shares { height });
                self.pending
                    .insert(request_id, Pending::Shares { height, reply });
            }
            Command::Peers { reply } => {
                let peers = self
                    .peers
                    .iter()
                    .filter(|(_, peer)| peer.verified)
                    .map(|(peer_id, peer)| PeerInfo {
                        peer_id: *peer_id,
                        address: peer.address.clone(),
                        height: peer.height,
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            #[cfg(test)]
            Command::Inspect { reply } => {
                let gossipsub = &self.swarm.behaviour().gossipsub;
                let mesh = Topic::ALL
                    .iter()
                    .map(|topic| {
                        let hash = behaviour::ident_topic(*topic, &self.chain.chain_id).hash();
                        (*topic, gossipsub.mesh_peers(&hash).copied().collect())
                    })
                    .collect();
                let mut subscribed: HashMap<Topic, Vec<PeerId>> = HashMap::new();
                for (peer, hashes) in gossipsub.all_peers() {
                    for topic in hashes.into_iter().filter_map(|hash| self.topics.get(hash)) {
                        subscribed.entry(*topic).or_default().push(*peer);
                    }
                }
                let _ = reply.send(super::Inspection {
                    connected: self.swarm.connected_peers().copied().collect(),
                    refused: self.refused.iter().copied().collect(),
                    mesh,
                    subscribed,
                });
            }
        }
    }

    fn publish(&mut self, topic: Topic, data: Vec<u8>) -> Result<(), NetworkError> {
        let limit = self.topic_limits.get(topic);
        let size = data.len();
        if size > limit {
            return Err(NetworkError::TooLarge { topic, size, limit });
        }
        let hash = behaviour::ident_topic(topic, &self.chain.chain_id).hash();
        match self.swarm.behaviour_mut().gossipsub.publish(hash, data) {
            Ok(_) => Ok(()),
            Err(PublishError::NoPeersSubscribedToTopic) => {
                // A lone node (or one whose peers are still connecting) keeps working; the
                // message reaches peers later through the layer's own retries or sync.
                tracing::debug!(%topic, "published to nobody: no peer on the topic");
                Ok(())
            }
            Err(PublishError::Duplicate) => {
                tracing::debug!(%topic, "not republished: the network has this message");
                Ok(())
            }
            Err(PublishError::MessageTooLarge) => {
                Err(NetworkError::TooLarge { topic, size, limit })
            }
            Err(err) => Err(NetworkError::Publish {
                topic,
                reason: err.to_string(),
            }),
        }
    }

    fn on_verdict(&mut self, report: VerdictReport) {
        let acceptance = match report.verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Ignore => MessageAcceptance::Ignore,
            Verdict::Reject => MessageAcceptance::Reject,
        };
        let id = gossipsub::MessageId::new(report.id.0.as_bytes());
        let known = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &report.source, acceptance);
        if !known {
            tracing::trace!(message = %report.id, "verdict for a message no longer cached");
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify(event),
            SwarmEvent::Behaviour(BehaviourEvent::Kademlia(event)) => self.on_kademlia(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(ping::Failure::Timeout),
            })) => {
                // A connection that stops answering pings is dead even if TCP has not
                // noticed; closing it lets a config peer be redialled.
                tracing::debug!(%peer, "closing connection: ping timed out");
                self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(_)) => {}
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_connected(peer_id, connection_id, &endpoint, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                match cause {
                    Some(cause) => tracing::debug!(peer = %peer_id, "connection closed: {cause}"),
                    None => tracing::debug!(peer = %peer_id, "connection closed"),
                }
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => self.on_dial_error(connection_id, peer_id, &error),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(
                    "listening for peers on {address}/p2p/{}",
                    self.local_peer_id
                );
                let mut current = self
                    .listen_addr
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                if !is_concrete(&current) {
                    *current = address;
                }
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                tracing::warn!(?addresses, ?reason, "stopped listening for peers");
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!("error listening for peers: {error}");
            }
            _ => {}
        }
    }

    fn on_connected(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        endpoint: &ConnectedPoint,
        num_established: u32,
    ) {
        let address = endpoint.get_remote_address();
        tracing::debug!(peer = %peer_id, %address, "connection established");
        if let Some(index) = self.dialing.remove(&connection_id) {
            if let Some(config_peer) = self.config_peers.get_mut(index) {
                config_peer.dialing = None;
                if config_peer.peer_id.is_none() {
                    config_peer.peer_id = Some(peer_id);
                    config_peer.learned = true;
                }
            }
        }
        let dialled = match endpoint {
            ConnectedPoint::Dialer { address, .. } => Some(address.clone()),
            ConnectedPoint::Listener { .. } => None,
        };
        let peer = self.peers.entry(peer_id).or_insert_with(|| Peer {
            address: None,
            dialled: false,
            height: None,
            verified: false,
            status_in_flight: false,
        });
        if let Some(address) = dialled {
            if !peer.dialled {
                peer.address = Some(address);
                peer.dialled = true;
            }
        } else if peer.address.is_none() {
            peer.address = Some(endpoint.get_remote_address().clone());
        }
        if num_established == 1 {
            self.request_status(peer_id);
        }
    }

    fn on_dial_error(
        &mut self,
        connection_id: ConnectionId,
        peer_id: Option<PeerId>,
        error: &DialError,
    ) {
        let Some(index) = self.dialing.remove(&connection_id) else {
            tracing::debug!(peer = ?peer_id, "dial failed: {error}");
            return;
        };
        let Some(config_peer) = self.config_peers.get_mut(index) else {
            return;
        };
        config_peer.dialing = None;
        match error {
            DialError::LocalPeerId { .. } => {
                tracing::debug!(addr = %config_peer.addr, "configured peer address is our own");
                config_peer.is_self = true;
            }
            DialError::WrongPeerId { obtained, .. } if config_peer.learned => {
                // The node there was given a new key; accept it (the status check still
                // decides whether we stay connected).
                config_peer.peer_id = None;
                config_peer.learned = false;
                tracing::debug!(
                    addr = %config_peer.addr,
                    peer = %obtained,
                    "configured peer changed its key"
                );
            }
            DialError::WrongPeerId { obtained, .. } if !config_peer.warned_wrong_id => {
                config_peer.warned_wrong_id = true;
                tracing::warn!(
                    addr = %config_peer.addr,
                    "configured peer answered with peer id {obtained}, not the one in its address"
                );
            }
            _ => {
                let addr = &config_peer.addr;
                tracing::debug!(%addr, "cannot reach configured peer: {error}");
            }
        }
    }

    /// Dials every configured peer that is not connected, not refused and not being dialled.
    fn dial_config_peers(&mut self) {
        for (index, config_peer) in self.config_peers.iter_mut().enumerate() {
            if config_peer.is_self || config_peer.dialing.is_some() {
                continue;
            }
            let opts = match config_peer.peer_id {
                Some(peer_id) if peer_id == self.local_peer_id => {
                    config_peer.is_self = true;
                    continue;
                }
                Some(peer_id) => {
                    if self.swarm.is_connected(&peer_id) || self.refused.contains(&peer_id) {
                        continue;
                    }
                    DialOpts::peer_id(peer_id)
                        .addresses(vec![config_peer.addr.clone()])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build()
                }
                None => DialOpts::unknown_peer_id()
                    .address(config_peer.addr.clone())
                    .build(),
            };
            let connection_id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    config_peer.dialing = Some(connection_id);
                    self.dialing.insert(connection_id, index);
                }
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(err) => {
                    tracing::debug!(addr = %config_peer.addr, "cannot dial configured peer: {err}");
                }
            }
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source: source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        let topic = self.topics.get(&message.topic).copied();
        let id = <[u8; 32]>::try_from(message_id.0.as_slice())
            .ok()
            .map(|bytes| MessageId(Hash(bytes)));
        let (Some(topic), Some(id)) = (topic, id) else {
            // Not one of our topics or not our id scheme: gossipsub only hands out messages
            // of subscribed topics with ids from our function, so this does not happen.
            self.validation_result(&message_id, &source, MessageAcceptance::Ignore);
            return;
        };
        let limit = self.topic_limits.get(topic);
        if message.data.len() > limit {
            tracing::debug!(
                peer = %source,
                %topic,
                size = message.data.len(),
                limit,
                "rejecting gossip over its topic's size limit"
            );
            self.validation_result(&message_id, &source, MessageAcceptance::Reject);
            return;
        }
        let event = NetworkEvent::Gossip {
            topic,
            id,
            source,
            data: message.data,
        };
        if let Err(err) = self.channels.events.try_send(event) {
            // Stalling here would stall every connection; the message may come again.
            tracing::debug!(%topic, message = %id, "gossip dropped: node not keeping up ({err})");
            self.validation_result(&message_id, &source, MessageAcceptance::Ignore);
        }
    }

    fn validation_result(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: MessageAcceptance,
    ) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance);
    }

    fn on_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.serve(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => match self.pending.remove(&request_id) {
                    Some(Pending::Status(peer)) => self.on_status(peer, response),
                    Some(Pending::Blocks { from, count, reply }) => {
                        let _ = reply.send(blocks_answer(peer, from, count, response));
                    }
                    Some(Pending::Shares { height, reply }) => {
                        let _ = reply.send(shares_answer(peer, height, response));
                    }
                    None => {}
                },
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => match self.pending.remove(&request_id) {
                Some(Pending::Status(peer)) => {
                    if let Some(state) = self.peers.get_mut(&peer) {
                        state.status_in_flight = false;
                    }
                    if matches!(error, OutboundFailure::UnsupportedProtocols) {
                        self.refuse(peer, "it does not speak the Lamina sync protocol".into());
                    } else {
                        tracing::debug!(%peer, "status request failed: {error}");
                    }
                }
                Some(Pending::Blocks { reply, .. }) => {
                    let _ = reply.send(Err(request_failed(peer, &error)));
                }
                Some(Pending::Shares { reply, .. }) => {
                    let _ = reply.send(Err(request_failed(peer, &error)));
                }
                None => {}
            },
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "sync request from peer failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Answers an inbound sync request from a task of its own, so that reading blocks never
    /// holds up the swarm.
    fn serve(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    ) {
        tracing::trace!(%peer, ?request, "serving sync request");
        let layers = self.layers.clone();
        let chain = self.chain.clone();
        let responses = self.responses_tx.clone();
        let permits = self.serve_permits.clone();
        let share_permits = self.share_permits.clone();
        let gatherer = self
            .channels
            .own_commands
            .upgrade()
            .map(|commands| ShareGatherer { commands });
        tokio::spawn(async move {
            let response = match request {
                SyncRequest::Status => status_response(&layers.blocks, &chain).await,
                SyncRequest::Blocks { from, count } => {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    blocks_response(&layers, gatherer.as_ref(), from, count).await
                }
                SyncRequest::Shares { height } => {
                    let Ok(_permit) = share_permits.acquire_owned().await else {
                        return;
                    };
                    shares_response(&layers.da, height).await
                }
            };
            let _ = responses.send((channel, response)).await;
        });
    }

    /// Asks every connected peer without an outstanding request for its status.
    fn request_statuses(&mut self) {
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(peer_id, peer)| !peer.status_in_flight && !self.refused.contains(peer_id))
            .map(|(peer_id, _)| *peer_id)
            .collect();
        for peer_id in due {
            self.request_status(peer_id);
        }
    }

    fn request_status(&mut self, peer_id: PeerId) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if peer.status_in_flight {
            return;
        }
        peer.status_in_flight = true;
        let request_id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer_id, SyncRequest::Status);
        self.pending.insert(request_id, Pending::Status(peer_id));
    }

    fn on_status(&mut self, peer_id: PeerId, response: SyncResponse) {
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            peer.status_in_flight = false;
        }
        let status = match response {
            SyncResponse::Status(status) => status,
            SyncResponse::Error(message) => {
                let message = shown(&message);
                tracing::debug!(peer = %peer_id, "peer cannot tell its status: {message}");
                return;
            }
            SyncResponse::Blocks(_) | SyncResponse::Shares(_) => {
                tracing::debug!(peer = %peer_id, "peer answered a status request with data");
                return;
            }
        };
        if let Some(reason) = incompatibility(&self.chain, &status) {
            self.refuse(peer_id, reason);
            return;
        }
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            // Disconnected while the answer was on its way.
            return;
        };
        let first = !peer.verified;
        let changed = peer.height != Some(status.committed_height);
        peer.verified = true;
        peer.height = Some(status.committed_height);
        if first {
            let height = status.committed_height;
            tracing::debug!(peer = %peer_id, height, "peer passed the status check");
            if self.refused.remove(&peer_id) {
                // It was refused before and has been fixed since.
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .remove_blacklisted_peer(&peer_id);
            }
        }
        if changed {
            let event = NetworkEvent::PeerStatus {
                peer: peer_id,
                height: status.committed_height,
            };
            if let Err(err) = self.channels.events.try_send(event) {
                tracing::debug!(peer = %peer_id, "peer status not delivered: {err}");
            }
        }
    }

    /// Drops a peer that cannot be part of our network and keeps it out: no gossip from it,
    /// not in the routing table, never dialled again (if it dials us, it is checked again).
    /// The connection is closed after a grace period (see [`REFUSAL_GRACE`]).
    fn refuse(&mut self, peer_id: PeerId, reason: String) {
        tracing::warn!(peer = %peer_id, "refusing peer {peer_id}: {reason}");
        self.refused.insert(peer_id);
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            peer.verified = false;
        }
        let behaviour = self.swarm.behaviour_mut();
        behaviour.gossipsub.blacklist_peer(&peer_id);
        behaviour.kademlia.remove_peer(&peer_id);
        self.disconnect_due
            .push((Instant::now() + REFUSAL_GRACE, peer_id));
    }

    /// Closes the connections of refused peers whose grace period is over.
    fn disconnect_refused(&mut self) {
        let now = Instant::now();
        let (due, later) = std::mem::take(&mut self.disconnect_due)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.disconnect_due = later;
        for (_, peer_id) in due {
            // Unless it passed a new status check since (it was fixed and redialled).
            if self.refused.contains(&peer_id) {
                let _ = self.swarm.disconnect_peer_id(peer_id);
            }
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        if self.refused.contains(&peer_id) {
            return;
        }
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            if !peer.dialled {
                // Prefer an address it listens on over the ephemeral port it dialled from.
                let remote_ip = peer.address.as_ref().and_then(ip_of);
                if let Some(listen) = info
                    .listen_addrs
                    .iter()
                    .find(|addr| remote_ip.is_some() && ip_of(addr) == remote_ip)
                {
                    peer.address = Some(listen.clone());
                }
            }
        }
        if info.protocols.contains(&self.kad_protocol) {
            let kademlia = &mut self.swarm.behaviour_mut().kademlia;
            for addr in info.listen_addrs {
                kademlia.add_address(&peer_id, addr);
            }
        }
    }

    /// Looks for more peers through the ones it has, while it has fewer than it wants.
    fn rediscover(&mut self) {
        if self.swarm.connected_peers().count() < DISCOVERY_TARGET_PEERS {
            // An error only means no peer is known yet: the first connection will bootstrap.
            let _ = self.swarm.behaviour_mut().kademlia.bootstrap();
        }
    }

    fn on_kademlia(&mut self, event: kad::Event) {
        let kad::Event::RoutingUpdated {
            peer, addresses, ..
        } = event
        else {
            return;
        };
        if self.refused.contains(&peer) {
            // Kademlia adds a peer once it learns the peer speaks its protocol, which can be
            // after we refused it; left in the table, the next bootstrap would dial it.
            self.swarm.behaviour_mut().kademlia.remove_peer(&peer);
            tracing::debug!(%peer, "refused peer removed from the routing table again");
            return;
        }
        if !self.discovery
            || peer == self.local_peer_id
            || self.swarm.is_connected(&peer)
            || self.swarm.connected_peers().count() >= DISCOVERY_TARGET_PEERS
        {
            return;
        }
        tracing::debug!(%peer, "dialling discovered peer");
        let opts = DialOpts::peer_id(peer)
            .addresses(addresses.into_vec())
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(err) = self.swarm.dial(opts) {
            if !matches!(err, DialError::DialPeerConditionFalse(_)) {
                tracing::debug!(%peer, "cannot dial discovered peer: {err}");
            }
        }
    }
}

/// TCP + noise + yamux, with DNS resolution when the system resolver config is readable.
fn build_swarm(identity: Keypair, behaviour: Behaviour) -> Result<Swarm<Behaviour>, NetworkError> {
    let transport_error = |e: noise::Error| NetworkError::Config(format!("transport: {e}"));
    let tcp = || tcp::Config::default().nodelay(true);
    let swarm_config = |config: libp2p::swarm::Config| {
        config.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
    };
    let with_dns = libp2p::SwarmBuilder::with_existing_identity(identity.clone())
        .with_tokio()
        .with_tcp(tcp(), noise::Config::new, yamux::Config::default)
        .map_err(transport_error)?
        .with_dns();
    let swarm = match with_dns {
        Ok(builder) => builder
            .with_behaviour(move |_| behaviour)
            .map_err(|e| NetworkError::Config(e.to_string()))?
            .with_swarm_config(swarm_config)
            .build(),
        Err(err) => {
            tracing::warn!(
                "no DNS resolution for peer addresses \
                 (cannot read the system resolver configuration: {err})"
            );
            libp2p::SwarmBuilder::with_existing_identity(identity)
                .with_tokio()
                .with_tcp(tcp(), noise::Config::new, yamux::Config::default)
                .map_err(transport_error)?
                .with_behaviour(move |_| behaviour)
                .map_err(|e| NetworkError::Config(e.to_string()))?
                .with_swarm_config(swarm_config)
                .build()
        }
    };
    Ok(swarm)
}

/// Checks that `listen` is free and, for port 0, picks the port. libp2p's TCP listener
/// shares its port (`SO_REUSEPORT`, so that dials can leave from it), which lets a second
/// node bind the same port without error and take part of its connections; a plain bind
/// first catches the clash.
fn reserve_listen_addr(listen: &Multiaddr) -> Result<Multiaddr, NetworkError> {
    let port = listen.iter().find_map(|protocol| match protocol {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    });
    let (Some(ip), Some(port)) = (ip_of(listen), port) else {
        // Not an IP and TCP address: libp2p reports what it makes of it.
        return Ok(listen.clone());
    };
    let failed = |err: std::io::Error| NetworkError::Listen {
        addr: listen.clone(),
        reason: if err.kind() == std::io::ErrorKind::AddrInUse {
            format!("{err} (is another node using this port?)")
        } else {
            err.to_string()
        },
    };
    let probe = std::net::TcpListener::bind((ip, port)).map_err(failed)?;
    let bound = probe.local_addr().map_err(failed)?.port();
    Ok(listen
        .iter()
        .map(|protocol| match protocol {
            Protocol::Tcp(_) => Protocol::Tcp(bound),
            other => other,
        })
        .collect())
}

/// Why a peer with `theirs` status cannot be in our network, if it cannot.
fn incompatibility(ours: &Chain, theirs: &PeerStatus) -> Option<String> {
    if theirs.chain_id != ours.chain_id {
        return Some(format!(
            "it is on chain {}, we are on {}",
            shown(&theirs.chain_id),
            shown(&ours.chain_id)
        ));
    }
    if theirs.genesis_hash != ours.genesis_hash {
        return Some(format!(
            "it has genesis {}, we have {} \
             (same chain id {}: one of us has a stale or edited genesis)",
            theirs.genesis_hash,
            ours.genesis_hash,
            shown(&ours.chain_id)
        ));
    }
    if theirs.compat != ours.compat {
        return Some(layer_mismatch(&ours.compat, &theirs.compat));
    }
    None
}

/// Which layer setting of two different compatibility strings (`layer=setting;...`) differs,
/// and why that layer must agree across a network.
fn layer_mismatch(ours: &str, theirs: &str) -> String {
    let settings = |text: &str| -> Vec<(String, String)> {
        text.split(';')
            .map(|part| match part.split_once('=') {
                Some((layer, setting)) => (layer.to_string(), setting.to_string()),
                None => (part.to_string(), String::new()),
            })
            .collect()
    };
    let (ours, theirs) = (settings(ours), settings(theirs));
    let differing = ours.iter().find(|(layer, setting)| {
        theirs
            .iter()
            .find(|(other, _)| other == layer)
            .is_none_or(|(_, other)| other != setting)
    });
    let Some((layer, setting)) = differing else {
        let theirs: Vec<String> = theirs.iter().map(|(l, s)| format!("{l}={s}")).collect();
        return format!("it runs incompatible layers: {}", shown(&theirs.join(";")));
    };
    let their_setting = theirs
        .iter()
        .find(|(other, _)| other == layer)
        .map_or("nothing", |(_, setting)| setting.as_str());
    let why = match layer.as_str() {
        "consensus" => "validators of different consensus engines cannot vote on one chain",
        "data_availability" => {
            "different DA schemes give a block different data_roots, so the two could never \
             agree on a header"
        }
        "settlement" => {
            "different settlement modes or settings judge the same settlement messages \
             differently, so their ledgers would part"
        }
        _ => "this setting must be the same on every node",
    };
    format!(
        "it runs {layer} {}, we run {} ({why}; executors may differ, these may not)",
        shown(their_setting),
        shown(setting)
    )
}

/// A peer-supplied string made safe for a log line: quoted, escaped and truncated.
fn shown(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(SHOWN_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}

/// Our status, as answered to a peer.
async fn status_response(blocks: &ConsensusHandle, chain: &Chain) -> SyncResponse {
    match blocks.status().await {
        Ok(status) => SyncResponse::Status(PeerStatus {
            chain_id: chain.chain_id.clone(),
            genesis_hash: chain.genesis_hash,
            compat: chain.compat.clone(),
            committed_height: status.committed_height,
        }),
        Err(err) => SyncResponse::Error(format!("consensus unavailable: {err}")),
    }
}

/// Committed blocks from `from`, stopping at the first missing height, after `count` (at
/// most [`MAX_BLOCKS_PER_REQUEST`]) blocks, or before passing [`SERVE_TARGET_BYTES`] (but
/// always with at least one block when `from` is committed). A block whose body the store
/// pruned is served with its body rebuilt from shares (ours and `gatherer`'s peers'), and
/// only first in an answer: each rebuild may wait seconds for peers, so one per request
/// keeps the answer well within the client's timeout.
pub(super) async fn blocks_response(
    layers: &Layers,
    gatherer: Option<&ShareGatherer>,
    from: u64,
    count: u32,
) -> SyncResponse {
    let count = count.min(MAX_BLOCKS_PER_REQUEST);
    let mut answer = Vec::new();
    // Enum tag and vector length prefix.
    let mut size = 1 + lamina_primitives::codec::VEC_PREFIX_BYTES;
    for offset in 0..u64::from(count) {
        let Some(height) = from.checked_add(offset) else {
            break;
        };
        let read = match layers.blocks.block(height).await {
            Err(RequestError::Layer(ConsensusError::BodyPruned { .. })) if answer.is_empty() => {
                archive::pruned_block(&layers.blocks, &layers.da, gatherer, height).await
            }
            Err(RequestError::Layer(ConsensusError::BodyPruned { .. })) => break,
            other => other.map_err(ArchiveError::from),
        };
        match read {
            Ok(Some(block)) => {
                let len = borsh::object_length(&*block).unwrap_or(usize::MAX);
                if !answer.is_empty() && size.saturating_add(len) > SERVE_TARGET_BYTES {
                    break;
                }
                size = size.saturating_add(len);
                answer.push(Arc::unwrap_or_clone(block));
            }
            Ok(None) => break,
            Err(err) if answer.is_empty() => {
                return SyncResponse::Error(format!("cannot read block {height}: {err}"));
            }
            Err(err) => {
                tracing::debug!(height, "stopping block answer early: {err}");
                break;
            }
        }
    }
    SyncResponse::Blocks(answer)
}

/// A request of ours that got no answer.
fn request_failed(peer: PeerId, error: &OutboundFailure) -> NetworkError {
    NetworkError::Request {
        peer,
        reason: error.to_string(),
    }
}

/// The rows we keep of `height`'s square, cut to about [`SERVE_TARGET_BYTES`] (a peer
/// gathers from several nodes anyway, and holds every answer until it has them all).
async fn shares_response(da: &DaHandle, height: u64) -> SyncResponse {
    let mut held = match da.held_shares(height).await {
        Ok(held) => held,
        Err(err) => return SyncResponse::Error(format!("no shares of height {height}: {err}")),
    };
    // Room for the enum tag, the height, root, width and vector prefixes.
    let mut size = 1024;
    let fits = held
        .rows
        .iter()
        .take_while(|row| {
            size += row.shares.len() + 16;
            size <= SERVE_TARGET_BYTES
        })
        .count()
        .max(1);
    held.rows.truncate(fits);
    SyncResponse::Shares(held)
}

/// Checks a peer's answer to a shares request: rows of the height asked for, each index
/// once. Whether the rows are right is the DA layer's to check, against its row roots.
fn shares_answer(
    peer: PeerId,
    height: u64,
    response: SyncResponse,
) -> Result<HeldShares, NetworkError> {
    let invalid = |reason: String| NetworkError::InvalidResponse { peer, reason };
    let held = match response {
        SyncResponse::Shares(held) => held,
        SyncResponse::Error(message) => {
            return Err(NetworkError::Remote {
                peer,
                message: shown(&message),
            })
        }
        SyncResponse::Status(_) | SyncResponse::Blocks(_) => {
            return Err(invalid("something else than shares".into()))
        }
    };
    if held.height != height {
        return Err(invalid(format!(
            "shares of height {} for a request of height {height}",
            held.height
        )));
    }
    let mut seen = HashSet::new();
    if let Some(row) = held.rows.iter().find(|row| !seen.insert(row.index)) {
        return Err(invalid(format!("row {} sent twice", row.index)));
    }
    Ok(held)
}

/// Checks a peer's answer to a block request: consecutive heights from `from`, no more than
/// asked for.
fn blocks_answer(
    peer: PeerId,
    from: u64,
    count: u32,
    response: SyncResponse,
) -> Result<Vec<CommittedBlock>, NetworkError> {
    let invalid = |reason: String| NetworkError::InvalidResponse { peer, reason };
    let blocks = match response {
        SyncResponse::Blocks(blocks) => blocks,
        SyncResponse::Error(message) => {
            return Err(NetworkError::Remote {
                peer,
                message: shown(&message),
            })
        }
        SyncResponse::Status(_) | SyncResponse::Shares(_) => {
            return Err(invalid("something else than blocks".into()))
        }
    };
    if blocks.len() > count as usize {
        return Err(invalid(format!(
            "{} blocks for a request of {count}",
            blocks.len()
        )));
    }
    for (offset, block) in (0u64..).zip(&blocks) {
        let height = block.block.header.height;
        if from.checked_add(offset) != Some(height) {
            return Err(invalid(format!(
                "block at height {height} in position {offset} of an answer from height {from}"
            )));
        }
    }
    Ok(blocks)
}

/// The peer id at the end of `addr`, if it has one.
fn peer_id_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer_id)) => Some(peer_id),
        _ => None,
    }
}

/// The IP address in `addr`, if any.
fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|protocol| match protocol {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// True when `addr` is something a peer can dial: a specific IP and a real port.
fn is_concrete(addr: &Multiaddr) -> bool {
    let unspecified_ip = ip_of(addr).is_some_and(|ip| ip.is_unspecified());
    let port_zero = addr
        .iter()
        .any(|protocol| matches!(protocol, Protocol::Tcp(0)));
    !unspecified_ip && !port_zero
}

#[cfg(test)]
mod tests {
    use super::layer_mismatch;

    #[test]
    fn a_layer_mismatch_names_the_layer_both_settings_and_why() {
        let ours = "consensus=bft;data_availability=replicated;settlement=attested";
        let theirs = "consensus=bft;data_availability=reed-solomon/reed-solomon-simd;\
                      settlement=attested";
        let message = layer_mismatch(ours, theirs);
        assert!(
            message.starts_with(
                "it runs data_availability \"reed-solomon/reed-solomon-simd\", we run \
                 \"replicated\" (different DA schemes"
            ),
            "{message}"
        );
        let message = layer_mismatch(
            "consensus=bft;settlement=attested",
            "consensus=bft;settlement=optimistic(window=10)",
        );
        assert!(
            message.contains("settlement \"optimistic(window=10)\""),
            "{message}"
        );
        assert!(message.contains("ledgers would part"), "{message}");
        let message = layer_mismatch("consensus=bft", "consensus=solo");
        assert!(message.contains("cannot vote"), "{message}");
        // A peer that sends something else entirely still gets a (bounded) message.
        let message = layer_mismatch("consensus=bft", &"x".repeat(500));
        assert!(message.len() < 300, "{message}");
    }
}
