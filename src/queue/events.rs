//! What the queue tells the rest of the server about deliveries. The queue
//! sits below the plugin pipeline, so it reports through this trait, which
//! the pipeline implements (the plugins' `delivered`, `deferred` and
//! `bounced` hooks), instead of calling up into it.

use crate::mail::Envelope;

/// What one attempt did for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Not delivered yet; it will be tried again.
    Deferred,
    Bounced,
}

/// One recipient's news after an attempt.
#[derive(Debug, Clone)]
pub struct Event {
    pub outcome: Outcome,
    /// The queue id, as in the `250 … queued as` reply and the logs.
    pub queue_id: String,
    /// The envelope sender; empty for a bounce.
    pub sender: String,
    pub recipient: String,
    /// The relay that answered, if one did.
    pub relay: Option<String>,
    /// The last reply about this recipient (the upstream's, or the queue's).
    pub reply: String,
    /// Delivery attempts made so far, this one included.
    pub attempts: u32,
}

/// Whoever wants to hear about deliveries.
pub trait DeliveryEvents: Send + Sync {
    /// The recipients one attempt of a message touched, with its envelope.
    /// Called from delivery tasks: it must not hold them up (listeners that
    /// do work spawn it).
    fn report(self: std::sync::Arc<Self>, envelope: Envelope, events: Vec<Event>);
}
