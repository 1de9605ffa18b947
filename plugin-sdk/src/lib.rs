//! The guest SDK for mailferry plugins.
//!
//! A plugin is a WebAssembly component the server runs in a sandbox at each
//! step of an SMTP session. With this crate a plugin is one [`Plugin`]
//! implementation and one [`export_plugin!`] line; the WIT contract
//! (`plugin-sdk/wit/mailferry.wit`) stays out of sight.
//!
//! ```
//! use mailferry_plugin_sdk::{export_plugin, Address, Host, Plugin, Verdict};
//!
//! /// Refuses mail from one domain.
//! struct BlockDomain { domain: String }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { domain: String }
//!
//! impl Plugin for BlockDomain {
//!     type Config = Config;
//!
//!     fn new(config: Config, _host: &Host) -> Result<Self, String> {
//!         Ok(BlockDomain { domain: config.domain.to_lowercase() })
//!     }
//!
//!     fn mail(&self, host: &Host, sender: &Address) -> Verdict {
//!         if sender.domain_lowercase().as_deref() == Some(self.domain.as_str()) {
//!             host.info(format!("refusing sender {}", sender.address));
//!             return Verdict::deny(550, "5.7.1", "sender domain refused");
//!         }
//!         Verdict::Continue
//!     }
//! }
//!
//! export_plugin!(BlockDomain);
//!
//! // And its unit test, without a server (see `testing`):
//! use mailferry_plugin_sdk::testing::TestHost;
//! let host = TestHost::new().config_toml(r#"domain = "Spam.example""#);
//! let plugin = host.instantiate::<BlockDomain>().unwrap();
//! assert_eq!(plugin.mail("a@spam.example"), Some(Verdict::deny(550, "5.7.1", "sender domain refused")));
//! assert_eq!(plugin.mail("a@ok.example"), Some(Verdict::Continue));
//! assert_eq!(plugin.connect(), None); // not implemented: the host stops asking
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (crate type
//! `cdylib`; add `rlib` so `cargo test` can link the plugin natively).
//!
//! # Hooks
//!
//! Every hook has a default body. A hook left at its default tells the host
//! "not implemented" (the WIT's `none`), and the host stops calling it for
//! this plugin; an overridden hook that returns [`Verdict::Continue`] is
//! asked every time. Plugins run in configured order; the first verdict other
//! than `Continue` decides the step.
//!
//! | Hook | Called at | Arguments | When every plugin continues |
//! |------|-----------|-----------|-----------------------------|
//! | [`connect`](Plugin::connect) | a client connected | — | the session goes on |
//! | [`ehlo`](Plugin::ehlo) | EHLO / HELO | the name given | accepted |
//! | [`auth`](Plugin::auth) | AUTH (after the SASL exchange) | mechanism, login, password | `535`: no backend accepted |
//! | [`mail`](Plugin::mail) | MAIL FROM | sender ([`Address`], `""` for the null sender) | accepted |
//! | [`rcpt`](Plugin::rcpt) | RCPT TO | recipient | accepted only for an authenticated or trusted session |
//! | [`data`](Plugin::data) | the message has arrived | [`Message`] (headers editable) | the message goes on to `queue` |
//! | [`queue`](Plugin::queue) | decide where the message goes | [`Message`] | `451`: nobody took the message |
//! | [`disconnect`](Plugin::disconnect) | the client is gone | — | — |
//! | [`delivered`](Plugin::delivered) | the queue delivered to one recipient | [`DeliveryEvent`] | — |
//! | [`deferred`](Plugin::deferred) | delivery to one recipient failed for now | [`DeliveryEvent`] | — |
//! | [`bounced`](Plugin::bounced) | delivery to one recipient failed for good | [`DeliveryEvent`] | — |
//!
//! `accept` in `auth` logs the client in as the login; in `queue` it means
//! the plugin took care of the message (for example relayed it).
//!
//! # Verdicts
//!
//! [`Verdict::Continue`] (no opinion), [`Accept`](Verdict::Accept),
//! [`Deny`](Verdict::Deny) (5xx), [`DenySoft`](Verdict::DenySoft) (4xx) and
//! [`DenyDisconnect`](Verdict::DenyDisconnect) (421 or 5xx, then close).
//! Each but `Continue` may carry a [`Reply`]; without one the host uses its
//! default text. The host checks replies (code class matches the verdict,
//! enhanced code of the same class, one printable line) and replaces an
//! invalid one with its default, logging why.
//!
//! # Lifecycle
//!
//! At start-up (and in `mailferry check`) the server creates one probe
//! instance of each plugin and asks it to parse its configuration table
//! (TOML, into [`Plugin::Config`]) and run [`Plugin::new`]: an error there
//! stops the server with the reason, so a typo in the configuration is found
//! before any mail arrives.
//!
//! Then the server instantiates a plugin's component once per SMTP
//! connection. The first hook call parses the configuration and calls
//! [`Plugin::new`] again; the value lives until the connection ends, so
//! per-connection state can sit in `Cell`s and `RefCell`s. If `new` fails
//! now (say, it reads a file that has changed), the hook call traps: the host
//! logs the reason under the plugin's name and answers that step with
//! `451 4.3.0`. A panic, an endless loop or a memory blow-up
//! in any hook ends the same way, for that connection only.
//!
//! # Capabilities and grants
//!
//! A plugin reaches the world only through [`Host`]:
//!
//! | Capability | Methods | Needs in the host config |
//! |------------|---------|--------------------------|
//! | log | [`Host::log`], [`info`](Host::info), [`warn`](Host::warn), … | nothing |
//! | session | [`Host::connection`], [`Host::envelope`] | nothing |
//! | notes | [`Host::note`], [`set_note`](Host::set_note), [`remove_note`](Host::remove_note) | nothing |
//! | message | [`Message`] in `data` and `queue` | nothing |
//! | password | [`Host::verify_password`] | `grants = ["password"]` |
//! | outbound | [`Host::send_now`] | `grants = ["outbound"]` |
//! | dkim | [`Host::dkim_sign`], [`dkim_keys`](Host::dkim_keys), … | `grants = ["dkim"]` |
//! | counters | [`Host::counter_take`], [`counter_check`](Host::counter_check), [`counter_incr`](Host::counter_incr), [`counter_get`](Host::counter_get) | `grants = ["counters"]` |
//! | sql | [`Host::sql_query`], [`Host::sql_databases`] | `grants = ["sql:NAME"]` per database |
//! | files | `std::fs`, read-only | `read_dirs = ["auth"]` (mounted at `/auth`) |
//!
//! A component imports only what its code calls, and the server links only
//! what the plugin was granted: a plugin calling `send_now` without the
//! `outbound` grant is refused at start-up with a message naming the grant.
//! There are no sockets, no environment variables and no other files.
//!
//! # Testing
//!
//! On any target but `wasm32` the SDK serves [`Host`] and [`Message`] from
//! an in-memory [`testing::TestHost`], so `cargo test` runs a plugin's hooks
//! natively with scripted connections, envelopes, notes, password checks,
//! relays and SQL answers, and records logs, notes and header edits for assertions. See
//! the [`testing`] module.
//!
//! # Helpers
//!
//! [`address`] splits and compares `local@domain` (quoted local parts, the
//! null sender, case-insensitive domains); [`headers`] finds header values
//! and reads the addresses out of `From:` and friends.

mod host;
mod message;
mod runtime;
mod types;
mod verdict;

pub mod address;
pub mod headers;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(target_arch = "wasm32")]
mod wasm;

