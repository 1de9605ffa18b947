//! `mailferry user` (and what `hash-password` shares with it): users in
//! the users file of auth-flat-file, or in mailferry's own table in a
//! database.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Subcommand;

use super::{block_on, load_config_for_admin, read_password, ConfigArg};
use crate::{password, sql, users};

/// Where `mailferry user` keeps users.
#[derive(clap::Args)]
pub(super) struct UserStoreArg {
    /// Work on mailferry's users table in this `[databases.NAME]` (one with
    /// `migrate = true`). Without it: the auth-flat-file users file if that
    /// plugin is configured, else the one database with `migrate = true`.
    #[arg(long)]
    pub(super) database: Option<String>,
    #[command(flatten)]
    pub(super) config: ConfigArg,
}

#[derive(Subcommand)]
pub(super) enum UserCmd {
    /// Add a user.
    Add {
        login: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: UserStoreArg,
    },
    /// Change a user's password.
    Passwd {
        login: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: UserStoreArg,
    },
    /// Remove a user.
    Remove {
        login: String,
        #[command(flatten)]
        store: UserStoreArg,
    },
    /// List users and their hash schemes.
    List {
        #[command(flatten)]
        store: UserStoreArg,
    },
    /// Let a user log in again (database only).
    Enable {
        login: String,
        #[command(flatten)]
        store: UserStoreArg,
    },
    /// Keep a user from logging in without removing it (database only).
    Disable {
        login: String,
        #[command(flatten)]
        store: UserStoreArg,
    },
}

/// Where `mailferry user` works.
enum UserStore {
    File(PathBuf),
    Database(Arc<sql::Database>),
}

impl UserStore {
    fn open(arg: &UserStoreArg) -> Result<UserStore> {
        let config = load_config_for_admin(&arg.config.path())?;
        let managed: Vec<&String> = config.databases.iter().filter(|(_, d)| d.migrate).map(|(n, _)| n).collect();
        let name = match &arg.database {
            Some(name) => {
                let db = config.databases.get(name).with_context(|| {
                    format!("--database {name}: there is no [databases.{name}] in {}", config.file.display())
                })?;
                anyhow::ensure!(
                    db.migrate,
                    "--database {name}: mailferry only reads that database (migrate is not true); `mailferry user` manages mailferry's own users table, in a database with migrate = true"
                );
                name.clone()
            }
            None if config.plugins.iter().any(|p| p.name == "auth-flat-file") || managed.is_empty() => {
                return Ok(UserStore::File(users::users_file(&config).context(
                    "or keep users in a database: [databases.NAME] with migrate = true, and --database NAME",
                )?));
            }
            None if managed.len() == 1 => managed[0].clone(),
            None => anyhow::bail!(
                "several databases hold users ({}): pass --database NAME",
                managed.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            ),
        };
        Ok(UserStore::Database(Arc::new(sql::Database::new(&name, config.databases[&name].clone()))))
    }

    fn describe(&self) -> String {
        match self {
            UserStore::File(path) => path.display().to_string(),
            UserStore::Database(db) => format!("database {} ({})", db.name, db.config.kind.label()),
        }
    }
}

pub(super) fn run(action: UserCmd) -> Result<()> {
    match action {
        UserCmd::Add { login, password_stdin, store } => {
            let store = UserStore::open(&store)?;
            users::validate_login(&login)?;
            let hash = password::hash(&read_password(password_stdin)?).map_err(anyhow::Error::msg)?;
            match &store {
                UserStore::File(path) => users::set(path, &login, &hash, false)?,
                UserStore::Database(db) => block_on(sql::users::add(db, &login, &hash))?,
            }
            println!("added {login} to {}", store.describe());
        }
        UserCmd::Passwd { login, password_stdin, store } => {
            let store = UserStore::open(&store)?;
            let hash = password::hash(&read_password(password_stdin)?).map_err(anyhow::Error::msg)?;
            match &store {
                UserStore::File(path) => users::set(path, &login, &hash, true)?,
                UserStore::Database(db) => block_on(sql::users::set_password(db, &login, &hash))?,
            }
            println!("changed the password of {login} in {}", store.describe());
        }
        UserCmd::Remove { login, store } => {
            let store = UserStore::open(&store)?;
            match &store {
                UserStore::File(path) => users::remove(path, &login)?,
                UserStore::Database(db) => block_on(sql::users::remove(db, &login))?,
            }
            println!("removed {login} from {}", store.describe());
        }
        UserCmd::List { store } => match UserStore::open(&store)? {
            UserStore::File(path) => {
                for (login, scheme) in users::list(&path)? {
                    println!("{login}\t{scheme}");
                }
            }
            UserStore::Database(db) => {
                let listed = block_on(sql::users::list(&db))?;
                for u in listed {
                    println!("{}\t{}{}", u.login, u.scheme, if u.active { "" } else { "\tdisabled" });
                }
            }
        },
        UserCmd::Enable { login, store } => set_active(&login, &store, true)?,
        UserCmd::Disable { login, store } => set_active(&login, &store, false)?,
    }
    Ok(())
}

fn set_active(login: &str, store: &UserStoreArg, active: bool) -> Result<()> {
    match UserStore::open(store)? {
        UserStore::File(path) => anyhow::bail!(
            "{} has no way to disable a user: remove the user instead, or keep users in a database (--database NAME)",
            path.display()
        ),
        UserStore::Database(db) => {
            block_on(sql::users::set_active(&db, login, active))?;
            println!(
                "{} {login} in database {} ({})",
                if active { "enabled" } else { "disabled" },
                db.name,
                db.config.kind.label()
            );
        }
    }
    Ok(())
}
