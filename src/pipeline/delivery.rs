//! The queue's delivery events as plugin hook calls (`delivered`,
//! `deferred`, `bounced`), each attempt's in one background run outside any
//! client session: plugins learn about deliveries, they do not hold them up.

use std::sync::{Arc, Mutex};

use super::{wit, Call, Pipeline, SessionData};
use crate::mail::Envelope;
use crate::queue::events::{DeliveryEvents, Event, Outcome};

impl DeliveryEvents for Pipeline {
    fn report(self: Arc<Self>, envelope: Envelope, events: Vec<Event>) {
        let queue_id = events.first().map(|e| e.queue_id.clone()).unwrap_or_default();
        let data = SessionData {
            // Delivery hooks run outside a client session: the connection
            // they see is the queue's own.
            connection: Some(wit::Connection {
                id: queue_id,
                listener: "queue".into(),
                remote_ip: "127.0.0.1".into(),
                remote_port: 0,
                local_ip: "127.0.0.1".into(),
                local_port: 0,
                tls: false,
                helo: None,
                auth_user: None,
                trusted: false,
            }),
            envelope: Some((&envelope).into()),
            ..Default::default()
        };
        tokio::spawn(async move {
            let mut session = self.session(Arc::new(Mutex::new(data)));
            for event in events {
                let outcome = event.outcome;
                let event = event.into();
                let call = match outcome {
                    Outcome::Delivered => Call::Delivered(&event),
                    Outcome::Bounced => Call::Bounced(&event),
                    Outcome::Deferred => Call::Deferred(&event),
                };
                session.run(call).await;
            }
            session.finish();
        });
    }
}
