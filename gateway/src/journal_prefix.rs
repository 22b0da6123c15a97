//! Log priorities for journald.
//!
//! Under systemd the gateway's stderr reaches the journal line by line, each
//! line at the stream's default priority (info) unless it starts with a
//! `<N>` prefix (sd-daemon(3)), which journald strips and takes as the
//! priority. Each event gets the prefix of its level, so `journalctl -p err`
//! finds the gateway's errors and `-p warning` its warnings.

use std::io::{self, Write};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// syslog's numbering, as sd-daemon(3) reads it.
fn prefix(level: &Level) -> &'static [u8] {
    match *level {
        Level::ERROR => b"<3>",
        Level::WARN => b"<4>",
        Level::INFO => b"<6>",
        Level::DEBUG | Level::TRACE => b"<7>",
    }
}

/// Wraps a [`MakeWriter`]: every event's output starts with its priority.
pub struct JournalPrefix<M>(pub M);

/// One event's writer: the prefix goes out before its first byte.
pub struct Prefixed<W> {
    inner: W,
    prefix: Option<&'static [u8]>,
}

impl<W: Write> Write for Prefixed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(p) = self.prefix.take() {
            self.inner.write_all(p)?;
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for JournalPrefix<M> {
    type Writer = Prefixed<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Prefixed {
            inner: self.0.make_writer(),
            prefix: None,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Prefixed {
            inner: self.0.make_writer_for(meta),
            prefix: Some(prefix(meta.level())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::prelude::*;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_event_starts_with_its_priority() {
        let out = Captured::default();
        let sink = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(JournalPrefix(move || sink.clone()))
            .without_time()
            .with_ansi(false)
            .with_target(false);
        let subscriber = tracing_subscriber::registry()
            .with(layer)
            .with(tracing_subscriber::filter::LevelFilter::TRACE);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
            tracing::debug!("d");
            tracing::trace!("t");
        });
        let text = String::from_utf8(out.0.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "<3>ERROR e",
                "<4> WARN w",
                "<6> INFO i",
                "<7>DEBUG d",
                "<7>TRACE t"
            ],
            "{text}"
        );
    }
}
