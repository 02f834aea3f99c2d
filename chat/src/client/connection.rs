//! The server connection: typed calls to one concierge server
//! ([`ServerConn`]), how connections are made ([`Connector`]), the
//! JSON-RPC-over-TLS implementation ([`HttpConnector`]), and the client's
//! per-server state (connections, login tokens, postage difficulty).
//!
//! Envelopes, keys and ids cross these traits as bytes and typed values;
//! hex is the JSON-RPC encoding only, decoded (with limits) here.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonrpsee::core::client::Error as RpcError;
use jsonrpsee::http_client::HttpClient;
use xirtam_proofs::{Hash, Name, PublicKey, Signature, encode};

use super::{ClientError, Core, Result};
use crate::api::{self, ConciergeApiClient};
use crate::crypto::MediumKey;
use crate::records::VerifiedServer;

/// Why a call to a server failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The server answered with an error.
    #[error("refused: {message} (code {code})")]
    Refused {
        /// JSON-RPC error code ([`api::code`]).
        code: i32,
        /// Its message.
        message: String,
    },
    /// No answer (connection refused, timeout, TLS failure).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// An answer that does not parse.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// A login: a bearer token and how long it stays valid.
#[derive(Debug, Clone)]
pub struct Login {
    /// The token.
    pub token: String,
    /// Its lifetime.
    pub valid: Duration,
}

/// One lane to read: envelopes after `after` in `mailbox` (acknowledging
/// `after` for this device at the same time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFrom {
    /// The mailbox.
    pub mailbox: Hash,
    /// Last sequence number already processed.
    pub after: u64,
}

/// Envelopes received from one mailbox, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The mailbox.
    pub mailbox: Hash,
    /// `(sequence number, envelope)`.
    pub envelopes: Vec<(u64, Vec<u8>)>,
}

/// Where a hosted group log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    /// Position of the first entry hosted there.
    pub first: u64,
    /// Position of the last entry.
    pub seq: u64,
    /// Its head.
    pub head: Hash,
}

/// One group lane to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReadFrom {
    /// The segment.
    pub segment: Hash,
    /// The epoch's access token.
    pub access: [u8; 32],
    /// Last message sequence number processed.
    pub after: u64,
    /// Last log position processed.
    pub log_after: u64,
}

/// What one group lane gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReceived {
    /// The segment.
    pub segment: Hash,
    /// The log's last position.
    pub log_seq: u64,
    /// `(sequence number, message)`.
    pub messages: Vec<(u64, Vec<u8>)>,
}

fn no_groups() -> CallError {
    CallError::Refused {
        code: api::code::NOT_FOUND,
        message: "this connection does not host groups".into(),
    }
}

