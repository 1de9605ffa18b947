//! sendmail's command line.
//!
//! Programs have called `/usr/sbin/sendmail` with the same flags for forty
//! years, in getopt's grammar: flags cluster (`-ti`), values are attached or
//! separate (`-fuser@x`, `-f user@x`), and `-o` takes a one-letter option name
//! with its value glued on (`-oi`, `-oem`, `-odi`). That grammar is the
//! compatibility surface of this command, and clap would refuse half of it,
//! so it is parsed here by hand. Where sendmail and Postfix differ, Postfix
//! (the common modern reference) is followed: options may follow recipients,
//! and unknown flags are ignored with a warning instead of failing the mail.

use std::path::PathBuf;

/// What the command was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Read a message and submit it (`-bm`, the default).
    Deliver,
    /// Rebuild the aliases database (`-bi`, `-I`, `newaliases`): there is none.
    NewAliases,
    /// `--help`.
    Help,
}

/// `-B`: the body type the message declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub mode: Mode,
    /// `-t`: take recipients from the To:, Cc: and Bcc: fields too.
    pub extract: bool,
    /// `-i`, `-oi`: a line holding a single `.` does not end the message.
    pub ignore_dots: bool,
    /// `-f`, `-r`: the envelope sender, as written.
    pub sender: Option<String>,
    /// `-F`: the sender's full name, for a From: field we add.
    pub full_name: Option<String>,
    /// `-B`.
    pub body: Option<BodyType>,
    /// `-v`: report the server's final reply.
    pub verbose: bool,
    /// `-C`, `--config`: the main configuration file.
    pub config: Option<PathBuf>,
    /// Recipient arguments, as written (each may hold a list).
    pub recipients: Vec<String>,
    /// Options ignored with a warning, one line each.
    pub warnings: Vec<String>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            mode: Mode::Deliver,
            extract: false,
            ignore_dots: false,
            sender: None,
            full_name: None,
            body: None,
            verbose: false,
            config: None,
            recipients: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// How one option letter is written.
enum Kind {
    /// Stands alone and may cluster: `-t`, `-ti`.
    Flag,
    /// Takes a value, attached or as the next argument: `-fX`, `-f X`.
    Value,
    /// Takes only an attached value, possibly empty: `-q`, `-q30m`, `-d0.1`.
    Attached,
}

fn kind(letter: char) -> Option<Kind> {
    match letter {
        't' | 'i' | 'v' | 'n' | 'm' | 'c' | 'G' | 'I' | 'U' | 'x' => Some(Kind::Flag),
        'A' | 'B' | 'C' | 'F' | 'L' | 'N' | 'O' | 'R' | 'V' | 'X' | 'b' | 'e' | 'f' | 'h' | 'o' | 'p' | 'r' => {
            Some(Kind::Value)
        }
        'q' | 'd' => Some(Kind::Attached),
        _ => None,
    }
}

/// A usage error: exit 64 with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

/// Parses the arguments after the program name.
pub fn parse(argv: &[String]) -> Result<Args, Usage> {
    let mut a = Args::default();
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        if arg == "--" {
            a.recipients.extend(argv[i..].iter().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some(("config", path)) => a.config = Some(PathBuf::from(path)),
                None if long == "config" => {
                    let path = argv.get(i).ok_or_else(|| Usage("--config needs a file name".into()))?;
                    a.config = Some(PathBuf::from(path));
                    i += 1;
                }
                None if long == "help" => a.mode = Mode::Help,
                _ => a.warnings.push(format!("{arg}: unknown option, ignored")),
            }
            continue;
        }
        // A lone "-" is not an option (getopt); neither is a recipient.
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            a.recipients.push(arg.clone());
            continue;
        };
        for (at, letter) in cluster.char_indices() {
            let rest = &cluster[at + letter.len_utf8()..];
            match kind(letter) {
                Some(Kind::Flag) => a.flag(letter),
                Some(Kind::Value) => {
                    let value = if rest.is_empty() {
                        let v = argv.get(i).ok_or_else(|| Usage(format!("-{letter} needs a value")))?;
                        i += 1;
                        v.clone()
                    } else {
                        rest.to_string()
                    };
                    a.value(letter, value)?;
                    break;
                }
                Some(Kind::Attached) => {
                    a.attached(letter, rest)?;
                    break;
                }
                None => {
                    // It may take a value we would misread as flags or a
                    // recipient: the rest of this argument goes with it.
                    a.warnings.push(format!("-{letter}{rest}: unknown option, ignored"));
                    break;
                }
            }
        }
    }
    Ok(a)
}

impl Args {
    fn flag(&mut self, letter: char) {
        match letter {
            't' => self.extract = true,
            'i' => self.ignore_dots = true,
            'v' => self.verbose = true,
            'I' => self.mode = Mode::NewAliases,
            // -n (no aliasing), -m (me too), -c (connection caching), -G
            // (gateway submission), -U (initial submission), -x: nothing to
            // change here.
            _ => {}
        }
    }

