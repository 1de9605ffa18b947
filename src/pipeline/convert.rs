//! Between the plugin interface's types (generated from the WIT) and the
//! core's own (`crate::mail`): the layers below the pipeline never see WIT,
//! so a change to the plugin contract stays here.

use super::wit;
use crate::mail;

impl From<&wit::Address> for mail::Address {
    fn from(a: &wit::Address) -> mail::Address {
        mail::Address {
            address: a.address.clone(),
            params: a.params.iter().map(|p| mail::Param { key: p.key.clone(), value: p.value.clone() }).collect(),
        }
    }
}

impl From<&mail::Address> for wit::Address {
    fn from(a: &mail::Address) -> wit::Address {
        wit::Address {
            address: a.address.clone(),
            params: a.params.iter().map(|p| wit::Param { key: p.key.clone(), value: p.value.clone() }).collect(),
        }
    }
}

impl From<&wit::Envelope> for mail::Envelope {
    fn from(e: &wit::Envelope) -> mail::Envelope {
        mail::Envelope { mail_from: (&e.mail_from).into(), rcpt_to: e.rcpt_to.iter().map(Into::into).collect() }
    }
}

impl From<&mail::Envelope> for wit::Envelope {
    fn from(e: &mail::Envelope) -> wit::Envelope {
        wit::Envelope { mail_from: (&e.mail_from).into(), rcpt_to: e.rcpt_to.iter().map(Into::into).collect() }
    }
}

/// A plugin's reply, not yet validated (see `SessionPipeline::checked`).
impl From<wit::Reply> for mail::Reply {
    fn from(r: wit::Reply) -> mail::Reply {
        mail::Reply { code: r.code, enhanced: r.enhanced, lines: vec![r.text] }
    }
}

impl From<mail::Reply> for wit::Reply {
    fn from(r: mail::Reply) -> wit::Reply {
        let text = r.text();
        wit::Reply { code: r.code, enhanced: r.enhanced, text }
    }
}

impl From<crate::queue::events::Event> for super::DeliveryEvent {
    fn from(e: crate::queue::events::Event) -> super::DeliveryEvent {
        super::DeliveryEvent {
            queue_id: e.queue_id,
            sender: e.sender,
            recipient: e.recipient,
            relay: e.relay,
            reply: e.reply,
            attempts: e.attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_replies_survive_the_round_trip() {
        let e = mail::Envelope {
            mail_from: mail::Address {
                address: "a@example.com".into(),
                params: vec![
                    mail::Param { key: "BODY".into(), value: Some("8BITMIME".into()) },
                    mail::Param { key: "SMTPUTF8".into(), value: None },
                ],
            },
            rcpt_to: vec![mail::Address::bare("b@example.org"), mail::Address::bare("c@example.org")],
        };
        let w: wit::Envelope = (&e).into();
        assert_eq!(mail::Envelope::from(&w), e);
        let r = mail::Reply::new(250, "2.0.0", "queued as x");
        assert_eq!(mail::Reply::from(wit::Reply::from(r.clone())), r);
    }
}
