use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"), Path::new("/etc/mf"))
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse("[[listeners]]\naddress = \"127.0.0.1:2525\"\n").unwrap();
    assert_eq!(c.limits.command_line, 512);
    assert_eq!(c.limits.message_size, 25 * 1024 * 1024);
    assert_eq!(c.listeners[0].tls, TlsMode::None);
    assert!(!c.listeners[0].require_auth);
    assert_eq!(c.server.state_dir, Path::new("/etc/mf/state"));
}

#[test]
fn errors_name_the_key_and_fix() {
    let e =
        parse("[[listeners]]\naddress = \"nope\"\n[[listeners]]\naddress = \"0.0.0.0:25\"\nauth_without_tls = true\n")
            .unwrap_err();
    assert!(e.message.contains("listeners[0] (listener1).address"), "{e}");
    assert!(e.message.contains("only allowed on a loopback"), "{e}");
}

#[test]
fn proxy_protocol_needs_a_list_of_trusted_proxies() {
    let listener = |extra: &str| parse(&format!("[[listeners]]\nname = \"sub\"\naddress = \"127.0.0.1:1\"\n{extra}"));
    let c = listener("").unwrap();
    assert!(!c.listeners[0].proxy_protocol);
    let c = listener("proxy_protocol = true\nproxy_trusted = [\"10.0.0.0/8\", \"::1\"]").unwrap();
    assert!(c.listeners[0].proxy_protocol);
    assert_eq!(c.listeners[0].proxy_trusted, ["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
    for (extra, expect) in [
        ("proxy_protocol = true", "listeners[0] (sub): proxy_protocol = true needs proxy_trusted"),
        ("proxy_protocol = true\nproxy_trusted = []", "listeners[0] (sub).proxy_trusted is empty"),
        ("proxy_trusted = [\"10.0.0.1\"]", "proxy_trusted is set but proxy_protocol is not"),
        (
            "proxy_protocol = true\nproxy_trusted = [\"10.0.0.0/8\", \"haproxy.internal\"]",
            "listeners[0] (sub).proxy_trusted: \"haproxy.internal\" is not an IP address or a CIDR range",
        ),
    ] {
        let e = listener(extra).unwrap_err();
        assert!(e.message.contains(expect), "{extra}: {e}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let e = parse("[server]\nhostnme = \"x\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(e.message.contains("hostnme"), "{e}");
}

/// The reference documentation states every default; keep it honest.
#[test]
fn documented_defaults_match_the_code() {
    use defaults::*;
    let doc = include_str!("../../docs/configuration.md");
    let expect = [
        ("hostname", format!("`\"{HOSTNAME}\"`")),
        ("state_dir", format!("`\"{STATE_DIR}\"`")),
        ("shutdown_grace_secs", format!("`{SHUTDOWN_GRACE_SECS}`")),
        ("message_size", format!("`{MESSAGE_SIZE}`")),
        ("recipients", format!("`{RECIPIENTS}`")),
        ("command_line", format!("`{COMMAND_LINE}`")),
        ("auth_line", format!("`{AUTH_LINE}`")),
        ("text_line", format!("`{TEXT_LINE}`")),
        ("command_timeout_secs", format!("`{COMMAND_TIMEOUT_SECS}`")),
        ("data_timeout_secs", format!("`{DATA_TIMEOUT_SECS}`")),
        ("max_errors", format!("`{MAX_ERRORS}`")),
        ("max_connections", format!("`{MAX_CONNECTIONS}`")),
        ("max_connections_per_ip", format!("`{MAX_CONNECTIONS_PER_IP}`")),
        ("call_timeout_ms", format!("`{CALL_TIMEOUT_MS}`")),
        ("memory_limit_mb", format!("`{MEMORY_LIMIT_MB}`")),
        ("timeout_secs", format!("`{RELAY_TIMEOUT_SECS}`")),
        ("connection_max_messages", format!("`{CONNECTION_MAX_MESSAGES}`")),
        ("connection_idle_secs", format!("`{CONNECTION_IDLE_SECS}`")),
        ("bare_line_endings", "`\"reject\"`".to_string()),
        ("keys", format!("`\"{DKIM_KEYS}\"`")),
        ("retry_schedule_secs", format!("`{RETRY_SCHEDULE_SECS:?}`")),
        ("max_age_secs", format!("`{MAX_AGE_SECS}`")),
        ("concurrency", format!("`{QUEUE_CONCURRENCY}`")),
        ("verify_certificate", "`true`".to_string()),
        ("proxy_protocol", "`false`".to_string()),
        ("proxy_trusted", "none: required with `proxy_protocol`".to_string()),
        ("timeout_secs", format!("`{SENDMAIL_TIMEOUT_SECS}`")),
        ("domain", "`server.hostname`".to_string()),
        ("failures_per_ip", format!("`{AUTH_FAILURES_PER_IP}`")),
        ("failures_per_login", format!("`{AUTH_FAILURES_PER_LOGIN}`")),
        ("failure_window_secs", format!("`{AUTH_FAILURE_WINDOW_SECS}`")),
        ("ban_secs", format!("`{AUTH_BAN_SECS}`")),
        ("failure_delay_ms", format!("`{AUTH_FAILURE_DELAY_MS}`")),
        ("max_failure_delay_ms", format!("`{AUTH_MAX_FAILURE_DELAY_MS}`")),
        ("exempt_networks", "`[]`".to_string()),
        ("redis", "none: counters in memory".to_string()),
        ("prefix", format!("`\"{COUNTERS_PREFIX}\"`")),
        ("timeout_ms", format!("`{COUNTERS_TIMEOUT_MS}`")),
        ("on_redis_error", "`\"local\"`".to_string()),
        ("max_keys", format!("`{COUNTERS_MAX_KEYS}`")),
        ("workers", "`0`: one per CPU".to_string()),
        ("cache", "`true`".to_string()),
        ("cache_size", format!("`{PASSWORD_CACHE_SIZE}`")),
        ("cache_ttl_secs", format!("`{PASSWORD_CACHE_TTL_SECS}`")),
        ("url", "required".to_string()),
        ("max_connections", format!("`{DB_MAX_CONNECTIONS}`")),
        ("query_timeout_ms", format!("`{QUERY_TIMEOUT_MS}`")),
        ("max_rows", format!("`{MAX_ROWS}`")),
        ("max_result_bytes", format!("`{MAX_RESULT_BYTES}`")),
        ("migrate", "`false`".to_string()),
        ("database", "`\"users\"`".to_string()),
        ("preset", "`\"default\"`".to_string()),
    ];
    for (key, default) in expect {
        let row = format!("| `{key}` | {default}");
        assert!(doc.contains(&row), "docs/configuration.md has no row starting {row:?}");
    }
    let c = parse("[[listeners]]\naddress = \"127.0.0.1:1\"\n[relays.r]\nhost = \"h.example\"\n").unwrap();
    assert_eq!(c.limits.bare_line_endings, BareLineEndings::Reject);
    let Relay::Smtp(r) = &c.relays["r"] else { panic!() };
    assert!(r.verify_certificate);
    assert_eq!((r.port, r.tls), (587, TlsMode::Starttls));
    assert_eq!(c.counters.on_redis_error, OnRedisError::Local);
    assert!(c.counters.redis.is_none() && c.auth_limits.exempt_networks.is_empty());
}

#[test]
fn auth_limits_and_counters() {
    let c = parse(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[auth_limits]\nfailures_per_ip = 3\nban_secs = 2\nexempt_networks = [\"192.0.2.0/24\", \"2001:db8::1\"]\n[counters]\nredis = \"redis://:secret@127.0.0.1:6379/2\"\nprefix = \"eu:\"\n",
        )
        .unwrap();
    assert_eq!(c.auth_limits.failures_per_ip, 3);
    assert_eq!(c.auth_limits.ban, Duration::from_secs(2));
    assert_eq!(c.auth_limits.exempt_networks.len(), 2);
    assert_eq!(c.counters.prefix, "eu:");
    let shown = format!("{:?}", c.counters);
    assert!(!shown.contains("secret") && shown.contains("@127.0.0.1:6379/2"), "{shown}");
    for (text, expect) in [
        ("[counters]\nredis = \"http://x\"", "counters.redis:"),
        ("[counters]\nmax_keys = 10", "counters.max_keys = 10"),
        ("[counters]\non_redis_error = \"ignore\"", "on_redis_error"),
        ("[auth_limits]\nban_secs = 0", "auth_limits.ban_secs"),
        ("[auth_limits]\nexempt_networks = [\"office\"]", "auth_limits.exempt_networks: \"office\""),
    ] {
        let e = parse(&format!("[[listeners]]\naddress = \"127.0.0.1:1\"\n{text}\n")).unwrap_err();
        assert!(e.message.contains(expect), "{text}: {e}");
    }
}

#[test]
fn tls_certificates_by_name() {
    let c = parse(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
             [[tls.certificates]]\ncert = \"/le/b/fullchain.pem\"\nkey = \"/le/b/privkey.pem\"\n\
             [[tls.certificates]]\ncert = \"c.pem\"\nkey = \"c.key\"\nnames = [\"Mail.Example.org.\", \"*.example.net\"]\n",
        )
        .unwrap();
    assert_eq!(c.tls.cert.as_deref(), Some(Path::new("/etc/mf/a.pem")));
    assert_eq!(c.tls.certificates.len(), 2);
    assert_eq!(c.tls.certificates[0].key, Path::new("/le/b/privkey.pem"));
    assert_eq!(c.tls.certificates[0].names, None);
    assert_eq!(
        c.tls.certificates[1].names.as_deref(),
        Some(&["mail.example.org".to_string(), "*.example.net".to_string()][..])
    );
    for (names, why) in [
        ("[]", "tls.certificates[0].names is empty"),
        ("[\"a.*.example\"]", "is not a host name"),
        ("[\"192.0.2.1\"]", "is an IP address"),
        ("[\"*\"]", "is not a host name"),
    ] {
        let e = parse(&format!(
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[tls.certificates]]\ncert = \"c\"\nkey = \"k\"\nnames = {names}\n"
            ))
            .unwrap_err();
        assert!(e.message.contains(why), "{names}: {e}");
    }
    let e = parse("[[listeners]]\naddress = \"127.0.0.1:1\"\n[[tls.certificates]]\ncert = \"c\"\n").unwrap_err();
    assert!(e.message.contains("key"), "{e}");
}

#[test]
fn ipv4_mapped_networks_mean_their_ipv4_range() {
    assert_eq!(parse_net("::ffff:10.0.0.0/104"), Some("10.0.0.0/8".parse().unwrap()));
    assert_eq!(parse_net("::ffff:192.0.2.7"), Some("192.0.2.7/32".parse().unwrap()));
    assert_eq!(parse_net("2001:db8::/32"), Some("2001:db8::/32".parse().unwrap()));
    assert_eq!(parse_net("::/0"), Some("::/0".parse().unwrap()));
}

#[test]
fn env_expansion() {
    std::env::set_var("MF_TEST_SECRET", "s3cret");
    assert_eq!(expand_env("a${MF_TEST_SECRET}b").unwrap(), "as3cretb");
    assert_eq!(
        expand_env("${MF_TEST_UNSET_VAR}").unwrap_err(),
        "environment variable MF_TEST_UNSET_VAR is not set (referenced as ${MF_TEST_UNSET_VAR})"
    );
    std::env::set_var("MF_TEST_EMPTY_VAR", "");
    assert!(expand_env("x${MF_TEST_EMPTY_VAR}").unwrap_err().contains("MF_TEST_EMPTY_VAR is set but empty"));
}

/// One `[relays.r]` table after a minimal listener.
fn relay(body: &str) -> Result<SmtpRelay, ConfigError> {
    std::env::set_var("MF_TEST_RELAY_SECRET", "s3cret");
    let c = parse(&format!("[[listeners]]\naddress = \"127.0.0.1:1\"\n[relays.r]\n{body}"))?;
    let Relay::Smtp(r) = c.relays["r"].clone() else { panic!("not an smtp relay") };
    Ok(r)
}

fn relay_err(body: &str) -> String {
    relay(body).map(|r| panic!("accepted: {r:?}")).unwrap_err().message
}

#[test]
fn ses_preset() {
    let r = relay(
        "provider = \"ses\"\nregion = \"eu-west-1\"\nuser = \"AKIAEXAMPLE\"\npassword = \"${MF_TEST_RELAY_SECRET}\"\n",
    )
    .unwrap();
    assert_eq!(r.host, "email-smtp.eu-west-1.amazonaws.com");
    assert_eq!((r.port, r.tls), (587, TlsMode::Starttls));
    assert_eq!((r.user.as_deref(), r.password.as_deref()), (Some("AKIAEXAMPLE"), Some("s3cret")));
    assert_eq!(r.provider, Some(Provider::Ses));
    assert_eq!((r.max_recipients, r.max_message_size), (Some(50), Some(40_000_000)));
    assert!(r.extra_headers.is_empty());
    // Implicit TLS moves the port with it.
    let r =
        relay("provider = \"ses\"\nregion = \"us-east-2\"\ntls = \"implicit\"\nuser = \"AKIA\"\npassword = \"p\"\n")
            .unwrap();
    assert_eq!((r.host.as_str(), r.port, r.tls), ("email-smtp.us-east-2.amazonaws.com", 465, TlsMode::Implicit));
}

#[test]
fn ses_needs_a_region_and_credentials() {
    let e = relay_err("provider = \"ses\"\nuser = \"AKIA\"\npassword = \"p\"\n");
    assert!(e.contains("relays.r: provider = \"ses\" needs region"), "{e}");
    assert!(e.contains("eu-west-1") && e.contains("us-east-1"), "the usual regions are listed: {e}");
    let e = relay_err("provider = \"ses\"\nregion = \"Ireland\"\nuser = \"AKIA\"\npassword = \"p\"\n");
    assert!(e.contains("relays.r.region = \"Ireland\" is not an AWS region"), "{e}");
    let e = relay_err("provider = \"ses\"\nregion = \"eu-west-1\"\npassword = \"p\"\n");
    assert!(e.contains("needs user = \"AKIA...\" and password") && e.contains("not your IAM access keys"), "{e}");
    let e = relay_err("provider = \"ses\"\nregion = \"eu-west-1\"\n");
    assert!(e.contains("SES SMTP credentials"), "{e}");
    // A host of your own (e.g. a VPC endpoint) needs no region.
    let r = relay("provider = \"ses\"\nhost = \"vpce-1.email-smtp.eu-west-1.vpce.amazonaws.com\"\nuser = \"AKIA\"\npassword = \"p\"\n")
            .unwrap();
    assert_eq!(r.host, "vpce-1.email-smtp.eu-west-1.vpce.amazonaws.com");
    assert_eq!(r.max_recipients, Some(50));
}

#[test]
fn sendgrid_preset() {
    let r = relay("provider = \"sendgrid\"\npassword = \"SG.x.y\"\n").unwrap();
    assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp.sendgrid.net", 587, TlsMode::Starttls));
    assert_eq!((r.user.as_deref(), r.password.as_deref()), (Some("apikey"), Some("SG.x.y")));
    assert_eq!((r.max_recipients, r.max_message_size), (Some(1000), Some(30_000_000)));
    assert_eq!(r.extra_headers, vec![("X-SMTPAPI".to_string(), SENDGRID_SMTPAPI.to_string())]);
    // The header is JSON turning both tracking filters off.
    assert!(SENDGRID_SMTPAPI.contains(r#""clicktrack":{"settings":{"enable":0}}"#));
    assert!(SENDGRID_SMTPAPI.contains(r#""opentrack":{"settings":{"enable":0}}"#));
    // Writing the literal user is fine too.
    assert_eq!(
        relay("provider = \"sendgrid\"\nuser = \"apikey\"\npassword = \"k\"\n").unwrap().user.as_deref(),
        Some("apikey")
    );
}

#[test]
fn sendgrid_logs_in_as_apikey_only() {
    let e = relay_err("provider = \"sendgrid\"\nuser = \"me@example.com\"\npassword = \"k\"\n");
    assert!(
            e.contains("relays.r.user = \"me@example.com\": SendGrid SMTP logs in as the literal user `apikey` with an API key as password"),
            "{e}"
        );
    let e = relay_err("provider = \"sendgrid\"\n");
    assert!(e.contains("needs password = \"${SENDGRID_API_KEY}\""), "{e}");
}

#[test]
fn resend_preset() {
    let r = relay("provider = \"resend\"\npassword = \"re_x\"\n").unwrap();
    assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp.resend.com", 465, TlsMode::Implicit));
    assert_eq!(r.user.as_deref(), Some("resend"));
    assert_eq!((r.max_recipients, r.max_message_size), (Some(50), Some(40_000_000)));
    let r = relay("provider = \"resend\"\ntls = \"starttls\"\npassword = \"re_x\"\n").unwrap();
    assert_eq!((r.port, r.tls), (587, TlsMode::Starttls));
    let e = relay_err("provider = \"resend\"\nuser = \"apikey\"\npassword = \"re_x\"\n");
    assert!(e.contains("Resend SMTP logs in as the literal user `resend`"), "{e}");
}

#[test]
fn mailgun_preset() {
    let r = relay("provider = \"mailgun\"\nuser = \"postmaster@mg.example.com\"\npassword = \"p\"\n").unwrap();
    assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp.mailgun.org", 587, TlsMode::Starttls));
    assert_eq!((r.max_recipients, r.max_message_size), (Some(1000), Some(25_000_000)));
    let r = relay("provider = \"mailgun\"\nregion = \"eu\"\nuser = \"postmaster@mg.example.com\"\npassword = \"p\"\n")
        .unwrap();
    assert_eq!(r.host, "smtp.eu.mailgun.org");
    assert_eq!(
        relay("provider = \"mailgun\"\nregion = \"us\"\nuser = \"a@b\"\npassword = \"p\"\n").unwrap().host,
        "smtp.mailgun.org"
    );
    let e = relay_err("provider = \"mailgun\"\nregion = \"eu-west-1\"\nuser = \"a@b\"\npassword = \"p\"\n");
    assert!(e.contains("Mailgun's regions are \"us\"") && e.contains("\"eu\""), "{e}");
    let e = relay_err("provider = \"mailgun\"\nuser = \"postmaster\"\npassword = \"p\"\n");
    assert!(e.contains("relays.r.user = \"postmaster\": Mailgun SMTP logins are full addresses"), "{e}");
    let e = relay_err("provider = \"mailgun\"\npassword = \"p\"\n");
    assert!(e.contains("needs user = \"postmaster@mg.example.com\""), "{e}");
}

#[test]
fn postmark_preset() {
    // The Server API token alone: it is the user too.
    let r = relay("provider = \"postmark\"\npassword = \"${MF_TEST_RELAY_SECRET}\"\n").unwrap();
    assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp.postmarkapp.com", 587, TlsMode::Starttls));
    assert_eq!((r.user.as_deref(), r.password.as_deref()), (Some("s3cret"), Some("s3cret")));
    assert_eq!((r.max_recipients, r.max_message_size), (Some(50), Some(10_000_000)));
    // SMTP tokens (access key and secret) differ, and are taken as written.
    let r = relay("provider = \"postmark\"\nuser = \"access\"\npassword = \"secret\"\n").unwrap();
    assert_eq!((r.user.as_deref(), r.password.as_deref()), (Some("access"), Some("secret")));
    let e = relay_err("provider = \"postmark\"\ntls = \"implicit\"\npassword = \"t\"\n");
    assert!(e.contains("Postmark offers no implicit-TLS port"), "{e}");
    let e = relay_err("provider = \"postmark\"\nuser = \"t\"\n");
    assert!(e.contains("needs password = \"${POSTMARK_SERVER_TOKEN}\""), "{e}");
}

#[test]
fn brevo_preset() {
    let r = relay("provider = \"brevo\"\nuser = \"login@smtp-brevo.com\"\npassword = \"xsmtpsib-k\"\n").unwrap();
    assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp-relay.brevo.com", 587, TlsMode::Starttls));
    assert_eq!((r.max_recipients, r.max_message_size), (Some(99), Some(20_000_000)));
    let e = relay_err("provider = \"brevo\"\npassword = \"k\"\n");
    assert!(e.contains("an SMTP key (not an API key)"), "{e}");
}

#[test]
fn explicit_keys_override_a_preset() {
    let r = relay(
            "provider = \"postmark\"\nhost = \"smtp-broadcasts.postmarkapp.com\"\nport = 2525\npassword = \"t\"\nmax_recipients = 10\nmax_message_size = 5000000\n",
        )
        .unwrap();
    assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp-broadcasts.postmarkapp.com", 2525, TlsMode::Starttls));
    assert_eq!((r.max_recipients, r.max_message_size), (Some(10), Some(5_000_000)));
    // Implicit TLS on an explicit port, even where the preset has none.
    let r = relay("provider = \"postmark\"\ntls = \"implicit\"\nport = 4465\npassword = \"t\"\n").unwrap();
    assert_eq!((r.port, r.tls), (4465, TlsMode::Implicit));
    // Limits on a plain smarthost; none by default.
    let r = relay("host = \"smtp.example.com\"\nmax_recipients = 20\n").unwrap();
    assert_eq!((r.provider, r.max_recipients, r.max_message_size), (None, Some(20), None));
    assert!(r.extra_headers.is_empty());
}

#[test]
fn provider_mistakes_name_the_key() {
    let e = relay_err("provider = \"sparkpost\"\n");
    assert!(
        e.contains("relays.r.provider = \"sparkpost\" is not a known provider; use one of \"ses\", \"sendgrid\""),
        "{e}"
    );
    let e = relay_err("kind = \"outbox\"\ndir = \"out\"\nprovider = \"ses\"\n");
    assert!(e.contains("relays.r: provider = \"ses\" sets up an SMTP relay, but kind = \"outbox\""), "{e}");
    let e = relay_err("host = \"smtp.example.com\"\nregion = \"eu-west-1\"\n");
    assert!(e.contains("relays.r.region is only used with provider = \"ses\" or \"mailgun\""), "{e}");
    let e = relay_err("provider = \"sendgrid\"\nregion = \"eu\"\npassword = \"k\"\n");
    assert!(e.contains("relays.r.region: SendGrid has no regions"), "{e}");
    let e = relay_err("provider = \"sendgrid\"\npassword = \"k\"\nmax_recipients = 0\n");
    assert!(e.contains("relays.r.max_recipients must be at least 1"), "{e}");
    let e = relay_err("provider = \"sendgrid\"\npassword = \"k\"\nmax_message_size = 30\n");
    assert!(e.contains("relays.r.max_message_size = 30 is below the minimum"), "{e}");
    let e = relay_err("provider = \"sendgrid\"\npassword = \"k\"\ntls = \"none\"\n");
    assert!(e.contains("refusing to send the upstream password in clear text to smtp.sendgrid.net"), "{e}");
    let e = relay_err("user = \"u\"\n");
    assert!(e.contains("needs host = \"smtp.example.com\", or provider = \"ses\""), "{e}");
}

#[test]
fn providers_doc_matches_the_presets() {
    let doc = include_str!("../../docs/providers.md");
    for p in Provider::ALL {
        let host = match p {
            Provider::Ses => "email-smtp.<region>.amazonaws.com".to_string(),
            _ => p.host(None),
        };
        let tls = match p.tls() {
            TlsMode::Implicit => "implicit",
            _ => "STARTTLS",
        };
        let row = format!(
            "| `{}` | `{host}` | {} | {tls} | {} | {} | {} MB |",
            p.name(),
            p.port(p.tls()).unwrap(),
            match p.fixed_user() {
                Some(u) => format!("`{u}`"),
                None if p == Provider::Postmark => "the token".to_string(),
                None => "yours".to_string(),
            },
            p.max_recipients(),
            p.max_message_size() / MB,
        );
        assert!(doc.contains(&row), "docs/providers.md has no row {row:?}");
    }
    assert!(doc.contains(SENDGRID_SMTPAPI), "docs/providers.md shows the X-SMTPAPI value");
}

#[test]
fn admin_commands_need_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mailferry.toml");
    std::fs::write(
        &file,
        "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[plugins]]\nname = \"auth-flat-file\"\nread_dirs = [\"auth\"]\n\
             [plugins.config]\ndsn = \"${MF_TEST_UNSET_DSN}\"\n[relays.up]\nprovider = \"sendgrid\"\n\
             password = \"${MF_TEST_UNSET_KEY}\"\n[routes.default]\nrelays = [\"up\"]\n[dkim]\nkeys = \"keys\"\n",
    )
    .unwrap();
    let e = Config::load(&file).unwrap_err();
    assert!(e.message.contains("MF_TEST_UNSET_KEY is not set"), "{e}");
    let c = Config::load_for_admin(&file).unwrap();
    assert_eq!(c.plugins[0].read_dirs[0].0, dir.path().join("auth"));
    assert_eq!(c.plugins[0].config["dsn"].as_str(), Some("${MF_TEST_UNSET_DSN}"));
    assert_eq!(c.dkim.keys, dir.path().join("keys"));
    assert!(c.relays.is_empty() && c.routes.is_empty());
    // Mistakes are still reported.
    std::fs::write(&file, "[[listeners]]\naddress = \"127.0.0.1:1\"\n[dkim]\nkeyz = \"k\"\n").unwrap();
    assert!(Config::load_for_admin(&file).unwrap_err().message.contains("keyz"));
}

#[test]
fn databases_and_sql_grants() {
    std::env::set_var("MF_TEST_DB_SECRET", "p@ss:word");
    let c = parse(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n\
             [databases.users]\nurl = \"sqlite://data/users.db\"\nmigrate = true\n\
             [databases.pfa]\nurl = \"postgres://mailferry:${MF_TEST_DB_SECRET}@db.example/postfix?sslmode=require\"\nmax_rows = 10\n\
             [databases.dovecot]\nurl = \"mysql://mailferry@db.example/mail\"\npassword = \"${MF_TEST_DB_SECRET}\"\nquery_timeout_ms = 500\n\
             [[plugins]]\nname = \"auth-sql\"\ngrants = [\"password\", \"sql:pfa\", \"sql:dovecot\", \"sql:pfa\"]\n",
        )
        .unwrap();
    let users = &c.databases["users"];
    assert_eq!(users.kind, DatabaseKind::Sqlite(PathBuf::from("/etc/mf/data/users.db")));
    assert!(users.migrate);
    assert_eq!((users.max_connections, users.max_rows), (defaults::DB_MAX_CONNECTIONS, defaults::MAX_ROWS));
    let pfa = &c.databases["pfa"];
    assert_eq!((pfa.kind.clone(), pfa.max_rows, pfa.migrate), (DatabaseKind::Postgres, 10, false));
    let dovecot = &c.databases["dovecot"];
    assert_eq!(dovecot.kind, DatabaseKind::MySql);
    assert_eq!(dovecot.password.as_deref(), Some("p@ss:word"));
    assert_eq!(dovecot.query_timeout, Duration::from_millis(500));
    assert_eq!(c.plugins[0].grants, [Grant::Password, Grant::Sql]);
    assert_eq!(c.plugins[0].databases, ["pfa", "dovecot"]);
    // The password shows nowhere in what may be logged.
    let shown = format!("{c:?}");
    assert!(!shown.contains("p@ss:word") && shown.contains("mailferry:***@db.example"), "{shown}");
    assert_eq!(
        redact_url("mysql://u@h/db?password=x&ssl-mode=required"),
        "mysql://u@h/db?password=***&ssl-mode=required"
    );

    let err = |body: &str| parse(&format!("[[listeners]]\naddress = \"127.0.0.1:1\"\n{body}")).unwrap_err().message;
    let e = err("[databases.x]\nurl = \"oracle://h/db\"\n");
    assert!(e.contains("databases.x.url = \"oracle://h/db\": use \"sqlite://FILE\""), "{e}");
    let e = err("[databases.x]\nurl = \"postgres://u:secret@h:notaport/db\"\n");
    assert!(e.contains("databases.x.url") && !e.contains("secret"), "{e}");
    let e = err("[databases.x]\nurl = \"sqlite:\"\n");
    assert!(e.contains("write \"sqlite://FILE\""), "{e}");
    let e = err("[databases.x]\nurl = \"sqlite://x.db\"\nmax_connections = 0\n");
    assert!(e.contains("databases.x.max_connections must be at least 1"), "{e}");
    let e = err("[databases.x]\nurl = \"sqlite://x.db\"\n[[plugins]]\nname = \"auth-sql\"\ngrants = [\"sql\"]\n");
    assert!(
        e.contains("\"sql\" needs the database it grants: \"sql:NAME\" for a [databases.NAME]; known: \"x\""),
        "{e}"
    );
    let e = err("[[plugins]]\nname = \"auth-sql\"\ngrants = [\"sql:users\"]\n");
    assert!(e.contains("\"sql:users\": there is no [databases.users]; add one"), "{e}");
    let e = err("[databases.x]\nurl = \"${MF_TEST_UNSET_DB}\"\n");
    assert!(e.contains("MF_TEST_UNSET_DB is not set"), "{e}");
    let e = err("[[plugins]]\nname = \"limits:a\"\npath = \"x.wasm\"\n");
    assert!(e.contains("name \"limits:a\": a plugin name is letters, digits"), "{e}");
}

#[test]
fn missing_env_in_relay_password_is_an_error() {
    let e = parse(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[relays.up]\nhost = \"smtp.example.com\"\nuser = \"u\"\npassword = \"${MF_TEST_UNSET_PW}\"\n",
        )
        .unwrap_err();
    assert!(e.message.contains("MF_TEST_UNSET_PW is not set"), "{e}");
}