    fn value(&mut self, letter: char, value: String) -> Result<(), Usage> {
        match letter {
            'f' | 'r' => self.sender = Some(value),
            'F' => self.full_name = Some(value).filter(|v| !v.trim().is_empty()),
            'C' => self.config = Some(PathBuf::from(value)),
            'B' => {
                self.body = Some(match value.to_ascii_uppercase().as_str() {
                    "7BIT" => BodyType::SevenBit,
                    "8BITMIME" => BodyType::EightBitMime,
                    _ => return Err(Usage(format!("-B {value}: the body type is 7BIT or 8BITMIME"))),
                })
            }
            'b' => self.mode(&value)?,
            'o' => self.option(&value),
            'O' => {
                // The long form of -o: only IgnoreDots changes anything here.
                let (name, v) = value.split_once('=').unwrap_or((&value, "true"));
                if name.trim().eq_ignore_ascii_case("IgnoreDots") {
                    self.ignore_dots = !matches!(v.trim().to_ascii_lowercase().as_str(), "false" | "f" | "no" | "n");
                } else {
                    self.warnings.push(format!("-O {value}: ignored"));
                }
            }
            // -N (DSN notify), -R (DSN return), -V (envelope id / VERP): the
            // server offers no DSN extension, so there is nothing to pass
            // them on to. -A, -e (error mode), -h (hop count), -L (log
            // label), -X (traffic log), -p (protocol): no meaning here.
            _ => {}
        }
        Ok(())
    }

    fn attached(&mut self, letter: char, value: &str) -> Result<(), Usage> {
        match letter {
            'q' => Err(Usage(format!(
                "-q{value}: there is no queue to run here; the server delivers its queue by itself (`mailferry queue retry --all` retries now)"
            ))),
            // -d: sendmail's debug levels.
            _ => Ok(()),
        }
    }

    /// `-bX`: the operation mode.
    fn mode(&mut self, value: &str) -> Result<(), Usage> {
        let refuse = |what: &str| Err(Usage(format!("-b{value}: {what}")));
        match value {
            "m" => self.mode = Mode::Deliver,
            "i" => self.mode = Mode::NewAliases,
            "s" => return refuse(
                "SMTP on standard input is not offered; submit over SMTP to a listener of `mailferry serve` instead",
            ),
            "p" => return refuse("no queue listing here; use `mailferry queue list`"),
            "d" | "D" => return refuse("this command is no daemon; run `mailferry serve`"),
            "v" | "t" | "h" | "H" | "P" | "a" => return refuse("this mode is not supported"),
            _ => return refuse("unknown mode; use -bm (deliver mail, the default)"),
        }
        Ok(())
    }

    /// `-oXvalue`: a sendmail option by its one-letter name.
    fn option(&mut self, value: &str) {
        let mut chars = value.chars();
        match chars.next() {
            Some('i') => {
                // -oi, or -oiFalse/-oi false as some scripts write it.
                let rest = chars.as_str().trim().to_ascii_lowercase();
                self.ignore_dots = !matches!(rest.as_str(), "false" | "f" | "no" | "n");
            }
            // Error mode, delivery mode, me-too, alias file, log level, queue
            // folder, timeouts, 7/8-bit: the server decides these.
            Some('e' | 'd' | 'm' | 'A' | 'L' | 'Q' | 'T' | '7' | '8' | 'B' | 's' | 'c') => {}
            _ => self.warnings.push(format!("-o{value}: ignored")),
        }
    }
}

/// The usage text for `--help`.
pub const HELP: &str = "\
usage: sendmail [options] [recipient ...]

Reads a message on standard input and submits it to the local mailferry server.

  -t            also take recipients from the To:, Cc: and Bcc: fields (Bcc: is removed)
  -i, -oi       a line with a single \".\" does not end the message
  -f SENDER     envelope sender (also -r); names without @ get sendmail.domain
  -F NAME       full name for the From: field added when the message has none
  -B TYPE       body type: 7BIT or 8BITMIME
  -v            print the server's final reply
  -C FILE       the mailferry configuration (also --config FILE, $MAILFERRY_CONFIG)
  --            end of options

