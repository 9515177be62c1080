//! A connection in `replication=database` mode, spoken directly on
//! postgres-protocol because tokio-postgres cannot open one. The bulk load needs it
//! for `CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT`: the exported snapshot stays
//! importable only while this connection is open and idle.

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::conn::ConnInfo;
use crate::error::PgError;
use crate::sql::quote_ident;
use fallible_iterator::FallibleIterator;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct ReplicationConn {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    endpoint: String,
}

/// What `CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT` returns.
#[derive(Clone, Debug)]
pub struct CreatedSlot {
    pub slot_name: String,
    /// The LSN from which decoding starts: the snapshot shows exactly the data before it.
    pub consistent_point: String,
    pub snapshot_name: String,
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
            let tcp = tokio::time::timeout(std::time::Duration::from_secs(10), TcpStream::connect((host.as_str(), info.port())))
                .await
                .map_err(|_| PgError::Unreachable { endpoint: endpoint.clone(), reason: "connection timed out".into() })?
                .map_err(unreachable)?;
            tcp.set_nodelay(true).ok();
            Box::new(tcp)
        };
        let mut conn = ReplicationConn { stream, buf: BytesMut::with_capacity(8192), endpoint };
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

    pub async fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.stream.write_all(&out).await;
    }

    fn password<'a>(&self, info: &'a ConnInfo) -> Result<&'a [u8], PgError> {
        info.password().ok_or_else(|| PgError::AuthFailed { endpoint: self.endpoint.clone() })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), PgError> {
        self.stream.write_all(bytes).await.map_err(|e| self.protocol(e.to_string()))?;
        self.stream.flush().await.map_err(|e| self.protocol(e.to_string()))
    }

    async fn next_message(&mut self) -> Result<Message, PgError> {
        loop {
            if let Some(msg) = Message::parse(&mut self.buf).map_err(|e| self.protocol(e.to_string()))? {
                return Ok(msg);
            }
            self.buf.reserve(8192);
            let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| self.protocol(e.to_string()))?;
            if n == 0 {
                return Err(self.protocol("server closed the connection".into()));
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
        if code == "28P01" || code == "28000" {
            return PgError::AuthFailed { endpoint: self.endpoint.clone() };
        }
        PgError::Query { endpoint: self.endpoint.clone(), context: context.into(), detail: message + &hint, code: Some(code) }
    }

    fn protocol(&self, message: String) -> PgError {
        PgError::Protocol { endpoint: self.endpoint.clone(), message }
    }
}
