//! The channel contract of each layer.
//!
//! Every layer runs as an actor: a task that owns its state and is reached only through a
//! cloneable handle. For each layer this module defines
//!
//! * a **request enum**: a request that needs an answer carries a `oneshot::Sender` for the
//!   reply, and each variant's documentation states the reply contract;
//! * an **event enum** the layer publishes on a broadcast channel (observability, wake-ups;
//!   a slow subscriber may miss events, so nothing relies on events for correctness);
//! * a **handle** with async methods hiding the plumbing, returning typed errors.
//!
//! Request channels are bounded: a full actor makes senders wait (backpressure) rather than
//! queueing without limit. Two implementations of one layer return the same handle type, so
//! the node swaps them with one `match` on the config.

pub mod consensus;
pub mod da;
pub mod execution;
pub mod settlement;

use tokio::sync::{broadcast, mpsc, oneshot};

/// Why a request to a layer did not get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The layer's actor has stopped; no request will be answered again.
    #[error("the {0} layer has stopped")]
    Closed(&'static str),
    /// The layer's queue is full and the caller asked not to wait.
    #[error("the {0} layer is busy (request queue full)")]
    Full(&'static str),
    /// The actor dropped the reply sender without answering (it failed or stopped mid-request).
    #[error("the {0} layer dropped the request without answering")]
    NoReply(&'static str),
}

/// A layer's judgement of a message a peer sent, which decides whether the network relays
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and new: relay it.
    Accept,
    /// Valid but useless (a duplicate, for a past height or round already decided), or the
    /// layer is too busy to judge it: drop it quietly.
    Ignore,
    /// Invalid (bad signature, signer not a validator, malformed): drop it and penalise
    /// the peer that sent it.
    Reject,
}

/// Default capacity of a layer's request queue.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;
/// Default capacity of a layer's event broadcast.
pub const DEFAULT_EVENT_CAPACITY: usize = 256;

/// The sending side of a layer's bounded request queue, shared by the layer's handle.
#[derive(Debug)]
pub struct Mailbox<R> {
    layer: &'static str,
    sender: mpsc::Sender<R>,
}

impl<R> Clone for Mailbox<R> {
    fn clone(&self) -> Self {
        Mailbox {
            layer: self.layer,
            sender: self.sender.clone(),
        }
    }
}

impl<R> Mailbox<R> {
    /// A mailbox of `capacity` requests for the layer named `layer`, and its receiving end
    /// (which the actor owns).
    pub fn new(layer: &'static str, capacity: usize) -> (Self, mpsc::Receiver<R>) {
        let (sender, receiver) = mpsc::channel(capacity);
        (Mailbox { layer, sender }, receiver)
    }

    /// Sends a request built around a fresh reply channel and waits for the answer. Waits
    /// for room in the queue when it is full.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> R,
    ) -> Result<T, ChannelError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(make(reply))
            .await
            .map_err(|_| ChannelError::Closed(self.layer))?;
        answer.await.map_err(|_| ChannelError::NoReply(self.layer))
    }

    /// Like [`Mailbox::ask`] but fails with [`ChannelError::Full`] instead of waiting for room:
    /// for callers (HTTP handlers) that should shed load rather than queue.
    pub async fn try_ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> R,
    ) -> Result<T, ChannelError> {
        let (reply, answer) = oneshot::channel();
        self.sender.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ChannelError::Full(self.layer),
            mpsc::error::TrySendError::Closed(_) => ChannelError::Closed(self.layer),
        })?;
        answer.await.map_err(|_| ChannelError::NoReply(self.layer))
    }

    /// True once the actor has stopped.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// A layer's event publisher; handles hand out subscriptions.
#[derive(Debug)]
pub struct Events<E> {
    sender: broadcast::Sender<E>,
}

impl<E> Clone for Events<E> {
    fn clone(&self) -> Self {
        Events {
            sender: self.sender.clone(),
        }
    }
}

impl<E: Clone> Events<E> {
    /// A publisher keeping the last `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        Events {
            sender: broadcast::channel(capacity).0,
        }
    }

    /// Publishes `event`; having no subscriber is fine.
    pub fn publish(&self, event: E) {
        let _ = self.sender.send(event);
    }

    /// A new subscription, starting with the next event.
    pub fn subscribe(&self) -> broadcast::Receiver<E> {
        self.sender.subscribe()
    }
}

/// Error of a handle call that the layer itself can also refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError<E> {
    /// The request did not reach the layer, or got no answer.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The layer answered with an error.
    #[error(transparent)]
    Layer(E),
}

/// Turns "the channel failed, or the layer answered `Err`" into one error.
pub(crate) fn flatten<T, E>(
    answer: Result<Result<T, E>, ChannelError>,
) -> Result<T, RequestError<E>> {
    answer?.map_err(RequestError::Layer)
}
