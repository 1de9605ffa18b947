//! What a hook decides: [`Verdict`], and the SMTP [`Reply`] a decision may carry.

/// An SMTP reply sent to the client (or received from an upstream relay).
///
/// The host validates replies a plugin returns: the code must match the
/// verdict's class (2xx for accept, 4xx for deny-soft, 5xx for deny, 4xx or
/// 5xx for deny-disconnect), `enhanced` must look like `5.7.1` with the same
/// class, and `text` must be printable without CR or LF. An invalid reply is
/// logged and replaced by the host's default text for that verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    /// The three-digit reply code, e.g. `550`.
    pub code: u16,
    /// The RFC 3463 enhanced status code, e.g. `5.7.1`.
    pub enhanced: Option<String>,
    /// The human-readable text, one line.
    pub text: String,
}

impl Reply {
    /// A reply; an empty `enhanced` means none.
    ///
    /// ```
    /// # use mailferry_plugin_sdk::Reply;
    /// let reply = Reply::new(550, "5.7.1", "relaying denied");
    /// assert_eq!(reply.enhanced.as_deref(), Some("5.7.1"));
    /// assert_eq!(Reply::new(250, "", "ok").enhanced, None);
    /// ```
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        Reply { code, enhanced: (!enhanced.is_empty()).then(|| enhanced.to_string()), text: text.into() }
    }
}

impl std::fmt::Display for Reply {
    /// Formats as the client would see it: `550 5.7.1 relaying denied`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = &self.enhanced {
            write!(f, " {enhanced}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// A hook's decision.
///
/// Plugins run in the configured order and the first verdict other than
/// [`Continue`](Verdict::Continue) wins the step. A verdict without a reply
/// (`None`) makes the host use its default reply for that verdict and step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No opinion: ask the next plugin.
    Continue,
    /// Decide positively now; later plugins are not asked for this step.
    Accept(Option<Reply>),
    /// Refuse permanently (5xx).
    Deny(Option<Reply>),
    /// Refuse temporarily (4xx); the client may retry.
    DenySoft(Option<Reply>),
    /// Refuse and close the connection (421 or 5xx).
    DenyDisconnect(Option<Reply>),
}

impl Verdict {
    /// Accept with the host's default reply.
    pub fn accept() -> Verdict {
        Verdict::Accept(None)
    }

    /// Accept with this reply (2xx); an empty `enhanced` means none.
    pub fn accept_with(code: u16, enhanced: &str, text: impl Into<String>) -> Verdict {
        Verdict::Accept(Some(Reply::new(code, enhanced, text)))
    }

    /// Refuse permanently with this reply (5xx), e.g.
    /// `Verdict::deny(550, "5.7.1", "relaying denied")`.
    pub fn deny(code: u16, enhanced: &str, text: impl Into<String>) -> Verdict {
        Verdict::Deny(Some(Reply::new(code, enhanced, text)))
    }

    /// Refuse temporarily with this reply (4xx), e.g.
    /// `Verdict::deny_soft(451, "4.3.0", "try again later")`.
    pub fn deny_soft(code: u16, enhanced: &str, text: impl Into<String>) -> Verdict {
        Verdict::DenySoft(Some(Reply::new(code, enhanced, text)))
    }

    /// Refuse and close the connection with this reply (421 or 5xx), e.g.
    /// `Verdict::deny_disconnect(421, "4.7.0", "too many errors")`.
    pub fn deny_disconnect(code: u16, enhanced: &str, text: impl Into<String>) -> Verdict {
        Verdict::DenyDisconnect(Some(Reply::new(code, enhanced, text)))
    }

    /// True for [`Verdict::Continue`].
    pub fn is_continue(&self) -> bool {
        matches!(self, Verdict::Continue)
    }

    /// The reply this verdict carries, if any.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Verdict::Continue => None,
            Verdict::Accept(r) | Verdict::Deny(r) | Verdict::DenySoft(r) | Verdict::DenyDisconnect(r) => r.as_ref(),
        }
    }
}
