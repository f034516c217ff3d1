//! How much pass-through work one client can start: concurrent requests overall and per connection, and
//! how long a request body may keep the upstream waiting. The permits ride on the response body, since
//! an upstream connection stays busy until the response has been streamed.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;
use crate::metrics::{METRICS, ReasonLabels};

/// `[forward]` caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardLimits {
    /// Pass-through requests in flight at once, over all connections; each may hold one upstream
    /// connection, so this also bounds the descriptors the pass-through uses.
    pub max_concurrent_requests: u32,
    /// Pass-through requests in flight at once on one client connection (h2 multiplexes).
    pub max_concurrent_per_connection: u32,
    /// How long the first bytes of a request body, and then each next part, may take to arrive. No
    /// upstream connection is opened before the first part is here.
    pub body_timeout: Duration,
}

impl Default for ForwardLimits {
    /// The defaults proxy.toml documents.
    fn default() -> Self {
        ForwardLimits {
            max_concurrent_requests: 256,
            max_concurrent_per_connection: 8,
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Both permits of one admitted pass-through request; the in-flight gauge follows them.
pub struct ForwardPermit {
    _overall: OwnedSemaphorePermit,
    _connection: Option<OwnedSemaphorePermit>,
}

impl Drop for ForwardPermit {
    fn drop(&mut self) {
        METRICS.forward_in_flight.dec();
    }
}

/// Takes a place under the overall cap and, when given, the connection's; the refusing cap otherwise.
pub fn admit(
    overall: &Arc<Semaphore>,
    connection: Option<&Arc<Semaphore>>,
) -> Result<ForwardPermit, &'static str> {
    let refuse = |reason: &'static str| {
        METRICS
            .forward_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
        Err(reason)
    };
    let Ok(connection) = connection
        .map(|c| c.clone().try_acquire_owned())
        .transpose()
    else {
        return refuse("per_connection");
    };
    let Ok(overall) = overall.clone().try_acquire_owned() else {
        return refuse("overall");
    };
    METRICS.forward_in_flight.inc();
    Ok(ForwardPermit {
        _overall: overall,
        _connection: connection,
    })
}

/// Why a client's request body failed, as opposed to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFault {
    /// Broken framing (a bad chunk size, a bare LF), or the client went away mid-body.
    Malformed,
    /// Nothing arrived within the body timeout.
    Timeout,
}

impl BodyFault {
    fn label(self) -> &'static str {
        match self {
            BodyFault::Malformed => "malformed",
            BodyFault::Timeout => "timeout",
        }
    }
}

/// The client's request body on its way upstream: each part must come within the body timeout, and a
/// failure is recorded as the client's, so the answer is 400/408 and not the upstream's 502.
pub struct ClientBody {
    inner: Incoming,
    timeout: Duration,
    /// Armed only when a part has to be waited for: a body that arrived with its head (a token request)
    /// sets no timer at all (a timer set and cancelled per request showed in the pass-through's profile).
    deadline: Option<Pin<Box<Sleep>>>,
    /// Whether `deadline` runs for the part being waited for now.
    waiting: bool,
    first: Option<Frame<Bytes>>,
    fault: Arc<OnceLock<BodyFault>>,
}

impl ClientBody {
    pub fn new(inner: Incoming, timeout: Duration) -> Self {
        ClientBody {
            inner,
            timeout,
            deadline: None,
            waiting: false,
            first: None,
            fault: Arc::new(OnceLock::new()),
        }
    }

    /// Where the body's fault is recorded, readable after the body has been handed away.
    pub fn fault(&self) -> Arc<OnceLock<BodyFault>> {
        self.fault.clone()
    }

    /// Waits for the first part of a body that has one, keeping it to be sent first; an empty body
    /// returns at once.
    pub async fn wait_for_start(&mut self) -> Result<(), BodyFault> {
        if self.inner.is_end_stream() {
            return Ok(());
        }
        match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                self.first = Some(frame);
                Ok(())
            }
            None => Ok(()),
            Some(Err(_)) => Err(self.fault.get().copied().unwrap_or(BodyFault::Malformed)),
        }
    }

    fn fail(&self, fault: BodyFault) -> BoxError {
        if self.fault.set(fault).is_ok() {
            METRICS
                .request_body_errors
                .get_or_create(&ReasonLabels {
                    reason: fault.label(),
                })
                .inc();
        }
        match fault {
            BodyFault::Malformed => "the client's request body is malformed or was cut off".into(),
            BodyFault::Timeout => "the client's request body did not arrive in time".into(),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(self.fail(BodyFault::Malformed)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let this = &mut *self;
                let at = || Instant::now() + this.timeout;
                let deadline = match &mut this.deadline {
                    Some(d) if this.waiting => d,
                    Some(d) => {
                        d.as_mut().reset(at());
                        d
                    }
                    None => this
                        .deadline
                        .insert(Box::pin(tokio::time::sleep_until(at()))),
                };
                this.waiting = true;
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(self.fail(BodyFault::Timeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.first {
            // The part held back is no longer counted by the inner body.
            Some(f) => {
                let held = f.data_ref().map_or(0, |d| d.len() as u64);
                let inner = self.inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + held);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + held);
                }
                hint
            }
            None => self.inner.size_hint(),
        }
    }
}
