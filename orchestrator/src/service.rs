//! The coordinator's gRPC service: turns each worker's stream into scheduler events.
//!
//! Invariant: this module holds no scheduling state. It checks the handshake, names the
//! worker, and forwards every message as an [`Event`]; the scheduler decides everything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use braid_shared::proto::coordinator_message::Kind as Down;
use braid_shared::proto::worker_message::Kind as Up;
use braid_shared::proto::worker_service_server::WorkerService;
use braid_shared::proto::{CoordinatorMessage, Registered, WorkerMessage};
use braid_shared::task;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::scheduler::{Event, WorkerLink};

/// Messages queued towards one worker before it counts as not reading.
pub const WORKER_QUEUE: usize = 1024;

/// The `braid.v1.WorkerService` implementation.
#[derive(Debug)]
pub struct WorkerApi {
    events: mpsc::Sender<Event>,
    next_id: AtomicU64,
    heartbeat_interval: Duration,
}

impl WorkerApi {
    /// A service that sends its events to a scheduler and asks workers for heartbeats this
    /// often.
    pub fn new(events: mpsc::Sender<Event>, heartbeat_interval: Duration) -> Self {
        WorkerApi {
            events,
            next_id: AtomicU64::new(1),
            heartbeat_interval,
        }
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type AttachStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream closed before Register"))?;
        let Some(Up::Register(register)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message must be Register",
            ));
        };
        if register.slots == 0 {
            return Err(Status::invalid_argument("a worker needs at least one slot"));
        }
        let worker = format!("w{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        tx.send(Ok(CoordinatorMessage {
            kind: Some(Down::Registered(Registered {
                worker_id: worker.clone(),
                heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
            })),
        }))
        .await
        .map_err(|_| Status::internal("the stream closed during the handshake"))?;
        let joined = Event::WorkerJoined(WorkerLink {
            id: worker.clone(),
            name: if register.name.is_empty() {
                worker.clone()
            } else {
                register.name
            },
            slots: register.slots,
            tx,
        });
        self.events
            .send(joined)
            .await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))?;

        let events = self.events.clone();
        task::spawn("worker-stream", async move {
            let reason = loop {
                match inbound.message().await {
                    Ok(Some(WorkerMessage { kind: Some(kind) })) => {
                        let event = Event::FromWorker {
                            worker: worker.clone(),
                            kind: Box::new(kind),
                            at: std::time::Instant::now(),
                        };
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(WorkerMessage { kind: None })) => {}
                    Ok(None) => break "the worker closed its stream".to_owned(),
                    Err(status) => {
                        break format!("the worker's stream failed: {}", status.message());
                    }
                }
            };
            let _ = events.send(Event::WorkerLeft { worker, reason }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