pub use host::Host;
pub use message::{BodyChunks, Message, BODY_CHUNK};
pub use runtime::parse_config;
pub use types::{
    Address, Connection, DeliveryEvent, DkimKey, Envelope, Failure, Level, NoteValue, Param, Scope, SignOptions,
    Signed, SqlError, SqlRows, SqlValue, Usage,
};
pub use verdict::{Reply, Verdict};

/// Re-exported so plugins can name the exact serde the SDK uses.
pub use serde;

/// A mailferry plugin. Implement the hooks you need and export the type
/// with [`export_plugin!`].
///
/// Hooks take `&self`: the server never calls a plugin instance
/// concurrently, so interior mutability (`Cell`, `RefCell`) is enough for
/// per-connection state.
pub trait Plugin: Sized + 'static {
    /// The plugin's configuration table. Use `()` for none, or a struct
    /// (`#[serde(default)]` fields accept an empty table;
    /// `#[serde(deny_unknown_fields)]` catches typos).
    type Config: serde::de::DeserializeOwned;

    /// Creates the plugin for one connection. An `Err` is logged by the host
    /// and fails the hook that triggered it with `451 4.3.0`.
    fn new(config: Self::Config, host: &Host) -> Result<Self, String>;

    /// A client connected.
    fn connect(&self, host: &Host) -> Verdict {
        let _ = host;
        runtime::not_implemented()
    }

    /// EHLO or HELO with the name the client gave.
    fn ehlo(&self, host: &Host, name: &str) -> Verdict {
        let _ = (host, name);
        runtime::not_implemented()
    }

    /// AUTH, after the SASL exchange: `Accept` logs the client in as `login`.
    fn auth(&self, host: &Host, mechanism: &str, login: &str, password: &str) -> Verdict {
        let _ = (host, mechanism, login, password);
        runtime::not_implemented()
    }

    /// MAIL FROM; `sender.address` is `""` for the null sender.
    fn mail(&self, host: &Host, sender: &Address) -> Verdict {
        let _ = (host, sender);
        runtime::not_implemented()
    }

    /// RCPT TO.
    fn rcpt(&self, host: &Host, recipient: &Address) -> Verdict {
        let _ = (host, recipient);
        runtime::not_implemented()
    }

    /// The whole message has arrived; headers may be edited.
    fn data(&self, host: &Host, msg: &Message) -> Verdict {
        let _ = (host, msg);
        runtime::not_implemented()
    }

    /// Decide where the message goes; `Accept` means it has been taken care of.
    fn queue(&self, host: &Host, msg: &Message) -> Verdict {
        let _ = (host, msg);
        runtime::not_implemented()
    }

    /// The client is gone; the instance is dropped after this.
    fn disconnect(&self, host: &Host) {
        let _ = host;
    }

    /// A relay accepted a queued message for `event.recipient`. Delivery
    /// events run outside client sessions, on their own instance.
    fn delivered(&self, host: &Host, event: &DeliveryEvent) {
        let _ = (host, event);
        runtime::not_implemented();
    }

    /// Delivery to `event.recipient` failed for now and will be retried.
    fn deferred(&self, host: &Host, event: &DeliveryEvent) {
        let _ = (host, event);
        runtime::not_implemented();
    }

    /// Delivery to `event.recipient` failed for good (refused or expired).
    fn bounced(&self, host: &Host, event: &DeliveryEvent) {
        let _ = (host, event);
        runtime::not_implemented();
    }
}

