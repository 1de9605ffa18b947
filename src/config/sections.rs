//! The file turned into a [`Config`], section by section, every mistake recorded with its key.

use super::*;

impl Config {
    pub(crate) fn from_raw(raw: RawConfig, cx: &mut Resolver) -> Config {
        use defaults::*;
        let server = Server {
            hostname: cx.string("server.hostname", raw.server.hostname).unwrap_or_else(|| HOSTNAME.into()),
            state_dir: cx.path(raw.server.state_dir.as_deref().unwrap_or(STATE_DIR)),
            shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_secs.unwrap_or(SHUTDOWN_GRACE_SECS)),
        };
        if !is_domain_or_literal(&server.hostname) {
            cx.error(format!(
                "server.hostname = {:?} is not a valid host name; use the name clients connect to, e.g. \"smtp.example.com\"",
                server.hostname
            ));
        }
        let l = raw.limits;
        let limits = Limits {
            command_line: l.command_line.unwrap_or(COMMAND_LINE),
            auth_line: l.auth_line.unwrap_or(AUTH_LINE),
            text_line: l.text_line.unwrap_or(TEXT_LINE),
            message_size: l.message_size.unwrap_or(MESSAGE_SIZE),
            recipients: l.recipients.unwrap_or(RECIPIENTS),
            command_timeout: Duration::from_secs(l.command_timeout_secs.unwrap_or(COMMAND_TIMEOUT_SECS)),
            data_timeout: Duration::from_secs(l.data_timeout_secs.unwrap_or(DATA_TIMEOUT_SECS)),
            max_errors: l.max_errors.unwrap_or(MAX_ERRORS),
            max_connections: l.max_connections.unwrap_or(MAX_CONNECTIONS),
            max_connections_per_ip: l.max_connections_per_ip.unwrap_or(MAX_CONNECTIONS_PER_IP),
            bare_line_endings: l.bare_line_endings.unwrap_or(BareLineEndings::Reject),
        };
        for (key, value, min) in [
            ("limits.command_line", limits.command_line, 512),
            ("limits.auth_line", limits.auth_line, 512),
            ("limits.text_line", limits.text_line, 1000),
            ("limits.message_size", limits.message_size, 1024),
            ("limits.recipients", limits.recipients, 1),
            ("limits.max_connections", limits.max_connections, 1),
            ("limits.max_connections_per_ip", limits.max_connections_per_ip, 1),
        ] {
            if value < min {
                cx.error(format!("{key} = {value} is below the minimum of {min} (RFC 5321 §4.5.3.1)"));
            }
        }
        if limits.command_timeout.is_zero() || limits.data_timeout.is_zero() {
            cx.error("limits.command_timeout_secs and limits.data_timeout_secs must be above 0".into());
        }

        let mut certificates = Vec::new();
        for (i, rc) in raw.tls.certificates.into_iter().enumerate() {
            let key = format!("tls.certificates[{i}]");
            let names = rc.names.map(|names| {
                if names.is_empty() {
                    cx.error(format!(
                        "{key}.names is empty: list the server names, e.g. [\"smtp.example.org\"], or leave names out to take them from the certificate"
                    ));
                }
                names
                    .iter()
                    .filter_map(|n| match server_name_pattern(n) {
                        Ok(n) => Some(n),
                        Err(why) => {
                            cx.error(format!("{key}.names: {n:?} {why}"));
                            None
                        }
                    })
                    .collect()
            });
            certificates.push(TlsCertificate { cert: cx.path(&rc.cert), key: cx.path(&rc.key), names });
        }
        let tls = Tls { cert: raw.tls.cert.map(|p| cx.path(&p)), key: raw.tls.key.map(|p| cx.path(&p)), certificates };
        if tls.cert.is_some() != tls.key.is_some() {
            cx.error(
                "tls.cert and tls.key go together: set both (PEM certificate chain and its private key) or neither"
                    .into(),
            );
        }

