//! The sendmail command line (`sendmail::args::parse`), getopt's grammar
//! by hand. Input: the arguments after the program name, separated by NUL
//! (each taken as UTF-8, lossily, as Rust's command line hands them over).
//!
//! Checks, beyond "no panic":
//! - every recipient is one of the arguments as written, in order;
//! - every value (`-f`, `-F`, `-C`) is an argument or the tail of one;
//! - `-F` never leaves a blank full name;
//! - appending `-- someone` to an accepted command line adds the recipient
//!   last and changes nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry::sendmail::args::{parse, Args};

fuzz_target!(|data: &[u8]| {
    let argv: Vec<String> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
    };
    let Ok(a) = parse(&argv) else { return };
    check(&argv, &a);

    let mut more = argv.clone();
    more.extend(["--".to_string(), "someone@example.org".to_string()]);
    let b = parse(&more).expect("an accepted command line with -- appended is refused");
    assert_eq!(b.recipients.last().map(String::as_str), Some("someone@example.org"));
    assert!(b.recipients.starts_with(&a.recipients), "{:?} then {:?}", a.recipients, b.recipients);
    let extra = b.recipients.len() - a.recipients.len();
    assert!(extra == 1 || extra == 2 && b.recipients[a.recipients.len()] == "--", "{:?}", b.recipients);
    assert_eq!(Args { recipients: a.recipients.clone(), ..b }, a, "-- changed more than the recipients");
});

fn check(argv: &[String], a: &Args) {
    // Recipients are arguments, in their order.
    let mut from = 0;
    for r in &a.recipients {
        let i = argv[from..].iter().position(|x| x == r).unwrap_or_else(|| panic!("recipient {r:?} is no argument"));
        from += i + 1;
    }
    for v in
        [a.sender.as_deref(), a.full_name.as_deref(), a.config.as_ref().and_then(|p| p.to_str())].into_iter().flatten()
    {
        assert!(argv.iter().any(|x| x.ends_with(v)), "value {v:?} is in no argument");
    }
    if let Some(name) = &a.full_name {
        assert!(!name.trim().is_empty(), "blank full name");
    }
}
