//! A connection in `replication=database` mode, spoken directly on
//! postgres-protocol because tokio-postgres cannot open one. The bulk load needs it
//! for `CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT` (the exported snapshot stays
//! importable only while this connection is open and idle); catch-up streams the
//! slot through it (`START_REPLICATION`, CopyBoth framing, status updates).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::conn::ConnInfo;
use crate::error::PgError;
use crate::lsn::Lsn;
use crate::sql::{quote_ident, quote_literal};
use crate::tls::server_name;
use tokio_rustls::TlsConnector;
use fallible_iterator::FallibleIterator;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct ReplicationConn {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    endpoint: String,
    streaming: bool,
    /// Streaming: the last read returned little, so wait a moment before the next.
    wait_before_read: bool,
}

/// While streaming, a read that returns less than this is followed by a short pause.
/// The walsender sends every message as it is decoded; a reader woken for each one
/// costs both processes a context switch per change, and on a busy machine that
/// halves the apply rate. Pausing lets messages gather in the socket buffer.
const SMALL_READ: usize = 32 * 1024;
const READ_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Asks the server to switch to TLS; true when it agrees.
async fn ssl_request(tcp: &mut TcpStream) -> std::io::Result<bool> {
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    tcp.write_all(&out).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    Ok(answer[0] == b'S')
}

/// What `CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT` returns.
#[derive(Clone, Debug)]
pub struct CreatedSlot {
    pub slot_name: String,
    /// The LSN from which decoding starts: the snapshot shows exactly the data before it.
    pub consistent_point: String,
    pub snapshot_name: String,
}

/// What the server sends while streaming.
#[derive(Debug)]
pub enum WalEvent {
    /// One pgoutput message starting at `wal_start`.
    Data { wal_start: Lsn, wal_end: Lsn, data: Bytes },
    /// The server's current end of WAL; `reply_requested` asks for a status update now.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Now, in PostgreSQL's timestamp form (microseconds since 2000-01-01).
pub fn pg_now_micros() -> i64 {
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    unix.as_micros() as i64 - PG_EPOCH_OFFSET_MICROS
}

impl ReplicationConn {
    pub async fn connect(info: &ConnInfo) -> Result<ReplicationConn, PgError> {
        let endpoint = info.endpoint().to_string();
        let unreachable = |e: std::io::Error| PgError::Unreachable { endpoint: endpoint.clone(), reason: e.to_string() };
        let host = info.host();
        let stream: Box<dyn Stream> = if host.starts_with('/') {
            let path = format!("{host}/.s.PGSQL.{}", info.port());
            Box::new(UnixStream::connect(path).await.map_err(unreachable)?)
        } else {
            let mut tcp = tokio::time::timeout(std::time::Duration::from_secs(10), TcpStream::connect((host.as_str(), info.port())))
                .await
                .map_err(|_| PgError::Unreachable { endpoint: endpoint.clone(), reason: "connection timed out".into() })?
                .map_err(unreachable)?;
            tcp.set_nodelay(true).ok();
            let tls = match info.tls_config() {
                Some(tls) if ssl_request(&mut tcp).await.map_err(unreachable)? => Some(tls),
                _ => None,
            };
            match tls {
                Some(tls) => {
                    let name = server_name(&host).map_err(|reason| PgError::Unreachable { endpoint: endpoint.clone(), reason })?;
                    let tls = TlsConnector::from(tls)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| PgError::Tls { endpoint: endpoint.clone(), reason: format!("handshake: {e}") })?;
                    Box::new(tls)
                }
                None if info.tls_mode().required() => {
                    return Err(PgError::Unreachable {
                        endpoint,
                        reason: "the server does not accept TLS, which sslmode requires".into(),
                    })
                }
                None => Box::new(tcp),
            }
        };
        let mut conn = ReplicationConn { stream, buf: BytesMut::with_capacity(8192), endpoint, streaming: false, wait_before_read: false };
        conn.startup(info).await?;
        Ok(conn)
    }

