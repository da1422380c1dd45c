//! A loopback SMTP server speaking the part of real SMTP an email notification
//! uses: EHLO (advertising STARTTLS and AUTH as configured), a STARTTLS upgrade
//! with a certificate signed by a CA of its own, AUTH PLAIN and LOGIN, MAIL
//! FROM, RCPT TO, DATA, RSET, NOOP and QUIT.
//!
//! It records every message (envelope, headers, body), every login attempt
//! (credentials and whether TLS was on at the time) and every command line,
//! AUTH continuation lines included, so a test can tell what crossed the wire
//! in clear. The CA certificate is written to a PEM file for
//! `KITT_SMTP_CA_FILE`. Like `server.rs`, it runs on its own thread and
//! runtime, and dropping the handle stops it.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::server::lock;

/// What the server offers.
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    /// Advertise and accept STARTTLS.
    pub starttls: bool,
    /// AUTH mechanisms advertised, such as `["PLAIN", "LOGIN"]`; none when empty.
    pub mechanisms: Vec<&'static str>,
    /// The one user and password accepted; when set, MAIL needs a login first.
    pub login: Option<(String, String)>,
}

impl SmtpOptions {
    /// STARTTLS and AUTH PLAIN LOGIN, accepting `user` with `password`.
    pub fn submission(user: &str, password: &str) -> Self {
        Self {
            starttls: true,
            mechanisms: vec!["PLAIN", "LOGIN"],
            login: Some((user.to_owned(), password.to_owned())),
        }
    }

    /// No STARTTLS and no AUTH: an open relay on a trusted network.
    pub fn plain_relay() -> Self {
        Self { starttls: false, mechanisms: Vec::new(), login: None }
    }
}

/// One message received.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The MAIL FROM address.
    pub from: String,
    /// The RCPT TO addresses.
    pub to: Vec<String>,
    /// Header fields in order, unfolded.
    pub headers: Vec<(String, String)>,
    /// The body with CRLF turned into `\n` and the final line break dropped.
    pub body: String,
    /// Whether the message came over TLS.
    pub tls: bool,
}

impl Mail {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(field, _)| field.eq_ignore_ascii_case(name));
        found.map(|(_, value)| value.as_str())
    }
}

/// One AUTH attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: String,
    pub user: String,
    pub password: String,
    /// Whether TLS was on when the credentials arrived.
    pub tls: bool,
    /// Whether the server accepted them.
    pub accepted: bool,
}

/// One line the client sent outside DATA.
#[derive(Debug, Clone)]
pub struct Line {
    pub text: String,
    pub tls: bool,
}

#[derive(Default)]
struct Record {
    mails: Vec<Mail>,
    logins: Vec<Login>,
    lines: Vec<Line>,
}

/// A running SMTP server; stops when dropped.
pub struct FakeSmtp {
    port: u16,
    ca_file: PathBuf,
    record: Arc<Mutex<Record>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeSmtp {
    /// Binds a loopback port and serves; the CA certificate is written to `ca_file`.
    pub fn start(options: SmtpOptions, ca_file: &Path) -> Self {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("make the listener non-blocking");
        let port = listener.local_addr().expect("read the bound address").port();

        let acceptor = tls_acceptor(ca_file);
        let record = Arc::new(Mutex::new(Record::default()));
        let context = Arc::new(Context { options, acceptor, record: Arc::clone(&record) });
        let (shutdown, stop) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("fake-smtp-{port}"))
            .spawn(move || serve(listener, context, stop))
            .expect("spawn the fake SMTP thread");

        let ca_file = ca_file.to_owned();
        Self { port, ca_file, record, shutdown: Some(shutdown), thread: Some(thread) }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Messages received, in order.
    pub fn mails(&self) -> Vec<Mail> {
        lock(&self.record).mails.clone()
    }

    /// AUTH attempts, in order.
    pub fn logins(&self) -> Vec<Login> {
        lock(&self.record).logins.clone()
    }

