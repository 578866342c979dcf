//! Sending one mail: over SMTP in production, into `.eml` files in development.
//!
//! Requests never call a [`Mailer`]: they queue mail in the database
//! ([`crate::mail_queue`]), and the queue's background sender calls it, so an
//! SMTP outage delays mail but never fails or slows a request.
//!
//! - [`SmtpMailer`]: lettre over tokio, TLS by rustls with the aws-lc-rs
//!   provider (the whole tree stays on one provider) and the webpki roots.
//!   `SMTP_URL` chooses the mode, as lettre reads it: `smtp://host:25`
//!   (plain), `smtp://host:587?tls=required` (STARTTLS, refused if the
//!   server does not offer it), `smtp://host:587?tls=opportunistic`,
//!   `smtps://host:465` (TLS from the first byte); `user:password@` in the
//!   URL turns on authentication (percent-encode special characters). The URL
//!   is never logged: [`SmtpMailer`]'s `Debug` shows the host only.
//! - [`FileMailer`]: writes each mail as `<dir>/<unix time>-<mail id>.eml`
//!   (RFC 5322, readable with any mail client or `cat`), and logs the file
//!   name and recipient, never the body, which holds a link with a token.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Body, Message};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Tokio1Executor};
use uuid::Uuid;

pub use lettre::message::Mailbox;

/// One mail to send: plain text, one recipient.
pub struct OutgoingMail<'a> {
    /// Also the `Message-ID`, so a retried mail is recognisably the same.
    pub mail_id: Uuid,
    pub from: &'a Mailbox,
    pub to: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
}

/// Why a mail was not sent. The text comes from the transport (an SMTP reply,
/// an I/O error), never from the message, so it is safe to log and store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MailError(pub String);

/// Something that delivers mail.
#[async_trait::async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug {
    /// Hands `mail` over for delivery (to the SMTP server, or to a file).
    ///
    /// # Errors
    /// [`MailError`] when it was not handed over; the queue retries.
    async fn send(&self, mail: &OutgoingMail<'_>) -> Result<(), MailError>;
}

/// Parses a `MAIL_FROM` value: `no-reply@example.com` or `Name <no-reply@example.com>`.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_mailbox(raw: &str) -> Result<Mailbox, String> {
    raw.trim().parse::<Mailbox>().map_err(|e| format!("`{}` is not a mail address ({e})", raw.trim()))
}

/// The RFC 5322 message for `mail`.
///
/// # Errors
/// [`MailError`] when the recipient is not a valid address.
pub fn build_message(mail: &OutgoingMail<'_>) -> Result<Message, MailError> {
    let to: Mailbox = mail.to.parse().map_err(|e| MailError(format!("invalid recipient: {e}")))?;
    let domain = mail.from.email.domain();
    let body = seven_bit(mail.body).unwrap_or_else(|| Body::new(mail.body.to_owned()));
    Message::builder()
        .message_id(Some(format!("<{}@{domain}>", mail.mail_id)))
        .from(mail.from.clone())
        .to(to)
        .subject(mail.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| MailError(format!("could not build the message: {e}")))
}

/// `text` as a 7bit body, if it is printable ASCII in lines of at most 998
/// characters (RFC 5322 §2.1.1). That keeps a link on one line, readable and
/// copyable from the raw message, where lettre would choose quoted-printable
/// (which breaks lines at 76) for any line longer than 76.
fn seven_bit(text: &str) -> Option<Body> {
    let printable = |l: &str| l.len() <= 998 && l.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t');
    if !text.lines().all(printable) {
        return None;
    }
    let mut crlf = text.lines().collect::<Vec<_>>().join("\r\n");
    crlf.push_str("\r\n");
    Some(Body::dangerous_pre_encoded(crlf.into_bytes(), lettre::message::header::ContentTransferEncoding::SevenBit))
}

/// Delivers through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `scheme://host:port`, without credentials: what logs may show.
    server: String,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer").field("server", &self.server).finish_non_exhaustive()
    }
}

/// How long one SMTP conversation may take before it counts as failed.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

impl SmtpMailer {
    /// A mailer for `SMTP_URL` (see the module docs for the forms).
    ///
    /// # Errors
    /// A message naming the problem, without the URL's credentials.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.trim())
            .map_err(|e| format!("not a valid smtp://, smtps:// or smtp://…?tls=required|opportunistic URL ({e})"))?;
        let transport = builder.timeout(Some(SMTP_TIMEOUT)).build();
        Ok(Self { transport, server: without_credentials(url.trim()) })
    }

    /// `scheme://host:port` of the server, without credentials.
    pub fn server(&self) -> &str {
        &self.server
    }
}

/// `url` without its `user:password@` part.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "(unparsable)".to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{}", &rest[authority_end..].split('#').next().unwrap_or_default())
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &OutgoingMail<'_>) -> Result<(), MailError> {
        let message = build_message(mail)?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| MailError(e.to_string()))
    }
}

/// Writes mail into a directory (development).
#[derive(Debug, Clone)]
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    /// Writes into `dir`, created on the first mail.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[async_trait::async_trait]
impl Mailer for FileMailer {
    async fn send(&self, mail: &OutgoingMail<'_>) -> Result<(), MailError> {
        let bytes = build_message(mail)?.formatted();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let path = self.dir.join(format!("{now}-{}.eml", mail.mail_id));
        // Written under a temporary name, then renamed: a reader never sees half a mail.
        let partial = self.dir.join(format!(".{}.eml.partial", mail.mail_id));
        let io = |e: std::io::Error| MailError(format!("could not write to {}: {e}", self.dir.display()));
        tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
        tokio::fs::write(&partial, bytes).await.map_err(io)?;
        tokio::fs::rename(&partial, &path).await.map_err(io)?;
        tracing::info!(to = mail.to, subject = mail.subject, file = %path.display(), "mail written (development mailer)");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_description() {
        assert_eq!(
            without_credentials("smtp://user:s3cret@mail.example.com:587?tls=required"),
            "smtp://mail.example.com:587?tls=required"
        );
        assert_eq!(without_credentials("smtps://mail.example.com"), "smtps://mail.example.com");
        let mailer = SmtpMailer::from_url("smtp://u:pa%40ss@127.0.0.1:2525").unwrap();
        assert!(!format!("{mailer:?}").contains("pa%40ss"));
    }

    #[test]
    fn bad_urls_are_refused() {
        for bad in ["http://mail.example.com", "mail.example.com", "smtp://host?tls=sometimes"] {
            assert!(SmtpMailer::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_long_link_stays_on_one_line() {
        let from = parse_mailbox("Gatehouse <no-reply@example.com>").unwrap();
        let link = format!("http://localhost:8080/reset-password#token={}", "A".repeat(43));
        let body = format!("Hello,\n\n{link}\n");
        let mail = OutgoingMail { mail_id: Uuid::nil(), from: &from, to: "a@example.com", subject: "S", body: &body };
        let raw = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
        assert!(raw.contains(&link), "{raw}");
        assert!(raw.contains("Message-ID: <00000000-0000-0000-0000-000000000000@example.com>"), "{raw}");
        assert!(parse_mailbox("not an address").is_err());
    }
}