        let mut listeners = Vec::new();
        if raw.listeners.is_empty() {
            cx.error("no [[listeners]]: add at least one, e.g. address = \"127.0.0.1:2525\", tls = \"none\"".into());
        }
        for (i, rl) in raw.listeners.into_iter().enumerate() {
            let name = rl.name.unwrap_or_else(|| format!("listener{}", i + 1));
            let key = format!("listeners[{i}] ({name})");
            let address = match rl.address.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    cx.error(format!(
                        "{key}.address = {:?} is not IP:PORT, e.g. \"0.0.0.0:587\" or \"[::]:465\"",
                        rl.address
                    ));
                    continue;
                }
            };
            let tls_mode = rl.tls.unwrap_or(TlsMode::None);
            let mut trusted = Vec::new();
            for n in &rl.trusted_networks {
                match parse_net(n) {
                    Some(net) => trusted.push(net),
                    None => cx.error(format!(
                        "{key}.trusted_networks: {n:?} is not a CIDR like \"127.0.0.0/8\" or an IP address"
                    )),
                }
            }
            let auth_without_tls = rl.auth_without_tls.unwrap_or(false);
            if auth_without_tls && !address.ip().is_loopback() {
                cx.error(format!(
                    "{key}.auth_without_tls = true is only allowed on a loopback address: passwords would cross the network in clear text; use tls = \"starttls\" or \"implicit\""
                ));
            }
            let require_auth = rl.require_auth.unwrap_or(tls_mode != TlsMode::None);
            if require_auth && tls_mode == TlsMode::None && !auth_without_tls {
                cx.error(format!(
                    "{key}: require_auth = true with tls = \"none\" can never succeed, because AUTH is only offered over TLS; use tls = \"starttls\" or set auth_without_tls = true on a loopback address"
                ));
            }
            let proxy_protocol = rl.proxy_protocol.unwrap_or(false);
            let mut proxy_trusted = Vec::new();
            for n in rl.proxy_trusted.iter().flatten() {
                match parse_net(n) {
                    Some(net) => proxy_trusted.push(net),
                    None => cx.error(format!(
                        "{key}.proxy_trusted: {n:?} is not an IP address or a CIDR range like \"10.0.0.0/8\""
                    )),
                }
            }
            // No default list: whoever may send the header chooses the
            // client address that limits and trusted_networks judge.
            match (proxy_protocol, &rl.proxy_trusted) {
                (true, None) => cx.error(format!(
                    "{key}: proxy_protocol = true needs proxy_trusted, the addresses of your proxies (e.g. [\"127.0.0.1/32\"] for HAProxy on this machine): only they may say who the client is"
                )),
                (true, Some(list)) if list.is_empty() => cx.error(format!(
                    "{key}.proxy_trusted is empty: no proxy could connect; list the addresses of your proxies"
                )),
                (false, Some(_)) => cx.error(format!(
                    "{key}.proxy_trusted is set but proxy_protocol is not: set proxy_protocol = true, or remove proxy_trusted"
                )),
                _ => {}
            }
            if listeners.iter().any(|l: &Listener| l.name == name) {
                cx.error(format!("{key}: the name {name:?} is used twice"));
            }
            listeners.push(Listener {
                name,
                address,
                tls: tls_mode,
                require_auth,
                trusted_networks: trusted,
                auth_without_tls,
                proxy_protocol,
                proxy_trusted,
            });
        }

        let s = raw.sandbox;
        let sandbox = Sandbox {
            call_timeout: Duration::from_millis(s.call_timeout_ms.unwrap_or(CALL_TIMEOUT_MS)),
            memory_limit: s.memory_limit_mb.unwrap_or(MEMORY_LIMIT_MB) * 1024 * 1024,
        };
        if sandbox.call_timeout.is_zero() {
            cx.error("sandbox.call_timeout_ms must be above 0".into());
        }
        if !(1..=4096).contains(&(sandbox.memory_limit / (1024 * 1024))) {
            cx.error("sandbox.memory_limit_mb must be between 1 and 4096".into());
        }

        let mut relays = BTreeMap::new();
        for (name, r) in raw.relays {
            if let Some(relay) = cx.relay(&name, r) {
                relays.insert(name, relay);
            }
        }

        let mut databases = BTreeMap::new();
        for (name, rd) in raw.databases {
            if let Some(db) = cx.database(&name, rd) {
                databases.insert(name, db);
            }
        }

        let mut plugins = Vec::new();
        for (i, rp) in raw.plugins.into_iter().enumerate() {
            let key = format!("plugins[{i}] ({})", rp.name);
            // The name tags the plugin's logs, metrics and counter keys
            // (`<name>:<key>`): a ':' in it could make two plugins share keys.
            if rp.name.is_empty()
                || !rp.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                cx.error(format!("{key}: name {:?}: a plugin name is letters, digits, '-', '_' and '.'", rp.name));
            }
            if plugins.iter().any(|p: &PluginSpec| p.name == rp.name) {
                cx.error(format!("{key}: the name {:?} is used twice; give each plugin entry its own name", rp.name));
            }
            let path = rp.path.as_deref().map(|p| cx.path(p));
            if path.is_none() && !BUILTIN_PLUGINS.contains(&rp.name.as_str()) {
                cx.error(format!(
                    "{key}: no path, and {:?} is not a built-in plugin ({}); set path = \"file.wasm\"",
                    rp.name,
                    BUILTIN_PLUGINS.join(", ")
                ));
            }
            let mut grants = Vec::new();
            let mut plugin_databases: Vec<String> = Vec::new();
            for g in &rp.grants {
                match g.as_str() {
                    "password" => grants.push(Grant::Password),
                    "outbound" => grants.push(Grant::Outbound),
                    "dkim" => grants.push(Grant::Dkim),
                    "counters" => grants.push(Grant::Counters),
                    "sql" => cx.error(format!(
                        "{key}.grants: \"sql\" needs the database it grants: \"sql:NAME\" for a [databases.NAME]{}",
                        known_databases(&databases)
                    )),
                    other => match other.strip_prefix("sql:") {
                        Some(db) if databases.contains_key(db) => {
                            if !grants.contains(&Grant::Sql) {
                                grants.push(Grant::Sql);
                            }
                            if !plugin_databases.iter().any(|d| d == db) {
                                plugin_databases.push(db.to_string());
                            }
                        }
                        Some(db) => cx.error(format!(
                            "{key}.grants: {other:?}: there is no [databases.{db}]{}",
                            known_databases(&databases)
                        )),
                        None => cx.error(format!(
                            "{key}.grants: unknown capability {other:?}; known: \"password\", \"outbound\", \"dkim\", \"counters\", \"sql:NAME\""
                        )),
                    },
                }
            }
            let mut read_dirs = Vec::new();
            for d in &rp.read_dirs {
                let rel = d.trim_matches('/');
                if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == "." || c.is_empty()) {
                    cx.error(format!(
                        "{key}.read_dirs: {d:?} must be a plain folder path below the config folder, like \"auth\""
                    ));
                    continue;
                }
                read_dirs.push((cx.base.join(rel), format!("/{rel}")));
            }
            let cfg = cx.expand_table(&key, rp.config);
            plugins.push(PluginSpec {
                name: rp.name,
                path,
                grants,
                databases: plugin_databases,
                read_dirs,
                config: cfg,
            });
        }

        let dkim = Dkim { keys: cx.path(raw.dkim.keys.as_deref().unwrap_or(DKIM_KEYS)) };

        let q = raw.queue;
        let queue = Queue {
            dir: match q.dir {
                Some(d) => cx.path(&d),
                None => server.state_dir.join(QUEUE_DIR),
            },
            retry_schedule: q
                .retry_schedule_secs
                .unwrap_or_else(|| RETRY_SCHEDULE_SECS.to_vec())
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_age: Duration::from_secs(q.max_age_secs.unwrap_or(MAX_AGE_SECS)),
            concurrency: q.concurrency.unwrap_or(QUEUE_CONCURRENCY),
        };
        if queue.retry_schedule.is_empty() || queue.retry_schedule.iter().any(|d| d.is_zero()) {
            cx.error(
                "queue.retry_schedule_secs must list at least one wait, each above 0, e.g. [60, 300, 900, 3600, 7200]"
                    .into(),
            );
        }
        if queue.concurrency == 0 {
            cx.error("queue.concurrency must be at least 1".into());
        }
        let mut routes = BTreeMap::new();
        for (name, r) in raw.routes {
            if r.relays.is_empty() {
                cx.error(format!("routes.{name}.relays is empty: list the relays to try, in order, e.g. [\"ses\"]"));
            }
            for relay in &r.relays {
                if !relays.contains_key(relay) {
                    cx.error(format!(
                        "routes.{name}.relays: there is no [relays.{relay}]; known relays: {}",
                        relays.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            let sender_domains: Vec<String> =
                r.sender_domains.iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect();
            routes.insert(name, Route { relays: r.relays, sender_domains });
        }

        let admin = Admin {
            address: raw.admin.address.and_then(|a| match a.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    cx.error(format!("admin.address = {a:?} is not an IP address and port, e.g. \"127.0.0.1:2580\""));
                    None
                }
            }),
        };
        if let (Some(admin), Some(l)) =
            (admin.address, listeners.iter().find(|l| Some(l.address) == admin.address && l.address.port() != 0))
        {
            cx.error(format!("admin.address {admin} is also the address of listener {:?}", l.name));
        }

        let sm = raw.sendmail;
        let sendmail = Sendmail {
            listener: cx.string("sendmail.listener", sm.listener),
            domain: cx.string("sendmail.domain", sm.domain).unwrap_or_else(|| server.hostname.clone()),
            from: cx.string("sendmail.from", sm.from),
            user: cx.string("sendmail.user", sm.user),
            password_file: sm.password_file.map(|p| cx.path(&p)),
            timeout: Duration::from_secs(sm.timeout_secs.unwrap_or(SENDMAIL_TIMEOUT_SECS)),
        };
        if let Some(name) = &sendmail.listener {
            if !listeners.iter().any(|l| &l.name == name) {
                cx.error(format!(
                    "sendmail.listener = {name:?}: there is no listener of that name; known: {}",
                    listeners.iter().map(|l| format!("{:?}", l.name)).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if !is_domain_or_literal(&sendmail.domain) || sendmail.domain.starts_with('[') {
            cx.error(format!(
                "sendmail.domain = {:?} is not a domain name; use the domain of this machine's mail, e.g. \"example.com\"",
                sendmail.domain
            ));
        }
        if let Some(from) = &sendmail.from {
            if crate::mail::address::validate_mailbox(from).is_err() {
                cx.error(format!("sendmail.from = {from:?} is not an address like \"cron@example.com\""));
            }
        }
        if sendmail.user.is_some() != sendmail.password_file.is_some() {
            cx.error("sendmail.user and sendmail.password_file go together: set both (for a listener that requires AUTH) or neither".into());
        }
        if sendmail.timeout.is_zero() {
            cx.error("sendmail.timeout_secs must be above 0".into());
        }

        let a = raw.auth_limits;
        let mut exempt_networks = Vec::new();
        for n in a.exempt_networks.iter().flatten() {
            match parse_net(n) {
                Some(net) => exempt_networks.push(net),
                None => cx.error(format!(
                    "auth_limits.exempt_networks: {n:?} is not an IP address or a CIDR range like \"192.0.2.0/24\""
                )),
            }
        }
        let auth_limits = AuthLimits {
            failures_per_ip: a.failures_per_ip.unwrap_or(AUTH_FAILURES_PER_IP),
            failures_per_login: a.failures_per_login.unwrap_or(AUTH_FAILURES_PER_LOGIN),
            failure_window: Duration::from_secs(a.failure_window_secs.unwrap_or(AUTH_FAILURE_WINDOW_SECS)),
            ban: Duration::from_secs(a.ban_secs.unwrap_or(AUTH_BAN_SECS)),
            failure_delay: Duration::from_millis(a.failure_delay_ms.unwrap_or(AUTH_FAILURE_DELAY_MS)),
            max_failure_delay: Duration::from_millis(a.max_failure_delay_ms.unwrap_or(AUTH_MAX_FAILURE_DELAY_MS)),
            exempt_networks,
        };
        let longest = MAX_COUNTER_WINDOW;
        for (key, d) in
            [("auth_limits.failure_window_secs", auth_limits.failure_window), ("auth_limits.ban_secs", auth_limits.ban)]
        {
            if d.is_zero() || d > longest {
                cx.error(format!("{key} must be between 1 and {} (31 days)", longest.as_secs()));
            }
        }
        if auth_limits.max_failure_delay > Duration::from_secs(60) {
            cx.error(
                "auth_limits.max_failure_delay_ms must be at most 60000: clients give up on slower replies".into(),
            );
        }

        let c = raw.counters;
        let counters = Counters {
            redis: cx.string("counters.redis", c.redis).map(RedisUrl),
            prefix: c.prefix.unwrap_or_else(|| COUNTERS_PREFIX.into()),
            timeout: Duration::from_millis(c.timeout_ms.unwrap_or(COUNTERS_TIMEOUT_MS)),
            on_redis_error: c.on_redis_error.unwrap_or(OnRedisError::Local),
            max_keys: c.max_keys.unwrap_or(COUNTERS_MAX_KEYS),
        };
        if let Some(url) = &counters.redis {
            if let Err(e) = redis::Client::open(url.as_str()) {
                cx.error(format!(
                    "counters.redis: {e}; use a URL like \"redis://127.0.0.1:6379/0\" (\"redis://:PASSWORD@host:6379/0\" with a password)"
                ));
            }
        }
        if counters.timeout.is_zero() || counters.timeout > Duration::from_secs(10) {
            cx.error("counters.timeout_ms must be between 1 and 10000".into());
        }
        if counters.max_keys < 1000 {
            cx.error(format!("counters.max_keys = {} is below the minimum of 1000", counters.max_keys));
        }

        let p = raw.passwords;
        let passwords = crate::password::Settings {
            workers: p.workers.unwrap_or(0),
            cache: p.cache.unwrap_or(true),
            cache_size: p.cache_size.unwrap_or(PASSWORD_CACHE_SIZE),
            cache_ttl: Duration::from_secs(p.cache_ttl_secs.unwrap_or(PASSWORD_CACHE_TTL_SECS)),
        };
        if passwords.workers > 256 {
            cx.error(format!(
                "passwords.workers = {} is too many: 0 (one per CPU) or up to the CPU count",
                passwords.workers
            ));
        }
        if passwords.cache && passwords.cache_size == 0 {
            cx.error("passwords.cache_size must be above 0 (or set passwords.cache = false)".into());
        }
        if passwords.cache
            && (passwords.cache_ttl.is_zero() || passwords.cache_ttl > Duration::from_secs(7 * 24 * 3600))
        {
            cx.error("passwords.cache_ttl_secs must be between 1 and 604800 (a week)".into());
        }

        Config {
            file: cx.file.to_path_buf(),
            server,
            limits,
            tls,
            listeners,
            sandbox,
            plugins,
            relays,
            dkim,
            queue,
            routes,
            admin,
            sendmail,
            auth_limits,
            counters,
            passwords,
            databases,
        }
    }
}
