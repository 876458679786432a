//! `network: model` for the agent CLIs: the sandbox has no network, and the CLI's one way
//! out is a bridge to its model endpoint.
//!
//! Inside the sandbox (its own network namespace, with only loopback), braid's own binary
//! runs first ([`inside`]): it listens on `127.0.0.1:`[`PORT`], starts the CLI, and pipes
//! each connection to a Unix socket in the attempt's scratch. Outside, the worker serves
//! that socket ([`Bridge`]) as an HTTP proxy to the one endpoint the plan names: plain HTTP
//! inside, HTTP or HTTPS outside, every request sent to that host and no other. The CLI is
//! given `http://127.0.0.1:PORT/<the endpoint's path>` as its base URL.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// The port the bridge listens on inside each sandbox (each has a network of its own).
pub const PORT: u16 = 41_777;

/// The program that can run [`inside`]: the braid binary, once it said so.
static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Says that `program` runs [`inside`] when started as `program __bridge ...` (the braid
/// binary does, at start).
pub fn set_program(program: PathBuf) {
    let _ = PROGRAM.set(program);
}

/// The bridge's program, when one was set.
pub fn program() -> Option<&'static Path> {
    PROGRAM.get().map(PathBuf::as_path)
}

/// The arguments that start `program args` behind the bridge to `socket`.
pub fn wrap(socket: &Path, program: &str, args: &[String]) -> Vec<String> {
    let mut out = vec![
        "__bridge".to_owned(),
        format!("127.0.0.1:{PORT}"),
        socket.to_string_lossy().into_owned(),
        "--".to_owned(),
        program.to_owned(),
    ];
    out.extend(args.iter().cloned());
    out
}

/// `url` as the CLI inside sees it: the same path on the bridge.
pub fn inside_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let path = parsed.path().trim_end_matches('/');
    Some(format!("http://127.0.0.1:{PORT}{path}"))
}

/// The worker's end: an HTTP proxy on a Unix socket to one endpoint. Stops when dropped.
#[derive(Debug)]
pub struct Bridge {
    stop: CancellationToken,
    socket: PathBuf,
}

impl Bridge {
    /// Serves `socket`, sending every request to the scheme, host and port of `endpoint`.
    pub fn start(socket: &Path, endpoint: &str) -> std::io::Result<Bridge> {
        let upstream = reqwest::Url::parse(endpoint).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{endpoint}: {e}"))
        })?;
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket)?;
        let stop = CancellationToken::new();
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(std::io::Error::other)?;
        let until = stop.clone();
        braid_shared::task::spawn("model-bridge", async move {
            loop {
                let conn = tokio::select! {
                    () = until.cancelled() => break,
                    conn = listener.accept() => conn,
                };
                let Ok((stream, _)) = conn else { continue };
                let client = client.clone();
                let upstream = upstream.clone();
                let until = until.clone();
                braid_shared::task::spawn("model-bridge-conn", async move {
                    let service = hyper::service::service_fn(move |req| {
                        let client = client.clone();
                        let upstream = upstream.clone();
                        async move { Ok::<_, Infallible>(forward(&client, &upstream, req).await) }
                    });
                    let serve = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = serve => {}
                        () = until.cancelled() => {}
                    }
                });
            }
        });
        Ok(Bridge {
            stop,
            socket: socket.to_owned(),
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.socket);
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let body = http_body_util::Full::new(Bytes::from(text))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

async fn forward(
    client: &reqwest::Client,
    upstream: &reqwest::Url,
    req: Request<Incoming>,
) -> Response<Body> {
    let mut url = upstream.clone();
    url.set_path(req.uri().path());
    url.set_query(req.uri().query());
    let method = req.method().clone();
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in req.headers() {
        if !hop_by_hop(name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    let sent = client
        .request(method, url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    let upstream_response = match sent {
        Ok(r) => r,
        Err(err) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!(
                    "braid's bridge could not reach {}: {err}",
                    upstream.origin().ascii_serialization()
                ),
            );
        }
    };
    let mut response = Response::builder().status(upstream_response.status().as_u16());
    for (name, value) in upstream_response.headers() {
        if !hop_by_hop(name.as_str()) {
            response = response.header(name, value);
        }
    }
    let stream = upstream_response
        .bytes_stream()
        .map_ok(Frame::data)
        .map_err(std::io::Error::other);
    response
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|e| plain(StatusCode::BAD_GATEWAY, e.to_string()))
}

/// For a binary that hosts workers: when started as `PROGRAM __bridge ...` (inside a
/// sandbox), runs the bridge's inner end and returns its exit code; otherwise notes this
/// binary as the bridge's program and returns `None`.
pub fn main_if_bridge() -> Option<i32> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__bridge") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        return Some(runtime.block_on(inside(&args[2..])));
    }
    if let Ok(me) = std::env::current_exe() {
        set_program(me);
    }
    None
}

/// The sandbox's end: `braid __bridge ADDR SOCKET -- PROGRAM ARGS...`. Listens on `ADDR`,
/// pipes each connection to `SOCKET`, runs the program with this process's standard
/// streams, and ends with its exit code.
pub async fn inside(args: &[String]) -> i32 {
    let (Some(addr), Some(socket), Some(rest)) = (args.first(), args.get(1), args.get(2..)) else {
        eprintln!("braid __bridge: usage: __bridge ADDR SOCKET -- PROGRAM ARGS...");
        return 2;
    };
    let rest = match rest.first().map(String::as_str) {
        Some("--") => &rest[1..],
        _ => rest,
    };
    let Some((program, program_args)) = rest.split_first() else {
        eprintln!("braid __bridge: no program to run");
        return 2;
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("braid __bridge: cannot listen on {addr}: {err}");
            return 126;
        }
    };
    let socket = PathBuf::from(socket);
    braid_shared::task::spawn("bridge-inside", async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let socket = socket.clone();
            braid_shared::task::spawn("bridge-inside-conn", async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    #[allow(clippy::disallowed_methods)] // the sandbox's own first process: no wrapper here
    let child = tokio::process::Command::new(program)
        .args(program_args)
        .kill_on_drop(true)
        .status()
        .await;
    match child {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
        }
        Err(err) => {
            eprintln!("braid __bridge: cannot start {program}: {err}");
            127
        }
    }
}
