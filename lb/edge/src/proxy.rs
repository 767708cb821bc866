//! The pingora proxy: every request looks up the current route table (one atomic load), picks
//! a backend with the pure balancing core, and is proxied. A new table never touches a request
//! in flight: each keeps the snapshot it started with.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atoll_lb_core::edge::balance::{ChoiceInputs, choose};
use atoll_lb_core::edge::{Balance, HashOn, Route};
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;

use crate::state::{EdgeState, Snapshot};

/// Hop-by-hop and identity headers the edge sets itself.
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

pub struct EdgeProxy {
    pub state: Arc<EdgeState>,
}

/// What one request carries through the proxy's phases.
pub struct RequestCtx {
    started: Instant,
    snapshot: Option<Arc<Snapshot>>,
    route: Option<usize>,
    host: String,
    tls: bool,
    /// Backends tried, the last one current (counted in flight).
    tried: Vec<SocketAddr>,
    in_flight: Option<SocketAddr>,
    body_bytes: u64,
    hash_key: Option<Vec<u8>>,
    /// The response came from the edge itself (404, 503, 413, redirect).
    local: bool,
    counted: bool,
}

impl RequestCtx {
    pub(crate) fn tried(&self) -> &[SocketAddr] {
        &self.tried
    }

    pub(crate) fn push_tried(&mut self, backend: SocketAddr) {
        self.tried.push(backend);
    }

    /// The backend now serving the request (counted in flight until the request ends).
    pub(crate) fn note_backend(&mut self, backend: SocketAddr) {
        self.in_flight = Some(backend);
    }

    pub(crate) fn hash_key(&self) -> Option<&[u8]> {
        self.hash_key.as_deref()
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    fn route(&self) -> Option<&Route> {
        Some(&self.snapshot.as_ref()?.table.routes()[self.route?])
    }

    fn route_id(&self) -> &str {
        self.route().map_or("-", |r| r.id.as_str())
    }
}

impl EdgeProxy {
    fn release_backend(&self, ctx: &mut RequestCtx) {
        if let Some(backend) = ctx.in_flight.take() {
            self.state.end_backend_request(backend);
        }
    }

    /// `X-Forwarded-For` (appended to the client's own), `-Proto` and `-Host` for a request.
    pub(crate) fn forwarded_headers(&self, session: &Session, ctx: &RequestCtx) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(3);
        if let Some(ip) = client_ip(session) {
            let earlier = session.req_header().headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
            headers.push((
                X_FORWARDED_FOR,
                match earlier {
                    Some(earlier) => format!("{earlier}, {ip}"),
                    None => ip.to_string(),
                },
            ));
        }
        headers.push((X_FORWARDED_PROTO, if ctx.tls { "https" } else { "http" }.to_owned()));
        if !ctx.host.is_empty() {
            headers.push((X_FORWARDED_HOST, ctx.host.clone()));
        }
        headers
    }
}

/// A short plain-text response from the edge itself; `true` tells pingora it was sent.
async fn respond(session: &mut Session, status: u16, body: String, location: Option<String>) -> Result<bool> {
    let mut response = ResponseHeader::build(status, Some(4))?;
    response.insert_header("content-type", "text/plain; charset=utf-8")?;
    response.insert_header("content-length", body.len().to_string())?;
    if let Some(location) = location {
        response.insert_header("location", location)?;
    }
    session.write_response_header(Box::new(response), false).await?;
    session.write_response_body(Some(Bytes::from(body)), true).await?;
    Ok(true)
}

/// The request's host: `Host` (HTTP/1.1) or the `:authority` (HTTP/2).
fn request_host(request: &RequestHeader) -> String {
    request
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default()
}

fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(name, _)| name)
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

fn cookie<'a>(request: &'a RequestHeader, name: &str) -> Option<&'a str> {
    request.headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|cookies| {
        cookies.split(';').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
    })
}

fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::OPTIONS
            | http::Method::TRACE
    )
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            snapshot: None,
            route: None,
            host: String::new(),
            tls: false,
            tried: Vec::new(),
            in_flight: None,
            body_bytes: 0,
            hash_key: None,
            local: false,
            counted: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.state.begin_request();
        ctx.counted = true;
        ctx.tls = session.digest().and_then(|d| d.ssl_digest.as_ref()).is_some();
        let request = session.req_header();
        let head_size: usize = request.uri.to_string().len()
            + request.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>();
        if head_size as u64 > self.state.options.max_request_headers {
            ctx.local = true;
            let body = format!("request headers larger than {} bytes\n", self.state.options.max_request_headers);
            return respond(session, 431, body, None).await;
        }
        ctx.host = request_host(request);
        let path = request.uri.path().to_owned();
        let snapshot = self.state.snapshot();
        ctx.route = snapshot.table.lookup_index(&ctx.host, &path);
        ctx.snapshot = Some(snapshot.clone());
        let Some(route) = ctx.route.map(|i| &snapshot.table.routes()[i]) else {
            ctx.local = true;
            let host = host_name(&ctx.host).to_owned();
            return respond(session, 404, format!("no route for {host}{path}\n"), None).await;
        };
        if route.redirect_to_https && !ctx.tls {
            ctx.local = true;
            let port = self.state.options.tls_listen.map(|a| a.port()).filter(|&p| p != 443);
            let target = format!(
                "https://{}{}{}",
                host_name(&ctx.host),
                port.map(|p| format!(":{p}")).unwrap_or_default(),
                request.uri.path_and_query().map_or("/", |p| p.as_str())
            );
            return respond(session, 301, format!("moved to {target}\n"), Some(target)).await;
        }
        if route.active().next().is_none() {
            ctx.local = true;
            let body = format!("no healthy backend for {}\n", route.id);
            return respond(session, 503, body, None).await;
        }
        let declared =
            request.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.state.options.max_request_body) {
            ctx.local = true;
            let body = format!("request body larger than {} bytes\n", self.state.options.max_request_body);
            return respond(session, 413, body, None).await;
        }
        ctx.hash_key = match &route.balance {
            Balance::Hash(HashOn::Header(name)) => request.headers.get(name.as_str()).map(|v| v.as_bytes().to_vec()),
            Balance::Hash(HashOn::Cookie(name)) => cookie(request, name).map(|v| v.as_bytes().to_vec()),
            Balance::Hash(HashOn::ClientIp) => client_ip(session).map(|ip| ip.to_string().into_bytes()),
            _ => None,
        };
        if session.is_upgrade_req() {
            // A WebSocket may stay quiet for long: no read timeout on the client side.
            session.set_read_timeout(None);
            return crate::websocket::tunnel(self, session, ctx, route).await;
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_bytes > self.state.options.max_request_body {
            return Error::e_explain(HTTPStatus(413), "request body too large");
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        self.release_backend(ctx);
        let route = ctx.route().ok_or_else(|| Error::explain(HTTPStatus(404), "no route"))?;
        let now = self.state.now_ms();
        let tried = ctx.tried.clone();
        let counter = self.state.next_counter(&route.id);
        let random = [rand::random::<u64>(), rand::random::<u64>()];
        let choice = choose(
            route,
            &ChoiceInputs {
                counter,
                random,
                key: ctx.hash_key.as_deref(),
                in_flight: &|backend| self.state.in_flight(backend),
                avoid: &|backend| tried.contains(&backend) || self.state.is_ejected(backend, now),
            },
        );
        let backend = match choice {
            Some(b) if !ctx.tried.contains(&b.address) => b.address,
            _ => return Err(Error::explain(HTTPStatus(502), "every backend of the route failed")),
        };
        ctx.tried.push(backend);
        ctx.in_flight = Some(backend);
        self.state.begin_backend_request(backend);
        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.options.connection_timeout = Some(self.state.options.connect_timeout);
        peer.options.total_connection_timeout = Some(self.state.options.connect_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        if !session.is_upgrade_req() {
            peer.options.read_timeout = Some(self.state.options.response_timeout);
        }
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(backend) = ctx.in_flight {
            self.state.backend_failed(ctx.route_id(), backend);
        }
        let retries_left = ctx.tried.len() <= self.state.options.retries as usize;
        let untried = ctx.route().is_some_and(|r| r.active().any(|b| !ctx.tried.contains(&b.address)));
        // Nothing was sent, but a request that is not idempotent is only retried when it has
        // no body that may have been streamed already.
        let method = &session.req_header().method;
        if retries_left && untried && (is_idempotent(method) || ctx.body_bytes == 0) {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        for (name, value) in self.forwarded_headers(session, ctx) {
            upstream.insert_header(name, value)?;
        }
        if !ctx.host.is_empty() && upstream.headers.get(http::header::HOST).is_none() {
            // HTTP/2 clients send :authority; HTTP/1.1 backends need Host.
            upstream.insert_header(http::header::HOST, ctx.host.clone())?;
        }
        if let Some(route) = ctx.route()
            && route.strip_prefix
        {
            let original = upstream.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
            let rewritten = route.upstream_path(&original).into_owned();
            if rewritten != original {
                let uri = rewritten
                    .parse::<http::Uri>()
                    .map_err(|e| Error::because(InternalError, "rewriting the path", e))?;
                upstream.set_uri(uri);
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let code = match e.etype() {
            HTTPStatus(code) => *code,
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if let Some(backend) = ctx.in_flight
            && e.esource() == &ErrorSource::Upstream
        {
            self.state.backend_failed(ctx.route_id(), backend);
        }
        if code > 0 {
            let reason = match code {
                502 => "bad gateway: the backend failed",
                504 => "gateway timeout: the backend did not answer in time",
                413 => "request body too large",
                _ => "error",
            };
            let body = Bytes::from(format!("{code} {reason} ({})\n", ctx.route_id()));
            if let Err(e) = session.respond_error_with_body(code, body).await {
                tracing::debug!("sending the error response: {e}");
            }
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let backend = ctx.in_flight;
        self.release_backend(ctx);
        if let Some(backend) = backend
            && e.is_none()
        {
            if status >= 500 {
                self.state.backend_failed(ctx.route_id(), backend);
            } else {
                self.state.backend_succeeded(ctx.route_id(), backend);
            }
        }
        let elapsed = ctx.started.elapsed();
        self.state.record_request(ctx.route_id(), status, elapsed);
        if ctx.counted {
            self.state.end_request();
        }
        let request = session.req_header();
        tracing::info!(
            target: "atoll_edge::access",
            client = %client_ip(session).map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            method = %request.method,
            host = %ctx.host,
            uri = %request.uri,
            status,
            route = ctx.route_id(),
            backend = %backend.map_or_else(|| "-".to_owned(), |b| b.to_string()),
            tries = ctx.tried.len(),
            local = ctx.local,
            ms = elapsed.as_secs_f64() * 1000.0,
            sent = session.body_bytes_sent(),
            error = %e.map_or_else(String::new, |e| e.to_string()),
        );
    }
}
