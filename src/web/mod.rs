//! The small read-only HTTP server behind the daemon's metrics endpoint and
//! web view and the HA agent's web view: hyper (HTTP/1.1 and 1.0) on a
//! single-threaded tokio runtime of its own thread, so nothing a client
//! does reaches the daemon's other threads. Bounded: at most
//! [`MAX_CONNECTIONS`] at once (more wait in the kernel's backlog), the
//! request head within [`HEAD_TIMEOUT`] and 16 KiB, a connection at most
//! [`CONNECTION_LIFETIME`]. GET and HEAD only; no authentication, so bind
//! it to localhost or a management network.
//!
//! [`html`] and [`svg`] build the pages (pure).

pub mod html;
pub mod svg;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tracing::warn;

pub const MAX_CONNECTIONS: usize = 32;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// What a page handler answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    pub fn html(body: String) -> Reply {
        Reply::ok("text/html; charset=utf-8", body)
    }

    pub fn not_found(hint: &str) -> Reply {
        Reply {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: format!("not found; try {hint}\n").into_bytes(),
        }
    }
}

/// Answers a GET of a path (the query string apart).
pub type Handler = Arc<dyn Fn(&str, &str) -> Reply + Send + Sync>;

/// Binds `addr` and serves `handler` on a thread named `name`. Returns
/// the bound address (a port 0 is chosen by the kernel).
pub fn serve(addr: &str, name: &str, handler: Handler) -> Result<SocketAddr, String> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen: {e}"))?;
    let local = l.local_addr().map_err(|e| e.to_string())?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(accept_loop(l, handler)))
        .map_err(|e| e.to_string())?;
    Ok(local)
}

async fn accept_loop(l: std::net::TcpListener, handler: Handler) {
    let l = match tokio::net::TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            warn!("web: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match l.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                warn!("web accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(answer(&h, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                // As the hand-written endpoint before it wrote them.
                .title_case_headers(true)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(permit);
        });
    }
}

fn answer<B>(h: &Handler, req: &Request<B>) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    let r = if req.method() == Method::GET || head {
        h(req.uri().path(), req.uri().query().unwrap_or(""))
    } else {
        Reply {
            status: 405,
            content_type: "text/plain; charset=utf-8",
            body: b"GET only\n".to_vec(),
        }
    };
    let len = r.body.len();
    let body = if head { Vec::new() } else { r.body };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let hd = resp.headers_mut();
    hd.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(r.content_type),
    );
    hd.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    if head {
        hd.insert(hyper::header::CONTENT_LENGTH, len.into());
    }
    if r.content_type.starts_with("text/html") {
        // Read-only pages with inline style and script of our own only.
        hd.insert(
            hyper::header::CONTENT_SECURITY_POLICY,
            hyper::header::HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'",
            ),
        );
    }
    resp
}
