use super::*;

fn smtpapi() -> Vec<(String, String)> {
    vec![("X-SMTPAPI".to_string(), crate::config::SENDGRID_SMTPAPI.to_string())]
}

#[test]
fn extra_headers_go_on_top_and_leave_the_message_intact() {
    let msg = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com;\r\n b=abc\r\nFrom: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
    let out = with_extra_headers(msg, &smtpapi());
    let expected_head = format!("X-SMTPAPI: {}\r\n", crate::config::SENDGRID_SMTPAPI);
    assert!(out.starts_with(expected_head.as_bytes()), "{}", String::from_utf8_lossy(&out));
    assert_eq!(&out[expected_head.len()..], &msg[..], "the signed message follows byte for byte");
}

#[test]
fn several_headers_keep_their_order() {
    let headers = vec![("X-A".to_string(), "1".to_string()), ("X-B".to_string(), "2".to_string())];
    let out = with_extra_headers(b"Subject: s\r\n\r\nb\r\n", &headers);
    assert_eq!(out, b"X-A: 1\r\nX-B: 2\r\nSubject: s\r\n\r\nb\r\n");
}

#[test]
fn a_field_the_sender_set_wins() {
    let msg = b"From: a@example.com\r\nx-smtpapi : {\"category\":[\"x\"]}\r\n\r\nbody\r\n";
    assert_eq!(with_extra_headers(msg, &smtpapi()), msg.to_vec());
}

#[test]
fn only_the_header_section_counts() {
    // The name in the body (after the empty line) or in a folded line is not a field.
    let msg = b"Subject: s\r\n X-SMTPAPI: folded\r\n\r\nX-SMTPAPI: in the body\r\n";
    let out = with_extra_headers(msg, &smtpapi());
    assert!(out.starts_with(b"X-SMTPAPI: {"), "{}", String::from_utf8_lossy(&out));
    assert!(out.ends_with(msg));
}

#[test]
fn values_cannot_inject_lines_and_bad_names_are_dropped() {
    let headers = vec![
        ("X-Ok".to_string(), "a\r\nBcc: evil@example.net".to_string()),
        ("Bad Name".to_string(), "x".to_string()),
        ("Bad:Name".to_string(), "x".to_string()),
        (String::new(), "x".to_string()),
    ];
    let out = with_extra_headers(b"Subject: s\r\n\r\n", &headers);
    assert_eq!(out, b"X-Ok: a  Bcc: evil@example.net\r\nSubject: s\r\n\r\n");
}

#[test]
fn no_headers_no_change() {
    let msg = b"Subject: s\r\n\r\nbody\r\n";
    assert_eq!(with_extra_headers(msg, &[]), msg.to_vec());
}