Accepted and ignored: -bm -oem -odi -om -N -R -V -e -h -L -X -A -p -n -m -c -G -U -x.
Exit status: 0 sent, 64 usage, 65 bad message, 69 refused or not configured,
74 cannot read the input, 75 temporary failure (try again later).
";

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Args {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn usage(args: &[&str]) -> String {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err().0
    }

    #[test]
    fn cron_invocations() {
        // Debian's cron.
        let a = p(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]);
        assert_eq!(a.full_name.as_deref(), Some("CronDaemon"));
        assert!(a.ignore_dots && !a.extract);
        assert_eq!(a.body, Some(BodyType::EightBitMime));
        assert_eq!(a.recipients, vec!["root"]);
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        // cronie.
        let a = p(&["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"]);
        assert!(a.ignore_dots && a.extract);
        assert_eq!(a.sender.as_deref(), Some("root"));
        assert!(a.recipients.is_empty());
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }

    #[test]
    fn php_and_clusters() {
        let a = p(&["-t", "-i"]);
        assert!(a.extract && a.ignore_dots);
        let a = p(&["-ti"]);
        assert!(a.extract && a.ignore_dots);
        // A value-taking letter ends the cluster and takes the rest, or the
        // next argument.
        let a = p(&["-tifme@example.com", "you@example.org"]);
        assert!(a.extract && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some("me@example.com"));
        assert_eq!(a.recipients, vec!["you@example.org"]);
        let a = p(&["-itf", "me@example.com"]);
        assert_eq!(a.sender.as_deref(), Some("me@example.com"));
        assert!(a.recipients.is_empty());
    }

    #[test]
    fn values_attached_or_separate() {
        assert_eq!(p(&["-fa@x.example"]).sender.as_deref(), Some("a@x.example"));
        assert_eq!(p(&["-f", "a@x.example"]).sender.as_deref(), Some("a@x.example"));
        assert_eq!(p(&["-r", "a@x.example"]).sender.as_deref(), Some("a@x.example"));
        assert_eq!(p(&["-f", ""]).sender.as_deref(), Some(""));
        assert_eq!(p(&["-F", "Cron Daemon"]).full_name.as_deref(), Some("Cron Daemon"));
        assert_eq!(p(&["-F", " "]).full_name, None);
        assert_eq!(p(&["-C", "/etc/mf.toml"]).config, Some(PathBuf::from("/etc/mf.toml")));
        assert_eq!(p(&["-C/etc/mf.toml"]).config, Some(PathBuf::from("/etc/mf.toml")));
        assert_eq!(p(&["--config", "a.toml"]).config, Some(PathBuf::from("a.toml")));
        assert_eq!(p(&["--config=a.toml"]).config, Some(PathBuf::from("a.toml")));
        assert_eq!(p(&["-B", "7bit"]).body, Some(BodyType::SevenBit));
        assert!(usage(&["-f"]).contains("-f needs a value"));
        assert!(usage(&["-B", "binarymime"]).contains("7BIT or 8BITMIME"));
    }

    #[test]
    fn dsn_and_other_meaningless_options_are_accepted_silently() {
        let a = p(&[
            "-N",
            "never",
            "-Rhdrs",
            "-V",
            "envid1",
            "-h",
            "17",
            "-odb",
            "-om",
            "-em",
            "-oA/etc/aliases",
            "-v",
            "-n",
            "-U",
            "a@x.example",
        ]);
        assert_eq!(a.recipients, vec!["a@x.example"]);
        assert!(a.verbose);
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }

    #[test]
    fn ignore_dots_forms() {
        assert!(p(&["-oi"]).ignore_dots);
        assert!(p(&["-o", "i"]).ignore_dots);
        assert!(!p(&["-oiFalse"]).ignore_dots);
        assert!(p(&["-O", "IgnoreDots=true"]).ignore_dots);
        assert!(p(&["-OIgnoreDots"]).ignore_dots);
        assert!(!p(&[]).ignore_dots);
    }

    #[test]
    fn options_may_follow_recipients_and_double_dash_ends_them() {
        let a = p(&["a@x.example", "-oi", "b@x.example"]);
        assert!(a.ignore_dots);
        assert_eq!(a.recipients, vec!["a@x.example", "b@x.example"]);
        let a = p(&["-i", "--", "-odd@x.example", "-t"]);
        assert!(!a.extract);
        assert_eq!(a.recipients, vec!["-odd@x.example", "-t"]);
    }

    #[test]
    fn unknown_options_warn_and_take_their_argument_with_them() {
        let a = p(&["-Zt", "a@x.example"]);
        assert!(!a.extract, "the t belongs to the unknown option");
        assert_eq!(a.recipients, vec!["a@x.example"]);
        assert_eq!(a.warnings, vec!["-Zt: unknown option, ignored"]);
        let a = p(&["-oZ", "--frobnicate", "a@x.example"]);
        assert_eq!(a.warnings, vec!["-oZ: ignored", "--frobnicate: unknown option, ignored"]);
    }

    #[test]
    fn modes() {
        assert_eq!(p(&["-bm", "a@x.example"]).mode, Mode::Deliver);
        assert_eq!(p(&["-bi"]).mode, Mode::NewAliases);
        assert_eq!(p(&["-I"]).mode, Mode::NewAliases);
        assert_eq!(p(&["--help"]).mode, Mode::Help);
        assert!(usage(&["-bs"]).contains("SMTP on standard input is not offered"));
        assert!(usage(&["-bp"]).contains("mailferry queue list"));
        assert!(usage(&["-bd"]).contains("mailferry serve"));
        assert!(usage(&["-bv", "a@x.example"]).contains("not supported"));
        assert!(usage(&["-bz"]).contains("unknown mode"));
        assert!(usage(&["-q"]).contains("mailferry queue retry --all"));
        assert!(usage(&["-q30m"]).starts_with("-q30m: "));
    }
}
