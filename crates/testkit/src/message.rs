//! The messages tests send: one builder, so every suite sends the same
//! well-formed mail and differs only where a test says so.

use milter::client::Message;

/// A message from Alice at example.com to Bob at example.org with
/// `subject` (also the Message-ID's local part), `extra_headers` (whole
/// CRLF-terminated lines, or empty) after the usual five, and `body` as
/// given.
pub fn alice_to_bob_with(subject: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\n\
         To: Bob <bob@example.org>\r\n\
         Subject: {subject}\r\n\
         Date: Sat, 22 Nov 2025 10:00:00 +0000\r\n\
         Message-ID: <{subject}@example.com>\r\n\
         {extra_headers}\
         \r\n\
         {body}"
    )
    .into_bytes()
}

/// [`alice_to_bob_with`] and a short body whose second line starts with a
/// dot (so SMTP dot-stuffing is exercised) and that ends in an empty line.
pub fn alice_to_bob(subject: &str) -> Vec<u8> {
    alice_to_bob_with(
        subject,
        "",
        "Hello Bob,\r\n.a line that starts with a dot\r\n\r\n",
    )
}

/// The load client's message (see `milter_bench::message::generate`): a
/// plain-text message of `body_size` bytes in the milter protocol's form.
pub fn load_test(sender: &str, recipient: &str, body_size: usize) -> Message {
    milter_bench::message::generate(sender, recipient, body_size)
}
