//! `mailferry queue`: asks a running server, or reads the spool when none
//! runs.

use anyhow::Result;
use clap::Subcommand;

use crate::{config, queue};

#[derive(Subcommand)]
pub(super) enum QueueCmd {
    /// One line per queued message: id, age, attempts, next try, sender, waiting recipients, last error.
    List,
    /// Everything about one message: envelope, each recipient's state and last reply.
    Show { id: String },
    /// Try a message (or, with --all, every message) now.
    Retry {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Remove a message without delivering or bouncing it.
    Delete { id: String },
    /// Counts: messages, recipients waiting, oldest, bytes, fsyncs.
    Stats,
}

pub(super) fn run(action: QueueCmd, config: &config::Config) -> Result<()> {
    use queue::control::{Request, Response};
    let req = match action {
        QueueCmd::List => Request::List,
        QueueCmd::Show { id } => Request::Show { id },
        QueueCmd::Retry { id, all } => {
            if id.is_none() && !all {
                anyhow::bail!("name a message id, or pass --all");
            }
            Request::Retry { id }
        }
        QueueCmd::Delete { id } => Request::Delete { id },
        QueueCmd::Stats => Request::Stats,
    };
    let dir = &config.queue.dir;
    let response = match queue::control::ask(dir, &req) {
        Some(r) => r,
        None => queue::control::offline(dir, &req),
    }
    .map_err(anyhow::Error::msg)?;
    let now = chrono::Utc::now().timestamp();
    let ago = |t: i64| human_secs(now - t);
    match response {
        Response::Entries(entries) => {
            if entries.is_empty() {
                println!("The queue is empty.");
            }
            for e in entries {
                let waiting: Vec<&str> = e.pending().map(|r| r.address.as_str()).collect();
                let next = if e.next_attempt <= now {
                    "now".to_string()
                } else {
                    format!("in {}", human_secs(e.next_attempt - now))
                };
                println!(
                    "{}  age {}  {} bytes  attempts {}  next {}  from <{}>  to {}{}",
                    e.id,
                    ago(e.created),
                    e.size,
                    e.attempts,
                    next,
                    e.mail_from,
                    waiting.join(", "),
                    e.last_error.as_deref().map(|x| format!("  last error: {x}")).unwrap_or_default()
                );
            }
        }
        Response::Entry(e) => {
            println!("id:        {}", e.id);
            println!("queued:    {} ago (session {})", ago(e.created), e.session);
            println!("route:     {}", e.route);
            println!("from:      <{}>", e.mail_from);
            println!("size:      {} bytes", e.size);
            println!("attempts:  {}", e.attempts);
            if e.next_attempt > now {
                println!("next try:  in {}", human_secs(e.next_attempt - now));
            }
            for r in &e.rcpts {
                println!(
                    "to:        <{}>  {:?}{}{}",
                    r.address,
                    r.state,
                    r.relay.as_deref().map(|x| format!("  via {x}")).unwrap_or_default(),
                    r.last_reply.as_deref().map(|x| format!("  last reply: {x}")).unwrap_or_default()
                );
            }
        }
        Response::Retried(n) => println!("{n} message(s) will be tried now."),
        Response::Deleted(id) => println!("{id} deleted."),
        Response::Stats(s) => {
            println!("messages:            {}", s.messages);
            println!("recipients waiting:  {}", s.recipients_pending);
            println!("oldest:              {}", human_secs(s.oldest_secs));
            println!("being delivered:     {}", s.in_flight);
            println!("bytes:               {}", s.bytes);
            println!("fsyncs since start:  {}", s.fsyncs);
        }
        Response::Error(e) => anyhow::bail!(e),
    }
    Ok(())
}

fn human_secs(s: i64) -> String {
    let s = s.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
