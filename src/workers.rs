//! The threads client connections run on: nginx's model, one single-threaded tokio runtime per worker.
//!
//! Measured (benches, pinned, one core): tokio's multi-thread scheduler cost ~20 % of the CPU of a kept-alive
//! pass-through request over a current-thread runtime (81 → 64 µs at c=16), in its run queues, atomics and
//! parking. A connection never needs stealing: its requests are sequential (HTTP/1) or few (h2), so each
//! connection lives on one worker from accept to close, and the worker with the fewest open connections
//! takes the next one. The accept loop, the admin server and the background tasks stay on the main runtime.
//!
//! With one worker there is no second thread: connections run on the main runtime, the whole proxy on one
//! thread (a sidecar given one CPU). The SQLite store keeps its own thread, so no worker ever waits on a
//! commit.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Which worker the calling thread is (0 on the main runtime and with one worker).
pub fn current_index() -> usize {
    INDEX.with(Cell::get)
}

/// The worker count when `server.workers` is not set: the CPUs this process may use (cgroup quota included,
/// as `std` reads it), at most 64.
pub fn default_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(64)
}

struct Worker {
    handle: Handle,
    open: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

/// Started by `lib::start`, stopped by the accept loop once the drain is over.
pub struct Workers {
    /// Empty with one worker: connections then run on the calling runtime.
    threads: Vec<Worker>,
}

impl Workers {
    /// `n` workers; for `n > 1` each is a thread running its own current-thread runtime.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut threads = Vec::new();
        if n <= 1 {
            return Ok(Workers { threads });
        }
        for index in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let (finished, done) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("dcr-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|c| c.set(index));
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                    // Connections were drained before the stop; what is left (pooled upstream
                    // connections, timers) is dropped.
                    rt.shutdown_timeout(Duration::from_secs(1));
                    let _ = finished.send(());
                })?;
            threads.push(Worker {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                done: Some(done),
            });
        }
        Ok(Workers { threads })
    }

    /// Runs `serve(tcp)` on the worker with the fewest open connections. The socket moves from the accept
    /// loop's reactor to the worker's, so all of the connection's I/O wakes that worker alone.
    pub fn spawn_connection<F, Fut>(&self, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .threads
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            tokio::spawn(serve(tcp));
            return;
        };
        let std_tcp = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand the connection to a worker; closed");
                return;
            }
        };
        let open = OpenGuard::new(worker.open.clone());
        worker.handle.spawn(async move {
            let _open = open;
            match TcpStream::from_std(std_tcp) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => {
                    tracing::warn!(error = %e, "a worker cannot take the connection; closed")
                }
            }
        });
    }

    /// Ends the worker threads and waits for them. Called after the drain: whatever still runs on a
    /// worker is cut off.
    pub async fn stop(mut self) {
        for w in &mut self.threads {
            if let Some(s) = w.stop.take() {
                let _ = s.send(());
            }
        }
        for w in &mut self.threads {
            if let Some(d) = w.done.take() {
                let _ = d.await;
            }
        }
    }
}

impl Drop for Workers {
    /// A `Workers` dropped without `stop` (the accept loop's task aborted) still ends its threads.
    fn drop(&mut self) {
        for w in &mut self.threads {
            if let Some(s) = w.stop.take() {
                let _ = s.send(());
            }
        }
    }
}

struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_worker_and_run_there() {
        let workers = Workers::start(2).expect("start");
        assert_eq!(workers.threads.len(), 2, "a thread per worker");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (client, server) = pair().await;
            clients.push(client);
            let tx = tx.clone();
            workers.spawn_connection(server, move |mut tcp| async move {
                use tokio::io::AsyncReadExt;
                let _ = tx.send(current_index());
                // Held open until the client closes, so the worker's count stays up.
                let mut buf = [0u8; 1];
                let _ = tcp.read(&mut buf).await;
            });
            // Each connection is counted before spawn_connection returns.
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(rx.recv().await.expect("ran"));
        }
        seen.sort();
        assert_eq!(seen, vec![0, 0, 1, 1], "two connections on each worker");
        drop(clients);
        workers.stop().await;
    }

    #[tokio::test]
    async fn one_worker_runs_connections_on_the_calling_runtime() {
        let workers = Workers::start(1).expect("start");
        assert!(workers.threads.is_empty(), "no thread of its own");
        let (_client, server) = pair().await;
        let (tx, rx) = oneshot::channel();
        let caller = std::thread::current().id();
        workers.spawn_connection(server, move |_tcp| async move {
            let _ = tx.send(std::thread::current().id());
        });
        assert_eq!(rx.await.expect("ran"), caller);
        workers.stop().await;
    }
}