    /// Every line the client sent outside DATA, in order.
    pub fn lines(&self) -> Vec<Line> {
        lock(&self.record).lines.clone()
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Context {
    options: SmtpOptions,
    acceptor: TlsAcceptor,
    record: Arc<Mutex<Record>>,
}

/// A CA, a server certificate it signs for 127.0.0.1 and localhost, and the
/// acceptor presenting it; the CA certificate goes to `ca_file`.
fn tls_acceptor(ca_file: &Path) -> TlsAcceptor {
    let ca_key = KeyPair::generate().expect("generate the CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "kitt test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_certificate = ca.self_signed(&ca_key).expect("self-sign the CA");
    std::fs::write(ca_file, ca_certificate.pem()).expect("write the CA certificate");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("generate the server key");
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let mut server = CertificateParams::new(names).expect("server parameters");
    server.distinguished_name.push(DnType::CommonName, "fake-smtp");
    let certificate = server.signed_by(&key, &issuer).expect("sign the server certificate");

    let provider = Arc::new(aws_lc_rs::default_provider());
    let private_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate.der().clone()], private_key)
        .expect("server TLS config");
    TlsAcceptor::from(Arc::new(config))
}

/// Accepts connections until `stop` fires; dropping the runtime ends open ones.
fn serve(listener: StdListener, context: Arc<Context>, mut stop: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the fake SMTP runtime");
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("adopt the listener");
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(conversation(stream, Arc::clone(&context)));
                    }
                }
                _ = &mut stop => break,
            }
        }
    });
}

/// How a session ended.
enum Ending {
    /// The client asked for STARTTLS and was told to go ahead.
    StartTls,
    /// QUIT, end of stream, or an I/O error.
    Closed,
}

/// One client connection: a plain session, then a TLS one after STARTTLS.
async fn conversation(stream: TcpStream, context: Arc<Context>) {
    let mut plain = BufReader::new(stream);
    if reply(&mut plain, "220 fake-smtp ESMTP ready").await.is_err() {
        return;
    }
    let Ending::StartTls = session(&mut plain, &context, false).await else {
        return;
    };

    // Anything the client pipelined after STARTTLS is dropped, as RFC 3207 requires.
    let Ok(stream) = context.acceptor.accept(plain.into_inner()).await else {
        return;
    };
    session(&mut BufReader::new(stream), &context, true).await;
}

/// The transaction state of one session; STARTTLS starts a new one.
#[derive(Default)]
struct Session {
    authenticated: bool,
    from: Option<String>,
    to: Vec<String>,
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    context: &Context,
    tls: bool,
) -> Ending {
    let mut state = Session::default();
    loop {
        let Some(line) = command_line(io, context, tls).await else {
            return Ending::Closed;
        };
        let (verb, argument) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let verb = verb.to_ascii_uppercase();

        let answer = match verb.as_str() {
            "EHLO" => ehlo(&context.options, tls),
            "HELO" => "250 fake-smtp".to_owned(),
            "STARTTLS" if context.options.starttls && !tls => {
                if reply(io, "220 2.0.0 Ready to start TLS").await.is_err() {
                    return Ending::Closed;
                }
                return Ending::StartTls;
            }
            "AUTH" => auth(io, context, tls, argument, &mut state).await,
            "MAIL" if context.options.login.is_some() && !state.authenticated => {
                "530 5.7.0 Authentication required".to_owned()
            }
            "MAIL" => {
                state.from = Some(address(argument));
                state.to.clear();
                "250 2.1.0 OK".to_owned()
            }
            "RCPT" if state.from.is_none() => "503 5.5.1 MAIL first".to_owned(),
            "RCPT" => {
                state.to.push(address(argument));
                "250 2.1.5 OK".to_owned()
            }
            "DATA" if state.to.is_empty() => "503 5.5.1 RCPT first".to_owned(),
            "DATA" => match data(io, context, tls, &mut state).await {
                Some(answer) => answer,
                None => return Ending::Closed,
            },
            "RSET" => {
                state.from = None;
                state.to.clear();
                "250 2.0.0 OK".to_owned()
            }
            "NOOP" => "250 2.0.0 OK".to_owned(),
            "QUIT" => {
                let _ = reply(io, "221 2.0.0 Bye").await;
                return Ending::Closed;
            }
            _ => "502 5.5.2 Command not implemented".to_owned(),
        };
        if reply(io, &answer).await.is_err() {
            return Ending::Closed;
        }
    }
}

/// The EHLO answer; STARTTLS is only offered before TLS is on.
fn ehlo(options: &SmtpOptions, tls: bool) -> String {
    let mut lines = vec!["fake-smtp greets you".to_owned()];
    if options.starttls && !tls {
        lines.push("STARTTLS".to_owned());
    }
    if !options.mechanisms.is_empty() {
        lines.push(format!("AUTH {}", options.mechanisms.join(" ")));
    }
    lines.push("HELP".to_owned());

    let last = lines.len() - 1;
    let numbered = lines.iter().enumerate().map(|(i, line)| {
        let separator = if i == last { ' ' } else { '-' };
        format!("250{separator}{line}")
    });
    numbered.collect::<Vec<_>>().join("\r\n")
}

