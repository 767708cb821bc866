//! WebSocket (HTTP/1.1 `Upgrade`) tunnels, carried by the edge itself instead of pingora's
//! proxy loop: pingora 0.9.1 may tear an upgraded tunnel down right after the 101 when the
//! backend answers before the loop has passed on the request's (empty) body — pingora issue
//! #946; measured here as about one connection in seventy on loopback. Here the order is fixed:
//! the request head goes to the backend, its response head comes back to the client, and then
//! bytes are copied both ways until either side closes.

use std::net::SocketAddr;
use std::time::Duration;

use atoll_lb_core::edge::Route;
use atoll_lb_core::edge::balance::{ChoiceInputs, choose};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::{EdgeProxy, RequestCtx};

/// The largest response head a backend may send.
const MAX_HEAD: usize = 64 * 1024;

/// Carries the upgrade request in `session` to a backend of `route`; `Ok(true)`: answered.
pub async fn tunnel(proxy: &EdgeProxy, session: &mut Session, ctx: &mut RequestCtx, route: &Route) -> Result<bool> {
    let state = &proxy.state;
    let Some((backend, stream)) = connect(proxy, ctx, route).await else {
        let body = Bytes::from(format!("502 bad gateway: no backend of {} accepted the connection\n", route.id));
        session.respond_error_with_body(502, body).await?;
        return Ok(true);
    };
    ctx.note_backend(backend);
    state.begin_backend_request(backend);
    let result = carry(proxy, session, ctx, route, stream).await;
    match &result {
        Ok(_) => state.backend_succeeded(&route.id, backend),
        Err(_) => state.backend_failed(&route.id, backend),
    }
    result
}

/// The first backend that accepts a connection, in the route's balancing order.
async fn connect(proxy: &EdgeProxy, ctx: &mut RequestCtx, route: &Route) -> Option<(SocketAddr, TcpStream)> {
    let state = &proxy.state;
    for _ in 0..=state.options.retries {
        let now = state.now_ms();
        let tried = ctx.tried().to_vec();
        let backend = choose(
            route,
            &ChoiceInputs {
                counter: state.next_counter(&route.id),
                random: [rand::random::<u64>(), rand::random::<u64>()],
                key: ctx.hash_key(),
                in_flight: &|b| state.in_flight(b),
                avoid: &|b| tried.contains(&b) || state.is_ejected(b, now),
            },
        )?
        .address;
        if tried.contains(&backend) {
            return None;
        }
        ctx.push_tried(backend);
        match tokio::time::timeout(state.options.connect_timeout, TcpStream::connect(backend)).await {
            Ok(Ok(stream)) => return Some((backend, stream)),
            _ => state.backend_failed(&route.id, backend),
        }
    }
    None
}

async fn carry(
    proxy: &EdgeProxy,
    session: &mut Session,
    ctx: &RequestCtx,
    route: &Route,
    stream: TcpStream,
) -> Result<bool> {
    let request = session.req_header();
    let target = route.upstream_path(request.uri.path_and_query().map_or("/", |p| p.as_str())).into_owned();
    let mut head = format!("{} {target} HTTP/1.1\r\n", request.method);
    for (name, value) in request.headers.iter() {
        let lower = name.as_str();
        if lower.starts_with("x-forwarded-") {
            continue;
        }
        head.push_str(name.as_str());
        head.push_str(": ");
        head.push_str(&String::from_utf8_lossy(value.as_bytes()));
        head.push_str("\r\n");
    }
    if request.headers.get(http::header::HOST).is_none() && !ctx.host().is_empty() {
        head.push_str(&format!("host: {}\r\n", ctx.host()));
    }
    for (name, value) in proxy.forwarded_headers(session, ctx) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");

    let (mut from_backend, mut to_backend) = stream.into_split();
    to_backend.write_all(head.as_bytes()).await.or_err(WriteError, "sending the upgrade request to the backend")?;
    let mut buffer = Vec::with_capacity(4096);
    let timeout = proxy.state.options.response_timeout;
    let (response, body_start) = loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(timeout, from_backend.read(&mut chunk))
            .await
            .or_err(ReadTimedout, "waiting for the backend's answer to the upgrade")?
            .or_err(ReadError, "reading the backend's answer to the upgrade")?;
        if n == 0 {
            return Error::e_explain(ConnectionClosed, "the backend closed before answering the upgrade");
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&buffer) {
            Ok(httparse::Status::Complete(len)) => {
                let mut response = ResponseHeader::build(parsed.code.unwrap_or(502), Some(parsed.headers.len()))?;
                for header in parsed.headers.iter() {
                    let value = http::HeaderValue::from_bytes(header.value)
                        .or_err(InvalidHTTPHeader, "a header of the backend's answer")?;
                    response.append_header(header.name.to_owned(), value)?;
                }
                break (response, len);
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD => continue,
            _ => return Error::e_explain(InvalidHTTPHeader, "the backend's answer to the upgrade is not HTTP"),
        }
    };
    let upgraded = response.status.as_u16() == 101;
    let content_length: Option<usize> =
        response.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    session.write_response_header(Box::new(response), false).await?;
    let early = Bytes::copy_from_slice(&buffer[body_start..]);
    if !early.is_empty() {
        session.write_response_body(Some(early.clone()), false).await?;
    }

    if !upgraded {
        // The backend refused the upgrade: pass its answer on and end.
        let mut remaining = content_length.map(|n| n.saturating_sub(early.len()));
        let mut chunk = vec![0u8; 16 * 1024];
        while remaining != Some(0) {
            let n = match tokio::time::timeout(timeout, from_backend.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            session.write_response_body(Some(Bytes::copy_from_slice(&chunk[..n])), false).await?;
            remaining = remaining.map(|r| r.saturating_sub(n));
        }
        session.write_response_body(Some(Bytes::new()), true).await?;
        return Ok(true);
    }

    let mut chunk = vec![0u8; 16 * 1024];
    let mut client_open = true;
    loop {
        tokio::select! {
            data = session.read_request_body(), if client_open => match data {
                Ok(Some(data)) => {
                    if to_backend.write_all(&data).await.is_err() {
                        break;
                    }
                }
                // The client closed: let the backend finish, for a while.
                Ok(None) | Err(_) => {
                    client_open = false;
                    let _ = to_backend.shutdown().await;
                }
            },
            read = tokio::time::timeout(
                if client_open { Duration::MAX } else { Duration::from_secs(5) },
                from_backend.read(&mut chunk),
            ) => match read {
                Ok(Ok(n)) if n > 0 => {
                    if session.write_response_body(Some(Bytes::copy_from_slice(&chunk[..n])), false).await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
        }
    }
    let _ = session.write_response_body(Some(Bytes::new()), true).await;
    Ok(true)
}