/// Typed calls to one concierge server (docs/rpc.md, "Concierge"). Every
/// answer is untrusted: the client checks receipts against the server's
/// verified key and envelopes and keys against verified records.
pub trait ServerConn: Send + Sync + 'static {
    /// Where it is (for errors and logs).
    fn label(&self) -> &str;
    /// `server_info`.
    fn server_info(&self) -> impl Future<Output = Result<api::ServerInfo, CallError>> + Send;
    /// `auth_challenge`: 32 bytes to sign.
    fn auth_challenge(
        &self,
        user: &Name,
    ) -> impl Future<Output = Result<[u8; 32], CallError>> + Send;
    /// `auth_login`.
    fn auth_login(
        &self,
        user: &Name,
        device: &PublicKey,
        challenge: &[u8; 32],
        sig: &Signature,
    ) -> impl Future<Output = Result<Login, CallError>> + Send;
    /// `mailbox_create` (idempotent).
    fn mailbox_create(&self, token: &str) -> impl Future<Output = Result<(), CallError>> + Send;
    /// `mailbox_passes`: register pass hashes.
    fn mailbox_passes(
        &self,
        token: &str,
        add: &[Hash],
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    /// `mailbox_deposit`.
    fn mailbox_deposit(
        &self,
        to: &Name,
        envelope: &[u8],
        pass: Option<&[u8; 32]>,
        postage: Option<api::Postage>,
    ) -> impl Future<Output = Result<api::Receipt, CallError>> + Send;
    /// `mailbox_receive` (long-poll up to `wait`), acknowledging each
    /// cursor.
    fn mailbox_receive(
        &self,
        token: &str,
        from: &[ReadFrom],
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Received>, CallError>> + Send;
    /// `mailbox_ack`.
    fn mailbox_ack(
        &self,
        token: &str,
        mailbox: &Hash,
        up_to: u64,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    /// `keys_publish`.
    fn keys_publish(
        &self,
        token: &str,
        key: &MediumKey,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    /// `keys_fetch`: encoded medium-term keys, unchecked.
    fn keys_fetch(
        &self,
        user: &Name,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, CallError>> + Send;
    /// `link_post`: relay one device-linking message.
    fn link_post(
        &self,
        slot: &Hash,
        side: u8,
        payload: &[u8],
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    /// `link_read`: the messages on `side` of `slot` from index `after` on,
    /// waiting up to `wait` for one.
    fn link_read(
        &self,
        slot: &Hash,
        side: u8,
        after: u32,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, CallError>> + Send;
    /// `group_append`: compare-and-swap on the entry's `prev`.
    fn group_append(
        &self,
        segment: &Hash,
        entry: &[u8],
        anchor: Option<&[u8]>,
    ) -> impl Future<Output = Result<LogHead, CallError>> + Send {
        let _ = (segment, entry, anchor);
        async { Err(no_groups()) }
    }
    /// `group_log`: entries from position `from` on, unchecked.
    fn group_log(
        &self,
        segment: &Hash,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<(LogHead, Vec<Vec<u8>>), CallError>> + Send {
        let _ = (segment, from, limit);
        async { Err(no_groups()) }
    }
    /// `group_post`.
    fn group_post(
        &self,
        segment: &Hash,
        access: &[u8; 32],
        message: &[u8],
    ) -> impl Future<Output = Result<u64, CallError>> + Send {
        let _ = (segment, access, message);
        async { Err(no_groups()) }
    }
    /// `group_receive` (long-poll up to `wait`).
    fn group_receive(
        &self,
        from: &[GroupReadFrom],
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<GroupReceived>, CallError>> + Send {
        let _ = (from, wait);
        async { Err(no_groups()) }
    }
}

/// Makes connections to servers found through verified lookups.
pub trait Connector: Send + Sync + 'static {
    /// The connection type.
    type Conn: ServerConn;
    /// A connection to `server` (its verified record) whose calls time out
    /// after `timeout`.
    fn connect(&self, server: &VerifiedServer, timeout: Duration) -> Result<Self::Conn, CallError>;
}

/// JSON-RPC over TLS pinned to the verified server key ([`crate::tls`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpConnector;

/// A JSON-RPC connection to a concierge.
#[derive(Debug, Clone)]
pub struct HttpConn {
    url: String,
    rpc: HttpClient,
}

impl Connector for HttpConnector {
    type Conn = HttpConn;

    fn connect(&self, server: &VerifiedServer, timeout: Duration) -> Result<HttpConn, CallError> {
        let url = server
            .record()
            .urls
            .first()
            .cloned()
            .ok_or_else(|| CallError::Malformed("the server's record lists no URL".into()))?;
        let rpc = crate::tls::concierge_client(
            &url,
            &server.record().key,
            timeout,
            (2 * api::MAX_BATCH_BYTES * api::MAX_CURSORS + 65536) as u32,
        )
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
        Ok(HttpConn { url, rpc })
    }
}

fn call_err(e: RpcError) -> CallError {
    match e {
        RpcError::Call(c) => CallError::Refused {
            code: c.code(),
            message: c.message().to_owned(),
        },
        RpcError::ParseError(e) => CallError::Malformed(e.to_string()),
        other => CallError::Unreachable(other.to_string()),
    }
}

fn unb64(what: &str, s: &str) -> Result<Vec<u8>, CallError> {
    api::unb64(s).ok_or_else(|| CallError::Malformed(format!("{what} is not base64")))
}

fn unhex(what: &str, s: &str) -> Result<Vec<u8>, CallError> {
    hex::decode(s).map_err(|_| CallError::Malformed(format!("{what} is not hex")))
}

fn log_head(h: api::GroupHead) -> Result<LogHead, CallError> {
    Ok(LogHead {
        first: h.first,
        seq: h.seq,
        head: Hash::from_hex(&h.head)
            .map_err(|_| CallError::Malformed("a log head is not 32 bytes".into()))?,
    })
}

impl ServerConn for HttpConn {
    fn label(&self) -> &str {
        &self.url
    }

    async fn group_append(
        &self,
        segment: &Hash,
        entry: &[u8],
        anchor: Option<&[u8]>,
    ) -> Result<LogHead, CallError> {
        let h = self
            .rpc
            .group_append(segment.to_hex(), api::b64(entry), anchor.map(api::b64))
            .await
            .map_err(call_err)?;
        log_head(h)
    }

    async fn group_log(
        &self,
        segment: &Hash,
        from: u64,
        limit: u32,
    ) -> Result<(LogHead, Vec<Vec<u8>>), CallError> {
        let r = self
            .rpc
            .group_log(segment.to_hex(), from, limit)
            .await
            .map_err(call_err)?;
        let entries = r
            .entries
            .iter()
            .map(|e| unb64("an entry", e))
            .collect::<Result<_, _>>()?;
        Ok((log_head(r.head)?, entries))
    }

    async fn group_post(
        &self,
        segment: &Hash,
        access: &[u8; 32],
        message: &[u8],
    ) -> Result<u64, CallError> {
        self.rpc
            .group_post(segment.to_hex(), hex::encode(access), api::b64(message))
            .await
            .map_err(call_err)
    }

    async fn group_receive(
        &self,
        from: &[GroupReadFrom],
        wait: Duration,
    ) -> Result<Vec<GroupReceived>, CallError> {
        let cursors = from
            .iter()
            .map(|r| api::GroupCursor {
                segment: r.segment.to_hex(),
                access: hex::encode(r.access),
                after: r.after,
                log_after: r.log_after,
            })
            .collect();
        let batches = self
            .rpc
            .group_receive(cursors, wait.as_millis() as u64)
            .await
            .map_err(call_err)?;
        batches
            .into_iter()
            .map(|b| {
                let segment = Hash::from_hex(&b.segment)
                    .map_err(|_| CallError::Malformed("a segment id is not 32 bytes".into()))?;
                let messages = b
                    .messages
                    .into_iter()
                    .map(|d| Ok((d.seq, unb64("a group message", &d.envelope)?)))
                    .collect::<Result<_, CallError>>()?;
                Ok(GroupReceived {
                    segment,
                    log_seq: b.log_seq,
                    messages,
                })
            })
            .collect()
    }

    async fn server_info(&self) -> Result<api::ServerInfo, CallError> {
        self.rpc.server_info().await.map_err(call_err)
    }

    async fn auth_challenge(&self, user: &Name) -> Result<[u8; 32], CallError> {
        let ch = self
            .rpc
            .auth_challenge(user.to_string())
            .await
            .map_err(call_err)?;
        unhex("the challenge", &ch.challenge)?
            .try_into()
            .map_err(|_| CallError::Malformed("the challenge is not 32 bytes".into()))
    }

    async fn auth_login(
        &self,
        user: &Name,
        device: &PublicKey,
        challenge: &[u8; 32],
        sig: &Signature,
    ) -> Result<Login, CallError> {
        let t = self
            .rpc
            .auth_login(
                user.to_string(),
                device.to_hex(),
                hex::encode(challenge),
                hex::encode(sig.0),
            )
            .await
            .map_err(call_err)?;
        Ok(Login {
            token: t.token,
            valid: Duration::from_secs(t.valid_secs),
        })
    }

    async fn mailbox_create(&self, token: &str) -> Result<(), CallError> {
        self.rpc
            .mailbox_create(token.to_owned())
            .await
            .map_err(call_err)?;
        Ok(())
    }

    async fn mailbox_passes(&self, token: &str, add: &[Hash]) -> Result<(), CallError> {
        let add = add.iter().map(Hash::to_hex).collect();
        self.rpc
            .mailbox_passes(token.to_owned(), add, Vec::new())
            .await
            .map_err(call_err)?;
        Ok(())
    }

    async fn mailbox_deposit(
        &self,
        to: &Name,
        envelope: &[u8],
        pass: Option<&[u8; 32]>,
        postage: Option<api::Postage>,
    ) -> Result<api::Receipt, CallError> {
        self.rpc
            .mailbox_deposit(
                to.to_string(),
                hex::encode(envelope),
                pass.map(hex::encode),
                postage,
            )
            .await
            .map_err(call_err)
    }

    async fn mailbox_receive(
        &self,
        token: &str,
        from: &[ReadFrom],
        wait: Duration,
    ) -> Result<Vec<Received>, CallError> {
        let cursors = from
            .iter()
            .map(|r| api::Cursor {
                mailbox: r.mailbox.to_hex(),
                after: r.after,
                ack: true,
            })
            .collect();
        let batches = self
            .rpc
            .mailbox_receive(token.to_owned(), cursors, wait.as_millis() as u64)
            .await
            .map_err(call_err)?;
        batches
            .into_iter()
            .map(|b| {
                let mailbox = Hash::from_hex(&b.mailbox)
                    .map_err(|_| CallError::Malformed("a mailbox id is not 32 bytes".into()))?;
                let envelopes = b
                    .messages
                    .into_iter()
                    .map(|d| Ok((d.seq, unhex("an envelope", &d.envelope)?)))
                    .collect::<Result<_, CallError>>()?;
                Ok(Received { mailbox, envelopes })
            })
            .collect()
    }

    async fn mailbox_ack(&self, token: &str, mailbox: &Hash, up_to: u64) -> Result<(), CallError> {
        self.rpc
            .mailbox_ack(token.to_owned(), mailbox.to_hex(), up_to)
            .await
            .map_err(call_err)?;
        Ok(())
    }

    async fn keys_publish(&self, token: &str, key: &MediumKey) -> Result<(), CallError> {
        self.rpc
            .keys_publish(token.to_owned(), hex::encode(encode(key)))
            .await
            .map_err(call_err)?;
        Ok(())
    }

    async fn keys_fetch(&self, user: &Name) -> Result<Vec<Vec<u8>>, CallError> {
        let keys = self
            .rpc
            .keys_fetch(user.to_string())
            .await
            .map_err(call_err)?;
        // At most two keys per device are looked at; the rest is not decoded.
        keys.iter()
            .take(crate::records::MAX_DEVICES * 2)
            .map(|k| unhex("a medium-term key", k))
            .collect()
    }

    async fn link_post(&self, slot: &Hash, side: u8, payload: &[u8]) -> Result<(), CallError> {
        self.rpc
            .link_post(slot.to_hex(), side, hex::encode(payload))
            .await
            .map_err(call_err)?;
        Ok(())
    }

    async fn link_read(
        &self,
        slot: &Hash,
        side: u8,
        after: u32,
        wait: Duration,
    ) -> Result<Vec<Vec<u8>>, CallError> {
        let got = self
            .rpc
            .link_read(slot.to_hex(), side, after, wait.as_millis() as u64)
            .await
            .map_err(call_err)?;
        got.iter()
            .take(api::MAX_LINK_MESSAGES)
            .map(|m| {
                if m.len() > 2 * api::MAX_LINK_PAYLOAD {
                    return Err(CallError::Malformed("an oversized link message".into()));
                }
                unhex("a link message", m)
            })
            .collect()
    }
}

/// The client's state for one server: its verified record, a connection
/// for calls and one for long-polls, the login token.
pub(crate) struct Conn<T> {
    pub(crate) server: VerifiedServer,
    pub(crate) rpc: T,
    pub(crate) poll: T,
    token: parking_lot::Mutex<Option<(String, Instant)>>,
    /// The server's postage difficulty, once asked.
    postage_bits: parking_lot::Mutex<Option<u32>>,
}

impl<D: super::Directory, C: Connector> Core<D, C> {
    /// The connection to `server` (looked up and made when needed).
    pub(crate) async fn conn(&self, server: &Name) -> Result<Arc<Conn<C::Conn>>> {
        if let Some(c) = self.conns.lock().get(server) {
            return Ok(c.clone());
        }
        let sv = self.server(server).await?;
        let make = |timeout| {
            self.connector
                .connect(&sv, timeout)
                .map_err(|e| self.call_err(server, &sv, "the connection", e))
        };
        let rpc = make(self.config.rpc_timeout)?;
        let poll = make(self.config.rpc_timeout + Duration::from_secs(35))?;
        let conn = Arc::new(Conn {
            server: sv,
            rpc,
            poll,
            token: parking_lot::Mutex::new(None),
            postage_bits: parking_lot::Mutex::new(None),
        });
        self.conns.lock().insert(server.clone(), conn.clone());
        Ok(conn)
    }

    /// Forget the connection to `server` (its record is looked up again).
    pub(crate) fn forget_conn(&self, server: &Name) {
        self.conns.lock().remove(server);
    }

    fn call_err(
        &self,
        server: &Name,
        sv: &VerifiedServer,
        what: &'static str,
        e: CallError,
    ) -> ClientError {
        let url = sv.record().urls.first().cloned().unwrap_or_default();
        to_client_error(server, &url, what, e)
    }

    /// A valid token for `server` (logging in when needed).
    pub(crate) async fn token(&self, server: &Name) -> Result<String> {
        let me = self.me()?;
        let conn = self.conn(server).await?;
        if let Some((t, exp)) = &*conn.token.lock()
            && *exp > Instant::now() + Duration::from_secs(30)
        {
            return Ok(t.clone());
        }
        let url = conn.rpc.label().to_owned();
        if crate::tls::plain_remote(&url) {
            return Err(ClientError::Invalid(format!(
                "{server} publishes a plain http:// URL ({url}) for a host that is not loopback: a login token would travel in the clear, so this client does not log in there; the server must publish an https:// URL"
            )));
        }
        let err = |what, e| to_client_error(server, &url, what, e);
        let challenge = conn
            .rpc
            .auth_challenge(&me)
            .await
            .map_err(|e| err("a login challenge", e))?;
        let sig = self
            .device
            .sign(api::AUTH_TAG, &api::auth_payload(server, &me, &challenge));
        let login = conn
            .rpc
            .auth_login(&me, &self.device.device().sign, &challenge, &sig)
            .await
            .map_err(|e| err("the login", e))?;
        *conn.token.lock() = Some((login.token.clone(), Instant::now() + login.valid));
        Ok(login.token)
    }

    /// Forget a token the server no longer accepts.
    pub(crate) fn drop_token(&self, server: &Name, e: &ClientError) {
        if let ClientError::Refused {
            code: api::code::UNAUTHORIZED,
            ..
        } = e
            && let Some(c) = self.conns.lock().get(server)
        {
            *c.token.lock() = None;
        }
    }

    /// `server`'s postage difficulty (asked once per connection).
    pub(crate) async fn postage_bits(&self, server: &Name) -> Result<u32> {
        let conn = self.conn(server).await?;
        if let Some(b) = *conn.postage_bits.lock() {
            return Ok(b);
        }
        let info = conn
            .rpc
            .server_info()
            .await
            .map_err(|e| to_client_error(server, conn.rpc.label(), "the server info", e))?;
        *conn.postage_bits.lock() = Some(info.postage_bits);
        Ok(info.postage_bits)
    }
}

/// A failed call to `server`, in terms a user can act on.
pub(crate) fn to_client_error(
    server: &Name,
    url: &str,
    what: &'static str,
    e: CallError,
) -> ClientError {
    match e {
        CallError::Refused { code, message } => ClientError::Refused {
            server: server.clone(),
            what,
            code,
            message,
        },
        CallError::Unreachable(reason) => ClientError::Unreachable {
            server: server.clone(),
            url: url.to_owned(),
            reason,
        },
        CallError::Malformed(reason) => ClientError::Misbehaved {
            server: server.clone(),
            reason: format!("{what}: {reason}"),
        },
    }
}
