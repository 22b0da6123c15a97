//! A relayed Pulp body that goes silent is cut (`pulp.stream_idle_secs`).
//!
//! awc's timeout ends with the response head; after it nothing bounds how long
//! Pulp may pause, and a stalled blob would hold the client, its connection
//! and an upstream connection for as long as the stall lasts. The cut ends the
//! body with an error, never with its end: that is what makes actix abort the
//! transfer instead of finishing it. Over HTTP/1.1 it closes the connection (a
//! `Content-Length` body stays short, a chunked one never gets its last
//! chunk); over h2 the stream is dropped unfinished, which the h2 library
//! answers with `RST_STREAM` (`CANCEL`). Either way the client cannot mistake
//! the rest of a blob for its end. actix also logs the error at error level,
//! which is why it names no repository.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::rt::time::{Instant, Sleep, sleep_until};
use bytes::Bytes;
use futures_util::Stream;

/// Which v2 read a relayed body answers, for the cut's log and metric.
#[derive(Clone, Copy, Debug)]
pub struct Streamed<'a> {
    /// `manifest`, `blob` or `tags`: what the warning names.
    pub kind: &'static str,
    /// The route template, the metric's label.
    pub route: &'static str,
    /// Logged at debug only: names stay out of info and above.
    pub repository: &'a str,
}

/// What a relayed body ends with when it does not end well. Its `Debug` and
/// `Display` name no repository: actix logs them at error level.
#[derive(Debug)]
pub enum BodyError {
    /// Pulp sent nothing for `pulp.stream_idle_secs`.
    Idle { kind: &'static str, after: Duration },
    /// Pulp's connection failed in mid-body.
    Upstream(awc::error::PayloadError),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Idle { kind, after } => write!(
                f,
                "Pulp sent no byte of a {kind} body for {} s (pulp.stream_idle_secs); transfer cut",
                after.as_secs()
            ),
            BodyError::Upstream(e) => write!(f, "Pulp's body failed: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// `inner`, ended with [`BodyError::Idle`] once it has kept the client
/// waiting for `idle` without a byte.
pub struct IdleCut<S> {
    /// Dropped at the end or at the cut, which frees the upstream connection.
    inner: Option<S>,
    idle: Duration,
    /// Made the first time Pulp keeps the body waiting: a manifest that comes
    /// with its head never needs one.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs: set by the first poll Pulp leaves pending,
    /// cleared by every chunk. Only time spent waiting on Pulp counts, so a
    /// client that reads slowly (actix then stops polling) is not Pulp's fault.
    waiting: bool,
    kind: &'static str,
    route: &'static str,
    /// Kept only while debug logging is on: it is for the debug line alone.
    repository: Option<Box<str>>,
}

impl<S> IdleCut<S> {
    pub fn new(inner: S, idle: Duration, what: Streamed<'_>) -> Self {
        Self {
            inner: Some(inner),
            idle,
            timer: None,
            waiting: false,
            kind: what.kind,
            route: what.route,
            repository: tracing::enabled!(tracing::Level::DEBUG).then(|| what.repository.into()),
        }
    }

    fn cut(&mut self) -> BodyError {
        self.inner = None;
        crate::admin::metrics::stream_idle_timeout(self.route);
        tracing::warn!(
            kind = self.kind,
            idle_secs = self.idle.as_secs(),
            "Pulp went silent in mid-body; the client's transfer is cut (pulp.stream_idle_secs)"
        );
        if let Some(repository) = &self.repository {
            tracing::debug!(kind = self.kind, repository = %repository, "stream cut for silence");
        }
        BodyError::Idle {
            kind: self.kind,
            after: self.idle,
        }
    }
}

impl<S> Stream for IdleCut<S>
where
    S: Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match Pin::new(&mut *inner).poll_next(cx) {
                // An empty chunk is no sign of life.
                Poll::Ready(Some(Ok(chunk))) if chunk.is_empty() => continue,
                Poll::Ready(Some(Ok(chunk))) => {
                    this.waiting = false;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.inner = None;
                    return Poll::Ready(Some(Err(BodyError::Upstream(e))));
                }
                Poll::Ready(None) => {
                    this.inner = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => break,
            }
        }
        let timer = match (&mut this.timer, this.waiting) {
            (Some(timer), true) => timer,
            (slot, _) => {
                this.waiting = true;
                let deadline = Instant::now() + this.idle;
                match slot {
                    Some(timer) => {
                        timer.as_mut().reset(deadline);
                        timer
                    }
                    None => slot.insert(Box::pin(sleep_until(deadline))),
                }
            }
        };
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(this.cut()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const WHAT: Streamed<'static> = Streamed {
        kind: "blob",
        route: "/v2/{name}/blobs/{digest}",
        repository: "org/secret/name",
    };

    fn chunk(b: &'static [u8]) -> Result<Bytes, awc::error::PayloadError> {
        Ok(Bytes::from_static(b))
    }

    #[actix_web::test]
    async fn a_steady_body_passes_whole() {
        let inner = futures_util::stream::iter(vec![chunk(b"ab"), chunk(b""), chunk(b"cd")]);
        let out: Vec<_> = IdleCut::new(inner, Duration::from_secs(60), WHAT)
            .collect()
            .await;
        let bytes: Vec<u8> = out
            .into_iter()
            .flat_map(|r| r.map(|b| b.to_vec()).unwrap_or_default())
            .collect();
        assert_eq!(bytes, b"abcd");
    }

    #[actix_web::test]
    async fn silence_ends_the_body_with_an_error_then_nothing() {
        let inner =
            futures_util::stream::iter(vec![chunk(b"ab")]).chain(futures_util::stream::pending());
        let mut cut = IdleCut::new(inner, Duration::from_millis(50), WHAT);
        assert_eq!(
            cut.next().await.and_then(Result::ok),
            Some(Bytes::from_static(b"ab"))
        );
        let err = match cut.next().await {
            Some(Err(e)) => e,
            other => panic!("expected the cut, got {other:?}"),
        };
        assert!(
            matches!(err, BodyError::Idle { kind: "blob", .. }),
            "{err:?}"
        );
        // Logged by actix at error level: no repository name in it.
        for text in [format!("{err}"), format!("{err:?}")] {
            assert!(!text.contains(WHAT.repository), "{text}");
        }
        assert!(cut.next().await.is_none(), "the cut ends the body");
        assert!(
            cut.inner.is_none(),
            "the upstream body is dropped at the cut"
        );
    }

    #[actix_web::test]
    async fn an_upstream_failure_is_passed_on() {
        let inner =
            futures_util::stream::iter(vec![Err(awc::error::PayloadError::Incomplete(None))]);
        let mut cut = IdleCut::new(inner, Duration::from_secs(60), WHAT);
        assert!(matches!(
            cut.next().await,
            Some(Err(BodyError::Upstream(_)))
        ));
        assert!(cut.next().await.is_none());
    }
}
