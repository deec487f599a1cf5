//! The only module that names the async runtime. async-std is unmaintained upstream; keeping
//! every spawn, blocking hand-off and timer here keeps a change of runtime to one file.

use std::future::Future;
use std::time::Duration;

pub use async_std::task::JoinHandle;

/// Network types of the runtime.
pub mod net {
    pub use async_std::net::{TcpListener, TcpStream};
}

/// Sizes the executor: `threads` run async tasks (blocking work has its own pool). Call before
/// anything else touches the runtime; a later call, or one after first use, changes nothing.
pub fn configure(threads: usize) {
    async_global_executor::init_with_config(
        async_global_executor::GlobalExecutorConfig::default()
            .with_min_threads(threads)
            .with_max_threads(threads)
            .with_thread_name_fn(|| "io".into()),
    );
}

/// Runs a future on the executor in the background.
pub fn spawn<F, T>(future: F) -> JoinHandle<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    async_std::task::spawn(future)
}

/// Runs blocking work (redb calls, hashing or sealing large buffers) off the executor.
pub async fn blocking<F, T>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    async_std::task::spawn_blocking(work).await
}

/// A thread of its own for long blocking work (an upload's hashing and cutting), so that it
/// never holds a thread of the shared blocking pool that reads need. Await [`Thread::join`]
/// for its result; a panic in it resumes in the joiner.
pub fn thread<F, T>(name: &str, work: F) -> std::io::Result<Thread<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = async_channel::bounded(1);
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let _ = tx.send_blocking(result);
    })?;
    Ok(Thread(rx))
}

/// The result of a [`thread`] to come.
pub struct Thread<T>(async_channel::Receiver<std::thread::Result<T>>);

impl<T> Thread<T> {
    pub async fn join(self) -> T {
        match self.0.recv().await {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("a worker thread ended without a result"),
        }
    }
}

pub async fn sleep(duration: Duration) {
    async_std::task::sleep(duration).await
}

/// Runs `future`, giving up after `limit`.
pub async fn timeout<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    async_std::future::timeout(limit, future).await.ok()
}

/// Drives the top-level future of the process.
pub fn block_on<F: Future>(future: F) -> F::Output {
    async_std::task::block_on(future)
}

/// A TCP connection (for peer links).
pub async fn connect_tcp(host: &str, port: u16) -> std::io::Result<async_std::net::TcpStream> {
    let stream = async_std::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