/// Exports a [`Plugin`] as the component's `hooks`: `export_plugin!(MyPlugin);`
///
/// Use it once, in the plugin crate. On `wasm32` it generates the export
/// glue, which creates the plugin on the first hook call and keeps it for
/// the life of the component instance. On other targets it only checks that
/// the type is a `Plugin`, so the crate still builds for native tests.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __MailferryExport;

            // One instance per component instance; wasm32-wasip2 has one
            // thread, so this is a plain static in disguise.
            ::std::thread_local! {
                static INSTANCE: ::core::cell::OnceCell<$plugin> =
                    const { ::core::cell::OnceCell::new() };
            }

            impl $crate::__private::Exported for __MailferryExport {
                type Plugin = $plugin;

                fn with_plugin<R>(f: impl FnOnce(&$plugin, &$crate::Host) -> R) -> R {
                    INSTANCE.with(|slot| $crate::__private::with_instance(slot, f))
                }

                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    INSTANCE.with(|slot| $crate::__private::try_init(slot))
                }
            }

            type __MailferryHooks = $crate::__private::Adapter<__MailferryExport>;

            $crate::__private::bindings::__export_hooks!(
                __MailferryHooks with_types_in $crate::__private::bindings
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn __mailferry_assert_plugin<P: $crate::Plugin>() {}
            let _ = __mailferry_assert_plugin::<$plugin>;
        };
    };
}

#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::wasm::{bindings, try_init, with_instance, Adapter, Exported};
}