/// Runs one AUTH exchange and records the credentials received.
async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    context: &Context,
    tls: bool,
    argument: &str,
    state: &mut Session,
) -> String {
    let (mechanism, initial) = argument.split_once(' ').unwrap_or((argument, ""));
    let mechanism = mechanism.to_ascii_uppercase();
    if !context.options.mechanisms.contains(&mechanism.as_str()) {
        return "504 5.5.4 Unrecognized authentication type".to_owned();
    }

    let credentials = match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                "" => challenge(io, context, tls, "").await,
                given => Some(given.to_owned()),
            };
            response.and_then(|response| {
                let decoded = decode(&response)?;
                let mut parts = decoded.split('\0').skip(1);
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            })
        }
        _ => {
            let user = match initial {
                "" => challenge(io, context, tls, "VXNlcm5hbWU6").await,
                given => Some(given.to_owned()),
            };
            let user = user.and_then(|user| decode(&user));
            let password = challenge(io, context, tls, "UGFzc3dvcmQ6").await;
            user.zip(password.and_then(|password| decode(&password)))
        }
    };
    let Some((user, password)) = credentials else {
        return "501 5.5.2 Cannot decode the response".to_owned();
    };

    let accepted = context.options.login.as_ref() == Some(&(user.clone(), password.clone()));
    state.authenticated = accepted;
    lock(&context.record).logins.push(Login { mechanism, user, password, tls, accepted });
    if accepted {
        "235 2.7.0 Authentication successful".to_owned()
    } else {
        "535 5.7.8 Authentication credentials invalid".to_owned()
    }
}

/// Sends a `334` challenge and reads the client's response line.
async fn challenge<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    context: &Context,
    tls: bool,
    prompt: &str,
) -> Option<String> {
    reply(io, &format!("334 {prompt}")).await.ok()?;
    command_line(io, context, tls).await
}

/// Reads the message after DATA up to the lone `.`, and stores it.
async fn data<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    context: &Context,
    tls: bool,
    state: &mut Session,
) -> Option<String> {
    reply(io, "354 End data with <CR><LF>.<CR><LF>").await.ok()?;
    let mut lines = Vec::new();
    loop {
        let line = read_line(io).await?;
        if line == "." {
            break;
        }
        // Undo dot-stuffing.
        lines.push(line.strip_prefix('.').map_or(line.clone(), str::to_owned));
    }

    let split = lines.iter().position(String::is_empty).unwrap_or(lines.len());
    let headers = unfold(&lines[..split]);
    let body = lines.get(split + 1..).unwrap_or_default().join("\n");
    let from = state.from.take().unwrap_or_default();
    let to = std::mem::take(&mut state.to);
    lock(&context.record).mails.push(Mail { from, to, headers, body, tls });
    Some("250 2.0.0 OK queued".to_owned())
}

/// Header fields from header lines, continuation lines joined to their field.
fn unfold(lines: &[String]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in lines {
        match fields.last_mut() {
            Some((_, value)) if line.starts_with([' ', '\t']) => {
                value.push(' ');
                value.push_str(line.trim());
            }
            _ => {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                fields.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }
    fields
}

/// The address inside `FROM:<...>` or `TO:<...>`, parameters dropped.
fn address(argument: &str) -> String {
    let inside = argument.split_once('<').and_then(|(_, rest)| rest.split_once('>'));
    inside.map_or(argument, |(address, _)| address).to_owned()
}

fn decode(text: &str) -> Option<String> {
    String::from_utf8(BASE64.decode(text.trim()).ok()?).ok()
}

/// Reads a line and records it; `None` at end of stream.
async fn command_line<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    context: &Context,
    tls: bool,
) -> Option<String> {
    let line = read_line(io).await?;
    lock(&context.record).lines.push(Line { text: line.clone(), tls });
    Some(line)
}

/// One line without its CRLF; `None` at end of stream or on an error.
async fn read_line<S: AsyncRead + AsyncWrite + Unpin>(io: &mut BufReader<S>) -> Option<String> {
    let mut line = String::new();
    match io.read_line(&mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
    }
}

async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    text: &str,
) -> std::io::Result<()> {
    let stream = io.get_mut();
    stream.write_all(format!("{text}\r\n").as_bytes()).await?;
    stream.flush().await
}