    async fn startup(&mut self, info: &ConnInfo) -> Result<(), PgError> {
        let mut out = BytesMut::new();
        let params = [
            ("user", info.user()),
            ("database", info.dbname()),
            ("replication", "database"),
            ("application_name", "pgshift"),
        ];
        frontend::startup_message(params.iter().copied(), &mut out).map_err(|e| self.protocol(e.to_string()))?;
        self.send(&out).await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.next_message().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let pw = self.password(info)?;
                    let mut out = BytesMut::new();
                    frontend::password_message(pw, &mut out).map_err(|e| self.protocol(e.to_string()))?;
                    self.send(&out).await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = self.password(info)?;
                    let hash = md5_hash(info.user().as_bytes(), pw, body.salt());
                    let mut out = BytesMut::new();
                    frontend::password_message(hash.as_bytes(), &mut out).map_err(|e| self.protocol(e.to_string()))?;
                    self.send(&out).await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechanisms.next().map_err(|e| self.protocol(e.to_string()))? {
                        has_scram |= m == SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(self.protocol("server offers no SCRAM-SHA-256 authentication".into()));
                    }
                    let s = ScramSha256::new(self.password(info)?, ChannelBinding::unsupported());
                    let mut out = BytesMut::new();
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)
                        .map_err(|e| self.protocol(e.to_string()))?;
                    self.send(&out).await?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| self.protocol("unexpected SASL continue".into()))?;
                    s.update(body.data()).map_err(|_| PgError::AuthFailed { endpoint: self.endpoint.clone() })?;
                    let mut out = BytesMut::new();
                    frontend::sasl_response(s.message(), &mut out).map_err(|e| self.protocol(e.to_string()))?;
                    self.send(&out).await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let mut s = scram.take().ok_or_else(|| self.protocol("unexpected SASL final".into()))?;
                    s.finish(body.data()).map_err(|_| PgError::AuthFailed { endpoint: self.endpoint.clone() })?;
                }
                Message::ParameterStatus(_) | Message::BackendKeyData(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(self.server_error(body.fields(), "start replication connection")),
                _ => return Err(self.protocol("unexpected message during start-up".into())),
            }
        }
    }

    /// Runs one command with the simple query protocol and returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| self.protocol(e.to_string()))?;
        self.send(&out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.next_message().await? {
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut ranges = body.ranges();
                    let mut row = Vec::new();
                    while let Some(range) = ranges.next().map_err(|e| self.protocol(e.to_string()))? {
                        row.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Message::ErrorResponse(body) => error = Some(self.server_error(body.fields(), sql)),
                Message::ReadyForQuery(_) => return error.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    /// Creates a persistent logical slot for pgoutput and exports its snapshot.
    pub async fn create_slot_with_snapshot(&mut self, slot_name: &str) -> Result<CreatedSlot, PgError> {
        let rows = self
            .simple_query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT", quote_ident(slot_name)))
            .await?;
        let row = rows.into_iter().next().ok_or_else(|| self.protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
        let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(CreatedSlot { slot_name: col(0), consistent_point: col(1), snapshot_name: col(2) })
    }

    /// Starts streaming `slot` from `start` with the given pgoutput options; returns
    /// once the server has switched to CopyBoth mode.
    pub async fn start_logical(&mut self, slot: &str, start: Lsn, options: &[(&str, String)]) -> Result<(), PgError> {
        let opts: Vec<String> = options.iter().map(|(k, v)| format!("{} {}", quote_ident(k), quote_literal(v))).collect();
        let sql = format!("START_REPLICATION SLOT {} LOGICAL {start} ({})", quote_ident(slot), opts.join(", "));
        let mut out = BytesMut::new();
        frontend::query(&sql, &mut out).map_err(|e| self.protocol(e.to_string()))?;
        self.send(&out).await?;
        loop {
            let (tag, body) = self.next_frame().await?;
            match tag {
                b'W' => {
                    self.streaming = true;
                    return Ok(());
                }
                b'E' => return Err(self.error_frame(tag, body, &sql)),
                b'N' | b'S' => {}
                other => return Err(self.protocol(format!("unexpected message {:?} after START_REPLICATION", other as char))),
            }
        }
    }

    /// The next XLogData or keepalive. Cancel-safe: partial reads stay buffered.
    pub async fn next_event(&mut self) -> Result<WalEvent, PgError> {
        loop {
            let (tag, mut body) = self.next_frame().await?;
            match tag {
                b'd' if body.first() == Some(&b'w') && body.len() >= 25 => {
                    body.advance(1);
                    let (wal_start, wal_end) = (Lsn(body.get_u64()), Lsn(body.get_u64()));
                    body.advance(8);
                    return Ok(WalEvent::Data { wal_start, wal_end, data: body });
                }
                b'd' if body.first() == Some(&b'k') && body.len() >= 18 => {
                    body.advance(1);
                    let wal_end = Lsn(body.get_u64());
                    body.advance(8);
                    return Ok(WalEvent::Keepalive { wal_end, reply_requested: body.get_u8() == 1 });
                }
                b'E' => return Err(self.error_frame(tag, body, "replication stream")),
                // CopyDone, CommandComplete, ReadyForQuery: the walsender ended the stream
                // (server shutting down, or the session was terminated).
                b'c' | b'C' | b'Z' => return Err(self.disconnected("the source ended the replication stream (shut down, restarted, or its walsender was terminated)")),
                b'N' => {}
                other => return Err(self.protocol(format!("unexpected message {:?} while streaming", other as char))),
            }
        }
    }

    /// Standby status update: `flush` is what the target has durably applied; the
    /// server may recycle WAL before it.
    pub async fn send_status(&mut self, received: Lsn, flush: Lsn, reply_requested: bool) -> Result<(), PgError> {
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(received.0);
        body.put_u64(flush.0);
        body.put_u64(flush.0);
        body.put_i64(pg_now_micros());
        body.put_u8(reply_requested as u8);
        let mut out = BytesMut::with_capacity(40);
        out.put_u8(b'd');
        out.put_i32(4 + body.len() as i32);
        out.put_slice(&body);
        self.send(&out).await
    }

    /// One raw message: tag and body. Used while streaming, where postgres-protocol's
    /// parser does not know CopyBothResponse.
    async fn next_frame(&mut self) -> Result<(u8, Bytes), PgError> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if len < 4 {
                    return Err(self.protocol(format!("invalid message length {len}")));
                }
                if self.buf.len() > len {
                    let mut frame = self.buf.split_to(1 + len).freeze();
                    let tag = frame.get_u8();
                    frame.advance(4);
                    return Ok((tag, frame));
                }
            }
            if self.wait_before_read {
                tokio::time::sleep(READ_PAUSE).await;
            }
            self.buf.reserve(256 * 1024);
            let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| self.disconnected(&e.to_string()))?;
            if n == 0 {
                return Err(self.disconnected("the server closed the connection"));
            }
            self.wait_before_read = self.streaming && n < SMALL_READ;
        }
    }

    fn error_frame(&self, tag: u8, body: Bytes, context: &str) -> PgError {
        let mut raw = BytesMut::with_capacity(body.len() + 5);
        raw.put_u8(tag);
        raw.put_i32(4 + body.len() as i32);
        raw.put_slice(&body);
        match Message::parse(&mut raw) {
            Ok(Some(Message::ErrorResponse(e))) => self.server_error(e.fields(), context),
            _ => self.protocol("unreadable error message".into()),
        }
    }

    pub async fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.stream.write_all(&out).await;
    }

    fn password<'a>(&self, info: &'a ConnInfo) -> Result<&'a [u8], PgError> {
        info.password().ok_or_else(|| PgError::AuthFailed { endpoint: self.endpoint.clone() })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), PgError> {
        self.stream.write_all(bytes).await.map_err(|e| self.disconnected(&e.to_string()))?;
        self.stream.flush().await.map_err(|e| self.disconnected(&e.to_string()))
    }

    async fn next_message(&mut self) -> Result<Message, PgError> {
        loop {
            if let Some(msg) = Message::parse(&mut self.buf).map_err(|e| self.protocol(e.to_string()))? {
                return Ok(msg);
            }
            self.buf.reserve(8192);
            let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| self.disconnected(&e.to_string()))?;
            if n == 0 {
                return Err(self.disconnected("the server closed the connection"));
            }
        }
    }

    fn server_error(&self, mut fields: ErrorFields<'_>, context: &str) -> PgError {
        let (mut code, mut message, mut hint) = (String::new(), String::new(), String::new());
        while let Ok(Some(f)) = fields.next() {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'C' => code = value,
                b'M' => message = value,
                b'H' => hint = format!("; hint: {value}"),
                _ => {}
            }
        }
        if message.contains("pg_hba.conf") {
            return crate::conn::refused_by_hba(self.endpoint.clone(), &message);
        }
        if code == "28P01" || code == "28000" {
            return PgError::AuthFailed { endpoint: self.endpoint.clone() };
        }
        PgError::Query { endpoint: self.endpoint.clone(), context: context.into(), detail: message + &hint, code: Some(code) }
    }

    fn disconnected(&self, reason: &str) -> PgError {
        PgError::Disconnected { endpoint: self.endpoint.clone(), reason: reason.to_string() }
    }

    fn protocol(&self, message: String) -> PgError {
        PgError::Protocol { endpoint: self.endpoint.clone(), message }
    }
}
